/* What every fuzz target shares: libFuzzer's entry points and the one way a target
 * says that a property it checks does not hold.
 *
 * A failed FUZZ_CHECK is a finding like a sanitizer report: it names the property in
 * the sanitizer's report (which libFuzzer keeps even when -close_fd_mask closes the
 * target's stderr, where the agent's own log lines go) and aborts, so that libFuzzer
 * saves the input. */
#ifndef BATCH_AGENT_FUZZ_H
#define BATCH_AGENT_FUZZ_H

#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sanitizer/common_interface_defs.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_STR2(x) #x
#define FUZZ_STR(x) FUZZ_STR2(x)
#define FUZZ_CHECK(cond)                                                                                         \
	do {                                                                                                     \
		if (!(cond)) {                                                                                   \
			__sanitizer_report_error_summary("FUZZ_CHECK failed: " #cond " at " __FILE__            \
							 ":" FUZZ_STR(__LINE__));                               \
			abort();                                                                                 \
		}                                                                                                \
	} while (0)

/* The reading the agent's parsers promise (util_json_parse): text[0, len) as exactly one
 * JSON value with only whitespace after it, else NULL. */
static inline cJSON *fuzz_json_exact(const char *text, size_t len)
{
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	for (; root != NULL && end < text + len; end++)
		if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n') {
			cJSON_Delete(root);
			root = NULL;
		}
	return root;
}

/* An independent reading of what a hostfile line may hold: 1 to max bytes of letters,
 * digits, '.', '-' and ':' (no space, newline or comment sign to split or add a line). */
static inline bool fuzz_hostfile_safe(const char *text, size_t max)
{
	size_t n = strlen(text);
	if (n < 1 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)text[i]) && text[i] != '.' && text[i] != '-' && text[i] != ':')
			return false;
	return true;
}

#endif
