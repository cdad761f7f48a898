/* The Batch DescribeJobs answer (batchapi.c, job-parameters): the body parsed as a
 * 200 answer, then batchapi_job_parameters for a job id.
 *
 * Input: the response body. The job asked for is the first listed job's jobId when
 * there is one (so that the fuzzer reaches the job's fields), else a fixed id.
 *
 * Checked beyond "no crash": an accepted answer gives the asked job's id, and its
 * parameters exactly (the same names, the same string values, nothing else);
 * jobName, jobQueue and jobDefinition copied or null. */
#include <stdbool.h>
#include <string.h>

#include "aws.h"
#include "batchapi.h"
#include "common.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_describejobs", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

/* The first job whose jobId is id (what the parser must have picked). */
static const cJSON *find_job(const cJSON *root, const char *id)
{
	const cJSON *job;
	cJSON_ArrayForEach(job, cJSON_GetObjectItemCaseSensitive(root, "jobs")) {
		const cJSON *jid = cJSON_GetObjectItemCaseSensitive(job, "jobId");
		if (cJSON_IsString(jid) && strcmp(jid->valuestring, id) == 0)
			return job;
	}
	return NULL;
}

static void check_output(const cJSON *root, const char *id, const cJSON *out)
{
	const cJSON *job = find_job(root, id);
	FUZZ_CHECK(job != NULL);
	const cJSON *oid = cJSON_GetObjectItemCaseSensitive(out, "jobId");
	FUZZ_CHECK(cJSON_IsString(oid) && strcmp(oid->valuestring, id) == 0);
	const cJSON *in_params = cJSON_GetObjectItemCaseSensitive(job, "parameters");
	const cJSON *out_params = cJSON_GetObjectItemCaseSensitive(out, "parameters");
	FUZZ_CHECK(cJSON_IsObject(out_params));
	FUZZ_CHECK(cJSON_GetArraySize(out_params) == (in_params ? cJSON_GetArraySize(in_params) : 0));
	const cJSON *p, *q = out_params->child;
	cJSON_ArrayForEach(p, in_params) {
		FUZZ_CHECK(q != NULL && cJSON_IsString(p) && cJSON_IsString(q) && strcmp(p->string, q->string) == 0 &&
			   strcmp(p->valuestring, q->valuestring) == 0);
		q = q->next;
	}
	static const char *const names[] = { "jobName", "jobQueue", "jobDefinition" };
	for (size_t i = 0; i < 3; i++) {
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(job, names[i]);
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(out, names[i]);
		FUZZ_CHECK(a == NULL ? cJSON_IsNull(b) : cJSON_Compare(a, b, true));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request req = { .what = "Batch DescribeJobs", .method = "POST",
				    .url = "https://batch.us-east-1.amazonaws.com/v1/describejobs" };
	cJSON *root = fuzz_parse_answer(&req, data, size);
	if (root != NULL) {
		const char *id = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f";
		const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(root, "jobs");
		const cJSON *first = cJSON_IsArray(jobs) ? cJSON_GetObjectItemCaseSensitive(jobs->child, "jobId") : NULL;
		if (cJSON_IsString(first))
			id = first->valuestring;
		enum ba_status rc;
		cJSON *out = batchapi_job_parameters(&req, root, id, &rc);
		FUZZ_CHECK((out != NULL) == (rc == BA_OK));
		FUZZ_CHECK(rc == BA_OK || rc == BA_EX_PROTOCOL);
		if (out != NULL)
			check_output(root, id, out);
		cJSON_Delete(out);
		cJSON_Delete(root);
	}
	return 0;
}
