/* The AWSClusterManagers.jl dialect: the line exchange and the payload's plumbing. */
#include "julia.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "address.h"
#include "wait.h"
#include "launch.h"
#include "log.h"
#include "status.h"
#include "supervise.h"
#include "util.h"

#define LINE_MAX_BYTES 1024
#define EXCHANGE_TIMEOUT_MS 60000
#define TIMEOUT_LINE_WAIT_MS 2000

/* Read one line, byte by byte: whatever follows the manager's two lines belongs to
 * the payload, so we must not read past them. */
static enum ba_status read_line(int fd, int64_t deadline, char *line, size_t size, const char *what)
{
	size_t length = 0;
	for (;;) {
		int64_t left = deadline - util_now_ms();
		if (left <= 0) {
			log_error("the manager did not send the %s line within %d s", what, EXCHANGE_TIMEOUT_MS / 1000);
			return BA_EX_PROTOCOL;
		}
		/* A SIGTERM must not wait out the 60 s exchange: wait_fd watches for it. */
		bool ready;
		enum ba_status rc = wait_fd(fd, POLLIN, deadline, &ready);
		if (rc != BA_OK)
			return rc;
		if (!ready)
			continue;
		char c;
		ssize_t got = read(fd, &c, 1);
		if (got < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (got == 0) {
			log_error("the manager closed the connection before sending the %s line%s", what,
				  length ? " (it sent part of one)" : "");
			return BA_EX_PROTOCOL;
		}
		if (got < 0) {
			log_error("the connection to the manager failed before the %s line: %m", what);
			return BA_EX_UNAVAILABLE;
		}
		if (c == '\n') {
			if (length > 0 && line[length - 1] == '\r')
				length--;
			/* A NUL would cut the line short for every str* function after us (a
			 * truncated cookie that still "works"); other control bytes have no
			 * place in either line. Name the byte, never the line: it may hold a
			 * cookie. */
			for (size_t i = 0; i < length; i++) {
				unsigned char b = (unsigned char)line[i];
				if (b < 0x20 || b == 0x7f) {
					log_error("the manager's %s line holds the control byte 0x%02x at offset %zu", what, b, i);
					return BA_EX_PROTOCOL;
				}
			}
			line[length] = '\0';
			return BA_OK;
		}
		if (length + 1 >= size) {
			log_error("the manager's %s line is longer than %zu bytes", what, size - 1);
			return BA_EX_PROTOCOL;
		}
		line[length++] = c;
	}
}

static enum ba_status write_all(int fd, const char *data, size_t length, int64_t deadline)
{
	while (length > 0) {
		bool ready;
		enum ba_status rc = wait_fd(fd, POLLOUT, deadline, &ready);
		if (rc != BA_OK)
			return rc;
		if (!ready)
			return BA_EX_UNAVAILABLE;
		ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0)
			return BA_EX_UNAVAILABLE;
		data += n;
		length -= (size_t)n;
	}
	return BA_OK;
}

/* Julia checks ^julia_cookie:(\w+) and ^julia_worker_timeout:(\d+); we insist that the
 * match is the whole line, because a longer line means a manager we do not know. */
static bool all_match(const char *text, int (*is_ok)(int))
{
	if (*text == '\0')
		return false;
	for (; *text; text++)
		if (!is_ok((unsigned char)*text))
			return false;
	return true;
}

static int is_word(int c)
{
	return isalnum(c) || c == '_';
}

void julia_warn_if_public(int fd, const char *manager)
{
	struct sockaddr_storage peer;
	socklen_t length = sizeof peer;
	if (getpeername(fd, (struct sockaddr *)&peer, &length) != 0 || address_is_private((struct sockaddr *)&peer))
		return;
	log_warn("--protocol julia: the manager %s is not on a private address, and this dialect sends the cookie "
		 "in clear text and protects no message (AWSClusterManagers.jl's design): anyone on the path can read "
		 "it and take over the workers; use the native protocol or a private network",
		 manager);
}

enum ba_status julia_handshake(const struct config *cfg, int fd, struct julia_grant *grant)
{
	static const char cookie_prefix[] = "julia_cookie:", timeout_prefix[] = "julia_worker_timeout:";
	char line[LINE_MAX_BYTES];
	int64_t deadline = util_now_ms() + EXCHANGE_TIMEOUT_MS;
	enum ba_status rc;
	grant->worker_timeout_s = -1;
	if (cfg->batch.job_id == NULL) {
		log_error("--protocol julia on an MNP node needs AWS_BATCH_JOB_ID (the manager checks it)");
		return BA_EX_CONFIG;
	}
	char *hello = NULL;
	if (asprintf(&hello, "job_id:%s\n", cfg->batch.job_id) < 0)
		return BA_EX_OSERR;
	rc = write_all(fd, hello, strlen(hello), deadline);
	free(hello);
	if (rc == BA_EX_UNAVAILABLE)
		log_error("cannot send the job_id line to the manager: the connection failed");
	if (rc != BA_OK)
		return rc;

	rc = read_line(fd, deadline, line, sizeof line, "julia_cookie");
	if (rc != BA_OK)
		goto out;
	/* The manager right-pads a cookie shorter than Distributed's 16-byte header with
	 * spaces; Julia's worker drops them with its regex, and so do we. */
	size_t length = strlen(line);
	while (length > 0 && line[length - 1] == ' ')
		line[--length] = '\0';
	if (strncmp(line, cookie_prefix, sizeof cookie_prefix - 1) != 0 ||
	    !all_match(line + sizeof cookie_prefix - 1, is_word)) {
		/* Never echo the line: it may hold a cookie, even a malformed one. */
		log_error("the manager's first line is not julia_cookie:<word characters> (%zu bytes received)", length);
		rc = BA_EX_PROTOCOL;
		goto out;
	}
	rc = cookie_alloc(&grant->cookie);
	if (rc != BA_OK)
		goto out;
	grant->cookie.length = length - (sizeof cookie_prefix - 1);
	memcpy(grant->cookie.bytes, line + sizeof cookie_prefix - 1, grant->cookie.length);

	/* Older AWSClusterManagers.jl releases send no timeout line. Newer ones flush both
	 * lines together, so when the second has not begun shortly after the first, it is
	 * not coming. */
	bool ready;
	rc = wait_fd(fd, POLLIN, util_now_ms() + TIMEOUT_LINE_WAIT_MS, &ready);
	if (rc != BA_OK)
		goto out;
	if (!ready) {
		log_info("the manager sent no julia_worker_timeout line (an older AWSClusterManagers.jl): "
			 "JULIA_WORKER_TIMEOUT is left unset");
		goto out;
	}
	rc = read_line(fd, deadline, line, sizeof line, "julia_worker_timeout");
	if (rc != BA_OK)
		goto out;
	if (strncmp(line, timeout_prefix, sizeof timeout_prefix - 1) != 0 ||
	    !all_match(line + sizeof timeout_prefix - 1, isdigit) ||
	    !util_parse_long(line + sizeof timeout_prefix - 1, 0, 1L << 30, &grant->worker_timeout_s)) {
		log_error("the manager's second line is not julia_worker_timeout:<seconds>: \"%.80s\"", line);
		rc = BA_EX_PROTOCOL;
		goto out;
	}
	log_info("manager sent the cookie and a worker timeout of %ld s", grant->worker_timeout_s);
out:
	util_wipe(line, sizeof line);
	if (rc != BA_OK)
		cookie_wipe(&grant->cookie);
	return rc;
}

/* The cookie goes to the payload through a pipe on its stdin: the first line, as
 * `julia --worker` reads it. The pipe holds it, so the write cannot block. */
static enum ba_status cookie_pipe(const struct cookie *cookie, int *read_end)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0) {
		log_error("pipe2: %m");
		return BA_EX_OSERR;
	}
	enum ba_status rc = BA_OK;
	if (write(fds[1], cookie->bytes, cookie->length) != (ssize_t)cookie->length || write(fds[1], "\n", 1) != 1) {
		log_error("writing the cookie to the payload's stdin: %m");
		rc = BA_EX_OSERR;
		close(fds[0]);
	} else {
		*read_end = fds[0];
	}
	close(fds[1]);
	return rc;
}

/* The payload owns the connection once it runs: the manager must see it close when
 * the payload dies, so the agent drops its copies. */
static void drop_handed_fds(void *ctx, pid_t pid)
{
	int *fds = ctx;
	(void)pid;
	for (int i = 0; i < 2; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

enum ba_status julia_launch(const struct config *cfg, int fd, struct julia_grant *grant, const char *manager,
		 const char *node_addr)
{
	char timeout_entry[64];
	const char *extra[2] = { NULL, NULL };
	struct payload payload = { 0 };
	int handed[2] = { -1, fd }; /* stdin pipe, socket */
	if (grant->worker_timeout_s >= 0) {
		snprintf(timeout_entry, sizeof timeout_entry, "JULIA_WORKER_TIMEOUT=%ld", grant->worker_timeout_s);
		extra[0] = timeout_entry;
	}
	struct launch_vars vars = { .manager = manager, .node_addr = node_addr, .handover_fd = -1, .extra_env = extra };
	enum ba_status rc = launch_prepare(&payload, cfg, &vars);
	if (rc == BA_OK)
		rc = cookie_pipe(&grant->cookie, &handed[0]);
	cookie_wipe(&grant->cookie);
	if (rc != BA_OK)
		goto out;
	/* Distributed writes to a blocking stdout. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	payload.stdin_fd = handed[0];
	payload.stdout_fd = fd;
	if (cfg->exec) {
		rc = launch_exec(&payload);
		goto out;
	}
	struct supervise_opts opts = supervise_opts_from_config(cfg);
	struct supervise_hooks hooks = { .ctx = handed, .started = drop_handed_fds };
	rc = supervise_run(&opts, &payload, &hooks);
out:
	drop_handed_fds(handed, 0);
	launch_release(&payload);
	return rc;
}
