/* The manager's side of the handshake (PROTOCOL.md §3): admit.c's checks, the conn and
 * the codec, on the bytes a peer sends, with the test cookie of PROTOCOL.md §8.
 *
 * The dispatch below is the one of listener.c's on_message (hello, then auth, then
 * register, each step refused by the first message that fails it), driven without the
 * listening socket, the queue and the deadlines: the peer's bytes go into a socket
 * pair whose other end is the manager's conn in an event loop, read with
 * conn_read_now.
 *
 * Input: byte 0 is the mode. Bit 0 clear: the rest is the raw byte stream of a
 * stranger, who knows no cookie. Bit 0 set: this harness plays a worker that knows
 * the cookie (its hello and proof as batch-agent makes them, with the vectors' nonce
 * and key), and the rest is a sequence of frames (4-byte big-endian length, payload)
 * whose payloads it seals as that worker (§1.1) and sends after its proof: what an
 * authenticated but hostile or buggy worker could send. Bit 1: a worker pool's job
 * rather than an MNP job.
 *
 * Checked beyond "no crash":
 *   - no peer that does not know the cookie passes admit_auth or reaches
 *     "registered", whatever it sends;
 *   - when the harness's worker proves the cookie, the manager's answer proves it too;
 *   - a registration that passes names a child of this job (an index in range, not
 *     the main node's, the job's prefix) at an address fit for the hostfile. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "address.h"
#include "admit.h"
#include "conn.h"
#include "fuzz.h"
#include "log.h"
#include "loop.h"
#include "proto.h"

/* PROTOCOL.md §8. */
static const char cookie_text[] = "correct horse battery staple 2026";
static const char worker_nonce_hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char worker_private_hex[] = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f";
static const char manager_private_hex[] = "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f";
/* The job of the example transcript: node 1 of 2, attempt 1. */
#define JOB_UUID "0f0e2c5a-1b2c-4d5e-8f90-123456789abc"

enum step { STEP_HELLO, STEP_AUTH, STEP_REGISTER, STEP_REGISTERED, STEP_REFUSED, STEP_LOST };

struct manager {
	struct conn conn;
	struct admission admission;
	const struct admit_job *job;
	enum step step;
	bool proved; /* admit_auth passed */
};

static struct proto_kex manager_kex, worker_kex;
static unsigned char worker_nonce[PROTO_NONCE_LEN];
static struct cookie cookie = { (unsigned char *)cookie_text, sizeof cookie_text - 1 };
static struct admit_job mnp_job, pool_job;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	unsigned char priv[PROTO_KEY_LEN];
	log_setup("fuzz_handshake", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	if (proto_auth_hex_decode(manager_private_hex, priv, sizeof priv) != PROTO_OK ||
	    proto_kex_from_private(&manager_kex, priv) != PROTO_OK ||
	    proto_auth_hex_decode(worker_private_hex, priv, sizeof priv) != PROTO_OK ||
	    proto_kex_from_private(&worker_kex, priv) != PROTO_OK ||
	    proto_auth_hex_decode(worker_nonce_hex, worker_nonce, sizeof worker_nonce) != PROTO_OK)
		abort();
	mnp_job = (struct admit_job){ .cookie = &cookie, .kex = &manager_kex, .job_id = JOB_UUID "#0",
				      .job_prefix = JOB_UUID "#", .job_prefix_length = sizeof JOB_UUID,
				      .num_nodes = 2, .main_node_index = 0, .attempt = 1 };
	pool_job = (struct admit_job){ .cookie = &cookie, .kex = &manager_kex, .job_id = JOB_UUID,
				       .num_nodes = 4, .main_node_index = -1, .pool = true, .attempt = -1 };
	return 0;
}

/* As listener_refuse does, without a listener to drop the peer from. */
static void refuse(struct manager *m, const struct admit_refusal *why)
{
	admit_send_refusal(&m->conn, why);
	m->step = STEP_REFUSED;
}

static void check_registration(const struct admit_job *job, const struct proto_register *reg)
{
	/* Read here without admit.c's helpers, which made the decision being checked. */
	FUZZ_CHECK(fuzz_hostfile_safe(reg->address, ADDRESS_ADVERTISED_MAX));
	if (job->pool)
		return;
	FUZZ_CHECK(reg->node_index.present && reg->node_index.value >= 0 && reg->node_index.value < job->num_nodes &&
		   reg->node_index.value != job->main_node_index);
	/* "<uuid>#<digits>", the digits this node's index (leading zeros allowed). */
	FUZZ_CHECK(strncmp(reg->job_id, job->job_prefix, job->job_prefix_length) == 0);
	const char *digits = reg->job_id + job->job_prefix_length;
	FUZZ_CHECK(digits[0] != '\0' && strspn(digits, "0123456789") == strlen(digits));
	FUZZ_CHECK(strtoll(digits, NULL, 10) == reg->node_index.value);
}

static void on_message(struct conn *c, const struct proto_msg *msg, void *ctx)
{
	struct manager *m = ctx;
	struct admit_refusal why;
	cJSON *reply = NULL;
	switch (m->step) {
	case STEP_HELLO:
		if (!admit_hello(&m->admission, m->job, msg, &reply, &why)) {
			refuse(m, &why);
			return;
		}
		m->step = STEP_AUTH;
		conn_send(c, reply, PROTO_OK);
		return;
	case STEP_AUTH:
		if (!admit_auth(&m->admission, m->job, msg, c, &why)) {
			refuse(m, &why);
			return;
		}
		m->proved = true;
		m->step = STEP_REGISTER;
		return;
	case STEP_REGISTER:
		if (!admit_register(m->job, msg, &why)) {
			refuse(m, &why);
			return;
		}
		check_registration(m->job, &msg->u.reg);
		FUZZ_CHECK(proto_msg_accept(5000, m->job->pool ? false : true, &reply) == PROTO_OK);
		conn_send(c, reply, PROTO_OK);
		m->step = STEP_REGISTERED;
		return;
	case STEP_REGISTERED:
	case STEP_REFUSED:
	case STEP_LOST:
		return;
	}
}

static void on_lost(struct conn *c, enum proto_err err, void *ctx)
{
	struct manager *m = ctx;
	if (m->step != STEP_REGISTERED)
		m->step = STEP_LOST;
}

static bool manager_listening(const struct manager *m)
{
	return m->conn.attached && m->step != STEP_REGISTERED && m->step != STEP_REFUSED && m->step != STEP_LOST;
}

/* A stranger's bytes, as fast as the socket takes them, then the end of the stream. */
static void stranger(struct manager *m, int peer, const uint8_t *data, size_t size)
{
	size_t off = 0;
	bool shut = false;
	for (int turns = 0; manager_listening(m) && turns < 1000000; turns++) {
		if (off < size) {
			ssize_t w = send(peer, data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
			FUZZ_CHECK(w > 0 || (w < 0 && (errno == EAGAIN || errno == EPIPE)));
			if (w > 0)
				off += (size_t)w;
		}
		if (off == size && !shut) {
			shutdown(peer, SHUT_WR);
			shut = true;
		}
		conn_read_now(&m->conn);
		/* Our answers (a hello, an error) must not fill the socket. */
		char sink[4096];
		while (recv(peer, sink, sizeof sink, MSG_DONTWAIT) > 0)
			;
	}
	FUZZ_CHECK(!manager_listening(m));
}

/* One sealed frame (§1.1) of payload, as the worker's direction seals its seq-th. */
static void seal_and_send(int fd, const unsigned char key[PROTO_KEY_LEN], uint64_t seq, const uint8_t *payload,
			  size_t len)
{
	unsigned char nonce[12] = { 0 };
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (unsigned char)(seq >> (56 - 8 * i));
	size_t n = len + PROTO_TAG_LEN;
	unsigned char *frame = malloc(4 + n);
	FUZZ_CHECK(frame != NULL);
	uint32_t be = htonl((uint32_t)n);
	memcpy(frame, &be, 4);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int out = 0, fin = 0;
	FUZZ_CHECK(ctx != NULL && EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce) == 1 &&
		   EVP_EncryptUpdate(ctx, NULL, &out, frame, 4) == 1 &&
		   EVP_EncryptUpdate(ctx, frame + 4, &out, payload, (int)len) == 1 &&
		   EVP_EncryptFinal_ex(ctx, frame + 4 + out, &fin) == 1 &&
		   EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, PROTO_TAG_LEN, frame + 4 + len) == 1);
	EVP_CIPHER_CTX_free(ctx);
	const unsigned char *p = frame;
	size_t left = 4 + n;
	while (left > 0) {
		ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
		if (w < 0 && errno == EPIPE)
			break; /* the manager closed: what is left is never read */
		FUZZ_CHECK(w > 0);
		p += w;
		left -= (size_t)w;
	}
	free(frame);
}

static bool worker_recv(struct proto_conn *wc, struct proto_msg *msg, cJSON **json)
{
	return proto_frame_recv(wc, json) == PROTO_OK && proto_msg_parse(*json, msg) == PROTO_OK;
}

/* The worker that knows the cookie: hello, proof, then the input's frames sealed. */
static void worker(struct manager *m, int peer, const uint8_t *data, size_t size)
{
	struct proto_conn wc;
	struct proto_msg msg;
	cJSON *json = NULL;
	proto_frame_conn_init(&wc, peer);
	FUZZ_CHECK(proto_msg_hello_worker(worker_nonce, worker_kex.pub, "batch-agent 0.1.0", &json) == PROTO_OK);
	FUZZ_CHECK(proto_frame_send(&wc, json) == PROTO_OK && !wc.want_write);
	cJSON_Delete(json);
	conn_read_now(&m->conn);
	FUZZ_CHECK(m->step == STEP_AUTH && worker_recv(&wc, &msg, &json) && msg.type == PROTO_MSG_HELLO_MANAGER);
	struct proto_transcript t = { .version = msg.u.hello_manager.version };
	memcpy(t.worker_nonce, worker_nonce, PROTO_NONCE_LEN);
	memcpy(t.worker_key, worker_kex.pub, PROTO_KEY_LEN);
	memcpy(t.manager_nonce, msg.u.hello_manager.nonce, PROTO_NONCE_LEN);
	memcpy(t.manager_key, msg.u.hello_manager.key, PROTO_KEY_LEN);
	cJSON_Delete(json);
	struct proto_keys keys;
	FUZZ_CHECK(proto_auth_keys(cookie.bytes, cookie.length, PROTO_ROLE_WORKER, &worker_kex, &t, &keys) == PROTO_OK);
	FUZZ_CHECK(proto_msg_auth(keys.worker_proof, &json) == PROTO_OK);
	FUZZ_CHECK(proto_frame_send(&wc, json) == PROTO_OK && !wc.want_write);
	cJSON_Delete(json);
	conn_read_now(&m->conn);
	FUZZ_CHECK(m->proved && m->step == STEP_REGISTER);
	FUZZ_CHECK(worker_recv(&wc, &msg, &json) && msg.type == PROTO_MSG_AUTH);
	FUZZ_CHECK(proto_auth_check(keys.manager_proof, msg.u.auth.proof) == PROTO_OK);
	cJSON_Delete(json);
	proto_frame_conn_free(&wc);

	uint64_t seq = 0;
	while (size >= 4 && manager_listening(m)) {
		uint32_t be;
		memcpy(&be, data, 4);
		size_t len = ntohl(be);
		data += 4;
		size -= 4;
		if (len > size)
			len = size;
		seal_and_send(peer, keys.w2m, seq++, data, len);
		data += len;
		size -= len;
		conn_read_now(&m->conn);
	}
	proto_auth_wipe(&keys, sizeof keys);
	shutdown(peer, SHUT_WR);
	for (int turns = 0; manager_listening(m) && turns < 1000; turns++)
		conn_read_now(&m->conn);
	FUZZ_CHECK(!manager_listening(m));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	bool knows_cookie = (mode & 1) != 0;
	int fds[2];
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
	struct manager m = { .job = (mode & 2) ? &pool_job : &mnp_job, .step = STEP_HELLO };
	/* A loop of its own per input: a removed descriptor's watch is freed by the
	 * loop's next turn or its end, and this loop never turns. */
	struct loop *loop;
	FUZZ_CHECK(loop_create(&loop) == BA_OK);
	struct proto_conn pc;
	proto_frame_conn_init(&pc, fds[1]);
	FUZZ_CHECK(conn_attach(&m.conn, loop, &pc, on_message, on_lost, &m) == BA_OK);
	if (knows_cookie)
		worker(&m, fds[0], data + 1, size - 1);
	else
		stranger(&m, fds[0], data + 1, size - 1);
	/* The property: only the cookie opens the door. */
	FUZZ_CHECK(knows_cookie || (!m.proved && m.step != STEP_REGISTERED));
	conn_close(&m.conn);
	loop_destroy(loop);
	proto_auth_wipe(&m.admission, sizeof m.admission);
	close(fds[0]);
	return 0;
}
