/* Stage 6: the worker's life alongside its payload.
 *
 *   accept {roster: true}  (version 3, an MNP main)
 *     W <- M  roster chunks, until num_nodes entries      (the peer view, peerview.h)
 *     W       start the payload with the view             (--payload-start roster)
 *     W -> M  payload_started
 *     W       --ready-port: wait until it accepts on 127.0.0.1:PORT
 *     W -> M  ready                                       (the main payload may start)
 *   accept {}  (version 2, or a pool): the payload starts at once, as before.
 *   then: heartbeats both ways, payload_exited, shutdown from the manager. */
#include "session.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "address.h"
#include "confine.h"
#include "conn.h"
#include "launch.h"
#include "log.h"
#include "peerview.h"
#include "status.h"
#include "supervise.h"
#include "util.h"

#define FINAL_FLUSH_MS 2000
#define READY_POLL_MS 100    /* --ready-port: how often we try the port */
#define READY_CONNECT_MS 200 /* one try's bound: a full backlog drops SYNs */

/* The roster as it arrives (PROTOCOL.md §4.1): chunks in order, num_nodes in all. */
struct roster {
	struct peerview_node *nodes;
	int64_t total, have;
	size_t rank;
	bool complete;
};

struct session {
	const struct config *cfg;
	const char *peer;
	struct loop *loop;
	struct supervisor *sv;
	struct conn conn;
	int64_t heartbeat_ms;
	struct loop_timer heartbeat_timer;
	const struct manager_address *manager;
	const char *node_addr;
	bool wants_ready;     /* version 3 with a roster: tell the manager when we are ready */
	bool spawned;         /* the payload started (it may have ended since) */
	bool ready_sent;
	bool probe_failed_logged; /* --ready-port could not be tried: said once */
	struct loop_timer ready_timer;
	struct roster roster;
	struct peer_view view;
	bool shutdown_requested;
	bool manager_lost;
	bool protocol_error; /* the manager broke the protocol: exit 76 rather than 69 */
};

/* Out of the loop; the descriptor stays open until we exit (after a FIN, if any, the
 * manager knows already). */
static void disconnect(struct session *s)
{
	loop_timer_cancel(s->loop, &s->heartbeat_timer);
	loop_timer_cancel(s->loop, &s->ready_timer);
	if (s->conn.attached)
		conn_end(&s->conn, NULL, NULL);
}

static void lose_manager(struct session *s, const char *why)
{
	disconnect(s);
	if (!s->spawned && !s->shutdown_requested) {
		/* Waiting for the roster: without a manager, no payload will ever start. */
		log_error("lost the manager at %s (%s) before the roster came: no payload started", s->peer, why);
		loop_stop(s->loop, s->protocol_error ? BA_EX_PROTOCOL : BA_EX_UNAVAILABLE);
		return;
	}
	/* After a shutdown request the manager is expected to leave. */
	if (s->shutdown_requested || !supervise_running(s->sv)) {
		log_debug("the manager at %s closed (%s) while we finish", s->peer, why);
		return;
	}
	s->manager_lost = true;
	if (s->cfg->on_manager_loss == MANAGER_LOSS_CONTINUE) {
		log_warn("lost the manager at %s (%s): the payload carries on (--on-manager-loss continue)", s->peer, why);
		return;
	}
	log_error("lost the manager at %s (%s): stopping the payload (--on-manager-loss exit)", s->peer, why);
	if (supervise_running(s->sv))
		supervise_terminate(s->sv, SIGTERM, s->cfg->grace_ms, "manager lost");
}

/* The conn told the manager already, where the error was its (proto_err_code). */
static void on_lost(struct conn *c, enum proto_err err, void *ctx)
{
	struct session *s = ctx;
	(void)c;
	if (err == PROTO_CLOSED) {
		lose_manager(s, "it closed the connection");
		return;
	}
	if (err == PROTO_ERR_TOO_LARGE || err == PROTO_ERR_BAD_JSON || err == PROTO_ERR_TRUNCATED ||
	    err == PROTO_ERR_BAD_MESSAGE || err == PROTO_ERR_FORGED) {
		log_error("the manager at %s broke the protocol: %s", s->peer, proto_strerror(err));
		s->protocol_error = true;
	}
	lose_manager(s, proto_strerror(err));
}

static void send_or_lose(struct session *s, cJSON *msg, enum proto_err build_err)
{
	conn_send(&s->conn, msg, build_err);
}

static void on_heartbeat_timer(struct loop *loop, void *ctx)
{
	struct session *s = ctx;
	if (util_now_ms() - s->conn.last_heard_ms > PROTO_HEARTBEAT_MISSES * s->heartbeat_ms) {
		lose_manager(s, "no heartbeat");
		return;
	}
	cJSON *msg = NULL;
	enum proto_err err = proto_msg_heartbeat(&msg);
	send_or_lose(s, msg, err);
	if (s->conn.attached)
		loop_timer_arm(loop, &s->heartbeat_timer, s->heartbeat_ms, on_heartbeat_timer, s);
}

static void on_shutdown(struct session *s, const struct proto_msg *msg)
{
	const char *reason = msg->u.shutdown.reason, *sep = reason[0] ? ": " : "";
	/* A shutdown turns the payload's end into exit 0 only when it is what ended the
	 * payload: one that crossed our payload_exited must not hide a failure. */
	if (!s->spawned) {
		log_info("the manager asks us to shut down%s%s before the roster came: no payload started", sep, reason);
		s->shutdown_requested = true;
		disconnect(s);
		loop_stop(s->loop, BA_OK);
		return;
	}
	if (!supervise_running(s->sv)) {
		log_info("the manager asks us to shut down%s%s: the payload has already ended", sep, reason);
		return;
	}
	log_info("the manager asks us to shut down%s%s (grace %.3g s)", sep, reason,
		 (double)msg->u.shutdown.grace_ms / 1000.0);
	s->shutdown_requested = true;
	supervise_terminate(s->sv, SIGTERM, msg->u.shutdown.grace_ms, "shutdown from the manager");
}

/* PROTOCOL.md §1, §4: tell the manager what it did wrong, then treat it as lost. */
static void broke_protocol(struct session *s, const char *code, const char *what)
{
	log_error("the manager at %s broke the protocol: %s", s->peer, what);
	conn_end(&s->conn, code, what);
	s->protocol_error = true;
	lose_manager(s, "it broke the protocol");
}

/* ---- the roster, then the payload ---- */

static enum ba_status launch_payload(struct session *s, bool with_view);

static void send_ready(struct session *s)
{
	cJSON *msg = NULL;
	loop_timer_cancel(s->loop, &s->ready_timer);
	if (s->ready_sent || !s->wants_ready || !s->conn.attached)
		return;
	s->ready_sent = true;
	enum proto_err err = proto_msg_ready(&msg);
	send_or_lose(s, msg, err);
	log_info("ready: told the manager at %s", s->peer);
}

enum probe { PROBE_ACCEPTS, PROBE_NOT_YET, PROBE_FAILED };

/* A blocking connect to loopback is answered at once (accepted or refused); the
 * timeout bounds the case of a full backlog, where the SYN is dropped. PROBE_FAILED:
 * no socket to try with (errno says why), which no payload can cure. */
static enum probe port_accepts(long port)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval bound = { .tv_sec = 0, .tv_usec = READY_CONNECT_MS * 1000 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return PROBE_FAILED;
	bool ok = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound) == 0 &&
		  connect(fd, (struct sockaddr *)&to, sizeof to) == 0;
	close(fd);
	return ok ? PROBE_ACCEPTS : PROBE_NOT_YET;
}

static void on_ready_timer(struct loop *loop, void *ctx)
{
	struct session *s = ctx;
	if (!supervise_running(s->sv) || s->ready_sent)
		return;
	enum probe probe = port_accepts(s->cfg->ready_port);
	if (probe == PROBE_ACCEPTS) {
		log_info("the payload accepts connections on port %ld", s->cfg->ready_port);
		send_ready(s);
		return;
	}
	/* Out of descriptors, say: the node will not get ready, and the main's timeout
	 * must not be the only word on why. Once; the next tries may find one free. */
	if (probe == PROBE_FAILED && !s->probe_failed_logged) {
		log_error("cannot try --ready-port %ld: socket: %m; still trying", s->cfg->ready_port);
		s->probe_failed_logged = true;
	}
	loop_timer_arm(loop, &s->ready_timer, READY_POLL_MS, on_ready_timer, s);
}

/* Ready means started, or with --ready-port, accepting: an sshd that mpirun will use. */
static void await_ready(struct session *s)
{
	if (!s->wants_ready || s->ready_sent)
		return;
	if (s->cfg->ready_port == 0) {
		send_ready(s);
		return;
	}
	log_info("waiting for the payload to accept connections on port %ld (--ready-port)", s->cfg->ready_port);
	on_ready_timer(s->loop, s);
}

/* The roster's chunks come in order and agree; the entries are in node-index order,
 * and one of them is this node. Anything else is the manager breaking §4.1. */
static const char *take_chunk(struct session *s, const struct proto_msg *msg)
{
	struct roster *r = &s->roster;
	if (!s->wants_ready || r->complete)
		return "a roster we were not promised";
	if (r->nodes == NULL) {
		r->nodes = calloc((size_t)msg->u.roster.num_nodes, sizeof *r->nodes);
		if (r->nodes == NULL)
			return "a roster too large for our memory";
		r->total = msg->u.roster.num_nodes;
	}
	if (msg->u.roster.num_nodes != r->total || msg->u.roster.offset != r->have)
		return "a roster chunk out of order";
	for (size_t i = 0; i < msg->u.roster.count; i++) {
		const struct proto_roster_node *in = &msg->u.roster.nodes[i];
		struct peerview_node *out = &r->nodes[r->have];
		if ((r->have > 0 && in->node_index <= out[-1].index) || !address_valid_advertised(in->address))
			return "a roster entry out of node-index order, or with an unusable address";
		out->index = (long)in->node_index;
		out->cpus = in->cpus;
		if ((out->address = strdup(in->address)) == NULL)
			return "a roster too large for our memory";
		if (out->index == s->cfg->batch.node_index)
			r->rank = (size_t)r->have;
		r->have++;
	}
	r->complete = r->have == r->total;
	if (r->complete && r->nodes[r->rank].index != s->cfg->batch.node_index)
		return "a roster without this node";
	return NULL;
}

static void on_roster(struct session *s, const struct proto_msg *msg)
{
	const char *wrong = take_chunk(s, msg);
	if (wrong != NULL) {
		broke_protocol(s, PROTO_CODE_BAD_MESSAGE, wrong);
		return;
	}
	if (!s->roster.complete)
		return;
	log_info("roster: %lld nodes, this one is rank %zu", (long long)s->roster.total, s->roster.rank);
	if (supervise_running(s->sv) || s->cfg->payload_start == PAYLOAD_START_REGISTERED)
		return; /* started at registration: the payload has no peer view */
	launch_payload(s, true);
}

static void free_roster(struct roster *r)
{
	for (int64_t i = 0; r->nodes != NULL && i < r->have; i++)
		free((char *)r->nodes[i].address);
	free(r->nodes);
	*r = (struct roster){ 0 };
}

static void on_message(struct conn *c, const struct proto_msg *msg, void *ctx)
{
	struct session *s = ctx;
	(void)c;
	switch (msg->type) {
	case PROTO_MSG_HEARTBEAT:
		return;
	case PROTO_MSG_SHUTDOWN:
		on_shutdown(s, msg);
		return;
	case PROTO_MSG_ERROR:
		log_error("the manager reports an error: %s%s%s", msg->u.error.code, msg->u.error.message[0] ? ": " : "",
			  msg->u.error.message);
		/* It says our frames broke the protocol: on a sealed session, frames altered on
		 * the way (our own codec sends none that break it). As when we catch one: 76. */
		if (strcmp(msg->u.error.code, PROTO_CODE_BAD_FRAME) == 0 ||
		    strcmp(msg->u.error.code, PROTO_CODE_BAD_MESSAGE) == 0 ||
		    strcmp(msg->u.error.code, PROTO_CODE_UNEXPECTED) == 0)
			s->protocol_error = true;
		lose_manager(s, "it reported an error");
		return;
	case PROTO_MSG_ROSTER:
		on_roster(s, msg);
		return;
	default: {
		char what[64];
		snprintf(what, sizeof what, "unexpected \"%s\"", proto_msg_type_name(msg->type));
		broke_protocol(s, PROTO_CODE_UNEXPECTED, what);
		return;
	}
	}
}

static void on_started(void *ctx, pid_t pid)
{
	struct session *s = ctx;
	cJSON *msg = NULL;
	/* The payload is forked and the connection is up: the steady state begins. */
	confine_steady_state();
	enum proto_err err = proto_msg_payload_started(pid, &msg);
	send_or_lose(s, msg, err);
	await_ready(s);
}

/* The manager hears what really happened: --remap-exit is about the container's exit
 * status (what Batch sees), not about what the payload did. */
static void on_exited(void *ctx, int exit_status, int wait_status)
{
	struct session *s = ctx;
	cJSON *msg = NULL;
	(void)exit_status;
	enum proto_err err = WIFSIGNALED(wait_status) ? proto_msg_payload_exited_signal(WTERMSIG(wait_status), &msg)
					   : proto_msg_payload_exited_code(WEXITSTATUS(wait_status), &msg);
	send_or_lose(s, msg, err);
}

/* The manager hears of a Spot notice before the payload is gone, so it can stop
 * giving this node work. */
static void on_spot_notice(void *ctx, const char *type, const char *action, const char *time)
{
	struct session *s = ctx;
	cJSON *msg = NULL;
	(void)action;
	const char *reason = strcmp(type, "instance-action") == 0 ? "spot_interruption" : "rebalance";
	enum proto_err err = proto_msg_draining(reason, time, &msg);
	if (err == PROTO_ERR_INVALID) /* a time that is not RFC 3339: send the notice without it */
		err = proto_msg_draining(reason, NULL, &msg);
	send_or_lose(s, msg, err);
}

static void on_finished(void *ctx, int exit_status)
{
	struct session *s = ctx;
	int code = exit_status;
	if (s->conn.attached) {
		/* Our last words (payload_exited) must reach the manager before we go. */
		proto_frame_flush_wait(&s->conn.pc, util_now_ms() + FINAL_FLUSH_MS);
		disconnect(s);
	}
	if (s->shutdown_requested && !supervise_grace_expired(s->sv))
		code = BA_OK;
	else if (s->manager_lost && s->cfg->on_manager_loss == MANAGER_LOSS_EXIT)
		code = s->protocol_error ? BA_EX_PROTOCOL : BA_EX_UNAVAILABLE;
	loop_stop(s->loop, code);
}

/* The sealed session as PROTOCOL.md §4 gives it to an --exec payload: one JSON object
 * in a sealed memfd (inherited: no MFD_CLOEXEC), never in the environment or argv. */
static char *session_text(const struct proto_conn *conn)
{
	char send_key[PROTO_HEX_LEN + 1], recv_key[PROTO_HEX_LEN + 1];
	cJSON *doc = cJSON_CreateObject();
	char *text = NULL;
	proto_auth_hex_encode(conn->tx.key, PROTO_KEY_LEN, send_key, sizeof send_key);
	proto_auth_hex_encode(conn->rx.key, PROTO_KEY_LEN, recv_key, sizeof recv_key);
	if (doc != NULL && cJSON_AddStringToObject(doc, "cipher", "chacha20-poly1305") &&
	    cJSON_AddStringToObject(doc, "send_key", send_key) && cJSON_AddNumberToObject(doc, "send_seq", (double)conn->tx.seq) &&
	    cJSON_AddStringToObject(doc, "recv_key", recv_key) && cJSON_AddNumberToObject(doc, "recv_seq", (double)conn->rx.seq))
		text = cJSON_PrintUnformatted(doc);
	/* cJSON keeps copies of the strings: wipe them before they are freed. */
	for (cJSON *item = doc ? doc->child : NULL; item; item = item->next)
		if (cJSON_IsString(item))
			proto_auth_wipe(item->valuestring, strlen(item->valuestring));
	cJSON_Delete(doc);
	proto_auth_wipe(send_key, sizeof send_key);
	proto_auth_wipe(recv_key, sizeof recv_key);
	return text;
}

static enum ba_status session_memfd(const struct proto_conn *conn, int *out)
{
	char *text = session_text(conn);
	if (text == NULL) {
		log_error("out of memory writing the session for the payload");
		return BA_EX_OSERR;
	}
	size_t length = strlen(text);
	int fd = memfd_create("batch-agent-session", MFD_ALLOW_SEALING);
	ssize_t n = fd >= 0 ? write(fd, text, length) : -1;
	proto_auth_wipe(text, length);
	free(text);
	if (fd < 0 || n != (ssize_t)length ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0 ||
	    lseek(fd, 0, SEEK_SET) != 0) {
		log_error("handing the session to the payload (memfd): %m");
		if (fd >= 0)
			close(fd);
		return BA_EX_OSERR;
	}
	*out = fd;
	return BA_OK;
}

static enum ba_status exec_with_connection(const struct config *cfg, struct proto_conn *conn, int64_t heartbeat_ms,
				const char *manager, const char *node_addr)
{
	struct payload payload;
	/* The payload now speaks the steady state itself (PROTOCOL.md §4): it needs the
	 * interval the manager chose, or it will be dropped as silent. */
	char heartbeat_entry[64], session_entry[64];
	const char *extra[3] = { heartbeat_entry, session_entry, NULL };
	snprintf(heartbeat_entry, sizeof heartbeat_entry, "BATCH_AGENT_HEARTBEAT_MS=%lld", (long long)heartbeat_ms);
	/* Both directions are sealed: the payload continues the session where we stop. */
	int session_fd = -1;
	enum ba_status rc = session_memfd(conn, &session_fd);
	if (rc != BA_OK)
		return rc;
	snprintf(session_entry, sizeof session_entry, "BATCH_AGENT_SESSION_FD=%d", session_fd);
	/* The codec never reads past a frame, so nothing of the manager's is lost in our
	 * buffers; what we queued must be out before the payload takes over. */
	if (proto_frame_flush_wait(conn, util_now_ms() + FINAL_FLUSH_MS) != PROTO_OK)
		log_warn("could not flush the connection before handing it over");
	/* Programs expect the descriptors they inherit to block. */
	fcntl(conn->fd, F_SETFL, fcntl(conn->fd, F_GETFL) & ~O_NONBLOCK);
	struct launch_vars vars = { .manager = manager, .node_addr = node_addr, .handover_fd = conn->fd,
				    .extra_env = extra };
	rc = launch_prepare(&payload, cfg, &vars);
	if (rc == BA_OK)
		rc = launch_exec(&payload);
	launch_release(&payload);
	close(session_fd);
	return rc;
}

/* No payload will start here (it could not, or its hostfile could not be written):
 * the manager hears why, as the payload's status, and we end with it. */
static void no_payload(struct session *s, enum ba_status rc)
{
	cJSON *msg = NULL;
	s->spawned = true;
	enum proto_err err = proto_msg_payload_exited_code((int)rc, &msg);
	send_or_lose(s, msg, err);
	if (s->conn.attached)
		proto_frame_flush_wait(&s->conn.pc, util_now_ms() + FINAL_FLUSH_MS);
	loop_stop(s->loop, rc);
}

/* The payload beside the connection, prepared when it starts (its sandbox filter is
 * built once): at accept, or with the peer view once the roster is in. */
static enum ba_status launch_payload(struct session *s, bool with_view)
{
	struct payload payload = { 0 };
	struct launch_vars vars = { .manager = s->manager->display, .node_addr = s->node_addr, .handover_fd = -1 };
	enum ba_status rc = BA_OK;
	if (with_view) {
		rc = peerview_make(&s->view, s->cfg, s->roster.nodes, (size_t)s->roster.total, s->roster.rank);
		if (rc == BA_OK)
			peerview_vars(&s->view, &vars);
	}
	if (rc == BA_OK)
		rc = launch_prepare(&payload, s->cfg, &vars);
	if (rc == BA_OK) {
		rc = supervise_spawn(s->sv, &payload);
		s->spawned = true;
	}
	if (rc != BA_OK)
		no_payload(s, rc);
	launch_release(&payload);
	return rc;
}

/* The manager's connection in the loop, then the payload beside it: at once, or once
 * the roster is in. */
static enum ba_status supervise_with_connection(struct session *s, struct proto_conn *pc)
{
	enum ba_status rc = conn_attach(&s->conn, s->loop, pc, on_message, on_lost, s);
	if (rc != BA_OK)
		return rc;
	loop_timer_arm(s->loop, &s->heartbeat_timer, s->heartbeat_ms, on_heartbeat_timer, s);
	if (!s->wants_ready || s->cfg->payload_start == PAYLOAD_START_REGISTERED) {
		rc = launch_payload(s, false);
		if (rc != BA_OK)
			return rc;
	} else {
		log_info("waiting for the roster from the manager at %s", s->peer);
	}
	/* What arrived with the manager's accept is in the reader already. */
	conn_read_now(&s->conn);
	return loop_run(s->loop);
}

enum ba_status session_run(const struct config *cfg, struct proto_conn *conn, const struct handshake_result *joined,
			   const struct manager_address *manager, const struct node_self *self)
{
	if (cfg->exec)
		return exec_with_connection(cfg, conn, joined->heartbeat_ms, manager->display, self->address);

	struct session s = { .cfg = cfg, .peer = manager->display, .heartbeat_ms = joined->heartbeat_ms,
			     .manager = manager, .node_addr = self->address, .wants_ready = joined->roster };
	struct supervise_opts opts = supervise_opts_from_config(cfg);
	struct supervise_hooks hooks = { .ctx = &s, .started = on_started, .exited = on_exited, .finished = on_finished,
					 .spot_notice = on_spot_notice };
	enum ba_status rc = loop_create(&s.loop);
	if (rc == BA_OK)
		rc = supervise_create(&s.sv, s.loop, &opts, &hooks);
	if (rc == BA_OK)
		rc = supervise_with_connection(&s, conn);
	disconnect(&s);
	/* The descriptor is the caller's to close. */
	if (s.conn.open)
		proto_frame_conn_free(&s.conn.pc);
	supervise_free(s.sv);
	loop_destroy(s.loop);
	peerview_release(&s.view);
	free_roster(&s.roster);
	return rc;
}
