/* Framing: 4-byte big-endian length, then that many bytes of one UTF-8 JSON object.
 *
 * The reader asks the socket for as much as a buffer of READ_CHUNK bytes (or the frame
 * in progress, when larger) holds, so a frame usually costs one recv(); what follows it
 * stays buffered for the next call, and the length of each frame is checked against
 * the limit in force when that frame is taken. With proto_frame_set_exact it asks only
 * for the bytes of the frame in progress, so that nothing past the frame it returns
 * leaves the socket (a descriptor handed to another program loses nothing).
 *
 * Once a direction is sealed (PROTOCOL.md §1.1) its frames carry ciphertext and a
 * Poly1305 tag instead of the text: the tag is checked before any byte is parsed. */
#include "proto.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* cJSON is lenient where RFC 8259 and Python's json are not (leading zeros, "1.",
 * control bytes as whitespace or inside strings, "\u0000" cutting a string short).
 * Two implementations that disagree on what a frame says are a smuggling risk, so
 * this scan holds the text to the strict grammar before cJSON sees it. */
struct scan {
	const unsigned char *p;
	size_t len;
	size_t i;
};

/* Bytes of the UTF-8 sequence at p, or 0 when it is not valid UTF-8 (or a NUL). */
static size_t utf8_seq_len(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0];
	size_t n;
	unsigned cp;

	if (c < 0x80)
		return c == 0 ? 0 : 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((p[k] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[k] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF. */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static enum proto_err scan_number(struct scan *s)
{
	const unsigned char *p = s->p;
	size_t i = s->i;

	if (p[i] == '-')
		i++;
	if (i >= s->len || !is_digit(p[i]))
		return PROTO_ERR_BAD_JSON;
	if (p[i] == '0') {
		i++;
	} else {
		while (i < s->len && is_digit(p[i]))
			i++;
	}
	if (i < s->len && p[i] == '.') {
		i++;
		if (i >= s->len || !is_digit(p[i]))
			return PROTO_ERR_BAD_JSON;
		while (i < s->len && is_digit(p[i]))
			i++;
	}
	if (i < s->len && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < s->len && (p[i] == '+' || p[i] == '-'))
			i++;
		if (i >= s->len || !is_digit(p[i]))
			return PROTO_ERR_BAD_JSON;
		while (i < s->len && is_digit(p[i]))
			i++;
	}
	/* A number runs straight into a digit only after a leading zero ("01"). */
	if (i < s->len && is_digit(p[i]))
		return PROTO_ERR_BAD_JSON;
	s->i = i;
	return PROTO_OK;
}

static enum proto_err scan_string(struct scan *s)
{
	const unsigned char *p = s->p;
	size_t i = s->i + 1;

	while (i < s->len) {
		unsigned char c = p[i];
		if (c == '"') {
			s->i = i + 1;
			return PROTO_OK;
		}
		if (c < 0x20)
			return PROTO_ERR_BAD_JSON;
		if (c == '\\') {
			if (i + 1 >= s->len)
				return PROTO_ERR_BAD_JSON;
			if (p[i + 1] == 'u' && i + 5 < s->len && memcmp(p + i + 2, "0000", 4) == 0)
				return PROTO_ERR_BAD_JSON;
			/* The escaped byte is ASCII in any valid text; cJSON checks which. */
			if (p[i + 1] >= 0x80)
				return PROTO_ERR_BAD_JSON;
			i += 2;
			continue;
		}
		size_t n = utf8_seq_len(p + i, s->len - i);
		if (n == 0)
			return PROTO_ERR_BAD_JSON;
		i += n;
	}
	return PROTO_ERR_BAD_JSON;
}

static enum proto_err scan_text(const unsigned char *text, size_t len)
{
	struct scan s = { .p = text, .len = len, .i = 0 };
	int depth = 0;
	enum proto_err err = PROTO_OK;

	while (s.i < len && err == PROTO_OK) {
		unsigned char c = text[s.i];
		switch (c) {
		case ' ': case '\t': case '\n': case '\r':
		case ',': case ':':
			s.i++;
			break;
		case '{': case '[':
			if (++depth > PROTO_MAX_DEPTH)
				err = PROTO_ERR_BAD_JSON;
			s.i++;
			break;
		case '}': case ']':
			depth--;
			s.i++;
			break;
		case '"':
			err = scan_string(&s);
			break;
		case '-': case '0': case '1': case '2': case '3': case '4':
		case '5': case '6': case '7': case '8': case '9':
			err = scan_number(&s);
			break;
		default:
			/* Literals (true, false, null) are ASCII letters; cJSON checks them. */
			if (c >= 'a' && c <= 'z')
				s.i++;
			else
				err = PROTO_ERR_BAD_JSON;
			break;
		}
	}
	return err;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* An object over PROTO_MAX_MEMBERS, or with a name twice, at any depth. The names of
 * each object are sorted, so a frame costs O(n log n) in its members: a peer that
 * repeats a 64 KiB frame of thousands of names cannot make every frame quadratic. */
static bool bad_members(const cJSON *item)
{
	const char *names[PROTO_MAX_MEMBERS];
	size_t count = 0;
	for (const cJSON *a = item->child; a != NULL; a = a->next) {
		if (cJSON_IsObject(item)) {
			if (count == PROTO_MAX_MEMBERS)
				return true;
			names[count++] = a->string;
		}
		if ((cJSON_IsObject(a) || cJSON_IsArray(a)) && bad_members(a))
			return true;
	}
	qsort(names, count, sizeof names[0], by_name);
	for (size_t i = 1; i < count; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			return true;
	return false;
}

/* payload[len] must be a writable byte: it is the NUL that cJSON stops at while it
 * parses, and gets its value back after (it may be the next frame's first byte). */
static enum proto_err decode_in_place(unsigned char *payload, size_t len, cJSON **out)
{
	cJSON *obj = NULL;
	enum proto_err err = PROTO_ERR_BAD_JSON;

	*out = NULL;
	if (scan_text(payload, len) != PROTO_OK)
		goto out;
	unsigned char saved = payload[len];
	payload[len] = '\0';
	obj = cJSON_ParseWithOpts((const char *)payload, NULL, 1);
	payload[len] = saved;
	if (obj == NULL || !cJSON_IsObject(obj) || bad_members(obj))
		goto out;
	*out = obj;
	obj = NULL;
	err = PROTO_OK;
out:
	cJSON_Delete(obj);
	return err;
}

enum proto_err proto_frame_decode(const unsigned char *payload, size_t len, cJSON **out)
{
	unsigned char *copy = NULL;
	enum proto_err err;

	if (out == NULL || (payload == NULL && len > 0))
		return PROTO_ERR_INVALID;
	*out = NULL;
	if (len == 0 || len > PROTO_MAX_FRAME)
		return PROTO_ERR_TOO_LARGE;
	copy = malloc(len + 1);
	if (copy == NULL)
		return PROTO_ERR_NOMEM;
	memcpy(copy, payload, len);
	err = decode_in_place(copy, len, out);
	free(copy);
	return err;
}

/* The text of msg, checked as the peer will check it. */
static enum proto_err print_msg(const cJSON *msg, size_t limit, char **text, size_t *text_len)
{
	char *s = NULL;
	cJSON *check = NULL;
	size_t n;
	enum proto_err err;

	*text = NULL;
	if (msg == NULL || !cJSON_IsObject(msg))
		return PROTO_ERR_BAD_JSON;
	s = cJSON_PrintUnformatted(msg);
	if (s == NULL)
		return PROTO_ERR_NOMEM;
	n = strlen(s);
	if (n == 0 || n > limit) {
		err = PROTO_ERR_TOO_LARGE;
		goto out;
	}
	err = proto_frame_decode((const unsigned char *)s, n, &check);
	if (err != PROTO_OK)
		goto out;
	*text = s;
	*text_len = n;
	s = NULL;
out:
	cJSON_Delete(check);
	free(s);
	return err;
}

static void put_be32(unsigned char *p, size_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* ---- sealing (PROTOCOL.md §1.1): ChaCha20-Poly1305, nonce 0^4 || seq, AAD the header ---- */

static void seal_nonce(uint64_t seq, unsigned char iv[12])
{
	memset(iv, 0, 4);
	for (int i = 0; i < 8; i++)
		iv[4 + i] = (unsigned char)(seq >> (56 - 8 * i));
}

/* Encrypts text[0, n) in place and puts the tag at text[n] (room for PROTO_TAG_LEN more
 * bytes); hdr is the frame's length, already counting the tag. */
static enum proto_err seal_text(struct proto_seal *s, const unsigned char hdr[4], unsigned char *text, size_t n)
{
	unsigned char iv[12];
	int len = 0;
	if (s->seq == UINT64_MAX)
		return PROTO_ERR_OVERFLOW; /* never reached: a sequence number is never reused */
	seal_nonce(s->seq, iv);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	bool ok = ctx != NULL && EVP_EncryptInit_ex2(ctx, EVP_chacha20_poly1305(), s->key, iv, NULL) == 1 &&
		  EVP_EncryptUpdate(ctx, NULL, &len, hdr, 4) == 1 &&
		  EVP_EncryptUpdate(ctx, text, &len, text, (int)n) == 1 && (size_t)len == n &&
		  EVP_EncryptFinal_ex(ctx, text + n, &len) == 1 &&
		  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, PROTO_TAG_LEN, text + n) == 1;
	EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
	if (!ok)
		return PROTO_ERR_CRYPTO;
	s->seq++;
	return PROTO_OK;
}

/* Decrypts body[0, n - PROTO_TAG_LEN) in place once the tag at its end verifies; on a
 * bad tag nothing of it is kept (PROTO_ERR_FORGED). */
static enum proto_err open_text(struct proto_seal *s, const unsigned char hdr[4], unsigned char *body, size_t n)
{
	unsigned char iv[12];
	size_t m = n - PROTO_TAG_LEN;
	int len = 0;
	seal_nonce(s->seq, iv);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		return PROTO_ERR_NOMEM;
	enum proto_err err = PROTO_ERR_CRYPTO;
	if (EVP_DecryptInit_ex2(ctx, EVP_chacha20_poly1305(), s->key, iv, NULL) == 1 &&
	    EVP_DecryptUpdate(ctx, NULL, &len, hdr, 4) == 1 &&
	    EVP_DecryptUpdate(ctx, body, &len, body, (int)m) == 1 && (size_t)len == m &&
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, PROTO_TAG_LEN, body + m) == 1)
		err = EVP_DecryptFinal_ex(ctx, body + m, &len) == 1 ? PROTO_OK : PROTO_ERR_FORGED;
	EVP_CIPHER_CTX_free(ctx);
	if (err != PROTO_OK) {
		OPENSSL_cleanse(body, m);
		return err;
	}
	s->seq++;
	return PROTO_OK;
}

/* text (n bytes, from print_msg) as the body of a frame: sealed in place when seal is
 * on, after growing text by the tag. *body_len is what the header says. */
static enum proto_err seal_body(struct proto_seal *seal, char **text, size_t n, unsigned char hdr[4], size_t *body_len)
{
	*body_len = n;
	if (seal == NULL || !seal->on) {
		put_be32(hdr, n);
		return PROTO_OK;
	}
	char *grown = realloc(*text, n + PROTO_TAG_LEN);
	if (grown == NULL)
		return PROTO_ERR_NOMEM;
	*text = grown;
	*body_len = n + PROTO_TAG_LEN;
	put_be32(hdr, *body_len);
	return seal_text(seal, hdr, (unsigned char *)grown, n);
}

enum proto_err proto_frame_encode(const cJSON *msg, size_t limit, struct proto_seal *seal, unsigned char **out,
				  size_t *out_len)
{
	char *text = NULL;
	size_t n = 0, body = 0;
	unsigned char hdr[4];
	unsigned char *frame;
	enum proto_err err;

	if (out == NULL || out_len == NULL || limit == 0 || limit > PROTO_MAX_FRAME)
		return PROTO_ERR_INVALID;
	*out = NULL;
	*out_len = 0;
	err = print_msg(msg, limit, &text, &n);
	if (err == PROTO_OK)
		err = seal_body(seal, &text, n, hdr, &body);
	if (err != PROTO_OK)
		goto out;
	frame = malloc(body + 4);
	if (frame == NULL) {
		err = PROTO_ERR_NOMEM;
		goto out;
	}
	memcpy(frame, hdr, 4);
	memcpy(frame + 4, text, body);
	*out = frame;
	*out_len = body + 4;
out:
	free(text);
	return err;
}

/* ------------------------------------------------------------------------------ */

void proto_frame_conn_init(struct proto_conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->rd.limit = PROTO_MAX_HANDSHAKE_FRAME;
	c->wr.max_queued = PROTO_MAX_QUEUED;
}

static void reader_release(struct proto_frame_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = r->off = r->len = 0;
}

static void writer_release(struct proto_frame_writer *w)
{
	free(w->buf);
	w->buf = NULL;
	w->cap = w->off = w->len = 0;
}

void proto_frame_conn_free(struct proto_conn *c)
{
	if (c == NULL)
		return;
	reader_release(&c->rd);
	writer_release(&c->wr);
	c->want_write = false;
	OPENSSL_cleanse(&c->rx, sizeof c->rx);
	OPENSSL_cleanse(&c->tx, sizeof c->tx);
}

static void seal_start(struct proto_seal *s, const unsigned char key[PROTO_KEY_LEN])
{
	memcpy(s->key, key, PROTO_KEY_LEN);
	s->seq = 0;
	s->on = true;
}

void proto_frame_seal_recv(struct proto_conn *c, const unsigned char key[PROTO_KEY_LEN])
{
	seal_start(&c->rx, key);
}

void proto_frame_seal_send(struct proto_conn *c, const unsigned char key[PROTO_KEY_LEN])
{
	seal_start(&c->tx, key);
}

void proto_frame_set_wait(struct proto_conn *c, proto_wait_fn wait, void *ctx)
{
	c->wait = wait;
	c->wait_ctx = ctx;
}

enum proto_err proto_frame_set_limit(struct proto_conn *c, size_t limit)
{
	if (c == NULL || limit == 0 || limit > PROTO_MAX_FRAME)
		return PROTO_ERR_INVALID;
	c->rd.limit = limit;
	return PROTO_OK;
}

void proto_frame_set_exact(struct proto_conn *c, bool exact)
{
	c->rd.exact = exact;
}

bool proto_frame_buffered(const struct proto_conn *c)
{
	return c->rd.len > c->rd.off;
}

static size_t get_be32(const unsigned char *p)
{
	return ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | (size_t)p[3];
}

/* The frame at the front of the buffer: PROTO_OK with *out when it is all in,
 * PROTO_AGAIN when more is needed (*body_len set once the header is in). The length
 * is checked against the limit of this very frame, and a sealed frame's tag before
 * anything of it is parsed, so a limit or sealing change between two frames applies
 * to the next one even when both arrived in one read. */
static enum proto_err take_frame(struct proto_conn *c, size_t *body_len, cJSON **out)
{
	struct proto_frame_reader *r = &c->rd;
	size_t avail = r->len - r->off;
	size_t tag = c->rx.on ? PROTO_TAG_LEN : 0;
	*body_len = 0;
	if (avail < 4)
		return PROTO_AGAIN;
	size_t n = get_be32(r->buf + r->off);
	if (n <= tag || n > r->limit + tag)
		return PROTO_ERR_TOO_LARGE;
	*body_len = n;
	if (avail < 4 + n)
		return PROTO_AGAIN;
	unsigned char *hdr = r->buf + r->off;
	enum proto_err err = tag ? open_text(&c->rx, hdr, hdr + 4, n) : PROTO_OK;
	if (err == PROTO_OK)
		err = decode_in_place(hdr + 4, n - tag, out);
	r->off += 4 + n;
	/* An idle connection holds no buffer: ten thousand quiet peers cost nothing here. */
	if (r->off == r->len)
		reader_release(r);
	return err;
}

/* How many bytes the next recv() asks for: exactly what the frame in progress lacks
 * (exact reads), or as much as its buffer holds, at least READ_CHUNK, so that a frame
 * and whatever follows it usually take one system call. */
#define READ_CHUNK 1024
static size_t read_size(const struct proto_frame_reader *r, size_t body_len)
{
	size_t avail = r->len - r->off;
	size_t frame = body_len ? 4 + body_len : 4;
	if (r->exact)
		return frame - avail;
	size_t want = frame > READ_CHUNK ? frame : READ_CHUNK;
	return want - avail;
}

/* One recv() into the buffer, which keeps one spare byte for the parser's NUL. */
static enum proto_err read_some(struct proto_conn *c, size_t body_len)
{
	struct proto_frame_reader *r = &c->rd;
	size_t want = read_size(r, body_len);
	size_t avail = r->len - r->off;
	if (r->off > 0) {
		memmove(r->buf, r->buf + r->off, avail);
		r->off = 0;
		r->len = avail;
	}
	if (r->cap < r->len + want + 1) {
		unsigned char *nb = realloc(r->buf, r->len + want + 1);
		if (nb == NULL)
			return PROTO_ERR_NOMEM;
		r->buf = nb;
		r->cap = r->len + want + 1;
	}
	ssize_t n;
	do {
		n = recv(c->fd, r->buf + r->len, want, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? PROTO_AGAIN : PROTO_ERR_IO;
	if (n == 0)
		return avail == 0 ? PROTO_CLOSED : PROTO_ERR_TRUNCATED;
	r->len += (size_t)n;
	return PROTO_OK;
}

/* Sticky failures: after a framing error the byte stream has no known boundary. */
static enum proto_err reader_fail(struct proto_conn *c, enum proto_err err)
{
	if (err == PROTO_ERR_TOO_LARGE || err == PROTO_ERR_BAD_JSON || err == PROTO_ERR_TRUNCATED ||
	    err == PROTO_ERR_FORGED || err == PROTO_ERR_CRYPTO) {
		c->rd.failed = err;
		reader_release(&c->rd);
	}
	if (err == PROTO_AGAIN && c->rd.len == c->rd.off)
		reader_release(&c->rd);
	return err;
}

enum proto_err proto_frame_recv(struct proto_conn *c, cJSON **out)
{
	enum proto_err err;

	if (c == NULL || out == NULL)
		return PROTO_ERR_INVALID;
	*out = NULL;
	if (c->rd.failed != PROTO_OK)
		return c->rd.failed;
	for (;;) {
		size_t body_len;
		err = take_frame(c, &body_len, out);
		if (err != PROTO_AGAIN)
			break;
		err = read_some(c, body_len);
		if (err != PROTO_OK)
			break;
	}
	return reader_fail(c, err);
}

int64_t proto_frame_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum proto_err proto_frame_poll(int fd, short events, int64_t deadline_ms, void *ctx)
{
	(void)ctx;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		int64_t left = deadline_ms - proto_frame_now_ms();
		if (left <= 0)
			return PROTO_ERR_TIMEOUT;
		int n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (n > 0)
			return PROTO_OK;
		if (n < 0 && errno != EINTR)
			return PROTO_ERR_IO;
	}
}

static enum proto_err wait_fd(const struct proto_conn *c, short events, int64_t deadline_ms)
{
	proto_wait_fn wait = c->wait ? c->wait : proto_frame_poll;
	return wait(c->fd, events, deadline_ms, c->wait_ctx);
}

enum proto_err proto_frame_recv_wait(struct proto_conn *c, cJSON **out, int64_t deadline_ms)
{
	/* proto_frame_recv does the reading and keeps failures sticky; we only wait. */
	for (;;) {
		enum proto_err err = proto_frame_recv(c, out);
		if (err != PROTO_AGAIN)
			return err;
		err = wait_fd(c, POLLIN, deadline_ms);
		if (err != PROTO_OK)
			return err;
	}
}

/* ------------------------------------------------------------------------------ */

/* Keep bytes[from, n) of a frame that the socket did not take. */
static enum proto_err queue_bytes(struct proto_frame_writer *w, const unsigned char *hdr, const char *text, size_t n,
				  size_t from)
{
	size_t pending = w->len - w->off;
	size_t frame = n + 4 - from;

	if (pending + frame > w->max_queued)
		return PROTO_ERR_OVERFLOW;
	if (w->off > 0) {
		/* Sent bytes go first so the buffer never outgrows the queue cap. */
		memmove(w->buf, w->buf + w->off, pending);
		w->off = 0;
		w->len = pending;
	}
	if (w->cap < w->len + frame) {
		size_t ncap = w->len + frame;
		unsigned char *nb = realloc(w->buf, ncap);
		if (nb == NULL)
			return PROTO_ERR_NOMEM;
		w->buf = nb;
		w->cap = ncap;
	}
	if (from < 4) {
		memcpy(w->buf + w->len, hdr + from, 4 - from);
		w->len += 4 - from;
		from = 4;
	}
	memcpy(w->buf + w->len, text + (from - 4), n + 4 - from);
	w->len += n + 4 - from;
	return PROTO_OK;
}

static ssize_t send_retrying(int fd, struct iovec *iov, int iovcnt)
{
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
	ssize_t n;
	do {
		n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n;
}

/* One send() of queued bytes. */
static enum proto_err write_some(struct proto_conn *c)
{
	struct proto_frame_writer *w = &c->wr;
	struct iovec iov = { .iov_base = w->buf + w->off, .iov_len = w->len - w->off };
	ssize_t n = send_retrying(c->fd, &iov, 1);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? PROTO_AGAIN : PROTO_ERR_IO;
	w->off += (size_t)n;
	if (w->off == w->len)
		writer_release(w);
	return PROTO_OK;
}

enum proto_err proto_frame_flush(struct proto_conn *c)
{
	enum proto_err err = PROTO_OK;

	if (c == NULL)
		return PROTO_ERR_INVALID;
	while (err == PROTO_OK && c->wr.len > c->wr.off)
		err = write_some(c);
	c->want_write = c->wr.len > c->wr.off;
	return err;
}

/* With nothing queued, header and text go out in one sendmsg() straight from where
 * they are; only what the socket does not take is copied into the queue. */
static enum proto_err enqueue(struct proto_conn *c, const cJSON *msg)
{
	char *text = NULL;
	size_t n = 0, sent = 0;
	unsigned char hdr[4];
	enum proto_err err;

	err = print_msg(msg, PROTO_MAX_FRAME, &text, &n);
	if (err == PROTO_OK)
		err = seal_body(&c->tx, &text, n, hdr, &n);
	if (err != PROTO_OK) {
		free(text);
		return err;
	}
	if (c->wr.len == c->wr.off) {
		struct iovec iov[2] = { { .iov_base = hdr, .iov_len = 4 }, { .iov_base = text, .iov_len = n } };
		ssize_t got = send_retrying(c->fd, iov, 2);
		if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			free(text);
			return PROTO_ERR_IO;
		}
		sent = got < 0 ? 0 : (size_t)got;
	}
	if (sent < n + 4)
		err = queue_bytes(&c->wr, hdr, text, n, sent);
	free(text);
	c->want_write = c->wr.len > c->wr.off;
	return err;
}

enum proto_err proto_frame_send(struct proto_conn *c, const cJSON *msg)
{
	if (c == NULL)
		return PROTO_ERR_INVALID;
	return enqueue(c, msg);
}

enum proto_err proto_frame_flush_wait(struct proto_conn *c, int64_t deadline_ms)
{
	enum proto_err err;

	if (c == NULL)
		return PROTO_ERR_INVALID;
	for (;;) {
		err = proto_frame_flush(c);
		if (err != PROTO_AGAIN)
			break;
		err = wait_fd(c, POLLOUT, deadline_ms);
		if (err != PROTO_OK)
			break;
	}
	return err;
}

enum proto_err proto_frame_send_wait(struct proto_conn *c, const cJSON *msg, int64_t deadline_ms)
{
	enum proto_err err;

	if (c == NULL)
		return PROTO_ERR_INVALID;
	err = enqueue(c, msg);
	if (err != PROTO_OK)
		return err;
	return proto_frame_flush_wait(c, deadline_ms);
}
