/* Shared HTTP client of batch-agent-aws; see http.h. */
#include "http.h"

#include "log.h"
#include "status.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static CURL *shared_handle;
static unsigned int jitter_state;
static sigset_t watched_signals;
static bool watching_signals;
static volatile sig_atomic_t stop_requested;

enum ba_status http_global_init(void)
{
	/* It fails for want of memory (or of the TLS library's own set-up). */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return BA_EX_OSERR;
	jitter_state = (unsigned int)util_now_ms() ^ ((unsigned int)getpid() << 16);
	return BA_OK;
}

void http_global_cleanup(void)
{
	if (shared_handle != NULL) {
		curl_easy_cleanup(shared_handle);
		shared_handle = NULL;
	}
	curl_global_cleanup();
}

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

void http_watch_signals(const sigset_t *set)
{
	watched_signals = *set;
	watching_signals = true;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sigismember(set, sig) == 1)
			sigaction(sig, &sa, NULL);
}

bool http_stop_requested(void)
{
	if (stop_requested)
		return true;
	if (!watching_signals)
		return false;
	sigset_t pending;
	if (sigpending(&pending) != 0)
		return false;
	for (int sig = 1; sig < NSIG; sig++)
		if (sigismember(&watched_signals, sig) == 1 && sigismember(&pending, sig) == 1)
			return true;
	return false;
}

bool http_sleep_ms(long ms)
{
	int64_t deadline = util_now_ms() + ms;
	for (;;) {
		if (http_stop_requested())
			return false;
		int64_t left = deadline - util_now_ms();
		if (left <= 0)
			return true;
		struct timespec ts = { .tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000L };
		if (watching_signals) {
			/* The watched signals are blocked except inside ppoll: no lost wakeup. */
			sigset_t open_mask;
			sigprocmask(SIG_BLOCK, NULL, &open_mask);
			for (int sig = 1; sig < NSIG; sig++)
				if (sigismember(&watched_signals, sig) == 1)
					sigdelset(&open_mask, sig);
			ppoll(NULL, 0, &ts, &open_mask);
		} else {
			nanosleep(&ts, NULL);
		}
	}
}

char *http_redact_url(const char *url)
{
	if (url == NULL)
		return NULL;
	CURLU *u = curl_url();
	char *out = NULL;
	if (u == NULL)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
		curl_url_set(u, CURLUPART_USER, NULL, 0);
		curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
		curl_url_set(u, CURLUPART_OPTIONS, NULL, 0);
		curl_url_set(u, CURLUPART_QUERY, NULL, 0);
		curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
		char *text = NULL;
		if (curl_url_get(u, CURLUPART_URL, &text, 0) == CURLUE_OK) {
			out = strdup(text);
			curl_free(text);
		}
	}
	curl_url_cleanup(u);
	if (out == NULL)
		out = strdup("(unparsable URL)");
	return out;
}

const char *http_excerpt(const char *body, size_t len, char *buf, size_t size)
{
	size_t limit = size > 164 ? 164 : size;
	size_t o = 0;
	if (limit == 0)
		return buf;
	for (size_t i = 0; i < len && o + 4 < limit; i++) {
		unsigned char c = (unsigned char)body[i];
		if (c == '\n' || c == '\r' || c == '\t')
			c = ' ';
		buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (len > 0 && o + 4 >= limit && o < len) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

/* Copy at most size-1 printable characters. */
static void copy_printable(char *dst, size_t size, const char *src, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 1 < size; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	dst[o] = '\0';
}

/* ---- one attempt ---------------------------------------------------------------- */

struct transfer {
	char *body;
	size_t len;
	size_t cap;
	size_t max;
	bool too_large;
	size_t header_bytes;
	bool headers_too_large;
	bool headers_complete; /* the blank line that ends a header block arrived */
	char error_type[128]; /* x-amzn-ErrorType */
	char curl_error[CURL_ERROR_SIZE]; /* libcurl's own words for a failure */
};

/* AWS answers carry a few hundred bytes of headers; libcurl alone refuses only one line
 * over 100 KiB, after buffering it. */
#define MAX_HEADER_BYTES (64 * 1024)

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	size_t n = size * nmemb;
	if (n > t->max - t->len) {
		t->too_large = true;
		return 0; /* CURLE_WRITE_ERROR */
	}
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 4096;
		while (cap < t->len + n + 1)
			cap *= 2;
		if (cap > t->max + 1)
			cap = t->max + 1;
		/* Not realloc: the old block may hold a secret and must be wiped. */
		char *grown = malloc(cap);
		if (grown == NULL)
			return 0;
		if (t->body != NULL) {
			memcpy(grown, t->body, t->len);
			util_wipe(t->body, t->cap);
			free(t->body);
		}
		t->body = grown;
		t->cap = cap;
	}
	memcpy(t->body + t->len, data, n);
	t->len += n;
	t->body[t->len] = '\0';
	return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	size_t n = size * nmemb;
	static const char name[] = "x-amzn-errortype:";
	if (n > MAX_HEADER_BYTES - t->header_bytes) {
		t->headers_too_large = true;
		return 0; /* CURLE_WRITE_ERROR */
	}
	t->header_bytes += n;
	t->headers_complete = (n == 2 && data[0] == '\r' && data[1] == '\n') || (n == 1 && data[0] == '\n');
	if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
		const char *v = data + sizeof name - 1;
		size_t vlen = n - (sizeof name - 1);
		while (vlen > 0 && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		size_t end = 0;
		while (end < vlen && v[end] != ':' && v[end] != '\r' && v[end] != '\n')
			end++;
		copy_printable(t->error_type, sizeof t->error_type, v, end);
	}
	return n;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	(void)arg, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	return http_stop_requested() ? 1 : 0;
}

static size_t on_read_nothing(char *buf, size_t size, size_t nmemb, void *arg)
{
	(void)buf, (void)size, (void)nmemb, (void)arg;
	return 0;
}

static void transfer_free(struct transfer *t)
{
	if (t->body != NULL) {
		util_wipe(t->body, t->cap);
		free(t->body);
	}
	memset(t, 0, sizeof *t);
}

static void wipe_slist(struct curl_slist *list)
{
	for (; list != NULL; list = list->next)
		if (list->data != NULL)
			util_wipe(list->data, strlen(list->data));
}

static bool is_throttling_code(const char *code)
{
	static const char *const codes[] = {
		"Throttling", "ThrottlingException", "ThrottledException",
		"RequestThrottledException", "TooManyRequestsException",
		"ProvisionedThroughputExceededException", "TransactionInProgressException",
		"RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException",
		"RequestThrottled", "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
	};
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (strcmp(code, codes[i]) == 0)
			return true;
	return false;
}

/* Code and Message of a query-protocol error object, where none was found yet. */
static void root_error_fields(const cJSON *error, struct http_response *resp)
{
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "Code");
	const cJSON *message = cJSON_GetObjectItemCaseSensitive(error, "Message");
	if (resp->error_code[0] == '\0' && cJSON_IsString(code))
		copy_printable(resp->error_code, sizeof resp->error_code, code->valuestring,
		               strlen(code->valuestring));
	if (cJSON_IsString(message))
		http_excerpt(message->valuestring, strlen(message->valuestring), resp->error_message,
		             sizeof resp->error_message);
}

static void extract_aws_error(const struct transfer *t, struct http_response *resp)
{
	resp->error_code[0] = '\0';
	resp->error_message[0] = '\0';
	if (t->error_type[0] != '\0')
		snprintf(resp->error_code, sizeof resp->error_code, "%s", t->error_type);
	if (t->body == NULL)
		return;
	cJSON *root = util_json_parse(t->body, t->len, NULL);
	if (root == NULL)
		return;
	if (cJSON_IsObject(root)) {
		/* Query-protocol services (STS) asked for JSON nest theirs:
		 * {"Error":{"Code":"Throttling","Message":"Rate exceeded","Type":"Sender"},
		 * "RequestId":"..."} (kubernetes-sigs/aws-iam-authenticator, pkg/token/token.go). */
		cJSON *nested = cJSON_GetObjectItemCaseSensitive(root, "Error");
		if (cJSON_IsObject(nested))
			root_error_fields(nested, resp);
		if (resp->error_code[0] == '\0') {
			static const char *const keys[] = { "__type", "code", "Code" };
			for (size_t i = 0; i < 3; i++) {
				cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[i]);
				if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
					const char *s = v->valuestring;
					const char *hash = strrchr(s, '#');
					if (hash != NULL)
						s = hash + 1;
					size_t end = strcspn(s, ":");
					copy_printable(resp->error_code, sizeof resp->error_code, s, end);
					break;
				}
			}
		}
		cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");
		if (!cJSON_IsString(m))
			m = cJSON_GetObjectItemCaseSensitive(root, "Message");
		if (cJSON_IsString(m) && resp->error_message[0] == '\0')
			http_excerpt(m->valuestring, strlen(m->valuestring), resp->error_message,
			             sizeof resp->error_message);
	} else if (cJSON_IsString(root)) {
		/* ECS task metadata errors are a bare JSON string. */
		http_excerpt(root->valuestring, strlen(root->valuestring), resp->error_message,
		             sizeof resp->error_message);
	}
	cJSON_Delete(root);
}

static bool retryable_curl_error(CURLcode curl_code)
{
	switch (curl_code) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static bool retryable_answer(const struct http_request *req, long http_status,
                             const struct transfer *t, const struct http_response *resp)
{
	if (req->policy.retry == HTTP_RETRY_UNLESS_200_JSON) {
		if (http_status != 200)
			return true;
		cJSON *root = util_json_parse(t->body ? t->body : "", t->len, NULL);
		bool bad = root == NULL;
		cJSON_Delete(root);
		return bad;
	}
	if (http_status == 429 || http_status >= 500)
		return true;
	/* botocore's one STS-specific retry (data/_retry.json, retries/special.py): the
	 * identity provider did not answer STS in time. */
	if (req->policy.retry == HTTP_RETRY_STS && http_status == 400 &&
	    strcmp(resp->error_code, "IDPCommunicationError") == 0)
		return true;
	return http_status >= 400 && is_throttling_code(resp->error_code);
}

static long backoff_ms(const struct http_request *req, int attempt)
{
	if (req->policy.fixed_sleep_ms > 0)
		return req->policy.fixed_sleep_ms;
	long base = req->policy.backoff_base_ms > 0 ? req->policy.backoff_base_ms : 100;
	long cap = req->policy.backoff_cap_ms > 0 ? req->policy.backoff_cap_ms : 2000;
	long ceiling = base;
	for (int i = 1; i < attempt && ceiling < cap; i++)
		ceiling *= 2;
	if (ceiling > cap)
		ceiling = cap;
	return (long)(rand_r(&jitter_state) % (unsigned long)(ceiling + 1));
}

/* Set up the shared handle for one attempt; BA_OK or a status with resp->error. */
static enum ba_status configure(CURL *h, const struct http_request *req, struct transfer *t,
                     struct curl_slist *headers, const char *shown_url,
                     struct http_response *resp)
{
	CURLcode curl_code = CURLE_OK;
#define SET(opt, val)                                   \
	do {                                            \
		if (curl_code == CURLE_OK)                     \
			curl_code = curl_easy_setopt(h, opt, val); \
	} while (0)
	SET(CURLOPT_URL, req->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, req->policy.connect_timeout_ms > 0 ? req->policy.connect_timeout_ms : 3000L);
	SET(CURLOPT_TIMEOUT_MS, req->policy.timeout_ms > 0 ? req->policy.timeout_ms : 10000L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_USERAGENT, "batch-agent-aws/" BATCH_AGENT_VERSION);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, t);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, t);
	SET(CURLOPT_ERRORBUFFER, t->curl_error);
	SET(CURLOPT_NOPROGRESS, 0L);
	SET(CURLOPT_XFERINFOFUNCTION, on_progress);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max);
	const char *ca = getenv("AWS_CA_BUNDLE");
	if (ca != NULL && *ca != '\0')
		SET(CURLOPT_CAINFO, ca);
	if (req->policy.no_proxy)
		SET(CURLOPT_PROXY, "");
	if (strcmp(req->method, "POST") == 0) {
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
	} else if (strcmp(req->method, "PUT") == 0) {
		SET(CURLOPT_UPLOAD, 1L);
		SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)0);
		SET(CURLOPT_READFUNCTION, on_read_nothing);
	} else {
		SET(CURLOPT_HTTPGET, 1L);
	}
	if (req->sign_key_id != NULL) {
		char scope[160];
		snprintf(scope, sizeof scope, "aws:amz:%s:%s", req->sign_region, req->sign_service);
		SET(CURLOPT_AWS_SIGV4, scope);
		SET(CURLOPT_USERNAME, req->sign_key_id);
		SET(CURLOPT_PASSWORD, req->sign_secret);
	}
	SET(CURLOPT_HTTPHEADER, headers);
	if (req->connect_to != NULL)
		SET(CURLOPT_CONNECT_TO, req->connect_to);
#undef SET
	if (curl_code != CURLE_OK) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): cannot set up the request: %s",
		         req->what, shown_url, curl_easy_strerror(curl_code));
		return curl_code == CURLE_OUT_OF_MEMORY ? BA_EX_OSERR : BA_EX_SOFTWARE;
	}
	return BA_OK;
}

/* Our own copy of the header list, so that a session token header is added (and
 * wiped) here; curl_slist_append copies each string. */
static enum ba_status copy_headers(const struct http_request *req, struct curl_slist **headers)
{
	for (const struct curl_slist *h = req->headers; h != NULL; h = h->next) {
		struct curl_slist *grown = curl_slist_append(*headers, h->data);
		if (grown == NULL)
			return BA_EX_OSERR;
		*headers = grown;
	}
	if (req->sign_key_id == NULL || req->sign_token == NULL || req->sign_token[0] == '\0')
		return BA_OK;
	/* libcurl 7.88.1 signs every CURLOPT_HTTPHEADER entry; an empty value would be
	 * signed but not sent, so the header is only added with a token. */
	size_t n = strlen("X-Amz-Security-Token: ") + strlen(req->sign_token) + 1;
	char *token_header = malloc(n);
	if (token_header == NULL)
		return BA_EX_OSERR;
	snprintf(token_header, n, "X-Amz-Security-Token: %s", req->sign_token);
	struct curl_slist *grown = curl_slist_append(*headers, token_header);
	util_wipe(token_header, n);
	free(token_header);
	if (grown == NULL)
		return BA_EX_OSERR;
	*headers = grown;
	return BA_OK;
}

/* An HTTP answer arrived: keep it in resp; *retry when the policy says so. */
static enum ba_status take_answer(const struct http_request *req, struct transfer *t, struct http_response *resp,
                                  int attempt, int attempts, const char *shown, bool *retry)
{
	long code = 0;
	curl_easy_getinfo(shared_handle, CURLINFO_RESPONSE_CODE, &code);
	http_response_free(resp);
	resp->status = code;
	resp->attempts = attempt;
	if (code >= 400)
		extract_aws_error(t, resp);
	*retry = retryable_answer(req, code, t, resp);
	resp->body = t->body ? t->body : calloc(1, 1);
	resp->len = t->len;
	t->body = NULL;
	if (resp->body == NULL) {
		*retry = false;
		snprintf(resp->error, sizeof resp->error, "%s (%s): out of memory", req->what, shown);
		return BA_EX_OSERR;
	}
	if (*retry && attempt < attempts) {
		char excerpt[200];
		/* Each retry at debug: the final failure says how many attempts it took. */
		log_debug("%s (%s): HTTP %ld %s, attempt %d of %d; retrying", req->what, shown, code,
		          resp->error_code[0] ? resp->error_code :
		                                http_excerpt(resp->body, resp->len, excerpt, sizeof excerpt),
		          attempt, attempts);
	}
	return BA_OK;
}

/* No HTTP answer: why, in resp->error; *retry for the errors worth another attempt. */
static enum ba_status transfer_failed(const struct http_request *req, CURLcode curl_code, struct transfer *t,
                                      struct http_response *resp, int attempt, int attempts, const char *shown,
                                      bool *retry)
{
	bool too_large = t->too_large || curl_code == CURLE_FILESIZE_EXCEEDED;
	*retry = false;
	http_response_free(resp);
	resp->attempts = attempt;
	if (too_large) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): response body larger than %zu bytes, refused",
		         req->what, shown, req->policy.max_body ? req->policy.max_body : HTTP_DEFAULT_MAX_BODY);
		return BA_EX_PROTOCOL;
	}
	if (curl_code == CURLE_ABORTED_BY_CALLBACK || http_stop_requested()) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): stopped by a signal", req->what, shown);
		return BA_EX_UNAVAILABLE;
	}
	/* libcurl 7.88.1 fails a header line over its 100 KiB buffer with a bare "out of
	 * memory" (no error text): after the status line and before the blank line, that
	 * buffer is what grew, not our memory. */
	if (t->headers_too_large ||
	    (curl_code == CURLE_OUT_OF_MEMORY && t->header_bytes > 0 && !t->headers_complete)) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): response headers larger than %d KiB, refused",
		         req->what, shown, MAX_HEADER_BYTES / 1024);
		return BA_EX_PROTOCOL;
	}
	if (curl_code == CURLE_OUT_OF_MEMORY) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): out of memory", req->what, shown);
		return BA_EX_OSERR;
	}
	/* Our URLs are http or https (checked before): an "unsupported protocol" now is
	 * the answer's, bytes that are not HTTP (libcurl 7.88 reads them as HTTP/0.9). */
	if (curl_code == CURLE_UNSUPPORTED_PROTOCOL || curl_code == CURLE_WEIRD_SERVER_REPLY) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): the answer is not HTTP (%s)", req->what, shown,
		         t->curl_error[0] ? t->curl_error : curl_easy_strerror(curl_code));
		return BA_EX_PROTOCOL;
	}
	const char *hint = "";
	if (curl_code == CURLE_OPERATION_TIMEDOUT)
		hint = " (no answer in time)";
	else if (curl_code == CURLE_PEER_FAILED_VERIFICATION)
		hint = " (TLS certificate not trusted; AWS_CA_BUNDLE names a CA bundle)";
	snprintf(resp->error, sizeof resp->error, "%s (%s): %s%s after %d attempt%s", req->what, shown,
	         curl_easy_strerror(curl_code), hint, attempt, attempt == 1 ? "" : "s");
	if (curl_code == CURLE_SSL_CACERT_BADFILE || curl_code == CURLE_URL_MALFORMAT)
		return BA_EX_CONFIG;
	*retry = retryable_curl_error(curl_code);
	if (*retry && attempt < attempts)
		log_debug("%s; attempt %d of %d, retrying", resp->error, attempt, attempts);
	return BA_EX_UNAVAILABLE;
}

/* AWS endpoints answer; they do not redirect. A 3xx is not followed (CURLOPT_FOLLOWLOCATION
 * is off: the signed request, a credentials token or a form body with the web identity
 * token would go to the Location's host), not retried, and is a bad answer. */
static enum ba_status refuse_redirect(const struct http_request *req, long code, struct http_response *resp,
                                      int attempt, const char *shown)
{
	char *location = NULL, *redacted = NULL;
	char where[200] = "";
	if (curl_easy_getinfo(shared_handle, CURLINFO_REDIRECT_URL, &location) == CURLE_OK && location != NULL &&
	    (redacted = http_redact_url(location)) != NULL) {
		/* The Location is the answer's: printable characters only in our message. */
		copy_printable(where, sizeof where, redacted, strlen(redacted));
		free(redacted);
	}
	http_response_free(resp);
	resp->attempts = attempt;
	snprintf(resp->error, sizeof resp->error,
	         "%s (%s): HTTP %ld, a redirect%s%s, not followed (AWS endpoints do not redirect)", req->what,
	         shown, code, where[0] ? " to " : "", where);
	return BA_EX_PROTOCOL;
}

/* One attempt on the shared handle. */
static enum ba_status attempt_once(const struct http_request *req, struct curl_slist *headers,
                                   struct http_response *resp, int attempt, int attempts, const char *shown,
                                   bool *retry)
{
	struct transfer t = { .max = req->policy.max_body ? req->policy.max_body : HTTP_DEFAULT_MAX_BODY };
	*retry = false;
	curl_easy_reset(shared_handle);
	enum ba_status rc = configure(shared_handle, req, &t, headers, shown, resp);
	if (rc != BA_OK)
		return rc;
	resp->attempts = attempt;
	CURLcode curl_code = curl_easy_perform(shared_handle);
	/* Drop the credentials from the handle right away. */
	curl_easy_setopt(shared_handle, CURLOPT_USERNAME, NULL);
	curl_easy_setopt(shared_handle, CURLOPT_PASSWORD, NULL);
	curl_easy_setopt(shared_handle, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(shared_handle, CURLOPT_ERRORBUFFER, NULL); /* t is this attempt's */
	long code = 0;
	if (curl_code == CURLE_OK)
		curl_easy_getinfo(shared_handle, CURLINFO_RESPONSE_CODE, &code);
	if (curl_code == CURLE_OK && code >= 300 && code < 400)
		rc = refuse_redirect(req, code, resp, attempt, shown);
	else if (curl_code == CURLE_OK)
		rc = take_answer(req, &t, resp, attempt, attempts, shown, retry);
	else
		rc = transfer_failed(req, curl_code, &t, resp, attempt, attempts, shown, retry);
	transfer_free(&t);
	return rc;
}

enum ba_status http_perform(const struct http_request *req, struct http_response *resp)
{
	memset(resp, 0, sizeof *resp);
	char *shown_url = http_redact_url(req->url);
	const char *shown = shown_url ? shown_url : "?";
	struct curl_slist *headers = NULL;
	enum ba_status rc = BA_OK;

	if (shared_handle == NULL)
		shared_handle = curl_easy_init();
	if (shared_handle == NULL) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): cannot create a libcurl handle", req->what, shown);
		rc = BA_EX_OSERR;
		goto out;
	}
	rc = copy_headers(req, &headers);
	if (rc != BA_OK) {
		snprintf(resp->error, sizeof resp->error, "%s (%s): out of memory", req->what, shown);
		goto out;
	}
	int attempts = req->policy.max_attempts > 0 ? req->policy.max_attempts : 1;
	for (int attempt = 1; attempt <= attempts; attempt++) {
		bool retry;
		rc = attempt_once(req, headers, resp, attempt, attempts, shown, &retry);
		if (!retry || attempt == attempts)
			break;
		if (!http_sleep_ms(backoff_ms(req, attempt))) {
			http_response_free(resp);
			snprintf(resp->error, sizeof resp->error, "%s (%s): stopped by a signal", req->what, shown);
			rc = BA_EX_UNAVAILABLE;
			break;
		}
	}
	if (rc == BA_OK)
		resp->error[0] = '\0';
out:
	if (shared_handle != NULL) {
		curl_easy_setopt(shared_handle, CURLOPT_USERNAME, NULL);
		curl_easy_setopt(shared_handle, CURLOPT_PASSWORD, NULL);
	}
	wipe_slist(headers);
	curl_slist_free_all(headers);
	free(shown_url);
	return rc;
}

void http_response_free(struct http_response *resp)
{
	util_wipe_free(resp->body, resp->len);
	resp->body = NULL;
	resp->len = 0;
	resp->status = 0;
}

char *http_form_encode(const char *const pairs[][2], size_t count, size_t *len)
{
	size_t size = 1, used = 0;
	char **escaped = calloc(count * 2 + 1, sizeof *escaped);
	char *body = NULL;
	if (escaped == NULL)
		return NULL;
	for (size_t i = 0; i < count * 2; i++) {
		/* libcurl 7.82 and later ignore the handle. Every byte but the unreserved
		 * ones is %XX-encoded, which form decoding reads back exactly. */
		escaped[i] = curl_easy_escape(NULL, pairs[i / 2][i % 2], 0);
		if (escaped[i] == NULL)
			goto out;
		size += strlen(escaped[i]) + 1; /* '=' or '&' */
	}
	if ((body = malloc(size)) == NULL)
		goto out;
	for (size_t i = 0; i < count; i++)
		used += (size_t)snprintf(body + used, size - used, "%s%s=%s", i ? "&" : "", escaped[2 * i],
		                         escaped[2 * i + 1]);
	*len = used;
out:
	for (size_t i = 0; i < count * 2 && escaped[i] != NULL; i++) {
		util_wipe(escaped[i], strlen(escaped[i]));
		curl_free(escaped[i]);
	}
	free(escaped);
	return body;
}
