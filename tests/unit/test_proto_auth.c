/* proto_auth_* and proto_kex_*: the PROTOCOL.md test vectors, what the transcript binds,
 * wrong cookie, reflection, small-order keys, hex. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "proto.h"

/* PROTOCOL.md, "Test vectors". */
static const char COOKIE[] = "correct horse battery staple 2026";
static const char WORKER_KEY[] = "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a";
static const char MANAGER_KEY[] = "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f";
static const char WORKER_PROOF[] = "b0ada82e76ffb2838d959bdd0a27157022069cf5c5c08ebc0bca4881f5ca4b15";
static const char MANAGER_PROOF[] = "addd1fbe7e341617316207cea65aaddb731e923352ad02e1c485b19dd1b14313";
static const char KEY_W2M[] = "859d2a84390e9ea104f5e8055caacb43a09b0c0323b4e190540b8eb57bf22d34";
static const char KEY_M2W[] = "cff096829645347ad94b8a28972b56e035442f3faa33bbfa0668b1fff9f76e2c";
static const char WRONG_COOKIE_WORKER_PROOF[] = "fe4aac45cf67395268513533be4c3b622bb34e5c607da291896a819ab6a2acbf";

struct vector {
	struct proto_kex worker, manager;
	struct proto_transcript t;
};

static void hex_is(const unsigned char *bytes, const char *hex)
{
	char got[PROTO_HEX_LEN + 1];
	assert_int_equal(proto_auth_hex_encode(bytes, 32, got, sizeof got), PROTO_OK);
	assert_string_equal(got, hex);
}

static void vector_setup(struct vector *v)
{
	unsigned char wpriv[PROTO_KEY_LEN], mpriv[PROTO_KEY_LEN];
	for (int i = 0; i < 32; i++) {
		v->t.worker_nonce[i] = (unsigned char)i;
		v->t.manager_nonce[i] = (unsigned char)(0x20 + i);
		wpriv[i] = (unsigned char)(0x40 + i);
		mpriv[i] = (unsigned char)(0x60 + i);
	}
	assert_int_equal(proto_kex_from_private(&v->worker, wpriv), PROTO_OK);
	assert_int_equal(proto_kex_from_private(&v->manager, mpriv), PROTO_OK);
	memcpy(v->t.worker_key, v->worker.pub, PROTO_KEY_LEN);
	memcpy(v->t.manager_key, v->manager.pub, PROTO_KEY_LEN);
	v->t.version = 2;
}

static void vector_free(struct vector *v)
{
	proto_kex_free(&v->worker);
	proto_kex_free(&v->manager);
}

static void test_vectors(void **state)
{
	struct vector v;
	struct proto_keys w, m;
	vector_setup(&v);
	hex_is(v.worker.pub, WORKER_KEY);
	hex_is(v.manager.pub, MANAGER_KEY);
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_WORKER, &v.worker, &v.t, &w), PROTO_OK);
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_MANAGER, &v.manager, &v.t, &m), PROTO_OK);
	/* Both sides derive the same schedule, and it is the spec's. */
	assert_memory_equal(&w, &m, sizeof w);
	hex_is(w.worker_proof, WORKER_PROOF);
	hex_is(w.manager_proof, MANAGER_PROOF);
	hex_is(w.w2m, KEY_W2M);
	hex_is(w.m2w, KEY_M2W);
	assert_int_equal(proto_auth_check(w.worker_proof, m.worker_proof), PROTO_OK);
	assert_int_equal(proto_auth_check(w.worker_proof, m.manager_proof), PROTO_ERR_AUTH);
	vector_free(&v);
}

/* Everything th covers changes every output: another nonce (replay), key (a relay
 * that substitutes its own), or version (downgrade). */
static void test_transcript_binds(void **state)
{
	struct vector v;
	struct proto_keys base, other;
	vector_setup(&v);
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_WORKER, &v.worker, &v.t, &base), PROTO_OK);
	for (int change = 0; change < 4; change++) {
		struct proto_transcript t = v.t;
		if (change == 0)
			t.worker_nonce[5] ^= 1;
		else if (change == 1)
			t.manager_nonce[31] ^= 0x80;
		else if (change == 2)
			t.worker_key[0] ^= 2; /* th only: the worker's dh uses its private key */
		else
			t.version = 3;
		assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_WORKER, &v.worker, &t, &other), PROTO_OK);
		assert_memory_not_equal(base.worker_proof, other.worker_proof, PROTO_PROOF_LEN);
		assert_memory_not_equal(base.manager_proof, other.manager_proof, PROTO_PROOF_LEN);
		assert_memory_not_equal(base.w2m, other.w2m, PROTO_KEY_LEN);
	}
	vector_free(&v);
}

static void test_wrong_cookie_reflection_small_order(void **state)
{
	static const char wrong[] = "correct horse battery staple 2025";
	struct vector v;
	struct proto_keys k;
	vector_setup(&v);
	assert_int_equal(proto_auth_keys(wrong, strlen(wrong), PROTO_ROLE_WORKER, &v.worker, &v.t, &k), PROTO_OK);
	hex_is(k.worker_proof, WRONG_COOKIE_WORKER_PROOF);
	/* A reflected nonce. */
	struct proto_transcript t = v.t;
	memcpy(t.manager_nonce, t.worker_nonce, PROTO_NONCE_LEN);
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_WORKER, &v.worker, &t, &k), PROTO_ERR_AUTH);
	/* Peer keys of small order (RFC 7748 §6.1): the shared secret would be all zeros,
	 * the same whatever our key, so it must fail rather than key the session. */
	t = v.t;
	memset(t.manager_key, 0, PROTO_KEY_LEN);
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_WORKER, &v.worker, &t, &k), PROTO_ERR_AUTH);
	memset(t.manager_key, 0, PROTO_KEY_LEN);
	t.manager_key[0] = 1;
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_WORKER, &v.worker, &t, &k), PROTO_ERR_AUTH);
	assert_memory_equal(&k, &(struct proto_keys){ 0 }, sizeof k);
	/* Arguments the protocol cannot carry. */
	assert_int_equal(proto_auth_keys(COOKIE, 0, PROTO_ROLE_WORKER, &v.worker, &v.t, &k), PROTO_ERR_INVALID);
	assert_int_equal(proto_auth_keys(COOKIE, 4, (enum proto_role)7, &v.worker, &v.t, &k), PROTO_ERR_INVALID);
	t = v.t;
	t.version = 0;
	assert_int_equal(proto_auth_keys(COOKIE, 4, PROTO_ROLE_WORKER, &v.worker, &t, &k), PROTO_ERR_INVALID);
	vector_free(&v);
}

/* Fresh pairs agree with each other and differ from the last. */
static void test_fresh_exchange(void **state)
{
	struct proto_kex a, b, c;
	struct proto_transcript t = { .version = PROTO_VERSION };
	struct proto_keys ka, kb;
	assert_int_equal(proto_kex_new(&a), PROTO_OK);
	assert_int_equal(proto_kex_new(&b), PROTO_OK);
	assert_int_equal(proto_kex_new(&c), PROTO_OK);
	assert_memory_not_equal(a.pub, b.pub, PROTO_KEY_LEN);
	assert_int_equal(proto_auth_nonce(t.worker_nonce), PROTO_OK);
	assert_int_equal(proto_auth_nonce(t.manager_nonce), PROTO_OK);
	memcpy(t.worker_key, a.pub, PROTO_KEY_LEN);
	memcpy(t.manager_key, b.pub, PROTO_KEY_LEN);
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_WORKER, &a, &t, &ka), PROTO_OK);
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_MANAGER, &b, &t, &kb), PROTO_OK);
	assert_memory_equal(&ka, &kb, sizeof ka);
	/* A man in the middle with its own key pair (c) but not the cookie's proofs. */
	assert_int_equal(proto_auth_keys(COOKIE, strlen(COOKIE), PROTO_ROLE_MANAGER, &c, &t, &kb), PROTO_OK);
	assert_memory_not_equal(ka.worker_proof, kb.worker_proof, PROTO_PROOF_LEN);
	proto_kex_free(&a);
	proto_kex_free(&b);
	proto_kex_free(&c);
	proto_kex_free(&c); /* idempotent */
}

static void test_nonces_differ(void **state)
{
	unsigned char a[PROTO_NONCE_LEN], b[PROTO_NONCE_LEN];

	assert_int_equal(proto_auth_nonce(a), PROTO_OK);
	assert_int_equal(proto_auth_nonce(b), PROTO_OK);
	assert_memory_not_equal(a, b, PROTO_NONCE_LEN);
}

static void test_hex(void **state)
{
	unsigned char out[4];
	char hex[9];
	const unsigned char in[4] = { 0x00, 0x7f, 0xab, 0xff };

	assert_int_equal(proto_auth_hex_encode(in, 4, hex, sizeof(hex)), PROTO_OK);
	assert_string_equal(hex, "007fabff");
	assert_int_equal(proto_auth_hex_encode(in, 4, hex, 8), PROTO_ERR_INVALID);
	assert_int_equal(proto_auth_hex_decode("007fabff", out, 4), PROTO_OK);
	assert_memory_equal(in, out, 4);

	static const char *const bad[] = {
		"007FABFF",  /* uppercase */
		"007fabf",   /* short */
		"007fabff0", /* long */
		"007fabfg",  /* not hex */
		"007f ab f", /* blank */
		"",
		"0x7fabff",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(out, 0xee, sizeof(out));
		assert_int_equal(proto_auth_hex_decode(bad[i], out, 4), PROTO_ERR_INVALID);
		assert_memory_equal(out, "\0\0\0\0", 4);
	}
	assert_int_equal(proto_auth_hex_decode(NULL, out, 4), PROTO_ERR_INVALID);
}

static void test_strerror(void **state)
{
	for (int e = PROTO_OK; e <= PROTO_ERR_FORGED; e++)
		assert_string_not_equal(proto_strerror(e), "unknown protocol error");
	assert_string_equal(proto_strerror(9999), "unknown protocol error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_transcript_binds),
		cmocka_unit_test(test_wrong_cookie_reflection_small_order),
		cmocka_unit_test(test_fresh_exchange),
		cmocka_unit_test(test_nonces_differ),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
