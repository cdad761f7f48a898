/* Stage 5: the native handshake, worker side (PROTOCOL.md §3).
 *
 *   W -> M  hello {versions, nonce wn, key wk}
 *   M -> W  hello {version, nonce mn, key mk}     (or error busy: dial again)
 *   W       check the version; X25519 + HKDF: wp, mp, k_w2m, k_m2w
 *   W -> M  auth {proof wp}                       then our direction is sealed
 *   W -> M  register {job, node, address, ...}    (sealed)
 *   M -> W  auth {proof mp}                       (or error auth_failed: other cookie)
 *   W       check mp; the manager's direction is sealed from here on
 *   M -> W  accept {heartbeat_interval_ms, roster} | reject {code}
 *
 * Every wait goes through the agent's one signal-aware wait (the codec's wait hook),
 * and lasts PROTO_HANDSHAKE_TIMEOUT_MS from the manager's last frame. */
#include "handshake.h"

#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "util.h"
#include "wait.h"

#define AGENT_NAME "batch-agent " BATCH_AGENT_VERSION

struct handshake {
	const struct config *cfg;
	struct proto_conn *conn;
	const struct cookie *cookie;
	const struct node_self *self;
	const char *peer;
	int64_t deadline;       /* PROTO_HANDSHAKE_TIMEOUT_MS after the manager's last frame */
	bool heard_hello;       /* before it, a silent or closing manager is busy, not broken */
	enum ba_status signal;  /* 128+N when the wait ended for a terminating signal */
	struct proto_kex kex;        /* ours, for this connection only */
	struct proto_transcript transcript;
	struct proto_keys keys;      /* wiped when the handshake ends */
};

/* The codec's wait: the agent's, which also watches the signals. */
static enum proto_err wait_hook(int fd, short events, int64_t deadline_ms, void *ctx)
{
	struct handshake *h = ctx;
	bool ready;
	enum ba_status rc = wait_fd(fd, events, deadline_ms, &ready);
	if (rc == BA_EX_OSERR)
		return PROTO_ERR_IO;
	if (rc != BA_OK) {
		h->signal = rc;
		return PROTO_ERR_INTERRUPTED;
	}
	return ready ? PROTO_OK : PROTO_ERR_TIMEOUT;
}

/* Best effort: the code the manager should hear before we close. */
static void tell(struct handshake *h, const char *code, const char *message)
{
	cJSON *msg = NULL;
	if (code != NULL && proto_msg_error(code, message, &msg) == PROTO_OK)
		proto_frame_send_wait(h->conn, msg, h->deadline);
	cJSON_Delete(msg);
}

/* A codec error ended the handshake: tell the manager (the one mapping, next to
 * proto_strerror), log, and give the status. */
static enum ba_status failed(struct handshake *h, enum proto_err err, const char *during)
{
	if (err == PROTO_ERR_INTERRUPTED)
		return h->signal;
	if (!h->heard_hello && (err == PROTO_CLOSED || err == PROTO_ERR_IO || err == PROTO_ERR_TIMEOUT)) {
		log_info("%s %s before its hello (busy or restarting)", h->peer,
			 err == PROTO_ERR_TIMEOUT ? "said nothing" : "closed the connection");
		return BA_EX_TEMPFAIL;
	}
	tell(h, proto_err_code(err), proto_strerror(err));
	switch (err) {
	case PROTO_ERR_TIMEOUT:
		log_error("%s did not answer %s within %d s: not a batch-agent manager, or stuck", h->peer, during,
			  PROTO_HANDSHAKE_TIMEOUT_MS / 1000);
		return BA_EX_TEMPFAIL;
	case PROTO_CLOSED:
	case PROTO_ERR_TRUNCATED:
		log_error("%s closed the connection %s", h->peer, during);
		return BA_EX_PROTOCOL;
	case PROTO_ERR_IO:
		log_error("connection to %s failed %s: %m", h->peer, during);
		return BA_EX_UNAVAILABLE;
	case PROTO_ERR_NOMEM:
		log_error("out of memory %s", during);
		return BA_EX_OSERR;
	default:
		log_error("%s broke the protocol %s: %s", h->peer, during, proto_strerror(err));
		return BA_EX_PROTOCOL;
	}
}

/* Send one message built by the caller; takes ownership of msg. */
static enum ba_status send_message(struct handshake *h, cJSON *msg, enum proto_err build_err, const char *during)
{
	enum proto_err err = build_err;
	if (build_err != PROTO_OK)
		log_error("internal error: cannot build our message %s: %s", during, proto_strerror(build_err));
	else
		err = proto_frame_send_wait(h->conn, msg, h->deadline);
	cJSON_Delete(msg);
	if (build_err != PROTO_OK)
		return BA_EX_SOFTWARE;
	return err == PROTO_OK ? BA_OK : failed(h, err, during);
}

/* The manager sent an error instead of what we expected. busy and timeout refuse us
 * for load, not for who we are: dial again. */
static enum ba_status receive_error(struct handshake *h, const struct proto_msg *msg, const char *during)
{
	const char *code = msg->u.error.code;
	const char *sep = msg->u.error.message[0] ? ": " : "";
	if (strcmp(code, PROTO_CODE_BUSY) == 0 || strcmp(code, PROTO_CODE_TIMEOUT) == 0) {
		log_info("%s refused us %s for load (%s%s%s): dialing again", h->peer, during, code, sep,
			 msg->u.error.message);
		return BA_EX_TEMPFAIL;
	}
	log_error("%s refused us %s: %s%s%s", h->peer, during, code, sep, msg->u.error.message);
	if (strcmp(code, PROTO_CODE_AUTH_FAILED) != 0)
		return BA_EX_PROTOCOL;
	log_error("the manager does not accept our cookie: the two sides have different cookies");
	return BA_EX_NOPERM;
}

/* Receive and parse one message; *json keeps the strings of *msg alive. A frame is
 * the manager's progress: the next wait counts from it. */
static enum ba_status receive_message(struct handshake *h, cJSON **json, struct proto_msg *msg, const char *during)
{
	enum proto_err err = proto_frame_recv_wait(h->conn, json, h->deadline);
	if (err == PROTO_OK) {
		h->deadline = util_now_ms() + PROTO_HANDSHAKE_TIMEOUT_MS;
		err = proto_msg_parse(*json, msg);
	}
	if (err != PROTO_OK)
		return failed(h, err, during);
	if (msg->type == PROTO_MSG_ERROR)
		return receive_error(h, msg, during);
	return BA_OK;
}

static enum ba_status send_hello(struct handshake *h)
{
	cJSON *msg = NULL;
	if (proto_auth_nonce(h->transcript.worker_nonce) != PROTO_OK) {
		log_error("no randomness for the authentication nonce");
		return BA_EX_OSERR;
	}
	if (proto_kex_new(&h->kex) != PROTO_OK) {
		log_error("cannot make an X25519 key pair for the key exchange");
		return BA_EX_OSERR;
	}
	memcpy(h->transcript.worker_key, h->kex.pub, PROTO_KEY_LEN);
	/* An --exec payload speaks the steady state itself, as version 2 has it: it never
	 * sees a roster (PROTOCOL.md §4.1). */
	static const int exec_versions[] = { 2 };
	enum proto_err err = h->cfg->exec ? proto_msg_hello_worker_versions(h->transcript.worker_nonce, h->kex.pub,
									    AGENT_NAME, exec_versions, 1, &msg)
					  : proto_msg_hello_worker(h->transcript.worker_nonce, h->kex.pub, AGENT_NAME, &msg);
	return send_message(h, msg, err, "to our hello");
}

/* The manager's hello: the version we offered, and its half of the key exchange. */
static enum ba_status check_hello(struct handshake *h, const struct proto_msg *reply)
{
	if (reply->type != PROTO_MSG_HELLO_MANAGER) {
		log_error("%s answered our hello with \"%s\"%s, not a manager's hello", h->peer,
			  proto_msg_type_name(reply->type), reply->type == PROTO_MSG_HELLO_WORKER ? " (a worker's)" : "");
		tell(h, PROTO_CODE_UNEXPECTED, "expected the manager's hello");
		return BA_EX_PROTOCOL;
	}
	/* We offered PROTO_VERSION_MIN to PROTO_VERSION (PROTOCOL.md §3, step 4). */
	int version = reply->u.hello_manager.version;
	if (version < PROTO_VERSION_MIN || version > PROTO_VERSION) {
		log_error("%s chose protocol version %d, which we did not offer (we speak %d to %d)", h->peer, version,
			  PROTO_VERSION_MIN, PROTO_VERSION);
		tell(h, PROTO_CODE_UNSUPPORTED_VERSION, "this worker speaks versions 2 and 3");
		return BA_EX_PROTOCOL;
	}
	h->transcript.version = version;
	memcpy(h->transcript.manager_nonce, reply->u.hello_manager.nonce, PROTO_NONCE_LEN);
	memcpy(h->transcript.manager_key, reply->u.hello_manager.key, PROTO_KEY_LEN);
	enum proto_err err = proto_auth_keys(h->cookie->bytes, h->cookie->length, PROTO_ROLE_WORKER, &h->kex,
					     &h->transcript, &h->keys);
	if (err == PROTO_ERR_AUTH) {
		log_error("%s sent a hello we cannot authenticate against (our own nonce, or a degenerate key): "
			  "not our manager", h->peer);
		tell(h, PROTO_CODE_AUTH_FAILED, "reflected nonce or degenerate key");
		return BA_EX_NOPERM;
	}
	if (err != PROTO_OK) {
		log_error("cannot derive the session keys: %s", proto_strerror(err));
		return BA_EX_OSERR;
	}
	return BA_OK;
}

/* Steps 2 to 4: the manager's hello, then our proof; what we send next is sealed. */
static enum ba_status authenticate(struct handshake *h)
{
	cJSON *json = NULL, *msg = NULL;
	struct proto_msg reply;
	enum ba_status rc = receive_message(h, &json, &reply, "during the hello");
	if (rc == BA_OK)
		rc = check_hello(h, &reply);
	cJSON_Delete(json);
	if (rc != BA_OK)
		return rc;
	h->heard_hello = true;
	enum proto_err err = proto_msg_auth(h->keys.worker_proof, &msg);
	rc = send_message(h, msg, err, "to our proof");
	if (rc == BA_OK)
		proto_frame_seal_send(h->conn, h->keys.w2m);
	return rc;
}

/* Step 7: the manager proves the cookie, for this very exchange; from its next frame
 * on, what it sends is sealed. */
static enum ba_status check_manager_proof(struct handshake *h)
{
	cJSON *json = NULL;
	struct proto_msg reply;
	enum ba_status rc = receive_message(h, &json, &reply, "after our proof");
	if (rc == BA_OK && reply.type != PROTO_MSG_AUTH) {
		log_error("%s answered our proof with \"%s\", not its own proof", h->peer, proto_msg_type_name(reply.type));
		tell(h, PROTO_CODE_UNEXPECTED, "expected the manager's auth");
		rc = BA_EX_PROTOCOL;
	} else if (rc == BA_OK && proto_auth_check(h->keys.manager_proof, reply.u.auth.proof) != PROTO_OK) {
		log_error("%s failed to prove the cookie: the two sides have different cookies, or it is not our "
			  "manager", h->peer);
		tell(h, PROTO_CODE_AUTH_FAILED, "manager proof does not match");
		rc = BA_EX_NOPERM;
	}
	cJSON_Delete(json);
	if (rc == BA_OK) {
		proto_frame_set_limit(h->conn, PROTO_MAX_FRAME);
		proto_frame_seal_recv(h->conn, h->keys.m2w);
	}
	return rc;
}

static struct proto_opt_int optional(long value)
{
	return (struct proto_opt_int){ .present = value >= 0, .value = value };
}

static enum ba_status send_register(struct handshake *h)
{
	const struct config *cfg = h->cfg;
	char hostname[256] = "";
	cJSON *msg = NULL;
	gethostname(hostname, sizeof hostname - 1);
	struct proto_register reg = {
		.job_id = cfg->batch.job_id ? cfg->batch.job_id : "",
		.attempt = optional(cfg->batch.attempt),
		.array_index = optional(cfg->batch.array_index),
		.node_index = optional(cfg->batch.node_index),
		.num_nodes = optional(cfg->batch.num_nodes),
		.queue = cfg->batch.queue,
		.compute_environment = cfg->batch.compute_environment,
		.hostname = hostname,
		.address = h->self->address,
		.agent_version = BATCH_AGENT_VERSION,
		.has_cpus = h->self->cpus > 0,
		.cpus = h->self->cpus,
		.memory_limit_bytes = { .present = h->self->memory_bytes > 0, .value = h->self->memory_bytes },
	};
	enum proto_err err = proto_msg_register(&reg, &msg);
	if (err == PROTO_OK) {
		err = proto_frame_send_wait(h->conn, msg, h->deadline);
		cJSON_Delete(msg);
		/* A manager that refused our proof has closed, maybe before this went out (a
		 * reset): its answer is in our socket all the same, and the next read says
		 * why (auth_failed: 77), or that the connection is gone. */
		return err == PROTO_OK || err == PROTO_ERR_IO ? BA_OK : failed(h, err, "to our registration");
	}
	return send_message(h, msg, err, "to our registration");
}

/* Step 8: accept (with the heartbeat interval, and whether a roster follows) or reject. */
static enum ba_status receive_verdict(struct handshake *h, struct handshake_result *result)
{
	cJSON *json = NULL;
	struct proto_msg reply;
	enum ba_status rc = receive_message(h, &json, &reply, "to our registration");
	if (rc == BA_OK && reply.type == PROTO_MSG_REJECT) {
		log_error("%s rejected our registration: %s%s%s", h->peer, reply.u.reject.code,
			  reply.u.reject.message[0] ? ": " : "", reply.u.reject.message);
		rc = BA_EX_NOPERM;
	} else if (rc == BA_OK && reply.type != PROTO_MSG_ACCEPT) {
		log_error("%s answered our registration with \"%s\"", h->peer, proto_msg_type_name(reply.type));
		tell(h, PROTO_CODE_UNEXPECTED, "expected accept or reject");
		rc = BA_EX_PROTOCOL;
	} else if (rc == BA_OK && reply.u.accept.roster && h->transcript.version < 3) {
		log_error("%s promised a roster in a version %d session, which has none", h->peer, h->transcript.version);
		tell(h, PROTO_CODE_BAD_MESSAGE, "a roster is version 3");
		rc = BA_EX_PROTOCOL;
	} else if (rc == BA_OK) {
		result->heartbeat_ms = reply.u.accept.heartbeat_interval_ms;
		result->version = h->transcript.version;
		result->roster = reply.u.accept.roster;
		log_info("registered with the manager at %s as %s", h->peer, h->self->address);
	}
	cJSON_Delete(json);
	return rc;
}

enum ba_status handshake_worker(const struct config *cfg, struct proto_conn *conn, const struct cookie *cookie,
				const struct manager_address *manager, const struct node_self *self,
				struct handshake_result *result)
{
	struct handshake h = { .cfg = cfg, .conn = conn, .cookie = cookie, .self = self, .peer = manager->display,
			       .deadline = util_now_ms() + PROTO_HANDSHAKE_TIMEOUT_MS };
	proto_frame_set_wait(conn, wait_hook, &h);
	/* With --exec the payload inherits the socket: whatever the manager sends after
	 * accept must still be in it. */
	proto_frame_set_exact(conn, cfg->exec);
	enum ba_status rc = send_hello(&h);
	if (rc == BA_OK)
		rc = authenticate(&h);
	if (rc == BA_OK)
		rc = send_register(&h);
	if (rc == BA_OK)
		rc = check_manager_proof(&h);
	if (rc == BA_OK)
		rc = receive_verdict(&h, result);
	/* The session keys live on in conn alone; the exchange is forgotten. */
	proto_kex_free(&h.kex);
	proto_auth_wipe(&h.keys, sizeof h.keys);
	/* h goes out of scope: the session that follows waits in its own loop. */
	proto_frame_set_wait(conn, NULL, NULL);
	return rc;
}
