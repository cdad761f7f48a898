/* Reading the container's CPU and memory limits. */
#include "resources.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>

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

double resources_cpus(void)
{
	cpu_set_t set;
	double cpus = 0;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		cpus = CPU_COUNT(&set);
	char text[128];
	long long quota, period;
	/* cgroup v2 "QUOTA PERIOD" or "max PERIOD"; v1 in two files. */
	if (read_small_file("/sys/fs/cgroup/cpu.max", text, sizeof text) == 0 &&
	    sscanf(text, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0) {
		double limit = (double)quota / (double)period;
		if (cpus == 0 || limit < cpus)
			cpus = limit;
	} else if (read_small_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", text, sizeof text) == 0 &&
		   sscanf(text, "%lld", &quota) == 1 && quota > 0 &&
		   read_small_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", text, sizeof text) == 0 &&
		   sscanf(text, "%lld", &period) == 1 && period > 0) {
		double limit = (double)quota / (double)period;
		if (cpus == 0 || limit < cpus)
			cpus = limit;
	}
	return cpus;
}

int64_t resources_memory_limit(void)
{
	char text[64];
	long long bytes;
	if (read_small_file("/sys/fs/cgroup/memory.max", text, sizeof text) == 0)
		return sscanf(text, "%lld", &bytes) == 1 && bytes > 0 ? bytes : -1;
	/* v1 says "unlimited" with a huge number near LLONG_MAX rounded to pages. */
	if (read_small_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", text, sizeof text) == 0 &&
	    sscanf(text, "%lld", &bytes) == 1 && bytes > 0 && bytes < (1LL << 60))
		return bytes;
	return -1;
}
