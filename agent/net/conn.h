/* A protocol connection in the event loop, for both roles: the worker's session with
 * its manager and each of the rendezvous's peers.
 *
 * The conn reads whole frames when its descriptor is readable, parses them, and hands
 * each message to on_message; it writes what the socket takes and watches for
 * EPOLLOUT only while output is queued. When the connection fails (the peer closed it,
 * a system call failed, a frame or message broke the protocol) it first tells the
 * peer which way it broke the protocol (proto_err_code, the one mapping), leaves the
 * loop, and calls on_lost once with the codec's error. The owner closes it with
 * conn_close, from a callback or later. */
#ifndef BATCH_AGENT_CONN_H
#define BATCH_AGENT_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "proto.h"
#include "status.h"

struct conn;
typedef void (*conn_message_fn)(struct conn *c, const struct proto_msg *msg, void *ctx);
/* err: PROTO_CLOSED (the peer closed between frames), PROTO_ERR_IO (errno), or the
 * codec error of the frame, message or send that failed. */
typedef void (*conn_lost_fn)(struct conn *c, enum proto_err err, void *ctx);

struct conn {
	struct proto_conn pc;
	struct loop *loop;
	conn_message_fn on_message;
	conn_lost_fn on_lost;
	void *ctx;
	bool attached;         /* in the loop: reading, and writing what is queued */
	bool open;             /* the descriptor is ours to close */
	int64_t last_heard_ms; /* the peer's last complete frame, or the attach */
};

/* Takes pc over (its descriptor, non-blocking, and whatever its reader has buffered:
 * *pc keeps its fd number but no buffers) into the loop. Frames already buffered are
 * handled at the first conn_read_now or when more arrives. On failure nothing is
 * taken. */
enum ba_status conn_attach(struct conn *c, struct loop *loop, struct proto_conn *pc, conn_message_fn on_message,
			   conn_lost_fn on_lost, void *ctx);

/* Queue msg (takes it) and write what the socket takes now. A message we could not
 * build (build_err) is our own failure: it is logged as an internal error and the
 * connection is kept. A send that fails loses the connection (on_lost). */
void conn_send(struct conn *c, cJSON *msg, enum proto_err build_err);

/* Handle what is readable now, outside the loop's turn: a deadline check calls it
 * before it blames a peer whose frames are waiting in the socket. */
void conn_read_now(struct conn *c);

/* End the connection ourselves: send error code (unless NULL) with message, best
 * effort, then FIN; the conn leaves the loop. on_lost is not called. */
void conn_end(struct conn *c, const char *code, const char *message);

/* Out of the loop, descriptor closed, buffers freed; idempotent. */
void conn_close(struct conn *c);

#endif
