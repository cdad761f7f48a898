/* AWS_BATCH_* parsing. Batch sets these; users may not (AWS forbids user variables
 * with that prefix), so anything odd here is a platform or test-harness mistake that
 * deserves a loud error rather than a guess. */
#include "batchenv.h"

#include "log.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "util.h"

#define MAX_NODES 100000L
#define MAX_ARRAY_INDEX 9999L /* array jobs have at most 10,000 children */

static enum ba_status load_number(const char *name, long min, long max, long *out)
{
	const char *text = getenv(name);
	*out = -1;
	if (text == NULL)
		return BA_OK;
	if (!util_parse_long(text, min, max, out)) {
		log_error("environment variable %s=\"%s\" is invalid: expected a whole number from %ld to %ld",
			  name, text, min, max);
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

static enum ba_status load_text(const char *name, const char **out)
{
	const char *text = getenv(name);
	*out = text;
	if (text == NULL)
		return BA_OK;
	for (const char *p = text; *p; p++) {
		if ((unsigned char)*p <= ' ') {
			log_error("environment variable %s=\"%s\" is invalid: it contains blanks or control characters",
				  name, text);
			return BA_EX_CONFIG;
		}
	}
	if (*text == '\0') {
		log_error("environment variable %s is set but empty", name);
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

static enum ba_status load_ipv4(const char *name, const char **out)
{
	const char *text = getenv(name);
	struct in_addr address;
	*out = text;
	if (text == NULL)
		return BA_OK;
	if (inet_pton(AF_INET, text, &address) != 1) {
		log_error("environment variable %s=\"%s\" is not an IPv4 address (dotted quad)", name, text);
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

static enum ba_status check_index(const char *name, long index, long num_nodes)
{
	if (index < 0)
		return BA_OK;
	if (num_nodes < 0) {
		log_error("environment variable %s is set but AWS_BATCH_JOB_NUM_NODES is not", name);
		return BA_EX_CONFIG;
	}
	if (index >= num_nodes) {
		log_error("environment variable %s=%ld is outside the job: AWS_BATCH_JOB_NUM_NODES=%ld", name,
			  index, num_nodes);
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

enum ba_status batchenv_load(struct batch_env *batch)
{
	enum ba_status rc;
	memset(batch, 0, sizeof *batch);
	if ((rc = load_text("AWS_BATCH_JOB_ID", &batch->job_id)) != BA_OK ||
	    (rc = load_number("AWS_BATCH_JOB_ATTEMPT", 1, 1000, &batch->attempt)) != BA_OK ||
	    (rc = load_number("AWS_BATCH_JOB_ARRAY_INDEX", 0, MAX_ARRAY_INDEX, &batch->array_index)) != BA_OK ||
	    (rc = load_number("AWS_BATCH_JOB_NUM_NODES", 1, MAX_NODES, &batch->num_nodes)) != BA_OK ||
	    (rc = load_number("AWS_BATCH_JOB_NODE_INDEX", 0, MAX_NODES, &batch->node_index)) != BA_OK ||
	    (rc = load_number("AWS_BATCH_JOB_MAIN_NODE_INDEX", 0, MAX_NODES, &batch->main_node_index)) != BA_OK ||
	    (rc = load_ipv4("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", &batch->main_node_addr)) != BA_OK ||
	    (rc = load_text("AWS_BATCH_JQ_NAME", &batch->queue)) != BA_OK ||
	    (rc = load_text("AWS_BATCH_CE_NAME", &batch->compute_environment)) != BA_OK)
		return rc;
	if ((rc = check_index("AWS_BATCH_JOB_NODE_INDEX", batch->node_index, batch->num_nodes)) != BA_OK ||
	    (rc = check_index("AWS_BATCH_JOB_MAIN_NODE_INDEX", batch->main_node_index, batch->num_nodes)) != BA_OK)
		return rc;
	if ((batch->node_index < 0) != (batch->main_node_index < 0)) {
		log_error("AWS_BATCH_JOB_NODE_INDEX and AWS_BATCH_JOB_MAIN_NODE_INDEX must be set together");
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

bool batchenv_is_mnp(const struct batch_env *batch)
{
	return batch->node_index >= 0 && batch->main_node_index >= 0;
}
