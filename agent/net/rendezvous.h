/* The main role of an MNP job: a rendezvous on the main node.
 *
 * Listens on --port and serves every child in one epoll loop: authenticates it,
 * checks its registration (this job, an index inside the job, not registered twice),
 * and when all AWS_BATCH_JOB_NUM_NODES-1 children are in (or --wait-timeout passed with
 * --min-nodes present) starts the main payload with BATCH_AGENT_HOSTFILE and
 * BATCH_AGENT_NODES. It keeps the children's connections, logs a lost child, and when
 * the main payload exits tells every child to shut down, waits for their exit reports
 * (bounded by the grace period) and exits with the main payload's status. */
#ifndef BATCH_AGENT_RENDEZVOUS_H
#define BATCH_AGENT_RENDEZVOUS_H

#include "config.h"
#include "status.h"

enum ba_status rendezvous_run(const struct config *cfg);

#endif
