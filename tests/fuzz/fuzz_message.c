/* Messages (PROTOCOL.md §2): the typed parser on a frame's payload, as a peer sends it.
 *
 * Input: one frame payload (the bytes after the length), decoded as the reader decodes
 * it, then parsed as a message.
 *
 * Checked beyond "no crash": every message the parser accepts is rebuilt from its
 * parsed fields with the codec's builder for its type; the builder must accept it (what
 * we accept we can send), the built message must parse to the same fields, and it must
 * survive the wire (encode, decode, parse) unchanged. A worker's hello that the
 * manager's version pick accepts names that version. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "proto.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

static bool same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_int(struct proto_opt_int a, struct proto_opt_int b)
{
	return a.present == b.present && (!a.present || a.value == b.value);
}

static bool same_register(const struct proto_register *a, const struct proto_register *b)
{
	return same_str(a->job_id, b->job_id) && same_int(a->attempt, b->attempt) &&
	       same_int(a->array_index, b->array_index) && same_int(a->node_index, b->node_index) &&
	       same_int(a->num_nodes, b->num_nodes) && same_str(a->queue, b->queue) &&
	       same_str(a->compute_environment, b->compute_environment) && same_str(a->hostname, b->hostname) &&
	       same_str(a->address, b->address) && same_str(a->agent_version, b->agent_version) &&
	       a->has_cpus == b->has_cpus && (!a->has_cpus || a->cpus == b->cpus) &&
	       same_int(a->memory_limit_bytes, b->memory_limit_bytes);
}

static bool same_roster(const struct proto_msg *a, const struct proto_msg *b)
{
	if (a->u.roster.num_nodes != b->u.roster.num_nodes || a->u.roster.offset != b->u.roster.offset ||
	    a->u.roster.count != b->u.roster.count)
		return false;
	for (size_t i = 0; i < a->u.roster.count; i++) {
		const struct proto_roster_node *x = &a->u.roster.nodes[i], *y = &b->u.roster.nodes[i];
		if (x->node_index != y->node_index || !same_str(x->address, y->address) || x->cpus != y->cpus)
			return false;
	}
	return true;
}

/* The fields that the builder of a's type takes: equal in a and b. */
static bool same_message(const struct proto_msg *a, const struct proto_msg *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case PROTO_MSG_HELLO_WORKER:
		return memcmp(a->u.hello_worker.nonce, b->u.hello_worker.nonce, PROTO_NONCE_LEN) == 0 &&
		       memcmp(a->u.hello_worker.key, b->u.hello_worker.key, PROTO_KEY_LEN) == 0 &&
		       same_str(a->u.hello_worker.agent, b->u.hello_worker.agent) &&
		       a->u.hello_worker.n_versions == b->u.hello_worker.n_versions &&
		       memcmp(a->u.hello_worker.versions, b->u.hello_worker.versions,
			      a->u.hello_worker.n_versions * sizeof a->u.hello_worker.versions[0]) == 0;
	case PROTO_MSG_HELLO_MANAGER:
		return a->u.hello_manager.version == b->u.hello_manager.version &&
		       memcmp(a->u.hello_manager.nonce, b->u.hello_manager.nonce, PROTO_NONCE_LEN) == 0 &&
		       memcmp(a->u.hello_manager.key, b->u.hello_manager.key, PROTO_KEY_LEN) == 0;
	case PROTO_MSG_AUTH:
		return memcmp(a->u.auth.proof, b->u.auth.proof, PROTO_PROOF_LEN) == 0;
	case PROTO_MSG_REGISTER:
		return same_register(&a->u.reg, &b->u.reg);
	case PROTO_MSG_ACCEPT:
		return a->u.accept.heartbeat_interval_ms == b->u.accept.heartbeat_interval_ms &&
		       a->u.accept.roster == b->u.accept.roster;
	case PROTO_MSG_ROSTER:
		return same_roster(a, b);
	case PROTO_MSG_READY:
		return true;
	case PROTO_MSG_REJECT:
		return same_str(a->u.reject.code, b->u.reject.code) && same_str(a->u.reject.message, b->u.reject.message);
	case PROTO_MSG_ERROR:
		return same_str(a->u.error.code, b->u.error.code) && same_str(a->u.error.message, b->u.error.message);
	case PROTO_MSG_HEARTBEAT:
		return true;
	case PROTO_MSG_PAYLOAD_STARTED:
		return a->u.payload_started.pid == b->u.payload_started.pid;
	case PROTO_MSG_PAYLOAD_EXITED:
		return a->u.payload_exited.signaled == b->u.payload_exited.signaled &&
		       (a->u.payload_exited.signaled ? a->u.payload_exited.signal == b->u.payload_exited.signal
						     : a->u.payload_exited.exit_code == b->u.payload_exited.exit_code);
	case PROTO_MSG_DRAINING:
		return same_str(a->u.draining.reason, b->u.draining.reason) &&
		       same_str(a->u.draining.deadline, b->u.draining.deadline);
	case PROTO_MSG_SHUTDOWN:
		return a->u.shutdown.grace_ms == b->u.shutdown.grace_ms &&
		       same_str(a->u.shutdown.reason, b->u.shutdown.reason);
	case PROTO_MSG_NONE:
		break;
	}
	return false;
}

static enum proto_err build(const struct proto_msg *m, cJSON **out)
{
	switch (m->type) {
	case PROTO_MSG_HELLO_WORKER:
		return proto_msg_hello_worker_versions(m->u.hello_worker.nonce, m->u.hello_worker.key,
						       m->u.hello_worker.agent, m->u.hello_worker.versions,
						       m->u.hello_worker.n_versions, out);
	case PROTO_MSG_HELLO_MANAGER:
		return proto_msg_hello_manager(m->u.hello_manager.version, m->u.hello_manager.nonce,
					       m->u.hello_manager.key, out);
	case PROTO_MSG_AUTH:
		return proto_msg_auth(m->u.auth.proof, out);
	case PROTO_MSG_REGISTER:
		return proto_msg_register(&m->u.reg, out);
	case PROTO_MSG_ACCEPT:
		return proto_msg_accept(m->u.accept.heartbeat_interval_ms, m->u.accept.roster, out);
	case PROTO_MSG_ROSTER:
		return proto_msg_roster(m->u.roster.num_nodes, m->u.roster.offset, m->u.roster.nodes, m->u.roster.count,
					out);
	case PROTO_MSG_READY:
		return proto_msg_ready(out);
	case PROTO_MSG_REJECT:
		return proto_msg_reject(m->u.reject.code, m->u.reject.message, out);
	case PROTO_MSG_ERROR:
		return proto_msg_error(m->u.error.code, m->u.error.message, out);
	case PROTO_MSG_HEARTBEAT:
		return proto_msg_heartbeat(out);
	case PROTO_MSG_PAYLOAD_STARTED:
		return proto_msg_payload_started(m->u.payload_started.pid, out);
	case PROTO_MSG_PAYLOAD_EXITED:
		return m->u.payload_exited.signaled ? proto_msg_payload_exited_signal(m->u.payload_exited.signal, out)
						    : proto_msg_payload_exited_code(m->u.payload_exited.exit_code, out);
	case PROTO_MSG_DRAINING:
		return proto_msg_draining(m->u.draining.reason, m->u.draining.deadline, out);
	case PROTO_MSG_SHUTDOWN:
		return proto_msg_shutdown(m->u.shutdown.grace_ms, m->u.shutdown.reason, out);
	case PROTO_MSG_NONE:
		break;
	}
	return PROTO_ERR_INVALID;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *obj = NULL;
	struct proto_msg msg;
	if (proto_frame_decode(data, size, &obj) != PROTO_OK)
		return 0;
	enum proto_err err = proto_msg_parse(obj, &msg);
	FUZZ_CHECK(err == PROTO_OK || err == PROTO_ERR_BAD_MESSAGE);
	if (err != PROTO_OK) {
		FUZZ_CHECK(msg.type == PROTO_MSG_NONE);
		cJSON_Delete(obj);
		return 0;
	}
	if (msg.type == PROTO_MSG_HELLO_WORKER) {
		int version = 0;
		if (proto_msg_pick_version(&msg, &version) == PROTO_OK) {
			/* The highest version both the worker listed and this codec speaks. */
			bool listed = false;
			for (size_t i = 0; i < msg.u.hello_worker.n_versions; i++) {
				int v = msg.u.hello_worker.versions[i];
				listed = listed || v == version;
				FUZZ_CHECK(v < PROTO_VERSION_MIN || v > PROTO_VERSION || v <= version);
			}
			FUZZ_CHECK(listed && version >= PROTO_VERSION_MIN && version <= PROTO_VERSION);
		}
	}

	cJSON *built = NULL;
	FUZZ_CHECK(build(&msg, &built) == PROTO_OK);
	struct proto_msg rebuilt;
	FUZZ_CHECK(proto_msg_parse(built, &rebuilt) == PROTO_OK);
	FUZZ_CHECK(same_message(&msg, &rebuilt));

	/* Over the wire: what the builder made is a frame a receiver accepts, and it
	 * still says the same. A message near the size limit may print too long. */
	unsigned char *wire = NULL;
	size_t n = 0;
	err = proto_frame_encode(built, PROTO_MAX_FRAME, NULL, &wire, &n);
	FUZZ_CHECK(err == PROTO_OK || err == PROTO_ERR_TOO_LARGE);
	if (err == PROTO_OK) {
		cJSON *received = NULL;
		struct proto_msg reparsed;
		FUZZ_CHECK(proto_frame_decode(wire + 4, n - 4, &received) == PROTO_OK);
		FUZZ_CHECK(proto_msg_parse(received, &reparsed) == PROTO_OK);
		FUZZ_CHECK(same_message(&msg, &reparsed));
		cJSON_Delete(received);
		free(wire);
	}
	cJSON_Delete(built);
	cJSON_Delete(obj);
	return 0;
}
