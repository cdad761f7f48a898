/* proto_frame_*: round trips over a socketpair, partial reads and writes, limits,
 * garbage, sealed frames (replayed, reordered, altered), and the frame test vectors
 * of PROTOCOL.md. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "proto.h"

struct pair {
	int a, b; /* a: the conn under test; b: the raw peer */
	struct proto_conn c;
};

static int setup(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));
	int sv[2];

	if (p == NULL || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return -1;
	p->a = sv[0];
	p->b = sv[1];
	fcntl(p->a, F_SETFL, O_NONBLOCK);
	proto_frame_conn_init(&p->c, p->a);
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct pair *p = *state;

	proto_frame_conn_free(&p->c);
	close(p->a);
	if (p->b >= 0)
		close(p->b);
	free(p);
	return 0;
}

static void raw_write(int fd, const void *data, size_t len)
{
	assert_int_equal(write(fd, data, len), (ssize_t)len);
}

static void raw_frame(int fd, const char *payload)
{
	size_t n = strlen(payload);
	unsigned char hdr[4] = { (unsigned char)(n >> 24), (unsigned char)(n >> 16),
				 (unsigned char)(n >> 8), (unsigned char)n };

	raw_write(fd, hdr, 4);
	raw_write(fd, payload, n);
}

static void expect_error(struct pair *p, enum proto_err err)
{
	cJSON *obj = (cJSON *)1;

	assert_int_equal(proto_frame_recv(&p->c, &obj), err);
	assert_null(obj);
	/* Sticky: the stream has lost its boundaries. */
	assert_int_equal(proto_frame_recv(&p->c, &obj), err);
}

static void test_vector_heartbeat(void **state)
{
	static const unsigned char expect[] = {
		0x00, 0x00, 0x00, 0x14, '{', '"', 't', 'y', 'p', 'e', '"', ':', '"', 'h',
		'e', 'a', 'r', 't', 'b', 'e', 'a', 't', '"', '}',
	};
	cJSON *hb = NULL;
	unsigned char *frame = NULL;
	size_t len = 0;

	assert_int_equal(proto_msg_heartbeat(&hb), PROTO_OK);
	assert_int_equal(proto_frame_encode(hb, PROTO_MAX_FRAME, NULL, &frame, &len), PROTO_OK);
	assert_int_equal(len, sizeof(expect));
	assert_memory_equal(frame, expect, len);
	free(frame);
	cJSON_Delete(hb);
}

/* PROTOCOL.md §8: the sealed frames, byte for byte, and what a receiver makes of them. */
static const char KEY_W2M[] = "859d2a84390e9ea104f5e8055caacb43a09b0c0323b4e190540b8eb57bf22d34";
static const char SEALED_W2M_0[] = "0000002422fc83904722a91488774e7972ad12c9784046ed0ffcba9518f90f7dd07cda05d85accd0";
static const char SEALED_W2M_1[] = "0000002437e4f4eaae0592ddb228d5ac7177d646aef98bd0441eff5bf3f864699a05339f528cee69";

static void unhex(const char *hex, unsigned char *out, size_t len)
{
	assert_int_equal(proto_auth_hex_decode(hex, out, len), PROTO_OK);
}

static void test_vector_sealed(void **state)
{
	struct proto_seal seal = { .on = true };
	unsigned char expect[40];
	unsigned char *frame = NULL;
	size_t len = 0;
	cJSON *hb = NULL;
	unhex(KEY_W2M, seal.key, sizeof seal.key);
	assert_int_equal(proto_msg_heartbeat(&hb), PROTO_OK);
	for (int seq = 0; seq < 2; seq++) {
		unhex(seq == 0 ? SEALED_W2M_0 : SEALED_W2M_1, expect, sizeof expect);
		assert_int_equal(proto_frame_encode(hb, PROTO_MAX_FRAME, &seal, &frame, &len), PROTO_OK);
		assert_int_equal(len, sizeof expect);
		assert_memory_equal(frame, expect, len);
		free(frame);
	}
	assert_int_equal(seal.seq, 2);
	cJSON_Delete(hb);
}

/* Writes the two vector frames (seq 0, then 1) in the order given, once each. */
static void sealed_reader(struct pair *p, const char *const *frames, size_t n)
{
	unsigned char key[PROTO_KEY_LEN], frame[40];
	unhex(KEY_W2M, key, sizeof key);
	proto_frame_set_limit(&p->c, PROTO_MAX_FRAME);
	proto_frame_seal_recv(&p->c, key);
	for (size_t i = 0; i < n; i++) {
		unhex(frames[i], frame, sizeof frame);
		raw_write(p->b, frame, sizeof frame);
	}
}

static void expect_heartbeat(struct pair *p)
{
	cJSON *got = NULL;
	struct proto_msg m;
	assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_OK);
	assert_int_equal(proto_msg_parse(got, &m), PROTO_OK);
	assert_int_equal(m.type, PROTO_MSG_HEARTBEAT);
	cJSON_Delete(got);
}

static void test_sealed_in_order(void **state)
{
	struct pair *p = *state;
	const char *const frames[] = { SEALED_W2M_0, SEALED_W2M_1 };
	sealed_reader(p, frames, 2);
	expect_heartbeat(p);
	expect_heartbeat(p);
	assert_int_equal(proto_frame_recv(&p->c, &(cJSON *){ NULL }), PROTO_AGAIN);
}

static void test_sealed_replayed(void **state)
{
	struct pair *p = *state;
	const char *const frames[] = { SEALED_W2M_0, SEALED_W2M_0 };
	sealed_reader(p, frames, 2);
	expect_heartbeat(p);
	expect_error(p, PROTO_ERR_FORGED);
}

static void test_sealed_reordered(void **state)
{
	struct pair *p = *state;
	const char *const frames[] = { SEALED_W2M_1, SEALED_W2M_0 };
	sealed_reader(p, frames, 2);
	expect_error(p, PROTO_ERR_FORGED);
}

/* A flipped bit anywhere after the header (ciphertext, tag) fails the tag; in the
 * header it changes the length the tag covers (or the limit check refuses it). */
static void test_sealed_altered(void **state)
{
	for (size_t bit = 0; bit < 40 * 8; bit += 7) {
		void *state_p = NULL;
		assert_int_equal(setup(&state_p), 0);
		struct pair *p = state_p;
		unsigned char key[PROTO_KEY_LEN], frame[40];
		unhex(KEY_W2M, key, sizeof key);
		unhex(SEALED_W2M_0, frame, sizeof frame);
		frame[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		proto_frame_set_limit(&p->c, PROTO_MAX_FRAME);
		proto_frame_seal_recv(&p->c, key);
		raw_write(p->b, frame, sizeof frame);
		shutdown(p->b, SHUT_WR);
		cJSON *got = NULL;
		enum proto_err err = proto_frame_recv(&p->c, &got);
		assert_null(got);
		assert_true(err == PROTO_ERR_FORGED || err == PROTO_ERR_TOO_LARGE || err == PROTO_ERR_TRUNCATED);
		if (bit >= 32)
			assert_int_equal(err, PROTO_ERR_FORGED);
		teardown(&state_p);
	}
}

/* Two conns over the pair, each direction sealed with its own key: what one sends,
 * the other reads, and a plain frame where a sealed one is due fails. */
static void test_sealed_between_conns(void **state)
{
	struct pair *p = *state;
	struct proto_conn peer;
	unsigned char key[PROTO_KEY_LEN];
	cJSON *msg = NULL, *got = NULL;
	struct proto_msg m;
	unhex(KEY_W2M, key, sizeof key);
	proto_frame_conn_init(&peer, p->b);
	proto_frame_seal_send(&peer, key);
	proto_frame_set_limit(&p->c, PROTO_MAX_FRAME);
	proto_frame_seal_recv(&p->c, key);
	assert_int_equal(proto_msg_shutdown(1500, "job ended", &msg), PROTO_OK);
	for (int i = 0; i < 3; i++)
		assert_int_equal(proto_frame_send(&peer, msg), PROTO_OK);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_OK);
		assert_int_equal(proto_msg_parse(got, &m), PROTO_OK);
		assert_int_equal(m.u.shutdown.grace_ms, 1500);
		cJSON_Delete(got);
	}
	raw_frame(p->b, "{\"type\":\"heartbeat\"}");
	expect_error(p, PROTO_ERR_FORGED);
	cJSON_Delete(msg);
	proto_frame_conn_free(&peer);
	assert_memory_equal(&peer.tx, &(struct proto_seal){ 0 }, sizeof peer.tx);
}

static void test_round_trip_byte_by_byte(void **state)
{
	struct pair *p = *state;
	unsigned char *frame = NULL;
	size_t len = 0;
	cJSON *msg = NULL, *got = NULL;
	struct proto_msg m;

	assert_int_equal(proto_msg_shutdown(1500, "job ended", &msg), PROTO_OK);
	assert_int_equal(proto_frame_encode(msg, PROTO_MAX_FRAME, NULL, &frame, &len), PROTO_OK);
	for (size_t i = 0; i < len; i++) {
		assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_AGAIN);
		raw_write(p->b, frame + i, 1);
	}
	/* Two frames back to back: the reader hands out the first, then the second. */
	raw_write(p->b, frame, len);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_OK);
		assert_int_equal(proto_msg_parse(got, &m), PROTO_OK);
		assert_int_equal(m.type, PROTO_MSG_SHUTDOWN);
		assert_int_equal(m.u.shutdown.grace_ms, 1500);
		assert_string_equal(m.u.shutdown.reason, "job ended");
		cJSON_Delete(got);
	}
	assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_AGAIN);
	close(p->b);
	p->b = -1;
	assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_CLOSED);
	free(frame);
	cJSON_Delete(msg);
}

static void test_send_between_conns(void **state)
{
	struct pair *p = *state;
	struct proto_conn peer;
	cJSON *msg = NULL, *got = NULL;
	struct proto_msg m;

	proto_frame_conn_init(&peer, p->b);
	assert_int_equal(proto_msg_payload_exited_signal(9, &msg), PROTO_OK);
	assert_int_equal(proto_frame_send(&peer, msg), PROTO_OK);
	assert_false(peer.want_write);
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, proto_frame_now_ms() + 1000), PROTO_OK);
	assert_int_equal(proto_msg_parse(got, &m), PROTO_OK);
	assert_true(m.u.payload_exited.signaled);
	assert_int_equal(m.u.payload_exited.signal, 9);
	cJSON_Delete(got);
	cJSON_Delete(msg);
	proto_frame_conn_free(&peer);
}

static void test_truncated(void **state)
{
	struct pair *p = *state;

	raw_write(p->b, "\0\0\0\x10{\"type\"", 11);
	close(p->b);
	p->b = -1;
	expect_error(p, PROTO_ERR_TRUNCATED);
}

static void test_zero_length(void **state)
{
	struct pair *p = *state;

	raw_write(p->b, "\0\0\0\0", 4);
	expect_error(p, PROTO_ERR_TOO_LARGE);
}

static void test_oversized(void **state)
{
	struct pair *p = *state;

	/* 2^32-1 must be refused from the header alone, before any allocation. */
	raw_write(p->b, "\xff\xff\xff\xff", 4);
	expect_error(p, PROTO_ERR_TOO_LARGE);
}

static void test_handshake_limit(void **state)
{
	struct pair *p = *state;
	char *big = malloc(PROTO_MAX_FRAME + 1);
	cJSON *got = NULL;
	size_t n;

	/* A 4097-byte object: over the handshake limit, fine afterwards. */
	proto_frame_set_exact(&p->c, true);
	n = PROTO_MAX_HANDSHAKE_FRAME + 1;
	memset(big, ' ', n);
	memcpy(big, "{\"type\":\"heartbeat\"}", 20);
	big[n] = '\0';
	raw_frame(p->b, big);
	expect_error(p, PROTO_ERR_TOO_LARGE);

	proto_frame_conn_free(&p->c);
	proto_frame_conn_init(&p->c, p->a);
	assert_int_equal(proto_frame_set_limit(&p->c, PROTO_MAX_FRAME), PROTO_OK);
	/* The earlier frame's body is still in the socket (exact reads took only its
	 * header): drain it by hand. */
	char sink[8192];
	assert_int_equal(read(p->a, sink, n), (ssize_t)n);
	raw_frame(p->b, big);
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, proto_frame_now_ms() + 1000), PROTO_OK);
	cJSON_Delete(got);

	/* Exactly PROTO_MAX_FRAME passes; one more does not. */
	n = PROTO_MAX_FRAME;
	memset(big, ' ', n);
	memcpy(big, "{\"type\":\"heartbeat\"}", 20);
	big[n] = '\0';
	raw_frame(p->b, big);
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, proto_frame_now_ms() + 1000), PROTO_OK);
	cJSON_Delete(got);
	raw_write(p->b, "\0\x01\0\x01", 4);
	expect_error(p, PROTO_ERR_TOO_LARGE);
	assert_int_equal(proto_frame_set_limit(&p->c, PROTO_MAX_FRAME + 1), PROTO_ERR_INVALID);
	assert_int_equal(proto_frame_set_limit(&p->c, 0), PROTO_ERR_INVALID);
	free(big);
}

static void test_garbage_payloads(void **state)
{
	static const char *const bad[] = {
		"[1,2,3]",                         /* not an object */
		"\"type\"",
		"42",
		"null",
		"{\"type\":\"heartbeat\"",         /* unterminated */
		"{\"type\":\"heartbeat\"} {}",     /* trailing data */
		"{'type':'heartbeat'}",
		"{\"type\":\"heartbeat\",}",
		"{\"a\":01}",                      /* leading zero */
		"{\"a\":1.}",
		"{\"a\":.5}",
		"{\"a\":+1}",
		"{\"a\":NaN}",
		"{\"a\":Infinity}",
		"{\"a\":\"x\ty\"}",                /* raw control byte in a string */
		"{\"a\":\"\\u0000\"}",             /* would cut a C string short */
		"{\"a\":\"\\ud800\"}",             /* lone surrogate */
		"{\"a\":\"\xc0\xaf\"}",            /* overlong UTF-8 */
		"{\"a\":\"\xed\xa0\x80\"}",        /* UTF-8 surrogate */
		"{\"a\":\"\xff\"}",
		"\x01{\"type\":\"heartbeat\"}",    /* control byte as whitespace */
		"\xef\xbb\xbf{\"type\":\"heartbeat\"}", /* BOM */
		"{\"type\":\"heartbeat\",\"type\":\"shutdown\"}", /* duplicate name */
		"{\"x\":{\"a\":1,\"a\":2}}",
		"{\"a\":tru}",
	};
	cJSON *got = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum proto_err rc = proto_frame_decode((const unsigned char *)bad[i], strlen(bad[i]), &got);
		if (rc != PROTO_ERR_BAD_JSON)
			fail_msg("accepted or misjudged #%zu: %s (%s)", i, bad[i], proto_strerror(rc));
		assert_null(got);
	}
	/* An embedded NUL byte. */
	assert_int_equal(proto_frame_decode((const unsigned char *)"{\"a\":\"\0\"}", 9, &got),
			 PROTO_ERR_BAD_JSON);
}

static void test_good_payloads(void **state)
{
	static const char *const good[] = {
		"{\"type\":\"heartbeat\"}",
		" \t\r\n{ \"type\" : \"heartbeat\" , \"x\" : [ 1 , -0.5e+3 , 0 , true , false , null ] } ",
		"{\"a\":\"\\u00e9\xc3\xa9\xf0\x9f\x98\x80\\ud83d\\ude00\\\\u0000\"}",
		"{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}",
	};
	cJSON *got = NULL;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		enum proto_err rc = proto_frame_decode((const unsigned char *)good[i], strlen(good[i]), &got);
		if (rc != PROTO_OK)
			fail_msg("refused #%zu: %s (%s)", i, good[i], proto_strerror(rc));
		cJSON_Delete(got);
	}
}

static void test_depth(void **state)
{
	char text[200];
	cJSON *got = NULL;
	size_t n = 0;

	/* 32 levels pass, 33 do not. */
	for (int levels = 32; levels <= 33; levels++) {
		n = 0;
		text[n++] = '{';
		memcpy(text + n, "\"a\":", 4);
		n += 4;
		for (int i = 1; i < levels; i++)
			text[n++] = '[';
		for (int i = 1; i < levels; i++)
			text[n++] = ']';
		text[n++] = '}';
		assert_int_equal(proto_frame_decode((unsigned char *)text, n, &got),
				 levels == 32 ? PROTO_OK : PROTO_ERR_BAD_JSON);
		cJSON_Delete(got);
	}
}

/* names members "m0", "m1"...: count of them, the last named like the first when dup. */
static size_t object_of(char *text, size_t size, size_t count, bool dup)
{
	size_t n = (size_t)snprintf(text, size, "{");
	for (size_t i = 0; i < count && n < size; i++)
		n += (size_t)snprintf(text + n, size - n, "%s\"m%zu\":1", i ? "," : "", dup && i == count - 1 ? 0 : i);
	assert_true(n + 2 <= size);
	n += (size_t)snprintf(text + n, size - n, "}");
	return n;
}

static void test_members(void **state)
{
	static char text[PROTO_MAX_FRAME + 64];
	cJSON *got = NULL;
	(void)state;
	/* 64 members pass; 65, or a duplicate among 64 (first and last), do not. */
	size_t n = object_of(text, sizeof text, PROTO_MAX_MEMBERS, false);
	assert_int_equal(proto_frame_decode((unsigned char *)text, n, &got), PROTO_OK);
	cJSON_Delete(got);
	n = object_of(text, sizeof text, PROTO_MAX_MEMBERS + 1, false);
	assert_int_equal(proto_frame_decode((unsigned char *)text, n, &got), PROTO_ERR_BAD_JSON);
	n = object_of(text, sizeof text, PROTO_MAX_MEMBERS, true);
	assert_int_equal(proto_frame_decode((unsigned char *)text, n, &got), PROTO_ERR_BAD_JSON);
	/* Nested: a heartbeat padded with an object of 65 members. */
	n = (size_t)snprintf(text, sizeof text, "{\"type\":\"heartbeat\",\"pad\":");
	n += object_of(text + n, sizeof text - n, PROTO_MAX_MEMBERS + 1, false);
	n += (size_t)snprintf(text + n, sizeof text - n, "}");
	assert_int_equal(proto_frame_decode((unsigned char *)text, n, &got), PROTO_ERR_BAD_JSON);
	/* The fuzzing finding: a 64 KiB frame of thousands of distinct names (8,687 there)
	 * was accepted after a quadratic check (~200 ms); it is a framing error now. */
	n = object_of(text, sizeof text, 6000, false);
	assert_true(n <= PROTO_MAX_FRAME);
	assert_int_equal(proto_frame_decode((unsigned char *)text, n, &got), PROTO_ERR_BAD_JSON);
	assert_null(got);
}

static void test_garbage_on_the_wire(void **state)
{
	struct pair *p = *state;

	raw_frame(p->b, "GET / HTTP/1.1\r\n");
	expect_error(p, PROTO_ERR_BAD_JSON);
}

static void test_partial_writes(void **state)
{
	struct pair *p = *state;
	int sz = 4096;
	cJSON *msg = NULL, *got = NULL;
	struct proto_conn reader;
	int sent = 0, received = 0;
	char *reason = malloc(60000);

	/* Small socket buffers force partial send()s and want_write. */
	setsockopt(p->a, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(p->b, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	memset(reason, 'r', 1000);
	reason[1000] = '\0';
	assert_int_equal(proto_msg_shutdown(1, reason, &msg), PROTO_OK);
	while (!p->c.want_write) {
		assert_int_equal(proto_frame_send(&p->c, msg), PROTO_OK);
		sent++;
	}
	fcntl(p->b, F_SETFL, O_NONBLOCK);
	proto_frame_conn_init(&reader, p->b);
	assert_int_equal(proto_frame_set_limit(&reader, PROTO_MAX_FRAME), PROTO_OK);
	while (received < sent) {
		enum proto_err rc = proto_frame_recv(&reader, &got);
		if (rc == PROTO_OK) {
			struct proto_msg m;
			assert_int_equal(proto_msg_parse(got, &m), PROTO_OK);
			assert_string_equal(m.u.shutdown.reason, reason);
			cJSON_Delete(got);
			received++;
			continue;
		}
		assert_int_equal(rc, PROTO_AGAIN);
		rc = proto_frame_flush(&p->c);
		assert_true(rc == PROTO_OK || rc == PROTO_AGAIN);
	}
	assert_false(p->c.want_write);
	/* Queue cap: a peer that never reads cannot make us buffer without bound. */
	enum proto_err rc = PROTO_OK;
	for (int i = 0; i < 1000 && rc == PROTO_OK; i++)
		rc = proto_frame_send(&p->c, msg);
	assert_int_equal(rc, PROTO_ERR_OVERFLOW);
	proto_frame_conn_free(&reader);
	cJSON_Delete(msg);
	free(reason);
}

/* A wait hook that reports an interruption on its first call, then waits as the
 * codec's default does. */
static int hook_calls;
static enum proto_err interrupt_once(int fd, short events, int64_t deadline_ms, void *ctx)
{
	(void)ctx;
	if (hook_calls++ == 0)
		return PROTO_ERR_INTERRUPTED;
	return proto_frame_poll(fd, events, deadline_ms, NULL);
}

/* What the wait hook returns ends a blocking wait at once, keeps what was read of a
 * frame, and the next call picks up where the first left off. */
static void test_wait_hook(void **state)
{
	struct pair *p = *state;
	static const char text[] = "{\"type\":\"heartbeat\"}";
	unsigned char hdr[4] = { 0, 0, 0, sizeof text - 1 };
	cJSON *got = NULL;
	int64_t t0;

	hook_calls = 0;
	proto_frame_set_wait(&p->c, interrupt_once, NULL);
	raw_write(p->b, hdr, 4);
	raw_write(p->b, text, 5);
	t0 = proto_frame_now_ms();
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, t0 + 5000), PROTO_ERR_INTERRUPTED);
	assert_null(got);
	assert_true(proto_frame_now_ms() - t0 < 1000);
	raw_write(p->b, text + 5, sizeof text - 1 - 5);
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, proto_frame_now_ms() + 5000), PROTO_OK);
	assert_non_null(got);
	cJSON_Delete(got);
	assert_int_equal(hook_calls, 1);
	/* Nothing pending on either side: the deadline still rules. */
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, proto_frame_now_ms() + 50), PROTO_ERR_TIMEOUT);
	proto_frame_set_wait(&p->c, NULL, NULL);
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, proto_frame_now_ms() + 50), PROTO_ERR_TIMEOUT);
	assert_string_equal(proto_strerror(PROTO_ERR_INTERRUPTED), "interrupted while waiting");
}

/* Greedy reads: several frames in the socket come out one by one, the buffer says
 * whether more are in, and a limit lowered between two buffered frames applies to
 * the second. */
static void test_frames_in_one_read(void **state)
{
	struct pair *p = *state;
	cJSON *got = NULL;

	assert_false(proto_frame_buffered(&p->c));
	raw_frame(p->b, "{\"type\":\"heartbeat\"}");
	raw_frame(p->b, "{\"type\":\"heartbeat\",\"n\":2}");
	raw_frame(p->b, "{\"type\":\"heartbeat\",\"n\":3,\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}");
	assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_OK);
	assert_null(cJSON_GetObjectItem(got, "n"));
	cJSON_Delete(got);
	assert_true(proto_frame_buffered(&p->c));
	assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_OK);
	assert_int_equal(cJSON_GetObjectItem(got, "n")->valueint, 2);
	cJSON_Delete(got);
	assert_true(proto_frame_buffered(&p->c));
	assert_int_equal(proto_frame_set_limit(&p->c, 20), PROTO_OK);
	expect_error(p, PROTO_ERR_TOO_LARGE);
	assert_false(proto_frame_buffered(&p->c));
}

/* Exact reads leave everything past the frame returned in the socket. */
static void test_exact_reads(void **state)
{
	struct pair *p = *state;
	cJSON *got = NULL;
	char rest[64];

	proto_frame_set_exact(&p->c, true);
	raw_frame(p->b, "{\"type\":\"heartbeat\"}");
	raw_write(p->b, "tail", 4);
	assert_int_equal(proto_frame_recv(&p->c, &got), PROTO_OK);
	cJSON_Delete(got);
	assert_false(proto_frame_buffered(&p->c));
	assert_int_equal(read(p->a, rest, sizeof rest), 4);
	assert_memory_equal(rest, "tail", 4);
}

static void test_timeout_and_send_errors(void **state)
{
	struct pair *p = *state;
	cJSON *got = NULL, *msg = NULL, *arr = cJSON_CreateArray();
	int64_t t0 = proto_frame_now_ms();

	assert_int_equal(proto_frame_recv_wait(&p->c, &got, t0 + 50), PROTO_ERR_TIMEOUT);
	assert_true(proto_frame_now_ms() - t0 >= 50);
	/* Not an object. */
	assert_int_equal(proto_frame_send(&p->c, arr), PROTO_ERR_BAD_JSON);
	/* Strings must be UTF-8 so the peer can read them. */
	msg = cJSON_CreateObject();
	cJSON_AddStringToObject(msg, "type", "x\xff");
	assert_int_equal(proto_frame_send(&p->c, msg), PROTO_ERR_BAD_JSON);
	close(p->b);
	p->b = -1;
	assert_int_equal(proto_frame_recv_wait(&p->c, &got, t0 + 1000), PROTO_CLOSED);
	cJSON_DeleteItemFromObject(msg, "type");
	cJSON_AddStringToObject(msg, "type", "heartbeat");
	assert_int_equal(proto_frame_send_wait(&p->c, msg, t0 + 1000), PROTO_ERR_IO);
	cJSON_Delete(msg);
	cJSON_Delete(arr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector_heartbeat),
		cmocka_unit_test(test_vector_sealed),
		cmocka_unit_test_setup_teardown(test_sealed_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sealed_replayed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sealed_reordered, setup, teardown),
		cmocka_unit_test(test_sealed_altered),
		cmocka_unit_test_setup_teardown(test_sealed_between_conns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip_byte_by_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_between_conns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handshake_limit, setup, teardown),
		cmocka_unit_test(test_garbage_payloads),
		cmocka_unit_test(test_good_payloads),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_members),
		cmocka_unit_test_setup_teardown(test_garbage_on_the_wire, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait_hook, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frames_in_one_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exact_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_and_send_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
