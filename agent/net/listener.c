/* The manager's connections. Read in the order of a connection's life: listen, accept
 * (or busy), the handshake, the registered child, the sweep of deadlines. */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define SWEEP_MS 250
#define ACCEPT_RETRY_MS 250      /* out of descriptors or memory: how long accept(2) rests */
#define REFUSALS_WINDOW_MS 60000 /* refused pre-auth peers: one summary line per window */
#define REFUSALS_LOUD_MAX 10     /* warnings per window before the rest are only counted */
#define FD_SLACK 32              /* descriptors besides the peers': stdio, epoll, signalfd, pipes, hostfile */
#define LISTEN_BACKLOG 4096
#define ACCEPT_BATCH 64          /* connections taken per turn of the loop (see on_accept) */
/* The first message (hello) is due this long after
 * accept: a worker sends it the moment its connect completes, a stranger who holds the
 * connection idle loses it. Not scaled: a worker too slow for it (valgrind on a loaded
 * machine) sees the connection end before the manager's hello and dials again. */
#define FIRST_MESSAGE_MS 1000
/* Handshakes served at once: our hello sent, accept not yet. The manager's part of one
 * (one X25519 derivation, an HKDF, four frames) is about 0.2 ms of CPU, so 256 ahead of a worker cost it
 * tens of milliseconds, and a main that gets 1% of a CPU still answers within the
 * worker's 10 s. Beyond them, peers wait in a queue with their hello read. */
#define SERVE_MAX 256

struct listener {
	struct loop *loop;
	const struct config *cfg;
	struct admit_job job;
	struct proto_kex kex;  /* our half of every peer's key exchange, until the door closes */
	struct listener_hooks hooks;
	int listen_fd;
	struct peer *peers;    /* every peer with a live connection, and registered ones */
	struct pending pend;   /* peers in the handshake: per source, the silent ones */
	size_t registered;     /* peers registered and connected */
	size_t max_pending;
	unsigned evicted;          /* silent peers evicted for a newcomer in this window */
	bool accepting;        /* false after listener_close_door */
	bool door_closed;      /* the listening socket is closed */
	bool accept_paused;    /* the listen fd is out of the loop */
	bool accept_starved;   /* accept(2) ran out of descriptors or memory: logged once per episode */
	struct rlimit nofile;  /* as inherited: the main payload gets it back */
	size_t serving;            /* peers in_service */
	struct peer *queue_head, *queue_tail; /* PEER_QUEUED, oldest first */
	bool serving_next;         /* serve_next is running: a drop inside it must not re-enter */
	unsigned char *busy_frame; /* error busy, encoded once */
	size_t busy_frame_len;
	int64_t refusals_since_ms; /* start of the current window */
	unsigned refusals_loud;    /* warned about in this window */
	unsigned refusals_quiet;   /* only counted (and logged at debug) in this window */
	unsigned busy_answered;    /* connections answered busy in this window */
	int64_t last_heartbeat_ms;
	int64_t sweep_ms;          /* min(SWEEP_MS, heartbeat / 3): heartbeats leave on a sweep */
	struct loop_timer sweep_timer, accept_timer;
};

/* ---- the log of refusals ---- */

/* Anyone who reaches the port can be refused thousands of times a second: the log must
 * not grow with them. A wrong cookie (loud) is a warning that names the peer, for the
 * first REFUSALS_LOUD_MAX of a window; garbage, oversized frames and timeouts (quiet)
 * and the loud ones past that go to debug, and one line per window counts them. */
static void refused(struct listener *ls, bool loud, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refused(struct listener *ls, bool loud, const char *fmt, ...)
{
	char line[400];
	va_list args;
	va_start(args, fmt);
	vsnprintf(line, sizeof line, fmt, args);
	va_end(args);
	if (loud && ls->refusals_loud < REFUSALS_LOUD_MAX) {
		ls->refusals_loud++;
		log_warn("%s", line);
		return;
	}
	ls->refusals_quiet++;
	log_debug("%s", line);
}

/* The summary of the window, when it has one; a new window starts at now. */
static void refusals_summary(struct listener *ls, int64_t now)
{
	long long seconds = (now - ls->refusals_since_ms + 999) / 1000;
	if (ls->refusals_quiet > 0)
		log_warn("refused %u more peer%s in the last %lld s (details at --log-level debug)", ls->refusals_quiet,
			 ls->refusals_quiet == 1 ? "" : "s", seconds);
	if (ls->evicted > 0)
		log_info("evicted %u silent peer%s in the last %lld s to make room for newcomers", ls->evicted,
			 ls->evicted == 1 ? "" : "s", seconds);
	if (ls->busy_answered > 0)
		log_info("answered %u connection%s busy in the last %lld s (at most %zu handshakes at once)",
			 ls->busy_answered, ls->busy_answered == 1 ? "" : "s", seconds, ls->max_pending);
	ls->refusals_since_ms = now;
	ls->refusals_loud = 0;
	ls->refusals_quiet = 0;
	ls->busy_answered = 0;
	ls->evicted = 0;
}

/* ---- accepting ---- */

static void on_accept(struct loop *loop, int fd, uint32_t events, void *ctx);

/* Put the listen fd back in the loop, unless accepting is over or resting. */
static void resume_accept(struct listener *ls)
{
	if (ls->accept_paused && ls->accepting && !ls->accept_timer.armed &&
	    loop_add(ls->loop, ls->listen_fd, EPOLLIN, on_accept, ls) == BA_OK)
		ls->accept_paused = false;
}

static void on_accept_timer(struct loop *loop, void *ctx)
{
	(void)loop;
	resume_accept(ctx);
}

/* The listen fd is level-triggered: a connection we cannot take for want of
 * descriptors or memory stays readable, and accepting again at once would spin. Rest a
 * while; handshakes that end meanwhile free some. */
static void rest_accept(struct listener *ls)
{
	if (!ls->accept_starved)
		log_warn("accept: %m: pausing accept, retrying every %d ms", ACCEPT_RETRY_MS);
	ls->accept_starved = true;
	loop_remove(ls->loop, ls->listen_fd);
	ls->accept_paused = true;
	loop_timer_arm(ls->loop, &ls->accept_timer, ACCEPT_RETRY_MS, on_accept_timer, ls);
}

/* Beyond the cap: one send of the encoded error busy, then close. The peer holds no
 * descriptor or memory of ours, and its worker dials again with backoff. */
static void answer_busy(struct listener *ls, int fd)
{
	if (ls->busy_answered++ == 0)
		log_warn("%zu handshakes in progress, none of them silent: answering newcomers busy until some finish",
			 ls->pend.count);
	ssize_t sent = send(fd, ls->busy_frame, ls->busy_frame_len, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)sent; /* best effort: a peer that cannot take 60 bytes learns from the close */
	close(fd);
}

static void on_message(struct conn *c, const struct proto_msg *msg, void *ctx);
static void on_lost(struct conn *c, enum proto_err err, void *ctx);

static void new_peer(struct listener *ls, int fd, const struct sockaddr_in *from)
{
	char ip[INET_ADDRSTRLEN] = "?";
	struct peer *p = calloc(1, sizeof *p);
	if (p == NULL) {
		close(fd);
		return;
	}
	p->ls = ls;
	p->state = PEER_HELLO;
	p->node_index = -1;
	inet_ntop(AF_INET, &from->sin_addr, ip, sizeof ip);
	snprintf(p->remote, sizeof p->remote, "%s:%u", ip, ntohs(from->sin_port));
	struct proto_conn pc;
	proto_frame_conn_init(&pc, fd);
	if (pending_add(&ls->pend, &p->pending, from->sin_addr.s_addr) != BA_OK) {
		close(fd);
		free(p);
		return;
	}
	if (conn_attach(&p->conn, ls->loop, &pc, on_message, on_lost, p) != BA_OK) {
		pending_remove(&ls->pend, &p->pending);
		close(fd);
		free(p);
		return;
	}
	p->next = ls->peers;
	ls->peers = p;
}

/* Room for a newcomer: the victim has sent nothing since its accept. It is told busy,
 * in case it is a worker slower than its first-message deadline: it dials again. */
static void evict(struct listener *ls, struct pending_entry *victim)
{
	struct peer *p = (struct peer *)((char *)victim - offsetof(struct peer, pending));
	ls->evicted++;
	log_debug("evicted peer %s: it sent nothing for %lld ms, and a newcomer needs its place", p->remote,
		  (long long)(util_now_ms() - p->conn.last_heard_ms));
	conn_end(&p->conn, PROTO_CODE_BUSY, "evicted: the manager is full and this connection sent nothing");
	listener_drop(p, "evicted for a newcomer");
}

static void admit_connection(struct listener *ls, int fd, const struct sockaddr_in *from)
{
	struct pending_entry *victim;
	switch (pending_verdict(&ls->pend, from->sin_addr.s_addr, &victim)) {
	case PENDING_BUSY:
		answer_busy(ls, fd);
		return;
	case PENDING_EVICT:
		evict(ls, victim);
		break;
	case PENDING_ADMIT:
		break;
	}
	new_peer(ls, fd, from);
}

static void on_accept(struct loop *loop, int fd, uint32_t events, void *ctx)
{
	struct listener *ls = ctx;
	(void)loop;
	(void)events;
	/* A bounded batch: a host that reopens connections as fast as we close them would
	 * otherwise keep us here forever, and the frames of real workers, and the sweep,
	 * would wait. The listen fd is level-triggered: the rest come next turn. */
	for (unsigned taken = 0; taken < ACCEPT_BATCH; taken++) {
		struct sockaddr_in from;
		socklen_t length = sizeof from;
		/* TCP_NODELAY comes from the listen socket: no setsockopt per peer. */
		int conn = accept4(fd, (struct sockaddr *)&from, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				rest_accept(ls);
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept: %m");
			return;
		}
		if (ls->accept_starved)
			log_info("accepting connections again");
		ls->accept_starved = false;
		admit_connection(ls, conn, &from);
	}
}

/* The door: once the job needs no more nodes, nobody new reaches the manager. The
 * listening socket is closed (a connect is refused by the kernel from now on, and what
 * waits in the backlog is reset), and peers that have not proven the cookie yet are
 * ended: the cookie they would need is about to be wiped. An authenticated peer stays
 * for its registration, which the job refuses with the reason (shutting_down,
 * rendezvous_closed). */
void listener_close_door(struct listener *ls, const char *why)
{
	if (ls->door_closed)
		return;
	ls->door_closed = true;
	ls->accepting = false;
	/* Forward secrecy from here on: no admission is left to need our key pair. */
	proto_kex_free(&ls->kex);
	loop_timer_cancel(ls->loop, &ls->accept_timer);
	if (!ls->accept_paused)
		loop_remove(ls->loop, ls->listen_fd);
	ls->accept_paused = true;
	close(ls->listen_fd);
	ls->listen_fd = -1;
	size_t ended = 0;
	for (struct peer *p = ls->peers; p; p = p->next) {
		if (p->conn.open && (p->state == PEER_HELLO || p->state == PEER_QUEUED || p->state == PEER_AUTH)) {
			/* busy, not a bare close: a worker that already has our hello would read
			 * a bare close as a broken protocol (76); busy makes it dial again, find
			 * the port closed, and end as a late node does (69). */
			conn_end(&p->conn, PROTO_CODE_BUSY, "the manager's port closed");
			listener_drop(p, "the manager's port closed");
			ended++;
		}
	}
	log_info("closed port %ld (%s): new connections are refused%s", ls->cfg->port, why,
		 ended ? ", unauthenticated handshakes ended" : "");
}

/* ---- serving: how many handshakes at once ---- */

static void queue_push(struct listener *ls, struct peer *p)
{
	p->queue_next = NULL;
	p->queue_prev = ls->queue_tail;
	if (ls->queue_tail)
		ls->queue_tail->queue_next = p;
	else
		ls->queue_head = p;
	ls->queue_tail = p;
}

static void queue_unlink(struct listener *ls, struct peer *p)
{
	if (p->queue_prev)
		p->queue_prev->queue_next = p->queue_next;
	else
		ls->queue_head = p->queue_next;
	if (p->queue_next)
		p->queue_next->queue_prev = p->queue_prev;
	else
		ls->queue_tail = p->queue_prev;
	p->queue_prev = p->queue_next = NULL;
}

/* Our hello goes out: from now on the worker counts its 10 s from it. */
static void serve(struct listener *ls, struct peer *p, cJSON *hello)
{
	p->state = PEER_AUTH;
	p->in_service = true;
	ls->serving++;
	conn_send(&p->conn, hello, PROTO_OK);
}

/* Turns for the queue, oldest first, while the window has room. */
static void serve_next(struct listener *ls)
{
	if (ls->serving_next || !ls->accepting)
		return;
	ls->serving_next = true;
	while (ls->serving < SERVE_MAX && ls->queue_head) {
		struct peer *p = ls->queue_head;
		queue_unlink(ls, p);
		cJSON *hello = p->held_hello;
		p->held_hello = NULL;
		serve(ls, p, hello);
	}
	ls->serving_next = false;
}

/* A served handshake ended (registered, refused or lost), or a queued one went away. */
static void leave_service(struct listener *ls, struct peer *p)
{
	if (p->state == PEER_QUEUED) {
		queue_unlink(ls, p);
		cJSON_Delete(p->held_hello);
		p->held_hello = NULL;
	}
	if (!p->in_service)
		return;
	p->in_service = false;
	ls->serving--;
	serve_next(ls);
}

/* The peer's hello passed: answer now if the window has room and nobody waits longer. */
static void serve_or_queue(struct listener *ls, struct peer *p, cJSON *hello)
{
	if (ls->serving < SERVE_MAX && ls->queue_head == NULL) {
		serve(ls, p, hello);
		return;
	}
	p->state = PEER_QUEUED;
	p->held_hello = hello;
	queue_push(ls, p);
}

/* ---- ending connections ---- */

void listener_drop(struct peer *p, const char *why)
{
	struct listener *ls = p->ls;
	if (!p->conn.open)
		return;
	conn_close(&p->conn);
	proto_auth_wipe(&p->admission, sizeof p->admission);
	if (p->state != PEER_REGISTERED) {
		leave_service(ls, p);
		pending_remove(&ls->pend, &p->pending);
		log_debug("dropped peer %s: %s", p->remote, why);
		p->dead = true;
		return;
	}
	ls->registered--;
	p->dead = ls->hooks.lost(ls->hooks.ctx, p, why);
}

void listener_refuse_unexpected(struct peer *p, const struct proto_msg *msg)
{
	struct admit_refusal why = { .code = PROTO_CODE_UNEXPECTED };
	snprintf(why.text, sizeof why.text, "sent an unexpected \"%s\"", proto_msg_type_name(msg->type));
	listener_refuse(p, &why);
}

void listener_refuse(struct peer *p, const struct admit_refusal *why)
{
	admit_send_refusal(&p->conn, why);
	listener_drop(p, why->text);
}

static void on_lost(struct conn *c, enum proto_err err, void *ctx)
{
	struct peer *p = ctx;
	(void)c;
	const char *why = err == PROTO_CLOSED ? "it closed the connection" : proto_strerror(err);
	/* A forged frame after the peer proved the cookie means tampering on the path, not
	 * a stranger's noise: loud, like a wrong cookie. */
	bool loud = err == PROTO_ERR_FORGED;
	if (p->state != PEER_REGISTERED && proto_err_code(err) != NULL)
		refused(p->ls, loud, "refused peer %s: %s", p->remote, why);
	listener_drop(p, why);
}

void listener_read_now(struct peer *p)
{
	conn_read_now(&p->conn);
}

/* ---- the handshake ---- */

static void refuse_peer(struct peer *p, const struct admit_refusal *why)
{
	refused(p->ls, why->loud, "refused peer %s: %s", p->remote, why->text);
	listener_refuse(p, why);
}

static void on_register(struct peer *p, const struct proto_msg *msg)
{
	struct listener *ls = p->ls;
	struct admit_refusal why;
	long index = msg->u.reg.node_index.present ? (long)msg->u.reg.node_index.value : -1;
	if (!admit_register(&ls->job, msg, &why) || !ls->hooks.admit(ls->hooks.ctx, p, &msg->u.reg, &why)) {
		if (why.reject)
			log_warn("rejected registration from %s: %s", p->remote, why.text);
		else
			log_warn("peer %s: %s", p->remote, why.text);
		listener_refuse(p, &why);
		return;
	}
	cJSON *reply = NULL;
	/* Version 3 children of an MNP job wait for the roster before their payloads start
	 * (PROTOCOL.md §4.1); a pool has none to send. */
	p->roster = !ls->job.pool && p->version >= 3;
	enum proto_err err = proto_msg_accept(ls->cfg->heartbeat_ms, p->roster, &reply);
	char *address = err == PROTO_OK ? strdup(msg->u.reg.address) : NULL;
	if (err == PROTO_OK && address == NULL)
		err = PROTO_ERR_NOMEM;
	if (err != PROTO_OK) {
		cJSON_Delete(reply);
		log_error("internal error: cannot build the accept for node %ld: %s", index, proto_strerror(err));
		struct admit_refusal internal = { .code = PROTO_CODE_INTERNAL, .text = "the manager cannot admit workers" };
		listener_refuse(p, &internal);
		return;
	}
	conn_send(&p->conn, reply, err);
	if (!p->conn.attached) {
		free(address);
		return;
	}
	p->state = PEER_REGISTERED;
	p->node_index = index;
	p->address = address;
	p->cpus = msg->u.reg.has_cpus ? msg->u.reg.cpus : 0;
	pending_remove(&ls->pend, &p->pending);
	ls->registered++;
	ls->hooks.registered(ls->hooks.ctx, p, &msg->u.reg);
	if (p->in_service) {
		p->in_service = false;
		ls->serving--;
		serve_next(ls);
	}
}

static void on_message(struct conn *c, const struct proto_msg *msg, void *ctx)
{
	struct peer *p = ctx;
	struct listener *ls = p->ls;
	struct admit_refusal why;
	cJSON *reply = NULL;
	(void)c;
	pending_heard(&ls->pend, &p->pending);
	switch (p->state) {
	case PEER_HELLO:
		if (!admit_hello(&p->admission, &ls->job, msg, &reply, &why)) {
			refuse_peer(p, &why);
			return;
		}
		p->version = p->admission.transcript.version;
		serve_or_queue(ls, p, reply);
		return;
	case PEER_QUEUED: {
		/* A worker waits for our hello: anything before it breaks §3. */
		struct admit_refusal early = { .code = PROTO_CODE_UNEXPECTED };
		snprintf(early.text, sizeof early.text, "a %s before our hello", proto_msg_type_name(msg->type));
		refuse_peer(p, &early);
		return;
	}
	case PEER_AUTH:
		if (!admit_auth(&p->admission, &ls->job, msg, &p->conn, &why)) {
			refuse_peer(p, &why);
			return;
		}
		p->state = PEER_REGISTER;
		return;
	case PEER_REGISTER:
		on_register(p, msg);
		return;
	case PEER_REGISTERED:
		if (msg->type != PROTO_MSG_HEARTBEAT)
			ls->hooks.message(ls->hooks.ctx, p, msg);
		return;
	}
}

/* ---- the sweep: deadlines, heartbeats, silence ---- */

void listener_broadcast(struct listener *ls, enum proto_err (*build)(void *arg, cJSON **out), void *arg)
{
	for (struct peer *p = ls->peers; p; p = p->next) {
		if (p->conn.attached && p->state == PEER_REGISTERED) {
			cJSON *msg = NULL;
			enum proto_err err = build(arg, &msg);
			conn_send(&p->conn, msg, err);
		}
	}
}

static enum proto_err build_heartbeat(void *arg, cJSON **out)
{
	(void)arg;
	return proto_msg_heartbeat(out);
}

/* Past its deadline by the clock, p may still have frames in the socket that a busy
 * loop has not read: read them first, and blame only real silence. */
static bool silent_for(struct peer *p, int64_t now, int64_t limit_ms)
{
	if (now - p->conn.last_heard_ms <= limit_ms)
		return false;
	conn_read_now(&p->conn);
	return p->conn.attached && now - p->conn.last_heard_ms > limit_ms;
}

static void check_peer(struct listener *ls, struct peer *p, int64_t now)
{
	char why[96];
	if (p->pending.silent && silent_for(p, now, FIRST_MESSAGE_MS)) {
		refused(ls, false, "dropped peer %s: no first message within %d ms of its connection", p->remote,
			FIRST_MESSAGE_MS);
		struct admit_refusal timeout = { .code = PROTO_CODE_TIMEOUT, .text = "no first message in time" };
		listener_refuse(p, &timeout);
	} else if (p->state == PEER_QUEUED && now - p->conn.last_heard_ms > PROTO_HANDSHAKE_TIMEOUT_MS) {
		/* Our slowness, not the peer's: its worker has stopped waiting for our hello by
		 * now and dials again; busy says so to one that has not. */
		refused(ls, false, "dropped peer %s: its turn did not come within %d s", p->remote,
			PROTO_HANDSHAKE_TIMEOUT_MS / 1000);
		struct admit_refusal busy = { .code = PROTO_CODE_BUSY, .text = "no turn in time: dial again" };
		listener_refuse(p, &busy);
	} else if (p->state != PEER_REGISTERED && silent_for(p, now, PROTO_HANDSHAKE_TIMEOUT_MS)) {
		refused(ls, false, "dropped peer %s: no handshake progress for %d s", p->remote,
			PROTO_HANDSHAKE_TIMEOUT_MS / 1000);
		struct admit_refusal timeout = { .code = PROTO_CODE_TIMEOUT, .text = "handshake not completed in time" };
		listener_refuse(p, &timeout);
	} else if (p->state == PEER_REGISTERED && silent_for(p, now, PROTO_HEARTBEAT_MISSES * ls->cfg->heartbeat_ms)) {
		snprintf(why, sizeof why, "no heartbeat for %.3g s", (double)(now - p->conn.last_heard_ms) / 1000.0);
		conn_end(&p->conn, NULL, NULL);
		listener_drop(p, why);
	}
}

static void on_sweep(struct loop *loop, void *ctx)
{
	struct listener *ls = ctx;
	int64_t now = util_now_ms();
	for (struct peer **link = &ls->peers; *link;) {
		struct peer *p = *link;
		if (p->dead) {
			*link = p->next;
			free(p->address);
			free(p);
			continue;
		}
		if (p->conn.attached)
			check_peer(ls, p, now);
		link = &p->next;
	}
	if (now - ls->refusals_since_ms >= REFUSALS_WINDOW_MS)
		refusals_summary(ls, now);
	if (now - ls->last_heartbeat_ms >= ls->cfg->heartbeat_ms) {
		ls->last_heartbeat_ms = now;
		listener_broadcast(ls, build_heartbeat, NULL);
	}
	loop_timer_arm(loop, &ls->sweep_timer, ls->sweep_ms, on_sweep, ls);
}

/* ---- set-up ---- */

static enum ba_status listen_on(long port, int *fd_out)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				       .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
	    bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
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
static enum ba_status size_pending(struct listener *ls)
{
	long num_nodes = ls->job.num_nodes;
	size_t wanted = (size_t)num_nodes * 2 + 64;
	size_t reserved = (size_t)num_nodes + FD_SLACK;
	struct rlimit raised;
	if (getrlimit(RLIMIT_NOFILE, &ls->nofile) < 0) {
		log_error("getrlimit(RLIMIT_NOFILE): %m");
		return BA_EX_OSERR;
	}
	raised = ls->nofile;
	if (raised.rlim_cur < raised.rlim_max) {
		raised.rlim_cur = raised.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &raised) < 0) {
			log_warn("cannot raise the descriptor limit to %llu: %m", (unsigned long long)raised.rlim_max);
			raised = ls->nofile;
		}
	}
	ls->max_pending = wanted;
	if (raised.rlim_cur != RLIM_INFINITY && raised.rlim_cur < reserved + wanted) {
		ls->max_pending = raised.rlim_cur > reserved + 1 ? (size_t)raised.rlim_cur - reserved : 1;
		log_warn("descriptor limit %llu: at most %zu handshakes at once (raise ulimit -n for a %ld-node job)",
			 (unsigned long long)raised.rlim_cur, ls->max_pending, num_nodes);
	}
	return BA_OK;
}

static enum ba_status encode_busy(struct listener *ls)
{
	cJSON *msg = NULL;
	enum proto_err err = proto_msg_error(PROTO_CODE_BUSY, "too many handshakes in progress: dial again later", &msg);
	if (err == PROTO_OK)
		err = proto_frame_encode(msg, PROTO_MAX_HANDSHAKE_FRAME, NULL, &ls->busy_frame, &ls->busy_frame_len);
	cJSON_Delete(msg);
	if (err == PROTO_OK)
		return BA_OK;
	log_error("internal error: cannot encode the busy answer: %s", proto_strerror(err));
	return err == PROTO_ERR_NOMEM ? BA_EX_OSERR : BA_EX_SOFTWARE;
}

enum ba_status listener_start(struct listener **out, struct loop *loop, const struct config *cfg,
			      const struct admit_job *job, const struct listener_hooks *hooks)
{
	struct listener *ls = calloc(1, sizeof *ls);
	if (ls == NULL)
		return BA_EX_OSERR;
	*ls = (struct listener){ .loop = loop, .cfg = cfg, .job = *job, .hooks = *hooks, .listen_fd = -1,
				 .accepting = true };
	*out = ls;
	ls->job.kex = &ls->kex;
	if (proto_kex_new(&ls->kex) != PROTO_OK) {
		log_error("cannot make an X25519 key pair for the key exchange");
		return BA_EX_OSERR;
	}
	enum ba_status rc = size_pending(ls);
	if (rc == BA_OK)
		rc = pending_init(&ls->pend, ls->max_pending, PENDING_PER_SOURCE_MAX);
	if (rc == BA_OK)
		rc = encode_busy(ls);
	if (rc == BA_OK)
		rc = listen_on(cfg->port, &ls->listen_fd);
	if (rc == BA_OK)
		rc = loop_add(loop, ls->listen_fd, EPOLLIN, on_accept, ls);
	if (rc != BA_OK)
		return rc;
	ls->last_heartbeat_ms = ls->refusals_since_ms = util_now_ms();
	/* Heartbeats go out from the sweep, so it must tick well within an interval: at
	 * SWEEP_MS alone, a heartbeat under ~84 ms would leave the workers silent for 3. */
	ls->sweep_ms = cfg->heartbeat_ms / 3 < SWEEP_MS ? cfg->heartbeat_ms / 3 : SWEEP_MS;
	if (ls->sweep_ms < 1)
		ls->sweep_ms = 1;
	loop_timer_arm(loop, &ls->sweep_timer, ls->sweep_ms, on_sweep, ls);
	return BA_OK;
}

void listener_free(struct listener *ls)
{
	if (ls == NULL)
		return;
	refusals_summary(ls, util_now_ms());
	while (ls->peers) {
		struct peer *p = ls->peers;
		ls->peers = p->next;
		/* Whatever is still queued (shutdown notices) goes out before we close. */
		if (p->conn.attached)
			proto_frame_flush(&p->conn.pc);
		conn_close(&p->conn);
		cJSON_Delete(p->held_hello);
		proto_auth_wipe(&p->admission, sizeof p->admission);
		free(p->address);
		free(p);
	}
	loop_timer_cancel(ls->loop, &ls->sweep_timer);
	loop_timer_cancel(ls->loop, &ls->accept_timer);
	if (ls->listen_fd >= 0) {
		if (!ls->accept_paused)
			loop_remove(ls->loop, ls->listen_fd);
		close(ls->listen_fd);
	}
	free(ls->busy_frame);
	pending_free(&ls->pend);
	proto_kex_free(&ls->kex);
	free(ls);
}

struct peer *listener_peers(const struct listener *ls)
{
	return ls->peers;
}

size_t listener_descriptors(const struct listener *ls)
{
	return ls->pend.count + ls->registered;
}

/* The payload starts with the descriptor limit we inherited, not the one we raised for
 * ourselves (some programs walk every possible descriptor), as long as what we hold
 * leaves the spawn room to open its own. */
enum ba_status listener_spawn_payload(const struct listener *ls, struct supervisor *sv, const struct payload *payload)
{
	const struct rlimit *inherited = &ls->nofile;
	struct rlimit ours;
	bool fits = inherited->rlim_cur == RLIM_INFINITY ||
		    (rlim_t)(listener_descriptors(ls) + FD_SLACK) < inherited->rlim_cur;
	bool swapped = fits && getrlimit(RLIMIT_NOFILE, &ours) == 0 && setrlimit(RLIMIT_NOFILE, inherited) == 0;
	enum ba_status rc = supervise_spawn(sv, payload);
	if (swapped && setrlimit(RLIMIT_NOFILE, &ours) < 0)
		log_warn("cannot restore the raised descriptor limit: %m");
	return rc;
}

