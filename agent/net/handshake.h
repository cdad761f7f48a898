/* Stage 5, native protocol, worker side: mutual proof of the cookie, then register.
 * See proto/PROTOCOL.md. Statuses: BA_EX_NOPERM when either side's proof fails or the
 * manager rejects the registration, BA_EX_PROTOCOL when the manager breaks the
 * protocol, BA_EX_UNAVAILABLE when the connection fails. */
#ifndef BATCH_AGENT_HANDSHAKE_H
#define BATCH_AGENT_HANDSHAKE_H

#include <stdint.h>

#include "address.h"
#include "config.h"
#include "cookie.h"
#include "proto.h"
#include "self.h"

/* handshake_worker's answer when the connection ended before the manager said hello:
 * a manager that is busy (at its cap of handshakes in progress) or restarting. The
 * caller dials again while --connect-timeout allows; it is not an exit status. */
#define HANDSHAKE_RETRY (-2)

int handshake_worker(const struct config *cfg, struct proto_conn *conn, const struct cookie *cookie,
		     const struct manager_address *manager, const struct node_self *self, int64_t *heartbeat_ms);

/* Translate a codec error on a live connection into an exit status, logging it. */
int handshake_conn_failure(int proto_err, const char *peer, const char *during);

#endif
