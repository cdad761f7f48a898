/* The AWS_BATCH_* environment (batchenv.c): batchenv_load on an environment block.
 *
 * Input: NUL-separated NAME=VALUE entries (environ.h), the whole environment.
 *
 * Checked beyond "no crash": the loader accepts exactly the environments its rules
 * (batchenv.h, README) allow, by an independent reading of them here: numbers are
 * plain digits within their ranges, texts are non-empty with no blank or control
 * byte, the main node's address is a dotted quad, the two node indexes come together
 * and lie inside AWS_BATCH_JOB_NUM_NODES; and what it accepts it returns unchanged. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "batchenv.h"
#include "environ.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_batchenv", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

static void set_entry(char *entry, void *ctx)
{
	environ_set(entry);
}

/* -1 when unset, -2 when not a number of [min, max]. */
static long number(const char *name, long min, long max)
{
	const char *t = getenv(name);
	if (t == NULL)
		return -1;
	if (*t == '\0')
		return -2;
	for (const char *p = t; *p; p++)
		if (!isdigit((unsigned char)*p))
			return -2;
	errno = 0;
	long v = strtol(t, NULL, 10);
	return errno == 0 && v >= min && v <= max ? v : -2;
}

static bool text_ok(const char *name)
{
	const char *t = getenv(name);
	if (t == NULL)
		return true;
	for (const char *p = t; *p; p++)
		if ((unsigned char)*p <= ' ')
			return false;
	return *t != '\0';
}

static bool expected_valid(void)
{
	long attempt = number("AWS_BATCH_JOB_ATTEMPT", 1, 1000);
	long array = number("AWS_BATCH_JOB_ARRAY_INDEX", 0, 9999);
	long nodes = number("AWS_BATCH_JOB_NUM_NODES", 1, 100000);
	long node = number("AWS_BATCH_JOB_NODE_INDEX", 0, 100000);
	long main_node = number("AWS_BATCH_JOB_MAIN_NODE_INDEX", 0, 100000);
	const char *addr = getenv("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS");
	struct in_addr a;
	if (attempt == -2 || array == -2 || nodes == -2 || node == -2 || main_node == -2)
		return false;
	if (addr != NULL && inet_pton(AF_INET, addr, &a) != 1)
		return false;
	if (!text_ok("AWS_BATCH_JOB_ID") || !text_ok("AWS_BATCH_JQ_NAME") || !text_ok("AWS_BATCH_CE_NAME"))
		return false;
	if ((node >= 0 && (nodes < 0 || node >= nodes)) || (main_node >= 0 && (nodes < 0 || main_node >= nodes)))
		return false;
	return (node < 0) == (main_node < 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	clearenv();
	FUZZ_CHECK(environ_each(data, size, set_entry, NULL));
	struct batch_env b;
	enum ba_status rc = batchenv_load(&b);
	FUZZ_CHECK(rc == BA_OK || rc == BA_EX_CONFIG);
	FUZZ_CHECK((rc == BA_OK) == expected_valid());
	if (rc != BA_OK)
		return 0;
	FUZZ_CHECK(b.job_id == getenv("AWS_BATCH_JOB_ID") && b.queue == getenv("AWS_BATCH_JQ_NAME") &&
		   b.compute_environment == getenv("AWS_BATCH_CE_NAME") &&
		   b.main_node_addr == getenv("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"));
	FUZZ_CHECK(b.attempt == number("AWS_BATCH_JOB_ATTEMPT", 1, 1000) &&
		   b.array_index == number("AWS_BATCH_JOB_ARRAY_INDEX", 0, 9999) &&
		   b.num_nodes == number("AWS_BATCH_JOB_NUM_NODES", 1, 100000) &&
		   b.node_index == number("AWS_BATCH_JOB_NODE_INDEX", 0, 100000) &&
		   b.main_node_index == number("AWS_BATCH_JOB_MAIN_NODE_INDEX", 0, 100000));
	FUZZ_CHECK(batchenv_is_mnp(&b) == (b.node_index >= 0));
	return 0;
}
