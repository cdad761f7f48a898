/* Interop peer: runs one side of the handshake (offering versions 3 and 2) with the C codec on an inherited
 * socket, so test_nativeproto_vectors.py can check C against Python both ways.
 *
 *   proto_peer worker COOKIE FD   register as node 1 of "c-job", then report exit 7
 *   proto_peer manager COOKIE FD  accept one worker, await its exit, send shutdown
 *
 * It doubles as a minimal example of the blocking API. Exit 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

struct peer {
	struct proto_conn conn;
	const char *cookie;
	int64_t deadline;
	struct proto_kex kex;
	struct proto_transcript t;
	struct proto_keys keys;
};

/* Sends and frees what a builder made. msg is passed by address: the builder call in
 * the same argument list may run after a by-value read of it. */
static enum proto_err send_msg(struct peer *p, enum proto_err build_err, cJSON **msg)
{
	enum proto_err err = build_err;

	if (err == PROTO_OK)
		err = proto_frame_send_wait(&p->conn, *msg, p->deadline);
	cJSON_Delete(*msg);
	*msg = NULL;
	return err;
}

/* Receives one message of the expected type; *obj keeps its strings alive. */
static enum proto_err recv_msg(struct peer *p, enum proto_msg_type want, cJSON **obj, struct proto_msg *m)
{
	enum proto_err err = proto_frame_recv_wait(&p->conn, obj, p->deadline);

	if (err == PROTO_OK)
		err = proto_msg_parse(*obj, m);
	if (err == PROTO_OK && m->type != want)
		err = PROTO_ERR_BAD_MESSAGE;
	return err;
}

static enum proto_err derive(struct peer *p, enum proto_role self)
{
	return proto_auth_keys(p->cookie, strlen(p->cookie), self, &p->kex, &p->t, &p->keys);
}

static enum proto_err run_worker(struct peer *p)
{
	struct proto_register reg = {
		.job_id = "c-job", .node_index = { true, 1 }, .num_nodes = { true, 2 },
		.hostname = "c-host", .address = "127.0.0.1", .agent_version = "0.1.0",
	};
	struct proto_msg m;
	cJSON *msg = NULL, *in = NULL;
	enum proto_err err;

	err = proto_auth_nonce(p->t.worker_nonce);
	if (err == PROTO_OK)
		err = proto_kex_new(&p->kex);
	if (err == PROTO_OK) {
		memcpy(p->t.worker_key, p->kex.pub, PROTO_KEY_LEN);
		err = send_msg(p, proto_msg_hello_worker(p->t.worker_nonce, p->kex.pub, "proto_peer", &msg), &msg);
	}
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_HELLO_MANAGER, &in, &m);
	/* The version the manager chose is one we offered, and it is in the transcript. */
	if (err == PROTO_OK && (m.u.hello_manager.version < PROTO_VERSION_MIN || m.u.hello_manager.version > PROTO_VERSION))
		err = PROTO_ERR_BAD_MESSAGE;
	p->t.version = m.u.hello_manager.version;
	if (err == PROTO_OK) {
		memcpy(p->t.manager_nonce, m.u.hello_manager.nonce, PROTO_NONCE_LEN);
		memcpy(p->t.manager_key, m.u.hello_manager.key, PROTO_KEY_LEN);
		err = derive(p, PROTO_ROLE_WORKER);
	}
	/* Our proof, then everything we send is sealed. */
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_auth(p->keys.worker_proof, &msg), &msg);
	if (err == PROTO_OK) {
		proto_frame_seal_send(&p->conn, p->keys.w2m);
		err = send_msg(p, proto_msg_register(&reg, &msg), &msg);
	}
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_AUTH, &in, &m);
	if (err == PROTO_OK)
		err = proto_auth_check(p->keys.manager_proof, m.u.auth.proof);
	if (err == PROTO_OK) {
		proto_frame_set_limit(&p->conn, PROTO_MAX_FRAME);
		proto_frame_seal_recv(&p->conn, p->keys.m2w);
	}
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_ACCEPT, &in, &m);
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_payload_exited_code(7, &msg), &msg);
	cJSON_Delete(in);
	return err;
}

static enum proto_err run_manager(struct peer *p)
{
	struct proto_msg m;
	cJSON *msg = NULL, *in = NULL;
	enum proto_err err;

	err = recv_msg(p, PROTO_MSG_HELLO_WORKER, &in, &m);
	if (err == PROTO_OK)
		err = proto_msg_pick_version(&m, &p->t.version);
	if (err == PROTO_OK) {
		memcpy(p->t.worker_nonce, m.u.hello_worker.nonce, PROTO_NONCE_LEN);
		memcpy(p->t.worker_key, m.u.hello_worker.key, PROTO_KEY_LEN);
		err = proto_auth_nonce(p->t.manager_nonce);
	}
	if (err == PROTO_OK)
		err = proto_kex_new(&p->kex);
	if (err == PROTO_OK) {
		memcpy(p->t.manager_key, p->kex.pub, PROTO_KEY_LEN);
		err = derive(p, PROTO_ROLE_MANAGER);
	}
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_hello_manager(p->t.version, p->t.manager_nonce, p->kex.pub, &msg), &msg);
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_AUTH, &in, &m);
	if (err == PROTO_OK)
		err = proto_auth_check(p->keys.worker_proof, m.u.auth.proof);
	/* The worker's next frame is sealed; our proof goes out plain, then ours are. */
	if (err == PROTO_OK) {
		proto_frame_set_limit(&p->conn, PROTO_MAX_FRAME);
		proto_frame_seal_recv(&p->conn, p->keys.w2m);
		err = send_msg(p, proto_msg_auth(p->keys.manager_proof, &msg), &msg);
	}
	if (err == PROTO_OK)
		proto_frame_seal_send(&p->conn, p->keys.m2w);
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_REGISTER, &in, &m);
	if (err == PROTO_OK && (!m.u.reg.node_index.present || m.u.reg.node_index.value != 1))
		err = PROTO_ERR_BAD_MESSAGE;
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_accept(100, false, &msg), &msg);
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_PAYLOAD_EXITED, &in, &m);
	if (err == PROTO_OK && m.u.payload_exited.exit_code != 7)
		err = PROTO_ERR_BAD_MESSAGE;
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_shutdown(0, "done", &msg), &msg);
	cJSON_Delete(in);
	return err;
}

int main(int argc, char **argv)
{
	struct peer p;
	enum proto_err err;

	if (argc != 4) {
		fprintf(stderr, "usage: proto_peer worker|manager COOKIE FD\n");
		return 2;
	}
	memset(&p, 0, sizeof(p));
	p.cookie = argv[2];
	p.deadline = proto_frame_now_ms() + PROTO_HANDSHAKE_TIMEOUT_MS;
	proto_frame_conn_init(&p.conn, atoi(argv[3]));
	err = strcmp(argv[1], "worker") == 0 ? run_worker(&p) : run_manager(&p);
	proto_frame_conn_free(&p.conn);
	proto_kex_free(&p.kex);
	proto_auth_wipe(&p.keys, sizeof p.keys);
	if (err != PROTO_OK)
		fprintf(stderr, "proto_peer %s: %s\n", argv[1], proto_strerror(err));
	return err == PROTO_OK ? 0 : 1;
}
