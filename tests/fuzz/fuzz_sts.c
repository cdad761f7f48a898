/* STS AssumeRoleWithWebIdentity's JSON answer (sts.c), as sts_parse_credentials reads
 * a 200 answer's body.
 *
 * Input: the response body.
 *
 * Checked beyond "no crash": a body that is accepted is a JSON object whose
 * AssumeRoleWithWebIdentityResponse.AssumeRoleWithWebIdentityResult.Credentials holds
 * exactly the AccessKeyId, SecretAccessKey and SessionToken returned, none empty, and
 * a finite Expiration equal to the one returned; a refusal is the documented 76 (or 71)
 * with a reason, and leaves nothing allocated. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "credentials.h"
#include "fuzz.h"
#include "log.h"
#include "sts.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_sts", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

static bool same_string(const cJSON *obj, const char *name, const char *value)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
	return cJSON_IsString(v) && value != NULL && value[0] && strcmp(v->valuestring, value) == 0;
}

/* The credentials object of the answer, read independently of sts.c. */
static const cJSON *credentials_of(const cJSON *root)
{
	const cJSON *response = cJSON_GetObjectItemCaseSensitive(root, "AssumeRoleWithWebIdentityResponse");
	const cJSON *result = cJSON_GetObjectItemCaseSensitive(response, "AssumeRoleWithWebIdentityResult");
	return cJSON_GetObjectItemCaseSensitive(result, "Credentials");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = malloc(size + 1), why[256] = "";
	if (body == NULL)
		return 0;
	memcpy(body, data, size);
	body[size] = '\0';
	struct aws_credentials creds = { 0 };
	double expiration = 0;
	enum ba_status rc = sts_parse_credentials(body, size, &creds, &expiration, why, sizeof why);
	FUZZ_CHECK(rc == BA_OK || rc == BA_EX_PROTOCOL || rc == BA_EX_OSERR);
	if (rc == BA_OK) {
		cJSON *root = fuzz_json_exact(body, size);
		const cJSON *c = credentials_of(root);
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(c, "Expiration");
		FUZZ_CHECK(cJSON_IsObject(root) && cJSON_IsObject(c));
		FUZZ_CHECK(same_string(c, "AccessKeyId", creds.access_key_id));
		FUZZ_CHECK(same_string(c, "SecretAccessKey", creds.secret_access_key));
		FUZZ_CHECK(same_string(c, "SessionToken", creds.session_token));
		FUZZ_CHECK(cJSON_IsNumber(e) && isfinite(expiration) && e->valuedouble == expiration);
		cJSON_Delete(root);
	} else {
		FUZZ_CHECK(creds.access_key_id == NULL && creds.secret_access_key == NULL && creds.session_token == NULL);
		FUZZ_CHECK(rc == BA_EX_OSERR || why[0] != '\0');
	}
	aws_credentials_clear(&creds);
	free(body);
	return 0;
}
