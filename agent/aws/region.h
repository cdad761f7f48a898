/* The AWS region, as botocore finds it inside an AWS Batch / ECS container:
 * AWS_REGION, else AWS_DEFAULT_REGION, else the region of the task ARN from the ECS
 * task metadata endpoint (tmds_task_region, which parses it here). */
#ifndef BATCH_AGENT_AWS_REGION_H
#define BATCH_AGENT_AWS_REGION_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

/* The region field of an ARN ("arn:aws:ecs:REGION:..."), checked; false when the ARN
 * is not an ECS one or the region is not valid. */
bool region_from_arn(const char *arn, char *out, size_t size);

/* From the environment: BA_OK with the region in out; BA_OK with *ask_task_metadata
 * when the environment names none but the task metadata endpoint can tell; 78
 * (logged) when nothing can, or a variable is not a region name. */
enum ba_status region_from_environment(char *out, size_t size, bool *ask_task_metadata);

#endif
