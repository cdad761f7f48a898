/* The configuration (config.c): config_load on a command line and an environment, the
 * BATCH_AGENT_* twins of the flags and the AWS_BATCH_* variables together, then
 * --print-config's rendering of what was loaded.
 *
 * Input: NUL-separated entries (environ.h). An entry NAME=VALUE whose NAME starts
 * with BATCH_AGENT_ or AWS_BATCH_ goes to the environment; every other entry is the
 * next argument after "batch-agent". Inputs that name a seccomp profile are skipped:
 * loading one reads a file (any path, a FIFO would block), and the profile's parser
 * has a target of its own (fuzz_seccomp).
 *
 * Checked beyond "no crash": the status is one of the documented ones (0, 64, 78, or
 * what a sandbox or --help may return); a loaded configuration that is not a --help
 * or --version answer has a PROGRAM (or --print-config) and renders as one JSON
 * object with its role, which parses again. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "environ.h"
#include "fuzz.h"
#include "log.h"

#define MAX_ARGS 64

struct command_line {
	char *argv[MAX_ARGS + 2];
	int argc;
	bool skip;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* --help and --version print on stdout. */
	if (freopen("/dev/null", "w", stdout) == NULL)
		abort();
	return 0;
}

/* --seccomp-profile, spelled out or as getopt_long's abbreviations ("--se" is already
 * unique), with its value after '=' or as the next argument. */
static bool names_seccomp_flag(const char *entry)
{
	static const char flag[] = "--seccomp-profile";
	size_t n = strcspn(entry, "=");
	return n >= 4 && n < sizeof flag && strncmp(entry, flag, n) == 0;
}

static void take_entry(char *entry, void *ctx)
{
	struct command_line *cl = ctx;
	if (strstr(entry, "seccomp") != NULL || strstr(entry, "SECCOMP") != NULL || names_seccomp_flag(entry))
		cl->skip = true;
	if ((strncmp(entry, "BATCH_AGENT_", 12) == 0 || strncmp(entry, "AWS_BATCH_", 10) == 0) &&
	    strchr(entry, '=') != NULL) {
		environ_set(entry);
		return;
	}
	if (cl->argc <= MAX_ARGS) {
		cl->argv[cl->argc] = strdup(entry);
		FUZZ_CHECK(cl->argv[cl->argc] != NULL);
		cl->argc++;
	}
}

static void check_print(const struct config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	FUZZ_CHECK(out != NULL);
	enum ba_status rc = config_print(cfg, ROLE_WORKER, out);
	FUZZ_CHECK(fclose(out) == 0);
	FUZZ_CHECK(rc == BA_OK);
	cJSON *doc = fuzz_json_exact(text, len);
	FUZZ_CHECK(cJSON_IsObject(doc));
	FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "role")));
	cJSON_Delete(doc);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct command_line cl = { .argv = { strdup("batch-agent") }, .argc = 1 };
	FUZZ_CHECK(cl.argv[0] != NULL);
	clearenv();
	FUZZ_CHECK(environ_each(data, size, take_entry, &cl));
	if (!cl.skip) {
		struct config cfg;
		/* getopt_long keeps its place between calls: 0 starts it afresh. */
		optind = 0;
		enum ba_status rc = config_load(&cfg, cl.argc, cl.argv);
		FUZZ_CHECK(rc == BA_OK || rc == BA_EX_USAGE || rc == BA_EX_CONFIG);
		if (rc == BA_OK && !cfg.answered) {
			FUZZ_CHECK(cfg.payload_argc > 0 || cfg.print_config);
			FUZZ_CHECK(cfg.payload_argc == 0 || cfg.payload_argv[cfg.payload_argc] == NULL);
			check_print(&cfg);
		}
	}
	for (int i = 0; i < cl.argc; i++)
		free(cl.argv[i]);
	return 0;
}
