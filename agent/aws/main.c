/* batch-agent-aws: every AWS endpoint call of batch-agent, in a subprocess of its own so
 * that libcurl and its libraries are loaded only here. It prints one JSON document on
 * stdout (spot-watch: one JSON line per notice) and diagnostics on stderr. */
#include "batchapi.h"
#include "batchjobs.h"
#include "cli.h"
#include "common.h"
#include "http.h"
#include "imds.h"
#include "log.h"
#include "status.h"
#include "tmds.h"
#include "util.h"

#include <getopt.h>
#include <nss.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Each command, once its command line is parsed (values by option letter). */

static enum ba_status job_parameters(const struct cli_command_line *cl)
{
	if (cl->values['e'] != NULL && cl->values['e'][0] == '\0')
		return cli_usage_error("empty --endpoint-url", NULL);
	enum ba_status rc = http_global_init();
	return rc == BA_OK ? batch_job_parameters_command(cl->values['e']) : rc;
}

static enum ba_status submit_job(const struct cli_command_line *cl)
{
	const struct batch_submit s = {
		.job_name = cl->values['n'],
		.job_queue = cl->values['q'],
		.job_definition = cl->values['d'],
		.array_size = cl->values['s'],
		.parameters = cl->repeated,
		.parameter_count = cl->repeated_count,
		.endpoint = cl->values['e'],
	};
	return batch_submit_job_command(&s);
}

static enum ba_status stop_jobs(const struct cli_command_line *cl)
{
	return batch_stop_jobs_command(cl->values['r'], cl->operands, (size_t)cl->operand_count,
	                               cl->values['e']);
}

static enum ba_status task_metadata(const struct cli_command_line *cl)
{
	(void)cl;
	enum ba_status rc = http_global_init();
	return rc == BA_OK ? tmds_command() : rc;
}

static enum ba_status spot_watch(const struct cli_command_line *cl)
{
	char *const *values = cl->values;
	int64_t interval = 5000;
	long ttl = 21600;
	if (values['i'] != NULL && !cli_parse_seconds(values['i'], 100, 3600000, &interval))
		return cli_usage_error("bad --interval", values['i']);
	if (values['T'] != NULL && !util_parse_long(values['T'], 1, 21600, &ttl))
		return cli_usage_error("bad --token-ttl", values['T']);
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	http_watch_signals(&stop);
	enum ba_status rc = http_global_init();
	return rc == BA_OK ? imds_spot_watch_command(interval, ttl, values['o'] != NULL) : rc;
}

static enum ba_status imds_probe(const struct cli_command_line *cl)
{
	(void)cl;
	enum ba_status rc = http_global_init();
	return rc == BA_OK ? imds_probe_command() : rc;
}

static const struct option job_parameters_options[] = {
	{ "endpoint-url", required_argument, NULL, 'e' },
	{ NULL, 0, NULL, 0 },
};
static const struct option submit_job_options[] = {
	{ "job-name", required_argument, NULL, 'n' },
	{ "job-queue", required_argument, NULL, 'q' },
	{ "job-definition", required_argument, NULL, 'd' },
	{ "array-size", required_argument, NULL, 's' },
	{ "parameter", required_argument, NULL, 'p' },
	{ "endpoint-url", required_argument, NULL, 'e' },
	{ NULL, 0, NULL, 0 },
};
static const struct option stop_jobs_options[] = {
	{ "reason", required_argument, NULL, 'r' },
	{ "endpoint-url", required_argument, NULL, 'e' },
	{ NULL, 0, NULL, 0 },
};
static const struct option spot_watch_options[] = {
	{ "interval", required_argument, NULL, 'i' },
	{ "token-ttl", required_argument, NULL, 'T' },
	{ "optional", no_argument, NULL, 'o' },
	{ NULL, 0, NULL, 0 },
};
static const struct option no_options[] = { { NULL, 0, NULL, 0 } };

static const struct command {
	const char *name;
	const struct option *options;
	int repeatable; /* the option letter that may be given more than once, or 0 */
	bool operands;  /* arguments after the options */
	enum ba_status (*run)(const struct cli_command_line *cl);
} commands[] = {
	{ "job-parameters", job_parameters_options, 0, false, job_parameters },
	{ "submit-job", submit_job_options, 'p', false, submit_job },
	{ "stop-jobs", stop_jobs_options, 0, true, stop_jobs },
	{ "task-metadata", no_options, 0, false, task_metadata },
	{ "spot-watch", spot_watch_options, 0, false, spot_watch },
	{ "imds-probe", no_options, 0, false, imds_probe },
};

static enum ba_status run(int argc, char **argv)
{
	bool answered;
	enum ba_status rc = cli_global_options(argc, argv, &answered);
	if (rc != BA_OK || answered)
		return rc;
	if (optind >= argc)
		return cli_usage_error("missing COMMAND", NULL);
	const char *command = argv[optind];
	/* A reader that went away must not kill us with SIGPIPE mid-message. */
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(command, commands[i].name) != 0)
			continue;
		struct cli_command_line cl = { 0 };
		rc = cli_command_options(argc - optind, argv + optind, commands[i].options,
		                         commands[i].repeatable, commands[i].operands, &cl);
		if (rc == BA_OK)
			rc = commands[i].run(&cl);
		http_global_cleanup();
		return rc;
	}
	return cli_usage_error("unknown command", command);
}

int main(int argc, char **argv)
{
	/* As the agent resolves (README, "Name resolution"): the bundle's libc must not load
	 * the NSS modules of the image's libc. */
	__nss_configure_lookup("hosts", "files dns");
	enum ba_status rc = run(argc, argv);
	if (fflush(stdout) != 0 && rc == BA_OK)
		rc = BA_EX_OSERR;
	return rc;
}
