/* The Batch API client shared by the Batch commands, and DescribeJobs for this job's
 * parameters; see batchapi.h and ../shared/aws-reference/batch/BATCH_DESCRIBEJOBS_NOTES.md. */
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
 * else https://batch.REGION.amazonaws.com (.com.cn in China regions); without the
 * trailing '/', malloc'd in *out. */
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
	if (source != NULL && aws_endpoint_refused(source, base, "the credentials"))
		return BA_EX_CONFIG;
	size_t len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	*out = strndup(base, len);
	return *out != NULL ? BA_OK : BA_EX_OSERR;
}

enum ba_status batch_client_open(struct batch_client *c, const char *endpoint_option)
{
	bool ask_task_metadata;
	enum ba_status rc = region_from_environment(c->region, sizeof c->region, &ask_task_metadata);
	if (rc == BA_OK && ask_task_metadata)
		rc = tmds_task_region(c->region, sizeof c->region);
	if (rc == BA_OK)
		rc = endpoint_url(endpoint_option, c->region, &c->endpoint);
	if (rc == BA_OK)
		rc = credentials_resolve(c->region, &c->creds);
	if (rc != BA_OK)
		return rc;
	/* Content-Type is set explicitly so that it is signed; no "Name:" entries and no
	 * X-Amz-Date of our own (libcurl 7.88.1 bugs, LIBCURL_SIGV4_NOTES.md). */
	c->headers = curl_slist_append(NULL, "Content-Type: application/json");
	return c->headers != NULL ? BA_OK : BA_EX_OSERR;
}

enum ba_status batch_call(struct batch_client *c, const char *operation, const char *path,
                          const char *body, struct http_policy policy, cJSON **root,
                          struct batch_failure *failure)
{
	struct batch_failure ignored;
	if (failure == NULL)
		failure = &ignored;
	failure->status = 0;
	failure->message[0] = '\0';
	*root = NULL;
	free(c->url);
	size_t n = strlen(c->endpoint) + strlen(path) + 1;
	c->url = malloc(n);
	if (c->url == NULL) {
		snprintf(failure->message, sizeof failure->message, "out of memory");
		return BA_EX_OSERR;
	}
	snprintf(c->url, n, "%s%s", c->endpoint, path);
	snprintf(c->what, sizeof c->what, "Batch %s", operation);
	c->req = (struct http_request){
		.what = c->what,
		.method = "POST",
		.url = c->url,
		.body = body,
		.body_len = strlen(body),
		.headers = c->headers,
		.sign_key_id = c->creds.access_key_id,
		.sign_secret = c->creds.secret_access_key,
		.sign_token = c->creds.session_token,
		.sign_region = c->region,
		.sign_service = "batch",
		.policy = policy,
	};
	aws_apply_settings(&c->req);
	enum ba_status rc = aws_request_object_detailed(&c->req, root, &failure->status, failure->message,
	                                                sizeof failure->message);
	/* The request is done: no secret stays in it for the caller's messages. */
	c->req.sign_key_id = c->req.sign_secret = c->req.sign_token = NULL;
	return rc;
}

void batch_client_close(struct batch_client *c)
{
	aws_credentials_clear(&c->creds);
	curl_slist_free_all(c->headers);
	free(c->endpoint);
	free(c->url);
	memset(c, 0, sizeof *c);
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

/* Copies the optional string fields jobName, jobQueue, jobDefinition of the job (null
 * when absent: the manager then has no default of its own for its workers); false
 * (logged, *rc set) on a wrong type or out of memory. */
static bool job_identity(const struct http_request *req, const cJSON *job, int i, cJSON *out,
                         enum ba_status *rc)
{
	static const char *const names[] = { "jobName", "jobQueue", "jobDefinition" };
	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
		char path[96];
		const char *v;
		snprintf(path, sizeof path, "jobs[%d].%s", i, names[k]);
		if (!aws_field_string(req, job, names[k], path, false, &v))
			return false;
		if ((v ? cJSON_AddStringToObject(out, names[k], v) : cJSON_AddNullToObject(out, names[k])) == NULL) {
			*rc = BA_EX_OSERR;
			return false;
		}
	}
	return true;
}

/* {"jobId":..., "parameters":{...}, "jobName", "jobQueue", "jobDefinition"} from the
 * DescribeJobs answer; NULL (logged) when the job is not there or a field has the
 * wrong type. */
cJSON *batchapi_job_parameters(const struct http_request *req, const cJSON *root, const char *job_id,
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
		if (!job_identity(req, job, i, out, rc)) {
			cJSON_Delete(out);
			return NULL;
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
	struct batch_client client = { 0 };
	char *body = NULL;
	cJSON *root = NULL;
	enum ba_status rc = batch_client_open(&client, endpoint_option);
	if (rc != BA_OK)
		goto out;
	rc = BA_EX_OSERR;
	body = request_body(job_id);
	if (body == NULL)
		goto out;
	log_debug("DescribeJobs %s in %s", job_id, client.region);
	rc = batch_call(&client, "DescribeJobs", "/v1/describejobs", body, describe_jobs_policy, &root, NULL);
	/* Only one call: the credentials go now rather than after the output. */
	aws_credentials_clear(&client.creds);
	if (rc != BA_OK)
		goto out;
	cJSON *doc = batchapi_job_parameters(&client.req, root, job_id, &rc);
	if (doc != NULL)
		rc = aws_print_json(doc);
out:
	batch_client_close(&client);
	cJSON_Delete(root);
	cJSON_free(body);
	return rc;
}
