/* Stage 1: flags, BATCH_AGENT_* settings and the AWS_BATCH_* environment.
 *
 * Each setting is one row of a table: its flag, its environment twin and one parser.
 * The environment is applied first and the flags after, so the flag wins; the same
 * parser serves both, so a value means the same thing wherever it comes from. */
#include "config.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batchenv.h"
#include "status.h"
#include "sandbox.h"
#include "util.h"

#define MAX_TIMEOUT_MS ((int64_t)7 * 24 * 3600 * 1000)
/* The wire protocol carries these (PROTOCOL.md, "Messages"): a longer value could not
 * be sent to a peer. */
#define MAX_GRACE_MS ((int64_t)24 * 3600 * 1000)
#define MAX_HEARTBEAT_MS ((int64_t)3600 * 1000)
/* Batch's SIGKILL comes 30 s after its SIGTERM. What the agent does after the grace
 * period ends must fit in the other 5 s: a worker stops its Spot watcher (at most 1 s,
 * SPOTWATCH_STOP_MS) and flushes its exit report (at most 2 s, FINAL_FLUSH_MS); a
 * manager waits 1 s past the grace for its peers' reports (REPORT_MARGIN_MS); 2 s are
 * left for a loaded host. README, "Grace and Batch's 30 seconds", has the table. */
#define DEFAULT_GRACE_MS ((int64_t)25 * 1000)
/* A host that outlives its Spot interruption by an hour is not going. */
#define MAX_SPOT_HOLD_MS ((int64_t)3600 * 1000)

typedef bool (*setting_parser)(struct config *cfg, const char *text);

struct setting {
	const char *flag;     /* long option name */
	int short_flag;       /* 0 when none */
	bool takes_value;     /* false: a switch, whose environment twin is a boolean */
	const char *env;      /* BATCH_AGENT_* twin */
	setting_parser parse; /* for switches: called with "1" or the environment's text */
	const char *expected; /* what a valid value looks like, for the error message */
};

/* text as one of count names: its index in *index. */
static bool parse_choice(const char *text, const char *const *names, size_t count, size_t *index)
{
	for (size_t i = 0; i < count; i++) {
		if (strcmp(text, names[i]) == 0) {
			*index = i;
			return true;
		}
	}
	return false;
}

static bool parse_role(struct config *cfg, const char *text)
{
	static const char *const names[] = { "auto", "init", "worker", "main" };
	size_t i;
	return parse_choice(text, names, sizeof names / sizeof names[0], &i) && (cfg->role = (enum role)i, true);
}

static bool parse_exec(struct config *cfg, const char *text)
{
	return util_parse_bool(text, &cfg->exec);
}

static bool parse_no_new_privs(struct config *cfg, const char *text)
{
	return util_parse_bool(text, &cfg->no_new_privs);
}

static bool parse_group(struct config *cfg, const char *text)
{
	return util_parse_bool(text, &cfg->group);
}

static bool parse_print_config(struct config *cfg, const char *text)
{
	return util_parse_bool(text, &cfg->print_config);
}

static bool parse_grace(struct config *cfg, const char *text)
{
	return util_parse_duration_ms(text, MAX_GRACE_MS, &cfg->grace_ms);
}

static bool parse_log_level(struct config *cfg, const char *text)
{
	return log_level_parse(text, &cfg->log_level);
}

static bool parse_log_format(struct config *cfg, const char *text)
{
	return log_format_parse(text, &cfg->log_format);
}

/* Any text but the empty one. */
static bool parse_text(const char *text, const char **out)
{
	*out = text;
	return *text != '\0';
}

static bool parse_manager(struct config *cfg, const char *text)
{
	/* The address itself is checked by the stage that dials it, which knows the
	 * forms it accepts (and Ref::name, which Batch leaves when no value was given). */
	return parse_text(text, &cfg->manager);
}

static bool parse_port(struct config *cfg, const char *text)
{
	return util_parse_long(text, 1, 65535, &cfg->port);
}

static bool parse_cookie_file(struct config *cfg, const char *text)
{
	return parse_text(text, &cfg->cookie_file);
}

static bool parse_seccomp_profile(struct config *cfg, const char *text)
{
	return parse_text(text, &cfg->seccomp_profile);
}

static bool parse_connect_timeout(struct config *cfg, const char *text)
{
	return util_parse_duration_ms(text, MAX_TIMEOUT_MS, &cfg->connect_timeout_ms);
}

static bool parse_wait_timeout(struct config *cfg, const char *text)
{
	return util_parse_duration_ms(text, MAX_TIMEOUT_MS, &cfg->wait_timeout_ms);
}

static bool parse_min_nodes(struct config *cfg, const char *text)
{
	return util_parse_long(text, 1, 100000, &cfg->min_nodes);
}

/* "0:3,4:,:2,5": Batch's targetNodes ranges, comma-separated. */
static bool parse_nodes(struct config *cfg, const char *text)
{
	cfg->node_range_count = 0;
	cfg->nodes_text = text;
	for (const char *p = text;;) {
		size_t length = strcspn(p, ",");
		char part[32];
		if (length == 0 || length >= sizeof part || cfg->node_range_count == CONFIG_NODE_RANGES_MAX)
			return false;
		memcpy(part, p, length);
		part[length] = '\0';
		struct node_range r = { 0, -1 };
		char *colon = strchr(part, ':');
		if (colon == NULL && !util_parse_long(part, 0, 99999, &r.lo))
			return false;
		if (colon == NULL)
			r.hi = r.lo;
		if (colon != NULL) {
			*colon = '\0';
			if ((part[0] && !util_parse_long(part, 0, 99999, &r.lo)) ||
			    (colon[1] && !util_parse_long(colon + 1, 0, 99999, &r.hi)) || (r.hi >= 0 && r.hi < r.lo))
				return false;
		}
		cfg->node_ranges[cfg->node_range_count++] = r;
		if (p[length] == '\0')
			return true;
		p += length + 1;
	}
}

static bool parse_on_node_loss(struct config *cfg, const char *text)
{
	static const char *const names[] = { [NODE_LOSS_FAIL] = "fail", [NODE_LOSS_CONTINUE] = "continue" };
	size_t i;
	return parse_choice(text, names, sizeof names / sizeof names[0], &i) && (cfg->on_node_loss = (enum node_loss)i, true);
}

static bool parse_payload_start(struct config *cfg, const char *text)
{
	static const char *const names[] = { [PAYLOAD_START_ROSTER] = "roster", [PAYLOAD_START_REGISTERED] = "registered" };
	size_t i;
	return parse_choice(text, names, sizeof names / sizeof names[0], &i) && (cfg->payload_start = (enum payload_start)i, true);
}

static bool parse_ready_port(struct config *cfg, const char *text)
{
	return util_parse_long(text, 1, 65535, &cfg->ready_port);
}

static bool parse_hostfile_format(struct config *cfg, const char *text)
{
	static const char *const names[] = { [HOSTFILE_PLAIN] = "plain", [HOSTFILE_OPENMPI] = "openmpi",
					     [HOSTFILE_MPICH] = "mpich" };
	size_t i;
	return parse_choice(text, names, sizeof names / sizeof names[0], &i) && (cfg->hostfile_format = (enum hostfile_format)i, true);
}

/* A set of variable families; "torch" is the one there is. */
static bool parse_env(struct config *cfg, const char *text)
{
	cfg->env_torch = strcmp(text, "torch") == 0;
	return cfg->env_torch;
}

static bool parse_on_manager_loss(struct config *cfg, const char *text)
{
	static const char *const names[] = { [MANAGER_LOSS_EXIT] = "exit", [MANAGER_LOSS_CONTINUE] = "continue" };
	size_t i;
	return parse_choice(text, names, sizeof names / sizeof names[0], &i) && (cfg->on_manager_loss = (enum manager_loss)i, true);
}

static bool parse_heartbeat(struct config *cfg, const char *text)
{
	return util_parse_duration_ms(text, MAX_HEARTBEAT_MS, &cfg->heartbeat_ms) && cfg->heartbeat_ms >= 10;
}

static bool parse_protocol(struct config *cfg, const char *text)
{
	static const char *const names[] = { [PROTOCOL_NATIVE] = "native", [PROTOCOL_JULIA] = "julia" };
	size_t i;
	return parse_choice(text, names, sizeof names / sizeof names[0], &i) && (cfg->protocol = (enum protocol)i, true);
}

static bool parse_advertise_addr(struct config *cfg, const char *text)
{
	unsigned char raw[sizeof(struct in6_addr)];
	/* Checked here, not after dialling: a worker that connects and then gives up
	 * costs the Julia manager its whole (serial) registration. */
	if (inet_pton(AF_INET, text, raw) != 1 && inet_pton(AF_INET6, text, raw) != 1)
		return false;
	cfg->advertise_addr = text;
	return true;
}

static bool parse_manager_param(struct config *cfg, const char *text)
{
	if (*text == '\0')
		return false;
	cfg->manager_param = text;
	cfg->manager_param_given = true;
	return true;
}

static bool parse_workers(struct config *cfg, const char *text)
{
	return util_parse_long(text, 1, 10000, &cfg->workers);
}

static bool parse_min_workers(struct config *cfg, const char *text)
{
	return util_parse_long(text, 1, 10000, &cfg->min_workers);
}

static bool parse_notify(struct config *cfg, const char *text)
{
	int sig = util_signal_parse(text);
	if (sig == 0 || sig == SIGKILL || sig == SIGSTOP || sig == SIGCHLD)
		return false;
	cfg->notify_signal = sig;
	return true;
}

static bool parse_submit_workers(struct config *cfg, const char *text)
{
	return util_parse_bool(text, &cfg->submit_workers);
}

static bool parse_worker_job_definition(struct config *cfg, const char *text)
{
	return parse_text(text, &cfg->worker_job_definition);
}

static bool parse_worker_job_queue(struct config *cfg, const char *text)
{
	return parse_text(text, &cfg->worker_job_queue);
}

static bool parse_replace_drained(struct config *cfg, const char *text)
{
	return util_parse_bool(text, &cfg->replace_drained);
}

static bool parse_aws_endpoint_url(struct config *cfg, const char *text)
{
	if (strncmp(text, "https://", 8) != 0 && strncmp(text, "http://", 7) != 0)
		return false;
	cfg->aws_endpoint_url = text;
	return true;
}

static bool parse_spot_watch(struct config *cfg, const char *text)
{
	bool on;
	if (strcmp(text, "auto") == 0)
		cfg->spot_watch = SPOT_WATCH_AUTO;
	else if (util_parse_bool(text, &on))
		cfg->spot_watch = on ? SPOT_WATCH_ON : SPOT_WATCH_OFF;
	else
		return false;
	return true;
}

/* on (the default margin), off, or the margin in seconds. Words only for on and off:
 * "1" would read as a boolean to some and as one second to others. */
static bool parse_spot_hold(struct config *cfg, const char *text)
{
	if (strcmp(text, "on") == 0)
		cfg->spot_hold_ms = CONFIG_SPOT_HOLD_DEFAULT_MS;
	else if (strcmp(text, "off") == 0)
		cfg->spot_hold_ms = CONFIG_SPOT_HOLD_OFF;
	else
		return util_parse_duration_ms(text, MAX_SPOT_HOLD_MS, &cfg->spot_hold_ms);
	return true;
}

static bool parse_spot_signal(struct config *cfg, const char *text)
{
	int sig = util_signal_parse(text);
	if (sig == 0 || sig == SIGKILL || sig == SIGSTOP || sig == SIGCHLD)
		return false;
	cfg->spot_signal = sig;
	return true;
}

int config_pairs_map(const struct config_pairs *pairs, int from)
{
	for (size_t i = 0; i < pairs->count; i++)
		if (pairs->pair[i].from == from)
			return pairs->pair[i].to;
	return from;
}

/* One side of a FROM:TO pair, as a number; false when it is not valid there. */
typedef bool (*pair_side)(const char *text, bool is_to, int *out);

/* "FROM:TO[,FROM:TO...]", appended to pairs: the environment's comma-separated list
 * and each occurrence of the flag (which may be a list too) mean the same. */
static bool parse_pairs(struct config_pairs *pairs, const char *text, pair_side side)
{
	for (const char *p = text;;) {
		size_t length = strcspn(p, ",");
		char item[64];
		if (length == 0 || length >= sizeof item || pairs->count == CONFIG_PAIRS_MAX)
			return false;
		memcpy(item, p, length);
		item[length] = '\0';
		char *colon = strchr(item, ':');
		struct config_pair pair;
		if (colon == NULL)
			return false;
		*colon = '\0';
		if (!side(item, false, &pair.from) || !side(colon + 1, true, &pair.to))
			return false;
		/* Two pairs for one FROM would leave the reader guessing which one applies. */
		for (size_t i = 0; i < pairs->count; i++)
			if (pairs->pair[i].from == pair.from)
				return false;
		pairs->pair[pairs->count++] = pair;
		if (p[length] == '\0')
			return true;
		p += length + 1;
	}
}

static bool exit_side(const char *text, bool is_to, int *out)
{
	long value;
	(void)is_to;
	if (!util_parse_long(text, 0, 255, &value))
		return false;
	*out = (int)value;
	return true;
}

/* FROM must be a signal the agent receives and forwards: never KILL or STOP (they
 * never reach it) nor CHLD (its own, for reaping). TO 0 drops FROM. */
static bool signal_side(const char *text, bool is_to, int *out)
{
	if (is_to && strcmp(text, "0") == 0) {
		*out = 0;
		return true;
	}
	int sig = util_signal_parse(text);
	if (sig == 0 || (!is_to && (sig == SIGKILL || sig == SIGSTOP || sig == SIGCHLD)))
		return false;
	*out = sig;
	return true;
}

static bool parse_remap_exit(struct config *cfg, const char *text)
{
	return parse_pairs(&cfg->remap_exit, text, exit_side);
}

static bool parse_rewrite_signal(struct config *cfg, const char *text)
{
	if (!parse_pairs(&cfg->rewrite_signal, text, signal_side))
		return false;
	/* Dropping SIGTERM would make Batch's stop (and the agent's) do nothing until the
	 * SIGKILL: the payload must hear some signal. */
	return config_pairs_map(&cfg->rewrite_signal, SIGTERM) != 0;
}

static const struct setting settings[] = {
	{ "role", 0, true, "BATCH_AGENT_ROLE", parse_role, "auto, init, worker or main" },
	{ "exec", 0, false, "BATCH_AGENT_EXEC", parse_exec, "a boolean (1/0, true/false)" },
	{ "group", 'g', false, "BATCH_AGENT_GROUP", parse_group, "a boolean (1/0, true/false)" },
	{ "seccomp-profile", 0, true, "BATCH_AGENT_SECCOMP_PROFILE", parse_seccomp_profile, "a file name" },
	{ "no-new-privs", 0, false, "BATCH_AGENT_NO_NEW_PRIVS", parse_no_new_privs, "a boolean (1/0, true/false)" },
	{ "grace", 0, true, "BATCH_AGENT_GRACE", parse_grace, "seconds up to 86400, e.g. 25 or 2.5" },
	{ "remap-exit", 0, true, "BATCH_AGENT_REMAP_EXIT", parse_remap_exit,
	  "FROM:TO exit statuses from 0 to 255, e.g. 143:0 (comma-separated; at most 16 pairs, each FROM once)" },
	{ "rewrite-signal", 0, true, "BATCH_AGENT_REWRITE_SIGNAL", parse_rewrite_signal,
	  "FROM:TO signal names or numbers, e.g. TERM:QUIT, TO 0 to drop FROM (comma-separated; at most 16 "
	  "pairs, each FROM once; FROM not KILL, STOP or CHLD; TERM cannot be dropped)" },
	{ "log-level", 0, true, "BATCH_AGENT_LOG_LEVEL", parse_log_level, "error, warn, info or debug" },
	{ "log-format", 0, true, "BATCH_AGENT_LOG_FORMAT", parse_log_format, "text or json" },
	{ "print-config", 0, false, "BATCH_AGENT_PRINT_CONFIG", parse_print_config, "a boolean (1/0, true/false)" },
	{ "manager", 0, true, "BATCH_AGENT_MANAGER", parse_manager, "HOST:PORT" },
	{ "port", 0, true, "BATCH_AGENT_PORT", parse_port, "a port number from 1 to 65535" },
	{ "cookie-file", 0, true, "BATCH_AGENT_COOKIE_FILE", parse_cookie_file, "a file name" },
	{ "connect-timeout", 0, true, "BATCH_AGENT_CONNECT_TIMEOUT", parse_connect_timeout, "seconds" },
	{ "wait-timeout", 0, true, "BATCH_AGENT_WAIT_TIMEOUT", parse_wait_timeout, "seconds" },
	{ "min-nodes", 0, true, "BATCH_AGENT_MIN_NODES", parse_min_nodes, "a node count from 1" },
	{ "nodes", 0, true, "BATCH_AGENT_NODE_RANGES", parse_nodes, "node index ranges, e.g. 0:3,5 or 4:" },
	{ "on-node-loss", 0, true, "BATCH_AGENT_ON_NODE_LOSS", parse_on_node_loss, "fail or continue" },
	{ "payload-start", 0, true, "BATCH_AGENT_PAYLOAD_START", parse_payload_start, "roster or registered" },
	{ "ready-port", 0, true, "BATCH_AGENT_READY_PORT", parse_ready_port, "a port number from 1 to 65535" },
	{ "hostfile-format", 0, true, "BATCH_AGENT_HOSTFILE_FORMAT", parse_hostfile_format, "plain, openmpi or mpich" },
	{ "env", 0, true, "BATCH_AGENT_ENV", parse_env, "torch" },
	{ "on-manager-loss", 0, true, "BATCH_AGENT_ON_MANAGER_LOSS", parse_on_manager_loss, "exit or continue" },
	{ "heartbeat", 0, true, "BATCH_AGENT_HEARTBEAT", parse_heartbeat, "seconds from 0.01 to 3600" },
	{ "protocol", 0, true, "BATCH_AGENT_PROTOCOL", parse_protocol, "native or julia" },
	{ "advertise-addr", 0, true, "BATCH_AGENT_ADVERTISE_ADDR", parse_advertise_addr, "an IP address" },
	{ "workers", 0, true, "BATCH_AGENT_WORKERS", parse_workers, "a worker count from 1 to 10000" },
	{ "min-workers", 0, true, "BATCH_AGENT_MIN_WORKERS", parse_min_workers, "a worker count from 1 to 10000" },
	{ "notify", 0, true, "BATCH_AGENT_NOTIFY", parse_notify, "a signal name or number, e.g. HUP" },
	{ "submit-workers", 0, false, "BATCH_AGENT_SUBMIT_WORKERS", parse_submit_workers, "a boolean (1/0, true/false)" },
	{ "worker-job-definition", 0, true, "BATCH_AGENT_WORKER_JOB_DEFINITION", parse_worker_job_definition,
	  "a job definition name, name:revision or ARN" },
	{ "worker-job-queue", 0, true, "BATCH_AGENT_WORKER_JOB_QUEUE", parse_worker_job_queue, "a job queue name or ARN" },
	{ "replace-drained", 0, false, "BATCH_AGENT_REPLACE_DRAINED", parse_replace_drained, "a boolean (1/0, true/false)" },
	{ "manager-param", 0, true, "BATCH_AGENT_MANAGER_PARAM", parse_manager_param, "a job parameter name" },
	{ "aws-endpoint-url", 0, true, "BATCH_AGENT_AWS_ENDPOINT_URL", parse_aws_endpoint_url, "an http:// or https:// URL" },
	{ "spot-watch", 0, true, "BATCH_AGENT_SPOT_WATCH", parse_spot_watch, "auto, on or off" },
	{ "spot-signal", 0, true, "BATCH_AGENT_SPOT_SIGNAL", parse_spot_signal, "a signal name or number, e.g. TERM" },
	{ "spot-hold", 0, true, "BATCH_AGENT_SPOT_HOLD", parse_spot_hold, "on, off or seconds up to 3600, e.g. 30" },
};

#define SETTING_COUNT (sizeof settings / sizeof settings[0])
_Static_assert(SETTING_COUNT <= 64, "struct config's flagged has a bit per setting");

bool config_flagged(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < SETTING_COUNT; i++)
		if (strcmp(settings[i].flag, name) == 0)
			return (cfg->flagged >> i) & 1;
	return false;
}
#define OPTION_HELP 1000
#define OPTION_VERSION 1001

static void set_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->role = ROLE_AUTO;
	cfg->grace_ms = DEFAULT_GRACE_MS;
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->log_format = LOG_FORMAT_TEXT;
	cfg->port = CONFIG_DEFAULT_PORT;
	cfg->connect_timeout_ms = 300 * 1000;
	cfg->wait_timeout_ms = 300 * 1000;
	cfg->min_nodes = -1;
	cfg->min_workers = -1;
	cfg->on_node_loss = NODE_LOSS_FAIL;
	cfg->on_manager_loss = MANAGER_LOSS_EXIT;
	cfg->heartbeat_ms = 10 * 1000;
	cfg->protocol = PROTOCOL_NATIVE;
	cfg->manager_param = "manager";
	cfg->spot_watch = SPOT_WATCH_AUTO;
	cfg->spot_signal = SIGTERM;
	cfg->spot_hold_ms = CONFIG_SPOT_HOLD_DEFAULT_MS;
}

static enum ba_status apply_environment(struct config *cfg)
{
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		const char *text = getenv(settings[i].env);
		if (text == NULL)
			continue;
		if (!settings[i].parse(cfg, text)) {
			log_error("environment variable %s=\"%s\" is invalid: expected %s", settings[i].env,
				  text, settings[i].expected);
			return BA_EX_CONFIG;
		}
	}
	return BA_OK;
}

static void clear_list(struct config *cfg, const struct setting *setting)
{
	if (setting->parse == parse_remap_exit)
		cfg->remap_exit.count = 0;
	else if (setting->parse == parse_rewrite_signal)
		cfg->rewrite_signal.count = 0;
}

static enum ba_status apply_flags(struct config *cfg, int argc, char **argv)
{
	struct option options[SETTING_COUNT + 3];
	char short_options[16] = "+";
	size_t short_length = 1;
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		options[i] = (struct option){ settings[i].flag,
					      settings[i].takes_value ? required_argument : no_argument,
					      NULL, settings[i].short_flag ? settings[i].short_flag : (int)i + 1 };
		if (settings[i].short_flag)
			short_options[short_length++] = (char)settings[i].short_flag;
	}
	options[SETTING_COUNT] = (struct option){ "help", no_argument, NULL, OPTION_HELP };
	options[SETTING_COUNT + 1] = (struct option){ "version", no_argument, NULL, OPTION_VERSION };
	options[SETTING_COUNT + 2] = (struct option){ 0 };
	strcpy(short_options + short_length, "hV");

	opterr = 0; /* our messages name the flag and say what it expects */
	optind = 0; /* glibc: a fresh scan. 1 would keep its place in a cluster ("-xg") an
		     * earlier load stopped in, and take the next command line from there */
	for (;;) {
		int previous_optind = optind ? optind : 1; /* 0 before the first call */
		int code = getopt_long(argc, argv, short_options, options, NULL);
		if (code == -1)
			break;
		if (code == 'h' || code == OPTION_HELP) {
			config_usage(stdout);
			cfg->answered = true;
			return BA_OK;
		}
		if (code == 'V' || code == OPTION_VERSION) {
			printf("batch-agent %s\n", BATCH_AGENT_VERSION);
			cfg->answered = true;
			return BA_OK;
		}
		if (code == '?' || code == ':') {
			const char *given = argv[previous_optind] ? argv[previous_optind] : "?";
			if (optopt != 0 && strncmp(given, "--", 2) != 0)
				log_error("unknown option -%c (see --help)", optopt);
			else if (optopt != 0 && strchr(given, '=') != NULL)
				log_error("option %.*s takes no value (see --help)", (int)(strchr(given, '=') - given), given);
			else if (optopt != 0)
				log_error("option %s needs a value (see --help)", given);
			else
				log_error("unknown option %s (see --help)", given);
			return BA_EX_USAGE;
		}
		const struct setting *setting = NULL;
		for (size_t i = 0; i < SETTING_COUNT; i++)
			if (code == (settings[i].short_flag ? settings[i].short_flag : (int)i + 1))
				setting = &settings[i];
		if (setting == NULL)
			return BA_EX_SOFTWARE;
		const char *value = setting->takes_value ? optarg : "1";
		/* A list's flags replace its environment twin's list as a whole, as any flag
		 * replaces its twin; their own occurrences add up. */
		if (!config_flagged(cfg, setting->flag))
			clear_list(cfg, setting);
		if (!setting->parse(cfg, value)) {
			log_error("option --%s \"%s\" is invalid: expected %s", setting->flag, value,
				  setting->expected);
			return BA_EX_USAGE;
		}
		cfg->flagged |= UINT64_C(1) << (setting - settings);
	}
	cfg->payload_argc = argc - optind;
	cfg->payload_argv = argv + optind;
	return BA_OK;
}

/* With --exec no agent is left to see the payload's status or its signals: a remap
 * or a rewrite would be silently ignored. */
static enum ba_status check_exec_conflicts(const struct config *cfg)
{
	const char *flag = cfg->remap_exit.count ? "remap-exit" : cfg->rewrite_signal.count ? "rewrite-signal" : NULL;
	if (!cfg->exec || flag == NULL)
		return BA_OK;
	log_error("--%s (BATCH_AGENT_%s) with --exec (BATCH_AGENT_EXEC): PROGRAM replaces the agent, which "
		  "could neither remap its exit status nor rewrite its signals", flag,
		  cfg->remap_exit.count ? "REMAP_EXIT" : "REWRITE_SIGNAL");
	return config_flagged(cfg, flag) && config_flagged(cfg, "exec") ? BA_EX_USAGE : BA_EX_CONFIG;
}

enum ba_status config_load(struct config *cfg, int argc, char **argv)
{
	set_defaults(cfg);
	/* Errors in the environment are reported in the log style the environment asks
	 * for (the flags are not read yet): take those two settings first, quietly. */
	const char *level = getenv("BATCH_AGENT_LOG_LEVEL"), *format = getenv("BATCH_AGENT_LOG_FORMAT");
	if (level != NULL)
		log_level_parse(level, &cfg->log_level);
	if (format != NULL)
		log_format_parse(format, &cfg->log_format);
	log_setup("batch-agent", cfg->log_level, cfg->log_format);
	enum ba_status rc = apply_environment(cfg);
	if (rc != BA_OK)
		return rc;
	rc = apply_flags(cfg, argc, argv);
	log_setup("batch-agent", cfg->log_level, cfg->log_format);
	if (rc != BA_OK || cfg->answered)
		return rc;
	rc = check_exec_conflicts(cfg);
	if (rc != BA_OK)
		return rc;
	/* A bad profile is found now, before any payload starts (the main's starts only
	 * after the rendezvous); the payload's launch builds it again. */
	struct sandbox *sandbox;
	rc = sandbox_load(cfg->seccomp_profile, false, &sandbox);
	sandbox_free(sandbox);
	if (rc != BA_OK)
		return rc;
	/* The helper signs its requests with the job's credentials, session token included:
	 * refused here, before any request, rather than sent over a network in clear text. */
	if (cfg->aws_endpoint_url != NULL && !util_url_safe_for_secrets(cfg->aws_endpoint_url)) {
		char shown[256];
		log_error("--aws-endpoint-url (BATCH_AGENT_AWS_ENDPOINT_URL) \"%s\" would send the job's credentials "
			  "in clear text: use https://, or http:// only to a loopback address",
			  util_url_origin(cfg->aws_endpoint_url, shown, sizeof shown));
		return BA_EX_CONFIG;
	}
	rc = batchenv_load(&cfg->batch);
	if (rc != BA_OK)
		return rc;
	if (cfg->min_nodes > 0 && cfg->batch.num_nodes > 0 && cfg->min_nodes > cfg->batch.num_nodes) {
		log_error("--min-nodes %ld is more than the job's %ld nodes (AWS_BATCH_JOB_NUM_NODES)",
			  cfg->min_nodes, cfg->batch.num_nodes);
		return BA_EX_CONFIG;
	}
	if (cfg->payload_argc == 0 && !cfg->print_config) {
		log_error("no PROGRAM given: usage is batch-agent [OPTIONS] [--] PROGRAM [ARG...] (see --help)");
		return BA_EX_USAGE;
	}
	return BA_OK;
}

static const char *config_role_name(enum role role)
{
	static const char *const names[] = { "auto", "init", "worker", "main" };
	return names[role];
}

static const char *config_protocol_name(enum protocol protocol)
{
	return protocol == PROTOCOL_JULIA ? "julia" : "native";
}

static cJSON *number_or_null(long value)
{
	return value < 0 ? cJSON_CreateNull() : cJSON_CreateNumber((double)value);
}

static cJSON *string_or_null(const char *value)
{
	return value == NULL ? cJSON_CreateNull() : cJSON_CreateString(value);
}

/* {"FROM": TO, ...}; signals by name, a dropped one as null. */
static cJSON *describe_pairs(const struct config_pairs *pairs, bool signals)
{
	char from[32], to[32];
	cJSON *object = cJSON_CreateObject();
	for (size_t i = 0; object != NULL && i < pairs->count; i++) {
		const struct config_pair *pair = &pairs->pair[i];
		if (!signals) {
			snprintf(from, sizeof from, "%d", pair->from);
			cJSON_AddNumberToObject(object, from, pair->to);
			continue;
		}
		util_signal_name(pair->from, from, sizeof from);
		cJSON_AddItemToObject(object, from,
				      pair->to ? cJSON_CreateString(util_signal_name(pair->to, to, sizeof to)) : cJSON_CreateNull());
	}
	return object;
}

static cJSON *describe_batch_env(const struct batch_env *batch)
{
	cJSON *object = cJSON_CreateObject();
	if (object == NULL)
		return NULL;
	cJSON_AddItemToObject(object, "job_id", string_or_null(batch->job_id));
	cJSON_AddItemToObject(object, "attempt", number_or_null(batch->attempt));
	cJSON_AddItemToObject(object, "array_index", number_or_null(batch->array_index));
	cJSON_AddItemToObject(object, "node_index", number_or_null(batch->node_index));
	cJSON_AddItemToObject(object, "main_node_index", number_or_null(batch->main_node_index));
	cJSON_AddItemToObject(object, "num_nodes", number_or_null(batch->num_nodes));
	cJSON_AddItemToObject(object, "main_node_address", string_or_null(batch->main_node_addr));
	cJSON_AddItemToObject(object, "queue", string_or_null(batch->queue));
	cJSON_AddItemToObject(object, "compute_environment", string_or_null(batch->compute_environment));
	return object;
}

enum ba_status config_print(const struct config *cfg, enum role resolved_role, FILE *out)
{
	static const char *const spot_names[] = { "auto", "on", "off" };
	char signal_buf[32];
	enum ba_status rc = BA_EX_OSERR;
	char *text = NULL;
	cJSON *object = cJSON_CreateObject();
	cJSON *payload = cJSON_CreateStringArray((const char *const *)cfg->payload_argv, cfg->payload_argc);
	if (object == NULL || payload == NULL)
		goto out;
	cJSON_AddStringToObject(object, "version", BATCH_AGENT_VERSION);
	cJSON_AddStringToObject(object, "role", config_role_name(resolved_role));
	cJSON_AddStringToObject(object, "role_setting", config_role_name(cfg->role));
	cJSON_AddBoolToObject(object, "exec", cfg->exec);
	cJSON_AddBoolToObject(object, "group", cfg->group);
	cJSON_AddItemToObject(object, "seccomp_profile", string_or_null(cfg->seccomp_profile));
	cJSON_AddBoolToObject(object, "no_new_privs", cfg->no_new_privs);
	cJSON_AddNumberToObject(object, "grace_seconds", (double)cfg->grace_ms / 1000.0);
	cJSON_AddItemToObject(object, "remap_exit", describe_pairs(&cfg->remap_exit, false));
	cJSON_AddItemToObject(object, "rewrite_signal", describe_pairs(&cfg->rewrite_signal, true));
	cJSON_AddStringToObject(object, "log_level", log_level_name(cfg->log_level));
	cJSON_AddStringToObject(object, "log_format", log_format_name(cfg->log_format));
	cJSON_AddItemToObject(object, "manager", string_or_null(cfg->manager));
	cJSON_AddNumberToObject(object, "port", (double)cfg->port);
	/* Where the cookie would come from, never the cookie. */
	cJSON_AddItemToObject(object, "cookie_source",
			      string_or_null(cfg->cookie_file ? "file"
					     : getenv("BATCH_AGENT_COOKIE") ? "environment"
									    : NULL));
	cJSON_AddItemToObject(object, "cookie_file", string_or_null(cfg->cookie_file));
	cJSON_AddNumberToObject(object, "connect_timeout_seconds", (double)cfg->connect_timeout_ms / 1000.0);
	cJSON_AddNumberToObject(object, "wait_timeout_seconds", (double)cfg->wait_timeout_ms / 1000.0);
	cJSON_AddItemToObject(object, "min_nodes", number_or_null(cfg->min_nodes));
	cJSON_AddItemToObject(object, "nodes", string_or_null(cfg->nodes_text));
	cJSON_AddStringToObject(object, "on_node_loss", cfg->on_node_loss == NODE_LOSS_FAIL ? "fail" : "continue");
	static const char *const format_names[] = { "plain", "openmpi", "mpich" };
	cJSON_AddStringToObject(object, "payload_start", cfg->payload_start == PAYLOAD_START_ROSTER ? "roster" : "registered");
	cJSON_AddItemToObject(object, "ready_port", cfg->ready_port ? cJSON_CreateNumber((double)cfg->ready_port) : cJSON_CreateNull());
	cJSON_AddStringToObject(object, "hostfile_format", format_names[cfg->hostfile_format]);
	cJSON_AddItemToObject(object, "env", string_or_null(cfg->env_torch ? "torch" : NULL));
	cJSON_AddStringToObject(object, "on_manager_loss",
				cfg->on_manager_loss == MANAGER_LOSS_EXIT ? "exit" : "continue");
	cJSON_AddNumberToObject(object, "heartbeat_seconds", (double)cfg->heartbeat_ms / 1000.0);
	cJSON_AddStringToObject(object, "protocol", config_protocol_name(cfg->protocol));
	cJSON_AddItemToObject(object, "advertise_addr", string_or_null(cfg->advertise_addr));
	cJSON_AddStringToObject(object, "manager_param", cfg->manager_param);
	cJSON_AddNumberToObject(object, "workers", (double)cfg->workers);
	cJSON_AddItemToObject(object, "min_workers", number_or_null(cfg->min_workers));
	cJSON_AddItemToObject(object, "notify",
			      cfg->notify_signal ? cJSON_CreateString(util_signal_name(cfg->notify_signal, signal_buf,
										      sizeof signal_buf))
						 : cJSON_CreateNull());
	cJSON_AddBoolToObject(object, "submit_workers", cfg->submit_workers);
	cJSON_AddItemToObject(object, "worker_job_definition", string_or_null(cfg->worker_job_definition));
	cJSON_AddItemToObject(object, "worker_job_queue", string_or_null(cfg->worker_job_queue));
	cJSON_AddBoolToObject(object, "replace_drained", cfg->replace_drained);
	cJSON_AddItemToObject(object, "aws_endpoint_url", string_or_null(cfg->aws_endpoint_url));
	cJSON_AddStringToObject(object, "spot_watch", spot_names[cfg->spot_watch]);
	cJSON_AddStringToObject(object, "spot_signal", util_signal_name(cfg->spot_signal, signal_buf, sizeof signal_buf));
	cJSON_AddItemToObject(object, "spot_hold_seconds",
			      cfg->spot_hold_ms == CONFIG_SPOT_HOLD_OFF ? cJSON_CreateNull()
									: cJSON_CreateNumber((double)cfg->spot_hold_ms / 1000.0));
	cJSON_AddItemToObject(object, "aws_batch", describe_batch_env(&cfg->batch));
	cJSON_AddItemToObject(object, "payload", payload);
	payload = NULL;
	text = cJSON_Print(object);
	if (text == NULL)
		goto out;
	if (fprintf(out, "%s\n", text) < 0 || fflush(out) != 0)
		goto out;
	rc = BA_OK;
out:
	cJSON_free(text);
	cJSON_Delete(payload);
	cJSON_Delete(object);
	return rc;
}
