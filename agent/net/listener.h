/* The manager's side of the connections of an MNP rendezvous: listen on --port, admit
 * connections within the cap of handshakes, drive each peer through the handshake
 * (admit.c's checks), keep the registered ones alive (heartbeats both ways, silence
 * detection) and hand their messages to the rendezvous, which keeps the job logic.
 *
 * Admission (PROTOCOL.md §3, "Admission"): at most max_pending handshakes at once
 * (2 * AWS_BATCH_JOB_NUM_NODES + 64, fewer when the descriptor limit cannot hold them
 * beside one per node), at most PENDING_PER_SOURCE_MAX of them from one address. A
 * newcomer beyond either cap evicts the oldest peer (of its own address, or of anyone)
 * that has not sent its first message; only when every pending peer has spoken is the
 * newcomer answered error busy as its first frame and closed, and its worker dials
 * again with backoff. The first message (the first bytes a worker must send) is due
 * within FIRST_MESSAGE_MS of accept; each later step of a handshake has
 * PROTO_HANDSHAKE_TIMEOUT_MS from the peer's last complete frame. Frames waiting in the
 * socket are read before a peer is blamed, so a rendezvous short of CPU times out only
 * peers that are really silent. Of the admitted, at most SERVE_MAX are served at once
 * (our hello sent, our accept not yet): the rest wait, their hello read, in a queue, so
 * that a starved rendezvous finishes the handshakes it began well within the worker's
 * deadline instead of starting thousands and finishing none in time. Once the job needs no more nodes the door closes: the
 * listening socket is closed, so connects are refused. */
#ifndef BATCH_AGENT_LISTENER_H
#define BATCH_AGENT_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>

#include "address.h"
#include "admit.h"
#include "config.h"
#include "conn.h"
#include "loop.h"
#include "pending.h"
#include "status.h"
#include "supervise.h"

/* PEER_QUEUED: its hello passed, our answer waits for a turn (listener.c, "serving"). */
enum peer_state { PEER_HELLO, PEER_QUEUED, PEER_AUTH, PEER_REGISTER, PEER_REGISTERED };

struct listener;
struct member;

/* One connection to the manager; registered ones are the job's children. */
struct peer {
	struct listener *ls;
	struct conn conn;
	struct admission admission;
	struct pending_entry pending; /* while in the handshake */
	enum peer_state state;
	char remote[64];  /* ip:port the connection came from */
	long node_index;  /* once registered */
	char *address;    /* advertised at registration, checked; NULL until then. On the heap:
	                   * an IP takes 16 bytes, and 254 for a DNS name were 29% of a peer */
	double cpus;      /* registered; 0 when unknown */
	int version;      /* the protocol version agreed in the hellos */
	bool roster;      /* its accept said a roster follows (version 3, MNP) */
	bool ready;       /* MNP: it said ready (version 3), or registered (2), or ended 0 */
	bool exit_reported;
	bool started;     /* MNP: its payload_started came */
	bool in_service;  /* our hello sent, accept or reject not yet: counts in the window */
	cJSON *held_hello; /* PEER_QUEUED: our hello, sent when its turn comes */
	struct peer *queue_prev, *queue_next; /* PEER_QUEUED: the queue, oldest first */
	struct member *member; /* a worker pool's record of this peer (pool.c, members.h) */
	bool dead; /* dropped and out of the job: freed by the next sweep, never inside a callback */
	struct peer *next;
};

/* The rendezvous's side. Callbacks may end any peer (listener_refuse, listener_drop). */
struct listener_hooks {
	void *ctx;
	/* A registration passed admit_register: true to accept it, false with why (what
	 * depends on the job: a second registration of one index, a closed rendezvous). */
	bool (*admit)(void *ctx, struct peer *p, const struct proto_register *reg, struct admit_refusal *why);
	/* accept is on its way: p is a registered child (reg as admit saw it). */
	void (*registered)(void *ctx, struct peer *p, const struct proto_register *reg);
	/* A message from a registered child (heartbeats are the listener's). */
	void (*message)(void *ctx, struct peer *p, const struct proto_msg *msg);
	/* A registered child's connection ended. True lets the listener free p at its next
	 * sweep; false keeps it (dead or alive, the job still names it). */
	bool (*lost)(void *ctx, struct peer *p, const char *why);
};

enum ba_status listener_start(struct listener **out, struct loop *loop, const struct config *cfg,
			      const struct admit_job *job, const struct listener_hooks *hooks);
/* Flush what is queued, close every connection, free everything. */
void listener_free(struct listener *ls);

/* No more connections, ever: close the listening socket (connects are refused from
 * now on) and end every handshake in progress. Logs why, once. */
void listener_close_door(struct listener *ls, const char *why);

/* Every peer, registered and in the handshake, live or dropped: follow ->next. */
struct peer *listener_peers(const struct listener *ls);
/* Descriptors the listener holds for peers. */
size_t listener_descriptors(const struct listener *ls);
/* Start the job's payload with the descriptor limit the agent inherited (the listener
 * raised ours to the hard limit), when what we hold leaves it room. */
enum ba_status listener_spawn_payload(const struct listener *ls, struct supervisor *sv, const struct payload *payload);

/* Send msg built by build(arg) to every registered, connected child. */
void listener_broadcast(struct listener *ls, enum proto_err (*build)(void *arg, cJSON **out), void *arg);
/* Tell p why (error, or reject with code), then drop it. */
void listener_refuse(struct peer *p, const struct admit_refusal *why);
/* A registered peer sent a valid message that is not its to send (PROTOCOL.md §4:
 * accept, a second register...): answer unexpected_message, then drop it. */
void listener_refuse_unexpected(struct peer *p, const struct proto_msg *msg);
/* End p's connection: why is for the log. */
void listener_drop(struct peer *p, const char *why);
/* Handle what p has sent already, before judging it (a duplicate registration may
 * find its predecessor gone). */
void listener_read_now(struct peer *p);

#endif
