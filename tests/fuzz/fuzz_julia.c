/* Julia manager lines (julia.c, PROTOCOL.md §10): the MNP child's exchange with an
 * AWSClusterManagers.jl manager, julia_handshake on the bytes the manager sends.
 *
 * Input: what the manager sends after our job_id line, written into a socket pair
 * before the exchange starts, then the end of the stream.
 *
 * Checked beyond "no crash", when the exchange passes:
 *   - the cookie is what the first line carries after julia_cookie: (trailing spaces
 *     dropped), 1+ word characters;
 *   - the timeout is the second line's decimal number;
 *   - nothing past the two lines was read: those bytes belong to the payload, which
 *     inherits the socket, and are still in it, unchanged;
 *   - we sent exactly "job_id:<AWS_BATCH_JOB_ID>\n". */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "julia.h"
#include "log.h"

#define JOB_ID "6abf3ecd-07a8-4faa-8a65-79e7404eb50f#1"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_julia", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

/* The end of line n (0 or 1) of data: the index of its '\n', or size. */
static size_t line_end(const uint8_t *data, size_t size, size_t from)
{
	const uint8_t *nl = memchr(data + from, '\n', size - from);
	return nl ? (size_t)(nl - data) : size;
}

static void check_grant(const uint8_t *data, size_t size, const struct julia_grant *grant, int fd)
{
	static const char prefix[] = "julia_cookie:";
	size_t first = line_end(data, size, 0);
	FUZZ_CHECK(first < size && first > sizeof prefix - 1 && memcmp(data, prefix, sizeof prefix - 1) == 0);
	size_t n = first;
	if (n > 0 && data[n - 1] == '\r')
		n--;
	while (n > 0 && data[n - 1] == ' ')
		n--;
	size_t len = n - (sizeof prefix - 1);
	FUZZ_CHECK(grant->cookie.length == len && len > 0 &&
		   memcmp(grant->cookie.bytes, data + sizeof prefix - 1, len) == 0);
	for (size_t i = 0; i < len; i++)
		FUZZ_CHECK(isalnum(grant->cookie.bytes[i]) || grant->cookie.bytes[i] == '_');

	/* The harness writes everything at once, so the second line is always there. */
	size_t second = line_end(data, size, first + 1);
	FUZZ_CHECK(second < size && grant->worker_timeout_s >= 0);
	/* Decimal digits, any number of leading zeros (the agent takes 0000300 as 300). */
	size_t start = first + 1 + strlen("julia_worker_timeout:");
	size_t stop = second > start && data[second - 1] == '\r' ? second - 1 : second;
	FUZZ_CHECK(stop > start);
	long value = 0;
	for (size_t i = start; i < stop; i++) {
		FUZZ_CHECK(isdigit(data[i]) && value <= (1L << 30));
		value = value * 10 + (data[i] - '0');
	}
	FUZZ_CHECK(value == grant->worker_timeout_s);

	/* What follows the lines is the payload's, still unread. */
	size_t rest = size - (second + 1);
	uint8_t *left = malloc(rest + 1);
	FUZZ_CHECK(left != NULL);
	ssize_t got = recv(fd, left, rest + 1, MSG_DONTWAIT);
	FUZZ_CHECK((rest == 0 && got == 0) || (got >= 0 && (size_t)got == rest && memcmp(left, data + second + 1, rest) == 0));
	free(left);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The two lines are at most 1024 bytes each: more input only tests the socket. */
	if (size > 8192)
		return 0;
	int fds[2];
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
	FUZZ_CHECK(size == 0 || send(fds[0], data, size, MSG_NOSIGNAL) == (ssize_t)size);
	shutdown(fds[0], SHUT_WR);
	struct config cfg = { 0 };
	cfg.batch.job_id = JOB_ID;
	struct julia_grant grant = { 0 };
	enum ba_status rc = julia_handshake(&cfg, fds[1], &grant);
	FUZZ_CHECK(rc == BA_OK || rc == BA_EX_PROTOCOL);
	char hello[sizeof "job_id:" JOB_ID "\n" + 1];
	ssize_t sent = recv(fds[0], hello, sizeof hello, MSG_DONTWAIT);
	FUZZ_CHECK(sent == (ssize_t)strlen("job_id:" JOB_ID "\n") && memcmp(hello, "job_id:" JOB_ID "\n", (size_t)sent) == 0);
	if (rc == BA_OK) {
		check_grant(data, size, &grant, fds[1]);
		cookie_wipe(&grant.cookie);
	}
	close(fds[0]);
	close(fds[1]);
	return 0;
}
