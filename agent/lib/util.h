/* Small helpers shared by every module: strict number parsing, time, memory wiping. */
#ifndef BATCH_AGENT_UTIL_H
#define BATCH_AGENT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

#include <cjson/cJSON.h>

/* Strict decimal integer in [min, max]: no sign unless min < 0, no blanks, no junk,
 * no empty string. */
bool util_parse_long(const char *text, long min, long max, long *out);

/* Seconds as a decimal with up to three fractional digits ("10", "0.25") into
 * milliseconds, within [0, max_ms]. */
bool util_parse_duration_ms(const char *text, int64_t max_ms, int64_t *out);

/* Boolean setting: 1/0, true/false, yes/no, on/off (any case). */
bool util_parse_bool(const char *text, bool *out);

/* A signal by name ("TERM", "SIGTERM", "RTMIN+3") or number; 0 when unknown. */
int util_signal_parse(const char *text);
/* "SIGTERM", "SIGRTMIN+3"; a static string, or "signal N" in buf. */
const char *util_signal_name(int sig, char *buf, size_t size);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t util_now_ms(void);
/* CLOCK_REALTIME in milliseconds since the epoch: only to compare with dates that
 * others wrote (a Spot notice's time), never to time a wait. */
int64_t util_wall_ms(void);
/* An RFC 3339 date-time, YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) (T and Z in either
 * case), as milliseconds since the epoch. */
bool util_parse_rfc3339_ms(const char *text, int64_t *epoch_ms);

/* Overwrite secret memory so that the compiler cannot drop the write. */
void util_wipe(void *p, size_t n);
/* util_wipe, then free; NULL is fine. */
void util_wipe_free(void *p, size_t n);

/* Memory for a secret: whole pages of their own, left out of core dumps
 * (MADV_DONTDUMP) and absent from a forked child (MADV_WIPEONFORK, where the kernel has
 * it), zero-filled. NULL when out of memory. util_secret_free wipes and unmaps it: pass
 * the size that was allocated. */
void *util_secret_alloc(size_t size);
void util_secret_free(void *p, size_t size);

/* No core dump of this process, and /proc/<pid>/mem, environ and fd closed to other
 * processes of our uid that lack CAP_SYS_PTRACE (PR_SET_DUMPABLE 0). execve of a
 * non-setuid program resets it, so every program that holds a secret sets it itself. */
void util_protect_process(void);

/* Remove NAME from the environment and zero its value where the kernel shows it in
 * /proc/<pid>/environ (getenv points into that block for inherited variables). */
void util_scrub_env(const char *name);

/* Whether a URL may carry credentials: https://, or http:// whose host is a literal
 * loopback address (127.0.0.0/8, [::1]; an optional port, nothing else before the path).
 * Anything else over http, userinfo and names included, is refused: the token would
 * cross a network in clear text. */
bool util_url_safe_for_secrets(const char *url);

/* What of a URL a log may show: its scheme and host[:port], without userinfo, path,
 * query or fragment (any of which may hold a secret). Written to buf; returns buf. */
const char *util_url_origin(const char *url, char *buf, size_t size);

/* A closed stdin, stdout or stderr would be reused by the agent's own descriptors (and
 * log lines would go into a socket): open /dev/null on each that is closed. */
void util_ensure_std_fds(void);

/* A close-on-exec pipe, then fork: BA_OK in both processes (*pid 0 in the child), or
 * BA_EX_OSERR (logged, nothing left open). */
enum ba_status util_fork_with_pipe(int fds[2], pid_t *pid);

/* text[0, len) as exactly one JSON value, whitespace around it allowed: NULL when it
 * is not JSON or something follows the value (cJSON alone takes "{} junk" as {}).
 * With error_at, the offset where the text stopped being that one value. */
cJSON *util_json_parse(const char *text, size_t len, size_t *error_at);

/* $TMPDIR, else /tmp (made when missing and the root is writable), else /dev/shm, as
 * an absolute path (a relative TMPDIR is resolved now), in buf. */
const char *util_temp_dir(char *buf, size_t size);

/* write(2) until all of data is out: BA_OK, or BA_EX_OSERR with errno set. */
enum ba_status util_write_all(int fd, const void *data, size_t length);

#endif
