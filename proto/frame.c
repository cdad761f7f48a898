/* Framing: 4-byte big-endian length, then that many bytes of one UTF-8 JSON object.
 *
 * The reader asks the socket for exactly the bytes of the frame in progress, never
 * more: a frame costs at most its own length in memory, a limit change between two
 * frames applies to the very next header, and the blocking and non-blocking entry
 * points can take turns on one connection. */
#include "proto.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* cJSON is lenient where RFC 8259 and Python's json are not (leading zeros, "1.",
 * control bytes as whitespace or inside strings, "\u0000" cutting a string short).
 * Two implementations that disagree on what a frame says are a smuggling risk, so
 * this scan holds the text to the strict grammar before cJSON sees it. */
struct scan {
	const unsigned char *p;
	size_t len;
	size_t i;
};

static int utf8_seq_len(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0];
	size_t n;
	unsigned cp;

	if (c < 0x80)
		return c == 0 ? -1 : 1;
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
		return -1;
	}
	if (avail < n)
		return -1;
	for (size_t k = 1; k < n; k++) {
		if ((p[k] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (p[k] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF. */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	return (int)n;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int scan_number(struct scan *s)
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

static int scan_string(struct scan *s)
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
		int n = utf8_seq_len(p + i, s->len - i);
		if (n < 0)
			return PROTO_ERR_BAD_JSON;
		i += (size_t)n;
	}
	return PROTO_ERR_BAD_JSON;
}

static int scan_text(const unsigned char *text, size_t len)
{
	struct scan s = { .p = text, .len = len, .i = 0 };
	int depth = 0;
	int rc = PROTO_OK;

	while (s.i < len && rc == PROTO_OK) {
		unsigned char c = text[s.i];
		switch (c) {
		case ' ': case '\t': case '\n': case '\r':
		case ',': case ':':
			s.i++;
			break;
		case '{': case '[':
			if (++depth > PROTO_MAX_DEPTH)
				rc = PROTO_ERR_BAD_JSON;
			s.i++;
			break;
		case '}': case ']':
			depth--;
			s.i++;
			break;
		case '"':
			rc = scan_string(&s);
			break;
		case '-': case '0': case '1': case '2': case '3': case '4':
		case '5': case '6': case '7': case '8': case '9':
			rc = scan_number(&s);
			break;
		default:
			/* Literals (true, false, null) are ASCII letters; cJSON checks them. */
			if (c >= 'a' && c <= 'z')
				s.i++;
			else
				rc = PROTO_ERR_BAD_JSON;
			break;
		}
	}
	return rc;
}

static bool has_duplicate_names(const cJSON *item)
{
	for (const cJSON *a = item->child; a != NULL; a = a->next) {
		if (cJSON_IsObject(item)) {
			for (const cJSON *b = a->next; b != NULL; b = b->next) {
				if (strcmp(a->string, b->string) == 0)
					return true;
			}
		}
		if ((cJSON_IsObject(a) || cJSON_IsArray(a)) && has_duplicate_names(a))
			return true;
	}
	return false;
}

/* payload[len] must be a writable byte: it becomes the NUL that cJSON stops at. */
static int decode_in_place(unsigned char *payload, size_t len, cJSON **out)
{
	cJSON *obj = NULL;
	int rc = PROTO_ERR_BAD_JSON;

	*out = NULL;
	if (scan_text(payload, len) != PROTO_OK)
		goto out;
	payload[len] = '\0';
	obj = cJSON_ParseWithOpts((const char *)payload, NULL, 1);
	if (obj == NULL || !cJSON_IsObject(obj) || has_duplicate_names(obj))
		goto out;
	*out = obj;
	obj = NULL;
	rc = PROTO_OK;
out:
	cJSON_Delete(obj);
	return rc;
}

int proto_frame_decode(const unsigned char *payload, size_t len, cJSON **out)
{
	unsigned char *copy = NULL;
	int rc;

	if (out == NULL || (payload == NULL && len > 0))
		return PROTO_ERR_INVALID;
	*out = NULL;
	if (len == 0 || len > PROTO_MAX_FRAME)
		return PROTO_ERR_TOO_LARGE;
	copy = malloc(len + 1);
	if (copy == NULL)
		return PROTO_ERR_NOMEM;
	memcpy(copy, payload, len);
	rc = decode_in_place(copy, len, out);
	free(copy);
	return rc;
}

/* The text of msg, checked as the peer will check it. */
static int print_msg(const cJSON *msg, size_t limit, char **text, size_t *text_len)
{
	char *s = NULL;
	cJSON *check = NULL;
	size_t n;
	int rc;

	*text = NULL;
	if (msg == NULL || !cJSON_IsObject(msg))
		return PROTO_ERR_BAD_JSON;
	s = cJSON_PrintUnformatted(msg);
	if (s == NULL)
		return PROTO_ERR_NOMEM;
	n = strlen(s);
	if (n == 0 || n > limit) {
		rc = PROTO_ERR_TOO_LARGE;
		goto out;
	}
	rc = proto_frame_decode((const unsigned char *)s, n, &check);
	if (rc != PROTO_OK)
		goto out;
	*text = s;
	*text_len = n;
	s = NULL;
out:
	cJSON_Delete(check);
	free(s);
	return rc;
}

static void put_be32(unsigned char *p, size_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

int proto_frame_encode(const cJSON *msg, size_t limit, unsigned char **out, size_t *out_len)
{
	char *text = NULL;
	size_t n = 0;
	unsigned char *frame;
	int rc;

	if (out == NULL || out_len == NULL || limit == 0 || limit > PROTO_MAX_FRAME)
		return PROTO_ERR_INVALID;
	*out = NULL;
	*out_len = 0;
	rc = print_msg(msg, limit, &text, &n);
	if (rc != PROTO_OK)
		return rc;
	frame = malloc(n + 4);
	if (frame == NULL) {
		rc = PROTO_ERR_NOMEM;
		goto out;
	}
	put_be32(frame, n);
	memcpy(frame + 4, text, n);
	*out = frame;
	*out_len = n + 4;
out:
	free(text);
	return rc;
}

/* ------------------------------------------------------------------------------ */

void proto_frame_conn_init(struct proto_conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->interrupt_fd = -1;
	c->rd.limit = PROTO_MAX_HANDSHAKE_FRAME;
	c->wr.max_queued = PROTO_MAX_QUEUED;
}

void proto_frame_conn_free(struct proto_conn *c)
{
	if (c == NULL)
		return;
	free(c->rd.buf);
	free(c->wr.buf);
	c->rd.buf = NULL;
	c->rd.cap = 0;
	c->wr.buf = NULL;
	c->wr.cap = c->wr.off = c->wr.len = 0;
	c->want_write = false;
}

int proto_frame_set_interrupt_fd(struct proto_conn *c, int fd)
{
	if (c == NULL || fd < -1)
		return PROTO_ERR_INVALID;
	c->interrupt_fd = fd;
	return PROTO_OK;
}

int proto_frame_set_limit(struct proto_conn *c, size_t limit)
{
	if (c == NULL || limit == 0 || limit > PROTO_MAX_FRAME)
		return PROTO_ERR_INVALID;
	c->rd.limit = limit;
	return PROTO_OK;
}

/* One recv() of the bytes still missing from the frame in progress. */
static int read_some(struct proto_conn *c)
{
	struct proto_frame_reader *r = &c->rd;
	unsigned char *dst;
	size_t want;
	ssize_t n;

	if (r->hdr_got < 4) {
		dst = r->hdr + r->hdr_got;
		want = 4 - r->hdr_got;
	} else {
		dst = r->buf + r->body_got;
		want = r->body_len - r->body_got;
	}
	do {
		n = recv(c->fd, dst, want, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? PROTO_AGAIN : PROTO_ERR_IO;
	if (n == 0)
		return (r->hdr_got == 0) ? PROTO_CLOSED : PROTO_ERR_TRUNCATED;
	if (r->hdr_got < 4)
		r->hdr_got += (size_t)n;
	else
		r->body_got += (size_t)n;
	return PROTO_OK;
}

/* After the header: check the length and make room for the body. */
static int start_body(struct proto_frame_reader *r)
{
	size_t n = ((size_t)r->hdr[0] << 24) | ((size_t)r->hdr[1] << 16) |
		   ((size_t)r->hdr[2] << 8) | (size_t)r->hdr[3];

	if (n == 0 || n > r->limit)
		return PROTO_ERR_TOO_LARGE;
	if (r->cap < n + 1) {
		unsigned char *nb = realloc(r->buf, n + 1);
		if (nb == NULL)
			return PROTO_ERR_NOMEM;
		r->buf = nb;
		r->cap = n + 1;
	}
	r->body_len = n;
	r->body_got = 0;
	return PROTO_OK;
}

/* PROTO_OK with *out when a whole frame is buffered, PROTO_AGAIN when more is needed. */
static int take_frame(struct proto_conn *c, cJSON **out)
{
	struct proto_frame_reader *r = &c->rd;
	int rc;

	if (r->hdr_got < 4)
		return PROTO_AGAIN;
	if (r->body_len == 0) { /* header just completed: 0 is never a valid length */
		rc = start_body(r);
		if (rc != PROTO_OK)
			return rc;
	}
	if (r->body_got < r->body_len)
		return PROTO_AGAIN;
	rc = decode_in_place(r->buf, r->body_len, out);
	r->hdr_got = 0;
	r->body_len = 0;
	r->body_got = 0;
	return rc;
}

/* Sticky failures: after a framing error the byte stream has no known boundary. */
static int reader_fail(struct proto_conn *c, int rc)
{
	if (rc == PROTO_ERR_TOO_LARGE || rc == PROTO_ERR_BAD_JSON || rc == PROTO_ERR_TRUNCATED)
		c->rd.failed = rc;
	return rc;
}

int proto_frame_recv(struct proto_conn *c, cJSON **out)
{
	int rc;

	if (c == NULL || out == NULL)
		return PROTO_ERR_INVALID;
	*out = NULL;
	if (c->rd.failed != PROTO_OK)
		return c->rd.failed;
	for (;;) {
		rc = take_frame(c, out);
		if (rc != PROTO_AGAIN)
			break;
		rc = read_some(c);
		if (rc != PROTO_OK)
			break;
	}
	return reader_fail(c, rc);
}

int64_t proto_frame_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* poll() for one event on the socket until the deadline, retrying after EINTR; the
 * interrupt fd, when set, ends the wait as soon as it is readable (checked first, so a
 * busy socket cannot starve it). poll() ignores a negative fd, so -1 costs nothing. */
static int wait_fd(const struct proto_conn *c, short events, int64_t deadline_ms)
{
	for (;;) {
		struct pollfd pfd[2] = { { .fd = c->fd, .events = events },
					 { .fd = c->interrupt_fd, .events = POLLIN } };
		int64_t left = deadline_ms - proto_frame_now_ms();
		int n;

		if (left <= 0)
			return PROTO_ERR_TIMEOUT;
		n = poll(pfd, 2, left > 60000 ? 60000 : (int)left);
		if (n > 0 && (pfd[1].revents & POLLNVAL)) {
			errno = EBADF; /* a closed interrupt fd would interrupt forever */
			return PROTO_ERR_IO;
		}
		if (n > 0 && pfd[1].revents != 0)
			return PROTO_ERR_INTERRUPTED;
		if (n > 0)
			return PROTO_OK;
		if (n < 0 && errno != EINTR)
			return PROTO_ERR_IO;
	}
}

int proto_frame_recv_wait(struct proto_conn *c, cJSON **out, int64_t deadline_ms)
{
	/* proto_frame_recv does the reading and keeps failures sticky; we only wait. */
	for (;;) {
		int rc = proto_frame_recv(c, out);
		if (rc != PROTO_AGAIN)
			return rc;
		rc = wait_fd(c, POLLIN, deadline_ms);
		if (rc != PROTO_OK)
			return rc;
	}
}

/* ------------------------------------------------------------------------------ */

static int queue_bytes(struct proto_frame_writer *w, const unsigned char *hdr, const char *text,
		       size_t n)
{
	size_t pending = w->len - w->off;

	if (pending + n + 4 > w->max_queued)
		return PROTO_ERR_OVERFLOW;
	if (w->off > 0) {
		/* Sent bytes go first so the buffer never outgrows the queue cap. */
		memmove(w->buf, w->buf + w->off, pending);
		w->off = 0;
		w->len = pending;
	}
	if (w->cap < w->len + n + 4) {
		size_t ncap = w->len + n + 4;
		unsigned char *nb = realloc(w->buf, ncap);
		if (nb == NULL)
			return PROTO_ERR_NOMEM;
		w->buf = nb;
		w->cap = ncap;
	}
	memcpy(w->buf + w->len, hdr, 4);
	memcpy(w->buf + w->len + 4, text, n);
	w->len += n + 4;
	return PROTO_OK;
}

/* One send() of queued bytes. */
static int write_some(struct proto_conn *c)
{
	struct proto_frame_writer *w = &c->wr;
	ssize_t n;

	do {
		n = send(c->fd, w->buf + w->off, w->len - w->off, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? PROTO_AGAIN : PROTO_ERR_IO;
	w->off += (size_t)n;
	if (w->off == w->len)
		w->off = w->len = 0;
	return PROTO_OK;
}

int proto_frame_flush(struct proto_conn *c)
{
	int rc = PROTO_OK;

	if (c == NULL)
		return PROTO_ERR_INVALID;
	while (rc == PROTO_OK && c->wr.len > c->wr.off)
		rc = write_some(c);
	c->want_write = c->wr.len > c->wr.off;
	return rc;
}

static int enqueue(struct proto_conn *c, const cJSON *msg)
{
	char *text = NULL;
	size_t n = 0;
	unsigned char hdr[4];
	int rc;

	rc = print_msg(msg, PROTO_MAX_FRAME, &text, &n);
	if (rc != PROTO_OK)
		return rc;
	put_be32(hdr, n);
	rc = queue_bytes(&c->wr, hdr, text, n);
	free(text);
	return rc;
}

int proto_frame_send(struct proto_conn *c, const cJSON *msg)
{
	int rc;

	if (c == NULL)
		return PROTO_ERR_INVALID;
	rc = enqueue(c, msg);
	if (rc != PROTO_OK)
		return rc;
	rc = proto_frame_flush(c);
	return rc == PROTO_AGAIN ? PROTO_OK : rc;
}

int proto_frame_flush_wait(struct proto_conn *c, int64_t deadline_ms)
{
	int rc;

	if (c == NULL)
		return PROTO_ERR_INVALID;
	for (;;) {
		rc = proto_frame_flush(c);
		if (rc != PROTO_AGAIN)
			break;
		rc = wait_fd(c, POLLOUT, deadline_ms);
		if (rc != PROTO_OK)
			break;
	}
	return rc;
}

int proto_frame_send_wait(struct proto_conn *c, const cJSON *msg, int64_t deadline_ms)
{
	int rc;

	if (c == NULL)
		return PROTO_ERR_INVALID;
	rc = enqueue(c, msg);
	if (rc != PROTO_OK)
		return rc;
	return proto_frame_flush_wait(c, deadline_ms);
}
