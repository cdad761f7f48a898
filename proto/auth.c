/* Cookie authentication: each side proves it knows the cookie by a MAC over both
 * nonces, so the cookie never crosses the wire and a recorded proof is useless
 * against a fresh nonce. */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

void proto_auth_wipe(void *p, size_t len)
{
	if (p != NULL && len > 0)
		OPENSSL_cleanse(p, len);
}

enum proto_err proto_auth_nonce(unsigned char nonce[PROTO_NONCE_LEN])
{
	if (nonce == NULL)
		return PROTO_ERR_INVALID;
	/* The kernel's generator, which seeds OpenSSL's own: instantiating OpenSSL's DRBG
	 * (a cipher fetch and an AES key schedule) cost each worker 0.7 ms of CPU, a sixth of
	 * its whole join (bench/bench-init.py). */
	size_t got = 0;
	while (got < PROTO_NONCE_LEN) {
		ssize_t n = getrandom(nonce + got, PROTO_NONCE_LEN - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			memset(nonce, 0, PROTO_NONCE_LEN);
			return PROTO_ERR_CRYPTO;
		}
		got += (size_t)n;
	}
	return PROTO_OK;
}

/* Longest label: "batch-agent/65535 manager\n". */
#define LABEL_MAX 32

enum proto_err proto_auth_proof(const void *cookie, size_t cookie_len, int version, enum proto_role prover,
		     const unsigned char worker_nonce[PROTO_NONCE_LEN],
		     const unsigned char manager_nonce[PROTO_NONCE_LEN],
		     unsigned char proof[PROTO_PROOF_LEN])
{
	unsigned char msg[LABEL_MAX + 2 * PROTO_NONCE_LEN];
	const unsigned char *first, *second;
	const char *role;
	unsigned int mac_len = 0;
	int label_len;
	enum proto_err err = PROTO_ERR_INVALID;

	if (proof == NULL)
		return PROTO_ERR_INVALID;
	memset(proof, 0, PROTO_PROOF_LEN);
	if (cookie == NULL || cookie_len == 0 || cookie_len > INT32_MAX || version < 1 ||
	    version > 65535 || worker_nonce == NULL || manager_nonce == NULL)
		return PROTO_ERR_INVALID;
	/* Each proof puts the verifier's challenge first, and the distinct labels keep a
	 * manager's proof from ever passing as a worker's (reflection). */
	if (prover == PROTO_ROLE_MANAGER) {
		role = "manager";
		first = worker_nonce;
		second = manager_nonce;
	} else if (prover == PROTO_ROLE_WORKER) {
		role = "worker";
		first = manager_nonce;
		second = worker_nonce;
	} else {
		return PROTO_ERR_INVALID;
	}
	label_len = snprintf((char *)msg, LABEL_MAX + 1, "batch-agent/%d %s\n", version, role);
	if (label_len < 0 || label_len > LABEL_MAX)
		goto out;
	memcpy(msg + label_len, first, PROTO_NONCE_LEN);
	memcpy(msg + label_len + PROTO_NONCE_LEN, second, PROTO_NONCE_LEN);
	if (HMAC(EVP_sha256(), cookie, (int)cookie_len, msg, (size_t)label_len + 2 * PROTO_NONCE_LEN,
		 proof, &mac_len) == NULL ||
	    mac_len != PROTO_PROOF_LEN) {
		memset(proof, 0, PROTO_PROOF_LEN);
		err = PROTO_ERR_CRYPTO;
		goto out;
	}
	err = PROTO_OK;
out:
	proto_auth_wipe(msg, sizeof(msg));
	return err;
}

enum proto_err proto_auth_verify(const void *cookie, size_t cookie_len, int version, enum proto_role prover,
		      const unsigned char worker_nonce[PROTO_NONCE_LEN],
		      const unsigned char manager_nonce[PROTO_NONCE_LEN],
		      const unsigned char proof[PROTO_PROOF_LEN])
{
	unsigned char expect[PROTO_PROOF_LEN];
	enum proto_err err;

	if (proof == NULL)
		return PROTO_ERR_INVALID;
	err = proto_auth_proof(cookie, cookie_len, version, prover, worker_nonce, manager_nonce,
			      expect);
	if (err != PROTO_OK)
		goto out;
	/* A peer that echoes our nonce could be replaying our own challenge at us. */
	if (CRYPTO_memcmp(worker_nonce, manager_nonce, PROTO_NONCE_LEN) == 0 ||
	    CRYPTO_memcmp(expect, proof, PROTO_PROOF_LEN) != 0)
		err = PROTO_ERR_AUTH;
out:
	proto_auth_wipe(expect, sizeof(expect));
	return err;
}

enum proto_err proto_auth_hex_encode(const unsigned char *in, size_t len, char *out, size_t out_size)
{
	static const char digits[] = "0123456789abcdef";

	if (out == NULL || (in == NULL && len > 0) || len > (SIZE_MAX - 1) / 2 ||
	    out_size < 2 * len + 1)
		return PROTO_ERR_INVALID;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
	return PROTO_OK;
}

/* A lowercase hex digit's value; false for anything else. */
static bool hex_value(char c, unsigned *out)
{
	if (c >= '0' && c <= '9')
		*out = (unsigned)(c - '0');
	else if (c >= 'a' && c <= 'f')
		*out = (unsigned)(c - 'a' + 10);
	else
		return false;
	return true;
}

enum proto_err proto_auth_hex_decode(const char *hex, unsigned char *out, size_t out_len)
{
	if (out == NULL)
		return PROTO_ERR_INVALID;
	if (hex == NULL || strnlen(hex, 2 * out_len + 1) != 2 * out_len)
		goto bad;
	for (size_t i = 0; i < out_len; i++) {
		unsigned hi, lo;
		if (!hex_value(hex[2 * i], &hi) || !hex_value(hex[2 * i + 1], &lo))
			goto bad;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return PROTO_OK;
bad:
	memset(out, 0, out_len);
	return PROTO_ERR_INVALID;
}
