/* Stage 5: the native handshake, worker side. */
#include "handshake.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "dial.h"
#include "log.h"
#include "signals.h"
#include "status.h"

#define AGENT_NAME "batch-agent " BATCH_AGENT_VERSION

int handshake_conn_failure(int proto_err, const char *peer, const char *during)
{
	switch (proto_err) {
	case PROTO_ERR_TIMEOUT:
		log_error("%s did not answer %s within %d s: not a batch-agent manager, or stuck", peer, during,
			  PROTO_HANDSHAKE_TIMEOUT_MS / 1000);
		return BA_EX_PROTOCOL;
	case PROTO_CLOSED:
	case PROTO_ERR_TRUNCATED:
		log_error("%s closed the connection %s", peer, during);
		return BA_EX_PROTOCOL;
	case PROTO_ERR_IO:
		log_error("connection to %s failed %s: %s", peer, during, strerror(errno));
		return BA_EX_UNAVAILABLE;
	case PROTO_ERR_NOMEM:
		log_error("out of memory %s", during);
		return BA_EX_OSERR;
	default:
		log_error("%s broke the protocol %s: %s", peer, during, proto_strerror(proto_err));
		return BA_EX_PROTOCOL;
	}
}

/* The waits below also watch signals_fd() (the connection's interrupt fd): a SIGTERM
 * must not wait out a 10 s handshake. A terminating signal ends the handshake with
 * 128+N in *signal_status; others are consumed and the wait resumes, same deadline. */
static int recv_wait(struct proto_conn *conn, cJSON **json, int64_t deadline, int *signal_status)
{
	for (;;) {
		int err = proto_frame_recv_wait(conn, json, deadline);
		if (err != PROTO_ERR_INTERRUPTED)
			return err;
		*signal_status = dial_pending_signal();
		if (*signal_status != BA_OK)
			return err;
	}
}

static int send_wait(struct proto_conn *conn, const cJSON *msg, int64_t deadline, int *signal_status)
{
	/* Interrupted, the message is queued already: only flushing is left to do. */
	int err = proto_frame_send_wait(conn, msg, deadline);
	while (err == PROTO_ERR_INTERRUPTED) {
		*signal_status = dial_pending_signal();
		if (*signal_status != BA_OK)
			return err;
		err = proto_frame_flush_wait(conn, deadline);
	}
	return err;
}

/* Send one message built by the caller; takes ownership of msg. */
static int send_message(struct proto_conn *conn, cJSON *msg, int build_err, int64_t deadline, const char *peer,
			const char *during)
{
	int signal_status = BA_OK;
	int err = build_err;
	if (build_err != PROTO_OK)
		log_error("internal error: cannot build our message %s: %s", during, proto_strerror(build_err));
	else
		err = send_wait(conn, msg, deadline, &signal_status);
	cJSON_Delete(msg);
	if (build_err != PROTO_OK)
		return BA_EX_SOFTWARE;
	if (err == PROTO_ERR_INTERRUPTED)
		return signal_status;
	return err == PROTO_OK ? BA_OK : handshake_conn_failure(err, peer, during);
}

/* The manager sent an error instead of what we expected. */
static int receive_error(const struct proto_msg *msg, const char *peer, const char *during)
{
	bool auth = strcmp(msg->u.error.code, PROTO_CODE_AUTH_FAILED) == 0;
	log_error("%s refused us %s: %s%s%s", peer, during, msg->u.error.code, msg->u.error.message[0] ? ": " : "",
		  msg->u.error.message);
	if (auth)
		log_error("the manager does not accept our cookie: the two sides have different cookies");
	return auth ? BA_EX_NOPERM : BA_EX_PROTOCOL;
}

static void tell_and_close(struct proto_conn *conn, const char *code, const char *message, int64_t deadline);

/* A frame or message from the manager that breaks the protocol: tell it which way
 * (PROTOCOL.md §1), then log and map as handshake_conn_failure does. */
static int broken_frame(struct proto_conn *conn, int err, int64_t deadline, const char *peer, const char *during)
{
	if (err == PROTO_ERR_BAD_MESSAGE)
		tell_and_close(conn, PROTO_CODE_BAD_MESSAGE, proto_strerror(err), deadline);
	else if (err == PROTO_ERR_TOO_LARGE || err == PROTO_ERR_BAD_JSON)
		tell_and_close(conn, PROTO_CODE_BAD_FRAME, proto_strerror(err), deadline);
	return handshake_conn_failure(err, peer, during);
}

/* Receive and parse one message; *json keeps the strings of *msg alive. */
static int receive_message(struct proto_conn *conn, int64_t deadline, cJSON **json, struct proto_msg *msg,
			   const char *peer, const char *during)
{
	int signal_status = BA_OK;
	int err = recv_wait(conn, json, deadline, &signal_status);
	if (err == PROTO_ERR_INTERRUPTED)
		return signal_status;
	if (err == PROTO_OK)
		err = proto_msg_parse(*json, msg);
	if (err != PROTO_OK)
		return broken_frame(conn, err, deadline, peer, during);
	if (msg->type == PROTO_MSG_ERROR)
		return receive_error(msg, peer, during);
	return BA_OK;
}

static void tell_and_close(struct proto_conn *conn, const char *code, const char *message, int64_t deadline)
{
	cJSON *msg = NULL;
	if (proto_msg_error(code, message, &msg) == PROTO_OK)
		proto_frame_send_wait(conn, msg, deadline);
	cJSON_Delete(msg);
}

static struct proto_opt_int optional(long value)
{
	return (struct proto_opt_int){ .present = value >= 0, .value = value };
}

int handshake_worker(const struct config *cfg, struct proto_conn *conn, const struct cookie *cookie,
		     const struct manager_address *manager, const struct node_self *self, int64_t *heartbeat_ms)
{
	const char *peer = manager->display;
	int64_t deadline = proto_frame_now_ms() + PROTO_HANDSHAKE_TIMEOUT_MS;
	unsigned char worker_nonce[PROTO_NONCE_LEN], proof[PROTO_PROOF_LEN];
	cJSON *json = NULL, *msg = NULL;
	struct proto_msg reply;
	int rc;

	if (proto_auth_nonce(worker_nonce) != PROTO_OK) {
		log_error("no randomness for the authentication nonce");
		return BA_EX_OSERR;
	}
	proto_frame_set_interrupt_fd(conn, signals_fd());
	rc = proto_msg_hello_worker(worker_nonce, AGENT_NAME, &msg);
	rc = send_message(conn, msg, rc, deadline, peer, "to our hello");
	if (rc != BA_OK)
		goto out;

	/* No hello at all: a manager that is restarting closes, one at its cap of
	 * handshakes leaves us in its backlog. Either way, try again. */
	int signal_status = BA_OK;
	int err = recv_wait(conn, &json, deadline, &signal_status);
	if (err == PROTO_ERR_INTERRUPTED) {
		rc = signal_status;
		goto out;
	}
	if (err == PROTO_CLOSED || err == PROTO_ERR_IO || err == PROTO_ERR_TIMEOUT) {
		log_info("%s %s before its hello (busy or restarting)", peer,
			 err == PROTO_ERR_TIMEOUT ? "said nothing" : "closed the connection");
		rc = HANDSHAKE_RETRY;
		goto out;
	}
	if (err == PROTO_OK)
		err = proto_msg_parse(json, &reply);
	if (err != PROTO_OK) {
		rc = broken_frame(conn, err, deadline, peer, "during the hello");
		goto out;
	}
	if (reply.type == PROTO_MSG_ERROR) {
		rc = receive_error(&reply, peer, "during the hello");
		goto out;
	}
	if (reply.type != PROTO_MSG_HELLO_MANAGER) {
		log_error("%s answered our hello with \"%s\"%s, not a manager's hello", peer, proto_msg_type_name(reply.type),
			  reply.type == PROTO_MSG_HELLO_WORKER ? " (a worker's)" : "");
		tell_and_close(conn, PROTO_CODE_UNEXPECTED, "expected the manager's hello", deadline);
		rc = BA_EX_PROTOCOL;
		goto out;
	}
	/* We offered PROTO_VERSION only (PROTOCOL.md §3, step 3): any other choice is not
	 * one we can speak, whatever its proof says. */
	if (reply.u.hello_manager.version != PROTO_VERSION) {
		log_error("%s chose protocol version %d, which we did not offer (we speak %d)", peer,
			  reply.u.hello_manager.version, PROTO_VERSION);
		tell_and_close(conn, PROTO_CODE_UNSUPPORTED_VERSION, "this worker speaks version 1 only", deadline);
		rc = BA_EX_PROTOCOL;
		goto out;
	}
	/* The manager proves the cookie first; we prove nothing to a peer that has not. */
	if (proto_auth_verify(cookie->bytes, cookie->length, reply.u.hello_manager.version, PROTO_ROLE_MANAGER,
			      worker_nonce, reply.u.hello_manager.nonce, reply.u.hello_manager.proof) != PROTO_OK) {
		log_error("%s failed to prove the cookie: the two sides have different cookies, or it is not our "
			  "manager", peer);
		tell_and_close(conn, PROTO_CODE_AUTH_FAILED, "manager proof does not match", deadline);
		rc = BA_EX_NOPERM;
		goto out;
	}
	proto_frame_set_limit(conn, PROTO_MAX_FRAME);
	if (proto_auth_proof(cookie->bytes, cookie->length, reply.u.hello_manager.version, PROTO_ROLE_WORKER,
			     worker_nonce, reply.u.hello_manager.nonce, proof) != PROTO_OK) {
		rc = BA_EX_OSERR;
		goto out;
	}
	cJSON_Delete(json);
	json = NULL;
	rc = proto_msg_auth(proof, &msg);
	rc = send_message(conn, msg, rc, deadline, peer, "to our proof");
	if (rc != BA_OK)
		goto out;

	char hostname[256] = "";
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
		.address = self->address,
		.agent_version = BATCH_AGENT_VERSION,
		.has_cpus = self->cpus > 0,
		.cpus = self->cpus,
		.memory_limit_bytes = { .present = self->memory_bytes > 0, .value = self->memory_bytes },
	};
	rc = proto_msg_register(&reg, &msg);
	rc = send_message(conn, msg, rc, deadline, peer, "to our registration");
	if (rc != BA_OK)
		goto out;

	rc = receive_message(conn, deadline, &json, &reply, peer, "to our registration");
	if (rc != BA_OK)
		goto out;
	if (reply.type == PROTO_MSG_REJECT) {
		log_error("%s rejected our registration: %s%s%s", peer, reply.u.reject.code,
			  reply.u.reject.message[0] ? ": " : "", reply.u.reject.message);
		rc = BA_EX_NOPERM;
		goto out;
	}
	if (reply.type != PROTO_MSG_ACCEPT) {
		log_error("%s answered our registration with \"%s\"", peer, proto_msg_type_name(reply.type));
		tell_and_close(conn, PROTO_CODE_UNEXPECTED, "expected accept or reject", deadline);
		rc = BA_EX_PROTOCOL;
		goto out;
	}
	*heartbeat_ms = reply.u.accept.heartbeat_interval_ms;
	log_info("registered with the manager at %s as %s", peer, self->address);
out:
	/* The session that follows waits in its loop, which reads the signals itself. */
	proto_frame_set_interrupt_fd(conn, -1);
	proto_auth_wipe(proof, sizeof proof);
	cJSON_Delete(json);
	return rc;
}
