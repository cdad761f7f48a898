/* submit-job and stop-jobs; see batchjobs.h. The calls, as in botocore's model of
 * batch 2016-08-10 (rest-json, SigV4 service "batch"):
 *
 *   POST /v1/submitjob     {"jobName":N,"jobQueue":Q,"jobDefinition":D,
 *                           "parameters":{"K":"V",...},        (always, maybe {})
 *                           "arrayProperties":{"size":S}}      (only when S >= 2)
 *                     200  {"jobArn":A,"jobName":N,"jobId":I}  (jobName, jobId required)
 *
 *   POST /v1/terminatejob  {"jobId":I,"reason":R}              (both required)
 *                     200  {}
 *
 * Errors: 400 ClientException, 500 ServerException, {"message":...}; throttling as
 * everywhere in AWS. What is checked here before a request is what the model and its
 * documentation constrain (jobName's characters and length, the array size 2..10000),
 * so that a bad command line is 64, not a 400 after a round trip.
 *
 * Retries. TerminateJob is idempotent: HTTP_RETRY_AWS as it stands. SubmitJob is not:
 * an attempt that reached Batch, created the job, and whose answer was lost (a timeout,
 * a reset connection, a 5xx after the job was stored) is retried by HTTP_RETRY_AWS and
 * creates a second job. We keep HTTP_RETRY_AWS all the same, as the AWS SDKs do for
 * SubmitJob (botocore's standard and legacy modes retry connection errors, read
 * timeouts, 5xx and throttling for every operation): connection failures before a byte
 * was sent and throttling answers (refused before any work) are safe, and a failed
 * submission costs the manager its whole pool. The window is kept small instead: a
 * per-attempt timeout (15 s) well above SubmitJob's usual sub-second answer, so that a
 * slow Batch is waited for rather than asked twice, and 3 attempts, not 4. */
#include "batchjobs.h"

#include "batchapi.h"
#include "cli.h"
#include "common.h"
#include "http.h"
#include "log.h"
#include "status.h"
#include "util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct http_policy submit_job_policy = { .connect_timeout_ms = 3000, .timeout_ms = 15000,
	.max_attempts = 3, .backoff_base_ms = 200, .backoff_cap_ms = 5000, .retry = HTTP_RETRY_AWS };

/* stop-jobs runs while the manager ends, maybe on Batch's SIGTERM with SIGKILL 30 s
 * away: each id costs at most about 3 x 5 s + 2 x 1 s. */
static const struct http_policy terminate_job_policy = { .connect_timeout_ms = 2000, .timeout_ms = 5000,
	.max_attempts = 3, .backoff_base_ms = 200, .backoff_cap_ms = 1000, .retry = HTTP_RETRY_AWS };

/* RFC 3629 UTF-8 (no overlongs, no surrogates): a string that is not would make the
 * request body invalid JSON, a 400 from Batch. */
static bool valid_utf8(const char *text)
{
	const unsigned char *p = (const unsigned char *)text;
	while (*p != '\0') {
		unsigned char c = *p++;
		int more;
		unsigned int cp;
		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			more = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3, cp = c & 0x07;
		else
			return false;
		for (int i = 0; i < more; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (*p & 0x3f);
		}
		if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
	}
	return true;
}

static bool ascii_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* SubmitJob's jobName, per the model's documentation: up to 128 letters, digits,
 * hyphens and underscores, the first one alphanumeric. */
static bool valid_job_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 128 || !ascii_alnum(name[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!ascii_alnum(name[i]) && name[i] != '-' && name[i] != '_')
			return false;
	return true;
}

/* A required string option: present, not empty, UTF-8. */
static enum ba_status check_text(const char *flag, const char *value)
{
	char what[64];
	if (value == NULL) {
		snprintf(what, sizeof what, "missing %s", flag);
		return cli_usage_error(what, NULL);
	}
	if (value[0] == '\0') {
		snprintf(what, sizeof what, "empty %s", flag);
		return cli_usage_error(what, NULL);
	}
	if (!valid_utf8(value)) {
		/* Not echoed: the terminal or the caller's log would get the bad bytes. */
		snprintf(what, sizeof what, "%s is not UTF-8", flag);
		return cli_usage_error(what, NULL);
	}
	return BA_OK;
}

/* Every --parameter is NAME=VALUE with a non-empty NAME given once. */
static enum ba_status check_parameters(const struct batch_submit *s)
{
	if (s->parameter_count > BATCH_MAX_PARAMETERS)
		return cli_usage_error("too many --parameter options (at most 64)", NULL);
	for (size_t i = 0; i < s->parameter_count; i++) {
		const char *p = s->parameters[i];
		const char *eq = strchr(p, '=');
		if (eq == NULL)
			return cli_usage_error("--parameter is not NAME=VALUE:", p);
		if (eq == p)
			return cli_usage_error("--parameter has an empty NAME:", p);
		if (!valid_utf8(p))
			return cli_usage_error("a --parameter is not UTF-8", NULL);
		for (size_t j = 0; j < i; j++)
			if (strncmp(s->parameters[j], p, (size_t)(eq - p) + 1) == 0)
				return cli_usage_error("--parameter NAME given twice:", p);
	}
	return BA_OK;
}

static enum ba_status check_submit(const struct batch_submit *s, long *array_size)
{
	enum ba_status rc = check_text("--job-name", s->job_name);
	if (rc == BA_OK && !valid_job_name(s->job_name))
		return cli_usage_error("bad --job-name (1-128 letters, digits, '-' or '_', the first a "
		                       "letter or digit):", s->job_name);
	if (rc == BA_OK)
		rc = check_text("--job-queue", s->job_queue);
	if (rc == BA_OK)
		rc = check_text("--job-definition", s->job_definition);
	if (rc != BA_OK)
		return rc;
	*array_size = 1;
	if (s->array_size != NULL && !util_parse_long(s->array_size, 1, 10000, array_size))
		return cli_usage_error("bad --array-size (1-10000)", s->array_size);
	if (s->endpoint != NULL && s->endpoint[0] == '\0')
		return cli_usage_error("empty --endpoint-url", NULL);
	return check_parameters(s);
}

static char *submit_body(const struct batch_submit *s, long array_size)
{
	cJSON *doc = cJSON_CreateObject();
	cJSON *params = NULL, *array = NULL;
	char *text = NULL;
	if (doc == NULL || !cJSON_AddStringToObject(doc, "jobName", s->job_name) ||
	    !cJSON_AddStringToObject(doc, "jobQueue", s->job_queue) ||
	    !cJSON_AddStringToObject(doc, "jobDefinition", s->job_definition) ||
	    (params = cJSON_AddObjectToObject(doc, "parameters")) == NULL)
		goto out;
	for (size_t i = 0; i < s->parameter_count; i++) {
		const char *p = s->parameters[i];
		const char *eq = strchr(p, '=');
		char *name = strndup(p, (size_t)(eq - p));
		bool added = name != NULL && cJSON_AddStringToObject(params, name, eq + 1) != NULL;
		free(name);
		if (!added)
			goto out;
	}
	/* A size of 1 is a plain job: the model allows arrays of 2..10000 only. */
	if (array_size >= 2 && ((array = cJSON_AddObjectToObject(doc, "arrayProperties")) == NULL ||
	                        !cJSON_AddNumberToObject(array, "size", (double)array_size)))
		goto out;
	text = cJSON_PrintUnformatted(doc);
out:
	cJSON_Delete(doc);
	return text;
}

/* {"jobId","jobName","jobArn"|null} from the SubmitJob answer; NULL (logged, *rc set)
 * when a required field is missing or of the wrong type. */
cJSON *batchjobs_submit_result(const struct http_request *req, const cJSON *root, enum ba_status *rc)
{
	const char *id, *name, *arn;
	*rc = BA_EX_PROTOCOL;
	if (!aws_field_string(req, root, "jobId", "jobId", true, &id) ||
	    !aws_field_string(req, root, "jobName", "jobName", true, &name) ||
	    !aws_field_string(req, root, "jobArn", "jobArn", false, &arn))
		return NULL;
	*rc = BA_EX_OSERR;
	cJSON *out = cJSON_CreateObject();
	if (out == NULL || !cJSON_AddStringToObject(out, "jobId", id) ||
	    !cJSON_AddStringToObject(out, "jobName", name) ||
	    !(arn ? cJSON_AddStringToObject(out, "jobArn", arn) : cJSON_AddNullToObject(out, "jobArn"))) {
		cJSON_Delete(out);
		log_error("cannot build the JSON output: out of memory");
		return NULL;
	}
	*rc = BA_OK;
	return out;
}

enum ba_status batch_submit_job_command(const struct batch_submit *s)
{
	long array_size;
	enum ba_status rc = check_submit(s, &array_size);
	if (rc != BA_OK)
		return rc;
	struct batch_client client = { 0 };
	char *body = NULL;
	cJSON *root = NULL;
	rc = http_global_init();
	if (rc == BA_OK)
		rc = batch_client_open(&client, s->endpoint);
	if (rc != BA_OK)
		goto out;
	rc = BA_EX_OSERR;
	if ((body = submit_body(s, array_size)) == NULL) {
		log_error("cannot build the SubmitJob request: out of memory");
		goto out;
	}
	log_debug("SubmitJob %s to %s (%s, array size %ld) in %s", s->job_name, s->job_queue,
	          s->job_definition, array_size, client.region);
	rc = batch_call(&client, "SubmitJob", "/v1/submitjob", body, submit_job_policy, &root, NULL);
	aws_credentials_clear(&client.creds);
	if (rc != BA_OK)
		goto out;
	cJSON *doc = batchjobs_submit_result(&client.req, root, &rc);
	if (doc != NULL)
		rc = aws_print_json(doc);
out:
	batch_client_close(&client);
	cJSON_Delete(root);
	cJSON_free(body);
	return rc;
}

/* ---- stop-jobs ------------------------------------------------------------------ */

/* Which failure decides the exit status: one that would hit every id (no memory,
 * configuration, permission, an unreachable endpoint) before one about a single id (a
 * 400 for an unknown job, a bad answer). */
static int severity(enum ba_status rc)
{
	switch (rc) {
	case BA_OK:
		return 0;
	case BA_EX_PROTOCOL:
		return 1;
	case BA_EX_UNAVAILABLE:
		return 2;
	case BA_EX_NOPERM:
		return 3;
	case BA_EX_CONFIG:
		return 4;
	default:
		return 5;
	}
}

static enum ba_status check_stop(const char *reason, char *const *ids, size_t count, const char *endpoint)
{
	for (size_t i = 0; i < count; i++) {
		/* Options go first: a "-x" after the ids is a misplaced option, not an id. */
		if (ids[i][0] == '\0' || ids[i][0] == '-')
			return cli_usage_error("bad JOBID (options go before the job ids)", ids[i]);
		if (!valid_utf8(ids[i]))
			return cli_usage_error("a JOBID is not UTF-8", NULL);
	}
	enum ba_status rc = check_text("--reason", reason);
	if (rc != BA_OK)
		return rc;
	if (strlen(reason) > BATCH_MAX_REASON)
		return cli_usage_error("--reason is longer than 1024 bytes", NULL);
	if (endpoint != NULL && endpoint[0] == '\0')
		return cli_usage_error("empty --endpoint-url", NULL);
	if (count == 0)
		return cli_usage_error("missing JOBID", NULL);
	if (count > BATCH_MAX_STOP_IDS)
		return cli_usage_error("too many job ids (at most 16)", NULL);
	return BA_OK;
}

static char *terminate_body(const char *id, const char *reason)
{
	cJSON *doc = cJSON_CreateObject();
	char *text = NULL;
	if (doc != NULL && cJSON_AddStringToObject(doc, "jobId", id) &&
	    cJSON_AddStringToObject(doc, "reason", reason))
		text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	return text;
}

/* {"jobId","status":N|null,"message"} into failed. */
static bool add_failure(cJSON *failed, const char *id, const struct batch_failure *f)
{
	cJSON *item = cJSON_CreateObject();
	if (item == NULL || !cJSON_AddItemToArray(failed, item)) {
		cJSON_Delete(item);
		return false;
	}
	return cJSON_AddStringToObject(item, "jobId", id) &&
	       (f->status > 0 ? cJSON_AddNumberToObject(item, "status", (double)f->status) :
	                        cJSON_AddNullToObject(item, "status")) &&
	       cJSON_AddStringToObject(item, "message", f->message[0] ? f->message : "failed");
}

/* One TerminateJob; the outcome goes into stopped or failed. BA_OK or the call's
 * failure; BA_EX_OSERR when the output itself cannot be built. */
static enum ba_status terminate_one(struct batch_client *client, const char *id, const char *reason,
                                    cJSON *stopped, cJSON *failed)
{
	struct batch_failure f = { 0 };
	cJSON *root = NULL;
	enum ba_status rc;
	char *body = terminate_body(id, reason);
	if (body == NULL) {
		rc = BA_EX_OSERR;
		snprintf(f.message, sizeof f.message, "out of memory");
	} else {
		log_debug("TerminateJob %s", id);
		rc = batch_call(client, "TerminateJob", "/v1/terminatejob", body, terminate_job_policy, &root, &f);
	}
	cJSON_Delete(root);
	cJSON_free(body);
	bool recorded;
	if (rc == BA_OK) {
		cJSON *item = cJSON_CreateString(id);
		recorded = item != NULL && cJSON_AddItemToArray(stopped, item);
		if (!recorded)
			cJSON_Delete(item);
	} else {
		recorded = add_failure(failed, id, &f);
	}
	if (!recorded)
		log_error("cannot build the JSON output: out of memory");
	return recorded ? rc : BA_EX_OSERR;
}

enum ba_status batch_stop_jobs_command(const char *reason, char *const *ids, size_t count,
                                       const char *endpoint)
{
	enum ba_status rc = check_stop(reason, ids, count, endpoint);
	if (rc != BA_OK)
		return rc;
	struct batch_client client = { 0 };
	cJSON *doc = NULL, *stopped, *failed;
	rc = http_global_init();
	if (rc == BA_OK)
		rc = batch_client_open(&client, endpoint);
	if (rc != BA_OK)
		goto out;
	doc = cJSON_CreateObject();
	stopped = doc ? cJSON_AddArrayToObject(doc, "stopped") : NULL;
	failed = doc ? cJSON_AddArrayToObject(doc, "failed") : NULL;
	if (stopped == NULL || failed == NULL) {
		rc = BA_EX_OSERR;
		log_error("cannot build the JSON output: out of memory");
		goto out;
	}
	/* Every id is tried, in the order given (the caller's most important first), even
	 * after a failure: one unknown id must not leave the others running. */
	enum ba_status worst = BA_OK;
	for (size_t i = 0; i < count; i++) {
		enum ba_status one = terminate_one(&client, ids[i], reason, stopped, failed);
		if (severity(one) > severity(worst))
			worst = one;
	}
	aws_credentials_clear(&client.creds);
	if (worst != BA_OK)
		log_error("stop-jobs: %d of %zu job%s not stopped", cJSON_GetArraySize(failed), count,
		          count == 1 ? "" : "s");
	rc = aws_print_json(doc);
	doc = NULL;
	if (rc == BA_OK)
		rc = worst;
out:
	cJSON_Delete(doc);
	batch_client_close(&client);
	return rc;
}
