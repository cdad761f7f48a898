/* Stage 6, native protocol, worker side: run the payload while connected.
 *
 * With --exec the agent becomes the payload and hands it the connection (its number in
 * BATCH_AGENT_FD, the negotiated heartbeat interval in BATCH_AGENT_HEARTBEAT_MS): the
 * payload then speaks the steady state itself. Otherwise it supervises the payload and keeps the connection:
 * heartbeats both ways, payload_started and payload_exited reports, shutdown from the
 * manager (terminate gracefully, exit 0 if the payload ended within the grace period),
 * and manager loss (--on-manager-loss exit: terminate, exit 69; continue: carry on). */
#ifndef BATCH_AGENT_SESSION_H
#define BATCH_AGENT_SESSION_H

#include <stdint.h>

#include "address.h"
#include "config.h"
#include "handshake.h"
#include "self.h"
#include "proto.h"
#include "status.h"

/* Takes over what conn has buffered; the caller closes its descriptor after. */
enum ba_status session_run(const struct config *cfg, struct proto_conn *conn, const struct handshake_result *joined,
			   const struct manager_address *manager, const struct node_self *self);

#endif
