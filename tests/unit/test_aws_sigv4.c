/* The SigV4 signature libcurl computes, driven exactly as agent/aws/http.c drives it,
 * against the fixed vector of ../shared/aws-reference/sigv4_vector_output.txt (part A,
 * botocore 1.29.27): the request goes to a loopback listener in this process, which
 * captures it; the Authorization header must carry the vector's signature.
 *
 * The vector's date is fixed, so the test adds "X-Amz-Date: 20261121T120000Z" itself
 * (batch-agent-aws never does: libcurl 7.88.1 then sends the date twice, curl #11738,
 * which does not change the signature). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http.h"
#include "status.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef AWS_REFERENCE_DIR
#error AWS_REFERENCE_DIR must name ../shared/aws-reference
#endif

struct vector {
	char body[256], access_key[128], secret_key[128], token[256], date[32], region[32],
	        service[32], signature[80];
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

/* "  KEY = VALUE" within part A. */
static void field(const char *text, const char *key, char *out, size_t size)
{
	char pattern[64];
	snprintf(pattern, sizeof pattern, "\n  %s", key);
	const char *p = strstr(text, pattern);
	assert_non_null(p);
	p = strstr(p, "= ");
	assert_non_null(p);
	p += 2;
	size_t n = strcspn(p, "\n");
	assert_true(n < size);
	memcpy(out, p, n);
	out[n] = '\0';
}

static void load_vector(struct vector *v)
{
	char *text = slurp(AWS_REFERENCE_DIR "/sigv4_vector_output.txt");
	assert_non_null(text);
	char *part_b = strstr(text, "B. What a real botocore client");
	assert_non_null(part_b);
	*part_b = '\0';
	field(text, "body         ", v->body, sizeof v->body);
	field(text, "access key", v->access_key, sizeof v->access_key);
	field(text, "secret key", v->secret_key, sizeof v->secret_key);
	field(text, "session token", v->token, sizeof v->token);
	field(text, "x-amz-date", v->date, sizeof v->date);
	char rs[64];
	field(text, "region/service", rs, sizeof rs);
	assert_int_equal(sscanf(rs, "%31s / %31s", v->region, v->service), 2);
	const char *sig = strstr(text, "\nsignature = ");
	assert_non_null(sig);
	assert_int_equal(sscanf(sig, "\nsignature = %64s", v->signature), 1);
	assert_int_equal(strlen(v->signature), 64);
}

struct capture {
	int listener;
	char request[8192];
};

static void *serve_one(void *arg)
{
	struct capture *c = arg;
	int fd = accept(c->listener, NULL, NULL);
	if (fd < 0)
		return NULL;
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, c->request + len, sizeof c->request - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		c->request[len] = '\0';
		char *end = strstr(c->request, "\r\n\r\n");
		const char *cl = strcasestr(c->request, "\r\nContent-Length:");
		if (end != NULL && cl != NULL &&
		    len >= (size_t)(end + 4 - c->request) + strtoul(cl + 17, NULL, 10))
			break;
	}
	static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	                            "Content-Length: 11\r\nConnection: close\r\n\r\n{\"jobs\":[]}";
	ssize_t w = write(fd, reply, sizeof reply - 1);
	(void)w;
	close(fd);
	return NULL;
}

/* One attempt against the loopback listener. */
static const struct http_policy vector_policy = { .no_proxy = true, .connect_timeout_ms = 2000,
	.timeout_ms = 5000, .max_attempts = 1, .retry = HTTP_RETRY_AWS };

static void libcurl_signs_the_vector(void **state)
{
	(void)state;
	struct vector v;
	load_vector(&v);

	struct capture cap = { 0 };
	cap.listener = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(cap.listener >= 0);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof addr;
	assert_int_equal(bind(cap.listener, (struct sockaddr *)&addr, sizeof addr), 0);
	assert_int_equal(listen(cap.listener, 1), 0);
	assert_int_equal(getsockname(cap.listener, (struct sockaddr *)&addr, &alen), 0);
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, serve_one, &cap), 0);

	/* Host stays batch.us-east-1.amazonaws.com (as in the vector); the connection goes
	 * to the loopback listener. */
	char connect_to[128], date_header[64];
	snprintf(connect_to, sizeof connect_to, "batch.%s.amazonaws.com:80:127.0.0.1:%u", v.region,
	         ntohs(addr.sin_port));
	snprintf(date_header, sizeof date_header, "X-Amz-Date: %s", v.date);
	struct curl_slist *ct = curl_slist_append(NULL, connect_to);
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
	headers = curl_slist_append(headers, date_header);
	char url[128];
	snprintf(url, sizeof url, "http://batch.%s.amazonaws.com/v1/describejobs", v.region);

	assert_int_equal(http_global_init(), BA_OK);
	struct http_request req = {
		.what = "test",
		.method = "POST",
		.url = url,
		.body = v.body,
		.body_len = strlen(v.body),
		.headers = headers,
		.sign_key_id = v.access_key,
		.sign_secret = v.secret_key,
		.sign_token = v.token,
		.sign_region = v.region,
		.sign_service = v.service,
		.connect_to = ct,
		.policy = vector_policy,
	};
	struct http_response resp;
	enum ba_status rc = http_perform(&req, &resp);
	pthread_join(thread, NULL);
	close(cap.listener);
	if (rc != BA_OK)
		fail_msg("http_perform: %s", resp.error);
	assert_int_equal(resp.status, 200);
	http_response_free(&resp);
	http_global_cleanup();
	curl_slist_free_all(headers);
	curl_slist_free_all(ct);

	char expected[512];
	snprintf(expected, sizeof expected,
	         "Authorization: AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/%s/aws4_request, "
	         "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=%s\r\n",
	         v.access_key, v.date, v.region, v.service, v.signature);
	if (strstr(cap.request, expected) == NULL)
		fail_msg("expected\n%s\nin the request:\n%s", expected, cap.request);
	char token_line[320];
	snprintf(token_line, sizeof token_line, "\r\nX-Amz-Security-Token: %s\r\n", v.token);
	assert_non_null(strstr(cap.request, token_line));
	assert_non_null(strstr(cap.request, "\r\nHost: batch.us-east-1.amazonaws.com\r\n"));
	const char *body = strstr(cap.request, "\r\n\r\n");
	assert_non_null(body);
	assert_string_equal(body + 4, v.body);
}

static void redact_url_drops_secrets(void **state)
{
	(void)state;
	char *u = http_redact_url("http://user:pass@127.0.0.1:8080/v2/credentials/x?token=abc#frag");
	assert_non_null(u);
	assert_string_equal(u, "http://127.0.0.1:8080/v2/credentials/x");
	free(u);
}

static void excerpt_is_printable_and_bounded(void **state)
{
	(void)state;
	char big[1000], out[200];
	memset(big, 'a', sizeof big);
	big[3] = '\n';
	big[4] = '\x01';
	http_excerpt(big, sizeof big, out, sizeof out);
	assert_true(strlen(out) < 170);
	assert_int_equal(out[3], ' ');
	assert_int_equal(out[4], '?');
	assert_non_null(strstr(out, "..."));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(libcurl_signs_the_vector),
		cmocka_unit_test(redact_url_drops_secrets),
		cmocka_unit_test(excerpt_is_printable_and_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
