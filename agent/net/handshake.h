/* Stage 5, native protocol, worker side: mutual proof of the cookie, then register.
 * See proto/PROTOCOL.md §3. Statuses: BA_EX_TEMPFAIL when the manager refused us for
 * load (error busy or timeout) or never said hello (closed, failed or silent), which
 * the caller answers by dialing again while --connect-timeout allows; BA_EX_NOPERM
 * when either side's proof fails or the manager rejects the registration;
 * BA_EX_PROTOCOL when the manager breaks the protocol; 128+N for a terminating
 * signal while we wait. Each wait lasts PROTO_HANDSHAKE_TIMEOUT_MS from the
 * manager's last frame (or the connection). */
#ifndef BATCH_AGENT_HANDSHAKE_H
#define BATCH_AGENT_HANDSHAKE_H

#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "config.h"
#include "cookie.h"
#include "proto.h"
#include "self.h"
#include "status.h"

struct handshake_result {
	int64_t heartbeat_ms; /* the manager's heartbeat interval */
	int version;          /* the protocol version agreed */
	bool roster;          /* version 3: the manager sends a roster before our payload starts */
};

enum ba_status handshake_worker(const struct config *cfg, struct proto_conn *conn, const struct cookie *cookie,
				const struct manager_address *manager, const struct node_self *self,
				struct handshake_result *result);

#endif
