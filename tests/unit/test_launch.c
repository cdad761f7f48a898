/* Building the payload: placeholders in argv, and the environment it inherits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "launch.h"
#include "status.h"

static const char *find_env(char **envp, const char *name)
{
	size_t length = strlen(name);
	for (char **p = envp; *p; p++)
		if (strncmp(*p, name, length) == 0 && (*p)[length] == '=')
			return *p + length + 1;
	return NULL;
}

static struct config config_with(char **argv, int argc)
{
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.payload_argv = argv;
	cfg.payload_argc = argc;
	return cfg;
}

static void test_placeholders_are_substituted(void **state)
{
	(void)state;
	char *argv[] = { "julia", "--bind-to={{NODE_ADDR}}", "{{MANAGER}}/{{NODE_ADDR}}", "{{UNKNOWN}}", NULL };
	struct config cfg = config_with(argv, 4);
	struct launch_vars vars = { .manager = "198.18.0.1:49152", .node_addr = "198.18.0.7", .handover_fd = -1 };
	struct payload payload;
	assert_int_equal(launch_prepare(&payload, &cfg, &vars), BA_OK);
	assert_string_equal(payload.argv[0], "julia");
	assert_string_equal(payload.argv[1], "--bind-to=198.18.0.7");
	assert_string_equal(payload.argv[2], "198.18.0.1:49152/198.18.0.7");
	assert_string_equal(payload.argv[3], "{{UNKNOWN}}");
	assert_null(payload.argv[4]);
	launch_release(&payload);
}

static void test_placeholder_without_value_is_config_error(void **state)
{
	(void)state;
	char *argv[] = { "mpirun", "--hostfile", "{{HOSTFILE}}", NULL };
	struct config cfg = config_with(argv, 3);
	struct payload payload;
	assert_int_equal(launch_prepare(&payload, &cfg, NULL), BA_EX_CONFIG);
}

static void test_environment_gains_values_and_loses_cookie(void **state)
{
	(void)state;
	char *argv[] = { "true", NULL };
	struct config cfg = config_with(argv, 1);
	const char *extra[] = { "JULIA_WORKER_TIMEOUT=300", NULL };
	struct launch_vars vars = { .node_addr = "198.18.0.7", .hostfile = "/tmp/h", .nodes = "a,b",
				    .handover_fd = 5, .extra_env = extra };
	struct payload payload;
	setenv("BATCH_AGENT_COOKIE", "secret", 1);
	setenv("BATCH_AGENT_NODE_ADDR", "stale", 1);
	setenv("KEEP_ME", "yes", 1);
	assert_int_equal(launch_prepare(&payload, &cfg, &vars), BA_OK);
	assert_null(find_env(payload.envp, "BATCH_AGENT_COOKIE"));
	assert_string_equal(find_env(payload.envp, "BATCH_AGENT_NODE_ADDR"), "198.18.0.7");
	assert_string_equal(find_env(payload.envp, "BATCH_AGENT_HOSTFILE"), "/tmp/h");
	assert_string_equal(find_env(payload.envp, "BATCH_AGENT_NODES"), "a,b");
	assert_string_equal(find_env(payload.envp, "BATCH_AGENT_FD"), "5");
	assert_string_equal(find_env(payload.envp, "JULIA_WORKER_TIMEOUT"), "300");
	assert_string_equal(find_env(payload.envp, "KEEP_ME"), "yes");
	assert_null(find_env(payload.envp, "BATCH_AGENT_MANAGER"));
	assert_int_equal(payload.keep_fd, 5);
	int stale = 0;
	for (char **p = payload.envp; *p; p++)
		stale += strcmp(*p, "BATCH_AGENT_NODE_ADDR=stale") == 0;
	assert_int_equal(stale, 0);
	launch_release(&payload);
	unsetenv("BATCH_AGENT_COOKIE");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_placeholders_are_substituted),
		cmocka_unit_test(test_placeholder_without_value_is_config_error),
		cmocka_unit_test(test_environment_gains_values_and_loses_cookie),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
