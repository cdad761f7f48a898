/* IMDSv2 token flow and Spot/rebalance polling; see imds.h and
 * ../shared/aws-reference/imds/IMDS_NOTES.md.
 *
 * Hop limit: IMDS answers the token PUT with IP TTL = the instance's hop limit (1 by
 * default). A container on a Docker bridge network is one hop further, so with hop
 * limit 1 the answer never arrives: the token request times out (no error code). That
 * is why the token request has a 1 s timeout and 2 attempts, and why every failure to
 * get the first token is exit 69 ("spot watching unavailable"). awsvpc and host network
 * modes, and instances with hop limit >= 2, are not affected. */
#include "imds.h"

#include "common.h"
#include "log.h"
#include "status.h"
#include "util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_MAX_LEN 4096
#define PATH_TOKEN "/latest/api/token"
#define PATH_ACTION "/latest/meta-data/spot/instance-action"
#define PATH_REBALANCE "/latest/meta-data/events/recommendations/rebalance"

static enum ba_status imds_base(struct imds *m)
{
	char *out = m->base;
	size_t size = sizeof m->base;
	const char *disabled = getenv("AWS_EC2_METADATA_DISABLED");
	if (disabled != NULL && strcasecmp(disabled, "true") == 0) {
		log_msg(m->unavailable_level, "IMDS is disabled (AWS_EC2_METADATA_DISABLED=true)");
		return BA_EX_UNAVAILABLE;
	}
	const char *base = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	if (base == NULL) {
		const char *mode = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
		base = (mode != NULL && strcasecmp(mode, "ipv6") == 0) ? "http://[fd00:ec2::254]" :
		                                                         "http://169.254.169.254";
	} else if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
		log_error("AWS_EC2_METADATA_SERVICE_ENDPOINT is not an http URL");
		return BA_EX_CONFIG;
	}
	size_t len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	if (len + 64 >= size) {
		log_error("AWS_EC2_METADATA_SERVICE_ENDPOINT is too long");
		return BA_EX_CONFIG;
	}
	snprintf(out, size, "%.*s", (int)len, base);
	return BA_OK;
}

static void drop_token(struct imds *m)
{
	if (m->token != NULL) {
		util_wipe(m->token, strlen(m->token));
		free(m->token);
		m->token = NULL;
	}
	for (struct curl_slist *h = m->token_headers; h != NULL; h = h->next)
		util_wipe(h->data, strlen(h->data));
	curl_slist_free_all(m->token_headers);
	m->token_headers = NULL;
}

/* The IMDSv2 token: link-local and quick, or not there at all. */
static const struct http_policy token_policy = { .no_proxy = true, .connect_timeout_ms = 1000,
	.timeout_ms = 1000, .max_attempts = 2, .backoff_base_ms = 100, .backoff_cap_ms = 200,
	.retry = HTTP_RETRY_AWS, .max_body = TOKEN_MAX_LEN };

/* PUT /latest/api/token. BA_OK with m->token set, else a status with the reason logged
 * at level (error at start, warn later). */
static enum ba_status get_token(struct imds *m, bool at_start)
{
	char url[600], ttl_header[80];
	snprintf(url, sizeof url, "%s" PATH_TOKEN, m->base);
	snprintf(ttl_header, sizeof ttl_header, "X-aws-ec2-metadata-token-ttl-seconds: %ld", m->ttl_s);
	struct curl_slist *headers = curl_slist_append(NULL, ttl_header);
	if (headers == NULL)
		return BA_EX_OSERR;
	struct http_request req = { .what = "IMDS token", .method = "PUT", .url = url, .headers = headers,
				    .policy = token_policy };
	enum log_level level = at_start ? m->unavailable_level : LOG_LEVEL_WARN;
	struct http_response resp;
	enum ba_status rc = http_perform(&req, &resp);
	curl_slist_free_all(headers);
	if (rc != BA_OK) {
		log_msg(level, "%s%s", resp.error,
		        at_start ? " (in a container on a bridge network, the instance's IMDS hop "
		                   "limit must be 2 or more)" :
		                   "");
		return rc == BA_EX_PROTOCOL ? BA_EX_UNAVAILABLE : rc;
	}
	if (resp.status != 200) {
		char excerpt[200];
		log_msg(level, "IMDS token (%s): HTTP %ld%s: %s", url, resp.status,
		        resp.status == 403 ? " (IMDS disabled or token requests not allowed)" : "",
		        http_excerpt(resp.body, resp.len, excerpt, sizeof excerpt));
		http_response_free(&resp);
		return BA_EX_UNAVAILABLE;
	}
	bool ok = resp.len > 0;
	for (size_t i = 0; i < resp.len; i++)
		if ((unsigned char)resp.body[i] <= 0x20 || (unsigned char)resp.body[i] >= 0x7f)
			ok = false;
	if (!ok) {
		log_msg(level, "IMDS token (%s): bad response: the token is empty or not printable",
		        url);
		http_response_free(&resp);
		return BA_EX_UNAVAILABLE;
	}
	drop_token(m);
	size_t n = strlen("X-aws-ec2-metadata-token: ") + resp.len + 1;
	char *line = malloc(n);
	m->token = strdup(resp.body);
	http_response_free(&resp);
	if (line == NULL || m->token == NULL) {
		free(line);
		drop_token(m);
		return BA_EX_OSERR;
	}
	snprintf(line, n, "X-aws-ec2-metadata-token: %s", m->token);
	m->token_headers = curl_slist_append(NULL, line);
	util_wipe(line, n);
	free(line);
	if (m->token_headers == NULL) {
		drop_token(m);
		return BA_EX_OSERR;
	}
	int64_t ttl_ms = (int64_t)m->ttl_s * 1000;
	int64_t margin = ttl_ms / 4 < 60000 ? ttl_ms / 4 : 60000;
	m->refresh_at_ms = util_now_ms() + ttl_ms - margin;
	log_debug("IMDS token obtained (ttl %ld s)", m->ttl_s);
	return BA_OK;
}

static enum ba_status emit(cJSON *doc)
{
	return aws_print_json(doc);
}

/* Handles a 200 answer of one of the two paths; BA_OK or an exit status. */
enum ba_status imds_handle_notice(struct imds *m, const struct http_request *req,
                                  const struct http_response *resp, bool is_action)
{
	cJSON *root = aws_parse_json(req, resp, cJSON_Object);
	if (root == NULL)
		return BA_EX_PROTOCOL;
	const char *action = NULL, *time = NULL;
	enum ba_status rc = BA_EX_PROTOCOL;
	if (is_action) {
		if (!aws_field_string(req, root, "action", "action", true, &action) ||
		    !aws_field_string(req, root, "time", "time", true, &time))
			goto out;
		if (action[0] == '\0') {
			aws_field_error(req, "action", "empty");
			goto out;
		}
		if (strcmp(action, "terminate") != 0 && strcmp(action, "stop") != 0 &&
		    strcmp(action, "hibernate") != 0)
			log_warn("IMDS spot instance-action: unknown action \"%.40s\", passed on",
			         action);
	} else if (!aws_field_string(req, root, "noticeTime", "noticeTime", true, &time)) {
		goto out;
	}
	size_t n = strlen(time) + (action ? strlen(action) : 0) + 2;
	char *key = malloc(n);
	if (key == NULL) {
		rc = BA_EX_OSERR;
		goto out;
	}
	snprintf(key, n, "%s %s", action ? action : "", time);
	char **last = is_action ? &m->last_action : &m->last_rebalance;
	if (*last != NULL && strcmp(*last, key) == 0) {
		free(key);
		rc = BA_OK;
		goto out;
	}
	free(*last);
	*last = key;
	cJSON *doc = cJSON_CreateObject();
	bool ok = doc != NULL &&
	          cJSON_AddStringToObject(doc, "type", is_action ? "instance-action" : "rebalance") &&
	          (!is_action || cJSON_AddStringToObject(doc, "action", action)) &&
	          cJSON_AddStringToObject(doc, "time", time);
	if (!ok) {
		cJSON_Delete(doc);
		rc = BA_EX_OSERR;
		goto out;
	}
	log_info("IMDS: %s notice%s%s, time %s", is_action ? "spot instance-action" : "rebalance",
	         action ? " " : "", action ? action : "", time);
	rc = emit(doc);
out:
	cJSON_Delete(root);
	return rc;
}

static char **bad_notice(struct imds *m, bool is_action)
{
	return is_action ? &m->bad_action : &m->bad_rebalance;
}

/* A 200 answer of a notice path. One that is not a readable notice is logged (by
 * imds_handle_notice, why) once per distinct answer in a row, as the same one comes back
 * every interval, and the watcher goes on: it is the job's only way to see a Spot
 * notice, and the next answer may be good. */
static enum ba_status take_notice(struct imds *m, const struct http_request *req,
                                  const struct http_response *resp, bool is_action)
{
	char **bad = bad_notice(m, is_action);
	if (*bad != NULL && strcmp(*bad, resp->body) == 0)
		return BA_OK;
	enum ba_status rc = imds_handle_notice(m, req, resp, is_action);
	free(*bad);
	*bad = NULL;
	if (rc != BA_EX_PROTOCOL)
		return rc;
	log_warn("%s: the answer above is not a notice; will retry", req->what);
	*bad = strdup(resp->body);
	return *bad != NULL ? BA_OK : BA_EX_OSERR;
}

/* A Spot notice path: polled again soon anyway, so few retries. */
static const struct http_policy notice_policy = { .no_proxy = true, .connect_timeout_ms = 1000,
	.timeout_ms = 2000, .max_attempts = 2, .backoff_base_ms = 100, .backoff_cap_ms = 500,
	.retry = HTTP_RETRY_AWS, .max_body = 64 * 1024 };

/* One GET of path. BA_OK also when the poll failed transiently (warned). */
static enum ba_status poll_path(struct imds *m, const char *path, bool is_action)
{
	char url[600];
	snprintf(url, sizeof url, "%s%s", m->base, path);
	for (int round = 0; round < 2; round++) {
		if (m->token == NULL || util_now_ms() >= m->refresh_at_ms) {
			enum ba_status token_rc = get_token(m, false);
			if (token_rc == BA_EX_OSERR)
				return token_rc;
			if (token_rc != BA_OK && m->token == NULL) {
				m->failing = true;
				return BA_OK;
			}
		}
		const char *what = is_action ? "IMDS spot instance-action" : "IMDS rebalance recommendation";
		struct http_request req = { .what = what, .method = "GET", .url = url, .headers = m->token_headers,
					    .policy = notice_policy };
		aws_apply_settings(&req);
		struct http_response resp;
		enum ba_status rc = http_perform(&req, &resp);
		if (rc == BA_EX_OSERR || rc == BA_EX_SOFTWARE || rc == BA_EX_CONFIG)
			return rc;
		if (rc != BA_OK) {
			if (http_stop_requested())
				return BA_OK;
			if (!m->failing)
				log_warn("%s; will retry", resp.error);
			m->failing = true;
			return BA_OK;
		}
		if (resp.status == 401 && round == 0) {
			/* Token expired or revoked: a new one, then once more. */
			http_response_free(&resp);
			drop_token(m);
			log_debug("%s: HTTP 401, getting a new token", req.what);
			continue;
		}
		if (resp.status == 404) {
			http_response_free(&resp);
			m->failing = false;
			free(*bad_notice(m, is_action));
			*bad_notice(m, is_action) = NULL;
			return BA_OK;
		}
		if (resp.status != 200) {
			char excerpt[200];
			if (!m->failing)
				log_warn("%s (%s): HTTP %ld: %s; will retry", req.what, url, resp.status,
				         http_excerpt(resp.body, resp.len, excerpt, sizeof excerpt));
			m->failing = true;
			http_response_free(&resp);
			return BA_OK;
		}
		m->failing = false;
		rc = take_notice(m, &req, &resp, is_action);
		http_response_free(&resp);
		return rc;
	}
	return BA_OK;
}

static void imds_free(struct imds *m)
{
	drop_token(m);
	free(m->last_action);
	free(m->last_rebalance);
	free(m->bad_action);
	free(m->bad_rebalance);
}

enum ba_status imds_probe_command(void)
{
	struct imds m = { .ttl_s = 60, .unavailable_level = LOG_LEVEL_ERROR };
	enum ba_status rc = imds_base(&m);
	if (rc == BA_OK)
		rc = get_token(&m, true);
	if (rc == BA_OK)
		log_info("IMDS at %s answers token requests", m.base);
	imds_free(&m);
	return rc;
}

enum ba_status imds_spot_watch_command(int64_t interval_ms, long token_ttl_s, bool optional)
{
	struct imds m = { .ttl_s = token_ttl_s,
			  .unavailable_level = optional ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR };
	enum ba_status rc = imds_base(&m);
	if (rc != BA_OK)
		return rc;
	rc = get_token(&m, true);
	if (rc != BA_OK) {
		if (http_stop_requested()) /* SIGTERM while waiting for the first token */
			rc = BA_OK;
		goto out;
	}
	log_info("watching IMDS at %s for Spot interruption and rebalance notices every %lld ms",
	         m.base, (long long)interval_ms);
	while (!http_stop_requested()) {
		int64_t started = util_now_ms();
		rc = poll_path(&m, PATH_ACTION, true);
		if (rc == BA_OK && !http_stop_requested())
			rc = poll_path(&m, PATH_REBALANCE, false);
		if (rc != BA_OK)
			goto out;
		int64_t left = interval_ms - (util_now_ms() - started);
		if (left > 0 && !http_sleep_ms((long)left))
			break;
	}
	log_info("spot-watch stopped by a signal");
	rc = BA_OK;
out:
	imds_free(&m);
	return rc;
}
