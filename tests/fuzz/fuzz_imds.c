/* The EC2 instance metadata service's Spot notices (imds.c, spot-watch): a 200
 * answer of the instance-action path or of the rebalance path, imds_handle_notice.
 *
 * Input: byte 0 chooses the path (bit 0: instance-action, else rebalance), the rest
 * is the body. Each input is handled twice by one spot-watch state, as two polls
 * that get the same answer.
 *
 * Checked beyond "no crash": an answer is accepted (a notice printed) exactly when it
 * is a JSON object with the path's fields as non-empty (action) or any (time,
 * noticeTime) strings; the second identical answer is accepted too, and remembered
 * as the same notice (printed once: the state's key does not change). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "aws.h"
#include "common.h"
#include "fuzz.h"
#include "imds.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_imds", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	/* Notices are printed on stdout. */
	if (freopen("/dev/null", "w", stdout) == NULL)
		abort();
	return 0;
}

static bool string_field(const cJSON *root, const char *name, bool nonempty)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
	return cJSON_IsString(v) && (!nonempty || v->valuestring[0] != '\0');
}

static bool expected_valid(const uint8_t *body, size_t size, bool is_action)
{
	cJSON *root = fuzz_json_exact((const char *)body, size);
	bool ok = cJSON_IsObject(root) &&
		  (is_action ? string_field(root, "action", true) && string_field(root, "time", false)
			     : string_field(root, "noticeTime", false));
	cJSON_Delete(root);
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool is_action = (data[0] & 1) != 0;
	struct imds m = { .unavailable_level = LOG_LEVEL_ERROR };
	struct http_request req = { .what = is_action ? "IMDS spot instance-action" : "IMDS rebalance recommendation",
				    .method = "GET", .url = "http://169.254.169.254/latest/meta-data/fuzz" };
	struct http_response resp = fuzz_response(data + 1, size - 1);
	enum ba_status rc = imds_handle_notice(&m, &req, &resp, is_action);
	FUZZ_CHECK(rc == BA_OK || rc == BA_EX_PROTOCOL);
	FUZZ_CHECK((rc == BA_OK) == expected_valid(data + 1, size - 1, is_action));
	if (rc == BA_OK) {
		char *key = is_action ? m.last_action : m.last_rebalance;
		FUZZ_CHECK(key != NULL);
		FUZZ_CHECK(imds_handle_notice(&m, &req, &resp, is_action) == BA_OK);
		FUZZ_CHECK((is_action ? m.last_action : m.last_rebalance) == key);
	}
	free(m.last_action);
	free(m.last_rebalance);
	http_response_free(&resp);
	return 0;
}
