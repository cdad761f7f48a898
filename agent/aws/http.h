/* The one HTTP client of batch-agent-aws: every AWS endpoint call goes through
 * http_perform(), which applies the same rules to all of them: connect and total
 * timeouts, bounded retries with exponential backoff and full jitter, TLS verification
 * (CA bundle from AWS_CA_BUNDLE), a response size limit, SigV4 signing through libcurl's
 * CURLOPT_AWS_SIGV4, and error texts that name the endpoint by a URL without secrets.
 *
 * Only this file talks to libcurl. One easy handle is kept for the whole process and
 * reset between requests, so that a long-running loop (spot-watch) reuses its
 * connection and allocates nothing that outlives a request. */
#ifndef BATCH_AGENT_AWS_HTTP_H
#define BATCH_AGENT_AWS_HTTP_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include "status.h"

struct curl_slist;

enum http_retry_policy {
	/* AWS SDK rules: connection errors, timeouts, 5xx, 429, and throttling error
	 * codes (ThrottlingException, TooManyRequestsException, ...). */
	HTTP_RETRY_AWS,
	/* botocore's container credentials fetcher: every non-200 answer, a body that is
	 * not JSON, and connection errors. */
	HTTP_RETRY_UNLESS_200_JSON,
	/* HTTP_RETRY_AWS, and 400 IDPCommunicationError as botocore retries it for STS. */
	HTTP_RETRY_STS,
};

/* How an endpoint is called: timeouts, attempts and what is retried. Each endpoint
 * module keeps one, named for the endpoint. */
struct http_policy {
	long connect_timeout_ms;
	long timeout_ms; /* whole attempt: connect, send, wait, receive */
	int max_attempts;
	/* Sleep before attempt n+1: random in [0, min(cap, base * 2^n)] (full jitter),
	 * or exactly fixed_sleep_ms when that is > 0 (botocore's container provider). */
	long backoff_base_ms;
	long backoff_cap_ms;
	long fixed_sleep_ms;
	enum http_retry_policy retry;
	size_t max_body; /* 0: HTTP_DEFAULT_MAX_BODY */
	bool no_proxy;   /* link-local endpoints: never through an HTTP proxy */
};

struct http_request {
	const char *what;   /* names the endpoint in messages: "Batch DescribeJobs" */
	const char *method; /* "GET", "PUT" (empty body) or "POST" */
	const char *url;
	const char *body; /* POST only */
	size_t body_len;
	/* Extra request headers, owned by the caller (who wipes secret ones). */
	struct curl_slist *headers;
	/* SigV4: when sign_key_id is set, libcurl signs with "aws:amz:REGION:SERVICE" and
	 * the secret key; a non-empty session token goes in X-Amz-Security-Token (a
	 * signed header). The caller owns and wipes the secrets. */
	const char *sign_key_id;
	const char *sign_secret;
	const char *sign_token; /* NULL or "" for long-term keys */
	const char *sign_region;
	const char *sign_service;
	struct http_policy policy;
	struct curl_slist *connect_to; /* CURLOPT_CONNECT_TO; unit tests only */
};

#define HTTP_DEFAULT_MAX_BODY ((size_t)1 << 20)

struct http_response {
	long status;      /* HTTP status of the last attempt */
	char *body;       /* NUL-terminated, wiped and freed by http_response_free() */
	size_t len;
	int attempts;     /* attempts made */
	/* For a >= 400 answer: the AWS error code from x-amzn-ErrorType (up to ':'), else
	 * the JSON body's Error.Code (query protocol), "__type" (after '#'), "code" or
	 * "Code"; "" if none. */
	char error_code[128];
	char error_message[256]; /* its message (printable excerpt), "" if none */
	char error[512];  /* why http_perform() failed: endpoint, URL and reason */
};

/* Process-wide setup: BA_OK or BA_EX_OSERR. */
enum ba_status http_global_init(void);
void http_global_cleanup(void);

/* Runs the request with its retries. Returns BA_OK when an HTTP answer arrived (any
 * status but 3xx: the last one when retries ran out; the caller judges it), or, with
 * resp->error set: BA_EX_UNAVAILABLE when the endpoint could not be reached or kept
 * failing at the transport level (also when http_stop_requested(); a body cut short
 * of its Content-Length, a timeout), BA_EX_PROTOCOL when the answer is not one an AWS
 * endpoint sends (not HTTP, headers over 64 KiB, a body over the policy's max_body, a
 * 3xx redirect, which is never followed), BA_EX_CONFIG for an unusable URL or CA
 * bundle, BA_EX_SOFTWARE when libcurl could not be set up. */
enum ba_status http_perform(const struct http_request *req, struct http_response *resp);
void http_response_free(struct http_response *resp);

/* application/x-www-form-urlencoded "N1=V1&N2=V2..." of count {name, value} pairs,
 * each percent-encoded by libcurl; malloc'd (*len its length), NULL when out of
 * memory. A value may be a secret: the intermediate copies are wiped, and the caller
 * wipes the result (util_wipe_free). */
char *http_form_encode(const char *const pairs[][2], size_t count, size_t *len);

/* The URL without user info, query or fragment, for messages; malloc'd, or NULL. */
char *http_redact_url(const char *url);
/* Up to about 160 printable characters of a body, for messages. */
const char *http_excerpt(const char *body, size_t len, char *buf, size_t size);

/* Cancellation for long-running commands: once the signals in set are blocked by the
 * caller, http sleeps wait with them unblocked (ppoll) and transfers are aborted when
 * one is pending; http_stop_requested() then stays true. */
void http_watch_signals(const sigset_t *set);
bool http_stop_requested(void);
/* Sleeps ms (interruptible as above); false when stopped. */
bool http_sleep_ms(long ms);

#endif
