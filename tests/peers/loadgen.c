/* loadgen: N simulated batch-agent workers of one MNP job, in one process, against one
 * main agent (the manager), for bench/bench-rendezvous.py and the starvation test.
 *
 * Each simulated worker speaks the worker side of proto/PROTOCOL.md with the shared
 * codec (real nonces, a real X25519 exchange and sealed frames), as node <i> of the
 * job "<job>#<i>":
 *
 *   IDLE --due (--spread)---------------> CONNECTING   (non-blocking connect)
 *   CONNECTING --connected--------------> HELLO         (send hello)
 *   HELLO --manager hello---------------> REGISTERING   (send auth; seal; send register)
 *   REGISTERING --manager auth, proof ok> REGISTERING   (the manager's frames sealed)
 *   REGISTERING --accept----------------> RUNNING       (send payload_started; heartbeats)
 *   RUNNING --roster's last chunk-------> RUNNING       (--roster, version 3: send ready)
 *   RUNNING --shutdown------------------> CLOSING       (send payload_exited)
 *   CLOSING --flushed-------------------> DRAINING      (shutdown(SHUT_WR))
 *   DRAINING --manager's EOF, or 10 s---> DONE          (close)
 *
 *   redial: connect failed, or no manager hello (closed, reset, 10 s of silence), or
 *           error "busy" or "timeout" before accept, or no accept within 10 s of the
 *           manager's last handshake message (as the agent's worker):
 *   CONNECTING/HELLO/REGISTERING ---------> BACKOFF --jittered delay--> CONNECTING
 *           while --connect-timeout (counted from the worker's first dial) allows;
 *   anything else (reject, a bad proof, a broken frame, the manager silent for 3
 *   heartbeat intervals, EOF while running) --> FAILED, counted by kind.
 *
 * The handshake timer (10 s, PROTO_HANDSHAKE_TIMEOUT_MS) restarts at each message of
 * the manager, so a slow but progressing manager is waited for. After its exit report
 * a worker half-closes and reads until the manager closes: a close with the manager's
 * heartbeats unread would be a reset, which can cost the manager the report.
 *
 * One epoll set, edge-triggered, each socket added once for in and out: no epoll_ctl
 * after the add. Timers are three queues: handshakes and heartbeats are FIFOs sorted
 * by construction (one timeout for all), redials a list scanned when its earliest
 * entry is due. On exit a JSON summary goes to stdout (see usage()). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

#define COOKIE_ENV "BATCH_AGENT_COOKIE"
#define COOKIE_MAX 4096
#define AGENT_NAME "batch-agent-loadgen 0.1.0"
#define CONNECT_BATCH 64 /* dials per loop turn, so replies are read between them */
#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000
#define MAX_EVENTS 1024

enum exit_code {
	EXIT_ALL_DONE = 0,   /* every worker registered, was shut down and reported */
	EXIT_SOME_FAILED = 1, /* the summary says which and why */
	EXIT_DEADLINE = 2,   /* --deadline passed first */
	EXIT_USAGE = 64,
	EXIT_OSERR = 71,
	EXIT_SIGNAL_BASE = 128,
};

enum wstate {
	W_IDLE, W_CONNECTING, W_HELLO, W_REGISTERING, W_RUNNING, W_CLOSING, W_DRAINING, W_BACKOFF, W_DONE, W_FAILED
};

static const char *const state_names[] = { "idle",    "connecting", "hello",   "registering", "running",
					   "closing", "draining",   "backoff", "done",        "failed" };

struct queue;

struct worker {
	struct proto_conn conn; /* conn.fd is -1 when the worker holds no socket */
	enum wstate state;
	long index;
	unsigned dials;
	int64_t due_ms;           /* handshake deadline, next heartbeat, or redial time */
	int64_t give_up_ms;       /* first dial + --connect-timeout: no redial after it */
	int64_t last_heard_ms;
	int64_t heartbeat_ms;
	struct proto_kex kex;             /* until the manager's proof */
	struct proto_transcript transcript;
	struct proto_keys keys;
	bool manager_proven;
	struct queue *queue;
	struct worker *prev, *next;
};

struct queue {
	struct worker *head, *tail;
};

struct options {
	long workers;
	long first_index;
	long num_nodes;
	long attempt;
	const char *job;
	struct sockaddr_in manager;
	struct in_addr source_first;
	long source_count; /* 0: let the kernel choose (127.0.0.1 towards loopback) */
	double spread_s;
	bool redial;
	double connect_timeout_s;
	double deadline_s;
	double cpus;
	long long memory_bytes;
	int exit_code;
	bool array; /* --array: children "<job>:<i>" of an array job, for a worker pool */
	bool drain; /* --drain: each worker reports a Spot notice (draining) once accepted */
	bool roster; /* --roster: offer version 3, take the roster, then say ready */
};

struct loadgen {
	struct options opt;
	unsigned char *cookie;
	size_t cookie_len;
	struct worker *workers;
	int epoll_fd, signal_fd;
	int64_t start_ms;
	long next_dial;   /* workers[next_dial..] have not dialed yet */
	long active;      /* neither done nor failed */
	struct queue handshakes, running, backoff;
	int64_t backoff_next_ms; /* earliest due in backoff, INT64_MAX when empty */
	/* The summary. */
	long registered, completed, redials;
	cJSON *rejected, *errors, *redial_reasons;
	double first_connect, last_accept; /* CLOCK_REALTIME seconds; 0: not yet */
	double cpu_at_last_accept;         /* our own user + system seconds then */
	int signal;
	bool deadline_passed;
};

/* ---- clocks and queues ---- */

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void queue_remove(struct worker *w)
{
	struct queue *q = w->queue;
	if (q == NULL)
		return;
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->prev = w->next = NULL;
	w->queue = NULL;
}

static void queue_push(struct queue *q, struct worker *w, int64_t due_ms)
{
	queue_remove(w);
	w->due_ms = due_ms;
	w->queue = q;
	w->prev = q->tail;
	w->next = NULL;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
}

/* ---- the summary's counters: a cJSON object of name -> count ---- */

static void count(cJSON *counters, const char *name)
{
	cJSON *item = cJSON_GetObjectItemCaseSensitive(counters, name);
	if (item == NULL)
		cJSON_AddNumberToObject(counters, name, 1);
	else
		cJSON_SetNumberValue(item, item->valuedouble + 1);
}

/* ---- one worker's connection ---- */

static void close_conn(struct worker *w)
{
	if (w->conn.fd < 0)
		return;
	close(w->conn.fd); /* also leaves the epoll set */
	proto_frame_conn_free(&w->conn);
	w->conn.fd = -1;
	proto_kex_free(&w->kex);
	proto_auth_wipe(&w->keys, sizeof w->keys);
}

static void finish(struct loadgen *lg, struct worker *w, enum wstate state)
{
	close_conn(w);
	queue_remove(w);
	w->state = state;
	lg->active--;
}

static void fail(struct loadgen *lg, struct worker *w, const char *kind)
{
	count(lg->errors, kind);
	finish(lg, w, W_FAILED);
}

/* Full jitter up to an exponential bound, as the agent's dial does: workers refused
 * together do not come back together. */
static int64_t backoff_ms(unsigned dials)
{
	unsigned shift = dials < 16 ? dials : 16;
	int64_t bound = (int64_t)BACKOFF_BASE_MS << shift;
	if (bound > BACKOFF_CAP_MS)
		bound = BACKOFF_CAP_MS;
	return (int64_t)(random() % (bound + 1));
}

/* A refusal for load: dial again later, or give up once --connect-timeout has passed. */
static void redial(struct loadgen *lg, struct worker *w, const char *reason, int64_t now)
{
	char kind[96];
	int64_t due = now + backoff_ms(w->dials);
	if (!lg->opt.redial || due > w->give_up_ms) {
		snprintf(kind, sizeof kind, "gave_up_after_%s", reason);
		fail(lg, w, kind);
		return;
	}
	close_conn(w);
	lg->redials++;
	count(lg->redial_reasons, reason);
	w->state = W_BACKOFF;
	queue_push(&lg->backoff, w, due);
	if (due < lg->backoff_next_ms)
		lg->backoff_next_ms = due;
}

/* Sends and frees what a builder made; false when the worker was lost doing it. msg
 * is passed by address: the builder call in the same argument list may run after a
 * by-value read of it. */
static bool send_msg(struct loadgen *lg, struct worker *w, enum proto_err build_err, cJSON **msg, int64_t now)
{
	enum proto_err err = build_err == PROTO_OK ? proto_frame_send(&w->conn, *msg) : build_err;
	cJSON_Delete(*msg);
	*msg = NULL;
	if (err == PROTO_OK)
		return true;
	if (build_err != PROTO_OK)
		fail(lg, w, "internal_cannot_build");
	else if (w->state == W_HELLO || w->state == W_CONNECTING)
		redial(lg, w, "no_hello", now);
	else
		fail(lg, w, w->state == W_REGISTERING ? "send_failed_in_handshake" : "send_failed_while_running");
	return false;
}

static void tell_and_fail(struct loadgen *lg, struct worker *w, const char *code, const char *kind)
{
	cJSON *msg = NULL;
	if (proto_msg_error(code, kind, &msg) == PROTO_OK)
		proto_frame_send(&w->conn, msg);
	cJSON_Delete(msg);
	fail(lg, w, kind);
}

static void dial(struct loadgen *lg, struct worker *w, int64_t now)
{
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	w->dials++;
	if (w->dials == 1)
		w->give_up_ms = now + (int64_t)(lg->opt.connect_timeout_s * 1000);
	if (lg->first_connect == 0)
		lg->first_connect = wall_now();
	if (fd < 0) {
		redial(lg, w, errno == EMFILE || errno == ENFILE ? "out_of_descriptors" : "socket_failed", now);
		return;
	}
	proto_frame_conn_init(&w->conn, fd);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (lg->opt.source_count > 0) {
		/* The port is picked at connect(2), per destination: a source address gives
		 * a whole ephemeral range of its own. */
		struct sockaddr_in src = { .sin_family = AF_INET };
		src.sin_addr.s_addr = htonl(ntohl(lg->opt.source_first.s_addr) + (uint32_t)(w->index % lg->opt.source_count));
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
			redial(lg, w, "bind_failed", now);
			return;
		}
	}
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = w };
	if (epoll_ctl(lg->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		redial(lg, w, "epoll_failed", now);
		return;
	}
	w->state = W_CONNECTING;
	queue_push(&lg->handshakes, w, now + PROTO_HANDSHAKE_TIMEOUT_MS);
	if (connect(fd, (struct sockaddr *)&lg->opt.manager, sizeof lg->opt.manager) < 0 && errno != EINPROGRESS)
		redial(lg, w, "connect_failed", now); /* e.g. refused: the manager is not listening yet */
}

/* ---- the handshake ---- */

static void on_connected(struct loadgen *lg, struct worker *w, int64_t now)
{
	int error = 0;
	socklen_t length = sizeof error;
	cJSON *msg = NULL;
	if (getsockopt(w->conn.fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0 || error != 0) {
		redial(lg, w, "connect_failed", now);
		return;
	}
	/* The first dial's key pair was made at set-up (see there); a redial makes its own. */
	if (proto_auth_nonce(w->transcript.worker_nonce) != PROTO_OK ||
	    (w->kex.pkey == NULL && proto_kex_new(&w->kex) != PROTO_OK)) {
		fail(lg, w, "no_randomness");
		return;
	}
	memcpy(w->transcript.worker_key, w->kex.pub, PROTO_KEY_LEN);
	w->manager_proven = false;
	w->state = W_HELLO;
	/* Version 2 by default: the registration path alone, without the N-squared roster. */
	static const int v2[] = { 2 };
	send_msg(lg, w,
		 lg->opt.roster ? proto_msg_hello_worker(w->transcript.worker_nonce, w->kex.pub, AGENT_NAME, &msg)
				: proto_msg_hello_worker_versions(w->transcript.worker_nonce, w->kex.pub, AGENT_NAME, v2, 1, &msg),
		 &msg, now);
}

/* An error from the manager before accept: load refusals are worth another dial. */
static void on_handshake_error(struct loadgen *lg, struct worker *w, const struct proto_msg *m, int64_t now)
{
	char kind[96];
	const char *code = m->u.error.code;
	if (strcmp(code, PROTO_CODE_BUSY) == 0 || strcmp(code, PROTO_CODE_TIMEOUT) == 0) {
		redial(lg, w, code, now);
		return;
	}
	snprintf(kind, sizeof kind, "manager_error_%s", code);
	fail(lg, w, kind);
}

static bool send_registration(struct loadgen *lg, struct worker *w, int64_t now)
{
	char job_id[160], hostname[32], address[INET_ADDRSTRLEN] = "127.0.0.1";
	struct sockaddr_in local;
	socklen_t length = sizeof local;
	cJSON *msg = NULL;
	/* What a real worker advertises: the address it reaches the manager from. */
	if (getsockname(w->conn.fd, (struct sockaddr *)&local, &length) == 0)
		inet_ntop(AF_INET, &local.sin_addr, address, sizeof address);
	snprintf(job_id, sizeof job_id, lg->opt.array ? "%s:%ld" : "%s#%ld", lg->opt.job, w->index);
	snprintf(hostname, sizeof hostname, "loadgen-%ld", w->index);
	struct proto_register reg = {
		.job_id = job_id,
		.attempt = { true, lg->opt.attempt },
		.array_index = { lg->opt.array, w->index },
		.node_index = { !lg->opt.array, w->index },
		.num_nodes = { !lg->opt.array, lg->opt.num_nodes },
		.queue = "loadgen-queue",
		.compute_environment = "loadgen-ce",
		.hostname = hostname,
		.address = address,
		.agent_version = "0.1.0",
		.has_cpus = true,
		.cpus = lg->opt.cpus,
		.memory_limit_bytes = { true, lg->opt.memory_bytes },
	};
	return send_msg(lg, w, proto_msg_register(&reg, &msg), &msg, now);
}

static void on_manager_hello(struct loadgen *lg, struct worker *w, const struct proto_msg *m, int64_t now)
{
	cJSON *msg = NULL;
	if (m->type == PROTO_MSG_ERROR) {
		on_handshake_error(lg, w, m, now);
		return;
	}
	if (m->type != PROTO_MSG_HELLO_MANAGER) {
		tell_and_fail(lg, w, PROTO_CODE_UNEXPECTED, "unexpected_instead_of_hello");
		return;
	}
	if (m->u.hello_manager.version != (lg->opt.roster ? 3 : 2)) {
		tell_and_fail(lg, w, PROTO_CODE_UNSUPPORTED_VERSION, "manager_chose_other_version");
		return;
	}
	w->transcript.version = m->u.hello_manager.version;
	memcpy(w->transcript.manager_nonce, m->u.hello_manager.nonce, PROTO_NONCE_LEN);
	memcpy(w->transcript.manager_key, m->u.hello_manager.key, PROTO_KEY_LEN);
	enum proto_err err = proto_auth_keys(lg->cookie, lg->cookie_len, PROTO_ROLE_WORKER, &w->kex, &w->transcript,
					     &w->keys);
	if (err == PROTO_ERR_AUTH) {
		tell_and_fail(lg, w, PROTO_CODE_AUTH_FAILED, "manager_hello_degenerate");
		return;
	}
	if (err != PROTO_OK) {
		fail(lg, w, "crypto_failed");
		return;
	}
	w->state = W_REGISTERING;
	if (!send_msg(lg, w, proto_msg_auth(w->keys.worker_proof, &msg), &msg, now))
		return;
	proto_frame_seal_send(&w->conn, w->keys.w2m);
	send_registration(lg, w, now);
}

/* The manager's proof: from its next frame on, what it sends is sealed. */
static void on_manager_auth(struct loadgen *lg, struct worker *w, const struct proto_msg *m, int64_t now)
{
	if (m->type == PROTO_MSG_ERROR) {
		if (strcmp(m->u.error.code, PROTO_CODE_AUTH_FAILED) == 0)
			fail(lg, w, "cookie_refused");
		else
			on_handshake_error(lg, w, m, now);
		return;
	}
	if (m->type != PROTO_MSG_AUTH) {
		tell_and_fail(lg, w, PROTO_CODE_UNEXPECTED, "unexpected_instead_of_auth");
		return;
	}
	if (proto_auth_check(w->keys.manager_proof, m->u.auth.proof) != PROTO_OK) {
		tell_and_fail(lg, w, PROTO_CODE_AUTH_FAILED, "manager_proof_mismatch");
		return;
	}
	w->manager_proven = true;
	proto_frame_set_limit(&w->conn, PROTO_MAX_FRAME);
	proto_frame_seal_recv(&w->conn, w->keys.m2w);
	proto_kex_free(&w->kex);
	proto_auth_wipe(&w->keys, sizeof w->keys);
}

static void on_registration_reply(struct loadgen *lg, struct worker *w, const struct proto_msg *m, int64_t now)
{
	cJSON *msg = NULL;
	switch (m->type) {
	case PROTO_MSG_ERROR:
		on_handshake_error(lg, w, m, now);
		return;
	case PROTO_MSG_REJECT:
		count(lg->rejected, m->u.reject.code);
		finish(lg, w, W_FAILED);
		return;
	case PROTO_MSG_ACCEPT:
		break;
	default:
		tell_and_fail(lg, w, PROTO_CODE_UNEXPECTED, "unexpected_instead_of_accept");
		return;
	}
	lg->registered++;
	lg->last_accept = wall_now();
	/* So that a benchmark can tell whether we, not the manager, were the bottleneck. */
	struct rusage ru;
	if (lg->registered == lg->opt.workers && getrusage(RUSAGE_SELF, &ru) == 0)
		lg->cpu_at_last_accept = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
					 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	w->heartbeat_ms = m->u.accept.heartbeat_interval_ms;
	w->state = W_RUNNING;
	queue_push(&lg->running, w, now + w->heartbeat_ms);
	if (send_msg(lg, w, proto_msg_payload_started(getpid(), &msg), &msg, now) && lg->opt.drain)
		send_msg(lg, w, proto_msg_draining("spot-interruption", NULL, &msg), &msg, now);
}

/* ---- steady state ---- */

/* Once the exit report is out: our FIN, then read until the manager's. */
static void half_close_when_flushed(struct worker *w)
{
	if (w->state == W_CLOSING && w->conn.fd >= 0 && !w->conn.want_write) {
		shutdown(w->conn.fd, SHUT_WR);
		w->state = W_DRAINING;
	}
}

static void on_running_message(struct loadgen *lg, struct worker *w, const struct proto_msg *m, int64_t now)
{
	cJSON *msg = NULL;
	switch (m->type) {
	case PROTO_MSG_HEARTBEAT:
		return;
	case PROTO_MSG_SHUTDOWN:
		/* Our "payload" stops at once: report it, then leave (on_io). */
		w->state = W_CLOSING;
		queue_push(&lg->handshakes, w, now + PROTO_HANDSHAKE_TIMEOUT_MS);
		if (send_msg(lg, w, proto_msg_payload_exited_code(lg->opt.exit_code, &msg), &msg, now))
			half_close_when_flushed(w);
		return;
	case PROTO_MSG_ROSTER:
		/* The last chunk: our "payload" runs already, so we are ready. */
		if (lg->opt.roster && m->u.roster.offset + (int64_t)m->u.roster.count == m->u.roster.num_nodes)
			send_msg(lg, w, proto_msg_ready(&msg), &msg, now);
		else if (!lg->opt.roster)
			tell_and_fail(lg, w, PROTO_CODE_UNEXPECTED, "roster_in_version_2");
		return;
	case PROTO_MSG_ERROR:
		fail(lg, w, "manager_error_while_running");
		return;
	default:
		tell_and_fail(lg, w, PROTO_CODE_UNEXPECTED, "unexpected_while_running");
		return;
	}
}

static void on_message(struct loadgen *lg, struct worker *w, const struct proto_msg *m, int64_t now)
{
	w->last_heard_ms = now;
	if (w->state == W_HELLO || w->state == W_REGISTERING)
		queue_push(&lg->handshakes, w, now + PROTO_HANDSHAKE_TIMEOUT_MS); /* progress */
	if (w->state == W_HELLO)
		on_manager_hello(lg, w, m, now);
	else if (w->state == W_REGISTERING && !w->manager_proven)
		on_manager_auth(lg, w, m, now);
	else if (w->state == W_REGISTERING)
		on_registration_reply(lg, w, m, now);
	else if (w->state == W_RUNNING)
		on_running_message(lg, w, m, now);
	/* W_CLOSING, W_DRAINING: what comes after the shutdown is not ours to answer. */
}

/* The stream ended or broke: what that means depends on how far the worker got. */
static void on_lost(struct loadgen *lg, struct worker *w, int err, int64_t now)
{
	if (w->state == W_CONNECTING || w->state == W_HELLO) {
		redial(lg, w, "no_hello", now);
	} else if (w->state == W_CLOSING || w->state == W_DRAINING) {
		lg->completed++;
		finish(lg, w, W_DONE);
	} else if (err == PROTO_ERR_TOO_LARGE || err == PROTO_ERR_BAD_JSON || err == PROTO_ERR_BAD_MESSAGE ||
		   err == PROTO_ERR_FORGED) {
		tell_and_fail(lg, w, err == PROTO_ERR_BAD_MESSAGE ? PROTO_CODE_BAD_MESSAGE : PROTO_CODE_BAD_FRAME,
			      "manager_broke_framing");
	} else {
		fail(lg, w, w->state == W_RUNNING ? "closed_while_running" : "closed_before_accept");
	}
}

static void on_io(struct loadgen *lg, struct worker *w, uint32_t events, int64_t now)
{
	if (w->conn.fd < 0)
		return; /* closed earlier in this batch of events */
	if (w->state == W_CONNECTING) {
		on_connected(lg, w, now);
	} else if ((events & EPOLLOUT) && w->conn.want_write) {
		enum proto_err err = proto_frame_flush(&w->conn);
		if (err != PROTO_OK && err != PROTO_AGAIN) {
			on_lost(lg, w, err, now);
			return;
		}
	}
	half_close_when_flushed(w);
	while (w->conn.fd >= 0) {
		cJSON *json = NULL;
		struct proto_msg m;
		enum proto_err err = proto_frame_recv(&w->conn, &json);
		if (err == PROTO_AGAIN)
			return;
		if (err == PROTO_OK)
			err = proto_msg_parse(json, &m);
		if (err == PROTO_OK)
			on_message(lg, w, &m, now);
		else
			on_lost(lg, w, err, now);
		cJSON_Delete(json);
	}
}

/* ---- timers ---- */

static void on_handshake_timeout(struct loadgen *lg, struct worker *w, int64_t now)
{
	if (w->state == W_REGISTERING) {
		/* As the agent's worker does (agent/net/handshake.c): our own deadline after the
		 * manager's hello is a refusal for load too, so say timeout and dial again. */
		cJSON *msg = NULL;
		if (proto_msg_error(PROTO_CODE_TIMEOUT, "no accept in time", &msg) == PROTO_OK)
			proto_frame_send(&w->conn, msg);
		cJSON_Delete(msg);
		redial(lg, w, "no_accept_in_time", now);
	} else if (w->state == W_CLOSING || w->state == W_DRAINING) {
		lg->completed++; /* reported; the manager just did not close */
		finish(lg, w, W_DONE);
	} else
		redial(lg, w, "no_hello", now); /* connect or hello: a manager at its cap */
}

static void on_heartbeat_due(struct loadgen *lg, struct worker *w, int64_t now)
{
	cJSON *msg = NULL;
	if (now - w->last_heard_ms > PROTO_HEARTBEAT_MISSES * w->heartbeat_ms) {
		fail(lg, w, "manager_silent");
		return;
	}
	queue_push(&lg->running, w, now + w->heartbeat_ms);
	send_msg(lg, w, proto_msg_heartbeat(&msg), &msg, now);
}

static void run_backoff(struct loadgen *lg, int64_t now)
{
	if (now < lg->backoff_next_ms)
		return;
	/* Detached first: a dial that fails at once puts its worker back in the list, and
	 * must not be met again in this pass. */
	struct worker *w = lg->backoff.head, *next;
	lg->backoff.head = lg->backoff.tail = NULL;
	lg->backoff_next_ms = INT64_MAX;
	for (; w; w = next) {
		next = w->next;
		w->prev = w->next = NULL;
		w->queue = NULL;
		if (w->due_ms <= now)
			dial(lg, w, now);
		else
			queue_push(&lg->backoff, w, w->due_ms);
		if (w->queue == &lg->backoff && w->due_ms < lg->backoff_next_ms)
			lg->backoff_next_ms = w->due_ms;
	}
}

/* Dials what the pacing says is due; true when more are due already. */
static bool run_pacing(struct loadgen *lg, int64_t now)
{
	for (int batch = 0; lg->next_dial < lg->opt.workers; batch++) {
		int64_t due = lg->start_ms + (int64_t)(lg->opt.spread_s * 1000.0 * (double)lg->next_dial /
						       (double)lg->opt.workers);
		if (due > now)
			return false;
		if (batch == CONNECT_BATCH)
			return true;
		dial(lg, &lg->workers[lg->next_dial++], now);
	}
	return false;
}

static void run_timers(struct loadgen *lg, int64_t now)
{
	while (lg->handshakes.head && lg->handshakes.head->due_ms <= now)
		on_handshake_timeout(lg, lg->handshakes.head, now);
	while (lg->running.head && lg->running.head->due_ms <= now)
		on_heartbeat_due(lg, lg->running.head, now);
	run_backoff(lg, now);
}

/* Milliseconds until the next thing to do, for epoll_wait. */
static int next_wakeup(const struct loadgen *lg, int64_t now, int64_t deadline)
{
	int64_t next = deadline;
	if (lg->next_dial < lg->opt.workers) {
		int64_t due = lg->start_ms + (int64_t)(lg->opt.spread_s * 1000.0 * (double)lg->next_dial /
						       (double)lg->opt.workers);
		next = due < next ? due : next;
	}
	if (lg->handshakes.head && lg->handshakes.head->due_ms < next)
		next = lg->handshakes.head->due_ms;
	if (lg->running.head && lg->running.head->due_ms < next)
		next = lg->running.head->due_ms;
	if (lg->backoff_next_ms < next)
		next = lg->backoff_next_ms;
	return next <= now ? 0 : next - now > 1000 ? 1000 : (int)(next - now);
}

/* ---- the run ---- */

static enum exit_code run(struct loadgen *lg)
{
	struct epoll_event events[MAX_EVENTS];
	int64_t deadline = proto_frame_now_ms() + (int64_t)(lg->opt.deadline_s * 1000);
	lg->start_ms = proto_frame_now_ms();
	while (lg->active > 0) {
		int64_t now = proto_frame_now_ms();
		if (now >= deadline) {
			lg->deadline_passed = true;
			break;
		}
		bool more = run_pacing(lg, now);
		run_timers(lg, now);
		int n = epoll_wait(lg->epoll_fd, events, MAX_EVENTS, more ? 0 : next_wakeup(lg, now, deadline));
		if (n < 0 && errno != EINTR) {
			perror("loadgen: epoll_wait");
			return EXIT_OSERR;
		}
		now = proto_frame_now_ms();
		for (int i = 0; i < n; i++) {
			if (events[i].data.ptr == NULL) {
				struct signalfd_siginfo si;
				if (read(lg->signal_fd, &si, sizeof si) == (ssize_t)sizeof si)
					lg->signal = (int)si.ssi_signo;
				return (enum exit_code)(EXIT_SIGNAL_BASE + lg->signal);
			}
			on_io(lg, events[i].data.ptr, events[i].events, now);
		}
	}
	if (lg->deadline_passed)
		return EXIT_DEADLINE;
	return lg->completed == lg->opt.workers ? EXIT_ALL_DONE : EXIT_SOME_FAILED;
}

/* Workers the run left unfinished (deadline, signal) are counted by the state they
 * were stuck in. */
static void count_unfinished(struct loadgen *lg)
{
	char kind[64];
	for (long i = 0; i < lg->opt.workers; i++) {
		struct worker *w = &lg->workers[i];
		if (w->state == W_DONE || w->state == W_FAILED)
			continue;
		snprintf(kind, sizeof kind, "unfinished_%s", state_names[w->state]);
		count(lg->errors, kind);
		close_conn(w);
	}
}

static void print_summary(struct loadgen *lg, enum exit_code code)
{
	cJSON *s = cJSON_CreateObject();
	cJSON_AddNumberToObject(s, "workers", (double)lg->opt.workers);
	cJSON_AddNumberToObject(s, "registered", (double)lg->registered);
	cJSON_AddNumberToObject(s, "completed", (double)lg->completed);
	cJSON_AddNumberToObject(s, "redials", (double)lg->redials);
	cJSON_AddItemToObject(s, "redial_reasons", lg->redial_reasons);
	cJSON_AddItemToObject(s, "rejected", lg->rejected);
	cJSON_AddItemToObject(s, "errors", lg->errors);
	lg->redial_reasons = lg->rejected = lg->errors = NULL;
	if (lg->first_connect > 0)
		cJSON_AddNumberToObject(s, "first_connect", lg->first_connect);
	else
		cJSON_AddNullToObject(s, "first_connect");
	if (lg->last_accept > 0)
		cJSON_AddNumberToObject(s, "last_accept", lg->last_accept);
	else
		cJSON_AddNullToObject(s, "last_accept");
	if (lg->cpu_at_last_accept > 0)
		cJSON_AddNumberToObject(s, "cpu_s_at_last_accept", lg->cpu_at_last_accept);
	else
		cJSON_AddNullToObject(s, "cpu_s_at_last_accept");
	cJSON_AddNumberToObject(s, "elapsed_s", (double)(proto_frame_now_ms() - lg->start_ms) / 1000.0);
	cJSON_AddBoolToObject(s, "deadline_passed", lg->deadline_passed);
	if (lg->signal)
		cJSON_AddNumberToObject(s, "signal", lg->signal);
	else
		cJSON_AddNullToObject(s, "signal");
	cJSON_AddNumberToObject(s, "exit_code", code);
	char *text = cJSON_PrintUnformatted(s);
	if (text)
		printf("%s\n", text);
	fflush(stdout);
	free(text);
	cJSON_Delete(s);
}

/* ---- set-up: options, cookie, descriptors ---- */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: loadgen --workers N --manager IP:PORT [options]\n"
		"\n"
		"Simulates N batch-agent workers (nodes --first-index .. +N-1 of an MNP job) in one\n"
		"process against one main agent, with real handshakes and sealed frames (proto/PROTOCOL.md).\n"
		"The cookie comes from --cookie-file or " COOKIE_ENV ", never from argv.\n"
		"\n"
		"  --workers N            simulated workers (1..100000)\n"
		"  --manager IP:PORT      the main agent; an IPv4 literal in 127.0.0.0/8 or 198.18.0.0/15\n"
		"  --job ID               the job id without \"#<index>\" (default: AWS_BATCH_JOB_ID's)\n"
		"  --num-nodes N          AWS_BATCH_JOB_NUM_NODES to claim (default: workers + 1)\n"
		"  --first-index I        node index of the first worker (default 1)\n"
		"  --attempt A            AWS_BATCH_JOB_ATTEMPT to claim (default 1)\n"
		"  --cookie-file PATH     the cookie (a final newline is dropped)\n"
		"  --spread S             dial the workers evenly over S seconds (default 0: all at once)\n"
		"  --no-redial            a refusal for load is final (default: redial with backoff)\n"
		"  --connect-timeout S    how long each worker keeps redialing (default 60)\n"
		"  --sources IP[-IP]      bind the workers round-robin to these loopback addresses,\n"
		"                         when one address's ephemeral ports are not enough\n"
		"  --cpus X, --memory-bytes B   what each worker registers (default 1, 2 GiB)\n"
		"  --exit-code N          the payload_exited status each worker reports (default 0)\n"
		"  --deadline S           give up on everything after S seconds (default 300)\n"
		"  --array                workers are children --job:I of an array job (array_index I,\n"
		"                         no node index), as a worker pool's (--first-index 0 fits)\n"
		"  --drain                each worker sends draining (a Spot notice) once accepted\n"
		"  --roster               offer protocol version 3: an MNP main sends each worker the\n"
		"                         roster, which it answers with ready (default: version 2)\n"
		"\n"
		"Writes one JSON object to stdout: workers, registered, completed, redials,\n"
		"redial_reasons, rejected (by code), errors (by kind), first_connect and last_accept\n"
		"(Unix seconds), cpu_s_at_last_accept (ours, when every worker was in), elapsed_s,\n"
		"deadline_passed, signal, exit_code.\n"
		"Redial reasons: busy, timeout (the manager's errors before accept), no_hello (closed,\n"
		"reset or 10 s silent before its hello), no_accept_in_time (10 s after the manager's\n"
		"last handshake message), connect_failed. Error kinds include\n"
		"gave_up_after_<reason> (--connect-timeout spent), cookie_refused (auth_failed), manager_proof_mismatch,\n"
		"manager_error_<code>,\n"
		"closed_before_accept, closed_while_running, manager_silent (3 heartbeat intervals),\n"
		"unfinished_<state> (at --deadline or a signal).\n"
		"Exit: 0 every worker registered, was shut down and reported; 1 some did not;\n"
		"2 --deadline passed; 64 usage; 71 system error; 128+N signal N.\n");
}

static bool parse_number(const char *text, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_long(const char *text, long min, long max, long *out)
{
	double v;
	if (!parse_number(text, (double)min, (double)max, &v) || floor(v) != v)
		return false;
	*out = (long)v;
	return true;
}

/* Only loopback and the test network of the developers' guide. */
static bool allowed_address(struct in_addr a)
{
	uint32_t h = ntohl(a.s_addr);
	return (h >> 24) == 127 || (h >> 17) == (0xc612u >> 1); /* 198.18.0.0/15 */
}

static bool parse_manager(const char *text, struct sockaddr_in *out)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(text, ':');
	long port;
	if (colon == NULL || (size_t)(colon - text) >= sizeof host || !parse_long(colon + 1, 1, 65535, &port))
		return false;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = '\0';
	memset(out, 0, sizeof *out);
	out->sin_family = AF_INET;
	out->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &out->sin_addr) == 1 && allowed_address(out->sin_addr);
}

static bool parse_sources(const char *text, struct options *opt)
{
	char first[INET_ADDRSTRLEN], *dash;
	struct in_addr last;
	snprintf(first, sizeof first, "%s", text);
	dash = strchr(first, '-');
	if (dash)
		*dash = '\0';
	if (inet_pton(AF_INET, first, &opt->source_first) != 1 || (ntohl(opt->source_first.s_addr) >> 24) != 127)
		return false;
	last = opt->source_first;
	if (dash && (inet_pton(AF_INET, strchr(text, '-') + 1, &last) != 1 || (ntohl(last.s_addr) >> 24) != 127 ||
		     ntohl(last.s_addr) < ntohl(opt->source_first.s_addr)))
		return false;
	opt->source_count = (long)(ntohl(last.s_addr) - ntohl(opt->source_first.s_addr)) + 1;
	return true;
}

enum opt_id { O_WORKERS = 256, O_MANAGER, O_JOB, O_NUM_NODES, O_FIRST_INDEX, O_ATTEMPT, O_COOKIE_FILE, O_SPREAD,
	      O_NO_REDIAL, O_CONNECT_TIMEOUT, O_SOURCES, O_CPUS, O_MEMORY, O_EXIT_CODE, O_DEADLINE, O_ARRAY, O_DRAIN, O_ROSTER, O_HELP };

static const struct option long_options[] = {
	{ "workers", required_argument, NULL, O_WORKERS },
	{ "manager", required_argument, NULL, O_MANAGER },
	{ "job", required_argument, NULL, O_JOB },
	{ "num-nodes", required_argument, NULL, O_NUM_NODES },
	{ "first-index", required_argument, NULL, O_FIRST_INDEX },
	{ "attempt", required_argument, NULL, O_ATTEMPT },
	{ "cookie-file", required_argument, NULL, O_COOKIE_FILE },
	{ "spread", required_argument, NULL, O_SPREAD },
	{ "no-redial", no_argument, NULL, O_NO_REDIAL },
	{ "connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT },
	{ "sources", required_argument, NULL, O_SOURCES },
	{ "cpus", required_argument, NULL, O_CPUS },
	{ "memory-bytes", required_argument, NULL, O_MEMORY },
	{ "exit-code", required_argument, NULL, O_EXIT_CODE },
	{ "deadline", required_argument, NULL, O_DEADLINE },
	{ "array", no_argument, NULL, O_ARRAY },
	{ "drain", no_argument, NULL, O_DRAIN },
	{ "roster", no_argument, NULL, O_ROSTER },
	{ "help", no_argument, NULL, O_HELP },
	{ NULL, 0, NULL, 0 },
};

/* One option into opt; false names nothing: the caller names the option. */
static bool set_option(struct options *opt, int id, const char *arg, const char **cookie_file)
{
	long l = 0;
	double d = 0;
	switch (id) {
	case O_WORKERS: return parse_long(arg, 1, 100000, &opt->workers);
	case O_MANAGER: return parse_manager(arg, &opt->manager);
	case O_JOB: opt->job = arg; return arg[0] != '\0' && strchr(arg, '#') == NULL && strlen(arg) < 128;
	case O_NUM_NODES: return parse_long(arg, 2, 100001, &opt->num_nodes);
	case O_FIRST_INDEX: return parse_long(arg, 0, 100000, &opt->first_index);
	case O_ATTEMPT: return parse_long(arg, 0, PROTO_MAX_INT, &opt->attempt);
	case O_COOKIE_FILE: *cookie_file = arg; return true;
	case O_SPREAD: return parse_number(arg, 0, 3600, &opt->spread_s);
	case O_NO_REDIAL: opt->redial = false; return true;
	case O_CONNECT_TIMEOUT: return parse_number(arg, 0, 86400, &opt->connect_timeout_s);
	case O_SOURCES: return parse_sources(arg, opt);
	case O_CPUS: return parse_number(arg, 0.001, 1e6, &opt->cpus);
	case O_MEMORY: {
		bool ok = parse_number(arg, 0, (double)PROTO_MAX_INT, &d) && floor(d) == d;
		opt->memory_bytes = (long long)d;
		return ok;
	}
	case O_EXIT_CODE: {
		bool ok = parse_long(arg, 0, 255, &l);
		opt->exit_code = (int)l;
		return ok;
	}
	case O_DEADLINE: return parse_number(arg, 0.1, 86400, &opt->deadline_s);
	case O_ARRAY: opt->array = true; return true;
	case O_DRAIN: opt->drain = true; return true;
	case O_ROSTER: opt->roster = true; return true;
	default: return false;
	}
}

static enum exit_code parse_args(int argc, char **argv, struct options *opt, const char **cookie_file)
{
	int id;
	*opt = (struct options){ .first_index = 1, .attempt = 1, .redial = true, .connect_timeout_s = 60,
				 .deadline_s = 300, .cpus = 1, .memory_bytes = 2LL << 30 };
	while ((id = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		if (id == O_HELP) {
			usage(stdout);
			exit(EXIT_ALL_DONE);
		}
		if (id == '?' || !set_option(opt, id, optarg, cookie_file)) {
			if (id != '?')
				fprintf(stderr, "loadgen: invalid value for --%s: %s\n", long_options[id - O_WORKERS].name,
					optarg);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	static char job_from_env[128];
	const char *env_job = getenv("AWS_BATCH_JOB_ID");
	if (opt->job == NULL && env_job != NULL) {
		snprintf(job_from_env, sizeof job_from_env, "%.*s", (int)strcspn(env_job, "#"), env_job);
		opt->job = job_from_env;
	}
	const char *missing = opt->workers == 0 ? "--workers" : opt->manager.sin_family == 0 ? "--manager"
			      : opt->job == NULL ? "--job (or AWS_BATCH_JOB_ID)" : NULL;
	if (optind < argc || missing) {
		fprintf(stderr, "loadgen: %s%s\n", missing ? "missing " : "unexpected argument ", missing ? missing : argv[optind]);
		return EXIT_USAGE;
	}
	if (opt->num_nodes == 0)
		opt->num_nodes = opt->first_index + opt->workers;
	return EXIT_ALL_DONE;
}

/* The cookie as the agent takes it: the file's bytes less a final newline, or the
 * environment's value, which is then wiped from the environment block. */
static enum exit_code load_cookie(struct loadgen *lg, const char *path)
{
	lg->cookie = malloc(COOKIE_MAX + 1);
	if (lg->cookie == NULL)
		return EXIT_OSERR;
	char *env = getenv(COOKIE_ENV);
	if (path != NULL) {
		FILE *f = fopen(path, "rb");
		lg->cookie_len = f ? fread(lg->cookie, 1, COOKIE_MAX + 1, f) : 0;
		if (f == NULL || ferror(f) || lg->cookie_len > COOKIE_MAX) {
			fprintf(stderr, "loadgen: cookie file %s (--cookie-file): %s\n", path,
				f == NULL ? strerror(errno) : "unreadable, or longer than 4096 bytes");
			if (f)
				fclose(f);
			return EXIT_USAGE;
		}
		fclose(f);
		while (lg->cookie_len > 0 && (lg->cookie[lg->cookie_len - 1] == '\n' || lg->cookie[lg->cookie_len - 1] == '\r'))
			lg->cookie_len--;
	} else if (env != NULL && strlen(env) <= COOKIE_MAX) {
		lg->cookie_len = strlen(env);
		memcpy(lg->cookie, env, lg->cookie_len);
	}
	if (env != NULL) {
		proto_auth_wipe(env, strlen(env));
		unsetenv(COOKIE_ENV);
	}
	if (lg->cookie_len == 0) {
		fprintf(stderr, "loadgen: no cookie: set " COOKIE_ENV " or --cookie-file (non-empty, at most 4096 bytes)\n");
		return EXIT_USAGE;
	}
	return EXIT_ALL_DONE;
}

/* Every worker holds a socket for the whole job: take the hard limit. */
static enum exit_code raise_nofile(long workers)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return EXIT_OSERR;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)workers + 16) {
		fprintf(stderr, "loadgen: descriptor limit %llu is too low for %ld workers (ulimit -Hn)\n",
			(unsigned long long)rl.rlim_cur, workers);
		return EXIT_USAGE;
	}
	return EXIT_ALL_DONE;
}

static enum exit_code setup(struct loadgen *lg)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	srandom((unsigned)getpid() ^ (unsigned)proto_frame_now_ms());
	lg->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	lg->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	lg->workers = calloc((size_t)lg->opt.workers, sizeof *lg->workers);
	lg->rejected = cJSON_CreateObject();
	lg->errors = cJSON_CreateObject();
	lg->redial_reasons = cJSON_CreateObject();
	if (lg->epoll_fd < 0 || lg->signal_fd < 0 || epoll_ctl(lg->epoll_fd, EPOLL_CTL_ADD, lg->signal_fd, &ev) < 0 ||
	    lg->workers == NULL || !lg->rejected || !lg->errors || !lg->redial_reasons) {
		perror("loadgen: set-up");
		return EXIT_OSERR;
	}
	/* Every worker's first key pair is made before the clock starts: real workers make
	 * theirs on their own machines, in parallel, and here they would take loadgen
	 * about 40 us each of the two cores the manager under test runs on. */
	for (long i = 0; i < lg->opt.workers; i++) {
		lg->workers[i].index = lg->opt.first_index + i;
		lg->workers[i].conn.fd = -1;
		if (proto_kex_new(&lg->workers[i].kex) != PROTO_OK) {
			fprintf(stderr, "loadgen: set-up: libcrypto made no key pair for worker %ld\n", i);
			return EXIT_OSERR;
		}
	}
	lg->active = lg->opt.workers;
	lg->backoff_next_ms = INT64_MAX;
	return EXIT_ALL_DONE;
}

static void teardown(struct loadgen *lg)
{
	if (lg->workers)
		for (long i = 0; i < lg->opt.workers; i++)
			close_conn(&lg->workers[i]);
	free(lg->workers);
	if (lg->cookie) {
		proto_auth_wipe(lg->cookie, COOKIE_MAX + 1);
		free(lg->cookie);
	}
	cJSON_Delete(lg->rejected);
	cJSON_Delete(lg->errors);
	cJSON_Delete(lg->redial_reasons);
	if (lg->epoll_fd >= 0)
		close(lg->epoll_fd);
	if (lg->signal_fd >= 0)
		close(lg->signal_fd);
}

int main(int argc, char **argv)
{
	struct loadgen lg = { .epoll_fd = -1, .signal_fd = -1 };
	const char *cookie_file = NULL;
	enum exit_code code = parse_args(argc, argv, &lg.opt, &cookie_file);
	if (code == EXIT_ALL_DONE)
		code = load_cookie(&lg, cookie_file);
	if (code == EXIT_ALL_DONE)
		code = raise_nofile(lg.opt.workers);
	if (code == EXIT_ALL_DONE)
		code = setup(&lg);
	if (code == EXIT_ALL_DONE) {
		code = run(&lg);
		count_unfinished(&lg);
		print_summary(&lg, code);
	}
	teardown(&lg);
	return (int)code;
}
