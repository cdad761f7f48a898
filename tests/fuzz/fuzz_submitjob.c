/* The Batch SubmitJob answer (batchjobs.c, submit-job): the body parsed as a 200
 * answer, then batchjobs_submit_result.
 *
 * Input: the response body.
 *
 * Checked beyond "no crash": an accepted answer gives exactly its jobId and jobName
 * (strings, required) and its jobArn (a string, or null when absent); anything else
 * is the documented 76. */
#include <stdbool.h>
#include <string.h>

#include "aws.h"
#include "batchjobs.h"
#include "common.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_submitjob", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request req = { .what = "Batch SubmitJob", .method = "POST",
				    .url = "https://batch.us-east-1.amazonaws.com/v1/submitjob" };
	cJSON *root = fuzz_parse_answer(&req, data, size);
	if (root != NULL) {
		enum ba_status rc;
		cJSON *out = batchjobs_submit_result(&req, root, &rc);
		FUZZ_CHECK((out != NULL) == (rc == BA_OK));
		FUZZ_CHECK(rc == BA_OK || rc == BA_EX_PROTOCOL);
		if (out != NULL) {
			static const char *const names[] = { "jobId", "jobName" };
			for (size_t i = 0; i < 2; i++) {
				const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, names[i]);
				FUZZ_CHECK(cJSON_IsString(a) &&
					   cJSON_Compare(a, cJSON_GetObjectItemCaseSensitive(out, names[i]), true));
			}
			const cJSON *arn = cJSON_GetObjectItemCaseSensitive(root, "jobArn");
			const cJSON *oarn = cJSON_GetObjectItemCaseSensitive(out, "jobArn");
			FUZZ_CHECK(arn == NULL || cJSON_IsNull(arn) ? cJSON_IsNull(oarn) : cJSON_Compare(arn, oarn, true));
			FUZZ_CHECK(cJSON_GetArraySize(out) == 3);
		}
		cJSON_Delete(out);
		cJSON_Delete(root);
	}
	return 0;
}
