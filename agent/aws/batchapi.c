/* AWS Batch DescribeJobs for this job's parameters; see batchapi.h and
 * ../shared/aws-reference/batch/BATCH_DESCRIBEJOBS_NOTES.md. */
#include "batchapi.h"

#include "common.h"
#include "credentials.h"
#include "region.h"
#include "tmds.h"
#include "log.h"
#include "status.h"
#include "util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --endpoint-url, BATCH_AGENT_AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_BATCH, AWS_ENDPOINT_URL,
 * else https://batch.REGION.amazonaws.com (.com.cn in China regions). */
static enum ba_status endpoint_url(const char *option, const char *region, char **out)
{
	const char *source = "--endpoint-url";
	const char *base = option;
	static const char *const vars[] = { "BATCH_AGENT_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BATCH",
		                            "AWS_ENDPOINT_URL" };
	for (size_t i = 0; base == NULL && i < 3; i++)
		if ((base = env_nonempty(vars[i])) != NULL)
			source = vars[i];
	char fallback[128];
	if (base == NULL) {
		snprintf(fallback, sizeof fallback, "https://batch.%s.amazonaws.com%s", region,
		         strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
		base = fallback;
		source = NULL;
	}
	if (source != NULL && strncasecmp(base, "https://", 8) != 0 &&
	    strncasecmp(base, "http://", 7) != 0) {
		char *shown = http_redact_url(base);
		log_error("%s (%s) is not an http or https URL", source, shown ? shown : base);
		free(shown);
		return BA_EX_CONFIG;
	}
	/* The request carries a signature and X-Amz-Security-Token: refused before any
	 * request unless it is encrypted or stays on this host (the tests' fakes). */
	if (!util_url_safe_for_secrets(base)) {
		char *shown = http_redact_url(base);
		log_error("%s (%s) would send the credentials in clear text: use https://, or http:// "
			  "only to a loopback address",
			  source, shown ? shown : base);
		free(shown);
		return BA_EX_CONFIG;
	}
	size_t len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	size_t n = len + sizeof "/v1/describejobs";
	*out = malloc(n);
	if (*out == NULL)
		return BA_EX_OSERR;
	snprintf(*out, n, "%.*s/v1/describejobs", (int)len, base);
	return BA_OK;
}

static char *request_body(const char *job_id)
{
	cJSON *doc = cJSON_CreateObject();
	cJSON *jobs = doc ? cJSON_AddArrayToObject(doc, "jobs") : NULL;
	cJSON *id = cJSON_CreateString(job_id);
	char *text = NULL;
	if (jobs != NULL && id != NULL && cJSON_AddItemToArray(jobs, id)) {
		id = NULL;
		text = cJSON_PrintUnformatted(doc);
	}
	cJSON_Delete(id);
	cJSON_Delete(doc);
	return text;
}

/* {"jobId":..., "parameters":{...}} from the DescribeJobs answer; NULL (logged) when the
 * job is not there or a field has the wrong type. */
static cJSON *job_parameters(const struct http_request *req, const cJSON *root, const char *job_id,
                             enum ba_status *rc)
{
	const cJSON *jobs, *job;
	*rc = BA_EX_PROTOCOL;
	if (!aws_field_kind(req, root, "jobs", "jobs", true, cJSON_Array, &jobs))
		return NULL;
	int i = 0;
	cJSON_ArrayForEach(job, jobs) {
		char path[96];
		snprintf(path, sizeof path, "jobs[%d]", i);
		if (!cJSON_IsObject(job)) {
			aws_field_error(req, path, "expected an object");
			return NULL;
		}
		const char *id;
		snprintf(path, sizeof path, "jobs[%d].jobId", i);
		if (!aws_field_string(req, job, "jobId", path, true, &id))
			return NULL;
		if (strcmp(id, job_id) != 0) {
			i++;
			continue;
		}
		const cJSON *params, *p;
		snprintf(path, sizeof path, "jobs[%d].parameters", i);
		if (!aws_field_kind(req, job, "parameters", path, false, cJSON_Object, &params))
			return NULL;
		cJSON *out = cJSON_CreateObject();
		cJSON *map = NULL;
		if (out == NULL || !cJSON_AddStringToObject(out, "jobId", id) ||
		    (map = cJSON_AddObjectToObject(out, "parameters")) == NULL) {
			cJSON_Delete(out);
			*rc = BA_EX_OSERR;
			return NULL;
		}
		cJSON_ArrayForEach(p, params) {
			char ppath[512];
			snprintf(ppath, sizeof ppath, "jobs[%d].parameters.%s", i, p->string);
			if (!cJSON_IsString(p)) {
				aws_field_error(req, ppath, "expected a string");
				cJSON_Delete(out);
				return NULL;
			}
			if (!cJSON_AddStringToObject(map, p->string, p->valuestring)) {
				cJSON_Delete(out);
				*rc = BA_EX_OSERR;
				return NULL;
			}
		}
		*rc = BA_OK;
		return out;
	}
	char *url = http_redact_url(req->url);
	log_error("%s (%s): job %s not found in the response (%d job%s listed)", req->what,
	          url ? url : "?", job_id, i, i == 1 ? "" : "s");
	free(url);
	return NULL;
}

/* DescribeJobs: the AWS SDK's retries, a generous timeout for a regional endpoint. */
static const struct http_policy describe_jobs_policy = { .connect_timeout_ms = 3000, .timeout_ms = 10000,
	.max_attempts = 4, .backoff_base_ms = 200, .backoff_cap_ms = 5000, .retry = HTTP_RETRY_AWS };

enum ba_status batch_job_parameters_command(const char *endpoint_option)
{
	const char *job_id = env_nonempty("AWS_BATCH_JOB_ID");
	if (job_id == NULL) {
		log_error("AWS_BATCH_JOB_ID is not set: not running as an AWS Batch job");
		return BA_EX_CONFIG;
	}
	char region[72];
	bool ask_task_metadata;
	enum ba_status rc = region_from_environment(region, sizeof region, &ask_task_metadata);
	if (rc == BA_OK && ask_task_metadata)
		rc = tmds_task_region(region, sizeof region);
	if (rc != BA_OK)
		return rc;
	char *url = NULL, *body = NULL;
	struct curl_slist *headers = NULL;
	struct aws_credentials creds = { 0 };
	cJSON *root = NULL;
	rc = endpoint_url(endpoint_option, region, &url);
	if (rc != BA_OK)
		goto out;
	rc = credentials_resolve(&creds);
	if (rc != BA_OK)
		goto out;
	rc = BA_EX_OSERR;
	body = request_body(job_id);
	/* Content-Type is set explicitly so that it is signed; no "Name:" entries and no
	 * X-Amz-Date of our own (libcurl 7.88.1 bugs, LIBCURL_SIGV4_NOTES.md). */
	headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (body == NULL || headers == NULL)
		goto out;
	struct http_request req = {
		.what = "Batch DescribeJobs",
		.method = "POST",
		.url = url,
		.body = body,
		.body_len = strlen(body),
		.headers = headers,
		.sign_key_id = creds.access_key_id,
		.sign_secret = creds.secret_access_key,
		.sign_token = creds.session_token,
		.sign_region = region,
		.sign_service = "batch",
		.policy = describe_jobs_policy,
	};
	aws_apply_settings(&req);
	log_debug("DescribeJobs %s in %s", job_id, region);
	rc = aws_request_object(&req, &root);
	aws_credentials_clear(&creds);
	if (rc != BA_OK)
		goto out;
	cJSON *doc = job_parameters(&req, root, job_id, &rc);
	if (doc != NULL)
		rc = aws_print_json(doc);
out:
	aws_credentials_clear(&creds);
	cJSON_Delete(root);
	curl_slist_free_all(headers);
	cJSON_free(body);
	free(url);
	return rc;
}
