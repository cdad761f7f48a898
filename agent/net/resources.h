/* What the container may use, as the container sees it: reported at registration so
 * that a manager can size its work (cgroup v2, then v1, then the CPU affinity). */
#ifndef BATCH_AGENT_RESOURCES_H
#define BATCH_AGENT_RESOURCES_H

#include <stdint.h>

/* CPUs (fractional under a CFS quota); 0 when unknown. */
double resources_cpus(void);
/* Memory limit in bytes; -1 when unlimited or unknown. */
int64_t resources_memory_limit(void);

#endif
