/* The MNP rendezvous: the job's side of the main node. Read in the order of a job's
 * life:
 *
 *   children register        listener.c drives their connections, admit.c checks
 *                            their handshakes; --wait-timeout bounds the wait
 *   every node is in         the door closes; each child gets the roster, the nodes
 *                            in index order (version 3, PROTOCOL.md §4.1)
 *   every child is ready     its payload started, or accepts on --ready-port; a
 *                            version 2 child: once registered. --wait-timeout
 *                            again bounds the wait
 *   the main payload starts  with the same peer view (peerview.h)
 *   the end                  manager.c: shutdown to every child, their reports. */
#include "rendezvous.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "admit.h"
#include "confine.h"
#include "launch.h"
#include "listener.h"
#include "log.h"
#include "manager.h"
#include "peerview.h"
#include "proto.h"
#include "self.h"
#include "util.h"

struct rendezvous {
	struct manager m;       /* first: the loop, the listener, the payload, the end */
	const struct config *cfg;
	struct peer **by_index; /* registered children by node index */
	long registered;
	long awaiting;          /* registered children, connected, with no exit report yet */
	bool roster_sent;       /* the door closed and the roster went out: waiting for ready */
	long ready, expected_ready;
	struct peerview_node *view_nodes; /* the roster: main and children, index order */
	size_t view_count, main_rank;
	struct peer_view view;
	bool *runs_agent;       /* by node index: in --nodes (default: every node) */
	long agent_nodes;       /* how many, main included */
	long children;          /* agent_nodes - 1 */
	char job_prefix[256];   /* "<uuid>#" of this job */
	char main_addr[64];
	double main_cpus;       /* for the hostfile's slots; 0 when unknown */
};

static void start_main_payload(struct rendezvous *rv);
static void send_roster(struct rendezvous *rv);
static void child_ready(struct rendezvous *rv, struct peer *p, const char *how);

/* ---- registration ---- */

/* What admit.c cannot know: whether the job still takes children, and whether this
 * index has one already. */
static bool admit_child(void *ctx, struct peer *p, const struct proto_register *reg, struct admit_refusal *why)
{
	struct rendezvous *rv = ctx;
	long index = (long)reg->node_index.value; /* admit_register checked it */
	if (rv->m.phase == MANAGER_ENDING)
		return admit_reject(why, PROTO_REJECT_SHUTTING_DOWN, "the main node is shutting down");
	if (!rv->runs_agent[index])
		return admit_reject(why, PROTO_REJECT_NODE_OUT_OF_RANGE,
				    "node %ld is not one of the nodes that run the agent (--nodes %s)", index,
				    rv->cfg->nodes_text);
	if (rv->m.phase != MANAGER_WAITING || rv->roster_sent)
		return admit_reject(why, PROTO_REJECT_RENDEZVOUS_CLOSED,
				    "the job has started without this node");
	/* A node that redialed (refused for load, or it timed out on us) may be here before
	 * the close of its old connection is read: read it now. */
	if (rv->by_index[index] != NULL)
		listener_read_now(rv->by_index[index]);
	if (rv->by_index[index] != NULL)
		return admit_reject(why, PROTO_REJECT_DUPLICATE_NODE, "node index %ld is already registered from %s", index,
				    rv->by_index[index]->remote);
	(void)p;
	return true;
}

static void on_registered(void *ctx, struct peer *p, const struct proto_register *reg)
{
	(void)reg;
	struct rendezvous *rv = ctx;
	rv->by_index[p->node_index] = p;
	rv->registered++;
	rv->awaiting++;
	/* Version 2 has no ready: its children start at registration, as they always did. */
	if (!p->roster)
		child_ready(rv, p, "protocol version 2");
	log_info("node %ld registered from %s (advertises %s): %ld of %ld children", p->node_index, p->remote,
		 p->address, rv->registered, rv->children);
	if (rv->registered == rv->children)
		send_roster(rv);
}

/* A child that reported or left is no longer awaited: counted, so that a thousand
 * reports cost a thousand steps, not a walk of the list each. */
static void stop_awaiting(struct rendezvous *rv, struct peer *p)
{
	if (!p->exit_reported)
		rv->awaiting--;
	p->exit_reported = true;
}

/* --on-node-loss fail: a child lost, or its payload failed, while the main payload
 * runs: the job cannot be what it was asked to be, so end it as a failure (69), which
 * a retry strategy can retry, rather than let the main payload wait on a dead node. */
static void node_failed(struct rendezvous *rv, struct peer *p, const char *what)
{
	long index = p->node_index;
	/* Before the main payload: the job fails at once, or goes on with one node less. */
	if (rv->m.phase == MANAGER_WAITING && rv->roster_sent) {
		if (rv->cfg->on_node_loss == NODE_LOSS_CONTINUE) {
			log_warn("node %ld %s before the main payload started: the job goes on without it "
				 "(--on-node-loss continue)", index, what);
			if (!p->ready)
				rv->expected_ready--;
			p->ready = true; /* counted out, once */
			if (rv->ready == rv->expected_ready)
				start_main_payload(rv);
			return;
		}
		log_error("node %ld %s before the main payload started (--on-node-loss fail): the job fails with 69",
			  index, what);
		manager_fail(&rv->m, BA_EX_UNAVAILABLE, "a node was lost before the main payload started");
		return;
	}
	if (rv->m.phase != MANAGER_RUNNING)
		return;
	if (rv->cfg->on_node_loss == NODE_LOSS_CONTINUE) {
		log_warn("node %ld %s: the main payload goes on (--on-node-loss continue)", index, what);
		return;
	}
	char reason[160];
	snprintf(reason, sizeof reason, "node %ld %s (--on-node-loss fail)", index, what);
	log_error("%s: stopping the main payload; the job fails with 69", reason);
	manager_stop_payload(&rv->m, BA_EX_UNAVAILABLE, reason);
}

static void on_child_exited(struct rendezvous *rv, struct peer *p, const struct proto_msg *msg)
{
	stop_awaiting(rv, p);
	bool signaled = msg->u.payload_exited.signaled;
	int value = signaled ? msg->u.payload_exited.signal : msg->u.payload_exited.exit_code;
	if (rv->m.phase == MANAGER_ENDING)
		log_info("node %ld's payload ended (%s %d) after the shutdown request", p->node_index,
			 signaled ? "signal" : "status", value);
	else if (signaled)
		log_warn("node %ld's payload was killed by signal %d", p->node_index, value);
	else if (value != 0)
		log_warn("node %ld's payload failed with status %d", p->node_index, value);
	else
		log_info("node %ld's payload exited with status 0", p->node_index);
	if (rv->m.phase != MANAGER_ENDING && (signaled || value != 0))
		node_failed(rv, p, "failed");
	else if (rv->m.phase == MANAGER_WAITING && !p->ready)
		child_ready(rv, p, "its payload has already exited 0");
	manager_maybe_stop(&rv->m);
}

static void on_child_message(void *ctx, struct peer *p, const struct proto_msg *msg)
{
	struct rendezvous *rv = ctx;
	switch (msg->type) {
	case PROTO_MSG_PAYLOAD_STARTED:
		p->started = true;
		return;
	case PROTO_MSG_READY:
		if (!p->roster || p->ready) {
			listener_refuse_unexpected(p, msg);
			return;
		}
		child_ready(rv, p, "ready");
		return;
	case PROTO_MSG_PAYLOAD_EXITED:
		on_child_exited(rv, p, msg);
		return;
	case PROTO_MSG_DRAINING:
		log_warn("node %ld is draining: %s%s%s", p->node_index, msg->u.draining.reason,
			 msg->u.draining.deadline ? ", deadline " : "", msg->u.draining.deadline ? msg->u.draining.deadline : "");
		return;
	case PROTO_MSG_ERROR:
		log_warn("node %ld reports an error: %s %s", p->node_index, msg->u.error.code, msg->u.error.message);
		listener_drop(p, "it reported an error");
		return;
	default:
		listener_refuse_unexpected(p, msg);
		return;
	}
}

static bool on_child_lost(void *ctx, struct peer *p, const char *why)
{
	struct rendezvous *rv = ctx;
	if (rv->m.phase == MANAGER_WAITING && rv->roster_sent) {
		/* In the roster already: the job is what it is now. A node that reported its
		 * exit was dealt with then; one lost otherwise, ready or not, is missing. */
		bool reported = p->exit_reported;
		log_warn("node %ld (%s) lost before the main payload started: %s", p->node_index, p->address, why);
		stop_awaiting(rv, p);
		if (!reported)
			node_failed(rv, p, "was lost");
		return false;
	}
	if (rv->m.phase == MANAGER_WAITING) {
		/* Free its slot: a restarted node may register again. */
		log_warn("node %ld (%s) left before the main payload started: %s", p->node_index, p->address, why);
		rv->by_index[p->node_index] = NULL;
		rv->registered--;
		if (p->ready)
			rv->ready--;
		p->ready = false;
		stop_awaiting(rv, p);
		return true;
	}
	/* A worker may close as soon as its exit report is out; the close then often reads
	 * as a reset (heartbeats of ours it never read): nothing is lost. */
	if (p->exit_reported && rv->m.phase == MANAGER_ENDING)
		log_debug("node %ld (%s) disconnected after its exit report: %s", p->node_index, p->address, why);
	else if (!p->started && rv->m.phase == MANAGER_ENDING)
		/* Told to shut down before its payload ran: it owes no report (PROTOCOL.md §4). */
		log_info("node %ld (%s) left with no payload started: %s", p->node_index, p->address, why);
	else if (p->exit_reported)
		log_info("node %ld (%s) disconnected after its exit report: %s", p->node_index, p->address, why);
	else
		log_warn("node %ld (%s) lost: %s", p->node_index, p->address, why);
	if (!p->exit_reported)
		node_failed(rv, p, "was lost");
	stop_awaiting(rv, p);
	manager_maybe_stop(&rv->m);
	return false;
}

/* ---- the main payload ---- */

/* The missing indexes as "3, 5, 9", cut with "..." to fit; returns how many. */
static long list_missing(const struct rendezvous *rv, char *out, size_t size)
{
	size_t used = 0;
	long missing = 0;
	out[0] = '\0';
	for (long i = 0; i < rv->cfg->batch.num_nodes; i++) {
		if (i == rv->cfg->batch.main_node_index || rv->by_index[i] != NULL || !rv->runs_agent[i])
			continue;
		missing++;
		if (used + 16 < size)
			used += (size_t)snprintf(out + used, size - used, "%s%ld", used ? ", " : "", i);
		else if (used + 4 < size && out[used - 1] != '.')
			used += (size_t)snprintf(out + used, size - used, "...");
	}
	return missing;
}

static enum ba_status main_address(struct rendezvous *rv)
{
	if (rv->cfg->advertise_addr != NULL)
		return address_advertised(-1, rv->cfg->advertise_addr, rv->main_addr, sizeof rv->main_addr);
	/* Where the children reached us is where they can reach the main payload. */
	for (long i = 0; i < rv->cfg->batch.num_nodes; i++) {
		struct peer *p = rv->by_index[i];
		struct sockaddr_in local;
		socklen_t length = sizeof local;
		if (p && p->conn.open && getsockname(p->conn.pc.fd, (struct sockaddr *)&local, &length) == 0 &&
		    inet_ntop(AF_INET, &local.sin_addr, rv->main_addr, sizeof rv->main_addr) != NULL)
			return BA_OK;
	}
	return address_first_usable(rv->main_addr, sizeof rv->main_addr);
}

/* The roster: main and registered children, index order. The addresses point into
 * the peers and rv, which outlive it. */
static enum ba_status make_roster(struct rendezvous *rv)
{
	long n = rv->cfg->batch.num_nodes;
	rv->view_nodes = calloc((size_t)rv->registered + 1, sizeof *rv->view_nodes);
	if (rv->view_nodes == NULL)
		return BA_EX_OSERR;
	for (long i = 0; i < n; i++) {
		struct peerview_node *node = &rv->view_nodes[rv->view_count];
		if (i == rv->cfg->batch.main_node_index) {
			rv->main_rank = rv->view_count++;
			*node = (struct peerview_node){ .index = i, .address = rv->main_addr, .cpus = rv->main_cpus };
		} else if (rv->by_index[i] != NULL) {
			rv->view_count++;
			*node = (struct peerview_node){ .index = i, .address = rv->by_index[i]->address,
							 .cpus = rv->by_index[i]->cpus };
		}
	}
	return BA_OK;
}

/* One child's roster, in chunks of PROTO_ROSTER_CHUNK (a 1,000-node roster is about
 * 50 KB: eight frames). */
static void send_roster_to(struct rendezvous *rv, struct peer *p)
{
	struct proto_roster_node chunk[PROTO_ROSTER_CHUNK];
	for (size_t offset = 0; offset < rv->view_count && p->conn.attached; offset += PROTO_ROSTER_CHUNK) {
		size_t count = rv->view_count - offset < PROTO_ROSTER_CHUNK ? rv->view_count - offset : PROTO_ROSTER_CHUNK;
		for (size_t i = 0; i < count; i++)
			chunk[i] = (struct proto_roster_node){ .node_index = rv->view_nodes[offset + i].index,
								.address = rv->view_nodes[offset + i].address,
								.cpus = rv->view_nodes[offset + i].cpus };
		cJSON *msg = NULL;
		enum proto_err err = proto_msg_roster((int64_t)rv->view_count, (int64_t)offset, chunk, count, &msg);
		conn_send(&p->conn, msg, err);
	}
}

static void on_ready_timer(struct loop *loop, void *ctx);

/* Every expected node registered (or --wait-timeout with --min-nodes): the door
 * closes, and every child learns who is in the job. */
static void send_roster(struct rendezvous *rv)
{
	loop_timer_cancel(rv->m.loop, &rv->m.wait_timer);
	/* No node can join once the roster is out: nobody needs the cookie any more. */
	manager_close_door(&rv->m, rv->registered == rv->children ? "every node registered" : "--wait-timeout");
	rv->roster_sent = true;
	enum ba_status rc = main_address(rv);
	if (rc == BA_OK)
		rc = make_roster(rv);
	if (rc != BA_OK) {
		manager_fail(&rv->m, rc, "the roster could not be made");
		return;
	}
	rv->expected_ready = rv->registered;
	long v2 = 0;
	for (long i = 0; i < rv->cfg->batch.num_nodes; i++) {
		struct peer *p = rv->by_index[i];
		if (p == NULL)
			continue;
		if (p->roster)
			send_roster_to(rv, p);
		else
			v2++;
	}
	if (v2 > 0)
		log_info("%ld child%s speak%s protocol version 2: no roster, ready once registered", v2,
			 v2 == 1 ? "" : "ren", v2 == 1 ? "s" : "");
	if (rv->ready == rv->expected_ready) {
		start_main_payload(rv);
		return;
	}
	log_info("roster sent to %ld children: waiting for them to get ready (up to %.3g s)", rv->registered - v2,
		 (double)rv->cfg->wait_timeout_ms / 1000.0);
	loop_timer_arm(rv->m.loop, &rv->m.wait_timer, rv->cfg->wait_timeout_ms, on_ready_timer, rv);
}

static void child_ready(struct rendezvous *rv, struct peer *p, const char *how)
{
	if (p->ready)
		return;
	p->ready = true;
	rv->ready++;
	if (!rv->roster_sent || rv->m.phase != MANAGER_WAITING)
		return;
	log_info("node %ld is ready (%s): %ld of %ld", p->node_index, how, rv->ready, rv->expected_ready);
	if (rv->ready == rv->expected_ready)
		start_main_payload(rv);
}

/* The children that are not ready as "3, 5, 9", cut with "..." to fit. */
static void list_unready(const struct rendezvous *rv, char *out, size_t size)
{
	size_t used = 0;
	out[0] = '\0';
	for (long i = 0; i < rv->cfg->batch.num_nodes; i++) {
		const struct peer *p = rv->by_index[i];
		if (p == NULL || p->ready)
			continue;
		if (used + 16 < size)
			used += (size_t)snprintf(out + used, size - used, "%s%ld", used ? ", " : "", i);
		else if (used + 4 < size && out[used - 1] != '.')
			used += (size_t)snprintf(out + used, size - used, "...");
	}
}

static void on_ready_timer(struct loop *loop, void *ctx)
{
	struct rendezvous *rv = ctx;
	char unready[512];
	(void)loop;
	list_unready(rv, unready, sizeof unready);
	log_error("node%s %s did not get ready within %.3g s of the roster (%s): %ld of %ld ready",
		  strchr(unready, ',') ? "s" : "", unready, (double)rv->cfg->wait_timeout_ms / 1000.0,
		  "payload started, or accepting on its --ready-port", rv->ready, rv->expected_ready);
	manager_fail(&rv->m, BA_EX_UNAVAILABLE, "the nodes did not get ready");
}

static void start_main_payload(struct rendezvous *rv)
{
	struct payload payload = { 0 };
	loop_timer_cancel(rv->m.loop, &rv->m.wait_timer);
	struct launch_vars vars = { .node_addr = rv->main_addr, .handover_fd = -1 };
	enum ba_status rc = peerview_make(&rv->view, rv->cfg, rv->view_nodes, rv->view_count, rv->main_rank);
	if (rc == BA_OK) {
		peerview_vars(&rv->view, &vars);
		rc = launch_prepare(&payload, rv->cfg, &vars);
	}
	if (rc == BA_OK) {
		log_info("all nodes present and ready: starting the main payload with nodes %s", rv->view.nodes);
		rc = manager_spawn(&rv->m, &payload);
	}
	/* The main payload is forked and the listener is up: the steady state begins. */
	if (rc == BA_OK)
		confine_steady_state();
	if (rc != BA_OK)
		manager_fail(&rv->m, rc, "the main payload could not start");
	launch_release(&payload);
}

static void on_wait_timer(struct loop *loop, void *ctx)
{
	struct rendezvous *rv = ctx;
	char missing[512];
	(void)loop;
	long present = rv->registered + 1;
	long needed = rv->cfg->min_nodes > 0 ? rv->cfg->min_nodes : rv->agent_nodes;
	list_missing(rv, missing, sizeof missing);
	if (present >= needed) {
		log_warn("starting with %ld of %ld nodes after %.3g s (--min-nodes %ld); missing node%s %s", present,
			 rv->agent_nodes, (double)rv->cfg->wait_timeout_ms / 1000.0, needed,
			 strchr(missing, ',') ? "s" : "", missing);
		send_roster(rv);
		return;
	}
	log_error("node%s %s did not register within %.3g s: %ld of %ld nodes present, %ld needed (--min-nodes)",
		  strchr(missing, ',') ? "s" : "", missing, (double)rv->cfg->wait_timeout_ms / 1000.0, present,
		  rv->agent_nodes, needed);
	manager_fail(&rv->m, BA_EX_UNAVAILABLE, "the rendezvous timed out");
}

/* ---- the end (manager.c): who still owes an exit report ---- */

static long owing(void *ctx)
{
	struct rendezvous *rv = ctx;
	return rv->awaiting;
}

static void report_silent(void *ctx)
{
	struct rendezvous *rv = ctx;
	for (struct peer *p = listener_peers(rv->m.ls); p; p = p->next)
		if (p->state == PEER_REGISTERED && p->conn.attached && !p->exit_reported)
			log_warn("node %ld (%s) sent no exit report within the grace period", p->node_index, p->address);
}

/* ---- set-up ---- */

/* What a registration must match: the job id's "<uuid>#", its size and attempt. */
static struct admit_job job_of(struct rendezvous *rv)
{
	const struct batch_env *batch = &rv->cfg->batch;
	struct admit_job job = { .job_id = batch->job_id, .num_nodes = batch->num_nodes,
				 .main_node_index = batch->main_node_index, .attempt = batch->attempt };
	if (batch->job_id == NULL) {
		log_warn("AWS_BATCH_JOB_ID is not set: registrations are not checked against the job id");
		return job;
	}
	const char *hash = strchr(batch->job_id, '#');
	size_t length = hash ? (size_t)(hash - batch->job_id) : strlen(batch->job_id);
	snprintf(rv->job_prefix, sizeof rv->job_prefix, "%.*s#", (int)length, batch->job_id);
	job.job_prefix = rv->job_prefix;
	job.job_prefix_length = strlen(rv->job_prefix);
	return job;
}

/* Which nodes run the agent: --nodes in Batch's range syntax, else all. The ranges
 * of a job's node groups whose image runs something else are simply not listed. */
static enum ba_status node_groups(struct rendezvous *rv)
{
	const struct config *cfg = rv->cfg;
	long n = cfg->batch.num_nodes;
	for (long i = 0; i < n; i++)
		rv->runs_agent[i] = cfg->node_range_count == 0;
	for (size_t r = 0; r < cfg->node_range_count; r++) {
		/* An open end ("4:") is the job's last node; an index the job lacks is a typo
		 * or another job's ranges, never something to ignore. */
		if (cfg->node_ranges[r].lo >= n || cfg->node_ranges[r].hi >= n) {
			log_error("--nodes %s names node %ld, beyond this %ld-node job (indexes 0 to %ld)", cfg->nodes_text,
				  cfg->node_ranges[r].hi >= n ? cfg->node_ranges[r].hi : cfg->node_ranges[r].lo, n, n - 1);
			return config_flagged(cfg, "nodes") ? BA_EX_USAGE : BA_EX_CONFIG;
		}
		long hi = cfg->node_ranges[r].hi < 0 ? n - 1 : cfg->node_ranges[r].hi;
		for (long i = cfg->node_ranges[r].lo; i <= hi; i++)
			rv->runs_agent[i] = true;
	}
	if (!rv->runs_agent[cfg->batch.main_node_index]) {
		log_error("--nodes %s leaves out the main node %ld, which runs the agent", cfg->nodes_text,
			  cfg->batch.main_node_index);
		return config_flagged(cfg, "nodes") ? BA_EX_USAGE : BA_EX_CONFIG;
	}
	rv->agent_nodes = 0;
	for (long i = 0; i < n; i++)
		rv->agent_nodes += rv->runs_agent[i];
	rv->children = rv->agent_nodes - 1;
	if (cfg->node_range_count > 0)
		log_info("nodes that run the agent (--nodes %s): %ld of %ld", cfg->nodes_text, rv->agent_nodes, n);
	return BA_OK;
}

static enum ba_status set_up(struct rendezvous *rv)
{
	struct listener_hooks peer_hooks = { .ctx = rv, .admit = admit_child, .registered = on_registered,
					     .message = on_child_message, .lost = on_child_lost };
	rv->m.payload_name = "the main payload";
	rv->m.farewell = "the main node is finishing";
	rv->m.peer_noun = "node";
	rv->m.hooks = (struct manager_hooks){ .ctx = rv, .owing = owing, .silent = report_silent };
	rv->by_index = calloc((size_t)rv->cfg->batch.num_nodes, sizeof *rv->by_index);
	rv->runs_agent = calloc((size_t)rv->cfg->batch.num_nodes, sizeof *rv->runs_agent);
	if (rv->by_index == NULL || rv->runs_agent == NULL)
		return BA_EX_OSERR;
	enum ba_status rc = node_groups(rv);
	if (rc != BA_OK)
		return rc;
	/* The main's own CPUs, as a child would register them: once, before anyone dials. */
	struct node_self self;
	rc = self_describe_node(rv->cfg, &self);
	if (rc != BA_OK)
		return rc;
	rv->main_cpus = self.cpus;
	struct admit_job job = job_of(rv);
	return manager_set_up(&rv->m, rv->cfg, &job, &peer_hooks);
}

enum ba_status rendezvous_run(const struct config *cfg)
{
	struct rendezvous rv = { .cfg = cfg };
	enum ba_status rc = set_up(&rv);
	if (rc == BA_OK) {
		log_info("rendezvous listening on port %ld for %ld child node%s (wait up to %.3g s)", cfg->port,
			 rv.children, rv.children == 1 ? "" : "s", (double)cfg->wait_timeout_ms / 1000.0);
		loop_timer_arm(rv.m.loop, &rv.m.wait_timer, cfg->wait_timeout_ms, on_wait_timer, &rv);
		if (rv.children == 0)
			send_roster(&rv);
		rc = loop_run(rv.m.loop);
	}
	manager_free(&rv.m);
	peerview_release(&rv.view);
	free(rv.view_nodes);
	free(rv.by_index);
	free(rv.runs_agent);
	return rc;
}
