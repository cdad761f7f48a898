/* AWSClusterManagers.jl's dialect (--protocol julia), so that Julia users keep their
 * manager and gain our init, retries and diagnostics.
 *
 * MNP child (AWSBatchNodeManager): send "job_id:<AWS_BATCH_JOB_ID>\n", read
 * "julia_cookie:<cookie>\n" and "julia_worker_timeout:<seconds>\n". Container managers
 * (AWSBatchManager, DockerManager; --manager given): nothing is exchanged, the cookie
 * comes from BATCH_AGENT_COOKIE or --cookie-file. Either way the payload (typically
 * `julia --worker --bind-to {{NODE_ADDR}}`) then runs with stdout on the manager's
 * socket, where it writes "julia_worker:<port>#<ip>", the cookie on stdin (never in
 * argv or the environment) and JULIA_WORKER_TIMEOUT set. */
#ifndef BATCH_AGENT_JULIA_H
#define BATCH_AGENT_JULIA_H

#include "config.h"
#include "cookie.h"
#include "status.h"

struct julia_grant {
	struct cookie cookie;
	long worker_timeout_s; /* -1: the manager sent none (container mode) */
};

/* The dialect protects nothing on the wire: the cookie crosses it in clear (Julia's
 * design). Warn, once, when the connected manager's address is not private. */
void julia_warn_if_public(int fd, const char *manager);

/* The MNP exchange on a connected socket; BA_EX_PROTOCOL names a malformed line. */
enum ba_status julia_handshake(const struct config *cfg, int fd, struct julia_grant *grant);

/* Run the payload on the socket (exec or supervise, per cfg). Takes over fd. */
enum ba_status julia_launch(const struct config *cfg, int fd, struct julia_grant *grant, const char *manager,
		 const char *node_addr);

#endif
