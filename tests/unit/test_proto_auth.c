/* proto_auth_*: the PROTOCOL.md test vectors, replay, wrong cookie, hex. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "proto.h"

/* PROTOCOL.md, "Test vectors". */
static const char COOKIE[] = "correct horse battery staple 2026";
static const char MANAGER_PROOF[] = "05e7599da7f79270c3c2f5a2c91ca8a2792c56e52273e64504f44c4df6f518f4";
static const char WORKER_PROOF[] = "33326e2c932ba6d126f078b877e75370545b78af380ca1b5227372fe3166eec5";

static void vector_nonces(unsigned char wn[PROTO_NONCE_LEN], unsigned char mn[PROTO_NONCE_LEN])
{
	for (int i = 0; i < PROTO_NONCE_LEN; i++) {
		wn[i] = (unsigned char)i;
		mn[i] = (unsigned char)(0x20 + i);
	}
}

static void test_vectors(void **state)
{
	unsigned char wn[PROTO_NONCE_LEN], mn[PROTO_NONCE_LEN], p[PROTO_PROOF_LEN];
	char hex[PROTO_HEX_LEN + 1];

	vector_nonces(wn, mn);
	assert_int_equal(proto_auth_proof(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_MANAGER, wn, mn, p),
			 PROTO_OK);
	assert_int_equal(proto_auth_hex_encode(p, sizeof(p), hex, sizeof(hex)), PROTO_OK);
	assert_string_equal(hex, MANAGER_PROOF);
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_MANAGER, wn, mn, p),
			 PROTO_OK);

	assert_int_equal(proto_auth_proof(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_WORKER, wn, mn, p),
			 PROTO_OK);
	assert_int_equal(proto_auth_hex_encode(p, sizeof(p), hex, sizeof(hex)), PROTO_OK);
	assert_string_equal(hex, WORKER_PROOF);
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_WORKER, wn, mn, p),
			 PROTO_OK);
	/* A manager's proof never passes as the worker's: distinct labels. */
	assert_int_equal(proto_auth_hex_decode(MANAGER_PROOF, p, sizeof(p)), PROTO_OK);
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_WORKER, wn, mn, p),
			 PROTO_ERR_AUTH);
	/* Nor under another version. */
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 2, PROTO_ROLE_MANAGER, wn, mn, p),
			 PROTO_ERR_AUTH);
}

static void test_replay_fails_with_fresh_nonce(void **state)
{
	unsigned char wn[PROTO_NONCE_LEN], mn[PROTO_NONCE_LEN], recorded[PROTO_PROOF_LEN];

	vector_nonces(wn, mn);
	assert_int_equal(proto_auth_hex_decode(WORKER_PROOF, recorded, sizeof(recorded)), PROTO_OK);
	assert_int_equal(proto_auth_nonce(mn), PROTO_OK);
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_WORKER, wn, mn,
					   recorded),
			 PROTO_ERR_AUTH);
	/* And a manager replaying its old proof to a worker with a fresh nonce. */
	vector_nonces(wn, mn);
	assert_int_equal(proto_auth_hex_decode(MANAGER_PROOF, recorded, sizeof(recorded)), PROTO_OK);
	assert_int_equal(proto_auth_nonce(wn), PROTO_OK);
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_MANAGER, wn, mn,
					   recorded),
			 PROTO_ERR_AUTH);
}

static void test_wrong_cookie_and_reflected_nonce(void **state)
{
	static const char wrong[] = "correct horse battery staple 2025";
	unsigned char wn[PROTO_NONCE_LEN], mn[PROTO_NONCE_LEN], p[PROTO_PROOF_LEN];

	vector_nonces(wn, mn);
	assert_int_equal(proto_auth_proof(wrong, strlen(wrong), 1, PROTO_ROLE_MANAGER, wn, mn, p),
			 PROTO_OK);
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_MANAGER, wn, mn, p),
			 PROTO_ERR_AUTH);
	/* Equal nonces fail even with the right proof. */
	assert_int_equal(proto_auth_proof(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_MANAGER, wn, wn, p),
			 PROTO_OK);
	assert_int_equal(proto_auth_verify(COOKIE, strlen(COOKIE), 1, PROTO_ROLE_MANAGER, wn, wn, p),
			 PROTO_ERR_AUTH);
	/* Empty cookie, bad role, bad version: refused, not computed. */
	assert_int_equal(proto_auth_proof(COOKIE, 0, 1, PROTO_ROLE_MANAGER, wn, mn, p),
			 PROTO_ERR_INVALID);
	assert_int_equal(proto_auth_proof(COOKIE, 4, 1, (enum proto_role)7, wn, mn, p),
			 PROTO_ERR_INVALID);
	assert_int_equal(proto_auth_proof(COOKIE, 4, 0, PROTO_ROLE_WORKER, wn, mn, p),
			 PROTO_ERR_INVALID);
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
	for (int e = PROTO_OK; e <= PROTO_ERR_OVERFLOW; e++)
		assert_string_not_equal(proto_strerror(e), "unknown protocol error");
	assert_string_equal(proto_strerror(9999), "unknown protocol error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_replay_fails_with_fresh_nonce),
		cmocka_unit_test(test_wrong_cookie_and_reflected_nonce),
		cmocka_unit_test(test_nonces_differ),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
