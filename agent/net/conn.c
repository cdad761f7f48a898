/* A protocol connection in the event loop. */
#include "conn.h"

#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static void on_io(struct loop *loop, int fd, uint32_t events, void *ctx);

enum ba_status conn_attach(struct conn *c, struct loop *loop, struct proto_conn *pc, conn_message_fn on_message,
			   conn_lost_fn on_lost, void *ctx)
{
	*c = (struct conn){ .loop = loop, .on_message = on_message, .on_lost = on_lost, .ctx = ctx,
			    .last_heard_ms = util_now_ms() };
	enum ba_status rc = loop_add(loop, pc->fd, EPOLLIN, on_io, c);
	if (rc != BA_OK)
		return rc;
	c->pc = *pc;
	proto_frame_conn_init(pc, pc->fd);
	c->attached = true;
	c->open = true;
	return BA_OK;
}

static void detach(struct conn *c)
{
	if (!c->attached)
		return;
	loop_remove(c->loop, c->pc.fd);
	c->attached = false;
}

/* The connection failed: tell the peer what it did wrong, where it did, then let the
 * owner know. */
static void lose(struct conn *c, enum proto_err err)
{
	if (!c->attached)
		return;
	const char *code = proto_err_code(err);
	if (code != NULL)
		conn_end(c, code, proto_strerror(err));
	detach(c);
	c->on_lost(c, err, c->ctx);
}

static void update_interest(struct conn *c)
{
	if (c->attached)
		loop_modify(c->loop, c->pc.fd, EPOLLIN | (c->pc.want_write ? EPOLLOUT : 0));
}

void conn_send(struct conn *c, cJSON *msg, enum proto_err build_err)
{
	enum proto_err err = PROTO_OK;
	if (build_err != PROTO_OK)
		log_error("internal error: cannot build a message: %s", proto_strerror(build_err));
	else if (c->attached)
		err = proto_frame_send(&c->pc, msg);
	cJSON_Delete(msg);
	if (err != PROTO_OK)
		lose(c, err);
	else
		update_interest(c);
}

/* Frames until the reader has nothing buffered: a level-triggered loop calls again
 * when more arrives, which saves the recv() that would only say "nothing yet". */
static void read_frames(struct conn *c)
{
	do {
		cJSON *json = NULL;
		struct proto_msg msg;
		enum proto_err err = proto_frame_recv(&c->pc, &json);
		if (err == PROTO_AGAIN)
			return;
		if (err == PROTO_OK)
			err = proto_msg_parse(json, &msg);
		if (err != PROTO_OK) {
			cJSON_Delete(json);
			lose(c, err);
			return;
		}
		c->last_heard_ms = util_now_ms();
		c->on_message(c, &msg, c->ctx);
		cJSON_Delete(json);
	} while (c->attached && proto_frame_buffered(&c->pc));
}

static void on_io(struct loop *loop, int fd, uint32_t events, void *ctx)
{
	struct conn *c = ctx;
	(void)loop;
	(void)fd;
	if (events & EPOLLOUT) {
		enum proto_err err = proto_frame_flush(&c->pc);
		if (err != PROTO_OK && err != PROTO_AGAIN) {
			lose(c, err);
			return;
		}
		update_interest(c);
	}
	if (c->attached && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		read_frames(c);
}

void conn_read_now(struct conn *c)
{
	if (c->attached)
		read_frames(c);
}

void conn_end(struct conn *c, const char *code, const char *message)
{
	if (!c->open)
		return;
	cJSON *msg = NULL;
	if (code != NULL && c->attached && proto_msg_error(code, message, &msg) == PROTO_OK)
		proto_frame_send(&c->pc, msg);
	cJSON_Delete(msg);
	/* Whatever is queued goes now or never: the peer is leaving. */
	proto_frame_flush(&c->pc);
	shutdown(c->pc.fd, SHUT_WR);
	detach(c);
}

void conn_close(struct conn *c)
{
	if (!c->open)
		return;
	if (c->attached) {
		/* Out of epoll before the close: closing alone removes it only when no other
		 * process holds the socket, and a child forked for a payload or the Spot
		 * watcher holds it until its exec, so epoll could still report it, pointing
		 * at a freed watch. */
		loop_remove(c->loop, c->pc.fd);
		c->attached = false;
	}
	close(c->pc.fd);
	proto_frame_conn_free(&c->pc);
	c->open = false;
}
