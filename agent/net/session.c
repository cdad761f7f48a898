/* Stage 6: the worker's life alongside its payload. */
#include "session.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launch.h"
#include "log.h"
#include "status.h"
#include "supervise.h"
#include "util.h"

#define FINAL_FLUSH_MS 2000

struct session {
	const struct config *cfg;
	const char *peer;
	struct loop *loop;
	struct supervisor *sv;
	struct proto_conn *conn;
	bool connected;
	int64_t heartbeat_ms;
	int64_t last_heard_ms;
	struct loop_timer heartbeat_timer;
	bool shutdown_requested;
	bool manager_lost;
	bool protocol_error; /* the manager broke the protocol: exit 76 rather than 69 */
};

static void send_or_lose(struct session *s, cJSON *msg, int build_err);

static void disconnect(struct session *s)
{
	if (!s->connected)
		return;
	loop_remove(s->loop, s->conn->fd);
	loop_timer_cancel(s->loop, &s->heartbeat_timer);
	s->connected = false;
}

static void lose_manager(struct session *s, const char *why)
{
	if (!s->connected)
		return;
	disconnect(s);
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

/* A message we could not build is our own failure: log it, and keep the manager. */
static void send_or_lose(struct session *s, cJSON *msg, int build_err)
{
	int err = PROTO_OK;
	if (build_err != PROTO_OK)
		log_error("internal error: cannot build a message for the manager: %s", proto_strerror(build_err));
	else if (s->connected)
		err = proto_frame_send(s->conn, msg);
	if (s->connected && build_err == PROTO_OK && err == PROTO_OK)
		loop_modify(s->loop, s->conn->fd, EPOLLIN | (s->conn->want_write ? EPOLLOUT : 0));
	cJSON_Delete(msg);
	if (s->connected && err != PROTO_OK)
		lose_manager(s, proto_strerror(err));
}

/* PROTOCOL.md §1, §4: tell the manager what it did wrong (best effort: whatever the
 * socket takes now), then treat it as lost. */
static void protocol_violation(struct session *s, const char *code, const char *what)
{
	cJSON *msg = NULL;
	if (!s->connected)
		return;
	log_error("the manager at %s broke the protocol: %s", s->peer, what);
	if (proto_msg_error(code, what, &msg) == PROTO_OK)
		proto_frame_send(s->conn, msg);
	cJSON_Delete(msg);
	/* The descriptor stays open until we exit: the FIN tells the manager now. */
	shutdown(s->conn->fd, SHUT_WR);
	s->protocol_error = true;
	lose_manager(s, "it broke the protocol");
}

static void on_heartbeat_timer(struct loop *loop, void *ctx)
{
	struct session *s = ctx;
	if (util_now_ms() - s->last_heard_ms > PROTO_HEARTBEAT_MISSES * s->heartbeat_ms) {
		lose_manager(s, "no heartbeat");
		return;
	}
	cJSON *msg = NULL;
	int err = proto_msg_heartbeat(&msg);
	send_or_lose(s, msg, err);
	if (s->connected)
		loop_timer_arm(loop, &s->heartbeat_timer, s->heartbeat_ms, on_heartbeat_timer, s);
}

static void handle_message(struct session *s, const struct proto_msg *msg)
{
	switch (msg->type) {
	case PROTO_MSG_HEARTBEAT:
		return;
	case PROTO_MSG_SHUTDOWN:
		/* A shutdown turns the payload's end into exit 0 only when it is what ended
		 * the payload: one that crossed our payload_exited must not hide a failure. */
		if (!supervise_running(s->sv)) {
			log_info("the manager asks us to shut down%s%s: the payload has already ended",
				 msg->u.shutdown.reason[0] ? ": " : "", msg->u.shutdown.reason);
			return;
		}
		log_info("the manager asks us to shut down%s%s (grace %.3g s)", msg->u.shutdown.reason[0] ? ": " : "",
			 msg->u.shutdown.reason, (double)msg->u.shutdown.grace_ms / 1000.0);
		s->shutdown_requested = true;
		supervise_terminate(s->sv, SIGTERM, msg->u.shutdown.grace_ms, "shutdown from the manager");
		return;
	case PROTO_MSG_ERROR:
		log_error("the manager reports an error: %s%s%s", msg->u.error.code, msg->u.error.message[0] ? ": " : "",
			  msg->u.error.message);
		lose_manager(s, "it reported an error");
		return;
	default: {
		char what[64];
		snprintf(what, sizeof what, "unexpected \"%s\"", proto_msg_type_name(msg->type));
		protocol_violation(s, PROTO_CODE_UNEXPECTED, what);
		return;
	}
	}
}

static void on_connection(struct loop *loop, int fd, uint32_t events, void *ctx)
{
	struct session *s = ctx;
	(void)fd;
	if (events & EPOLLOUT) {
		int err = proto_frame_flush(s->conn);
		if (err != PROTO_OK && err != PROTO_AGAIN) {
			lose_manager(s, proto_strerror(err));
			return;
		}
		loop_modify(loop, s->conn->fd, EPOLLIN | (s->conn->want_write ? EPOLLOUT : 0));
	}
	while (s->connected) {
		cJSON *json = NULL;
		struct proto_msg msg;
		int err = proto_frame_recv(s->conn, &json);
		if (err == PROTO_AGAIN)
			return;
		if (err == PROTO_OK)
			err = proto_msg_parse(json, &msg);
		if (err == PROTO_OK) {
			s->last_heard_ms = util_now_ms();
			handle_message(s, &msg);
		}
		cJSON_Delete(json);
		if (err == PROTO_CLOSED)
			lose_manager(s, "it closed the connection");
		else if (err == PROTO_ERR_BAD_MESSAGE)
			protocol_violation(s, PROTO_CODE_BAD_MESSAGE, proto_strerror(err));
		else if (err == PROTO_ERR_TOO_LARGE || err == PROTO_ERR_BAD_JSON || err == PROTO_ERR_TRUNCATED)
			protocol_violation(s, PROTO_CODE_BAD_FRAME, proto_strerror(err));
		else if (err != PROTO_OK)
			lose_manager(s, proto_strerror(err));
	}
}

static void on_started(void *ctx, pid_t pid)
{
	struct session *s = ctx;
	cJSON *msg = NULL;
	int err = proto_msg_payload_started(pid, &msg);
	send_or_lose(s, msg, err);
}

static void on_exited(void *ctx, int exit_status, int wait_status)
{
	struct session *s = ctx;
	cJSON *msg = NULL;
	int err = WIFSIGNALED(wait_status) ? proto_msg_payload_exited_signal(WTERMSIG(wait_status), &msg)
					   : proto_msg_payload_exited_code(exit_status, &msg);
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
	int err = proto_msg_draining(reason, time, &msg);
	if (err == PROTO_ERR_INVALID) /* a time that is not RFC 3339: send the notice without it */
		err = proto_msg_draining(reason, NULL, &msg);
	send_or_lose(s, msg, err);
}

static void on_finished(void *ctx, int exit_status)
{
	struct session *s = ctx;
	int code = exit_status;
	if (s->connected) {
		/* Our last words (payload_exited) must reach the manager before we go. */
		proto_frame_flush_wait(s->conn, util_now_ms() + FINAL_FLUSH_MS);
		disconnect(s);
	}
	if (s->shutdown_requested && !supervise_grace_expired(s->sv))
		code = BA_OK;
	else if (s->manager_lost && s->cfg->on_manager_loss == MANAGER_LOSS_EXIT)
		code = s->protocol_error ? BA_EX_PROTOCOL : BA_EX_UNAVAILABLE;
	loop_stop(s->loop, code);
}

static enum ba_status exec_with_connection(const struct config *cfg, struct proto_conn *conn, int64_t heartbeat_ms,
				const char *manager, const char *node_addr)
{
	struct payload payload;
	/* The payload now speaks the steady state itself (PROTOCOL.md §4): it needs the
	 * interval the manager chose, or it will be dropped as silent. */
	char heartbeat_entry[64];
	const char *extra[2] = { heartbeat_entry, NULL };
	snprintf(heartbeat_entry, sizeof heartbeat_entry, "BATCH_AGENT_HEARTBEAT_MS=%lld", (long long)heartbeat_ms);
	/* The codec never reads past a frame, so nothing of the manager's is lost in our
	 * buffers; what we queued must be out before the payload takes over. */
	if (proto_frame_flush_wait(conn, util_now_ms() + FINAL_FLUSH_MS) != PROTO_OK)
		log_warn("could not flush the connection before handing it over");
	/* Programs expect the descriptors they inherit to block. */
	fcntl(conn->fd, F_SETFL, fcntl(conn->fd, F_GETFL) & ~O_NONBLOCK);
	struct launch_vars vars = { .manager = manager, .node_addr = node_addr, .handover_fd = conn->fd,
				    .extra_env = extra };
	enum ba_status rc = launch_prepare(&payload, cfg, &vars);
	if (rc != BA_OK)
		return rc;
	rc = launch_exec(&payload);
	launch_release(&payload);
	return rc;
}

enum ba_status session_run(const struct config *cfg, struct proto_conn *conn, int64_t heartbeat_ms,
		const struct manager_address *manager, const char *node_addr)
{
	if (cfg->exec)
		return exec_with_connection(cfg, conn, heartbeat_ms, manager->display, node_addr);

	struct session s = { .cfg = cfg, .peer = manager->display, .conn = conn, .heartbeat_ms = heartbeat_ms,
			     .last_heard_ms = util_now_ms() };
	struct payload payload = { 0 };
	struct launch_vars vars = { .manager = manager->display, .node_addr = node_addr, .handover_fd = -1 };
	struct supervise_opts opts = supervise_opts_from_config(cfg);
	struct supervise_hooks hooks = { .ctx = &s, .started = on_started, .exited = on_exited, .finished = on_finished,
					 .spot_notice = on_spot_notice };
	enum ba_status rc = launch_prepare(&payload, cfg, &vars);
	if (rc == BA_OK)
		rc = loop_create(&s.loop);
	if (rc == BA_OK)
		rc = supervise_create(&s.sv, s.loop, &opts, &hooks);
	if (rc == BA_OK)
		rc = loop_add(s.loop, conn->fd, EPOLLIN, on_connection, &s);
	if (rc != BA_OK)
		goto out;
	s.connected = true;
	loop_timer_arm(s.loop, &s.heartbeat_timer, heartbeat_ms, on_heartbeat_timer, &s);
	rc = supervise_spawn(s.sv, &payload);
	if (rc != BA_OK) {
		/* The manager hears why: no payload will start here. */
		cJSON *msg = NULL;
		int err = proto_msg_payload_exited_code(rc, &msg);
		send_or_lose(&s, msg, err);
		if (s.connected)
			proto_frame_flush_wait(conn, util_now_ms() + FINAL_FLUSH_MS);
		goto out;
	}
	rc = loop_run(s.loop);
out:
	disconnect(&s);
	supervise_free(s.sv);
	loop_destroy(s.loop);
	launch_release(&payload);
	return rc;
}
