/* The agent's one blocking wait outside the event loop: for a descriptor, a deadline,
 * or a terminating signal, whichever comes first. Dialing, the handshakes (native,
 * through the codec's wait hook, and Julia's) and the AWS queries all wait here, so a
 * SIGTERM before the payload starts ends the agent at once with 128+N wherever it
 * waits: nothing runs yet, so nothing is lost. Needs signals_take_over(). */
#ifndef BATCH_AGENT_WAIT_H
#define BATCH_AGENT_WAIT_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

/* Wait until fd (-1: none) has one of events (POLLIN, POLLOUT) or deadline_ms
 * (util_now_ms clock) passes: BA_OK with *ready telling which; 128+N as soon as a
 * terminating signal arrives (logged); BA_EX_OSERR when poll fails. Other signals are
 * consumed: nobody takes them yet. */
enum ba_status wait_fd(int fd, short events, int64_t deadline_ms, bool *ready);

/* What a wait does with the signals that arrive meanwhile. */
enum wait_signals {
	WAIT_SIGNALS_END,   /* a terminating one ends the wait with 128+N (wait_fd) */
	/* A wait that must run to its end (a request whose effect we must learn, such as
	 * a job submitted): the first terminating one is stored in *held (when it is 0),
	 * the wait goes on; other signals are consumed. */
	WAIT_SIGNALS_HOLD,
	/* Not read at all: they stay pending for an event loop that waits inside one of
	 * its callbacks (a SIGCHLD the supervisor needs, Batch's SIGTERM). */
	WAIT_SIGNALS_LEAVE,
};

/* wait_fd with a choice of what signals do; held is used by WAIT_SIGNALS_HOLD only. */
enum ba_status wait_fd_signals(int fd, short events, int64_t deadline_ms, bool *ready, enum wait_signals mode,
			       int *held);

/* Sleep up to ms, waking early for a terminating signal: BA_OK or 128+N. */
enum ba_status wait_sleep(int64_t ms);

#endif
