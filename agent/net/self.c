/* Describing this node: address and resource limits. */
#include "self.h"

#include <cjson/cJSON.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "awsquery.h"
#include "log.h"
#include "status.h"

#define TASK_METADATA_TIMEOUT_MS 15000

static int read_small_file(const char *path, char *buf, size_t size)
{
	FILE *file = fopen(path, "re");
	if (file == NULL)
		return -1;
	size_t n = fread(buf, 1, size - 1, file);
	fclose(file);
	buf[n] = '\0';
	return n > 0 ? 0 : -1;
}

/* CPUs: the affinity mask, lowered by a CFS quota (cgroup v2 "QUOTA PERIOD", or v1). */
static double cgroup_cpus(void)
{
	cpu_set_t set;
	double cpus = 0;
	char text[128], period_text[64];
	long long quota = 0, period = 0;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		cpus = CPU_COUNT(&set);
	if (read_small_file("/sys/fs/cgroup/cpu.max", text, sizeof text) == 0)
		sscanf(text, "%lld %lld", &quota, &period);
	else if (read_small_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", text, sizeof text) == 0 &&
		 read_small_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", period_text, sizeof period_text) == 0)
		quota = atoll(text), period = atoll(period_text);
	if (quota > 0 && period > 0 && (cpus == 0 || (double)quota / (double)period < cpus))
		cpus = (double)quota / (double)period;
	return cpus;
}

/* Memory: cgroup v2 memory.max ("max" when unlimited), or v1, whose "unlimited" is a
 * huge number rounded to pages. */
static int64_t cgroup_memory(void)
{
	char text[64];
	long long bytes;
	if (read_small_file("/sys/fs/cgroup/memory.max", text, sizeof text) == 0)
		return sscanf(text, "%lld", &bytes) == 1 && bytes > 0 ? bytes : -1;
	if (read_small_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", text, sizeof text) == 0 &&
	    sscanf(text, "%lld", &bytes) == 1 && bytes > 0 && bytes < (1LL << 60))
		return bytes;
	return -1;
}

/* Task metadata is a help, not a need: when it fails, what the container sees will do.
 * A terminating signal while we ask is not a failure of the metadata: it ends us. */
static enum ba_status from_task_metadata(const struct config *cfg, struct node_self *out, bool *have_address)
{
	static const char *const args[] = { "task-metadata", NULL };
	cJSON *task = NULL;
	if (getenv("ECS_CONTAINER_METADATA_URI_V4") == NULL)
		return BA_OK;
	enum ba_status rc = awsquery_run(args, TASK_METADATA_TIMEOUT_MS, &task);
	if (rc > BA_EX_SIGNAL_BASE)
		return rc;
	if (rc != BA_OK) {
		log_warn("task metadata unavailable: using the container's own view of its address and limits");
		return BA_OK;
	}
	const cJSON *ipv4 = cJSON_GetObjectItemCaseSensitive(task, "ipv4");
	const cJSON *mode = cJSON_GetObjectItemCaseSensitive(task, "networkMode");
	const cJSON *cpus = cJSON_GetObjectItemCaseSensitive(task, "cpus");
	const cJSON *memory = cJSON_GetObjectItemCaseSensitive(task, "memoryLimitBytes");
	/* In awsvpc mode the task's ENI address is the one other nodes reach; in bridge
	 * mode the metadata's address is the private bridge's, useless to them. */
	if (cfg->advertise_addr == NULL && cJSON_IsString(ipv4) && cJSON_IsString(mode) &&
	    strcmp(mode->valuestring, "awsvpc") == 0) {
		snprintf(out->address, sizeof out->address, "%s", ipv4->valuestring);
		*have_address = true;
		log_debug("advertising the task's private IPv4 %s (task metadata, awsvpc)", out->address);
	}
	if (cJSON_IsNumber(cpus) && cpus->valuedouble > 0)
		out->cpus = cpus->valuedouble;
	if (cJSON_IsNumber(memory) && memory->valuedouble > 0)
		out->memory_bytes = (int64_t)memory->valuedouble;
	cJSON_Delete(task);
	return BA_OK;
}

enum ba_status self_describe_node(const struct config *cfg, struct node_self *out)
{
	memset(out, 0, sizeof *out);
	out->cpus = cgroup_cpus();
	out->memory_bytes = cgroup_memory();
	return from_task_metadata(cfg, out, &out->have_address);
}

enum ba_status self_fill_address(const struct config *cfg, int manager_fd, struct node_self *out)
{
	if (out->have_address)
		return BA_OK;
	return address_advertised(manager_fd, cfg->advertise_addr, out->address, sizeof out->address);
}
