/* Stage 4: connect to the manager, retrying with exponential backoff and full jitter
 * until --connect-timeout runs out (BA_EX_UNAVAILABLE). A terminating signal while
 * waiting ends the attempt at once with 128+N: nothing runs yet, so nothing is lost. */
#ifndef BATCH_AGENT_DIAL_H
#define BATCH_AGENT_DIAL_H

#include <stdint.h>

#include "address.h"

/* On BA_OK *fd is a connected, non-blocking, close-on-exec TCP socket. */
int dial_manager(const struct manager_address *manager, int64_t timeout_ms, int *fd);

/* Sleep up to ms, waking early for a terminating signal: BA_OK or 128+N. */
int dial_sleep(int64_t ms);

#endif
