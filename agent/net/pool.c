/* A worker pool: the main role outside MNP. Read in the order of a pool's life: the
 * workers are submitted (when asked), they register (listener.c drives their
 * connections, admit.c checks the handshake, this file who may join), PROGRAM starts
 * with the membership, the membership changes while it runs, and the end: every
 * worker told to shut down, every submitted job that may be left stopped. */
#include "pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "address.h"
#include "admit.h"
#include "confine.h"
#include "launch.h"
#include "listener.h"
#include "log.h"
#include "manager.h"
#include "members.h"
#include "pooljobs.h"
#include "proto.h"
#include "self.h"
#include "util.h"

struct pool {
	struct manager m; /* the loop, the listener, PROGRAM, the end */
	const struct config *cfg;
	struct members members;
	struct pool_jobs jobs;
	bool submitted;                         /* jobs.pool_id is ours to stop */
	char array_id[MEMBERS_JOB_ID_MAX + 1];  /* the array the workers are children of; "" until known */
	struct loop_timer publish_timer;
	bool publish_pending;
	bool jobs_stopped; /* stopping: the pool's jobs were stopped already */
	long owed; /* members connected, with no exit report yet: counted, so that the
	            * shutdown's 10,000 reports cost 10,000 steps, not a walk of the list each */
	int64_t published_ms; /* when the last version was written */
	char manager_addr[64];
};

static void start_program(struct pool *pl, const char *why);

/* ---- who may join ---- */

/* Array children are "<array id>:<index>": the array's id when job_id is that. */
static bool array_of(const char *job_id, long index, char *out, size_t size)
{
	const char *colon = strrchr(job_id, ':');
	long suffix;
	if (colon == NULL || colon == job_id || !util_parse_long(colon + 1, 0, MEMBERS_ARRAY_MAX - 1, &suffix) ||
	    suffix != index)
		return false;
	snprintf(out, size, "%.*s", (int)(colon - job_id), job_id);
	return true;
}

/* A child of the pool's array (the one submitted, else the first to join), or a
 * separate job (with --submit-workers: one we submitted). */
static bool check_identity(const struct pool *pl, const struct proto_register *reg, struct admit_refusal *why)
{
	long index = reg->array_index.present ? (long)reg->array_index.value : -1;
	char array[MEMBERS_JOB_ID_MAX + 1];
	if (reg->job_id[0] == '\0' || strlen(reg->job_id) > MEMBERS_JOB_ID_MAX)
		return admit_reject(why, PROTO_REJECT_JOB_MISMATCH, "a job id of %zu bytes is not a Batch job id",
			      strlen(reg->job_id));
	if (index >= 0 && pl->submitted && !pl->jobs.pool_is_array)
		return admit_reject(why, PROTO_REJECT_JOB_MISMATCH, "worker %.100s is an array child; this pool submitted the "
			      "single job %.100s", reg->job_id, pl->jobs.pool_id);
	if (index >= 0) {
		if (!array_of(reg->job_id, index, array, sizeof array))
			return admit_reject(why, PROTO_REJECT_JOB_MISMATCH, "job id \"%.100s\" is not child %ld of an array job",
				      reg->job_id, index);
		if (pl->array_id[0] && strcmp(array, pl->array_id) != 0)
			return admit_reject(why, PROTO_REJECT_JOB_MISMATCH,
				      "worker %.100s is a child of array %.100s; this pool's workers are children of %.100s",
				      reg->job_id, array, pl->array_id);
		if (pl->submitted && index >= pl->cfg->workers)
			return admit_reject(why, PROTO_REJECT_NODE_OUT_OF_RANGE, "array index %ld is outside this pool's array of %ld",
				      index, pl->cfg->workers);
		return true;
	}
	bool ours = (!pl->jobs.pool_is_array && strcmp(reg->job_id, pl->jobs.pool_id) == 0) ||
		    pooljobs_is_replacement(&pl->jobs, reg->job_id);
	if (pl->submitted && !ours)
		return admit_reject(why, PROTO_REJECT_JOB_MISMATCH, "job %.100s is not one this pool submitted%s", reg->job_id,
			      strcmp(reg->job_id, pl->jobs.pool_id) == 0 ? " (an array's parent runs no container)" : "");
	return true;
}

static bool admit_worker(void *ctx, struct peer *p, const struct proto_register *reg, struct admit_refusal *why)
{
	struct pool *pl = ctx;
	long index = reg->array_index.present ? (long)reg->array_index.value : -1;
	(void)p;
	if (pl->m.phase == MANAGER_ENDING)
		return admit_reject(why, PROTO_REJECT_SHUTTING_DOWN, "the pool's manager is shutting down");
	if (!check_identity(pl, reg, why))
		return false;
	struct member *m = members_find(&pl->members, reg->job_id, index);
	/* A worker that redialed may be here before the close of its old connection is
	 * read: read it now. */
	if (m != NULL && m->peer != NULL)
		listener_read_now(m->peer);
	/* Batch retries a child under its own id, with a higher attempt: the old
	 * connection is a dead container's that we have not noticed yet. */
	if (m != NULL && m->peer != NULL && reg->attempt.present && reg->attempt.value > m->attempt) {
		log_warn("worker %s: attempt %lld replaces attempt %ld (%s)", m->job_id, (long long)reg->attempt.value,
			 m->attempt, m->peer->remote);
		listener_drop(m->peer, "a later attempt of its job registered");
	}
	if (m != NULL && m->peer != NULL)
		return admit_reject(why, PROTO_REJECT_DUPLICATE_NODE, "worker %.100s is already a member, from %s", reg->job_id,
			      m->peer->remote);
	if (pl->members.joined >= pl->cfg->workers)
		return admit_reject(why, PROTO_REJECT_POOL_FULL, "the pool has its %ld workers", pl->cfg->workers);
	return true;
}

/* ---- membership ---- */

static void count_states(const struct members *ms, long counts[MEMBER_STATE_COUNT])
{
	memset(counts, 0, MEMBER_STATE_COUNT * sizeof counts[0]);
	for (size_t i = 0; i < ms->count; i++)
		counts[ms->all[i]->state]++;
}

/* Changes that arrive together (a burst of joins: an array filling up) make one new
 * version of the file: each costs the file system a create and a rename over the old
 * one (most of the ~0.7 ms a version takes at 1,000 members), so versions come at most
 * every PUBLISH_INTERVAL_MS. */
#define PUBLISH_INTERVAL_MS 50

static void on_publish(struct loop *loop, void *ctx)
{
	struct pool *pl = ctx;
	long counts[MEMBER_STATE_COUNT];
	char name[32];
	(void)loop;
	pl->publish_pending = false;
	pl->published_ms = util_now_ms();
	if (pl->m.phase != MANAGER_RUNNING || members_write_file(&pl->members, pl->cfg->workers) != BA_OK)
		return;
	count_states(&pl->members, counts);
	log_info("membership %ld: %ld joined, %ld draining, %ld lost, %ld exited (%s)", pl->members.generation,
		 counts[MEMBER_JOINED], counts[MEMBER_DRAINING], counts[MEMBER_LOST], counts[MEMBER_EXITED], pl->members.path);
	if (pl->cfg->notify_signal) {
		log_debug("notifying PROGRAM with %s", util_signal_name(pl->cfg->notify_signal, name, sizeof name));
		supervise_signal(pl->m.sv, pl->cfg->notify_signal);
	}
}

static void changed(struct pool *pl)
{
	if (pl->m.phase != MANAGER_RUNNING || pl->publish_pending)
		return;
	pl->publish_pending = true;
	int64_t wait_ms = pl->published_ms + PUBLISH_INTERVAL_MS - util_now_ms();
	loop_timer_arm(pl->m.loop, &pl->publish_timer, wait_ms > 0 ? wait_ms : 0, on_publish, pl);
}

static void fill_member(struct member *m, struct peer *p, const struct proto_register *reg)
{
	snprintf(m->address, sizeof m->address, "%s", reg->address);
	snprintf(m->hostname, sizeof m->hostname, "%s", reg->hostname);
	m->cpus = reg->has_cpus ? reg->cpus : 0;
	m->memory_bytes = reg->memory_limit_bytes.present ? reg->memory_limit_bytes.value : -1;
	m->attempt = reg->attempt.present ? (long)reg->attempt.value : 0;
	m->peer = p;
	m->exit_reported = m->stopped_by_us = false;
	m->drain_reason[0] = '\0';
	members_touch(m);
	p->member = m;
}

static void on_registered(void *ctx, struct peer *p, const struct proto_register *reg)
{
	struct pool *pl = ctx;
	long index = reg->array_index.present ? (long)reg->array_index.value : -1;
	bool running = pl->m.phase == MANAGER_RUNNING;
	struct member *m = members_find(&pl->members, reg->job_id, index);
	if (m == NULL && members_add(&pl->members, reg->job_id, index, &m) != BA_OK) {
		log_error("out of memory for worker %s", reg->job_id);
		listener_drop(p, "out of memory");
		return;
	}
	fill_member(m, p, reg);
	pl->owed++;
	members_set_state(&pl->members, m, MEMBER_JOINED);
	if (pl->array_id[0] == '\0' && index >= 0) {
		array_of(reg->job_id, index, pl->array_id, sizeof pl->array_id);
		log_info("this pool's workers are children of array %s", pl->array_id);
	}
	log_info("worker %s joined from %s (advertises %s): %ld of %ld", m->job_id, p->remote, m->address,
		 pl->members.joined, pl->cfg->workers);
	if (pl->m.phase == MANAGER_WAITING && pl->members.joined == pl->cfg->workers)
		start_program(pl, "every worker joined");
	if (running)
		changed(pl);
}

static void on_exited(struct pool *pl, struct member *m, const struct proto_msg *msg)
{
	if (!m->exit_reported)
		pl->owed--;
	m->exit_reported = true;
	m->stopped_by_us = pl->m.phase == MANAGER_ENDING;
	m->signaled = msg->u.payload_exited.signaled;
	m->exit_value = m->signaled ? msg->u.payload_exited.signal : msg->u.payload_exited.exit_code;
	members_set_state(&pl->members, m, MEMBER_EXITED);
	if (pl->m.phase == MANAGER_ENDING)
		log_info("worker %s's payload ended (%s %d) after the shutdown request", m->job_id,
			 m->signaled ? "signal" : "status", m->exit_value);
	else
		log_warn("worker %s's payload ended (%s %d) while the pool runs", m->job_id, m->signaled ? "signal" : "status",
			 m->exit_value);
	changed(pl);
	manager_maybe_stop(&pl->m);
}

static void on_draining(struct pool *pl, struct member *m, const struct proto_msg *msg)
{
	const char *deadline = msg->u.draining.deadline;
	bool news = strncmp(m->drain_reason, msg->u.draining.reason, sizeof m->drain_reason - 1) != 0;
	snprintf(m->drain_reason, sizeof m->drain_reason, "%s", msg->u.draining.reason);
	members_touch(m);
	log_warn("worker %s is draining: %s%s%s", m->job_id, m->drain_reason, deadline ? ", deadline " : "",
		 deadline ? deadline : "");
	if (m->state != MEMBER_JOINED) {
		if (news) /* a rebalance recommendation, then the interruption itself */
			changed(pl);
		return;
	}
	members_set_state(&pl->members, m, MEMBER_DRAINING);
	changed(pl);
	if (pl->cfg->replace_drained && pl->submitted && pl->m.phase != MANAGER_ENDING)
		pooljobs_submit_replacement(pl->cfg, &pl->jobs);
}

static void on_worker_message(void *ctx, struct peer *p, const struct proto_msg *msg)
{
	struct pool *pl = ctx;
	struct member *m = p->member;
	switch (msg->type) {
	case PROTO_MSG_PAYLOAD_STARTED:
		return;
	case PROTO_MSG_PAYLOAD_EXITED:
		on_exited(pl, m, msg);
		return;
	case PROTO_MSG_DRAINING:
		on_draining(pl, m, msg);
		return;
	case PROTO_MSG_ERROR:
		log_warn("worker %s reports an error: %s %s", m->job_id, msg->u.error.code, msg->u.error.message);
		listener_drop(p, "it reported an error");
		return;
	default:
		listener_refuse_unexpected(p, msg);
		return;
	}
}

/* The member stays (a lost worker may come back: Batch retries a child under its own
 * id); the connection is the listener's to free. */
static bool on_worker_lost(void *ctx, struct peer *p, const char *why)
{
	struct pool *pl = ctx;
	struct member *m = p->member;
	if (m == NULL) /* it was dropped before it became a member (out of memory) */
		return true;
	m->peer = NULL;
	if (m->exit_reported) {
		log_debug("worker %s (%s) disconnected after its exit report: %s", m->job_id, m->address, why);
	} else {
		pl->owed--;
		log_warn("worker %s (%s) lost: %s", m->job_id, m->address, why);
		members_set_state(&pl->members, m, MEMBER_LOST);
		changed(pl);
	}
	manager_maybe_stop(&pl->m);
	return true;
}

/* ---- PROGRAM ---- */

/* Where the workers reached us is where PROGRAM's peers can reach it. */
static enum ba_status manager_address(struct pool *pl)
{
	if (pl->manager_addr[0])
		return BA_OK;
	if (pl->cfg->advertise_addr != NULL)
		return address_advertised(-1, pl->cfg->advertise_addr, pl->manager_addr, sizeof pl->manager_addr);
	for (size_t i = 0; i < pl->members.count; i++) {
		struct peer *p = pl->members.all[i]->peer;
		struct sockaddr_in local;
		socklen_t length = sizeof local;
		if (p && p->conn.open && getsockname(p->conn.pc.fd, (struct sockaddr *)&local, &length) == 0 &&
		    local.sin_family == AF_INET && inet_ntop(AF_INET, &local.sin_addr, pl->manager_addr, sizeof pl->manager_addr))
			return BA_OK;
	}
	return address_first_usable(pl->manager_addr, sizeof pl->manager_addr);
}

static enum ba_status launch_program(struct pool *pl, const char *nodes)
{
	struct payload payload = { 0 };
	char members_env[sizeof pl->members.path + 32];
	snprintf(members_env, sizeof members_env, "BATCH_AGENT_MEMBERS=%s", pl->members.path);
	const char *extra[] = { members_env, NULL };
	struct launch_vars vars = { .node_addr = pl->manager_addr, .hostfile = pl->members.hostfile, .nodes = nodes,
				    .handover_fd = -1, .extra_env = extra };
	enum ba_status rc = launch_prepare(&payload, pl->cfg, &vars);
	if (rc == BA_OK)
		rc = manager_spawn(&pl->m, &payload);
	launch_release(&payload);
	return rc;
}

static void start_program(struct pool *pl, const char *why)
{
	long count = 0;
	char *lines = NULL, *nodes = NULL;
	loop_timer_cancel(pl->m.loop, &pl->m.wait_timer);
	enum ba_status rc = manager_address(pl);
	if (rc == BA_OK) {
		nodes = members_addresses(&pl->members, &count, pl->cfg->hostfile_format, &lines);
		rc = nodes ? members_write_hostfile(&pl->members, lines) : BA_EX_OSERR;
	}
	if (rc == BA_OK)
		rc = members_write_file(&pl->members, pl->cfg->workers);
	pl->published_ms = util_now_ms();
	if (rc == BA_OK) {
		log_info("%s: starting PROGRAM with %ld worker%s: %s", why, count, count == 1 ? "" : "s", nodes);
		rc = launch_program(pl, nodes);
	}
	/* batch-agent-aws runs under whatever filter we carry: only a pool that never
	 * starts it again may narrow itself to the event loop's calls. */
	if (rc == BA_OK && !pl->submitted)
		confine_steady_state();
	if (rc != BA_OK)
		manager_fail(&pl->m, rc, "PROGRAM could not start");
	free(lines);
	free(nodes);
}

/* The array's indexes 0..N-1 that have not joined, as "3, 5, 9", cut with "..." to
 * fit (an array we did not submit is assumed to have N children). */
static void list_missing(const struct pool *pl, char *out, size_t size)
{
	size_t used = 0;
	out[0] = '\0';
	for (long i = 0; pl->array_id[0] && i < pl->cfg->workers; i++) {
		const struct member *m = pl->members.by_index[i];
		if (m != NULL && m->state == MEMBER_JOINED)
			continue;
		if (used + 24 >= size) {
			snprintf(out + used, size - used, ", ...");
			return;
		}
		used += (size_t)snprintf(out + used, size - used, "%s%ld", used ? ", " : "", i);
	}
}

static void on_wait_timer(struct loop *loop, void *ctx)
{
	struct pool *pl = ctx;
	char missing[512], detail[800] = "";
	(void)loop;
	bool minimum = pl->cfg->min_workers > 0;
	long needed = minimum ? pl->cfg->min_workers : pl->cfg->workers;
	list_missing(pl, missing, sizeof missing);
	if (missing[0])
		snprintf(detail, sizeof detail, "; missing array index%s %s of %s", strchr(missing, ',') ? "es" : "",
			 missing, pl->array_id);
	if (pl->members.joined >= needed) {
		log_warn("starting with %ld of %ld workers after %.3g s (--min-workers %ld)%s", pl->members.joined,
			 pl->cfg->workers, (double)pl->cfg->wait_timeout_ms / 1000.0, needed, detail);
		start_program(pl, "--wait-timeout");
		return;
	}
	log_error("%ld of %ld workers joined within %.3g s, %ld needed%s%s", pl->members.joined, pl->cfg->workers,
		  (double)pl->cfg->wait_timeout_ms / 1000.0, needed, minimum ? " (--min-workers)" : "", detail);
	manager_fail(&pl->m, BA_EX_UNAVAILABLE, "too few workers");
}

/* ---- the end ---- */

static long owing(void *ctx)
{
	const struct pool *pl = ctx;
	return pl->owed;
}

static void report_silent(void *ctx)
{
	struct pool *pl = ctx;
	for (size_t i = 0; i < pl->members.count; i++) {
		const struct member *m = pl->members.all[i];
		if (m->peer != NULL && !m->exit_reported)
			log_warn("worker %s (%s) sent no exit report within the grace period", m->job_id, m->address);
	}
}

/* A submitted job is over when the worker it ran reported that its payload succeeded,
 * or ended because we asked (its agent then exits 0): stopping it then would only turn
 * a success into a failure. The rest (never started, still starting, silent, lost, or
 * failed on its own, which Batch may retry) is stopped. */
static bool finished(const struct member *m)
{
	return m != NULL && m->exit_reported && (m->stopped_by_us || (!m->signaled && m->exit_value == 0));
}

/* The children to stop, when they are few and some finished: TerminateJob on a child
 * that is ending by itself could still mark it failed. Else the array parent, which
 * covers every child, even those Batch has not created yet. */
#define STOP_ONE_BY_ONE_MAX 4

static size_t unfinished_children(const struct pool *pl, char (*ids)[POOLJOBS_ID_MAX + 24])
{
	size_t count = 0, done = 0;
	for (long i = 0; i < pl->cfg->workers; i++) {
		if (finished(pl->members.by_index[i])) {
			done++;
			continue;
		}
		if (count == STOP_ONE_BY_ONE_MAX)
			return STOP_ONE_BY_ONE_MAX + 1;
		snprintf(ids[count++], POOLJOBS_ID_MAX + 24, "%s:%ld", pl->jobs.pool_id, i);
	}
	return done == 0 && count > 0 ? STOP_ONE_BY_ONE_MAX + 1 : count;
}

static void stop_leftovers(struct pool *pl, const char *reason)
{
	const char *ids[STOP_ONE_BY_ONE_MAX + POOLJOBS_REPLACEMENTS_MAX];
	char children[STOP_ONE_BY_ONE_MAX][POOLJOBS_ID_MAX + 24];
	size_t count = 0;
	if (!pl->submitted || pl->jobs_stopped)
		return;
	if (!pl->jobs.pool_is_array) {
		if (!finished(members_find(&pl->members, pl->jobs.pool_id, -1)))
			ids[count++] = pl->jobs.pool_id;
	} else {
		size_t n = unfinished_children(pl, children);
		if (n > STOP_ONE_BY_ONE_MAX)
			ids[count++] = pl->jobs.pool_id;
		for (size_t i = 0; n <= STOP_ONE_BY_ONE_MAX && i < n; i++)
			ids[count++] = children[i];
	}
	for (size_t i = 0; i < pl->jobs.replacement_count; i++)
		if (!finished(members_find(&pl->members, pl->jobs.replacements[i], -1)))
			ids[count++] = pl->jobs.replacements[i];
	if (count == 0)
		log_info("every submitted worker finished: no job to stop");
	pooljobs_stop(pl->cfg, ids, count, reason);
}

/* Batch is stopping the manager and SIGKILLs it 30 s from now: the whole pool is
 * stopped at once (the array parent and every replacement), before PROGRAM's grace
 * period and the workers' reports, which could take longer than that. The workers
 * still get our shutdown and report; what Batch sends them is the same request. The
 * call waits inside the loop, signals pending for it. */
static void on_stopping(void *ctx)
{
	struct pool *pl = ctx;
	const char *ids[1 + POOLJOBS_REPLACEMENTS_MAX];
	size_t count = 0;
	if (!pl->submitted || pl->jobs_stopped)
		return;
	ids[count++] = pl->jobs.pool_id;
	for (size_t i = 0; i < pl->jobs.replacement_count; i++)
		ids[count++] = pl->jobs.replacements[i];
	pl->jobs_stopped = true;
	log_info("the pool's manager is being stopped: stopping its workers' jobs now");
	pooljobs_stop_now(pl->cfg, ids, count, "the pool's manager was stopped");
}

/* ---- set-up ---- */

static enum ba_status set_up(struct pool *pl)
{
	struct listener_hooks peer_hooks = { .ctx = pl, .admit = admit_worker, .registered = on_registered,
					     .message = on_worker_message, .lost = on_worker_lost };
	struct admit_job job = { .job_id = pl->cfg->batch.job_id, .num_nodes = pl->cfg->workers, .main_node_index = -1,
				 .attempt = -1, .pool = true };
	pl->m.payload_name = "PROGRAM";
	pl->m.farewell = "the pool's manager is finishing";
	pl->m.peer_noun = "worker";
	pl->m.hooks = (struct manager_hooks){ .ctx = pl, .owing = owing, .silent = report_silent, .stopping = on_stopping };
	enum ba_status rc = members_init(&pl->members);
	if (rc == BA_OK)
		rc = manager_set_up(&pl->m, pl->cfg, &job, &peer_hooks);
	return rc;
}

/* The address the workers are told to dial: --advertise-addr, the task's, or ours. */
static enum ba_status submit_pool(struct pool *pl, int *held)
{
	struct node_self self;
	enum ba_status rc = self_describe_node(pl->cfg, &self);
	if (rc == BA_OK && self.have_address)
		snprintf(pl->manager_addr, sizeof pl->manager_addr, "%s", self.address);
	else if (rc == BA_OK)
		rc = manager_address(pl);
	if (rc == BA_OK)
		rc = pooljobs_submit_pool(pl->cfg, pl->manager_addr, &pl->jobs, held);
	if (rc == BA_OK) {
		pl->submitted = true;
		if (pl->jobs.pool_is_array)
			snprintf(pl->array_id, sizeof pl->array_id, "%s", pl->jobs.pool_id);
	}
	return rc;
}

enum ba_status pool_run(const struct config *cfg)
{
	struct pool pl = { .cfg = cfg };
	int held = 0;
	enum ba_status rc = set_up(&pl);
	if (rc == BA_OK && cfg->submit_workers)
		rc = submit_pool(&pl, &held);
	if (rc == BA_OK && held != 0) {
		char name[32];
		log_info("received %s while submitting the workers: stopping them", util_signal_name(held, name, sizeof name));
		rc = BA_EX_SIGNAL_BASE + held;
	}
	if (rc == BA_OK) {
		log_info("pool manager listening on port %ld for %ld worker%s (wait up to %.3g s)", cfg->port, cfg->workers,
			 cfg->workers == 1 ? "" : "s", (double)cfg->wait_timeout_ms / 1000.0);
		loop_timer_arm(pl.m.loop, &pl.m.wait_timer, cfg->wait_timeout_ms, on_wait_timer, &pl);
		rc = loop_run(pl.m.loop);
	}
	/* The workers' connections first: what is queued for them (shutdown) goes out now. */
	manager_free(&pl.m);
	stop_leftovers(&pl, "the pool's manager ended");
	members_free(&pl.members);
	pooljobs_release(&pl.jobs);
	return rc;
}
