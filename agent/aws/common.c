/* Settings and helpers shared by the endpoint modules; see common.h. */
#include "common.h"

#include "log.h"
#include "status.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct aws_settings aws_settings;

void aws_apply_settings(struct http_request *req)
{
	if (aws_settings.connect_timeout_ms > 0)
		req->policy.connect_timeout_ms = aws_settings.connect_timeout_ms;
	if (aws_settings.timeout_ms > 0)
		req->policy.timeout_ms = aws_settings.timeout_ms;
	if (aws_settings.max_attempts > 0)
		req->policy.max_attempts = aws_settings.max_attempts;
}

const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return (v != NULL && *v != '\0') ? v : NULL;
}

/* The exit status and an error log line (also in line) for a final non-2xx answer:
 * 401/403 -> 77, 5xx/429/throttling -> 69, other -> 76. */
static enum ba_status aws_fail_status(const struct http_request *req, const struct http_response *resp,
                                      char *line, size_t size)
{
	char *url = http_redact_url(req->url);
	char excerpt[200] = "";
	const char *detail = resp->error_message;
	if (detail[0] == '\0')
		detail = http_excerpt(resp->body ? resp->body : "", resp->len, excerpt, sizeof excerpt);
	enum ba_status rc;
	const char *why;
	if (resp->status == 401 || resp->status == 403) {
		rc = BA_EX_NOPERM;
		why = "access refused";
	} else if (resp->status == 429 || resp->status >= 500 ||
	           strstr(resp->error_code, "Throttl") != NULL ||
	           strcmp(resp->error_code, "TooManyRequestsException") == 0) {
		rc = BA_EX_UNAVAILABLE;
		why = "still failing after retries";
	} else {
		rc = BA_EX_PROTOCOL;
		why = "unexpected answer";
	}
	snprintf(line, size, "%s (%s): HTTP %ld%s%s after %d attempt%s (%s)%s%s", req->what,
	         url ? url : "?", resp->status, resp->error_code[0] ? " " : "", resp->error_code,
	         resp->attempts, resp->attempts == 1 ? "" : "s", why, detail[0] ? ": " : "", detail);
	log_error("%s", line);
	free(url);
	return rc;
}

void aws_field_error(const struct http_request *req, const char *path, const char *expected)
{
	char *url = http_redact_url(req->url);
	log_error("%s (%s): bad response: field %s: %s", req->what, url ? url : "?", path, expected);
	free(url);
}

cJSON *aws_parse_json(const struct http_request *req, const struct http_response *resp,
                      int kind)
{
	cJSON *root = util_json_parse(resp->body ? resp->body : "", resp->len, NULL);
	if (root == NULL) {
		char excerpt[200];
		char *url = http_redact_url(req->url);
		log_error("%s (%s): bad response: not JSON (HTTP %ld, %zu bytes: \"%s\")", req->what,
		          url ? url : "?", resp->status, resp->len,
		          http_excerpt(resp->body ? resp->body : "", resp->len, excerpt, sizeof excerpt));
		free(url);
		return NULL;
	}
	if ((kind == cJSON_Object && !cJSON_IsObject(root)) ||
	    (kind == cJSON_Array && !cJSON_IsArray(root))) {
		aws_field_error(req, "(top level)",
		                kind == cJSON_Object ? "expected a JSON object" : "expected a JSON array");
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

enum ba_status aws_request_object_detailed(const struct http_request *req, cJSON **root,
                                           long *status, char *message, size_t size)
{
	struct http_response resp = { 0 };
	char line[640] = "";
	enum ba_status rc = http_perform(req, &resp);
	*root = NULL;
	if (rc != BA_OK) {
		log_error("%s", resp.error);
		snprintf(line, sizeof line, "%s", resp.error);
	} else if (resp.status != 200) {
		rc = aws_fail_status(req, &resp, line, sizeof line);
	} else {
		*root = aws_parse_json(req, &resp, cJSON_Object);
		rc = *root ? BA_OK : BA_EX_PROTOCOL;
		if (*root == NULL)
			snprintf(line, sizeof line, "%s: bad response: not a JSON object (HTTP 200, %zu bytes)",
			         req->what, resp.len);
	}
	if (status != NULL)
		*status = rc == BA_OK ? 0 : resp.status;
	if (message != NULL)
		snprintf(message, size, "%s", line);
	http_response_free(&resp);
	return rc;
}

enum ba_status aws_request_object(const struct http_request *req, cJSON **root)
{
	return aws_request_object_detailed(req, root, NULL, NULL, 0);
}

bool aws_field_kind(const struct http_request *req, const cJSON *obj, const char *name,
                    const char *path, bool required, int kind, const cJSON **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
	*out = NULL;
	if (v == NULL || (!required && cJSON_IsNull(v)))
		goto missing;
	bool ok = (kind == cJSON_Object && cJSON_IsObject(v)) ||
	          (kind == cJSON_Array && cJSON_IsArray(v)) ||
	          (kind == cJSON_String && cJSON_IsString(v)) ||
	          (kind == cJSON_Number && cJSON_IsNumber(v)) ||
	          (kind == cJSON_True && cJSON_IsBool(v));
	if (!ok) {
		const char *expected = kind == cJSON_Object   ? "expected an object" :
		                       kind == cJSON_Array    ? "expected an array" :
		                       kind == cJSON_String   ? "expected a string" :
		                       kind == cJSON_Number   ? "expected a number" :
		                                                "expected a boolean";
		aws_field_error(req, path, expected);
		return false;
	}
	*out = v;
	return true;
missing:
	if (required) {
		aws_field_error(req, path, "missing");
		return false;
	}
	return true;
}

bool aws_field_string(const struct http_request *req, const cJSON *obj, const char *name,
                      const char *path, bool required, const char **out)
{
	const cJSON *v;
	*out = NULL;
	if (!aws_field_kind(req, obj, name, path, required, cJSON_String, &v))
		return false;
	if (v != NULL)
		*out = v->valuestring;
	return true;
}

bool aws_field_number(const struct http_request *req, const cJSON *obj, const char *name,
                      const char *path, bool required, double *out, bool *present)
{
	const cJSON *v;
	*present = false;
	if (!aws_field_kind(req, obj, name, path, required, cJSON_Number, &v))
		return false;
	if (v != NULL) {
		*out = v->valuedouble;
		*present = true;
	}
	return true;
}

enum ba_status aws_print_json(cJSON *doc)
{
	char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
	cJSON_Delete(doc);
	if (text == NULL) {
		log_error("cannot format the JSON output: out of memory");
		return BA_EX_OSERR;
	}
	enum ba_status rc = BA_OK;
	if (fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
		log_error("cannot write to standard output: %s", strerror(errno));
		rc = BA_EX_OSERR;
	}
	free(text);
	return rc;
}

enum ba_status aws_read_secret_file(const char *variable, const char *path, size_t max,
                                    char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	*out = NULL;
	*len = 0;
	if (fd < 0) {
		log_error("%s (%s): cannot open: %s", variable, path, strerror(errno));
		return BA_EX_CONFIG;
	}
	/* One byte more than allowed tells a file that is too long. */
	char *buf = malloc(max + 2);
	size_t used = 0;
	if (buf == NULL) {
		close(fd);
		log_error("out of memory");
		return BA_EX_OSERR;
	}
	for (;;) {
		ssize_t n = read(fd, buf + used, max + 1 - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error("%s (%s): cannot read: %s", variable, path, strerror(errno));
			util_wipe_free(buf, max + 2);
			close(fd);
			return BA_EX_CONFIG;
		}
		if (n == 0 || (used += (size_t)n) > max)
			break;
	}
	close(fd);
	if (used > max) {
		log_error("%s (%s): longer than %zu bytes", variable, path, max);
		util_wipe_free(buf, max + 2);
		return BA_EX_CONFIG;
	}
	buf[used] = '\0';
	*out = buf;
	*len = used;
	return BA_OK;
}

bool aws_endpoint_refused(const char *source, const char *url, const char *what_travels)
{
	char *shown = http_redact_url(url);
	bool refused = true;
	if (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0)
		log_error("%s (%s) is not an http or https URL", source, shown ? shown : url);
	/* The request carries a signature and X-Amz-Security-Token, or a web identity
	 * token: refused before any request unless it is encrypted or stays on this host
	 * (the tests' fakes). */
	else if (!util_url_safe_for_secrets(url))
		log_error("%s (%s) would send %s in clear text: use https://, or http:// "
		          "only to a loopback address",
		          source, shown ? shown : url, what_travels);
	else
		refused = false;
	free(shown);
	return refused;
}
