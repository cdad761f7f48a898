/* AWS Batch API calls, signed SigV4 by libcurl: the client shared by every Batch
 * command (region, endpoint, credentials, one POST per call), and DescribeJobs of
 * AWS_BATCH_JOB_ID (job-parameters). */
#ifndef BATCH_AGENT_AWS_BATCHAPI_H
#define BATCH_AGENT_AWS_BATCHAPI_H

#include "common.h"
#include "credentials.h"
#include "http.h"
#include "status.h"

#include <cjson/cJSON.h>

/* What a Batch command needs for its calls. Zero it, then batch_client_open; always
 * batch_client_close, which wipes the credentials. */
struct batch_client {
	char region[72];
	char *endpoint; /* base URL, no trailing '/' */
	struct aws_credentials creds;
	struct curl_slist *headers;
	/* The last call's, kept until the next one so that the caller can name the
	 * endpoint in its messages (aws_field_*). */
	char what[64];
	char *url;
	struct http_request req;
};

/* Region (AWS_REGION, AWS_DEFAULT_REGION, the task ARN), endpoint (endpoint_option,
 * i.e. --endpoint-url, or NULL: then BATCH_AGENT_AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_BATCH,
 * AWS_ENDPOINT_URL, else https://batch.REGION.amazonaws.com; http:// only to loopback)
 * and credentials: BA_OK, or the logged status (78 configuration, 69/76/77 from the
 * task metadata or credentials endpoints, 71). */
enum ba_status batch_client_open(struct batch_client *c, const char *endpoint_option);

/* Failure details of one call, for a command that reports them per item. */
struct batch_failure {
	long status;       /* HTTP status of the final answer, 0 when none arrived */
	char message[640]; /* what was logged */
};

/* POST ENDPOINT/v1/<path> with the JSON body, as "Batch <operation>", under policy
 * (aws_settings applied): BA_OK with the 200 answer's JSON object in *root (caller
 * deletes), or the logged status (69, 76, 77, ...) with *failure filled when not NULL. */
enum ba_status batch_call(struct batch_client *c, const char *operation, const char *path,
                          const char *body, struct http_policy policy, cJSON **root,
                          struct batch_failure *failure);

/* Wipes the credentials and frees everything. */
void batch_client_close(struct batch_client *c);

/* job-parameters: prints {"jobId":...,"parameters":{...},"jobName":...,"jobQueue":...,
 * "jobDefinition":...} on stdout; returns the exit status. endpoint_option is
 * --endpoint-url or NULL. */
enum ba_status batch_job_parameters_command(const char *endpoint_option);

/* job-parameters' output for job_id from the DescribeJobs answer root: a new object
 * (caller deletes), or NULL (logged) with *rc set. Declared here for tests/fuzz. */
cJSON *batchapi_job_parameters(const struct http_request *req, const cJSON *root, const char *job_id,
                               enum ba_status *rc);

#endif
