/* The worker role: cookie -> discover -> dial -> handshake -> session (or the Julia
 * dialect's exchange and launch), dialing again while --connect-timeout allows when
 * the manager refuses us for load. */
#ifndef BATCH_AGENT_WORKER_H
#define BATCH_AGENT_WORKER_H

#include "config.h"
#include "status.h"

enum ba_status worker_run(const struct config *cfg);

#endif
