/* The region, from the environment or a task ARN. */
#include "region.h"

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "log.h"

/* A region name is lowercase letters, digits and '-' ("us-east-1"). */
static bool region_valid(const char *region)
{
	if (region == NULL || region[0] == '\0' || strlen(region) > 64)
		return false;
	for (const char *p = region; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return false;
	return true;
}

/* "arn:PARTITION:ecs:REGION:ACCOUNT:task/..." -> REGION. */
bool region_from_arn(const char *arn, char *out, size_t size)
{
	const char *p = arn;
	if (strncmp(p, "arn:", 4) != 0)
		return false;
	p += 4;
	const char *svc = strchr(p, ':');
	if (svc == NULL || strncmp(svc + 1, "ecs:", 4) != 0)
		return false;
	const char *region = svc + 5;
	const char *end = strchr(region, ':');
	if (end == NULL || (size_t)(end - region) >= size)
		return false;
	memcpy(out, region, (size_t)(end - region));
	out[end - region] = '\0';
	return region_valid(out);
}

enum ba_status region_from_environment(char *out, size_t size, bool *ask_task_metadata)
{
	static const char *const vars[] = { "AWS_REGION", "AWS_DEFAULT_REGION" };
	*ask_task_metadata = false;
	for (size_t i = 0; i < 2; i++) {
		const char *v = env_nonempty(vars[i]);
		if (v == NULL)
			continue;
		if (!region_valid(v)) {
			log_error("%s=\"%.64s\" is not a region name", vars[i], v);
			return BA_EX_CONFIG;
		}
		snprintf(out, size, "%s", v);
		log_debug("region %s from %s", out, vars[i]);
		return BA_OK;
	}
	if (env_nonempty("ECS_CONTAINER_METADATA_URI_V4") == NULL) {
		log_error("no AWS region: AWS_REGION and AWS_DEFAULT_REGION are unset and "
		          "ECS_CONTAINER_METADATA_URI_V4 is not set to look up the task's region");
		return BA_EX_CONFIG;
	}
	*ask_task_metadata = true;
	return BA_OK;
}
