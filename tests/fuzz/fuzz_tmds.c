/* The ECS task metadata endpoint v4's answers (tmds.c, task-metadata and the region
 * from the task ARN): the container's and the task's bodies, each parsed as a 200
 * answer, then tmds_read_facts.
 *
 * Input: the container answer's body, a NUL byte, the task answer's body (no JSON
 * text holds a raw NUL, so the split is unambiguous). Without a NUL, both answers
 * are the input.
 *
 * Checked beyond "no crash": accepted facts have the task's TaskARN string, a region
 * of lowercase letters, digits and '-' that is the ARN's fourth field, an ipv4 that is
 * a dotted quad when there is one, and limits only where they are positive. */
#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

#include "aws.h"
#include "common.h"
#include "fuzz.h"
#include "log.h"
#include "tmds.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_tmds", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

static void check_facts(const cJSON *task, const struct task_facts *f)
{
	const cJSON *arn = cJSON_GetObjectItemCaseSensitive(task, "TaskARN");
	FUZZ_CHECK(cJSON_IsString(arn) && f->arn == arn->valuestring);
	size_t n = strlen(f->region);
	FUZZ_CHECK(n > 0);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((f->region[i] >= 'a' && f->region[i] <= 'z') || (f->region[i] >= '0' && f->region[i] <= '9') ||
			   f->region[i] == '-');
	/* arn:PARTITION:ecs:REGION:... */
	const char *p = f->arn;
	for (int field = 0; field < 3; field++) {
		p = strchr(p, ':');
		FUZZ_CHECK(p != NULL);
		p++;
	}
	FUZZ_CHECK(strncmp(p, f->region, n) == 0 && p[n] == ':');
	struct in_addr a;
	FUZZ_CHECK(f->ipv4 == NULL || inet_pton(AF_INET, f->ipv4, &a) == 1);
	FUZZ_CHECK((!f->has_tcpu || f->tcpu > 0) && (!f->has_tmem || f->tmem > 0) && (!f->has_ccpu || f->ccpu > 0) &&
		   (!f->has_cmem || f->cmem > 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t csize = nul ? (size_t)(nul - data) : size;
	const uint8_t *tdata = nul ? nul + 1 : data;
	size_t tsize = nul ? size - csize - 1 : size;
	struct http_request creq = { .what = "ECS task metadata endpoint (container)", .method = "GET",
				     .url = "http://169.254.170.2/v4/fuzz" };
	struct http_request treq = { .what = "ECS task metadata endpoint (task)", .method = "GET",
				     .url = "http://169.254.170.2/v4/fuzz/task" };
	cJSON *container = fuzz_parse_answer(&creq, data, csize);
	cJSON *task = container ? fuzz_parse_answer(&treq, tdata, tsize) : NULL;
	if (task != NULL) {
		struct task_facts facts = { 0 };
		if (tmds_read_facts(&creq, container, &treq, task, &facts))
			check_facts(task, &facts);
	}
	cJSON_Delete(container);
	cJSON_Delete(task);
	return 0;
}
