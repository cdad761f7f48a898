/* Stage 3: where the manager is. In order: --manager (BATCH_AGENT_MANAGER); in an MNP
 * child, AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS with --port; then the job's own
 * parameters read from the Batch API (--manager-param). */
#ifndef BATCH_AGENT_DISCOVER_H
#define BATCH_AGENT_DISCOVER_H

#include "address.h"
#include "config.h"
#include "status.h"

enum ba_status discover_manager(const struct config *cfg, struct manager_address *out);

#endif
