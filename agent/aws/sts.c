/* STS AssumeRoleWithWebIdentity; see sts.h.
 *
 * One unsigned request (botocore's AssumeRoleWithWebIdentityCredentialFetcher creates
 * its STS client with signature_version=UNSIGNED: the token is the authentication):
 *
 *   POST https://sts.REGION.amazonaws.com/            (the endpoint rules: sts_endpoint)
 *   Content-Type: application/x-www-form-urlencoded; charset=utf-8
 *   Accept: application/json
 *
 *   Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=...&RoleSessionName=...
 *   &WebIdentityToken=...                             (each value percent-encoded)
 *
 * STS is a query-protocol service and answers XML by default. Asked for JSON with
 * Accept: application/json, it answers the same tree as JSON objects, which cJSON reads
 * (this project writes no XML parser). Evidence, both from public code that runs
 * against the real service:
 *   - envoyproxy/envoy, source/extensions/common/aws/credential_providers/
 *     webidentity_credentials_provider.cc: the same request with "Accept:
 *     application/json", the answer read as
 *     AssumeRoleWithWebIdentityResponse.AssumeRoleWithWebIdentityResult.Credentials.
 *     {AccessKeyId, SecretAccessKey, SessionToken, Expiration}, Expiration a NUMBER of
 *     seconds since the epoch that STS writes in scientific notation (1.514869445E9;
 *     envoyproxy/envoy#33806 and its fix #34426, "sts response contains scientific
 *     notation"), not the ISO 8601 string of the XML answer;
 *   - kubernetes-sigs/aws-iam-authenticator, pkg/token/token.go: GetCallerIdentity with
 *     "accept: application/json", answer {"GetCallerIdentityResponse":
 *     {"GetCallerIdentityResult":{...},"ResponseMetadata":{"RequestId":...}}}, error
 *     {"Error":{"Code":"Throttling","Message":"Rate exceeded","Type":"Sender"},
 *     "RequestId":"..."} (read by http.c).
 *
 *   200 {"AssumeRoleWithWebIdentityResponse":{"AssumeRoleWithWebIdentityResult":{
 *         "Credentials":{"AccessKeyId":"ASIA...","SecretAccessKey":"...",
 *                        "SessionToken":"...","Expiration":1.7E9}, ...},
 *        "ResponseMetadata":{"RequestId":"..."}}}
 *   4xx {"Error":{"Code":"InvalidIdentityToken","Message":"...","Type":"Sender"},...}
 *
 * Retries: botocore's for STS, i.e. connection errors, timeouts, 5xx, 429 and
 * throttling, plus 400 IDPCommunicationError (data/_retry.json). */
#include "sts.h"

#include "common.h"
#include "http.h"
#include "log.h"
#include "status.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* clientTokenType in botocore's sts model: 4 to 20000 characters. */
#define TOKEN_MIN 4
#define TOKEN_MAX 20000

/* Debian botocore 1.29.27, args.py LEGACY_GLOBAL_STS_REGIONS: the regions that
 * AWS_STS_REGIONAL_ENDPOINTS=legacy sends to the global endpoint. */
static const char *const legacy_global_regions[] = {
	"ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "aws-global",
	"ca-central-1",   "eu-central-1", "eu-north-1",   "eu-west-1",      "eu-west-2",
	"eu-west-3",      "sa-east-1",  "us-east-1",      "us-east-2",      "us-west-1",
	"us-west-2",
};

/* The URL STS is asked at (the model's requestUri "/"): AWS_ENDPOINT_URL_STS, else
 * AWS_ENDPOINT_URL (the SDKs' service-specific and global overrides), else the regional
 * endpoint. AWS_STS_REGIONAL_ENDPOINTS: "regional" (the default of botocore since 1.36
 * and of the other SDKs; Debian's 1.29 still defaults to legacy) or "legacy" (the
 * global https://sts.amazonaws.com for the legacy regions). */
static enum ba_status sts_endpoint(const char *region, char **out)
{
	const char *source = "AWS_ENDPOINT_URL_STS";
	const char *base = env_nonempty(source);
	if (base == NULL && (base = env_nonempty("AWS_ENDPOINT_URL")) != NULL)
		source = "AWS_ENDPOINT_URL";
	char fallback[128];
	if (base == NULL) {
		const char *mode = env_nonempty("AWS_STS_REGIONAL_ENDPOINTS");
		bool legacy = mode != NULL && strcasecmp(mode, "legacy") == 0;
		if (mode != NULL && !legacy && strcasecmp(mode, "regional") != 0) {
			log_error("AWS_STS_REGIONAL_ENDPOINTS=\"%.32s\" is neither regional nor legacy", mode);
			return BA_EX_CONFIG;
		}
		bool global = false;
		for (size_t i = 0; legacy && i < sizeof legacy_global_regions / sizeof *legacy_global_regions; i++)
			global = global || strcmp(region, legacy_global_regions[i]) == 0;
		if (global)
			snprintf(fallback, sizeof fallback, "https://sts.amazonaws.com");
		else
			snprintf(fallback, sizeof fallback, "https://sts.%s.amazonaws.com%s", region,
			         strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
		base = fallback;
	} else if (aws_endpoint_refused(source, base, "the web identity token")) {
		return BA_EX_CONFIG;
	}
	size_t len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	if ((*out = malloc(len + 2)) == NULL)
		return BA_EX_OSERR;
	memcpy(*out, base, len);
	memcpy(*out + len, "/", 2);
	return BA_OK;
}

/* "arn:PARTITION:iam::ACCOUNT:role/NAME", the only kind AssumeRoleWithWebIdentity
 * takes (arnType: 20 to 2048 characters). */
static bool role_arn_valid(const char *arn)
{
	size_t len = strlen(arn);
	const char *p = arn;
	if (len < 20 || len > 2048 || strncmp(p, "arn:", 4) != 0)
		return false;
	p += 4;
	size_t partition = strcspn(p, ":");
	if (partition == 0 || strncmp(p + partition, ":iam::", 6) != 0)
		return false;
	p += partition + 6;
	size_t account = strspn(p, "0123456789");
	return account == 12 && strncmp(p + account, ":role/", 6) == 0 && p[account + 6] != '\0';
}

/* AWS_ROLE_SESSION_NAME (roleSessionNameType: 2 to 64 of [\w+=,.@-]), else
 * "batch-agent-<seconds>", as botocore names its "botocore-session-<seconds>". */
static enum ba_status session_name(char *out, size_t size)
{
	const char *name = env_nonempty("AWS_ROLE_SESSION_NAME");
	if (name == NULL) {
		snprintf(out, size, "batch-agent-%lld", (long long)time(NULL));
		return BA_OK;
	}
	size_t len = strlen(name);
	bool ok = len >= 2 && len <= 64 && len < size;
	for (size_t i = 0; ok && i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		     strchr("_+=,.@-", c) != NULL;
	}
	if (!ok) {
		log_error("AWS_ROLE_SESSION_NAME=\"%.80s\" is not a role session name (2 to 64 letters, "
		          "digits and _+=,.@-)",
		          name);
		return BA_EX_CONFIG;
	}
	snprintf(out, size, "%s", name);
	return BA_OK;
}

/* The token, as botocore's FileWebIdentityTokenLoader reads it (the whole file,
 * unchanged); *len bytes, wiped and freed by the caller. */
static enum ba_status read_token(const char *path, char **token, size_t *len)
{
	enum ba_status rc = aws_read_secret_file("AWS_WEB_IDENTITY_TOKEN_FILE", path, TOKEN_MAX, token, len);
	if (rc != BA_OK)
		return rc;
	if (*len < TOKEN_MIN || strlen(*token) != *len) {
		log_error("AWS_WEB_IDENTITY_TOKEN_FILE (%s): %s", path,
		          *len == 0 ? "empty" : *len < TOKEN_MIN ? "shorter than the 4 bytes STS takes" :
		                                                "holds a NUL byte");
		util_wipe_free(*token, *len);
		*token = NULL;
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

/* Every string of the tree wiped, then the tree freed: it holds copies of the
 * secret key and session token. */
static void wipe_tree(cJSON *node)
{
	for (cJSON *c = node; c != NULL; c = c->next) {
		if (c->child != NULL)
			wipe_tree(c->child);
		if (cJSON_IsString(c) && c->valuestring != NULL)
			util_wipe(c->valuestring, strlen(c->valuestring));
	}
}

/* A non-empty string member of the credentials object, copied into *out. */
static enum ba_status take_string(const cJSON *creds, const char *name, char **out, char *why, size_t why_size)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(creds, name);
	if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
		snprintf(why, why_size, "field AssumeRoleWithWebIdentityResponse.AssumeRoleWithWebIdentityResult."
		         "Credentials.%s: %s", name, v == NULL ? "missing" : cJSON_IsString(v) ? "empty" :
		                                                 "expected a string");
		return BA_EX_PROTOCOL;
	}
	*out = strdup(v->valuestring);
	return *out != NULL ? BA_OK : BA_EX_OSERR;
}

/* The Credentials object, through the two wrappers; NULL with why. */
static const cJSON *credentials_object(const cJSON *root, char *why, size_t why_size)
{
	static const char *const path[] = { "AssumeRoleWithWebIdentityResponse",
		                            "AssumeRoleWithWebIdentityResult", "Credentials" };
	static const char *const shown[] = { "AssumeRoleWithWebIdentityResponse",
		                             "AssumeRoleWithWebIdentityResponse.AssumeRoleWithWebIdentityResult",
		                             ("AssumeRoleWithWebIdentityResponse.AssumeRoleWithWebIdentityResult."
		                              "Credentials") };
	const cJSON *node = root;
	for (size_t i = 0; i < 3; i++) {
		node = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, path[i]) : NULL;
		if (!cJSON_IsObject(node)) {
			snprintf(why, why_size, "field %s: %s", shown[i],
			         node == NULL ? "missing" : "expected an object");
			return NULL;
		}
	}
	return node;
}

enum ba_status sts_parse_credentials(const char *body, size_t len, struct aws_credentials *out,
                                     double *expiration, char *why, size_t why_size)
{
	memset(out, 0, sizeof *out);
	*expiration = 0;
	cJSON *root = util_json_parse(body, len, NULL);
	if (root == NULL) {
		snprintf(why, why_size, "not JSON");
		return BA_EX_PROTOCOL;
	}
	enum ba_status rc = BA_EX_PROTOCOL;
	const cJSON *creds = credentials_object(root, why, why_size);
	if (creds == NULL)
		goto out;
	const cJSON *when = cJSON_GetObjectItemCaseSensitive(creds, "Expiration");
	if (!cJSON_IsNumber(when) || !isfinite(when->valuedouble) || when->valuedouble <= 0) {
		snprintf(why, why_size, "field AssumeRoleWithWebIdentityResponse.AssumeRoleWithWebIdentityResult."
		         "Credentials.Expiration: %s", when == NULL ? "missing" :
		                                       "expected a number of seconds since the epoch");
		goto out;
	}
	*expiration = when->valuedouble;
	if ((rc = take_string(creds, "AccessKeyId", &out->access_key_id, why, why_size)) == BA_OK &&
	    (rc = take_string(creds, "SecretAccessKey", &out->secret_access_key, why, why_size)) == BA_OK)
		rc = take_string(creds, "SessionToken", &out->session_token, why, why_size);
	if (rc == BA_EX_OSERR)
		snprintf(why, why_size, "out of memory");
out:
	if (rc != BA_OK)
		aws_credentials_clear(out);
	wipe_tree(root);
	cJSON_Delete(root);
	return rc;
}

/* What each error code of the operation (botocore's sts model) means for the job. */
static const struct {
	const char *code;
	enum ba_status status;
	const char *hint;
} sts_errors[] = {
	{ "ExpiredTokenException", BA_EX_NOPERM,
	  "the web identity token has expired (Kubernetes renews a projected service account "
	  "token in place: is the file a stale copy?)" },
	{ "InvalidIdentityToken", BA_EX_NOPERM,
	  "STS refused the web identity token (is the cluster's OIDC provider registered in IAM, "
	  "with audience sts.amazonaws.com?)" },
	{ "IDPRejectedClaim", BA_EX_NOPERM, "the identity provider rejected the token's claims" },
	{ "AccessDenied", BA_EX_NOPERM,
	  "the role's trust policy does not let this service account assume it" },
	{ "RegionDisabledException", BA_EX_CONFIG, "STS is not activated in this region for the account" },
	{ "IDPCommunicationError", BA_EX_UNAVAILABLE, "STS could not reach the identity provider" },
};

/* The exit status for a final non-200 answer, logged naming the role and token file. */
static enum ba_status refusal(const struct http_request *req, const struct http_response *resp,
                              const char *role, const char *token_file)
{
	enum ba_status rc = BA_EX_PROTOCOL;
	const char *hint = "unexpected answer";
	bool known = false;
	for (size_t i = 0; !known && i < sizeof sts_errors / sizeof *sts_errors; i++)
		if ((known = strcmp(resp->error_code, sts_errors[i].code) == 0)) {
			rc = sts_errors[i].status;
			hint = sts_errors[i].hint;
		}
	if (!known && (resp->status == 401 || resp->status == 403)) {
		rc = BA_EX_NOPERM;
		hint = "refused";
	} else if (!known && (resp->status == 429 || resp->status >= 500 ||
	                      strstr(resp->error_code, "Throttl") != NULL)) {
		rc = BA_EX_UNAVAILABLE;
		hint = "still failing after retries";
	}
	char excerpt[200] = "";
	const char *detail = resp->error_message[0] ? resp->error_message :
	                     http_excerpt(resp->body ? resp->body : "", resp->len, excerpt, sizeof excerpt);
	char *url = http_redact_url(req->url);
	log_error("%s (%s): HTTP %ld%s%s after %d attempt%s%s%s; role %s, AWS_WEB_IDENTITY_TOKEN_FILE %s: %s",
	          req->what, url ? url : "?", resp->status, resp->error_code[0] ? " " : "", resp->error_code,
	          resp->attempts, resp->attempts == 1 ? "" : "s", detail[0] ? ": " : "", detail, role,
	          token_file, hint);
	free(url);
	return rc;
}

/* The form body (a secret: it holds the token), wiped and freed by the caller. */
static char *request_body(const char *role, const char *session, const char *token, size_t *len)
{
	const char *const pairs[][2] = {
		{ "Action", "AssumeRoleWithWebIdentity" },
		{ "Version", "2011-06-15" },
		{ "RoleArn", role },
		{ "RoleSessionName", session },
		{ "WebIdentityToken", token },
	};
	return http_form_encode(pairs, sizeof pairs / sizeof *pairs, len);
}

/* Short enough that STS and then DescribeJobs (about 41 s at worst) fit in the 60 s
 * the agent gives one batch-agent-aws query: about 16 s at worst. */
static const struct http_policy sts_policy = { .connect_timeout_ms = 2000, .timeout_ms = 5000,
	.max_attempts = 3, .backoff_base_ms = 200, .backoff_cap_ms = 2000, .retry = HTTP_RETRY_STS };

/* One AssumeRoleWithWebIdentity call with the token's form body; the 200 answer's
 * keys into out. */
static enum ba_status assume_role(const char *url, const char *body, size_t body_len, const char *role,
                                  const char *token_file, struct aws_credentials *out)
{
	struct curl_slist *headers = NULL;
	struct http_response resp = { 0 };
	struct http_request req = { .what = "STS AssumeRoleWithWebIdentity", .method = "POST", .url = url,
		                    .body = body, .body_len = body_len, .policy = sts_policy };
	enum ba_status rc = BA_EX_OSERR;
	/* As botocore's query serializer sends it; JSON asked for, see the top. */
	static const char *const wanted[] = { "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
		                              "Accept: application/json" };
	for (size_t i = 0; i < 2; i++) {
		struct curl_slist *grown = curl_slist_append(headers, wanted[i]);
		if (grown == NULL) {
			log_error("out of memory");
			goto out;
		}
		headers = grown;
	}
	req.headers = headers;
	aws_apply_settings(&req);
	rc = http_perform(&req, &resp);
	if (rc != BA_OK) {
		log_error("%s", resp.error);
		goto out;
	}
	if (resp.status != 200) {
		rc = refusal(&req, &resp, role, token_file);
		goto out;
	}
	double expiration;
	char why[256];
	rc = sts_parse_credentials(resp.body, resp.len, out, &expiration, why, sizeof why);
	char *shown = http_redact_url(url);
	if (rc != BA_OK)
		log_error("%s (%s): bad response: %s (HTTP 200, %zu bytes)", req.what, shown ? shown : "?", why,
		          resp.len);
	else
		log_debug("credentials: from %s (%s) for %s, expiring in %.0f s", req.what, shown ? shown : "?",
		          role, expiration - (double)time(NULL));
	free(shown);
out:
	http_response_free(&resp);
	curl_slist_free_all(headers);
	return rc;
}

enum ba_status sts_web_identity_credentials(const char *region, struct aws_credentials *out, bool *found)
{
	const char *token_file = env_nonempty("AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *role = env_nonempty("AWS_ROLE_ARN");
	char session[72], *url = NULL, *token = NULL, *body = NULL;
	size_t token_len = 0, body_len = 0;
	*found = token_file != NULL;
	if (token_file == NULL)
		return BA_OK;
	if (role == NULL) {
		log_error("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not (botocore refuses this too)");
		return BA_EX_CONFIG;
	}
	if (!role_arn_valid(role)) {
		log_error("AWS_ROLE_ARN=\"%.200s\" is not an IAM role ARN "
		          "(arn:PARTITION:iam::ACCOUNT:role/NAME)",
		          role);
		return BA_EX_CONFIG;
	}
	enum ba_status rc = session_name(session, sizeof session);
	if (rc == BA_OK)
		rc = sts_endpoint(region, &url);
	if (rc == BA_OK)
		rc = read_token(token_file, &token, &token_len);
	if (rc == BA_OK && (body = request_body(role, session, token, &body_len)) == NULL) {
		log_error("out of memory");
		rc = BA_EX_OSERR;
	}
	/* The token is in the body now: its own copy goes at once. */
	util_wipe_free(token, token_len);
	if (rc == BA_OK)
		rc = assume_role(url, body, body_len, role, token_file, out);
	if (body != NULL)
		util_wipe_free(body, body_len);
	free(url);
	return rc;
}
