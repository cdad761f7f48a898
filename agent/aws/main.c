/* batch-agent-aws: every AWS endpoint call of batch-agent, in a subprocess of its own so
 * that libcurl and its libraries are loaded only here. It prints one JSON document on
 * stdout (spot-watch: one JSON line per notice) and diagnostics on stderr. */
#include "batchapi.h"
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


/* Each command, once its options are parsed into values (by option letter). */

static enum ba_status job_parameters(char **values)
{
	if (values['e'] != NULL && values['e'][0] == '\0')
		return cli_usage_error("empty --endpoint-url", NULL);
	enum ba_status rc = http_global_init();
	return rc == BA_OK ? batch_job_parameters_command(values['e']) : rc;
}

static enum ba_status task_metadata(char **values)
{
	(void)values;
	enum ba_status rc = http_global_init();
	return rc == BA_OK ? tmds_command() : rc;
}

static enum ba_status spot_watch(char **values)
{
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

static enum ba_status imds_probe(char **values)
{
	(void)values;
	enum ba_status rc = http_global_init();
	return rc == BA_OK ? imds_probe_command() : rc;
}

static const struct option job_parameters_options[] = {
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
	enum ba_status (*run)(char **values);
} commands[] = {
	{ "job-parameters", job_parameters_options, job_parameters },
	{ "task-metadata", no_options, task_metadata },
	{ "spot-watch", spot_watch_options, spot_watch },
	{ "imds-probe", no_options, imds_probe },
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
		char *values[128] = { 0 };
		rc = cli_command_options(argc - optind, argv + optind, commands[i].options, values);
		if (rc == BA_OK)
			rc = commands[i].run(values);
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
