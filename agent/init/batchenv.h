/* The AWS_BATCH_* variables, parsed strictly: a malformed value is an error naming the
 * variable (BA_EX_CONFIG), because an agent that guesses would connect to the wrong
 * manager or wait forever for a node that does not exist. */
#ifndef BATCH_AGENT_BATCHENV_H
#define BATCH_AGENT_BATCHENV_H

#include "config.h"
#include "status.h"

enum ba_status batchenv_load(struct batch_env *batch);

/* True on a node of a multi-node parallel job. */
bool batchenv_is_mnp(const struct batch_env *batch);

#endif
