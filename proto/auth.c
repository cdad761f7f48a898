/* Cookie authentication and key agreement (PROTOCOL.md §3): an X25519 exchange, then
 * one HKDF over the exchange and the cookie, salted with the hash of everything both
 * hellos said, gives both proofs and both session keys. The cookie never crosses the
 * wire, and nothing sent before the worker's proof depends on it. */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

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

/* ---- X25519 ---- */

static enum proto_err kex_finish(struct proto_kex *kex, EVP_PKEY *pkey)
{
	size_t len = PROTO_KEY_LEN;
	if (pkey == NULL)
		return PROTO_ERR_CRYPTO;
	if (EVP_PKEY_get_raw_public_key(pkey, kex->pub, &len) != 1 || len != PROTO_KEY_LEN) {
		EVP_PKEY_free(pkey);
		return PROTO_ERR_CRYPTO;
	}
	kex->pkey = pkey;
	return PROTO_OK;
}

enum proto_err proto_kex_new(struct proto_kex *kex)
{
	unsigned char priv[PROTO_KEY_LEN];
	if (kex == NULL)
		return PROTO_ERR_INVALID;
	/* The private key from the kernel's generator, as the nonces: EVP_PKEY_keygen would
	 * instantiate OpenSSL's DRBG, 0.7 ms of a worker's CPU (see proto_auth_nonce). Any
	 * 32 random bytes are an X25519 private key (RFC 7748 clamps them). */
	enum proto_err err = proto_auth_nonce(priv);
	if (err == PROTO_OK)
		err = proto_kex_from_private(kex, priv);
	proto_auth_wipe(priv, sizeof priv);
	return err;
}

enum proto_err proto_kex_from_private(struct proto_kex *kex, const unsigned char priv[PROTO_KEY_LEN])
{
	if (kex == NULL || priv == NULL)
		return PROTO_ERR_INVALID;
	memset(kex, 0, sizeof *kex);
	return kex_finish(kex, EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, priv, PROTO_KEY_LEN));
}

void proto_kex_free(struct proto_kex *kex)
{
	if (kex == NULL)
		return;
	EVP_PKEY_free(kex->pkey); /* ecx keys are cleansed when freed */
	memset(kex, 0, sizeof *kex);
}

/* dh = X25519(own private key, peer's public key); all zeros (a small-order peer
 * key) is refused as an authentication failure, whatever libcrypto says of it. */
static enum proto_err kex_derive(const struct proto_kex *own, const unsigned char peer_key[PROTO_KEY_LEN],
				 unsigned char dh[PROTO_KEY_LEN])
{
	static const unsigned char zeros[PROTO_KEY_LEN];
	EVP_PKEY *peer = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, peer_key, PROTO_KEY_LEN);
	EVP_PKEY_CTX *ctx = peer ? EVP_PKEY_CTX_new_from_pkey(NULL, own->pkey, NULL) : NULL;
	size_t len = PROTO_KEY_LEN;
	enum proto_err err = PROTO_ERR_CRYPTO;
	if (ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1) {
		/* OpenSSL fails the derivation of an all-zero secret: that is the peer's fault. */
		if (EVP_PKEY_derive(ctx, dh, &len) != 1 || len != PROTO_KEY_LEN)
			err = PROTO_ERR_AUTH;
		else
			err = CRYPTO_memcmp(dh, zeros, PROTO_KEY_LEN) == 0 ? PROTO_ERR_AUTH : PROTO_OK;
	}
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	if (err != PROTO_OK)
		proto_auth_wipe(dh, PROTO_KEY_LEN);
	return err;
}

/* ---- the key schedule (PROTOCOL.md §3, step 3) ---- */

/* Longest label: "batch-agent/65535 keys". */
#define LABEL_MAX 32

/* th = SHA-256("batch-agent/<v>\n" || wn || wk || mn || mk) */
static enum proto_err transcript_hash(const struct proto_transcript *t, unsigned char th[32])
{
	char label[LABEL_MAX];
	int n = snprintf(label, sizeof label, "batch-agent/%d\n", t->version);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
		  EVP_DigestUpdate(md, label, (size_t)n) == 1 &&
		  EVP_DigestUpdate(md, t->worker_nonce, PROTO_NONCE_LEN) == 1 &&
		  EVP_DigestUpdate(md, t->worker_key, PROTO_KEY_LEN) == 1 &&
		  EVP_DigestUpdate(md, t->manager_nonce, PROTO_NONCE_LEN) == 1 &&
		  EVP_DigestUpdate(md, t->manager_key, PROTO_KEY_LEN) == 1 && EVP_DigestFinal_ex(md, th, &len) == 1 &&
		  len == 32;
	EVP_MD_CTX_free(md);
	return ok ? PROTO_OK : PROTO_ERR_CRYPTO;
}

/* okm = HKDF-SHA-256(salt = th, IKM = dh || cookie, info = "batch-agent/<v> keys"). */
static enum proto_err hkdf(const unsigned char th[32], const unsigned char *ikm, size_t ikm_len, int version,
			   struct proto_keys *out)
{
	char info[LABEL_MAX];
	int n = snprintf(info, sizeof info, "batch-agent/%d keys", version);
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)th, 32),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, (size_t)n),
		OSSL_PARAM_construct_end(),
	};
	bool ok = ctx != NULL && EVP_KDF_derive(ctx, (unsigned char *)out, sizeof *out, params) == 1;
	EVP_KDF_CTX_free(ctx); /* cleanses its copy of the key */
	EVP_KDF_free(kdf);
	return ok ? PROTO_OK : PROTO_ERR_CRYPTO;
}

enum proto_err proto_auth_keys(const void *cookie, size_t cookie_len, enum proto_role self,
			       const struct proto_kex *own, const struct proto_transcript *t,
			       struct proto_keys *out)
{
	unsigned char th[32];
	unsigned char *ikm = NULL;
	enum proto_err err;

	if (out == NULL)
		return PROTO_ERR_INVALID;
	memset(out, 0, sizeof *out);
	if (cookie == NULL || cookie_len == 0 || cookie_len > 65536 || own == NULL || own->pkey == NULL ||
	    t == NULL || t->version < 1 || t->version > 65535 ||
	    (self != PROTO_ROLE_WORKER && self != PROTO_ROLE_MANAGER))
		return PROTO_ERR_INVALID;
	/* A peer that echoes our nonce could be replaying our own challenge at us. */
	if (CRYPTO_memcmp(t->worker_nonce, t->manager_nonce, PROTO_NONCE_LEN) == 0)
		return PROTO_ERR_AUTH;
	/* IKM = dh || cookie: a copy of the cookie for this call only, cleansed when freed. */
	size_t ikm_len = PROTO_KEY_LEN + cookie_len;
	ikm = OPENSSL_secure_malloc(ikm_len);
	if (ikm == NULL)
		return PROTO_ERR_NOMEM;
	const unsigned char *peer = self == PROTO_ROLE_WORKER ? t->manager_key : t->worker_key;
	err = kex_derive(own, peer, ikm);
	if (err == PROTO_OK) {
		memcpy(ikm + PROTO_KEY_LEN, cookie, cookie_len);
		err = transcript_hash(t, th);
	}
	if (err == PROTO_OK)
		err = hkdf(th, ikm, ikm_len, t->version, out);
	OPENSSL_secure_clear_free(ikm, ikm_len);
	if (err != PROTO_OK)
		proto_auth_wipe(out, sizeof *out);
	return err;
}

enum proto_err proto_auth_check(const unsigned char expect[PROTO_PROOF_LEN], const unsigned char got[PROTO_PROOF_LEN])
{
	if (expect == NULL || got == NULL)
		return PROTO_ERR_INVALID;
	return CRYPTO_memcmp(expect, got, PROTO_PROOF_LEN) == 0 ? PROTO_OK : PROTO_ERR_AUTH;
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
