/* The container credentials endpoint's answer (credentials.c): the body parsed as
 * batch-agent-aws parses a 200 answer (aws_parse_json), then credentials_take.
 *
 * Input: the response body.
 *
 * Checked beyond "no crash": accepted credentials are exactly the answer's
 * AccessKeyId, SecretAccessKey and Token strings, the first two non-empty; a refusal
 * is the documented 76 (bad answer) and leaves nothing allocated. */
#include <stdbool.h>
#include <string.h>

#include "aws.h"
#include "common.h"
#include "credentials.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_credentials", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

static bool same_field(const cJSON *root, const char *name, const char *value)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
	return cJSON_IsString(v) && value != NULL && strcmp(v->valuestring, value) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request req = { .what = "container credentials", .method = "GET",
				    .url = "http://169.254.170.2/v2/credentials/fuzz" };
	cJSON *root = fuzz_parse_answer(&req, data, size);
	if (root != NULL) {
		struct aws_credentials creds = { 0 };
		enum ba_status rc = credentials_take(&req, root, &creds);
		FUZZ_CHECK(rc == BA_OK || rc == BA_EX_PROTOCOL);
		if (rc == BA_OK) {
			FUZZ_CHECK(same_field(root, "AccessKeyId", creds.access_key_id) && creds.access_key_id[0]);
			FUZZ_CHECK(same_field(root, "SecretAccessKey", creds.secret_access_key) &&
				   creds.secret_access_key[0]);
			FUZZ_CHECK(same_field(root, "Token", creds.session_token));
		} else {
			FUZZ_CHECK(creds.access_key_id == NULL && creds.secret_access_key == NULL &&
				   creds.session_token == NULL);
		}
		aws_credentials_clear(&creds);
		cJSON_Delete(root);
	}
	return 0;
}
