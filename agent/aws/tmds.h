/* ECS task metadata endpoint v4 (${ECS_CONTAINER_METADATA_URI_V4} and .../task). */
#ifndef BATCH_AGENT_AWS_TMDS_H
#define BATCH_AGENT_AWS_TMDS_H

#include <stddef.h>
#include <stdbool.h>

#include "http.h"
#include "status.h"

#include <cjson/cJSON.h>

/* task-metadata: prints {"ipv4","networkMode","taskArn","region","availabilityZone",
 * "cpus","memoryLimitBytes"} on stdout. Returns the exit status. */
enum ba_status tmds_command(void);

/* The region of the task ARN (for region resolution). Returns BA_OK, 78 when
 * ECS_CONTAINER_METADATA_URI_V4 is unset, or a fetch/parse error (logged). */
enum ba_status tmds_task_region(char *out, size_t size);

/* What task-metadata prints, gathered from the container's and the task's answers. */
struct task_facts {
	const char *ipv4, *mode, *arn, *az;
	char region[72];
	/* Task Limits.CPU is in vCPUs; a container's Limits.CPU is in CPU units (1024 per
	 * vCPU). Memory is in MiB at both levels. */
	double tcpu, tmem, ccpu, cmem;
	bool has_tcpu, has_tmem, has_ccpu, has_cmem;
};

/* The facts from the container's answer (container, at creq) and the task's (task, at
 * treq); false (logged) on a field of the wrong type or a bad task ARN. *f must be
 * zeroed; its strings point into the two trees. Declared here for tests/fuzz. */
bool tmds_read_facts(const struct http_request *creq, const cJSON *container, const struct http_request *treq,
                     const cJSON *task, struct task_facts *f);

#endif
