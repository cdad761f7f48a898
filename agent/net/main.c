/* batch-agent-net: the worker and main roles, chain-loaded by batch-agent.
 *
 *   config -> role -> discover -> dial -> handshake -> launch (exec | supervise) -> exit
 *
 * The main role is one stage of its own: a rendezvous that waits for the children and
 * then launches the main payload with the node list. */
#include <stdio.h>
#include <unistd.h>

#include "address.h"
#include "config.h"
#include "cookie.h"
#include "dial.h"
#include "discover.h"
#include "handshake.h"
#include "julia.h"
#include "log.h"
#include "rendezvous.h"
#include "role.h"
#include "self.h"
#include "session.h"
#include "signals.h"
#include "status.h"

static int run_native_worker(const struct config *cfg, const struct manager_address *manager, int fd,
			     const struct cookie *cookie, const struct node_self *self)
{
	struct proto_conn conn;
	int64_t heartbeat_ms = cfg->heartbeat_ms;
	proto_frame_conn_init(&conn, fd);
	int rc = handshake_worker(cfg, &conn, cookie, manager, self, &heartbeat_ms);
	if (rc == BA_OK)
		rc = session_run(cfg, &conn, heartbeat_ms, manager, self->address);
	proto_frame_conn_free(&conn);
	return rc;
}

static int run_worker(const struct config *cfg)
{
	struct manager_address manager;
	struct node_self self;
	struct cookie cookie = { 0 };
	struct julia_grant grant = { .worker_timeout_s = -1 };
	int fd = -1;
	/* The Julia MNP manager hands out the cookie itself; everyone else needs ours. It is
	 * read (and scrubbed from the environment) first, so no helper program we run
	 * inherits it. */
	bool julia_mnp = cfg->protocol == PROTOCOL_JULIA && cfg->manager == NULL;
	int rc = BA_OK;
	if (julia_mnp)
		cookie_scrub_environment();
	else
		rc = cookie_load(cfg, &cookie);

	if (rc == BA_OK)
		rc = discover_manager(cfg, &manager);
	if (rc == BA_OK)
		rc = dial_manager(&manager, cfg->connect_timeout_ms, &fd);
	if (rc == BA_OK)
		rc = self_describe(cfg, fd, &self);
	if (rc != BA_OK)
		goto out;
	if (cfg->protocol == PROTOCOL_JULIA) {
		if (julia_mnp)
			rc = julia_handshake(cfg, fd, &grant);
		else
			grant.cookie = cookie, cookie = (struct cookie){ 0 };
		if (rc == BA_OK) {
			rc = julia_launch(cfg, fd, &grant, manager.display, self.address);
			fd = -1; /* julia_launch took it */
		}
	} else {
		rc = run_native_worker(cfg, &manager, fd, &cookie, &self);
	}
out:
	cookie_wipe(&cookie);
	cookie_wipe(&grant.cookie);
	if (fd >= 0)
		close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	struct config cfg;
	enum role role;

	int rc = config_load(&cfg, argc, argv);
	if (rc != BA_OK)
		return rc == CONFIG_EXIT_EARLY ? BA_OK : rc;
	rc = role_decide(&cfg, &role);
	if (rc != BA_OK)
		return rc;
	/* Before anything that can wait: a SIGTERM while we dial or rendezvous must end
	 * the agent promptly, even as PID 1 where the default action is nothing. */
	rc = signals_take_over();
	if (rc != BA_OK)
		return rc;
	if (role == ROLE_MAIN)
		return rendezvous_run(&cfg);
	return run_worker(&cfg);
}
