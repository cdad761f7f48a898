/* Interop peer: runs one side of the v1 handshake with the C codec on an inherited
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
	unsigned char wn[PROTO_NONCE_LEN];
	unsigned char mn[PROTO_NONCE_LEN];
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

static enum proto_err run_worker(struct peer *p)
{
	struct proto_register reg = {
		.job_id = "c-job", .node_index = { true, 1 }, .num_nodes = { true, 2 },
		.hostname = "c-host", .address = "127.0.0.1", .agent_version = "0.1.0",
	};
	unsigned char proof[PROTO_PROOF_LEN];
	struct proto_msg m;
	cJSON *msg = NULL, *in = NULL;
	enum proto_err err;

	err = proto_auth_nonce(p->wn);
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_hello_worker(p->wn, "proto_peer", &msg), &msg);
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_HELLO_MANAGER, &in, &m);
	if (err == PROTO_OK && m.u.hello_manager.version != PROTO_VERSION)
		err = PROTO_ERR_BAD_MESSAGE;
	if (err == PROTO_OK) {
		memcpy(p->mn, m.u.hello_manager.nonce, PROTO_NONCE_LEN);
		err = proto_auth_verify(p->cookie, strlen(p->cookie), PROTO_VERSION, PROTO_ROLE_MANAGER,
				       p->wn, p->mn, m.u.hello_manager.proof);
	}
	if (err == PROTO_OK)
		err = proto_frame_set_limit(&p->conn, PROTO_MAX_FRAME);
	if (err == PROTO_OK)
		err = proto_auth_proof(p->cookie, strlen(p->cookie), PROTO_VERSION, PROTO_ROLE_WORKER,
				      p->wn, p->mn, proof);
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_auth(proof, &msg), &msg);
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_register(&reg, &msg), &msg);
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_ACCEPT, &in, &m);
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_payload_exited_code(7, &msg), &msg);
	cJSON_Delete(in);
	proto_auth_wipe(proof, sizeof(proof));
	return err;
}

static enum proto_err run_manager(struct peer *p)
{
	unsigned char proof[PROTO_PROOF_LEN];
	struct proto_msg m;
	cJSON *msg = NULL, *in = NULL;
	int version = 0;
	enum proto_err err;

	err = recv_msg(p, PROTO_MSG_HELLO_WORKER, &in, &m);
	if (err == PROTO_OK)
		err = proto_msg_pick_version(&m, &version);
	if (err == PROTO_OK) {
		memcpy(p->wn, m.u.hello_worker.nonce, PROTO_NONCE_LEN);
		err = proto_auth_nonce(p->mn);
	}
	if (err == PROTO_OK)
		err = proto_auth_proof(p->cookie, strlen(p->cookie), version, PROTO_ROLE_MANAGER,
				      p->wn, p->mn, proof);
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_hello_manager(version, p->mn, proof, &msg), &msg);
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_AUTH, &in, &m);
	if (err == PROTO_OK)
		err = proto_auth_verify(p->cookie, strlen(p->cookie), version, PROTO_ROLE_WORKER,
				       p->wn, p->mn, m.u.auth.proof);
	if (err == PROTO_OK)
		err = proto_frame_set_limit(&p->conn, PROTO_MAX_FRAME);
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_REGISTER, &in, &m);
	if (err == PROTO_OK && (!m.u.reg.node_index.present || m.u.reg.node_index.value != 1))
		err = PROTO_ERR_BAD_MESSAGE;
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_accept(100, &msg), &msg);
	cJSON_Delete(in);
	in = NULL;
	if (err == PROTO_OK)
		err = recv_msg(p, PROTO_MSG_PAYLOAD_EXITED, &in, &m);
	if (err == PROTO_OK && m.u.payload_exited.exit_code != 7)
		err = PROTO_ERR_BAD_MESSAGE;
	if (err == PROTO_OK)
		err = send_msg(p, proto_msg_shutdown(0, "done", &msg), &msg);
	cJSON_Delete(in);
	proto_auth_wipe(proof, sizeof(proof));
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
	if (err != PROTO_OK)
		fprintf(stderr, "proto_peer %s: %s\n", argv[1], proto_strerror(err));
	return err == PROTO_OK ? 0 : 1;
}
