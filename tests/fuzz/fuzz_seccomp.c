/* The seccomp profile (sandbox.c): sandbox_load on a Docker-format profile, which it
 * parses with cJSON and compiles into a libseccomp filter (not loaded: the fuzzer
 * must keep its own system calls).
 *
 * Input: the profile file's bytes (given to sandbox_load as /proc/self/fd/N of a
 * memfd holding them).
 *
 * Checked beyond "no crash": the status is BA_OK with a sandbox, or BA_EX_CONFIG
 * (the documented 78, "every error names the file and the entry") with none; a file
 * that is not a JSON object is never accepted; the same bytes give the same answer
 * twice (nothing of one load leaks into the next). */
#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "log.h"
#include "sandbox.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_seccomp", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	memfd = memfd_create("profile", MFD_CLOEXEC);
	if (memfd < 0)
		abort();
	snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
	return 0;
}

static enum ba_status load(void)
{
	struct sandbox *sb = (struct sandbox *)&memfd; /* must be overwritten */
	enum ba_status rc = sandbox_load(path, false, &sb);
	FUZZ_CHECK((rc == BA_OK && sb != NULL) || (rc == BA_EX_CONFIG && sb == NULL));
	sandbox_free(sb);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FUZZ_CHECK(ftruncate(memfd, 0) == 0);
	FUZZ_CHECK(size == 0 || pwrite(memfd, data, size, 0) == (ssize_t)size);
	enum ba_status rc = load();
	if (rc == BA_OK) {
		cJSON *doc = fuzz_json_exact((const char *)data, size);
		FUZZ_CHECK(cJSON_IsObject(doc));
		cJSON_Delete(doc);
	}
	FUZZ_CHECK(load() == rc);
	return 0;
}
