/* batch-agent-aws's command line. */
#ifndef BATCH_AGENT_AWS_CLI_H
#define BATCH_AGENT_AWS_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"

/* "batch-agent-aws: WHAT 'ARG'" (ARG may be NULL) and a hint on stderr: BA_EX_USAGE. */
enum ba_status cli_usage_error(const char *what, const char *arg);

/* Seconds with up to three decimals, as milliseconds in [min_ms, max_ms]. */
bool cli_parse_seconds(const char *text, int64_t min_ms, int64_t max_ms, int64_t *out);

/* The global options, before COMMAND (log style, timeouts into aws_settings): BA_OK
 * (with *answered after --help or --version, which printed), or BA_EX_USAGE. */
enum ba_status cli_global_options(int argc, char **argv, bool *answered);

/* A command's options (argv[0] is the command) into values, by option letter: BA_OK,
 * or BA_EX_USAGE (reported). */
enum ba_status cli_command_options(int argc, char **argv, const struct option *opts, char **values);

#endif
