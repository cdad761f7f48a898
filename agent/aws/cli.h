/* batch-agent-aws's command line. */
#ifndef BATCH_AGENT_AWS_CLI_H
#define BATCH_AGENT_AWS_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* "batch-agent-aws: WHAT 'ARG'" (ARG may be NULL) and a hint on stderr: BA_EX_USAGE. */
enum ba_status cli_usage_error(const char *what, const char *arg);

/* Seconds with up to three decimals, as milliseconds in [min_ms, max_ms]. */
bool cli_parse_seconds(const char *text, int64_t min_ms, int64_t max_ms, int64_t *out);

/* The global options, before COMMAND (log style, timeouts into aws_settings): BA_OK
 * (with *answered after --help or --version, which printed), or BA_EX_USAGE. */
enum ba_status cli_global_options(int argc, char **argv, bool *answered);

#define CLI_MAX_REPEATED 65 /* one over the most a command accepts, so it can say so */

/* A command's command line, once parsed. */
struct cli_command_line {
	char *values[128]; /* by option letter: the last value, "" for a switch, or NULL */
	/* Every value of the command's repeatable option, in order (at most
	 * CLI_MAX_REPEATED are kept; repeated_count counts them all). */
	const char *repeated[CLI_MAX_REPEATED];
	size_t repeated_count;
	char **operands; /* the arguments after the options */
	int operand_count;
};

/* A command's options (argv[0] is the command) into out: BA_OK, or BA_EX_USAGE
 * (reported). repeatable is the letter of the option that may be given more than once
 * (0: none); operands says whether arguments may follow the options. */
enum ba_status cli_command_options(int argc, char **argv, const struct option *opts, int repeatable,
                                   bool operands, struct cli_command_line *out);

#endif
