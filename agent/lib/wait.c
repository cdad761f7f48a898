/* The signal-aware wait. */
#include "wait.h"

#include <errno.h>
#include <poll.h>

#include "log.h"
#include "signals.h"
#include "util.h"

/* Consume pending signals: BA_OK, or 128+N (logged) for the first terminating one. */
static enum ba_status pending_signal(void)
{
	int sig = signals_next_terminating();
	char name[32];
	if (sig == 0)
		return BA_OK;
	log_info("received %s before the payload started: exiting", util_signal_name(sig, name, sizeof name));
	return BA_EX_SIGNAL_BASE + sig;
}

enum ba_status wait_fd_signals(int fd, short events, int64_t deadline_ms, bool *ready, enum wait_signals mode,
			       int *held)
{
	*ready = false;
	for (;;) {
		int64_t left = deadline_ms - util_now_ms();
		if (left <= 0)
			return BA_OK;
		/* The signals first, so that a busy socket cannot starve them; poll() skips a
		 * negative fd, which makes wait_sleep. */
		struct pollfd pfd[2] = { { .fd = mode == WAIT_SIGNALS_LEAVE ? -1 : signals_fd(), .events = POLLIN },
					 { .fd = fd, .events = events } };
		int n = poll(pfd, 2, left > 60000 ? 60000 : (int)left);
		if (n < 0 && errno != EINTR) {
			log_error("poll: %m");
			return BA_EX_OSERR;
		}
		if (n <= 0)
			continue;
		if (pfd[0].revents != 0 && mode == WAIT_SIGNALS_HOLD) {
			int sig = signals_next_terminating();
			if (sig != 0 && *held == 0)
				*held = sig;
		} else if (pfd[0].revents != 0) {
			enum ba_status rc = pending_signal();
			if (rc != BA_OK)
				return rc;
		}
		if (pfd[1].revents != 0) {
			*ready = true;
			return BA_OK;
		}
	}
}

enum ba_status wait_fd(int fd, short events, int64_t deadline_ms, bool *ready)
{
	return wait_fd_signals(fd, events, deadline_ms, ready, WAIT_SIGNALS_END, NULL);
}

enum ba_status wait_sleep(int64_t ms)
{
	bool ready;
	return wait_fd(-1, 0, util_now_ms() + ms, &ready);
}
