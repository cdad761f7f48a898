/* batch-agent native wire protocol, versions 2 and 3: the codec shared by the worker role,
 * the main (manager) role and the tests. PROTOCOL.md beside this file is the spec;
 * this header is the C view of it.
 *
 * Three modules, one prefix each:
 *   proto_frame_*  length-prefixed JSON frames on a non-blocking stream socket
 *                  (a reader, a writer queue, blocking helpers with a deadline),
 *                  plain or sealed (ChaCha20-Poly1305, PROTOCOL.md §1.1);
 *   proto_msg_*    typed builders and a typed, field-by-field validating parser;
 *   proto_auth_*   nonces, the X25519 exchange, the HKDF key schedule that gives
 *                  both proofs and both session keys, constant-time checks, hex.
 *
 * Every function that can fail returns enum proto_err (PROTO_OK == 0) and writes its
 * results only through out parameters. Nothing here closes a file descriptor, logs,
 * or keeps global state, so one process may hold any number of connections. */
#ifndef BATCH_PROTO_H
#define BATCH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define PROTO_VERSION 3                  /* the newest version this codec speaks */
#define PROTO_VERSION_MIN 2              /* the oldest: 3 is 2 plus the roster (PROTOCOL.md §4.1) */
#define PROTO_ROSTER_CHUNK 128           /* nodes in one roster message */
#define PROTO_ROSTER_MAX_NODES 100000    /* a roster's num_nodes */
#define PROTO_MAX_FRAME 65536            /* payload bytes, after authentication */
#define PROTO_MAX_HANDSHAKE_FRAME 4096   /* payload bytes, until the peer proved the cookie */
#define PROTO_MAX_DEPTH 32               /* nesting of objects/arrays; the top object is 1 */
#define PROTO_MAX_MEMBERS 64             /* members of one object (messages have at most 14) */
#define PROTO_MAX_VERSIONS 32            /* entries in a worker hello's "versions" */
#define PROTO_HANDSHAKE_TIMEOUT_MS 10000 /* handshake step, from the peer's last frame, either side */
#define PROTO_HEARTBEAT_MISSES 3         /* intervals of silence after which a peer is lost */
#define PROTO_NONCE_LEN 32               /* raw bytes; 64 hex digits on the wire */
#define PROTO_PROOF_LEN 32               /* a proof (32 bytes of HKDF output); 64 hex digits on the wire */
#define PROTO_HEX_LEN 64                 /* hex digits of a nonce, a key or a proof */
#define PROTO_KEY_LEN 32                 /* X25519 public key; a session key (ChaCha20) */
#define PROTO_TAG_LEN 16                 /* Poly1305 tag at the end of a sealed frame */

enum proto_err {
	PROTO_OK = 0,
	PROTO_AGAIN,           /* would block: no whole frame yet, or output still queued */
	PROTO_CLOSED,          /* the peer closed the stream cleanly between frames */
	PROTO_ERR_TOO_LARGE,   /* frame length 0 or above the current limit */
	PROTO_ERR_BAD_JSON,    /* payload is not one UTF-8 JSON object within the limits */
	PROTO_ERR_BAD_MESSAGE, /* a JSON object that is not a valid message */
	PROTO_ERR_IO,          /* a system call failed; errno tells which */
	PROTO_ERR_TIMEOUT,     /* the deadline passed */
	PROTO_ERR_AUTH,        /* a proof did not match */
	PROTO_ERR_TRUNCATED,   /* the peer closed the stream in the middle of a frame */
	PROTO_ERR_NOMEM,       /* allocation failed */
	PROTO_ERR_INVALID,     /* the caller passed an argument the protocol cannot carry */
	PROTO_ERR_CRYPTO,      /* libcrypto failed (no entropy, no SHA-256) */
	PROTO_ERR_OVERFLOW,    /* the send queue is over its cap: the peer does not read */
	PROTO_ERR_INTERRUPTED, /* a *_wait helper's wait hook ended the wait (batch-agent: a signal) */
	PROTO_ERR_FORGED,      /* a sealed frame did not authenticate: forged, altered, replayed or reordered */
};

/* A static English description; never NULL, also for unknown codes. */
const char *proto_strerror(enum proto_err err);
/* The error code (PROTOCOL.md §6) to send the peer before closing when err ended its
 * connection, or NULL when there is nobody to tell or nothing the peer did wrong (the
 * stream is gone: PROTO_CLOSED, PROTO_ERR_IO; or the fault is ours to log: a full
 * send queue, an interrupted wait). The one mapping from codec errors to the wire. */
const char *proto_err_code(enum proto_err err);

/* ---------------------------------------------------------------------------------
 * Framing: 4-byte big-endian length N, then N bytes of UTF-8 JSON, 1 <= N <= limit.
 * --------------------------------------------------------------------------------- */

/* One direction's sealing (PROTOCOL.md §1.1): off until that direction's auth went
 * by, then the direction's key and the sequence number of its next frame. */
struct proto_seal {
	bool on;
	uint64_t seq;
	unsigned char key[PROTO_KEY_LEN];
};

struct proto_frame_reader {
	unsigned char *buf; /* buffered bytes are buf[off, len); NULL while none are */
	size_t off;
	size_t len;
	size_t cap;
	size_t limit;
	bool exact;           /* proto_frame_set_exact: never read past the frame in progress */
	enum proto_err failed; /* sticky: a stream that broke framing is never resynchronised */
};

struct proto_frame_writer {
	unsigned char *buf; /* queued bytes are buf[off, len) */
	size_t off;
	size_t len;
	size_t cap;
	size_t max_queued;
};

/* One peer. The caller owns fd (non-blocking stream socket) and closes it after
 * proto_frame_conn_free(). want_write is true while output is queued: register
 * EPOLLOUT then, and call proto_frame_flush() when it fires. */
/* How the blocking *_wait helpers wait for fd to have one of events (POLLIN, POLLOUT):
 * PROTO_OK when it has, PROTO_ERR_TIMEOUT once proto_frame_now_ms() reaches deadline_ms,
 * anything else to end the helper's wait with that error (e.g. PROTO_ERR_INTERRUPTED
 * for a signal); the connection is left as it was (a partial frame stays buffered,
 * queued output stays queued), so the caller may call the helper again. */
typedef enum proto_err (*proto_wait_fn)(int fd, short events, int64_t deadline_ms, void *ctx);

struct proto_conn {
	int fd;
	bool want_write;
	proto_wait_fn wait; /* NULL: proto_frame_poll */
	void *wait_ctx;
	struct proto_frame_reader rd;
	struct proto_frame_writer wr;
	struct proto_seal rx, tx;
};

/* Default cap of the send queue: generous for heartbeats and events, small enough
 * that a peer that stopped reading cannot make us buffer without bound. */
#define PROTO_MAX_QUEUED (4 * PROTO_MAX_FRAME)

/* Starts with the handshake limit (PROTO_MAX_HANDSHAKE_FRAME), greedy reads and
 * proto_frame_poll as the wait. Never fails. */
void proto_frame_conn_init(struct proto_conn *c, int fd);
/* The wait of the blocking helpers (NULL: proto_frame_poll). The codec itself knows
 * nothing of signals; batch-agent passes its one signal-aware wait, so that a SIGTERM
 * ends a handshake at once. */
void proto_frame_set_wait(struct proto_conn *c, proto_wait_fn wait, void *ctx);
/* The default wait: poll() on fd alone until the deadline, retrying after EINTR. */
enum proto_err proto_frame_poll(int fd, short events, int64_t deadline_ms, void *ctx);
/* Frees the buffers and wipes the session keys; leaves fd open. Safe on a zeroed or
 * already freed conn. */
void proto_frame_conn_free(struct proto_conn *c);
/* Limit for frames not taken yet: call it right after the message that proved the
 * peer (auth for a manager, hello for a worker). Each frame's length is checked when
 * the frame is taken, so the change applies to the very next frame even when it is
 * buffered already. limit must be in [1, PROTO_MAX_FRAME]. */
enum proto_err proto_frame_set_limit(struct proto_conn *c, size_t limit);
/* Seal one direction from the next frame on, with the direction's key (sequence
 * numbers from 0). Like the limit, the change applies to the very next frame taken or
 * sent, even when it is buffered already. */
void proto_frame_seal_recv(struct proto_conn *c, const unsigned char key[PROTO_KEY_LEN]);
void proto_frame_seal_send(struct proto_conn *c, const unsigned char key[PROTO_KEY_LEN]);
/* Exact reads: the reader asks the socket only for the bytes of the frame in progress
 * (two recv() a frame), so nothing past the frame it returns leaves the socket. For a
 * connection that will be handed to another program. Default: greedy reads, one
 * recv() for a frame and whatever arrived behind it. */
void proto_frame_set_exact(struct proto_conn *c, bool exact);
/* True while bytes read from the socket wait in the reader: call proto_frame_recv
 * again before waiting for the socket (a level-triggered loop may instead go back to
 * epoll once this is false, saving the recv() that would say PROTO_AGAIN). */
bool proto_frame_buffered(const struct proto_conn *c);

/* Reads from c->fd until one whole frame is in (PROTO_OK, *out is a new cJSON object
 * the caller deletes), or the socket would block (PROTO_AGAIN), or the stream ends
 * (PROTO_CLOSED at a frame boundary, PROTO_ERR_TRUNCATED inside one), or the frame is
 * bad (PROTO_ERR_TOO_LARGE, PROTO_ERR_BAD_JSON: sticky, close the connection).
 * Edge-triggered epoll users call it until it returns something other than PROTO_OK.
 * *out is NULL unless PROTO_OK. */
enum proto_err proto_frame_recv(struct proto_conn *c, cJSON **out);

/* Serialises msg (compact, as cJSON_PrintUnformatted) and writes what the socket takes
 * now (one sendmsg() of header and text when nothing is queued), queueing the rest. PROTO_OK means sent or queued; c->want_write tells which. Errors:
 * PROTO_ERR_TOO_LARGE (over PROTO_MAX_FRAME), PROTO_ERR_BAD_JSON (not an object, or
 * strings that are not UTF-8), PROTO_ERR_OVERFLOW, PROTO_ERR_IO, PROTO_ERR_NOMEM. */
enum proto_err proto_frame_send(struct proto_conn *c, const cJSON *msg);
/* Writes queued bytes: PROTO_OK when the queue is empty, PROTO_AGAIN when the socket
 * is full (want_write stays true), PROTO_ERR_IO (EPIPE etc.). */
enum proto_err proto_frame_flush(struct proto_conn *c);

/* CLOCK_MONOTONIC milliseconds: the clock of every deadline below. */
int64_t proto_frame_now_ms(void);
/* Blocking helpers for the worker side, on a blocking or non-blocking socket: they
 * wait (proto_frame_set_wait) until done or until proto_frame_now_ms() reaches
 * deadline_ms (absolute, so that one deadline can cover several steps), then
 * PROTO_ERR_TIMEOUT; or return what else the wait returned. */
enum proto_err proto_frame_send_wait(struct proto_conn *c, const cJSON *msg, int64_t deadline_ms);
enum proto_err proto_frame_flush_wait(struct proto_conn *c, int64_t deadline_ms);
enum proto_err proto_frame_recv_wait(struct proto_conn *c, cJSON **out, int64_t deadline_ms);

/* Whole frame (header + payload) for msg in a new malloc()ed buffer; sealed with seal
 * (whose seq then advances) unless it is NULL or off. */
enum proto_err proto_frame_encode(const cJSON *msg, size_t limit, struct proto_seal *seal, unsigned char **out,
				  size_t *out_len);
/* One payload (without header) of len bytes, validated as the reader does:
 * UTF-8 without NUL, no "\u0000", one JSON object, depth <= PROTO_MAX_DEPTH,
 * no duplicate member names in any object. */
enum proto_err proto_frame_decode(const unsigned char *payload, size_t len, cJSON **out);

/* ---------------------------------------------------------------------------------
 * Messages
 * --------------------------------------------------------------------------------- */

enum proto_msg_type {
	PROTO_MSG_NONE = 0,
	PROTO_MSG_HELLO_WORKER,  /* "hello", "role":"worker" */
	PROTO_MSG_HELLO_MANAGER, /* "hello", "role":"manager" */
	PROTO_MSG_AUTH,
	PROTO_MSG_REGISTER,
	PROTO_MSG_ACCEPT,
	PROTO_MSG_REJECT,
	PROTO_MSG_HEARTBEAT,
	PROTO_MSG_PAYLOAD_STARTED,
	PROTO_MSG_PAYLOAD_EXITED,
	PROTO_MSG_DRAINING,
	PROTO_MSG_SHUTDOWN,
	PROTO_MSG_ERROR,
	PROTO_MSG_ROSTER, /* version 3 */
	PROTO_MSG_READY,  /* version 3 */
};

/* One node of a roster (version 3). address points into the parsed object. */
struct proto_roster_node {
	int64_t node_index;
	const char *address;
	double cpus; /* 0: null, unknown */
};

/* An integer that may be JSON null. */
struct proto_opt_int {
	bool present; /* false: null */
	int64_t value;
};

/* Fields of "register". Strings may be NULL where the spec allows null. */
struct proto_register {
	const char *job_id;
	struct proto_opt_int attempt;
	struct proto_opt_int array_index;
	struct proto_opt_int node_index;
	struct proto_opt_int num_nodes;
	const char *queue;               /* or NULL */
	const char *compute_environment; /* or NULL */
	const char *hostname;
	const char *address;
	const char *agent_version;
	bool has_cpus;
	double cpus;
	struct proto_opt_int memory_limit_bytes;
};

/* A parsed message. Strings point into the cJSON object that was parsed: keep it
 * alive while you use them. */
struct proto_msg {
	enum proto_msg_type type;
	union {
		struct {
			int versions[PROTO_MAX_VERSIONS]; /* in the order sent */
			size_t n_versions;
			unsigned char nonce[PROTO_NONCE_LEN];
			unsigned char key[PROTO_KEY_LEN];
			const char *agent;
		} hello_worker;
		struct {
			int version;
			unsigned char nonce[PROTO_NONCE_LEN];
			unsigned char key[PROTO_KEY_LEN];
		} hello_manager;
		struct {
			unsigned char proof[PROTO_PROOF_LEN];
		} auth;
		struct proto_register reg;
		struct {
			int64_t heartbeat_interval_ms;
			bool roster; /* version 3: a roster follows; false when absent */
		} accept;
		struct {
			int64_t num_nodes; /* of the whole roster */
			int64_t offset;    /* of nodes[0] in it */
			size_t count;      /* 1..PROTO_ROSTER_CHUNK, offset + count <= num_nodes */
			struct proto_roster_node nodes[PROTO_ROSTER_CHUNK];
		} roster;
		struct {
			const char *code;
			const char *message; /* "" when absent or null */
		} reject, error;
		struct {
			int64_t pid;
		} payload_started;
		struct {
			bool signaled; /* true: signal is set, exit_code is not */
			int exit_code;
			int signal;
		} payload_exited;
		struct {
			const char *reason;
			const char *deadline; /* RFC 3339, or NULL */
		} draining;
		struct {
			int64_t grace_ms;
			const char *reason; /* "" when absent or null */
		} shutdown;
	} u;
};

/* Field ranges (PROTOCOL.md, "Messages"). */
#define PROTO_HEARTBEAT_MIN_MS 10
#define PROTO_HEARTBEAT_MAX_MS 3600000
#define PROTO_GRACE_MAX_MS 86400000
#define PROTO_MAX_INT 9007199254740991LL /* 2^53 - 1: exact in a double and in JSON */
#define PROTO_MAX_STRING 1024            /* bytes of any string field but "message" */
#define PROTO_MAX_CODE 64                /* bytes of a code: [a-z0-9_]+ */

/* Validates obj as a message, field by field, and fills *out. PROTO_ERR_BAD_MESSAGE
 * when "type" is missing or unknown, or a required field is missing, mistyped or out
 * of range. Unknown fields are ignored. On error *out is zeroed. */
enum proto_err proto_msg_parse(const cJSON *obj, struct proto_msg *out);
/* The wire name of a type ("hello" for both hellos), or "?". */
const char *proto_msg_type_name(enum proto_msg_type type);

/* Builders: each makes a new cJSON object in *out (caller deletes) and checks it
 * with proto_msg_parse(), so what we send is exactly what we accept:
 * PROTO_ERR_INVALID when an argument is out of range. */
/* Offers every version this codec speaks, newest first. */
enum proto_err proto_msg_hello_worker(const unsigned char nonce[PROTO_NONCE_LEN],
				      const unsigned char key[PROTO_KEY_LEN], const char *agent, cJSON **out);
/* Offers versions[0..count-1] (for peers that test older managers). */
enum proto_err proto_msg_hello_worker_versions(const unsigned char nonce[PROTO_NONCE_LEN],
					       const unsigned char key[PROTO_KEY_LEN], const char *agent,
					       const int *versions, size_t count, cJSON **out);
enum proto_err proto_msg_hello_manager(int version, const unsigned char nonce[PROTO_NONCE_LEN],
				       const unsigned char key[PROTO_KEY_LEN], cJSON **out);
enum proto_err proto_msg_auth(const unsigned char proof[PROTO_PROOF_LEN], cJSON **out);
enum proto_err proto_msg_register(const struct proto_register *reg, cJSON **out);
/* roster: version 3 only (a roster follows); false writes no "roster" member, as in 2. */
enum proto_err proto_msg_accept(int64_t heartbeat_interval_ms, bool roster, cJSON **out);
/* A chunk of a roster: nodes[0..count-1] are entries offset.. of num_nodes. */
enum proto_err proto_msg_roster(int64_t num_nodes, int64_t offset, const struct proto_roster_node *nodes,
				size_t count, cJSON **out);
enum proto_err proto_msg_ready(cJSON **out);
enum proto_err proto_msg_reject(const char *code, const char *message, cJSON **out);
enum proto_err proto_msg_heartbeat(cJSON **out);
enum proto_err proto_msg_payload_started(int64_t pid, cJSON **out);
enum proto_err proto_msg_payload_exited_code(int exit_code, cJSON **out);
enum proto_err proto_msg_payload_exited_signal(int sig, cJSON **out);
enum proto_err proto_msg_draining(const char *reason, const char *deadline, cJSON **out);
enum proto_err proto_msg_shutdown(int64_t grace_ms, const char *reason, cJSON **out);
enum proto_err proto_msg_error(const char *code, const char *message, cJSON **out);

/* Manager side of version negotiation: the highest version that both the worker's
 * hello and this codec (PROTO_VERSION_MIN..PROTO_VERSION) support, or PROTO_ERR_BAD_MESSAGE if none (then send error
 * "unsupported_version" and close). */
enum proto_err proto_msg_pick_version(const struct proto_msg *hello_worker, int *version);

/* Error and reject codes (PROTOCOL.md, "Error codes"). */
#define PROTO_CODE_BAD_FRAME "bad_frame"
#define PROTO_CODE_BAD_MESSAGE "bad_message"
#define PROTO_CODE_UNEXPECTED "unexpected_message"
#define PROTO_CODE_UNSUPPORTED_VERSION "unsupported_version"
#define PROTO_CODE_AUTH_FAILED "auth_failed"
#define PROTO_CODE_TIMEOUT "timeout"
#define PROTO_CODE_INTERNAL "internal"
#define PROTO_CODE_BUSY "busy" /* the manager serves no more handshakes now: dial again later */
#define PROTO_REJECT_DUPLICATE_NODE "duplicate_node"
#define PROTO_REJECT_NODE_OUT_OF_RANGE "node_out_of_range"
#define PROTO_REJECT_JOB_MISMATCH "job_mismatch"
#define PROTO_REJECT_SHUTTING_DOWN "shutting_down"
#define PROTO_REJECT_RENDEZVOUS_CLOSED "rendezvous_closed" /* the main payload started without this node */
#define PROTO_REJECT_BAD_ADDRESS "bad_address" /* "address" is not an IP literal or a DNS name */
#define PROTO_REJECT_POOL_FULL "pool_full" /* a worker pool has all the workers it wants */

/* ---------------------------------------------------------------------------------
 * Authentication
 * --------------------------------------------------------------------------------- */

enum proto_role {
	PROTO_ROLE_WORKER = 1,
	PROTO_ROLE_MANAGER = 2,
};

/* PROTO_NONCE_LEN fresh bytes from getrandom(2); PROTO_ERR_CRYPTO if it fails. */
enum proto_err proto_auth_nonce(unsigned char nonce[PROTO_NONCE_LEN]);

/* One side's X25519 key pair: pkey is OpenSSL's (EVP_PKEY), pub the raw public key. */
struct proto_kex {
	void *pkey;
	unsigned char pub[PROTO_KEY_LEN];
};

/* A fresh key pair: PROTO_ERR_CRYPTO if libcrypto cannot make one. */
enum proto_err proto_kex_new(struct proto_kex *kex);
/* The key pair of a given private key (the test vectors). */
enum proto_err proto_kex_from_private(struct proto_kex *kex, const unsigned char priv[PROTO_KEY_LEN]);
/* Frees the key pair (OpenSSL wipes the private key); safe on a zeroed one. */
void proto_kex_free(struct proto_kex *kex);

/* What both sides hash into th (PROTOCOL.md §3, step 3). */
struct proto_transcript {
	int version;
	unsigned char worker_nonce[PROTO_NONCE_LEN];
	unsigned char worker_key[PROTO_KEY_LEN];
	unsigned char manager_nonce[PROTO_NONCE_LEN];
	unsigned char manager_key[PROTO_KEY_LEN];
};

/* What the handshake derives: okm = HKDF(th, dh || cookie, "batch-agent/<v> keys"). */
struct proto_keys {
	unsigned char worker_proof[PROTO_PROOF_LEN];  /* wp */
	unsigned char manager_proof[PROTO_PROOF_LEN]; /* mp */
	unsigned char w2m[PROTO_KEY_LEN];             /* seals the worker's frames */
	unsigned char m2w[PROTO_KEY_LEN];             /* seals the manager's frames */
};

/* The key schedule, for the side `self` holding `own` (whose public key must be that
 * side's key in t): dh with the other side's key, then HKDF. PROTO_ERR_AUTH when the
 * nonces are equal (a reflected challenge) or dh is all zeros (a small-order peer key);
 * PROTO_ERR_CRYPTO when libcrypto fails. cookie_len must be >= 1. dh and the HKDF state
 * are wiped; the caller wipes *out after use (proto_auth_wipe). */
enum proto_err proto_auth_keys(const void *cookie, size_t cookie_len, enum proto_role self,
			       const struct proto_kex *own, const struct proto_transcript *t,
			       struct proto_keys *out);
/* Constant-time comparison of a received proof with the expected one: PROTO_OK or
 * PROTO_ERR_AUTH. */
enum proto_err proto_auth_check(const unsigned char expect[PROTO_PROOF_LEN], const unsigned char got[PROTO_PROOF_LEN]);

/* Lowercase hex of len bytes into out (out_size >= 2 * len + 1, NUL-terminated). */
enum proto_err proto_auth_hex_encode(const unsigned char *in, size_t len, char *out, size_t out_size);
/* Exactly 2 * out_len lowercase hex digits, nothing else, into out: otherwise
 * PROTO_ERR_INVALID and out is zeroed. */
enum proto_err proto_auth_hex_decode(const char *hex, unsigned char *out, size_t out_len);

/* Overwrites secret memory (OPENSSL_cleanse) where the compiler cannot drop it. */
void proto_auth_wipe(void *p, size_t len);

#endif
