/* proto_msg_*: every message type's validation (missing and mistyped fields refused,
 * unknown fields ignored), builders, version negotiation, the PROTOCOL.md vectors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto.h"

#define N64 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define M64 "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
#define P64 "b0ada82e76ffb2838d959bdd0a27157022069cf5c5c08ebc0bca4881f5ca4b15"
#define K64 "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a"

static enum proto_err parse_text(const char *text, struct proto_msg *m, cJSON **keep)
{
	cJSON *obj = NULL;
	enum proto_err rc = proto_frame_decode((const unsigned char *)text, strlen(text), &obj);

	if (rc != PROTO_OK)
		fail_msg("not JSON: %s", text);
	rc = proto_msg_parse(obj, m);
	if (keep != NULL)
		*keep = obj;
	else
		cJSON_Delete(obj);
	return rc;
}

static void ok(const char *text, enum proto_msg_type type)
{
	struct proto_msg m;
	enum proto_err rc = parse_text(text, &m, NULL);

	if (rc != PROTO_OK || m.type != type)
		fail_msg("refused or misread (%s): %s", proto_strerror(rc), text);
}

static void bad(const char *text)
{
	struct proto_msg m;
	enum proto_err rc = parse_text(text, &m, NULL);

	if (rc != PROTO_ERR_BAD_MESSAGE)
		fail_msg("accepted (%s): %s", proto_strerror(rc), text);
	assert_int_equal(m.type, PROTO_MSG_NONE);
}

static void test_type(void **state)
{
	bad("{}");
	bad("{\"type\":1}");
	bad("{\"type\":null}");
	bad("{\"type\":\"\"}");
	bad("{\"type\":\"bogus\"}");
	bad("{\"Type\":\"heartbeat\"}");
	bad("{\"type\":\"HEARTBEAT\"}");
	ok("{\"type\":\"heartbeat\"}", PROTO_MSG_HEARTBEAT);
	ok("{\"type\":\"heartbeat\",\"extra\":{\"x\":[1]},\"n\":null}", PROTO_MSG_HEARTBEAT);
}

static void test_hello_worker(void **state)
{
	struct proto_msg m;
	cJSON *keep = NULL;

	assert_int_equal(parse_text("{\"type\":\"hello\",\"versions\":[3,1,2],\"role\":\"worker\","
				    "\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\",\"future\":1}",
				    &m, &keep),
			 PROTO_OK);
	assert_int_equal(m.type, PROTO_MSG_HELLO_WORKER);
	assert_int_equal(m.u.hello_worker.n_versions, 3);
	assert_int_equal(m.u.hello_worker.nonce[31], 0x1f);
	int v = 0;
	assert_int_equal(proto_msg_pick_version(&m, &v), PROTO_OK);
	assert_int_equal(v, 3);
	cJSON_Delete(keep);

	assert_int_equal(parse_text("{\"type\":\"hello\",\"versions\":[2,1],\"role\":\"worker\","
				    "\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}",
				    &m, &keep),
			 PROTO_OK);
	assert_int_equal(proto_msg_pick_version(&m, &v), PROTO_OK);
	assert_int_equal(v, 2);
	cJSON_Delete(keep);

	assert_int_equal(parse_text("{\"type\":\"hello\",\"versions\":[1,4],\"role\":\"worker\","
				    "\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}",
				    &m, &keep),
			 PROTO_OK);
	assert_int_equal(proto_msg_pick_version(&m, &v), PROTO_ERR_BAD_MESSAGE);
	cJSON_Delete(keep);

	bad("{\"type\":\"hello\",\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":1,\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[\"1\"],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[1.5],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[0],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[65536],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[true],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[1],\"role\":\"worker\",\"nonce\":\"" N64 "0\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[1],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"\"}");
	bad("{\"type\":\"hello\",\"versions\":[1],\"role\":\"worker\",\"nonce\":\"" N64 "\"}");
	bad("{\"type\":\"hello\",\"versions\":[1],\"role\":\"boss\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[1],\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
	    "1,1,1,1,1,1],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" K64 "\",\"agent\":\"a\"}");
	/* The key is required, and 32 bytes. */
	bad("{\"type\":\"hello\",\"versions\":[2],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"agent\":\"a\"}");
	bad("{\"type\":\"hello\",\"versions\":[2],\"role\":\"worker\",\"nonce\":\"" N64 "\",\"key\":\"" N64
	    "00\",\"agent\":\"a\"}");
	/* The nonce must be lowercase. */
	bad("{\"type\":\"hello\",\"versions\":[1],\"role\":\"worker\",\"nonce\":"
	    "\"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\",\"agent\":\"a\"}");
}

static void test_hello_manager_and_auth(void **state)
{
	ok("{\"type\":\"hello\",\"version\":2,\"role\":\"manager\",\"nonce\":\"" M64
	   "\",\"key\":\"" K64 "\"}", PROTO_MSG_HELLO_MANAGER);
	bad("{\"type\":\"hello\",\"version\":\"2\",\"role\":\"manager\",\"nonce\":\"" M64
	    "\",\"key\":\"" K64 "\"}");
	bad("{\"type\":\"hello\",\"versions\":[2],\"role\":\"manager\",\"nonce\":\"" M64
	    "\",\"key\":\"" K64 "\"}");
	bad("{\"type\":\"hello\",\"version\":2,\"role\":\"manager\",\"nonce\":\"" M64 "\"}");
	bad("{\"type\":\"hello\",\"version\":2,\"role\":\"manager\",\"key\":\"" K64 "\"}");
	/* v1's manager hello (a proof, no key) is not a v2 one. */
	bad("{\"type\":\"hello\",\"version\":2,\"role\":\"manager\",\"nonce\":\"" M64
	    "\",\"proof\":\"" P64 "\"}");
	ok("{\"type\":\"auth\",\"proof\":\"" P64 "\"}", PROTO_MSG_AUTH);
	bad("{\"type\":\"auth\"}");
	bad("{\"type\":\"auth\",\"proof\":null}");
	bad("{\"type\":\"auth\",\"proof\":\"05e7\"}");
}

#define REG_HEAD "{\"type\":\"register\",\"job_id\":\"j-1#2\","
#define REG_NUMS "\"attempt\":0,\"array_index\":null,\"node_index\":2,\"num_nodes\":4,"
#define REG_STRS "\"queue\":\"q\",\"compute_environment\":null,\"hostname\":\"ip-10-0-0-1\"," \
		 "\"address\":\"10.0.0.1\",\"agent_version\":\"0.1.0\","
#define REG_TAIL "\"cpus\":2.5,\"memory_limit_bytes\":8589934592}"

static void test_register(void **state)
{
	struct proto_msg m;
	cJSON *keep = NULL;

	assert_int_equal(parse_text(REG_HEAD REG_NUMS REG_STRS REG_TAIL, &m, &keep), PROTO_OK);
	assert_int_equal(m.type, PROTO_MSG_REGISTER);
	assert_string_equal(m.u.reg.job_id, "j-1#2");
	assert_true(m.u.reg.attempt.present);
	assert_false(m.u.reg.array_index.present);
	assert_int_equal(m.u.reg.node_index.value, 2);
	assert_int_equal(m.u.reg.num_nodes.value, 4);
	assert_string_equal(m.u.reg.queue, "q");
	assert_null(m.u.reg.compute_environment);
	assert_true(m.u.reg.has_cpus);
	assert_true(m.u.reg.cpus == 2.5);
	assert_int_equal(m.u.reg.memory_limit_bytes.value, 8589934592LL);

	/* Round trip through the builder gives the same fields. */
	cJSON *built = NULL;
	struct proto_msg m2;
	assert_int_equal(proto_msg_register(&m.u.reg, &built), PROTO_OK);
	assert_int_equal(proto_msg_parse(built, &m2), PROTO_OK);
	assert_string_equal(m2.u.reg.hostname, "ip-10-0-0-1");
	assert_int_equal(m2.u.reg.memory_limit_bytes.value, 8589934592LL);
	cJSON_Delete(built);
	cJSON_Delete(keep);

	ok(REG_HEAD REG_NUMS REG_STRS "\"cpus\":null,\"memory_limit_bytes\":null,\"x\":1}",
	   PROTO_MSG_REGISTER);
	/* Integral floats are integers. */
	ok(REG_HEAD "\"attempt\":1.0,\"array_index\":null,\"node_index\":2,\"num_nodes\":4,"
	   REG_STRS REG_TAIL, PROTO_MSG_REGISTER);
	bad("{\"type\":\"register\"," REG_NUMS REG_STRS REG_TAIL);
	bad("{\"type\":\"register\",\"job_id\":\"\"," REG_NUMS REG_STRS REG_TAIL);
	bad("{\"type\":\"register\",\"job_id\":7," REG_NUMS REG_STRS REG_TAIL);
	bad(REG_HEAD "\"array_index\":null,\"node_index\":2,\"num_nodes\":4," REG_STRS REG_TAIL);
	bad(REG_HEAD "\"attempt\":-1,\"array_index\":null,\"node_index\":2,\"num_nodes\":4,"
	    REG_STRS REG_TAIL);
	bad(REG_HEAD "\"attempt\":0.5,\"array_index\":null,\"node_index\":2,\"num_nodes\":4,"
	    REG_STRS REG_TAIL);
	bad(REG_HEAD "\"attempt\":\"0\",\"array_index\":null,\"node_index\":2,\"num_nodes\":4,"
	    REG_STRS REG_TAIL);
	bad(REG_HEAD "\"attempt\":false,\"array_index\":null,\"node_index\":2,\"num_nodes\":4,"
	    REG_STRS REG_TAIL);
	bad(REG_HEAD "\"attempt\":0,\"array_index\":null,\"node_index\":2,\"num_nodes\":0,"
	    REG_STRS REG_TAIL);
	bad(REG_HEAD "\"attempt\":9007199254740992,\"array_index\":null,\"node_index\":2,"
	    "\"num_nodes\":4," REG_STRS REG_TAIL);
	bad(REG_HEAD REG_NUMS "\"compute_environment\":null,\"hostname\":\"h\","
	    "\"address\":\"a\",\"agent_version\":\"v\"," REG_TAIL);
	bad(REG_HEAD REG_NUMS "\"queue\":1,\"compute_environment\":null,\"hostname\":\"h\","
	    "\"address\":\"a\",\"agent_version\":\"v\"," REG_TAIL);
	bad(REG_HEAD REG_NUMS "\"queue\":\"q\",\"compute_environment\":null,\"hostname\":null,"
	    "\"address\":\"a\",\"agent_version\":\"v\"," REG_TAIL);
	bad(REG_HEAD REG_NUMS "\"queue\":\"q\",\"compute_environment\":null,\"hostname\":\"h\","
	    "\"agent_version\":\"v\"," REG_TAIL);
	bad(REG_HEAD REG_NUMS "\"queue\":\"q\",\"compute_environment\":null,\"hostname\":\"h\","
	    "\"address\":\"a\"," REG_TAIL);
	bad(REG_HEAD REG_NUMS REG_STRS "\"memory_limit_bytes\":1}");
	bad(REG_HEAD REG_NUMS REG_STRS "\"cpus\":0,\"memory_limit_bytes\":1}");
	bad(REG_HEAD REG_NUMS REG_STRS "\"cpus\":\"2\",\"memory_limit_bytes\":1}");
	bad(REG_HEAD REG_NUMS REG_STRS "\"cpus\":2}");
	bad(REG_HEAD REG_NUMS REG_STRS "\"cpus\":2,\"memory_limit_bytes\":1.5}");

	/* Builder refuses what the parser would. */
	struct proto_register r = { .job_id = "j", .hostname = "h", .address = "a",
				    .agent_version = "v" };
	assert_int_equal(proto_msg_register(&r, &built), PROTO_OK);
	cJSON_Delete(built);
	r.hostname = NULL;
	assert_int_equal(proto_msg_register(&r, &built), PROTO_ERR_INVALID);
	assert_null(built);
	r.hostname = "h";
	r.num_nodes.present = true;
	r.num_nodes.value = 0;
	assert_int_equal(proto_msg_register(&r, &built), PROTO_ERR_INVALID);
}

static void test_accept_reject_error(void **state)
{
	ok("{\"type\":\"accept\",\"heartbeat_interval_ms\":1000}", PROTO_MSG_ACCEPT);
	bad("{\"type\":\"accept\"}");
	bad("{\"type\":\"accept\",\"heartbeat_interval_ms\":9}");
	bad("{\"type\":\"accept\",\"heartbeat_interval_ms\":3600001}");
	bad("{\"type\":\"accept\",\"heartbeat_interval_ms\":\"1000\"}");
	for (int i = 0; i < 2; i++) {
		char text[256];
		const char *t = i == 0 ? "reject" : "error";
		enum proto_msg_type e = i == 0 ? PROTO_MSG_REJECT : PROTO_MSG_ERROR;
		snprintf(text, sizeof(text), "{\"type\":\"%s\",\"code\":\"duplicate_node\",\"message\":\"m\"}", t);
		ok(text, e);
		snprintf(text, sizeof(text), "{\"type\":\"%s\",\"code\":\"x_1\"}", t);
		ok(text, e);
		snprintf(text, sizeof(text), "{\"type\":\"%s\",\"code\":\"x\",\"message\":null}", t);
		ok(text, e);
		snprintf(text, sizeof(text), "{\"type\":\"%s\",\"message\":\"m\"}", t);
		bad(text);
		snprintf(text, sizeof(text), "{\"type\":\"%s\",\"code\":\"\"}", t);
		bad(text);
		snprintf(text, sizeof(text), "{\"type\":\"%s\",\"code\":\"Bad Code\"}", t);
		bad(text);
		snprintf(text, sizeof(text), "{\"type\":\"%s\",\"code\":\"c\",\"message\":5}", t);
		bad(text);
	}
	cJSON *out = NULL;
	assert_int_equal(proto_msg_error("Not A Code", "x", &out), PROTO_ERR_INVALID);
	assert_int_equal(proto_msg_reject(NULL, "x", &out), PROTO_ERR_INVALID);
	assert_int_equal(proto_msg_accept(5, false, &out), PROTO_ERR_INVALID);
	assert_null(out);
}

static void test_payload_events(void **state)
{
	ok("{\"type\":\"payload_started\",\"pid\":42}", PROTO_MSG_PAYLOAD_STARTED);
	bad("{\"type\":\"payload_started\",\"pid\":0}");
	bad("{\"type\":\"payload_started\",\"pid\":2147483648}");
	bad("{\"type\":\"payload_started\"}");
	ok("{\"type\":\"payload_exited\",\"exit_code\":0}", PROTO_MSG_PAYLOAD_EXITED);
	ok("{\"type\":\"payload_exited\",\"exit_code\":255,\"signal\":null}", PROTO_MSG_PAYLOAD_EXITED);
	ok("{\"type\":\"payload_exited\",\"signal\":15}", PROTO_MSG_PAYLOAD_EXITED);
	bad("{\"type\":\"payload_exited\"}");
	bad("{\"type\":\"payload_exited\",\"exit_code\":0,\"signal\":9}");
	bad("{\"type\":\"payload_exited\",\"exit_code\":256}");
	bad("{\"type\":\"payload_exited\",\"exit_code\":-1}");
	bad("{\"type\":\"payload_exited\",\"signal\":0}");
	bad("{\"type\":\"payload_exited\",\"signal\":\"KILL\"}");
	cJSON *out = NULL;
	assert_int_equal(proto_msg_payload_exited_code(256, &out), PROTO_ERR_INVALID);
	assert_int_equal(proto_msg_payload_started(0, &out), PROTO_ERR_INVALID);
	assert_int_equal(proto_msg_payload_exited_code(3, &out), PROTO_OK);
	cJSON_Delete(out);
}

static void test_draining_shutdown(void **state)
{
	ok("{\"type\":\"draining\",\"reason\":\"spot_interruption\",\"deadline\":\"2026-01-02T03:04:05Z\"}",
	   PROTO_MSG_DRAINING);
	ok("{\"type\":\"draining\",\"reason\":\"rebalance\",\"deadline\":null}", PROTO_MSG_DRAINING);
	ok("{\"type\":\"draining\",\"reason\":\"r\",\"deadline\":\"2026-01-02t03:04:05.123+05:30\"}",
	   PROTO_MSG_DRAINING);
	bad("{\"type\":\"draining\",\"reason\":\"rebalance\"}");
	bad("{\"type\":\"draining\",\"deadline\":null}");
	bad("{\"type\":\"draining\",\"reason\":\"\",\"deadline\":null}");
	bad("{\"type\":\"draining\",\"reason\":\"r\",\"deadline\":\"2026-01-02 03:04:05Z\"}");
	bad("{\"type\":\"draining\",\"reason\":\"r\",\"deadline\":\"2026-13-02T03:04:05Z\"}");
	bad("{\"type\":\"draining\",\"reason\":\"r\",\"deadline\":\"2026-01-02T03:04:05\"}");
	bad("{\"type\":\"draining\",\"reason\":\"r\",\"deadline\":\"2026-01-02T03:04:05.Z\"}");
	bad("{\"type\":\"draining\",\"reason\":\"r\",\"deadline\":\"2026-01-02T03:04:05+0530\"}");
	bad("{\"type\":\"draining\",\"reason\":\"r\",\"deadline\":1767323045}");
	ok("{\"type\":\"shutdown\",\"grace_ms\":0}", PROTO_MSG_SHUTDOWN);
	ok("{\"type\":\"shutdown\",\"grace_ms\":30000,\"reason\":\"job done\"}", PROTO_MSG_SHUTDOWN);
	bad("{\"type\":\"shutdown\"}");
	bad("{\"type\":\"shutdown\",\"grace_ms\":-1}");
	bad("{\"type\":\"shutdown\",\"grace_ms\":86400001}");
	bad("{\"type\":\"shutdown\",\"grace_ms\":1,\"reason\":[]}");
	cJSON *out = NULL;
	assert_int_equal(proto_msg_draining("spot_interruption", "tomorrow", &out), PROTO_ERR_INVALID);
	assert_int_equal(proto_msg_draining("spot_interruption", NULL, &out), PROTO_OK);
	cJSON_Delete(out);
}

/* PROTOCOL.md, "Test vectors": the exact frames of the example transcript. */
static void expect_frame(cJSON *msg, const char *hex)
{
	unsigned char *frame = NULL;
	size_t len = 0;
	char *got;

	assert_non_null(msg);
	assert_int_equal(proto_frame_encode(msg, PROTO_MAX_FRAME, NULL, &frame, &len), PROTO_OK);
	got = malloc(2 * len + 1);
	assert_int_equal(proto_auth_hex_encode(frame, len, got, 2 * len + 1), PROTO_OK);
	assert_string_equal(got, hex);
	free(got);
	free(frame);
	cJSON_Delete(msg);
}

/* Version 3: accept's roster flag, roster chunks, ready (PROTOCOL.md §4.1). */
static void test_roster_ready(void **state)
{
	struct proto_msg m;
	cJSON *keep = NULL, *msg = NULL;
	(void)state;

	assert_int_equal(parse_text("{\"type\":\"accept\",\"heartbeat_interval_ms\":100}", &m, NULL), PROTO_OK);
	assert_false(m.u.accept.roster);
	assert_int_equal(parse_text("{\"type\":\"accept\",\"heartbeat_interval_ms\":100,\"roster\":true}", &m, NULL),
			 PROTO_OK);
	assert_true(m.u.accept.roster);
	bad("{\"type\":\"accept\",\"heartbeat_interval_ms\":100,\"roster\":1}");
	assert_int_equal(proto_msg_accept(100, true, &msg), PROTO_OK);
	assert_non_null(cJSON_GetObjectItemCaseSensitive(msg, "roster"));
	cJSON_Delete(msg);
	assert_int_equal(proto_msg_accept(100, false, &msg), PROTO_OK);
	assert_null(cJSON_GetObjectItemCaseSensitive(msg, "roster")); /* as version 2 has it */
	cJSON_Delete(msg);

	assert_int_equal(parse_text("{\"type\":\"roster\",\"num_nodes\":3,\"offset\":1,\"nodes\":["
				    "{\"node_index\":1,\"address\":\"10.0.0.2\",\"cpus\":4},"
				    "{\"node_index\":3,\"address\":\"node-3\",\"cpus\":null}]}",
				    &m, &keep),
			 PROTO_OK);
	assert_int_equal(m.type, PROTO_MSG_ROSTER);
	assert_int_equal(m.u.roster.num_nodes, 3);
	assert_int_equal(m.u.roster.offset, 1);
	assert_int_equal(m.u.roster.count, 2);
	assert_string_equal(m.u.roster.nodes[1].address, "node-3");
	assert_true(m.u.roster.nodes[0].cpus == 4 && m.u.roster.nodes[1].cpus == 0);
	cJSON_Delete(keep);
	/* A chunk that overruns its roster, an empty one, a missing field. */
	bad("{\"type\":\"roster\",\"num_nodes\":1,\"offset\":0,\"nodes\":["
	    "{\"node_index\":1,\"address\":\"a\",\"cpus\":1},{\"node_index\":2,\"address\":\"b\",\"cpus\":1}]}");
	bad("{\"type\":\"roster\",\"num_nodes\":2,\"offset\":2,\"nodes\":[{\"node_index\":1,\"address\":\"a\",\"cpus\":1}]}");
	bad("{\"type\":\"roster\",\"num_nodes\":2,\"offset\":0,\"nodes\":[]}");
	bad("{\"type\":\"roster\",\"num_nodes\":2,\"offset\":0,\"nodes\":[{\"node_index\":1,\"cpus\":1}]}");
	bad("{\"type\":\"roster\",\"num_nodes\":2,\"offset\":0,\"nodes\":[{\"node_index\":1,\"address\":\"a\",\"cpus\":0}]}");

	/* The builder, and a full chunk: what we send is what we accept. */
	struct proto_roster_node nodes[PROTO_ROSTER_CHUNK];
	for (size_t i = 0; i < PROTO_ROSTER_CHUNK; i++)
		nodes[i] = (struct proto_roster_node){ .node_index = (int64_t)i, .address = "198.18.0.1", .cpus = 2 };
	assert_int_equal(proto_msg_roster(200, 0, nodes, PROTO_ROSTER_CHUNK, &msg), PROTO_OK);
	cJSON_Delete(msg);
	assert_int_equal(proto_msg_roster(100, 0, nodes, PROTO_ROSTER_CHUNK, &msg), PROTO_ERR_INVALID);
	assert_null(msg);

	assert_int_equal(proto_msg_ready(&msg), PROTO_OK);
	assert_int_equal(proto_msg_parse(msg, &m), PROTO_OK);
	assert_int_equal(m.type, PROTO_MSG_READY);
	cJSON_Delete(msg);
}

static void test_vector_frames(void **state)
{
	unsigned char wn[PROTO_NONCE_LEN], mn[PROTO_NONCE_LEN], wk[PROTO_KEY_LEN], mk[PROTO_KEY_LEN];
	unsigned char wp[PROTO_PROOF_LEN];
	cJSON *msg = NULL;

	for (int i = 0; i < PROTO_NONCE_LEN; i++) {
		wn[i] = (unsigned char)i;
		mn[i] = (unsigned char)(0x20 + i);
	}
	assert_int_equal(proto_auth_hex_decode(K64, wk, sizeof wk), PROTO_OK);
	assert_int_equal(proto_auth_hex_decode("675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f", mk,
					       sizeof mk), PROTO_OK);
	assert_int_equal(proto_auth_hex_decode(P64, wp, sizeof wp), PROTO_OK);
	/* §8's vectors are a version 2 exchange. */
	static const int v2[] = { 2 };
	assert_int_equal(proto_msg_hello_worker_versions(wn, wk, "batch-agent 0.1.0", v2, 1, &msg), PROTO_OK);
	expect_frame(msg,
		     "000000df7b2274797065223a2268656c6c6f222c2276657273696f6e73223a5b325d2c22726f6c65223a22776f"
		     "726b6572222c226e6f6e6365223a223030303130323033303430353036303730383039306130623063306430653066"
		     "3130313131323133313431353136313731383139316131623163316431653166222c226b6579223a2237396136333165"
		     "656465316266396339386631323033326364656164643065376130373933393866633738366238386363383436656338"
		     "396166383561353161222c226167656e74223a2262617463682d6167656e7420302e312e30227d");
	assert_int_equal(proto_msg_hello_manager(2, mn, mk, &msg), PROTO_OK);
	expect_frame(msg,
		     "000000c17b2274797065223a2268656c6c6f222c2276657273696f6e223a322c22726f6c65223a226d616e616765"
		     "72222c226e6f6e6365223a2232303231323232333234323532363237323832393261326232633264326532663330"
		     "333133323333333433353336333733383339336133623363336433653366222c226b6579223a2236373564643537"
		     "346564373738393331306233643265373638316633373930623436366337373362313532316665636633363537373935"
		     "383337316561353266227d");
	assert_int_equal(proto_msg_auth(wp, &msg), PROTO_OK);
	expect_frame(msg,
		     "0000005a7b2274797065223a2261757468222c2270726f6f66223a2262306164613832653736666662323833386439"
		     "353962646430613237313537303232303639636635633563303865626330626361343838316635636134623135227d");
	assert_int_equal(proto_msg_heartbeat(&msg), PROTO_OK);
	expect_frame(msg, "000000147b2274797065223a22686561727462656174227d");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_type),
		cmocka_unit_test(test_hello_worker),
		cmocka_unit_test(test_hello_manager_and_auth),
		cmocka_unit_test(test_register),
		cmocka_unit_test(test_accept_reject_error),
		cmocka_unit_test(test_payload_events),
		cmocka_unit_test(test_draining_shutdown),
		cmocka_unit_test(test_roster_ready),
		cmocka_unit_test(test_vector_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
