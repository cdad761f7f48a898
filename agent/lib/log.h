/* The agent's own diagnostics: whole lines on stderr, each written with one write(2) so
 * that lines from the agent and the payload never interleave mid-line.
 *
 * Text lines read "batch-agent[PID]: LEVEL: message"; JSON lines are objects with
 * "time", "level", "pid", "program" and "msg". Secrets are never passed here. */
#ifndef BATCH_AGENT_LOG_H
#define BATCH_AGENT_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* program names the lines ("batch-agent", "batch-agent-aws"). */
void log_setup(const char *program, enum log_level level, enum log_format format);
enum log_level log_get_level(void);
enum log_format log_get_format(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* Parse "error|warn|info|debug" and "text|json"; false when the text is neither. */
bool log_level_parse(const char *text, enum log_level *out);
bool log_format_parse(const char *text, enum log_format *out);
const char *log_level_name(enum log_level level);
const char *log_format_name(enum log_format format);

#endif
