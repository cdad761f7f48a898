/* The AWS_BATCH_* variables, parsed strictly: a malformed value is an error naming the
 * variable (BA_EX_CONFIG), because an agent that guesses would connect to the wrong
 * manager or wait forever for a node that does not exist. */
#ifndef BATCH_AGENT_BATCHENV_H
#define BATCH_AGENT_BATCHENV_H

#include <stdbool.h>

#include "status.h"

/* What Batch tells the container. Absent numbers are -1, absent strings NULL. */
struct batch_env {
	const char *job_id;              /* AWS_BATCH_JOB_ID: "<uuid>", "<uuid>#N", "<uuid>:N" */
	long attempt;                    /* AWS_BATCH_JOB_ATTEMPT, from 1 */
	long array_index;                /* AWS_BATCH_JOB_ARRAY_INDEX */
	long node_index;                 /* AWS_BATCH_JOB_NODE_INDEX */
	long main_node_index;            /* AWS_BATCH_JOB_MAIN_NODE_INDEX */
	long num_nodes;                  /* AWS_BATCH_JOB_NUM_NODES */
	const char *main_node_addr;      /* AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS, dotted quad */
	const char *queue;               /* AWS_BATCH_JQ_NAME */
	const char *compute_environment; /* AWS_BATCH_CE_NAME */
};

enum ba_status batchenv_load(struct batch_env *batch);

/* True on a node of a multi-node parallel job. */
bool batchenv_is_mnp(const struct batch_env *batch);

#endif
