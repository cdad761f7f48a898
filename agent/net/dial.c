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

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000
#define ATTEMPT_TIMEOUT_MS 5000
#define FIRST_ATTEMPT_MIN_MS 1000
#define PROGRESS_EVERY_MS 30000

int dial_pending_signal(void)
{
	int sig = signals_next_terminating();
	char name[32];
	if (sig == 0)
		return BA_OK;
	log_info("received %s before the payload started: exiting", util_signal_name(sig, name, sizeof name));
	return BA_EX_SIGNAL_BASE + sig;
}

int dial_poll(int fd, short events, int64_t deadline_ms, bool *ready)
{
	*ready = false;
	for (;;) {
		int64_t left = deadline_ms - util_now_ms();
		if (left <= 0)
			return BA_OK;
		/* poll() skips a negative fd: dial_sleep waits on the signals alone. */
		struct pollfd pfd[2] = { { .fd = signals_fd(), .events = POLLIN }, { .fd = fd, .events = events } };
		int n = poll(pfd, 2, left > 60000 ? 60000 : (int)left);
		if (n < 0 && errno != EINTR)
			return BA_EX_OSERR;
		if (n <= 0)
			continue;
		if (pfd[0].revents != 0) {
			int rc = dial_pending_signal();
			if (rc != BA_OK)
				return rc;
		}
		if (pfd[1].revents != 0) {
			*ready = true;
			return BA_OK;
		}
	}
}

int dial_sleep(int64_t ms)
{
	bool ready;
	return dial_poll(-1, 0, util_now_ms() + ms, &ready);
}

#define CONNECT_FAILED (-1) /* try_connect: this address failed, why says how */

/* One non-blocking connect to one address, bounded by timeout_ms: BA_OK,
 * CONNECT_FAILED, or 128+N when a terminating signal came first. */
static int try_connect(const struct addrinfo *ai, int64_t timeout_ms, int *fd_out, char *why, size_t why_size)
{
	bool ready = false;
	int rc = CONNECT_FAILED;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		snprintf(why, why_size, "socket: %s", strerror(errno));
		return CONNECT_FAILED;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
		snprintf(why, why_size, "%s", strerror(errno));
		goto fail;
	}
	int polled = dial_poll(fd, POLLOUT, util_now_ms() + timeout_ms, &ready);
	if (polled != BA_OK) {
		snprintf(why, why_size, "%s", polled == BA_EX_OSERR ? strerror(errno) : "interrupted");
		rc = polled == BA_EX_OSERR ? CONNECT_FAILED : polled;
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

int dial_manager(const struct manager_address *manager, int64_t deadline, int64_t timeout_ms, int *fd_out)
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
			int rc = try_connect(ai, attempt_ms, fd_out, why, sizeof why);
			if (rc == BA_OK)
				log_info("connected to the manager at %s (from %s) after %u attempt%s", manager->display,
					 manager->source, attempt, attempt == 1 ? "" : "s");
			if (rc != CONNECT_FAILED) {
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

		/* Full jitter: a uniformly random sleep up to the exponential bound, so that
		 * a thousand workers started together do not knock in lockstep. */
		unsigned shift = attempt < 16 ? attempt : 16;
		int64_t bound = (int64_t)BACKOFF_BASE_MS << shift;
		if (bound > BACKOFF_CAP_MS)
			bound = BACKOFF_CAP_MS;
		int64_t sleep_ms = (int64_t)arc4random_uniform((uint32_t)bound + 1);
		if (sleep_ms > deadline - now)
			sleep_ms = deadline - now;
		int rc = dial_sleep(sleep_ms);
		if (rc != BA_OK)
			return rc;
	}
}
