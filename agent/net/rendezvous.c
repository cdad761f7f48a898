/* The MNP rendezvous. Read in the order of a job's life: listen, accept, the handshake
 * of each child, registration, the start of the main payload, and the shutdown. */
#include "rendezvous.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "cookie.h"
#include "launch.h"
#include "log.h"
#include "proto.h"
#include "status.h"
#include "supervise.h"
#include "util.h"

#define SWEEP_MS 250
#define REPORT_MARGIN_MS 1000 /* after the grace period, for the last exit reports to arrive */
#define ACCEPT_RETRY_MS 250   /* out of descriptors or memory: how long accept(2) rests */
#define REFUSALS_WINDOW_MS 60000 /* refused pre-auth peers: one summary line per window */
#define REFUSALS_LOUD_MAX 10      /* warnings per window before the rest are only counted */
#define FD_SLACK 32           /* descriptors besides the peers': stdio, epoll, signalfd, pipes, hostfile */

enum peer_state { PEER_HELLO, PEER_AUTH, PEER_REGISTER, PEER_REGISTERED };
enum phase { PHASE_WAITING, PHASE_RUNNING, PHASE_SHUTTING_DOWN };

struct peer {
	struct rendezvous *rv;
	struct proto_conn conn;
	enum peer_state state;
	bool connected;
	char remote[64]; /* ip:port the connection came from */
	int version;
	unsigned char worker_nonce[PROTO_NONCE_LEN], manager_nonce[PROTO_NONCE_LEN];
	int64_t accepted_ms, last_heard_ms;
	long node_index;
	char address[ADDRESS_ADVERTISED_MAX + 1]; /* advertised at registration, checked */
	bool exit_reported;
	bool dead; /* dropped and out of the job: freed by the next sweep, never inside a callback */
	struct peer *next;
};

struct rendezvous {
	const struct config *cfg;
	struct loop *loop;
	struct supervisor *sv;
	struct cookie cookie;
	int listen_fd;
	enum phase phase;
	struct peer *peers;    /* every peer with a live connection, and registered ones */
	size_t pending;        /* peers not yet registered */
	size_t max_pending;
	bool accept_paused;    /* the listen fd is out of the loop: newcomers wait in the kernel's backlog */
	bool accept_starved;   /* accept(2) ran out of descriptors or memory: logged once per episode */
	struct rlimit nofile;  /* as inherited: the main payload gets it back */
	struct peer **by_index; /* registered children by node index */
	long registered;
	long children;         /* AWS_BATCH_JOB_NUM_NODES - 1 */
	const char *job_prefix; /* "<uuid>#" of this job, NULL when unknown */
	size_t job_prefix_length;
	int64_t last_heartbeat_ms;
	int64_t refusals_since_ms; /* start of the current window */
	unsigned refusals_loud;    /* warned about in this window */
	unsigned refusals_quiet;   /* only counted (and logged at debug) in this window */
	int64_t cap_warned_ms;     /* when the cap of handshakes was last a warning; 0: never */
	int64_t sweep_ms;      /* min(SWEEP_MS, heartbeat / 3): heartbeats leave on a sweep */
	struct loop_timer wait_timer, sweep_timer, report_timer, accept_timer;
	char main_addr[64];
	char hostfile[128];
	bool main_finished;
	int exit_status;
};

/* ---- peers ---- */

/* Anyone who reaches the port can be refused thousands of times a second: the log must
 * not grow with them. A wrong cookie (loud) is a warning that names the peer, for the
 * first REFUSALS_LOUD_MAX of a window; garbage, oversized frames and timeouts (quiet)
 * and the loud ones past that go to debug, and one line per window counts them. */
static void refused(struct rendezvous *rv, bool loud, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refused(struct rendezvous *rv, bool loud, const char *fmt, ...)
{
	char line[320];
	va_list args;
	va_start(args, fmt);
	vsnprintf(line, sizeof line, fmt, args);
	va_end(args);
	if (loud && rv->refusals_loud < REFUSALS_LOUD_MAX) {
		rv->refusals_loud++;
		log_warn("%s", line);
		return;
	}
	rv->refusals_quiet++;
	log_debug("%s", line);
}

/* The summary of the window, when it has one; a new window starts at now. */
static void refusals_summary(struct rendezvous *rv, int64_t now)
{
	if (rv->refusals_quiet > 0)
		log_warn("refused %u more peer%s in the last %lld s (details at --log-level debug)", rv->refusals_quiet,
			 rv->refusals_quiet == 1 ? "" : "s", (long long)((now - rv->refusals_since_ms + 999) / 1000));
	rv->refusals_since_ms = now;
	rv->refusals_loud = 0;
	rv->refusals_quiet = 0;
}

static void drop_peer(struct peer *p, const char *why);

static void update_interest(struct peer *p)
{
	loop_modify(p->rv->loop, p->conn.fd, EPOLLIN | (p->conn.want_write ? EPOLLOUT : 0));
}

/* Queue msg to p (takes msg); a peer that cannot take it is dropped. A message we
 * could not build is our failure, not the peer's: it is logged as an internal error
 * and the peer is left as it was. */
static void send_to(struct peer *p, cJSON *msg, int build_err)
{
	int err = PROTO_OK;
	if (build_err != PROTO_OK)
		log_error("internal error: cannot build a message for %s: %s", p->remote, proto_strerror(build_err));
	else if (p->connected)
		err = proto_frame_send(&p->conn, msg);
	cJSON_Delete(msg);
	if (!p->connected || build_err != PROTO_OK)
		return;
	if (err != PROTO_OK)
		drop_peer(p, proto_strerror(err));
	else
		update_interest(p);
}

static void send_error_and_drop(struct peer *p, const char *code, const char *message, const char *why)
{
	cJSON *msg = NULL;
	int err = proto_msg_error(code, message, &msg);
	send_to(p, msg, err);
	if (p->connected)
		proto_frame_flush(&p->conn); /* best effort: the peer is leaving anyway */
	drop_peer(p, why);
}

static void unlink_peer(struct rendezvous *rv, struct peer *p)
{
	for (struct peer **link = &rv->peers; *link; link = &(*link)->next) {
		if (*link == p) {
			*link = p->next;
			return;
		}
	}
}

static void maybe_stop(struct rendezvous *rv);
static void on_accept(struct loop *loop, int fd, uint32_t events, void *ctx);

/* Put the listen fd back in the loop, unless something still holds accepting off: the
 * cap of handshakes, the shutdown, or the rest after running out of descriptors. */
static void resume_accept(struct rendezvous *rv)
{
	if (rv->accept_paused && rv->pending < rv->max_pending && rv->phase != PHASE_SHUTTING_DOWN &&
	    !rv->accept_timer.armed && loop_add(rv->loop, rv->listen_fd, EPOLLIN, on_accept, rv) == BA_OK)
		rv->accept_paused = false;
}

static void on_accept_timer(struct loop *loop, void *ctx)
{
	(void)loop;
	resume_accept(ctx);
}

/* A handshake ended: if accepting was paused at the cap, take newcomers again. */
static void handshake_ended(struct rendezvous *rv)
{
	rv->pending--;
	resume_accept(rv);
}

static void drop_peer(struct peer *p, const char *why)
{
	struct rendezvous *rv = p->rv;
	if (!p->connected)
		return;
	p->connected = false;
	loop_remove(rv->loop, p->conn.fd);
	close(p->conn.fd);
	proto_frame_conn_free(&p->conn);
	if (p->state != PEER_REGISTERED) {
		handshake_ended(rv);
		log_debug("dropped peer %s: %s", p->remote, why);
		p->dead = true;
		return;
	}
	if (rv->phase == PHASE_WAITING) {
		/* Free its slot: a restarted node may register again. */
		log_warn("node %ld (%s) left before the main payload started: %s", p->node_index, p->address, why);
		rv->by_index[p->node_index] = NULL;
		rv->registered--;
		p->dead = true;
		return;
	}
	if (rv->phase == PHASE_SHUTTING_DOWN && p->exit_reported)
		log_debug("node %ld (%s) disconnected after its exit report", p->node_index, p->address);
	else
		log_warn("node %ld (%s) lost: %s", p->node_index, p->address, why);
	maybe_stop(rv);
}

/* ---- the handshake, manager side ---- */

static void on_hello(struct peer *p, const struct proto_msg *msg)
{
	struct rendezvous *rv = p->rv;
	unsigned char proof[PROTO_PROOF_LEN];
	cJSON *reply = NULL;
	/* PROTOCOL.md §3: an error before authentication is logged, never answered. */
	if (msg->type == PROTO_MSG_ERROR) {
		refused(rv, true, "refused peer %s: it opened with error %s", p->remote, msg->u.error.code);
		drop_peer(p, "it opened with an error");
		return;
	}
	if (msg->type != PROTO_MSG_HELLO_WORKER) {
		refused(rv, false, "refused peer %s: it did not start with hello", p->remote);
		send_error_and_drop(p, PROTO_CODE_UNEXPECTED, "expected hello", "did not start with hello");
		return;
	}
	if (proto_msg_pick_version(msg, &p->version) != PROTO_OK) {
		refused(rv, true, "refused peer %s: no protocol version in common (this manager speaks %d)", p->remote,
			PROTO_VERSION);
		send_error_and_drop(p, PROTO_CODE_UNSUPPORTED_VERSION, "this manager speaks version 1",
				    "no protocol version in common");
		return;
	}
	memcpy(p->worker_nonce, msg->u.hello_worker.nonce, PROTO_NONCE_LEN);
	if (proto_auth_nonce(p->manager_nonce) != PROTO_OK ||
	    proto_auth_proof(rv->cookie.bytes, rv->cookie.length, p->version, PROTO_ROLE_MANAGER, p->worker_nonce,
			     p->manager_nonce, proof) != PROTO_OK) {
		send_error_and_drop(p, PROTO_CODE_INTERNAL, "", "cannot compute our proof");
		return;
	}
	int err = proto_msg_hello_manager(p->version, p->manager_nonce, proof, &reply);
	proto_auth_wipe(proof, sizeof proof);
	p->state = PEER_AUTH;
	send_to(p, reply, err);
}

static void on_auth(struct peer *p, const struct proto_msg *msg)
{
	struct rendezvous *rv = p->rv;
	if (msg->type == PROTO_MSG_ERROR) {
		refused(rv, true, "refused peer %s: it did not accept our proof (%s): the cookies differ", p->remote,
			msg->u.error.code);
		drop_peer(p, "refused our proof");
		return;
	}
	if (msg->type != PROTO_MSG_AUTH) {
		refused(p->rv, false, "refused peer %s: \"%s\" instead of auth", p->remote, proto_msg_type_name(msg->type));
		send_error_and_drop(p, PROTO_CODE_UNEXPECTED, "expected auth", "did not authenticate");
		return;
	}
	if (proto_auth_verify(rv->cookie.bytes, rv->cookie.length, p->version, PROTO_ROLE_WORKER, p->worker_nonce,
			      p->manager_nonce, msg->u.auth.proof) != PROTO_OK) {
		refused(rv, true, "refused peer %s: authentication failed (wrong cookie, or a replayed exchange)", p->remote);
		send_error_and_drop(p, PROTO_CODE_AUTH_FAILED, "worker proof does not match", "authentication failed");
		return;
	}
	proto_frame_set_limit(&p->conn, PROTO_MAX_FRAME);
	p->state = PEER_REGISTER;
}

static void reject(struct peer *p, const char *code, const char *message)
{
	cJSON *msg = NULL;
	log_warn("rejected registration from %s: %s", p->remote, message);
	int err = proto_msg_reject(code, message, &msg);
	send_to(p, msg, err);
	if (p->connected)
		proto_frame_flush(&p->conn);
	drop_peer(p, message);
}

/* MNP node ids are "<job uuid>#<node index>": a child of this job carries our uuid and
 * its own index. */
static bool job_matches(const struct rendezvous *rv, const char *job_id, long node_index)
{
	if (rv->job_prefix == NULL)
		return true;
	long suffix;
	return strncmp(job_id, rv->job_prefix, rv->job_prefix_length) == 0 &&
	       util_parse_long(job_id + rv->job_prefix_length, 0, 100000, &suffix) && suffix == node_index;
}

static void start_main_payload(struct rendezvous *rv);

static void on_register(struct peer *p, const struct proto_msg *msg)
{
	struct rendezvous *rv = p->rv;
	char text[400];
	const struct proto_register *reg = &msg->u.reg;
	if (msg->type == PROTO_MSG_ERROR) {
		log_warn("peer %s gave up before registering: %s%s%s", p->remote, msg->u.error.code,
			 msg->u.error.message[0] ? ": " : "", msg->u.error.message);
		drop_peer(p, "it reported an error");
		return;
	}
	if (msg->type != PROTO_MSG_REGISTER) {
		send_error_and_drop(p, PROTO_CODE_UNEXPECTED, "expected register", "did not register");
		return;
	}
	long index = reg->node_index.present ? (long)reg->node_index.value : -1;
	long num_nodes = rv->cfg->batch.num_nodes;
	if (rv->phase == PHASE_SHUTTING_DOWN) {
		reject(p, PROTO_REJECT_SHUTTING_DOWN, "the main node is shutting down");
		return;
	}
	if (rv->phase != PHASE_WAITING) {
		reject(p, PROTO_REJECT_RENDEZVOUS_CLOSED, "the main payload has already started without this node");
		return;
	}
	if (index < 0 || index >= num_nodes || index == rv->cfg->batch.main_node_index) {
		snprintf(text, sizeof text, "node index %ld is not a child of this %ld-node job", index, num_nodes);
		reject(p, PROTO_REJECT_NODE_OUT_OF_RANGE, text);
		return;
	}
	if (!job_matches(rv, reg->job_id, index)) {
		snprintf(text, sizeof text, "job id \"%.100s\" is not node %ld of this job (%.100s)", reg->job_id, index,
			 rv->cfg->batch.job_id);
		reject(p, PROTO_REJECT_JOB_MISMATCH, text);
		return;
	}
	/* PROTOCOL.md §3: job_mismatch also covers the job's size and attempt, where the
	 * worker knows them (null: it does not) and, for the attempt, so do we. */
	if (reg->num_nodes.present && reg->num_nodes.value != num_nodes) {
		snprintf(text, sizeof text, "node %ld counts %lld nodes in the job, this job has %ld", index,
			 (long long)reg->num_nodes.value, num_nodes);
		reject(p, PROTO_REJECT_JOB_MISMATCH, text);
		return;
	}
	if (reg->attempt.present && rv->cfg->batch.attempt > 0 && reg->attempt.value != rv->cfg->batch.attempt) {
		snprintf(text, sizeof text, "node %ld is from attempt %lld of the job, this is attempt %ld", index,
			 (long long)reg->attempt.value, rv->cfg->batch.attempt);
		reject(p, PROTO_REJECT_JOB_MISMATCH, text);
		return;
	}
	/* The address becomes a line of the hostfile and an entry of BATCH_AGENT_NODES: a
	 * newline or a comma in it would forge nodes. */
	if (!address_valid_advertised(reg->address)) {
		snprintf(text, sizeof text, "node %ld advertises %zu bytes that are not an IP address or a DNS name",
			 index, strlen(reg->address));
		reject(p, PROTO_REJECT_BAD_ADDRESS, text);
		return;
	}
	if (rv->by_index[index] != NULL) {
		snprintf(text, sizeof text, "node index %ld is already registered from %s", index,
			 rv->by_index[index]->remote);
		reject(p, PROTO_REJECT_DUPLICATE_NODE, text);
		return;
	}
	cJSON *reply = NULL;
	int err = proto_msg_accept(rv->cfg->heartbeat_ms, &reply);
	if (err != PROTO_OK) {
		cJSON_Delete(reply);
		log_error("internal error: cannot build the accept for node %ld: %s", index, proto_strerror(err));
		send_error_and_drop(p, PROTO_CODE_INTERNAL, "the manager cannot admit workers", "internal error");
		return;
	}
	send_to(p, reply, err);
	if (!p->connected)
		return;
	p->state = PEER_REGISTERED;
	p->node_index = index;
	snprintf(p->address, sizeof p->address, "%s", reg->address);
	rv->by_index[index] = p;
	handshake_ended(rv);
	rv->registered++;
	log_info("node %ld registered from %s (advertises %s): %ld of %ld children", index, p->remote, p->address,
		 rv->registered, rv->children);
	if (rv->registered == rv->children)
		start_main_payload(rv);
}

/* ---- registered children ---- */

static void on_child_message(struct peer *p, const struct proto_msg *msg)
{
	struct rendezvous *rv = p->rv;
	switch (msg->type) {
	case PROTO_MSG_HEARTBEAT:
	case PROTO_MSG_PAYLOAD_STARTED:
		return;
	case PROTO_MSG_PAYLOAD_EXITED:
		p->exit_reported = true;
		if (rv->phase == PHASE_SHUTTING_DOWN)
			log_info("node %ld's payload ended (%s %d) after the shutdown request", p->node_index,
				 msg->u.payload_exited.signaled ? "signal" : "status",
				 msg->u.payload_exited.signaled ? msg->u.payload_exited.signal : msg->u.payload_exited.exit_code);
		else if (msg->u.payload_exited.signaled)
			log_warn("node %ld's payload was killed by signal %d", p->node_index, msg->u.payload_exited.signal);
		else if (msg->u.payload_exited.exit_code != 0)
			log_warn("node %ld's payload failed with status %d", p->node_index, msg->u.payload_exited.exit_code);
		else
			log_info("node %ld's payload exited with status 0", p->node_index);
		maybe_stop(rv);
		return;
	case PROTO_MSG_DRAINING:
		log_warn("node %ld is draining: %s%s%s", p->node_index, msg->u.draining.reason,
			 msg->u.draining.deadline ? ", deadline " : "", msg->u.draining.deadline ? msg->u.draining.deadline : "");
		return;
	case PROTO_MSG_ERROR:
		log_warn("node %ld reports an error: %s %s", p->node_index, msg->u.error.code, msg->u.error.message);
		drop_peer(p, "it reported an error");
		return;
	default: {
		/* PROTOCOL.md §4: valid but not ours to receive (accept, a second register...). */
		char why[96];
		snprintf(why, sizeof why, "it sent an unexpected \"%s\"", proto_msg_type_name(msg->type));
		send_error_and_drop(p, PROTO_CODE_UNEXPECTED, why + 3, why);
		return;
	}
	}
}

static void on_peer_io(struct loop *loop, int fd, uint32_t events, void *ctx)
{
	struct peer *p = ctx;
	(void)loop;
	(void)fd;
	if (events & EPOLLOUT) {
		int err = proto_frame_flush(&p->conn);
		if (err != PROTO_OK && err != PROTO_AGAIN) {
			drop_peer(p, proto_strerror(err));
			return;
		}
		update_interest(p);
	}
	while (p->connected) {
		cJSON *json = NULL;
		struct proto_msg msg;
		int err = proto_frame_recv(&p->conn, &json);
		if (err == PROTO_AGAIN)
			return;
		if (err == PROTO_CLOSED) {
			drop_peer(p, "it closed the connection");
			return;
		}
		if (err == PROTO_OK)
			err = proto_msg_parse(json, &msg);
		if (err != PROTO_OK) {
			cJSON_Delete(json);
			const char *code = err == PROTO_ERR_BAD_MESSAGE ? PROTO_CODE_BAD_MESSAGE : PROTO_CODE_BAD_FRAME;
			if (p->state != PEER_REGISTERED)
				refused(p->rv, false, "refused peer %s: %s", p->remote, proto_strerror(err));
			send_error_and_drop(p, code, proto_strerror(err), proto_strerror(err));
			return;
		}
		p->last_heard_ms = util_now_ms();
		switch (p->state) {
		case PEER_HELLO:
			on_hello(p, &msg);
			break;
		case PEER_AUTH:
			on_auth(p, &msg);
			break;
		case PEER_REGISTER:
			on_register(p, &msg);
			break;
		case PEER_REGISTERED:
			on_child_message(p, &msg);
			break;
		}
		cJSON_Delete(json);
	}
}

static void on_accept(struct loop *loop, int fd, uint32_t events, void *ctx)
{
	struct rendezvous *rv = ctx;
	(void)events;
	for (;;) {
		/* Unauthenticated peers cost memory, so at the cap we stop accepting: the
		 * newcomers wait in the listen backlog (TCP keeps them, their agents are
		 * patient) until handshakes finish or time out. */
		if (rv->pending >= rv->max_pending) {
			/* A flood hits the cap again and again: one warning per window. */
			int64_t now = util_now_ms();
			if (rv->cap_warned_ms == 0 || now - rv->cap_warned_ms >= REFUSALS_WINDOW_MS) {
				rv->cap_warned_ms = now;
				log_warn("%zu handshakes in progress: pausing accept until some finish", rv->pending);
			} else {
				log_debug("%zu handshakes in progress: pausing accept until some finish", rv->pending);
			}
			loop_remove(loop, fd);
			rv->accept_paused = true;
			return;
		}
		struct sockaddr_in from;
		socklen_t length = sizeof from;
		int conn = accept4(fd, (struct sockaddr *)&from, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (conn < 0) {
			/* The listen fd is level-triggered: a connection we cannot take for want
			 * of descriptors or memory stays readable, and accepting again at once
			 * would spin. Rest a while; handshakes that end meanwhile free some. */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				if (!rv->accept_starved)
					log_warn("accept: %m: pausing accept, retrying every %d ms", ACCEPT_RETRY_MS);
				rv->accept_starved = true;
				loop_remove(loop, fd);
				rv->accept_paused = true;
				loop_timer_arm(loop, &rv->accept_timer, ACCEPT_RETRY_MS, on_accept_timer, rv);
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				log_warn("accept: %m");
			}
			return;
		}
		if (rv->accept_starved)
			log_info("accepting connections again");
		rv->accept_starved = false;
		char ip[INET_ADDRSTRLEN] = "?";
		inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
		struct peer *p = calloc(1, sizeof *p);
		if (p == NULL) {
			close(conn);
			continue;
		}
		p->rv = rv;
		p->state = PEER_HELLO;
		p->accepted_ms = p->last_heard_ms = util_now_ms();
		p->node_index = -1;
		snprintf(p->remote, sizeof p->remote, "%s:%u", ip, ntohs(from.sin_port));
		proto_frame_conn_init(&p->conn, conn);
		int one = 1;
		setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (loop_add(loop, conn, EPOLLIN, on_peer_io, p) != BA_OK) {
			close(conn);
			free(p);
			continue;
		}
		p->connected = true;
		p->next = rv->peers;
		rv->peers = p;
		rv->pending++;
	}
}

/* ---- timers: handshake deadlines, heartbeats, silence ---- */

static void broadcast(struct rendezvous *rv, int (*build)(void *arg, cJSON **out), void *arg)
{
	for (struct peer *p = rv->peers, *next; p; p = next) {
		next = p->next; /* send_to may drop and free p */
		if (p->connected && p->state == PEER_REGISTERED) {
			cJSON *msg = NULL;
			int err = build(arg, &msg);
			send_to(p, msg, err);
		}
	}
}

static int build_heartbeat(void *arg, cJSON **out)
{
	(void)arg;
	return proto_msg_heartbeat(out);
}

static void on_sweep(struct loop *loop, void *ctx)
{
	struct rendezvous *rv = ctx;
	int64_t now = util_now_ms();
	char why[96];
	for (struct peer *p = rv->peers, *next; p; p = next) {
		next = p->next;
		if (p->dead) {
			unlink_peer(rv, p);
			free(p);
			continue;
		}
		if (!p->connected)
			continue;
		if (p->state != PEER_REGISTERED && now - p->accepted_ms > PROTO_HANDSHAKE_TIMEOUT_MS) {
			refused(rv, false, "dropped peer %s: handshake not completed within %d s", p->remote,
				PROTO_HANDSHAKE_TIMEOUT_MS / 1000);
			send_error_and_drop(p, PROTO_CODE_TIMEOUT, "handshake not completed in time", "handshake timeout");
		} else if (p->state == PEER_REGISTERED && now - p->last_heard_ms > PROTO_HEARTBEAT_MISSES * rv->cfg->heartbeat_ms) {
			snprintf(why, sizeof why, "no heartbeat for %.3g s", (double)(now - p->last_heard_ms) / 1000.0);
			drop_peer(p, why);
		}
	}
	if (now - rv->refusals_since_ms >= REFUSALS_WINDOW_MS)
		refusals_summary(rv, now);
	if (now - rv->last_heartbeat_ms >= rv->cfg->heartbeat_ms) {
		rv->last_heartbeat_ms = now;
		broadcast(rv, build_heartbeat, NULL);
	}
	loop_timer_arm(loop, &rv->sweep_timer, rv->sweep_ms, on_sweep, rv);
}

/* ---- the main payload ---- */

static int list_missing(const struct rendezvous *rv, char *out, size_t size)
{
	size_t used = 0;
	int missing = 0;
	out[0] = '\0';
	for (long i = 0; i < rv->cfg->batch.num_nodes; i++) {
		if (i == rv->cfg->batch.main_node_index || rv->by_index[i] != NULL)
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
		if (p && p->connected && getsockname(p->conn.fd, (struct sockaddr *)&local, &length) == 0 &&
		    inet_ntop(AF_INET, &local.sin_addr, rv->main_addr, sizeof rv->main_addr) != NULL)
			return BA_OK;
	}
	return address_first_usable(rv->main_addr, sizeof rv->main_addr);
}

/* One address a line, node-index order, main included: the form both Open MPI and
 * MPICH (Hydra) accept as a hostfile. */
static enum ba_status write_hostfile(struct rendezvous *rv, char **nodes_out)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	size_t capacity = (size_t)rv->cfg->batch.num_nodes * sizeof rv->by_index[0]->address + 1;
	char *nodes = calloc(1, capacity);
	size_t used = 0;
	enum ba_status rc = BA_EX_OSERR;
	snprintf(rv->hostfile, sizeof rv->hostfile, "%s/batch-agent-hostfile.XXXXXX", dir);
	int fd = mkstemp(rv->hostfile);
	if (fd < 0 || nodes == NULL) {
		log_error("cannot create the hostfile in %s: %m", dir);
		rv->hostfile[0] = '\0';
		goto out;
	}
	fchmod(fd, 0644);
	for (long i = 0; i < rv->cfg->batch.num_nodes; i++) {
		const char *address = i == rv->cfg->batch.main_node_index ? rv->main_addr
				      : rv->by_index[i]                    ? rv->by_index[i]->address
									    : NULL;
		if (address == NULL)
			continue;
		used += (size_t)snprintf(nodes + used, capacity - used, "%s%s", used ? "," : "", address);
		if (dprintf(fd, "%s\n", address) < 0) {
			log_error("writing the hostfile %s: %m", rv->hostfile);
			goto out;
		}
	}
	*nodes_out = nodes;
	nodes = NULL;
	rc = BA_OK;
out:
	free(nodes);
	if (fd >= 0)
		close(fd);
	return rc;
}

static void begin_shutdown(struct rendezvous *rv, const char *reason);

static void start_main_payload(struct rendezvous *rv)
{
	char *nodes = NULL;
	struct payload payload = { 0 };
	rv->phase = PHASE_RUNNING;
	loop_timer_cancel(rv->loop, &rv->wait_timer);
	enum ba_status rc = main_address(rv);
	if (rc == BA_OK)
		rc = write_hostfile(rv, &nodes);
	if (rc == BA_OK) {
		struct launch_vars vars = { .node_addr = rv->main_addr, .hostfile = rv->hostfile, .nodes = nodes, .handover_fd = -1 };
		rc = launch_prepare(&payload, rv->cfg, &vars);
	}
	if (rc == BA_OK) {
		log_info("all nodes present: starting the main payload with nodes %s", nodes);
		/* The payload starts with the descriptor limit we inherited, not the one we
		 * raised for ourselves (some programs walk every possible descriptor), as
		 * long as what we hold leaves the spawn room to open its own. */
		struct rlimit ours;
		bool fits = rv->nofile.rlim_cur == RLIM_INFINITY ||
			    (rlim_t)(rv->registered + (long)rv->pending + FD_SLACK) < rv->nofile.rlim_cur;
		bool swapped = fits && getrlimit(RLIMIT_NOFILE, &ours) == 0 && setrlimit(RLIMIT_NOFILE, &rv->nofile) == 0;
		rc = supervise_spawn(rv->sv, &payload);
		if (swapped && setrlimit(RLIMIT_NOFILE, &ours) < 0)
			log_warn("cannot restore the raised descriptor limit: %m");
	}
	if (rc != BA_OK) {
		rv->exit_status = rc;
		rv->main_finished = true;
		begin_shutdown(rv, "the main payload could not start");
	}
	launch_release(&payload);
	free(nodes);
}

static void on_wait_timer(struct loop *loop, void *ctx)
{
	struct rendezvous *rv = ctx;
	char missing[512];
	(void)loop;
	long present = rv->registered + 1;
	long needed = rv->cfg->min_nodes > 0 ? rv->cfg->min_nodes : rv->cfg->batch.num_nodes;
	list_missing(rv, missing, sizeof missing);
	if (present >= needed) {
		log_warn("starting with %ld of %ld nodes after %.3g s (--min-nodes %ld); missing node%s %s", present,
			 rv->cfg->batch.num_nodes, (double)rv->cfg->wait_timeout_ms / 1000.0, needed,
			 strchr(missing, ',') ? "s" : "", missing);
		start_main_payload(rv);
		return;
	}
	log_error("node%s %s did not register within %.3g s: %ld of %ld nodes present, %ld needed (--min-nodes)",
		  strchr(missing, ',') ? "s" : "", missing, (double)rv->cfg->wait_timeout_ms / 1000.0, present,
		  rv->cfg->batch.num_nodes, needed);
	rv->exit_status = BA_EX_UNAVAILABLE;
	rv->main_finished = true;
	begin_shutdown(rv, "the rendezvous timed out");
}

/* ---- shutdown ---- */

static int build_shutdown(void *arg, cJSON **out)
{
	struct rendezvous *rv = arg;
	return proto_msg_shutdown(rv->cfg->grace_ms, "the main node is finishing", out);
}

static void on_report_timer(struct loop *loop, void *ctx)
{
	struct rendezvous *rv = ctx;
	(void)loop;
	for (struct peer *p = rv->peers; p; p = p->next)
		if (p->state == PEER_REGISTERED && p->connected && !p->exit_reported)
			log_warn("node %ld (%s) sent no exit report within the grace period", p->node_index, p->address);
	loop_stop(rv->loop, rv->exit_status);
}

static void maybe_stop(struct rendezvous *rv)
{
	if (rv->phase != PHASE_SHUTTING_DOWN || !rv->main_finished)
		return;
	for (struct peer *p = rv->peers; p; p = p->next)
		if (p->state == PEER_REGISTERED && p->connected && !p->exit_reported)
			return;
	loop_stop(rv->loop, rv->exit_status);
}

static void begin_shutdown(struct rendezvous *rv, const char *reason)
{
	if (rv->phase == PHASE_SHUTTING_DOWN)
		return;
	rv->phase = PHASE_SHUTTING_DOWN;
	loop_timer_cancel(rv->loop, &rv->wait_timer);
	loop_remove(rv->loop, rv->listen_fd);
	if (rv->registered > 0)
		log_info("%s: telling %ld node%s to shut down", reason, rv->registered, rv->registered == 1 ? "" : "s");
	broadcast(rv, build_shutdown, rv);
	loop_timer_arm(rv->loop, &rv->report_timer, rv->cfg->grace_ms + REPORT_MARGIN_MS, on_report_timer, rv);
	maybe_stop(rv);
}

static void on_main_exited(void *ctx, int exit_status, int wait_status)
{
	struct rendezvous *rv = ctx;
	(void)wait_status;
	log_info("the main payload exited with status %d", exit_status);
	/* The report timer may stop us before on_main_finished, while what the payload
	 * left behind is still being killed: its status must be ours by then. */
	rv->exit_status = exit_status;
	begin_shutdown(rv, "the main payload ended");
}

static void on_main_finished(void *ctx, int exit_status)
{
	struct rendezvous *rv = ctx;
	rv->exit_status = exit_status;
	rv->main_finished = true;
	maybe_stop(rv);
}

static void on_interrupted(void *ctx, int sig)
{
	struct rendezvous *rv = ctx;
	rv->exit_status = BA_EX_SIGNAL_BASE + sig;
	rv->main_finished = true;
	begin_shutdown(rv, "interrupted");
}

/* ---- set-up ---- */

static enum ba_status listen_on(long port, int *fd_out)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				       .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, 4096) < 0) {
		log_error("cannot listen on port %ld (--port): %m", port);
		if (fd >= 0)
			close(fd);
		return errno == EADDRINUSE || errno == EACCES ? BA_EX_CONFIG : BA_EX_OSERR;
	}
	*fd_out = fd;
	return BA_OK;
}

/* Every child holds a descriptor for the whole job, every handshake one for a while:
 * take all the descriptors the hard limit allows, and keep the handshakes within what
 * is left after the children, so that accept(2) does not run out in the first place. */
static enum ba_status size_pending(struct rendezvous *rv)
{
	size_t wanted = (size_t)rv->cfg->batch.num_nodes * 2 + 64;
	size_t reserved = (size_t)rv->cfg->batch.num_nodes + FD_SLACK;
	struct rlimit raised;
	if (getrlimit(RLIMIT_NOFILE, &rv->nofile) < 0) {
		log_error("getrlimit(RLIMIT_NOFILE): %m");
		return BA_EX_OSERR;
	}
	raised = rv->nofile;
	if (raised.rlim_cur < raised.rlim_max) {
		raised.rlim_cur = raised.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &raised) < 0) {
			log_warn("cannot raise the descriptor limit to %llu: %m", (unsigned long long)raised.rlim_max);
			raised = rv->nofile;
		}
	}
	rv->max_pending = wanted;
	if (raised.rlim_cur != RLIM_INFINITY && raised.rlim_cur < reserved + wanted) {
		rv->max_pending = raised.rlim_cur > reserved + 1 ? (size_t)raised.rlim_cur - reserved : 1;
		log_warn("descriptor limit %llu: at most %zu handshakes at once (raise ulimit -n for a %ld-node job)",
			 (unsigned long long)raised.rlim_cur, rv->max_pending, rv->cfg->batch.num_nodes);
	}
	return BA_OK;
}

enum ba_status rendezvous_run(const struct config *cfg)
{
	struct rendezvous rv = { .cfg = cfg, .listen_fd = -1, .children = cfg->batch.num_nodes - 1 };
	struct supervise_opts opts = supervise_opts_from_config(cfg);
	struct supervise_hooks hooks = { .ctx = &rv, .exited = on_main_exited, .finished = on_main_finished,
					 .interrupted = on_interrupted };
	char prefix[256];
	enum ba_status rc;
	if (cfg->exec) {
		log_error("--exec is not available in the main role: the rendezvous keeps the children's connections");
		return BA_EX_CONFIG;
	}
	if (cfg->batch.job_id != NULL) {
		const char *hash = strchr(cfg->batch.job_id, '#');
		size_t length = hash ? (size_t)(hash - cfg->batch.job_id) : strlen(cfg->batch.job_id);
		snprintf(prefix, sizeof prefix, "%.*s#", (int)length, cfg->batch.job_id);
		rv.job_prefix = prefix;
		rv.job_prefix_length = strlen(prefix);
	} else {
		log_warn("AWS_BATCH_JOB_ID is not set: registrations are not checked against the job id");
	}
	rc = size_pending(&rv);
	if (rc != BA_OK)
		return rc;
	rv.by_index = calloc((size_t)cfg->batch.num_nodes, sizeof *rv.by_index);
	rc = rv.by_index ? cookie_load(cfg, &rv.cookie) : BA_EX_OSERR;
	if (rc == BA_OK)
		rc = listen_on(cfg->port, &rv.listen_fd);
	if (rc == BA_OK)
		rc = loop_create(&rv.loop);
	if (rc == BA_OK)
		rc = supervise_create(&rv.sv, rv.loop, &opts, &hooks);
	if (rc == BA_OK)
		rc = loop_add(rv.loop, rv.listen_fd, EPOLLIN, on_accept, &rv);
	if (rc != BA_OK)
		goto out;
	log_info("rendezvous listening on port %ld for %ld child node%s (wait up to %.3g s)", cfg->port, rv.children,
		 rv.children == 1 ? "" : "s", (double)cfg->wait_timeout_ms / 1000.0);
	rv.last_heartbeat_ms = rv.refusals_since_ms = util_now_ms();
	/* Heartbeats go out from the sweep, so it must tick well within an interval: at
	 * SWEEP_MS alone, a heartbeat under ~84 ms would leave the workers silent for 3. */
	rv.sweep_ms = cfg->heartbeat_ms / 3 < SWEEP_MS ? cfg->heartbeat_ms / 3 : SWEEP_MS;
	if (rv.sweep_ms < 1)
		rv.sweep_ms = 1;
	loop_timer_arm(rv.loop, &rv.sweep_timer, rv.sweep_ms, on_sweep, &rv);
	loop_timer_arm(rv.loop, &rv.wait_timer, cfg->wait_timeout_ms, on_wait_timer, &rv);
	if (rv.children == 0)
		start_main_payload(&rv);
	rc = loop_run(rv.loop);
	refusals_summary(&rv, util_now_ms());
	/* Whatever is still queued (shutdown notices) goes out before we close. */
	for (struct peer *p = rv.peers; p; p = p->next)
		if (p->connected)
			proto_frame_flush(&p->conn);
out:
	while (rv.peers) {
		struct peer *p = rv.peers;
		rv.peers = p->next;
		if (p->connected) {
			close(p->conn.fd);
			proto_frame_conn_free(&p->conn);
		}
		free(p);
	}
	if (rv.hostfile[0])
		unlink(rv.hostfile);
	if (rv.listen_fd >= 0)
		close(rv.listen_fd);
	supervise_free(rv.sv);
	loop_destroy(rv.loop);
	cookie_wipe(&rv.cookie);
	free(rv.by_index);
	return rc;
}
