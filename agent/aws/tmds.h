/* ECS task metadata endpoint v4 (${ECS_CONTAINER_METADATA_URI_V4} and .../task). */
#ifndef BATCH_AGENT_AWS_TMDS_H
#define BATCH_AGENT_AWS_TMDS_H

#include <stddef.h>
#include "status.h"

/* task-metadata: prints {"ipv4","networkMode","taskArn","region","availabilityZone",
 * "cpus","memoryLimitBytes"} on stdout. Returns the exit status. */
enum ba_status tmds_command(void);

/* The region of the task ARN (for region resolution). Returns BA_OK, 78 when
 * ECS_CONTAINER_METADATA_URI_V4 is unset, or a fetch/parse error (logged). */
enum ba_status tmds_task_region(char *out, size_t size);

#endif
