/* Messages: a validating parser and builders that reuse it, so that the rules in
 * PROTOCOL.md live in one place on the C side. */
#include "proto.h"

#include <math.h>
#include <string.h>

static const cJSON *field(const cJSON *obj, const char *name)
{
	return cJSON_GetObjectItemCaseSensitive(obj, name);
}

/* JSON numbers are doubles to cJSON; an integer field is any finite number with no
 * fractional part, so 5 and 5.0 agree with Python's reading of the same text. */
static enum proto_err as_int(const cJSON *v, int64_t min, int64_t max, int64_t *out)
{
	double d;

	if (!cJSON_IsNumber(v))
		return PROTO_ERR_BAD_MESSAGE;
	d = v->valuedouble;
	if (!isfinite(d) || floor(d) != d || d < (double)min || d > (double)max)
		return PROTO_ERR_BAD_MESSAGE;
	*out = (int64_t)d;
	return PROTO_OK;
}

static enum proto_err req_int(const cJSON *obj, const char *name, int64_t min, int64_t max, int64_t *out)
{
	return as_int(field(obj, name), min, max, out);
}

/* Present, and either null or an integer in range. */
static enum proto_err req_int_or_null(const cJSON *obj, const char *name, int64_t min, int64_t max,
			   struct proto_opt_int *out)
{
	const cJSON *v = field(obj, name);

	out->present = false;
	out->value = 0;
	if (v == NULL)
		return PROTO_ERR_BAD_MESSAGE;
	if (cJSON_IsNull(v))
		return PROTO_OK;
	out->present = true;
	return as_int(v, min, max, &out->value);
}

static enum proto_err check_string(const cJSON *v, size_t min_len, size_t max_len, const char **out)
{
	size_t n;

	if (!cJSON_IsString(v) || v->valuestring == NULL)
		return PROTO_ERR_BAD_MESSAGE;
	n = strlen(v->valuestring);
	if (n < min_len || n > max_len)
		return PROTO_ERR_BAD_MESSAGE;
	*out = v->valuestring;
	return PROTO_OK;
}

static enum proto_err req_string(const cJSON *obj, const char *name, size_t min_len, const char **out)
{
	return check_string(field(obj, name), min_len, PROTO_MAX_STRING, out);
}

/* Present, and either null (*out = NULL) or a string. */
static enum proto_err req_string_or_null(const cJSON *obj, const char *name, const char **out)
{
	const cJSON *v = field(obj, name);

	*out = NULL;
	if (v == NULL)
		return PROTO_ERR_BAD_MESSAGE;
	if (cJSON_IsNull(v))
		return PROTO_OK;
	return check_string(v, 0, PROTO_MAX_STRING, out);
}

/* Absent or null reads as "". */
static enum proto_err opt_string(const cJSON *obj, const char *name, size_t max_len, const char **out)
{
	const cJSON *v = field(obj, name);

	*out = "";
	if (v == NULL || cJSON_IsNull(v))
		return PROTO_OK;
	return check_string(v, 0, max_len, out);
}

static enum proto_err req_code(const cJSON *obj, const char *name, const char **out)
{
	const char *s = NULL;
	enum proto_err err = check_string(field(obj, name), 1, PROTO_MAX_CODE, &s);

	if (err != PROTO_OK)
		return err;
	for (const char *p = s; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return PROTO_ERR_BAD_MESSAGE;
	}
	*out = s;
	return PROTO_OK;
}

static enum proto_err req_hex(const cJSON *obj, const char *name, unsigned char *out, size_t len)
{
	const cJSON *v = field(obj, name);

	if (!cJSON_IsString(v) || v->valuestring == NULL)
		return PROTO_ERR_BAD_MESSAGE;
	return proto_auth_hex_decode(v->valuestring, out, len) == PROTO_OK ? PROTO_OK
									    : PROTO_ERR_BAD_MESSAGE;
}

static bool digits_in(const char *s, int n, int min, int max)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	return v >= min && v <= max;
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM), T and Z in
 * either case. Field ranges only; 31 February passes, as in most parsers. */
static bool is_rfc3339(const char *s)
{
	size_t n = strlen(s);
	size_t i = 19;

	if (n < 20 || !digits_in(s, 4, 0, 9999) || s[4] != '-' || !digits_in(s + 5, 2, 1, 12) ||
	    s[7] != '-' || !digits_in(s + 8, 2, 1, 31) || (s[10] != 'T' && s[10] != 't') ||
	    !digits_in(s + 11, 2, 0, 23) || s[13] != ':' || !digits_in(s + 14, 2, 0, 59) ||
	    s[16] != ':' || !digits_in(s + 17, 2, 0, 60))
		return false;
	if (s[i] == '.') {
		size_t start = ++i;
		while (s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return false;
	}
	if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == '\0')
		return true;
	return (s[i] == '+' || s[i] == '-') && n - i == 6 && digits_in(s + i + 1, 2, 0, 23) &&
	       s[i + 3] == ':' && digits_in(s + i + 4, 2, 0, 59);
}

static enum proto_err parse_hello(const cJSON *obj, struct proto_msg *m)
{
	const char *role = NULL;
	enum proto_err err = req_string(obj, "role", 1, &role);

	if (err != PROTO_OK)
		return err;
	if (strcmp(role, "worker") == 0) {
		const cJSON *vs = field(obj, "versions");
		const cJSON *v;
		int count;

		m->type = PROTO_MSG_HELLO_WORKER;
		count = cJSON_IsArray(vs) ? cJSON_GetArraySize(vs) : 0;
		if (count < 1 || count > PROTO_MAX_VERSIONS)
			return PROTO_ERR_BAD_MESSAGE;
		cJSON_ArrayForEach(v, vs) {
			int64_t ver = 0;
			if (as_int(v, 1, 65535, &ver) != PROTO_OK)
				return PROTO_ERR_BAD_MESSAGE;
			m->u.hello_worker.versions[m->u.hello_worker.n_versions++] = (int)ver;
		}
		err = req_hex(obj, "nonce", m->u.hello_worker.nonce, PROTO_NONCE_LEN);
		if (err == PROTO_OK)
			err = req_hex(obj, "key", m->u.hello_worker.key, PROTO_KEY_LEN);
		if (err == PROTO_OK)
			err = req_string(obj, "agent", 1, &m->u.hello_worker.agent);
		return err;
	}
	if (strcmp(role, "manager") == 0) {
		int64_t ver = 0;

		m->type = PROTO_MSG_HELLO_MANAGER;
		err = req_int(obj, "version", 1, 65535, &ver);
		m->u.hello_manager.version = (int)ver;
		if (err == PROTO_OK)
			err = req_hex(obj, "nonce", m->u.hello_manager.nonce, PROTO_NONCE_LEN);
		if (err == PROTO_OK)
			err = req_hex(obj, "key", m->u.hello_manager.key, PROTO_KEY_LEN);
		return err;
	}
	return PROTO_ERR_BAD_MESSAGE;
}

/* "cpus": present, and null (*out 0) or a number in (0, 1e6]. */
static enum proto_err req_cpus(const cJSON *cpus, double *out)
{
	*out = 0;
	if (cpus == NULL)
		return PROTO_ERR_BAD_MESSAGE;
	if (cJSON_IsNull(cpus))
		return PROTO_OK;
	if (!cJSON_IsNumber(cpus) || !isfinite(cpus->valuedouble) || cpus->valuedouble <= 0 ||
	    cpus->valuedouble > 1e6)
		return PROTO_ERR_BAD_MESSAGE;
	*out = cpus->valuedouble;
	return PROTO_OK;
}

static enum proto_err parse_register(const cJSON *obj, struct proto_register *r)
{
	const cJSON *cpus = field(obj, "cpus");
	enum proto_err err = req_string(obj, "job_id", 1, &r->job_id);

	if (err == PROTO_OK)
		err = req_int_or_null(obj, "attempt", 0, PROTO_MAX_INT, &r->attempt);
	if (err == PROTO_OK)
		err = req_int_or_null(obj, "array_index", 0, PROTO_MAX_INT, &r->array_index);
	if (err == PROTO_OK)
		err = req_int_or_null(obj, "node_index", 0, PROTO_MAX_INT, &r->node_index);
	if (err == PROTO_OK)
		err = req_int_or_null(obj, "num_nodes", 1, PROTO_MAX_INT, &r->num_nodes);
	if (err == PROTO_OK)
		err = req_string_or_null(obj, "queue", &r->queue);
	if (err == PROTO_OK)
		err = req_string_or_null(obj, "compute_environment", &r->compute_environment);
	if (err == PROTO_OK)
		err = req_string(obj, "hostname", 1, &r->hostname);
	if (err == PROTO_OK)
		err = req_string(obj, "address", 1, &r->address);
	if (err == PROTO_OK)
		err = req_string(obj, "agent_version", 1, &r->agent_version);
	if (err == PROTO_OK)
		err = req_int_or_null(obj, "memory_limit_bytes", 0, PROTO_MAX_INT,
				     &r->memory_limit_bytes);
	if (err == PROTO_OK)
		err = req_cpus(cpus, &r->cpus);
	r->has_cpus = err == PROTO_OK && r->cpus > 0;
	return err;
}

static enum proto_err parse_exited(const cJSON *obj, struct proto_msg *m)
{
	const cJSON *code = field(obj, "exit_code");
	const cJSON *sig = field(obj, "signal");
	bool has_code = code != NULL && !cJSON_IsNull(code);
	bool has_sig = sig != NULL && !cJSON_IsNull(sig);
	int64_t v = 0;
	enum proto_err err;

	if (has_code == has_sig)
		return PROTO_ERR_BAD_MESSAGE;
	m->u.payload_exited.signaled = has_sig;
	if (has_sig) {
		err = as_int(sig, 1, 127, &v);
		m->u.payload_exited.signal = (int)v;
	} else {
		err = as_int(code, 0, 255, &v);
		m->u.payload_exited.exit_code = (int)v;
	}
	return err;
}

/* Absent or null reads as false. */
static enum proto_err opt_bool(const cJSON *obj, const char *name, bool *out)
{
	const cJSON *v = field(obj, name);

	*out = false;
	if (v == NULL || cJSON_IsNull(v))
		return PROTO_OK;
	if (!cJSON_IsBool(v))
		return PROTO_ERR_BAD_MESSAGE;
	*out = cJSON_IsTrue(v);
	return PROTO_OK;
}

static enum proto_err parse_roster_node(const cJSON *obj, struct proto_roster_node *n)
{
	const cJSON *cpus = field(obj, "cpus");
	enum proto_err err;

	if (!cJSON_IsObject(obj))
		return PROTO_ERR_BAD_MESSAGE;
	err = req_int(obj, "node_index", 0, PROTO_MAX_INT, &n->node_index);
	if (err == PROTO_OK)
		err = req_string(obj, "address", 1, &n->address);
	return err == PROTO_OK ? req_cpus(cpus, &n->cpus) : err;
}

/* A chunk must fit the roster it claims to be part of; the receiver checks that the
 * chunks follow one another (offset) and agree (num_nodes). */
static enum proto_err parse_roster(const cJSON *obj, struct proto_msg *m)
{
	const cJSON *nodes = field(obj, "nodes"), *node;
	enum proto_err err = req_int(obj, "num_nodes", 1, PROTO_ROSTER_MAX_NODES, &m->u.roster.num_nodes);
	int count = cJSON_IsArray(nodes) ? cJSON_GetArraySize(nodes) : 0;

	if (err == PROTO_OK)
		err = req_int(obj, "offset", 0, m->u.roster.num_nodes - 1, &m->u.roster.offset);
	if (err != PROTO_OK || count < 1 || count > PROTO_ROSTER_CHUNK ||
	    m->u.roster.offset + count > m->u.roster.num_nodes)
		return PROTO_ERR_BAD_MESSAGE;
	cJSON_ArrayForEach(node, nodes) {
		err = parse_roster_node(node, &m->u.roster.nodes[m->u.roster.count++]);
		if (err != PROTO_OK)
			return err;
	}
	return PROTO_OK;
}

static enum proto_err parse_body(const cJSON *obj, const char *type, struct proto_msg *m)
{
	enum proto_err err;

	if (strcmp(type, "hello") == 0)
		return parse_hello(obj, m);
	if (strcmp(type, "auth") == 0) {
		m->type = PROTO_MSG_AUTH;
		return req_hex(obj, "proof", m->u.auth.proof, PROTO_PROOF_LEN);
	}
	if (strcmp(type, "register") == 0) {
		m->type = PROTO_MSG_REGISTER;
		return parse_register(obj, &m->u.reg);
	}
	if (strcmp(type, "accept") == 0) {
		m->type = PROTO_MSG_ACCEPT;
		err = req_int(obj, "heartbeat_interval_ms", PROTO_HEARTBEAT_MIN_MS,
			      PROTO_HEARTBEAT_MAX_MS, &m->u.accept.heartbeat_interval_ms);
		if (err == PROTO_OK)
			err = opt_bool(obj, "roster", &m->u.accept.roster);
		return err;
	}
	if (strcmp(type, "roster") == 0) {
		m->type = PROTO_MSG_ROSTER;
		return parse_roster(obj, m);
	}
	if (strcmp(type, "ready") == 0) {
		m->type = PROTO_MSG_READY;
		return PROTO_OK;
	}
	if (strcmp(type, "reject") == 0 || strcmp(type, "error") == 0) {
		m->type = type[0] == 'r' ? PROTO_MSG_REJECT : PROTO_MSG_ERROR;
		/* reject and error share one layout in the union. */
		err = req_code(obj, "code", &m->u.error.code);
		if (err == PROTO_OK)
			err = opt_string(obj, "message", PROTO_MAX_FRAME, &m->u.error.message);
		return err;
	}
	if (strcmp(type, "heartbeat") == 0) {
		m->type = PROTO_MSG_HEARTBEAT;
		return PROTO_OK;
	}
	if (strcmp(type, "payload_started") == 0) {
		m->type = PROTO_MSG_PAYLOAD_STARTED;
		return req_int(obj, "pid", 1, INT32_MAX, &m->u.payload_started.pid);
	}
	if (strcmp(type, "payload_exited") == 0) {
		m->type = PROTO_MSG_PAYLOAD_EXITED;
		return parse_exited(obj, m);
	}
	if (strcmp(type, "draining") == 0) {
		m->type = PROTO_MSG_DRAINING;
		err = req_string(obj, "reason", 1, &m->u.draining.reason);
		if (err == PROTO_OK)
			err = req_string_or_null(obj, "deadline", &m->u.draining.deadline);
		if (err == PROTO_OK && m->u.draining.deadline != NULL &&
		    !is_rfc3339(m->u.draining.deadline))
			err = PROTO_ERR_BAD_MESSAGE;
		return err;
	}
	if (strcmp(type, "shutdown") == 0) {
		m->type = PROTO_MSG_SHUTDOWN;
		err = req_int(obj, "grace_ms", 0, PROTO_GRACE_MAX_MS, &m->u.shutdown.grace_ms);
		if (err == PROTO_OK)
			err = opt_string(obj, "reason", PROTO_MAX_STRING, &m->u.shutdown.reason);
		return err;
	}
	return PROTO_ERR_BAD_MESSAGE;
}

enum proto_err proto_msg_parse(const cJSON *obj, struct proto_msg *out)
{
	const char *type = NULL;
	enum proto_err err;

	if (out == NULL)
		return PROTO_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(obj))
		return PROTO_ERR_BAD_MESSAGE;
	err = check_string(field(obj, "type"), 1, PROTO_MAX_CODE, &type);
	if (err == PROTO_OK)
		err = parse_body(obj, type, out);
	if (err != PROTO_OK)
		memset(out, 0, sizeof(*out));
	return err;
}

const char *proto_msg_type_name(enum proto_msg_type type)
{
	switch (type) {
	case PROTO_MSG_HELLO_WORKER:
	case PROTO_MSG_HELLO_MANAGER: return "hello";
	case PROTO_MSG_AUTH: return "auth";
	case PROTO_MSG_REGISTER: return "register";
	case PROTO_MSG_ACCEPT: return "accept";
	case PROTO_MSG_REJECT: return "reject";
	case PROTO_MSG_HEARTBEAT: return "heartbeat";
	case PROTO_MSG_PAYLOAD_STARTED: return "payload_started";
	case PROTO_MSG_PAYLOAD_EXITED: return "payload_exited";
	case PROTO_MSG_DRAINING: return "draining";
	case PROTO_MSG_SHUTDOWN: return "shutdown";
	case PROTO_MSG_ERROR: return "error";
	case PROTO_MSG_ROSTER: return "roster";
	case PROTO_MSG_READY: return "ready";
	case PROTO_MSG_NONE: break;
	}
	return "?";
}

enum proto_err proto_msg_pick_version(const struct proto_msg *hello, int *version)
{
	int best = 0;

	if (hello == NULL || version == NULL || hello->type != PROTO_MSG_HELLO_WORKER)
		return PROTO_ERR_INVALID;
	*version = 0;
	for (size_t i = 0; i < hello->u.hello_worker.n_versions; i++) {
		int v = hello->u.hello_worker.versions[i];
		if (v >= PROTO_VERSION_MIN && v <= PROTO_VERSION && v > best)
			best = v;
	}
	if (best == 0)
		return PROTO_ERR_BAD_MESSAGE;
	*version = best;
	return PROTO_OK;
}

/* ------------------------------------------------------------------------------ */

/* Builders collect cJSON allocation failures in one flag instead of checking each
 * call: cJSON_Add*ToObject returns NULL on failure and leaves obj consistent. */
struct build {
	cJSON *obj;
	enum proto_err err; /* the first failure; the builders skip once it is set */
};

static void b_fail(struct build *b, enum proto_err err)
{
	if (b->err == PROTO_OK)
		b->err = err;
}

static void b_str(struct build *b, const char *name, const char *value)
{
	if ((value == NULL ? cJSON_AddNullToObject(b->obj, name)
			   : cJSON_AddStringToObject(b->obj, name, value)) == NULL)
		b_fail(b, PROTO_ERR_NOMEM);
}

static void b_num(struct build *b, const char *name, double value)
{
	if (cJSON_AddNumberToObject(b->obj, name, value) == NULL)
		b_fail(b, PROTO_ERR_NOMEM);
}

static void b_opt_int(struct build *b, const char *name, struct proto_opt_int v)
{
	if ((v.present ? cJSON_AddNumberToObject(b->obj, name, (double)v.value)
		       : cJSON_AddNullToObject(b->obj, name)) == NULL)
		b_fail(b, PROTO_ERR_NOMEM);
}

static void b_hex(struct build *b, const char *name, const unsigned char *bytes, size_t len)
{
	char hex[2 * PROTO_PROOF_LEN + 1];

	if (bytes == NULL || len > PROTO_PROOF_LEN ||
	    proto_auth_hex_encode(bytes, len, hex, sizeof(hex)) != PROTO_OK) {
		b_fail(b, PROTO_ERR_NOMEM);
		return;
	}
	b_str(b, name, hex);
}

/* A new object of type; a failure is kept in b.err and ends the build at b_finish. */
static struct build b_begin(const char *type, cJSON **out)
{
	struct build b = { .err = PROTO_OK };
	if (out == NULL) {
		b.err = PROTO_ERR_INVALID;
		return b;
	}
	*out = NULL;
	b.obj = cJSON_CreateObject();
	if (b.obj == NULL)
		b.err = PROTO_ERR_NOMEM;
	else
		b_str(&b, "type", type);
	return b;
}

/* Hands the object over if it parses as `expect`, and frees it otherwise. */
static enum proto_err b_finish(struct build *b, enum proto_msg_type expect, cJSON **out)
{
	struct proto_msg m;
	enum proto_err err = PROTO_OK;

	if (b->err != PROTO_OK)
		err = b->err;
	else if (proto_msg_parse(b->obj, &m) != PROTO_OK || m.type != expect)
		err = PROTO_ERR_INVALID;
	if (err == PROTO_OK)
		*out = b->obj;
	else
		cJSON_Delete(b->obj); /* NULL is fine */
	b->obj = NULL;
	return err;
}

enum proto_err proto_msg_hello_worker_versions(const unsigned char nonce[PROTO_NONCE_LEN],
					       const unsigned char key[PROTO_KEY_LEN], const char *agent,
					       const int *offered, size_t count, cJSON **out)
{
	struct build b = b_begin("hello", out);
	cJSON *versions = cJSON_AddArrayToObject(b.obj, "versions");

	if (versions == NULL)
		b_fail(&b, PROTO_ERR_NOMEM);
	for (size_t i = 0; versions != NULL && i < count; i++) {
		cJSON *v = cJSON_CreateNumber(offered[i]);
		if (v == NULL || !cJSON_AddItemToArray(versions, v)) {
			cJSON_Delete(v);
			b_fail(&b, PROTO_ERR_NOMEM);
		}
	}
	b_str(&b, "role", "worker");
	b_hex(&b, "nonce", nonce, PROTO_NONCE_LEN);
	b_hex(&b, "key", key, PROTO_KEY_LEN);
	b_str(&b, "agent", agent != NULL ? agent : "");
	return b_finish(&b, PROTO_MSG_HELLO_WORKER, out);
}

enum proto_err proto_msg_hello_worker(const unsigned char nonce[PROTO_NONCE_LEN],
				      const unsigned char key[PROTO_KEY_LEN], const char *agent, cJSON **out)
{
	static const int versions[] = { PROTO_VERSION, PROTO_VERSION_MIN };
	return proto_msg_hello_worker_versions(nonce, key, agent, versions, sizeof versions / sizeof versions[0], out);
}

enum proto_err proto_msg_hello_manager(int version, const unsigned char nonce[PROTO_NONCE_LEN],
				       const unsigned char key[PROTO_KEY_LEN], cJSON **out)
{
	struct build b = b_begin("hello", out);
	b_num(&b, "version", version);
	b_str(&b, "role", "manager");
	b_hex(&b, "nonce", nonce, PROTO_NONCE_LEN);
	b_hex(&b, "key", key, PROTO_KEY_LEN);
	return b_finish(&b, PROTO_MSG_HELLO_MANAGER, out);
}

enum proto_err proto_msg_auth(const unsigned char proof[PROTO_PROOF_LEN], cJSON **out)
{
	struct build b = b_begin("auth", out);
	b_hex(&b, "proof", proof, PROTO_PROOF_LEN);
	return b_finish(&b, PROTO_MSG_AUTH, out);
}

enum proto_err proto_msg_register(const struct proto_register *reg, cJSON **out)
{
	struct build b = b_begin("register", out);
	if (reg == NULL) {
		cJSON_Delete(b.obj);
		return PROTO_ERR_INVALID;
	}
	/* NULL for a required string becomes null, which the check below refuses. */
	b_str(&b, "job_id", reg->job_id);
	b_opt_int(&b, "attempt", reg->attempt);
	b_opt_int(&b, "array_index", reg->array_index);
	b_opt_int(&b, "node_index", reg->node_index);
	b_opt_int(&b, "num_nodes", reg->num_nodes);
	b_str(&b, "queue", reg->queue);
	b_str(&b, "compute_environment", reg->compute_environment);
	b_str(&b, "hostname", reg->hostname);
	b_str(&b, "address", reg->address);
	b_str(&b, "agent_version", reg->agent_version);
	if (reg->has_cpus)
		b_num(&b, "cpus", reg->cpus);
	else
		b_str(&b, "cpus", NULL);
	b_opt_int(&b, "memory_limit_bytes", reg->memory_limit_bytes);
	return b_finish(&b, PROTO_MSG_REGISTER, out);
}

enum proto_err proto_msg_accept(int64_t heartbeat_interval_ms, bool roster, cJSON **out)
{
	struct build b = b_begin("accept", out);
	b_num(&b, "heartbeat_interval_ms", (double)heartbeat_interval_ms);
	if (roster && cJSON_AddTrueToObject(b.obj, "roster") == NULL)
		b_fail(&b, PROTO_ERR_NOMEM);
	return b_finish(&b, PROTO_MSG_ACCEPT, out);
}

static cJSON *roster_node(const struct proto_roster_node *n)
{
	cJSON *obj = cJSON_CreateObject();
	if (obj == NULL || cJSON_AddNumberToObject(obj, "node_index", (double)n->node_index) == NULL ||
	    cJSON_AddStringToObject(obj, "address", n->address != NULL ? n->address : "") == NULL ||
	    (n->cpus > 0 ? cJSON_AddNumberToObject(obj, "cpus", n->cpus) : cJSON_AddNullToObject(obj, "cpus")) == NULL) {
		cJSON_Delete(obj);
		return NULL;
	}
	return obj;
}

enum proto_err proto_msg_roster(int64_t num_nodes, int64_t offset, const struct proto_roster_node *nodes,
				size_t count, cJSON **out)
{
	struct build b = b_begin("roster", out);
	b_num(&b, "num_nodes", (double)num_nodes);
	b_num(&b, "offset", (double)offset);
	cJSON *list = b.err == PROTO_OK ? cJSON_AddArrayToObject(b.obj, "nodes") : NULL;
	if (list == NULL)
		b_fail(&b, PROTO_ERR_NOMEM);
	for (size_t i = 0; list != NULL && i < count && b.err == PROTO_OK; i++) {
		cJSON *node = roster_node(&nodes[i]);
		if (node == NULL || !cJSON_AddItemToArray(list, node)) {
			cJSON_Delete(node);
			b_fail(&b, PROTO_ERR_NOMEM);
		}
	}
	return b_finish(&b, PROTO_MSG_ROSTER, out);
}

enum proto_err proto_msg_ready(cJSON **out)
{
	struct build b = b_begin("ready", out);
	return b_finish(&b, PROTO_MSG_READY, out);
}

static enum proto_err build_coded(const char *type, enum proto_msg_type expect, const char *code,
		       const char *message, cJSON **out)
{
	struct build b = b_begin(type, out);
	b_str(&b, "code", code);
	b_str(&b, "message", message != NULL ? message : "");
	return b_finish(&b, expect, out);
}

enum proto_err proto_msg_reject(const char *code, const char *message, cJSON **out)
{
	return build_coded("reject", PROTO_MSG_REJECT, code, message, out);
}

enum proto_err proto_msg_error(const char *code, const char *message, cJSON **out)
{
	return build_coded("error", PROTO_MSG_ERROR, code, message, out);
}

enum proto_err proto_msg_heartbeat(cJSON **out)
{
	struct build b = b_begin("heartbeat", out);
	return b_finish(&b, PROTO_MSG_HEARTBEAT, out);
}

enum proto_err proto_msg_payload_started(int64_t pid, cJSON **out)
{
	struct build b = b_begin("payload_started", out);
	b_num(&b, "pid", (double)pid);
	return b_finish(&b, PROTO_MSG_PAYLOAD_STARTED, out);
}

static enum proto_err build_exited(const char *name, int value, cJSON **out)
{
	struct build b = b_begin("payload_exited", out);
	b_num(&b, name, value);
	return b_finish(&b, PROTO_MSG_PAYLOAD_EXITED, out);
}

enum proto_err proto_msg_payload_exited_code(int exit_code, cJSON **out)
{
	return build_exited("exit_code", exit_code, out);
}

enum proto_err proto_msg_payload_exited_signal(int sig, cJSON **out)
{
	return build_exited("signal", sig, out);
}

enum proto_err proto_msg_draining(const char *reason, const char *deadline, cJSON **out)
{
	struct build b = b_begin("draining", out);
	b_str(&b, "reason", reason != NULL ? reason : "");
	b_str(&b, "deadline", deadline);
	return b_finish(&b, PROTO_MSG_DRAINING, out);
}

enum proto_err proto_msg_shutdown(int64_t grace_ms, const char *reason, cJSON **out)
{
	struct build b = b_begin("shutdown", out);
	b_num(&b, "grace_ms", (double)grace_ms);
	b_str(&b, "reason", reason != NULL ? reason : "");
	return b_finish(&b, PROTO_MSG_SHUTDOWN, out);
}
