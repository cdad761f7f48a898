/* The agent's diagnostics on stderr, one write(2) per line. */
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static const char *log_program = "batch-agent";
static enum log_level log_threshold = LOG_LEVEL_INFO;
static enum log_format log_style = LOG_FORMAT_TEXT;

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const format_names[] = { "text", "json" };

void log_setup(const char *program, enum log_level level, enum log_format format)
{
	log_program = program;
	log_threshold = level;
	log_style = format;
}

enum log_level log_get_level(void)
{
	return log_threshold;
}

enum log_format log_get_format(void)
{
	return log_style;
}

static bool log_enabled(enum log_level level)
{
	return level <= log_threshold;
}

static void write_whole(const char *line, size_t length)
{
	/* stderr may be a pipe shared with the payload: a single write keeps the line
	 * whole (POSIX guarantees it for pipes up to PIPE_BUF, and lines are short). */
	while (length > 0) {
		ssize_t n = write(STDERR_FILENO, line, length);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		line += n;
		length -= (size_t)n;
	}
}

static void format_time(char *buf, size_t size)
{
	struct timeval now;
	struct tm utc;
	gettimeofday(&now, NULL);
	gmtime_r(&now.tv_sec, &utc);
	size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &utc);
	snprintf(buf + n, size - n, ".%03ldZ", (long)now.tv_usec / 1000);
}

static void emit_json(enum log_level level, const char *message)
{
	char when[40];
	format_time(when, sizeof when);
	cJSON *object = cJSON_CreateObject();
	char *text = NULL, *line = NULL;
	if (object == NULL)
		goto out;
	if (!cJSON_AddStringToObject(object, "time", when) ||
	    !cJSON_AddStringToObject(object, "level", level_names[level]) ||
	    !cJSON_AddNumberToObject(object, "pid", (double)getpid()) ||
	    !cJSON_AddStringToObject(object, "program", log_program) ||
	    !cJSON_AddStringToObject(object, "msg", message))
		goto out;
	text = cJSON_PrintUnformatted(object);
	if (text == NULL)
		goto out;
	/* Escaping can make the record longer than any fixed buffer: size it to fit. */
	size_t length = strlen(text);
	line = malloc(length + 1);
	if (line == NULL)
		goto out;
	memcpy(line, text, length);
	line[length] = '\n';
	write_whole(line, length + 1);
out:
	free(line);
	cJSON_free(text);
	cJSON_Delete(object);
}

/* Length of the well-formed UTF-8 sequence at p (1 to 4), or 0 if it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_sequence(const unsigned char *p)
{
	if (p[0] < 0x80)
		return 1;
	size_t length = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
	if (length == 0 || p[0] > 0xf4)
		return 0;
	for (size_t i = 1; i < length; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) || (p[0] == 0xf0 && p[1] < 0x90) ||
	    (p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return length;
}

/* The one escaping path for text records: a message may carry a peer's text, and a
 * peer must not forge a record or drive the reader's terminal. Bytes below 0x20, 0x7f
 * and bytes that are not well-formed UTF-8 become \xNN, the C1 controls (U+0080 to
 * U+009F, which some terminals obey as escapes) \uNNNN, a backslash \\ (so an escape
 * cannot be faked). Returns the length written; out always ends with a NUL. */
static size_t escape_text(const char *message, char *out, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)message;
	size_t n = 0;
	while (*p && n + 7 < size) {
		size_t length = utf8_sequence(p);
		if (length == 1 && *p >= 0x20 && *p != 0x7f && *p != '\\') {
			out[n++] = (char)*p++;
		} else if (length == 1 && *p == '\\') {
			out[n++] = '\\';
			out[n++] = '\\';
			p++;
		} else if (length == 2 && p[0] == 0xc2 && p[1] < 0xa0) {
			n += (size_t)snprintf(out + n, size - n, "\\u%04x", (unsigned)p[1]);
			p += 2;
		} else if (length > 1) {
			memcpy(out + n, p, length);
			n += length;
			p += length;
		} else {
			out[n++] = '\\';
			out[n++] = 'x';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 0xf];
			p++;
		}
	}
	out[n] = '\0';
	return n;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	int saved_errno = errno;
	char message[LOG_LINE_MAX];
	va_list args;
	va_start(args, fmt);
	vsnprintf(message, sizeof message, fmt, args);
	va_end(args);

	if (log_style == LOG_FORMAT_JSON) {
		/* cJSON escapes every control character itself. */
		emit_json(level, message);
	} else {
		/* Escaping grows a byte to at most four. */
		char escaped[4 * LOG_LINE_MAX];
		escape_text(message, escaped, sizeof escaped);
		char line[sizeof escaped + 128];
		int n = snprintf(line, sizeof line, "%s[%ld]: %s: %s\n", log_program, (long)getpid(),
				 level_names[level], escaped);
		if (n > 0)
			write_whole(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
	}
	errno = saved_errno;
}

bool log_level_parse(const char *text, enum log_level *out)
{
	for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
		if (strcmp(text, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

bool log_format_parse(const char *text, enum log_format *out)
{
	for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++) {
		if (strcmp(text, format_names[i]) == 0) {
			*out = (enum log_format)i;
			return true;
		}
	}
	return false;
}

const char *log_level_name(enum log_level level)
{
	return level_names[level];
}

const char *log_format_name(enum log_format format)
{
	return format_names[format];
}
