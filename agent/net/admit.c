/* The manager's handshake checks. */
#include "admit.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "address.h"
#include "util.h"

/* Fill why and say false: the step did not pass. reject: a reject code after
 * authentication, rather than an error code. The format attribute lets clang check
 * the callers' formats (its -Wformat=2 refuses a vprintf of an unchecked format). */
static bool vrefuse(struct admit_refusal *why, const char *code, bool reject, bool loud, const char *fmt, va_list args)
	__attribute__((format(printf, 5, 0)));
static bool vrefuse(struct admit_refusal *why, const char *code, bool reject, bool loud, const char *fmt, va_list args)
{
	why->code = code;
	why->reject = reject;
	why->loud = loud;
	vsnprintf(why->text, sizeof why->text, fmt, args);
	return false;
}

static bool refuse(struct admit_refusal *why, const char *code, bool loud, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static bool refuse(struct admit_refusal *why, const char *code, bool loud, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	vrefuse(why, code, false, loud, fmt, args);
	va_end(args);
	return false;
}

bool admit_reject(struct admit_refusal *why, const char *code, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	vrefuse(why, code, true, false, fmt, args);
	va_end(args);
	return false;
}

/* PROTOCOL.md §3: an error before authentication is logged, never answered. */
static bool refuse_error(struct admit_refusal *why, const struct proto_msg *msg, const char *when)
{
	return refuse(why, NULL, true, "%s error %s%s%s", when, msg->u.error.code, msg->u.error.message[0] ? ": " : "",
		      msg->u.error.message);
}

bool admit_hello(struct admission *a, const struct admit_job *job, const struct proto_msg *msg, cJSON **reply,
		 struct admit_refusal *why)
{
	struct proto_transcript *t = &a->transcript;
	if (msg->type == PROTO_MSG_ERROR)
		return refuse_error(why, msg, "it opened with");
	if (msg->type != PROTO_MSG_HELLO_WORKER)
		return refuse(why, PROTO_CODE_UNEXPECTED, false, "it did not start with hello");
	if (proto_msg_pick_version(msg, &t->version) != PROTO_OK)
		return refuse(why, PROTO_CODE_UNSUPPORTED_VERSION, true,
			      "no protocol version in common (this manager speaks %d)", PROTO_VERSION);
	memcpy(t->worker_nonce, msg->u.hello_worker.nonce, PROTO_NONCE_LEN);
	memcpy(t->worker_key, msg->u.hello_worker.key, PROTO_KEY_LEN);
	memcpy(t->manager_key, job->kex->pub, PROTO_KEY_LEN);
	if (proto_auth_nonce(t->manager_nonce) != PROTO_OK)
		return refuse(why, PROTO_CODE_INTERNAL, false, "no randomness for our nonce");
	/* Only random values: nothing we send before the peer's proof depends on the cookie. */
	enum proto_err err = proto_msg_hello_manager(t->version, t->manager_nonce, t->manager_key, reply);
	if (err != PROTO_OK)
		return refuse(why, PROTO_CODE_INTERNAL, false, "cannot build our hello: %s", proto_strerror(err));
	return true;
}

bool admit_auth(struct admission *a, const struct admit_job *job, const struct proto_msg *msg, struct conn *c,
		struct admit_refusal *why)
{
	struct proto_keys keys;
	cJSON *reply = NULL;
	if (msg->type == PROTO_MSG_ERROR)
		return refuse_error(why, msg, "it gave up before its proof:");
	if (msg->type != PROTO_MSG_AUTH)
		return refuse(why, PROTO_CODE_UNEXPECTED, false, "\"%s\" instead of auth", proto_msg_type_name(msg->type));
	enum proto_err err = proto_auth_keys(job->cookie->bytes, job->cookie->length, PROTO_ROLE_MANAGER, job->kex,
					     &a->transcript, &keys);
	proto_auth_wipe(a, sizeof *a);
	if (err == PROTO_ERR_AUTH)
		return refuse(why, PROTO_CODE_AUTH_FAILED, true, "authentication failed (a reflected nonce or a degenerate key)");
	if (err != PROTO_OK)
		return refuse(why, PROTO_CODE_INTERNAL, false, "cannot derive the session keys: %s", proto_strerror(err));
	if (proto_auth_check(keys.worker_proof, msg->u.auth.proof) != PROTO_OK) {
		proto_auth_wipe(&keys, sizeof keys);
		return refuse(why, PROTO_CODE_AUTH_FAILED, true, "authentication failed (a different cookie)");
	}
	err = proto_msg_auth(keys.manager_proof, &reply);
	if (err == PROTO_OK) {
		proto_frame_set_limit(&c->pc, PROTO_MAX_FRAME);
		proto_frame_seal_recv(&c->pc, keys.w2m);
		conn_send(c, reply, PROTO_OK);
		/* A send that failed closed c (and wiped its keys): nothing more to seal. */
		if (c->open)
			proto_frame_seal_send(&c->pc, keys.m2w);
	}
	proto_auth_wipe(&keys, sizeof keys);
	if (err != PROTO_OK)
		return refuse(why, PROTO_CODE_INTERNAL, false, "cannot build our proof: %s", proto_strerror(err));
	return true;
}

/* The address becomes a line of the hostfile and an entry of BATCH_AGENT_NODES: a
 * newline or a comma in it would forge nodes. */
static bool admit_address(const char *address, const char *who, struct admit_refusal *why)
{
	if (address_valid_advertised(address))
		return true;
	return admit_reject(why, PROTO_REJECT_BAD_ADDRESS, "%s advertises %zu bytes that are not an IP address or a DNS name",
		      who, strlen(address));
}

/* MNP node ids are "<job uuid>#<node index>": a child of this job carries our uuid and
 * its own index. */
static bool job_matches(const struct admit_job *job, const char *job_id, long node_index)
{
	if (job->job_prefix == NULL)
		return true;
	long suffix;
	return strncmp(job_id, job->job_prefix, job->job_prefix_length) == 0 &&
	       util_parse_long(job_id + job->job_prefix_length, 0, 100000, &suffix) && suffix == node_index;
}

bool admit_register(const struct admit_job *job, const struct proto_msg *msg, struct admit_refusal *why)
{
	const struct proto_register *reg = &msg->u.reg;
	if (msg->type == PROTO_MSG_ERROR)
		return refuse(why, NULL, false, "it gave up before registering: %s%s%s", msg->u.error.code,
			      msg->u.error.message[0] ? ": " : "", msg->u.error.message);
	if (msg->type != PROTO_MSG_REGISTER)
		return refuse(why, PROTO_CODE_UNEXPECTED, false, "it did not register");
	if (job->pool)
		return admit_address(reg->address, "the worker", why);
	long index = reg->node_index.present ? (long)reg->node_index.value : -1;
	if (index < 0 || index >= job->num_nodes || index == job->main_node_index)
		return admit_reject(why, PROTO_REJECT_NODE_OUT_OF_RANGE, "node index %ld is not a child of this %ld-node job",
			      index, job->num_nodes);
	if (!job_matches(job, reg->job_id, index))
		return admit_reject(why, PROTO_REJECT_JOB_MISMATCH, "job id \"%.100s\" is not node %ld of this job (%.100s)",
			      reg->job_id, index, job->job_id);
	/* PROTOCOL.md §3: job_mismatch also covers the job's size and attempt, where the
	 * worker knows them (null: it does not) and, for the attempt, so do we. */
	if (reg->num_nodes.present && reg->num_nodes.value != job->num_nodes)
		return admit_reject(why, PROTO_REJECT_JOB_MISMATCH, "node %ld counts %lld nodes in the job, this job has %ld",
			      index, (long long)reg->num_nodes.value, job->num_nodes);
	if (reg->attempt.present && job->attempt > 0 && reg->attempt.value != job->attempt)
		return admit_reject(why, PROTO_REJECT_JOB_MISMATCH, "node %ld is from attempt %lld of the job, this is attempt %ld",
			      index, (long long)reg->attempt.value, job->attempt);
	char who[32];
	snprintf(who, sizeof who, "node %ld", index);
	return admit_address(reg->address, who, why);
}

void admit_send_refusal(struct conn *c, const struct admit_refusal *why)
{
	cJSON *msg = NULL;
	if (why->reject && why->code != NULL && proto_msg_reject(why->code, why->text, &msg) == PROTO_OK) {
		proto_frame_send(&c->pc, msg);
		conn_end(c, NULL, NULL);
	} else {
		conn_end(c, why->code, why->text);
	}
	cJSON_Delete(msg);
}
