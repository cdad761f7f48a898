/* Stage 3: finding the manager's address. */
#include "discover.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "awsquery.h"
#include "batchenv.h"
#include "log.h"
#include "status.h"

#define BATCH_API_TIMEOUT_MS 60000

/* The job's own parameters, from Batch DescribeJobs (through batch-agent-aws). The
 * cookie never comes from here: only the address does. */
static enum ba_status from_job_parameter(const struct config *cfg, const char *name, struct manager_address *out)
{
	const char *args[] = { "job-parameters", NULL, NULL, NULL };
	char source[300];
	cJSON *job = NULL;
	if (cfg->aws_endpoint_url) {
		args[1] = "--endpoint-url";
		args[2] = cfg->aws_endpoint_url;
	}
	log_info("reading the job parameter \"%s\" from the Batch API (DescribeJobs %s)", name,
		 cfg->batch.job_id ? cfg->batch.job_id : "?");
	enum ba_status rc = awsquery_run(args, BATCH_API_TIMEOUT_MS, &job);
	if (rc != BA_OK)
		return rc;
	const cJSON *parameters = cJSON_GetObjectItemCaseSensitive(job, "parameters");
	const cJSON *value = cJSON_GetObjectItemCaseSensitive(parameters, name);
	if (!cJSON_IsString(value)) {
		log_error("job %s has no parameter \"%s\" (--manager-param): submit it with --parameters %s=HOST:PORT",
			  cfg->batch.job_id ? cfg->batch.job_id : "?", name, name);
		rc = BA_EX_CONFIG;
	} else {
		snprintf(source, sizeof source, "job parameter %s (Batch API)", name);
		rc = address_parse_manager(value->valuestring, cfg->port, source, out);
	}
	cJSON_Delete(job);
	return rc;
}

enum ba_status discover_manager(const struct config *cfg, struct manager_address *out)
{
	const char *ref_name;
	if (cfg->manager != NULL) {
		const char *source = getenv("BATCH_AGENT_MANAGER") == cfg->manager ? "BATCH_AGENT_MANAGER" : "--manager";
		/* Batch leaves Ref::NAME as is when the job was submitted without NAME: ask
		 * the Batch API for the job's parameters instead. */
		if (address_is_unsubstituted_ref(cfg->manager, &ref_name)) {
			const char *name = cfg->manager_param_given ? cfg->manager_param : ref_name;
			log_info("%s is the literal text \"%s\" (the parameter was not substituted)", source, cfg->manager);
			return from_job_parameter(cfg, name, out);
		}
		return address_parse_manager(cfg->manager, cfg->port, source, out);
	}
	if (batchenv_is_mnp(&cfg->batch)) {
		if (cfg->batch.main_node_addr == NULL) {
			log_error("this MNP child node has no AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS "
				  "(Batch sets it on child nodes); give --manager");
			return BA_EX_CONFIG;
		}
		return address_parse_manager(cfg->batch.main_node_addr, cfg->port,
					     "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", out);
	}
	return from_job_parameter(cfg, cfg->manager_param, out);
}
