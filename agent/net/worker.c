/* The worker role: find the manager, join it (native or Julia), run the payload. */
#include "worker.h"

#include <unistd.h>

#include "address.h"
#include "cookie.h"
#include "dial.h"
#include "discover.h"
#include "handshake.h"
#include "julia.h"
#include "log.h"
#include "self.h"
#include "session.h"
#include "util.h"
#include "wait.h"

/* Dial and handshake, again while --connect-timeout allows when the manager refused
 * us for load (busy, timeout) or closed before its hello (restarting); then run the
 * payload beside the connection. */
static enum ba_status run_native_worker(const struct config *cfg, const struct manager_address *manager,
					struct cookie *cookie)
{
	int64_t deadline = util_now_ms() + cfg->connect_timeout_ms;
	struct handshake_result joined = { .heartbeat_ms = cfg->heartbeat_ms };
	struct proto_conn conn;
	struct node_self self;
	int fd = -1;
	enum ba_status rc = self_describe_node(cfg, &self);
	for (unsigned redials = 1; rc == BA_OK; redials++) {
		rc = dial_manager(manager, deadline, cfg->connect_timeout_ms, &fd);
		if (rc != BA_OK)
			return rc;
		proto_frame_conn_init(&conn, fd);
		rc = self_fill_address(cfg, fd, &self);
		if (rc == BA_OK)
			rc = handshake_worker(cfg, &conn, cookie, manager, &self, &joined);
		if (rc != BA_EX_TEMPFAIL)
			break;
		proto_frame_conn_free(&conn);
		close(fd);
		fd = -1;
		int64_t pause_ms = dial_backoff_ms(redials);
		if (util_now_ms() + pause_ms >= deadline) {
			log_error("manager %s closed or stayed silent before its hello, stopped answering during the "
				  "handshake, or refused us for load, "
				  "for %.3g s (--connect-timeout): overloaded, or not a batch-agent manager?",
				  manager->display, (double)cfg->connect_timeout_ms / 1000.0);
			return BA_EX_UNAVAILABLE;
		}
		rc = wait_sleep(pause_ms);
	}
	if (fd < 0)
		return rc;
	/* Authentication is over: the cookie has no further use, and the payload that
	 * starts next must not find it in our memory. */
	cookie_wipe(cookie);
	if (rc == BA_OK)
		rc = session_run(cfg, &conn, &joined, manager, &self);
	proto_frame_conn_free(&conn);
	close(fd);
	return rc;
}

/* AWSClusterManagers.jl: an MNP child gets the cookie from the manager; with a
 * container manager (--manager) it brings its own. */
static enum ba_status run_julia_worker(const struct config *cfg, const struct manager_address *manager,
			    struct cookie *cookie)
{
	struct julia_grant grant = { .worker_timeout_s = -1 };
	struct node_self self;
	int fd = -1;
	enum ba_status rc = self_describe_node(cfg, &self);
	if (rc == BA_OK)
		rc = dial_manager(manager, util_now_ms() + cfg->connect_timeout_ms, cfg->connect_timeout_ms, &fd);
	if (rc == BA_OK) {
		julia_warn_if_public(fd, manager->display);
		rc = self_fill_address(cfg, fd, &self);
	}
	if (rc == BA_OK && cookie->bytes == NULL)
		rc = julia_handshake(cfg, fd, &grant);
	else if (rc == BA_OK)
		grant.cookie = *cookie, *cookie = (struct cookie){ 0 };
	if (rc == BA_OK) {
		rc = julia_launch(cfg, fd, &grant, manager->display, self.address);
		fd = -1; /* julia_launch took it */
	}
	cookie_wipe(&grant.cookie);
	if (fd >= 0)
		close(fd);
	return rc;
}

enum ba_status worker_run(const struct config *cfg)
{
	struct manager_address manager;
	struct cookie cookie = { 0 };
	/* The Julia MNP manager hands out the cookie itself; everyone else needs ours. It is
	 * read (and scrubbed from the environment) first, so that no helper program we run
	 * inherits it. */
	bool julia_mnp = cfg->protocol == PROTOCOL_JULIA && cfg->manager == NULL;
	enum ba_status rc = BA_OK;
	if (julia_mnp)
		cookie_scrub_environment();
	else
		rc = cookie_load(cfg, &cookie);
	if (rc == BA_OK)
		rc = discover_manager(cfg, &manager);
	if (rc == BA_OK)
		rc = cfg->protocol == PROTOCOL_JULIA ? run_julia_worker(cfg, &manager, &cookie)
						     : run_native_worker(cfg, &manager, &cookie);
	cookie_wipe(&cookie);
	return rc;
}
