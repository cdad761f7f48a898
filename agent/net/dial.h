/* Stage 4: connect to the manager, retrying with exponential backoff and full jitter
 * until --connect-timeout runs out (BA_EX_UNAVAILABLE). A terminating signal while
 * waiting ends the attempt at once with 128+N: nothing runs yet, so nothing is lost. */
#ifndef BATCH_AGENT_DIAL_H
#define BATCH_AGENT_DIAL_H

#include <stdbool.h>
#include <stdint.h>

#include "address.h"

/* On BA_OK *fd is a connected, non-blocking, close-on-exec TCP socket. */
/* deadline: absolute (util_now_ms), which a redial keeps; timeout_ms: the configured
 * --connect-timeout, for the messages. */
int dial_manager(const struct manager_address *manager, int64_t deadline, int64_t timeout_ms, int *fd);

/* Sleep up to ms, waking early for a terminating signal: BA_OK or 128+N. */
int dial_sleep(int64_t ms);

/* Wait until fd has one of events or deadline_ms (util_now_ms clock) passes: BA_OK
 * with *ready telling which; 128+N as soon as a terminating signal arrives (logged);
 * BA_EX_OSERR when poll fails. Other signals are consumed: nobody takes them yet. */
int dial_poll(int fd, short events, int64_t deadline_ms, bool *ready);

/* Consume pending signals: BA_OK, or 128+N (logged) for the first terminating one.
 * For waits that watch signals_fd() themselves (the native handshake). */
int dial_pending_signal(void);

#endif
