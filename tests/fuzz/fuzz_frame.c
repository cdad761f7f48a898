/* Frames (PROTOCOL.md §1, §1.1): the codec's stream reader on bytes a peer sends.
 *
 * Input: byte 0 chooses the reader's settings (bit 0: the handshake limit of 4096
 * instead of 65536; bit 1: exact reads), the rest is the byte stream, written into a
 * socket pair as fast as it takes it, then closed.
 *
 * Checked beyond "no crash":
 *   - every frame the reader accepts re-encodes (unless printing made it longer than
 *     the limit) and decodes to the same JSON, plain and sealed: what we receive we can
 *     send, and a sealed frame opens to what was sealed. Except a frame with a number
 *     beyond a double's range (1e400): RFC 8259 lets it through, cJSON reads it as
 *     infinity and prints that as null, so it cannot come back the same. No message
 *     field takes one (integers and cpus are range-checked, non-finite refused), so
 *     only an unknown field can hold it, and nothing re-sends received JSON: a known
 *     limit, not a defect (corpus/frame/regress-number-beyond-double);
 *   - the stream ends as a frame stream must: closed at a boundary, truncated inside a
 *     frame, or a framing error, never "would block" once everything was written;
 *   - framing errors are sticky: the next read says the same. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "proto.h"

/* key_w2m of PROTOCOL.md §8: any key does, the vector's is a known one. */
static const char seal_key_hex[] = "859d2a84390e9ea104f5e8055caacb43a09b0c0323b4e190540b8eb57bf22d34";

/* The sealed round trip's connection lives for the whole run: sequence numbers go on
 * from input to input, as they do on a long-lived connection. */
static int sealed_fds[2];
static struct proto_conn sealed_reader;
static struct proto_seal sealed_tx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	unsigned char key[PROTO_KEY_LEN];
	if (proto_auth_hex_decode(seal_key_hex, key, sizeof key) != PROTO_OK ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sealed_fds) != 0)
		abort();
	proto_frame_conn_init(&sealed_reader, sealed_fds[1]);
	FUZZ_CHECK(proto_frame_set_limit(&sealed_reader, PROTO_MAX_FRAME) == PROTO_OK);
	proto_frame_seal_recv(&sealed_reader, key);
	sealed_tx = (struct proto_seal){ .on = true };
	memcpy(sealed_tx.key, key, sizeof key);
	return 0;
}

static void write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		FUZZ_CHECK(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

/* A number that overflowed a double somewhere in the tree (see the top). */
static bool has_infinity(const cJSON *item)
{
	for (; item != NULL; item = item->next)
		if ((cJSON_IsNumber(item) && !isfinite(item->valuedouble)) || has_infinity(item->child))
			return true;
	return false;
}

static void round_trip(const cJSON *obj)
{
	if (has_infinity(obj->child))
		return;
	unsigned char *wire = NULL;
	size_t n = 0;
	enum proto_err err = proto_frame_encode(obj, PROTO_MAX_FRAME, NULL, &wire, &n);
	/* Compact printing can lengthen a frame (1E5 prints as 100000): then it is not
	 * sendable, and that is all. */
	FUZZ_CHECK(err == PROTO_OK || err == PROTO_ERR_TOO_LARGE);
	if (err != PROTO_OK)
		return;
	FUZZ_CHECK(n > 4);
	cJSON *again = NULL;
	FUZZ_CHECK(proto_frame_decode(wire + 4, n - 4, &again) == PROTO_OK);
	FUZZ_CHECK(cJSON_Compare(obj, again, true));
	cJSON_Delete(again);
	free(wire);

	/* Sealed: the same object through the AEAD and the reader's sealed path. */
	err = proto_frame_encode(obj, PROTO_MAX_FRAME, &sealed_tx, &wire, &n);
	FUZZ_CHECK(err == PROTO_OK);
	write_all(sealed_fds[0], wire, n);
	free(wire);
	cJSON *opened = NULL;
	FUZZ_CHECK(proto_frame_recv(&sealed_reader, &opened) == PROTO_OK);
	FUZZ_CHECK(cJSON_Compare(obj, opened, true));
	cJSON_Delete(opened);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++;
	size--;
	int fds[2];
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
	struct proto_conn c;
	proto_frame_conn_init(&c, fds[1]);
	if (!(mode & 1))
		FUZZ_CHECK(proto_frame_set_limit(&c, PROTO_MAX_FRAME) == PROTO_OK);
	proto_frame_set_exact(&c, (mode & 2) != 0);

	size_t off = 0;
	bool shut = false;
	for (;;) {
		if (off < size) {
			ssize_t w = send(fds[0], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
			FUZZ_CHECK(w > 0 || (w < 0 && errno == EAGAIN));
			if (w > 0)
				off += (size_t)w;
		}
		if (off == size && !shut) {
			shutdown(fds[0], SHUT_WR);
			shut = true;
		}
		cJSON *obj = NULL;
		enum proto_err err = proto_frame_recv(&c, &obj);
		if (err == PROTO_OK) {
			FUZZ_CHECK(cJSON_IsObject(obj));
			round_trip(obj);
			cJSON_Delete(obj);
			continue;
		}
		FUZZ_CHECK(obj == NULL);
		if (err == PROTO_AGAIN) {
			FUZZ_CHECK(!shut);
			continue;
		}
		FUZZ_CHECK(err == PROTO_CLOSED || err == PROTO_ERR_TRUNCATED || err == PROTO_ERR_TOO_LARGE ||
			   err == PROTO_ERR_BAD_JSON);
		if (err != PROTO_CLOSED)
			FUZZ_CHECK(proto_frame_recv(&c, &obj) == err && obj == NULL);
		break;
	}
	proto_frame_conn_free(&c);
	close(fds[0]);
	close(fds[1]);
	return 0;
}
