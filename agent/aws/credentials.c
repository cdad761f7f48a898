/* Credentials and region resolution; see credentials.h. */
#include "credentials.h"
#include "http.h"
#include "sts.h"

#include "common.h"
#include "log.h"
#include "status.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where AWS_CONTAINER_CREDENTIALS_RELATIVE_URI points (botocore: fixed, http by design:
 * the ECS agent's link-local address never leaves the host). Nothing moves it: tests use
 * an allowed loopback AWS_CONTAINER_CREDENTIALS_FULL_URI instead. */
#define ECS_CREDENTIALS_HOST "http://169.254.170.2"
#define TOKEN_MAX 16384

static char *dup_secret(const char *s)
{
	return strdup(s);
}

static enum ba_status from_environment(struct aws_credentials *out, bool *found)
{
	const char *ak = env_nonempty("AWS_ACCESS_KEY_ID");
	const char *sk = env_nonempty("AWS_SECRET_ACCESS_KEY");
	const char *token = env_nonempty("AWS_SESSION_TOKEN");
	if (token == NULL)
		token = env_nonempty("AWS_SECURITY_TOKEN");
	*found = false;
	if (ak == NULL && sk == NULL)
		return BA_OK;
	if (ak == NULL || sk == NULL) {
		log_error("partial credentials in the environment: %s is set but %s is not",
		          ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
		          ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		return BA_EX_CONFIG;
	}
	out->access_key_id = dup_secret(ak);
	out->secret_access_key = dup_secret(sk);
	out->session_token = token ? dup_secret(token) : NULL;
	if (out->access_key_id == NULL || out->secret_access_key == NULL ||
	    (token != NULL && out->session_token == NULL)) {
		aws_credentials_clear(out);
		log_error("out of memory");
		return BA_EX_OSERR;
	}
	*found = true;
	log_debug("credentials: from the environment (AWS_ACCESS_KEY_ID)");
	return BA_OK;
}

/* botocore ContainerMetadataFetcher._validate_allowed_url (1.43): https to any host;
 * http only to loopback IPs or the ECS/EKS agent addresses, or localhost. */
static bool full_uri_allowed(const char *url, char *why, size_t why_size)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	bool ok = false;
	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		snprintf(why, why_size, "not a valid URL");
		goto out;
	}
	if (strcasecmp(scheme, "https") == 0) {
		ok = true;
		goto out;
	}
	if (strcasecmp(scheme, "http") != 0) {
		snprintf(why, why_size, "scheme %s is not http or https", scheme);
		goto out;
	}
	/* CURLU gives an IPv6 host in brackets. */
	char bare[256];
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof bare) {
		memcpy(bare, host + 1, hl - 2);
		bare[hl - 2] = '\0';
		char *zone = strchr(bare, '%');
		if (zone != NULL)
			*zone = '\0';
	} else {
		snprintf(bare, sizeof bare, "%s", host);
	}
	struct in_addr a4;
	struct in6_addr a6;
	static const char *const allowed[] = { "169.254.170.2", "169.254.170.23", "localhost" };
	for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
		if (strcasecmp(bare, allowed[i]) == 0)
			ok = true;
	if (!ok && inet_pton(AF_INET, bare, &a4) == 1)
		ok = (ntohl(a4.s_addr) >> 24) == 127;
	else if (!ok && inet_pton(AF_INET6, bare, &a6) == 1) {
		static const unsigned char eks[16] = { 0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
			                               0,    0,    0,    0,    0, 0, 0, 0x23 };
		ok = IN6_IS_ADDR_LOOPBACK(&a6) || memcmp(&a6, eks, 16) == 0;
	}
	if (!ok)
		snprintf(why, why_size,
		         "host %s is not allowed over http (only https, a loopback address, "
		         "169.254.170.2, 169.254.170.23, fd00:ec2::23 or localhost)",
		         host);
out:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/* The Authorization value: the token file (re-read for every request) wins over the
 * variable. botocore rejects a value with CR or LF, so a trailing newline is an error. */
static enum ba_status authorization_token(char **out)
{
	*out = NULL;
	const char *file = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *source = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
	if (file != NULL) {
		source = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
		size_t len;
		enum ba_status rc = aws_read_secret_file(source, file, TOKEN_MAX, out, &len);
		if (rc != BA_OK)
			return rc;
	} else {
		const char *value = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN");
		if (value == NULL)
			return BA_OK;
		*out = strdup(value);
		if (*out == NULL)
			return BA_EX_OSERR;
	}
	size_t len = strlen(*out);
	bool bad = len == 0;
	for (size_t i = 0; i < len; i++)
		if ((*out)[i] == '\r' || (*out)[i] == '\n')
			bad = true;
	if (bad) {
		log_error("%s: the authorization token is empty or contains a CR or LF "
		          "(a token file must not end with a newline)",
		          source);
		util_wipe(*out, len);
		free(*out);
		*out = NULL;
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

/* The endpoint's URL: the relative URI on 169.254.170.2, or the full URI where it is
 * allowed. */
static enum ba_status endpoint_url(const char *relative, const char *full, char **url)
{
	if (relative != NULL) {
		const char *host = ECS_CREDENTIALS_HOST;
		size_t n = strlen(host) + strlen(relative) + 2;
		*url = malloc(n);
		if (*url == NULL)
			return BA_EX_OSERR;
		snprintf(*url, n, "%s%s%s", host, relative[0] == '/' ? "" : "/", relative);
		return BA_OK;
	}
	char why[256];
	if (!full_uri_allowed(full, why, sizeof why)) {
		char *shown = http_redact_url(full);
		log_error("AWS_CONTAINER_CREDENTIALS_FULL_URI (%s): %s", shown ? shown : "?", why);
		free(shown);
		return BA_EX_CONFIG;
	}
	*url = strdup(full);
	return *url ? BA_OK : BA_EX_OSERR;
}

/* Accept, and Authorization when a token is configured (a secret: wiped by
 * free_headers). */
static enum ba_status request_headers(struct curl_slist **headers)
{
	char *token = NULL;
	struct curl_slist *grown;
	enum ba_status rc = authorization_token(&token);
	if (rc != BA_OK)
		return rc;
	rc = BA_EX_OSERR;
	if ((grown = curl_slist_append(*headers, "Accept: application/json")) == NULL)
		goto out;
	*headers = grown;
	if (token != NULL) {
		size_t n = strlen("Authorization: ") + strlen(token) + 1;
		char *auth_header = malloc(n);
		if (auth_header == NULL)
			goto out;
		snprintf(auth_header, n, "Authorization: %s", token);
		grown = curl_slist_append(*headers, auth_header);
		util_wipe(auth_header, n);
		free(auth_header);
		if (grown == NULL)
			goto out;
		*headers = grown;
	}
	rc = BA_OK;
out:
	if (token != NULL) {
		util_wipe(token, strlen(token));
		free(token);
	}
	return rc;
}

static void free_headers(struct curl_slist *headers)
{
	for (struct curl_slist *h = headers; h != NULL; h = h->next)
		util_wipe(h->data, strlen(h->data));
	curl_slist_free_all(headers);
}

/* The keys of the endpoint's answer, into out. */
enum ba_status credentials_take(const struct http_request *req, const cJSON *root,
                                struct aws_credentials *out)
{
	const char *ak, *sk, *tok, *expiration;
	if (!aws_field_string(req, root, "AccessKeyId", "AccessKeyId", true, &ak) ||
	    !aws_field_string(req, root, "SecretAccessKey", "SecretAccessKey", true, &sk) ||
	    !aws_field_string(req, root, "Token", "Token", true, &tok) ||
	    !aws_field_string(req, root, "Expiration", "Expiration", false, &expiration))
		return BA_EX_PROTOCOL;
	if (ak[0] == '\0' || sk[0] == '\0') {
		aws_field_error(req, ak[0] == '\0' ? "AccessKeyId" : "SecretAccessKey", "empty");
		return BA_EX_PROTOCOL;
	}
	out->access_key_id = strdup(ak);
	out->secret_access_key = strdup(sk);
	out->session_token = strdup(tok);
	if (out->access_key_id == NULL || out->secret_access_key == NULL || out->session_token == NULL) {
		aws_credentials_clear(out);
		return BA_EX_OSERR;
	}
	char *shown = http_redact_url(req->url);
	log_debug("credentials: from %s (%s), expiring %s", req->what, shown ? shown : "?",
	          expiration ? expiration : "(not given)");
	free(shown);
	return BA_OK;
}

/* The answer's tree holds copies of the secrets. */
static void wipe_tree(cJSON *root)
{
	static const char *const secret_fields[] = { "SecretAccessKey", "Token" };
	if (root == NULL)
		return;
	for (size_t i = 0; i < 2; i++) {
		cJSON *v = cJSON_GetObjectItemCaseSensitive(root, secret_fields[i]);
		if (cJSON_IsString(v))
			util_wipe(v->valuestring, strlen(v->valuestring));
	}
	cJSON_Delete(root);
}

/* botocore's ContainerMetadataFetcher: 2 s, 3 attempts, 1 s apart, retried on any non-200 or non-JSON answer. */
static const struct http_policy container_policy = { .no_proxy = true, .connect_timeout_ms = 2000,
	.timeout_ms = 2000, .max_attempts = 3, .fixed_sleep_ms = 1000, .retry = HTTP_RETRY_UNLESS_200_JSON,
	.max_body = 64 * 1024 };

static enum ba_status from_container_endpoint(struct aws_credentials *out, bool *found)
{
	*found = false;
	const char *relative = env_nonempty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *full = env_nonempty("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	char *url = NULL;
	struct curl_slist *headers = NULL;
	cJSON *root = NULL;
	if (relative == NULL && full == NULL)
		return BA_OK;
	*found = true;
	enum ba_status rc = endpoint_url(relative, full, &url);
	if (rc == BA_OK)
		rc = request_headers(&headers);
	struct http_request req = { .what = "container credentials endpoint", .method = "GET", .url = url,
				    .headers = headers, .policy = container_policy };
	if (rc == BA_OK)
		rc = aws_request_object(&req, &root);
	if (rc == BA_OK)
		rc = credentials_take(&req, root, out);
	wipe_tree(root);
	free_headers(headers);
	free(url);
	return rc;
}

/* botocore's order (credentials.py, create_credential_resolver, 1.29.27): the
 * environment, then AssumeRoleWithWebIdentity (the first of the profile providers),
 * then the container provider; the shared-file, process and IMDS providers are not
 * ours (a Batch container has no profile, and instance credentials are not the job's). */
enum ba_status credentials_resolve(const char *region, struct aws_credentials *out)
{
	memset(out, 0, sizeof *out);
	bool found = false;
	enum ba_status rc = from_environment(out, &found);
	if (rc != BA_OK || found)
		return rc;
	rc = sts_web_identity_credentials(region, out, &found);
	if (rc != BA_OK || found)
		return rc;
	rc = from_container_endpoint(out, &found);
	if (rc != BA_OK || found)
		return rc;
	log_error("no AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
	          "AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and "
	          "AWS_CONTAINER_CREDENTIALS_FULL_URI are all unset (no job role?)");
	return BA_EX_CONFIG;
}

void aws_credentials_clear(struct aws_credentials *creds)
{
	char **fields[] = { &creds->access_key_id, &creds->secret_access_key,
		            &creds->session_token };
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		if (*fields[i] != NULL) {
			util_wipe(*fields[i], strlen(*fields[i]));
			free(*fields[i]);
			*fields[i] = NULL;
		}
	}
}
