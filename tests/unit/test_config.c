/* Configuration: strict parsing of every setting, flag-over-environment precedence,
 * AWS_BATCH_* strictness and the automatic role. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "role.h"
#include "status.h"
#include "util.h"

static const char *const batch_vars[] = {
	"AWS_BATCH_JOB_ID", "AWS_BATCH_JOB_ATTEMPT", "AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_NUM_NODES",
	"AWS_BATCH_JOB_NODE_INDEX", "AWS_BATCH_JOB_MAIN_NODE_INDEX", "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
	"AWS_BATCH_JQ_NAME", "AWS_BATCH_CE_NAME", "BATCH_AGENT_GRACE", "BATCH_AGENT_ROLE", "BATCH_AGENT_MANAGER",
	"BATCH_AGENT_GROUP", "BATCH_AGENT_PROTOCOL", "BATCH_AGENT_MANAGER_PARAM", "BATCH_AGENT_LOG_LEVEL",
	"BATCH_AGENT_REMAP_EXIT", "BATCH_AGENT_REWRITE_SIGNAL", "BATCH_AGENT_EXEC", "BATCH_AGENT_SPOT_HOLD",
};

static int clean_environment(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof batch_vars / sizeof batch_vars[0]; i++)
		unsetenv(batch_vars[i]);
	return 0;
}

/* argv must be writable and outlive the config, as main's does. */
static int load(struct config *cfg, const char *const *args)
{
	static char *argv[32];
	int argc = 0;
	argv[argc++] = "batch-agent";
	for (; args[argc - 1]; argc++)
		argv[argc] = (char *)args[argc - 1];
	argv[argc] = NULL;
	return config_load(cfg, argc, argv);
}

static void test_parse_long_is_strict(void **state)
{
	(void)state;
	long v;
	assert_true(util_parse_long("42", 0, 100, &v));
	assert_int_equal(v, 42);
	assert_false(util_parse_long("", 0, 100, &v));
	assert_false(util_parse_long(" 4", 0, 100, &v));
	assert_false(util_parse_long("4 ", 0, 100, &v));
	assert_false(util_parse_long("+4", 0, 100, &v));
	assert_false(util_parse_long("-4", 0, 100, &v));
	assert_false(util_parse_long("0x10", 0, 100, &v));
	assert_false(util_parse_long("101", 0, 100, &v));
	assert_false(util_parse_long("99999999999999999999999", 0, 100, &v));
	assert_true(util_parse_long("-4", -10, 10, &v));
	assert_int_equal(v, -4);
}

static void test_durations(void **state)
{
	(void)state;
	int64_t ms;
	assert_true(util_parse_duration_ms("10", 100000, &ms));
	assert_int_equal(ms, 10000);
	assert_true(util_parse_duration_ms("0.25", 100000, &ms));
	assert_int_equal(ms, 250);
	assert_true(util_parse_duration_ms("1.5", 100000, &ms));
	assert_int_equal(ms, 1500);
	assert_false(util_parse_duration_ms("1.", 100000, &ms));
	assert_false(util_parse_duration_ms(".5", 100000, &ms));
	assert_false(util_parse_duration_ms("1.2345", 100000, &ms));
	assert_false(util_parse_duration_ms("-1", 100000, &ms));
	assert_false(util_parse_duration_ms("10s", 100000, &ms));
	assert_false(util_parse_duration_ms("101", 100000, &ms));
}

static void test_signal_names(void **state)
{
	(void)state;
	char buf[32];
	assert_int_equal(util_signal_parse("TERM"), SIGTERM);
	assert_int_equal(util_signal_parse("SIGusr1"), SIGUSR1);
	assert_int_equal(util_signal_parse("9"), SIGKILL);
	assert_int_equal(util_signal_parse("RTMIN+2"), SIGRTMIN + 2);
	assert_int_equal(util_signal_parse("SIGRTMAX-1"), SIGRTMAX - 1);
	assert_int_equal(util_signal_parse("RTMIN-2"), 0);
	assert_int_equal(util_signal_parse("NOPE"), 0);
	assert_int_equal(util_signal_parse("0"), 0);
	assert_string_equal(util_signal_name(SIGTERM, buf, sizeof buf), "SIGTERM");
	assert_string_equal(util_signal_name(SIGRTMIN + 3, buf, sizeof buf), "SIGRTMIN+3");
}

static void test_defaults(void **state)
{
	(void)state;
	struct config cfg;
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_int_equal(cfg.grace_ms, 25000);
	assert_int_equal(cfg.port, 49152);
	assert_int_equal(cfg.connect_timeout_ms, 300000);
	assert_int_equal(cfg.role, ROLE_AUTO);
	assert_false(cfg.group);
	assert_int_equal(cfg.payload_argc, 1);
	assert_string_equal(cfg.payload_argv[0], "true");
}

static void test_flag_wins_over_environment(void **state)
{
	(void)state;
	struct config cfg;
	setenv("BATCH_AGENT_GRACE", "3", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_int_equal(cfg.grace_ms, 3000);
	assert_int_equal(load(&cfg, (const char *[]){ "--grace", "0.5", "--", "true", NULL }), BA_OK);
	assert_int_equal(cfg.grace_ms, 500);
	setenv("BATCH_AGENT_GROUP", "yes", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_true(cfg.group);
}

static void test_bad_flags_are_usage_errors(void **state)
{
	(void)state;
	struct config cfg;
	assert_int_equal(load(&cfg, (const char *[]){ "--nope", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--grace", "soon", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--role", "boss", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--port", "70000", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--grace", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ NULL }), BA_EX_USAGE); /* no PROGRAM */
	assert_int_equal(load(&cfg, (const char *[]){ "--print-config", NULL }), BA_OK);
}

static void test_payload_options_are_not_ours(void **state)
{
	(void)state;
	struct config cfg;
	assert_int_equal(load(&cfg, (const char *[]){ "-g", "ls", "--grace", "x", NULL }), BA_OK);
	assert_true(cfg.group);
	assert_int_equal(cfg.payload_argc, 3);
	assert_string_equal(cfg.payload_argv[1], "--grace");
}

static void test_bad_environment_is_config_error(void **state)
{
	(void)state;
	struct config cfg;
	setenv("BATCH_AGENT_GRACE", "ten", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_EX_CONFIG);
}

static void test_aws_batch_strictness(void **state)
{
	(void)state;
	struct config cfg;
	static const struct {
		const char *name, *value;
	} bad[] = {
		{ "AWS_BATCH_JOB_NODE_INDEX", "abc" },
		{ "AWS_BATCH_JOB_NODE_INDEX", "3" }, /* outside 3 nodes */
		{ "AWS_BATCH_JOB_NUM_NODES", "0" },
		{ "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", "198.18.0.256" },
		{ "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", " 198.18.0.1" },
		{ "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", "198.18.0" },
		{ "AWS_BATCH_JOB_ATTEMPT", "0" },
		{ "AWS_BATCH_JOB_ARRAY_INDEX", "-1" },
		{ "AWS_BATCH_JOB_ID", "" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		clean_environment(NULL);
		setenv("AWS_BATCH_JOB_NUM_NODES", "3", 1);
		setenv("AWS_BATCH_JOB_NODE_INDEX", "1", 1);
		setenv("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0", 1);
		setenv(bad[i].name, bad[i].value, 1);
		assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_EX_CONFIG);
	}
	clean_environment(NULL);
	setenv("AWS_BATCH_JOB_NODE_INDEX", "1", 1); /* an index without the job's size */
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_EX_CONFIG);
}

static void test_automatic_role(void **state)
{
	(void)state;
	struct config cfg;
	enum role role;
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_int_equal(role_decide(&cfg, &role), BA_OK);
	assert_int_equal(role, ROLE_INIT);

	assert_int_equal(load(&cfg, (const char *[]){ "--manager", "198.18.0.1:9", "true", NULL }), BA_OK);
	assert_int_equal(role_decide(&cfg, &role), BA_OK);
	assert_int_equal(role, ROLE_WORKER);

	setenv("AWS_BATCH_JOB_NUM_NODES", "3", 1);
	setenv("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0", 1);
	setenv("AWS_BATCH_JOB_NODE_INDEX", "0", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_int_equal(role_decide(&cfg, &role), BA_OK);
	assert_int_equal(role, ROLE_MAIN);
	assert_int_equal(load(&cfg, (const char *[]){ "--protocol", "julia", "true", NULL }), BA_OK);
	assert_int_equal(role_decide(&cfg, &role), BA_OK);
	assert_int_equal(role, ROLE_INIT); /* the Julia manager is the main payload */

	setenv("AWS_BATCH_JOB_NODE_INDEX", "2", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_int_equal(role_decide(&cfg, &role), BA_OK);
	assert_int_equal(role, ROLE_WORKER);
}

static void test_remap_exit(void **state)
{
	(void)state;
	struct config cfg;
	assert_int_equal(load(&cfg, (const char *[]){ "--remap-exit", "3:0", "--remap-exit", "143:0,255:1", "true", NULL }),
			 BA_OK);
	assert_int_equal(cfg.remap_exit.count, 3);
	assert_int_equal(config_pairs_map(&cfg.remap_exit, 3), 0);
	assert_int_equal(config_pairs_map(&cfg.remap_exit, 143), 0);
	assert_int_equal(config_pairs_map(&cfg.remap_exit, 255), 1);
	assert_int_equal(config_pairs_map(&cfg.remap_exit, 4), 4);
	/* The flags replace the environment's list; alone, the list is taken whole. */
	setenv("BATCH_AGENT_REMAP_EXIT", "1:0,2:0", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_int_equal(cfg.remap_exit.count, 2);
	assert_int_equal(load(&cfg, (const char *[]){ "--remap-exit", "9:0", "true", NULL }), BA_OK);
	assert_int_equal(cfg.remap_exit.count, 1);
	assert_int_equal(config_pairs_map(&cfg.remap_exit, 1), 1);
	setenv("BATCH_AGENT_REMAP_EXIT", "1:0,1:2", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_EX_CONFIG);
	unsetenv("BATCH_AGENT_REMAP_EXIT");
	/* At most 16 pairs, counted over every occurrence of the flag. */
	char fifteen[128] = "0:0";
	for (int i = 1; i < 15; i++)
		snprintf(fifteen + strlen(fifteen), sizeof fifteen - strlen(fifteen), ",%d:0", i);
	assert_int_equal(load(&cfg, (const char *[]){ "--remap-exit", fifteen, "--remap-exit", "15:0", "true", NULL }),
			 BA_OK);
	assert_int_equal(cfg.remap_exit.count, 16);
	assert_int_equal(load(&cfg, (const char *[]){ "--remap-exit", fifteen, "--remap-exit", "15:0", "--remap-exit", "16:0",
						     "true", NULL }),
			 BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--remap-exit", "256:0", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--remap-exit", "3:", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--remap-exit", "3:0,", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "--exec", "--remap-exit", "3:0", "true", NULL }), BA_EX_USAGE);
}

static void test_rewrite_signal(void **state)
{
	(void)state;
	struct config cfg;
	assert_int_equal(load(&cfg, (const char *[]){ "--rewrite-signal", "TERM:QUIT", "--rewrite-signal", "SIGUSR1:0,12:RTMIN+1",
						     "true", NULL }),
			 BA_OK);
	assert_int_equal(config_pairs_map(&cfg.rewrite_signal, SIGTERM), SIGQUIT);
	assert_int_equal(config_pairs_map(&cfg.rewrite_signal, SIGUSR1), 0);
	assert_int_equal(config_pairs_map(&cfg.rewrite_signal, SIGUSR2), SIGRTMIN + 1);
	assert_int_equal(config_pairs_map(&cfg.rewrite_signal, SIGHUP), SIGHUP);
	static const char *const bad[] = { "KILL:TERM", "STOP:TERM", "CHLD:TERM", "TERM:0", "SIGTERM:0", "15:0",
					   "0:TERM", "TERM:NOPE", "TERM", "HUP:INT,HUP:QUIT" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(load(&cfg, (const char *[]){ "--rewrite-signal", bad[i], "true", NULL }), BA_EX_USAGE);
	setenv("BATCH_AGENT_REWRITE_SIGNAL", "TERM:0", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_EX_CONFIG);
	setenv("BATCH_AGENT_REWRITE_SIGNAL", "TERM:QUIT", 1);
	setenv("BATCH_AGENT_EXEC", "1", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_EX_CONFIG);
}

/* Spot notice times (imds/spot_instance-action_terminate_docs.json: 2017-09-18T08:22:00Z
 * is 1505722920 s since the epoch), and what RFC 3339 also allows. */
static void test_rfc3339_times(void **state)
{
	(void)state;
	int64_t ms = 0;
	assert_true(util_parse_rfc3339_ms("2017-09-18T08:22:00Z", &ms));
	assert_int_equal(ms, INT64_C(1505722920000));
	assert_true(util_parse_rfc3339_ms("2017-09-18t08:22:00.25z", &ms));
	assert_int_equal(ms, INT64_C(1505722920250));
	assert_true(util_parse_rfc3339_ms("2017-09-18T10:22:00+02:00", &ms));
	assert_int_equal(ms, INT64_C(1505722920000));
	assert_true(util_parse_rfc3339_ms("2017-09-18T03:52:00-04:30", &ms));
	assert_int_equal(ms, INT64_C(1505722920000));
	assert_true(util_parse_rfc3339_ms("2020-02-29T23:59:60Z", &ms)); /* a leap second */
	const char *bad[] = { "2017-09-18 08:22:00", "2017-09-18T08:22:00", "2017-09-18T08:22Z", "2017-13-18T08:22:00Z",
			      "2017-09-18T24:00:00Z", "2017-09-18T08:22:00.Z", "2017-09-18T08:22:00+0200",
			      "2017-09-18T08:22:00Z ", "", "soon" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(util_parse_rfc3339_ms(bad[i], &ms));
}

/* --spot-hold: on (the default margin), off, or seconds; "1" is neither a switch nor
 * allowed to mean one. */
static void test_spot_hold(void **state)
{
	(void)state;
	struct config cfg;
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_int_equal(cfg.spot_hold_ms, CONFIG_SPOT_HOLD_DEFAULT_MS);
	assert_int_equal(load(&cfg, (const char *[]){ "--spot-hold", "off", "true", NULL }), BA_OK);
	assert_int_equal(cfg.spot_hold_ms, CONFIG_SPOT_HOLD_OFF);
	assert_int_equal(load(&cfg, (const char *[]){ "--spot-hold", "1", "true", NULL }), BA_OK);
	assert_int_equal(cfg.spot_hold_ms, 1000);
	setenv("BATCH_AGENT_SPOT_HOLD", "off", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "--spot-hold", "on", "true", NULL }), BA_OK);
	assert_int_equal(cfg.spot_hold_ms, CONFIG_SPOT_HOLD_DEFAULT_MS);
	setenv("BATCH_AGENT_SPOT_HOLD", "yes", 1);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_EX_CONFIG);
	unsetenv("BATCH_AGENT_SPOT_HOLD");
	assert_int_equal(load(&cfg, (const char *[]){ "--spot-hold", "3601", "true", NULL }), BA_EX_USAGE);
}

/* getopt keeps its place in a cluster of short flags between calls: a load that stopped
 * at "-x" of "-xg" must not hand the next load the "g" of a command line it never saw. */
static void test_a_second_load_starts_afresh(void **state)
{
	(void)state;
	struct config cfg;
	assert_int_equal(load(&cfg, (const char *[]){ "-xg", "true", NULL }), BA_EX_USAGE);
	assert_int_equal(load(&cfg, (const char *[]){ "true", NULL }), BA_OK);
	assert_false(cfg.answered);
	assert_false(cfg.group);
	assert_int_equal(cfg.payload_argc, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_long_is_strict),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_signal_names),
		cmocka_unit_test_setup(test_defaults, clean_environment),
		cmocka_unit_test_setup(test_flag_wins_over_environment, clean_environment),
		cmocka_unit_test_setup(test_bad_flags_are_usage_errors, clean_environment),
		cmocka_unit_test_setup(test_payload_options_are_not_ours, clean_environment),
		cmocka_unit_test_setup(test_bad_environment_is_config_error, clean_environment),
		cmocka_unit_test_setup(test_aws_batch_strictness, clean_environment),
		cmocka_unit_test_setup(test_automatic_role, clean_environment),
		cmocka_unit_test_setup(test_remap_exit, clean_environment),
		cmocka_unit_test_setup(test_rewrite_signal, clean_environment),
		cmocka_unit_test(test_rfc3339_times),
		cmocka_unit_test_setup(test_spot_hold, clean_environment),
		cmocka_unit_test_setup(test_a_second_load_starts_afresh, clean_environment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
