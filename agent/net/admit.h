/* The manager's side of the handshake (PROTOCOL.md §3): the checks that let a peer
 * from hello to a registration, one step at a time.
 *
 *   W -> M  hello {versions, wn, wk}  admit_hello: a version in common; our nonce
 *   M -> W  hello {v, mn, mk}
 *   W -> M  auth {wp}                 admit_auth: X25519 and HKDF, then wp must prove
 *   M -> W  auth {mp}                   the cookie; the worker's direction, then ours,
 *                                       are sealed
 *   W -> M  register {...}            admit_register: this job, a child's index, an
 *   M -> W  accept | reject             address fit for the hostfile
 *
 * Each step takes the peer's message and says whether it passes; when it does not, the
 * refusal says what to answer (an error or a reject code, or nothing) and what to log.
 * What depends on the rest of the job (a second registration of one index, the
 * rendezvous having started) is the rendezvous's to check. */
#ifndef BATCH_AGENT_ADMIT_H
#define BATCH_AGENT_ADMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"
#include "cookie.h"
#include "proto.h"

/* One peer's progress through the handshake: the transcript of the two hellos. The
 * key exchange waits for the peer's proof: a peer that never sends one (a stranger, a
 * worker that gave up waiting in the queue) costs no X25519 derivation. */
struct admission {
	struct proto_transcript transcript;
};

/* What a registration must match. */
struct admit_job {
	const struct cookie *cookie;
	const struct proto_kex *kex; /* the listener's key pair, for every peer's exchange */
	const char *job_id;     /* AWS_BATCH_JOB_ID, for messages; NULL when unknown */
	const char *job_prefix; /* "<uuid>#" of this job, NULL when unknown */
	size_t job_prefix_length;
	long num_nodes;         /* MNP: the job's nodes; a pool: the workers it waits for */
	long main_node_index;
	bool pool;              /* a worker pool: any job may register; the pool checks who */
	long attempt;           /* -1 when unknown */
};

struct admit_refusal {
	const char *code; /* to send: an error code, or with reject a reject code; NULL: close without a word */
	bool reject;      /* send reject {code} (after authentication) rather than error {code} */
	bool loud;        /* a wrong cookie or version: a warning that names the peer */
	char text[320];   /* for the log and the message sent */
};

/* Fill why with reject {code} and the text (for the log and the message sent), and
 * say false: for the job's own checks (admit hooks of the rendezvous and the pool). */
bool admit_reject(struct admit_refusal *why, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The worker's hello: true with *reply, our hello to send. */
bool admit_hello(struct admission *a, const struct admit_job *job, const struct proto_msg *msg, cJSON **reply,
		 struct admit_refusal *why);
/* The worker's proof: true when it proves the cookie. Then c's reading direction is
 * sealed from the worker's next frame (which may be 65536 bytes), our proof has gone
 * out plain, our direction is sealed after it, and the admission is wiped: the
 * session keys live on in c alone. */
bool admit_auth(struct admission *a, const struct admit_job *job, const struct proto_msg *msg, struct conn *c,
		struct admit_refusal *why);

/* The registration: true when it names a child of this job (for a pool: any job) at a
 * usable address. */
bool admit_register(const struct admit_job *job, const struct proto_msg *msg, struct admit_refusal *why);

/* Tell the peer on c why, as why says (a reject after authentication, else an error,
 * or nothing without a code), and end the connection. */
void admit_send_refusal(struct conn *c, const struct admit_refusal *why);

#endif
