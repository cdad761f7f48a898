/* Stage 4: connect to the manager, retrying with exponential backoff and full jitter
 * until --connect-timeout runs out (BA_EX_UNAVAILABLE). A terminating signal while
 * waiting ends the attempt at once with 128+N: nothing runs yet, so nothing is lost. */
#ifndef BATCH_AGENT_DIAL_H
#define BATCH_AGENT_DIAL_H

#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "status.h"

/* On BA_OK *fd is a connected, non-blocking, close-on-exec TCP socket. */
/* deadline: absolute (util_now_ms), which a redial keeps; timeout_ms: the configured
 * --connect-timeout, for the messages. */
enum ba_status dial_manager(const struct manager_address *manager, int64_t deadline, int64_t timeout_ms, int *fd);

/* The pause before attempt + 1: uniform in [0, min(5 s, 100 ms * 2^attempt)]. */
int64_t dial_backoff_ms(unsigned attempt);

#endif
