/* Stage 3: finding the manager's address. */
#include "discover.h"

#include <stdlib.h>

#include "batchenv.h"
#include "log.h"
#include "status.h"

int discover_manager(const struct config *cfg, struct manager_address *out)
{
	if (cfg->manager != NULL) {
		const char *source = getenv("BATCH_AGENT_MANAGER") == cfg->manager ? "BATCH_AGENT_MANAGER" : "--manager";
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
	log_error("no manager address: give --manager HOST:PORT (BATCH_AGENT_MANAGER), or run on a child node "
		  "of a multi-node parallel job");
	return BA_EX_CONFIG;
}
