/* Stage 4: reaching the manager. */
#include "dial.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nss.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "signals.h"
#include "status.h"
#include "util.h"
#include "wait.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000
#define ATTEMPT_TIMEOUT_MS 5000
#define FIRST_ATTEMPT_MIN_MS 1000
#define PROGRESS_EVERY_MS 30000

/* One non-blocking connect to one address, bounded by timeout_ms: BA_OK;
 * BA_EX_UNAVAILABLE when this address failed (why says how; the caller tries the
 * next); or 128+N when a terminating signal came first. */
static enum ba_status try_connect(const struct addrinfo *ai, int64_t timeout_ms, int *fd_out, char *why,
				  size_t why_size)
{
	bool ready = false;
	enum ba_status rc = BA_EX_UNAVAILABLE;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		snprintf(why, why_size, "socket: %s", strerror(errno));
		return BA_EX_UNAVAILABLE;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
		snprintf(why, why_size, "%s", strerror(errno));
		goto fail;
	}
	enum ba_status waited = wait_fd(fd, POLLOUT, util_now_ms() + timeout_ms, &ready);
	if (waited != BA_OK) {
		snprintf(why, why_size, "%s", waited == BA_EX_OSERR ? strerror(errno) : "interrupted");
		rc = waited == BA_EX_OSERR ? BA_EX_UNAVAILABLE : waited;
		goto fail;
	}
	if (!ready) {
		snprintf(why, why_size, "connect timed out");
		goto fail;
	}
	int error = 0;
	socklen_t length = sizeof error;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0 || error != 0) {
		snprintf(why, why_size, "%s", strerror(error != 0 ? error : errno));
		goto fail;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	*fd_out = fd;
	return BA_OK;
fail:
	close(fd);
	return rc;
}

/* Full jitter: a uniformly random pause up to the exponential bound, so that a
 * thousand workers started together do not knock in lockstep. */
int64_t dial_backoff_ms(unsigned attempt)
{
	unsigned shift = attempt < 16 ? attempt : 16;
	int64_t bound = (int64_t)BACKOFF_BASE_MS << shift;
	if (bound > BACKOFF_CAP_MS)
		bound = BACKOFF_CAP_MS;
	return (int64_t)arc4random_uniform((uint32_t)bound + 1);
}

enum ba_status dial_manager(const struct manager_address *manager, int64_t deadline, int64_t timeout_ms, int *fd_out)
{
	int64_t start = util_now_ms(), last_report = start;
	char why[512] = "no attempt made";
	unsigned attempt = 0;
	/* Names resolve through glibc's built-in "files" (/etc/hosts) and "dns"
	 * (/etc/resolv.conf) only, whatever the image's nsswitch.conf says: its other
	 * modules are shared libraries of the image's libc, which a static program must
	 * not load (README, "Name resolution"). */
	__nss_configure_lookup("hosts", "files dns");
	for (;;) {
		attempt++;
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
		struct addrinfo *list = NULL;
		/* Resolve on every attempt: the name may appear in DNS only later. */
		int gai = getaddrinfo(manager->host, manager->port, &hints, &list);
		if (gai != 0)
			snprintf(why, sizeof why, "cannot resolve %s: %s", manager->host, gai_strerror(gai));
		for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
			/* The first attempt is always made, so --connect-timeout 0 means "once". */
			int64_t left = deadline - util_now_ms();
			if (left <= 0 && attempt > 1)
				break;
			int64_t attempt_ms = left <= 0 ? FIRST_ATTEMPT_MIN_MS : left < ATTEMPT_TIMEOUT_MS ? left : ATTEMPT_TIMEOUT_MS;
			enum ba_status rc = try_connect(ai, attempt_ms, fd_out, why, sizeof why);
			if (rc == BA_OK)
				log_info("connected to the manager at %s (from %s) after %u attempt%s", manager->display,
					 manager->source, attempt, attempt == 1 ? "" : "s");
			if (rc != BA_EX_UNAVAILABLE) {
				freeaddrinfo(list);
				return rc;
			}
		}
		if (list)
			freeaddrinfo(list);

		int64_t now = util_now_ms();
		if (now >= deadline) {
			log_error("manager %s (from %s) unreachable for %.3g s, %u attempts; last error: %s",
				  manager->display, manager->source, (double)timeout_ms / 1000.0, attempt, why);
			return BA_EX_UNAVAILABLE;
		}
		/* One line when waiting starts, then one every 30 s: the manager often starts
		 * after its workers, and that is not worth a screenful. */
		if (attempt == 1)
			log_info("manager %s (from %s) not reachable yet (%s): retrying for up to %.3g s",
				 manager->display, manager->source, why, (double)timeout_ms / 1000.0);
		else if (now - last_report >= PROGRESS_EVERY_MS) {
			log_info("still trying to reach the manager at %s: %u attempts, last error: %s",
				 manager->display, attempt, why);
			last_report = now;
		} else
			log_debug("attempt %u to reach %s failed: %s", attempt, manager->display, why);

		int64_t sleep_ms = dial_backoff_ms(attempt);
		if (sleep_ms > deadline - now)
			sleep_ms = deadline - now;
		enum ba_status rc = wait_sleep(sleep_ms);
		if (rc != BA_OK)
			return rc;
	}
}
