/* ECS task metadata endpoint v4; see tmds.h and ../shared/aws-reference/ecs_tmds_v4. */
#include "tmds.h"

#include "common.h"
#include "log.h"
#include "region.h"
#include "status.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum ba_status metadata_base(char **out)
{
	const char *base = env_nonempty("ECS_CONTAINER_METADATA_URI_V4");
	*out = NULL;
	if (base == NULL) {
		log_error("not running under ECS: ECS_CONTAINER_METADATA_URI_V4 is not set");
		return BA_EX_CONFIG;
	}
	if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
		char *shown = http_redact_url(base);
		log_error("ECS_CONTAINER_METADATA_URI_V4 (%s) is not an http URL", shown ? shown : "?");
		free(shown);
		return BA_EX_CONFIG;
	}
	*out = strdup(base);
	if (*out == NULL)
		return BA_EX_OSERR;
	size_t n = strlen(*out);
	while (n > 0 && (*out)[n - 1] == '/')
		(*out)[--n] = '\0';
	return BA_OK;
}

/* The task metadata endpoint: link-local, a few quick retries. */
static const struct http_policy metadata_policy = { .no_proxy = true, .connect_timeout_ms = 1000,
	.timeout_ms = 3000, .max_attempts = 3, .backoff_base_ms = 100, .backoff_cap_ms = 1000,
	.retry = HTTP_RETRY_AWS };

/* GET url and parse a JSON object; *root on BA_OK. */
static enum ba_status fetch(const char *what, const char *url, struct http_request *req, cJSON **root)
{
	*req = (struct http_request){
		.what = what,
		.method = "GET",
		.url = url,
		.policy = metadata_policy,
	};
	aws_apply_settings(req);
	return aws_request_object(req, root);
}

static enum ba_status task_arn_region(const struct http_request *req, const cJSON *task, const char **arn,
                           char *region, size_t size)
{
	if (!aws_field_string(req, task, "TaskARN", "TaskARN", true, arn))
		return BA_EX_PROTOCOL;
	if (!region_from_arn(*arn, region, size)) {
		aws_field_error(req, "TaskARN", "not an ECS task ARN (arn:aws:ecs:REGION:...)");
		return BA_EX_PROTOCOL;
	}
	return BA_OK;
}

enum ba_status tmds_task_region(char *out, size_t size)
{
	char *base = NULL;
	enum ba_status rc = metadata_base(&base);
	if (rc != BA_OK)
		return rc;
	size_t n = strlen(base) + sizeof "/task";
	char *url = malloc(n);
	cJSON *task = NULL;
	struct http_request req;
	if (url == NULL) {
		free(base);
		return BA_EX_OSERR;
	}
	snprintf(url, n, "%s/task", base);
	rc = fetch("ECS task metadata endpoint", url, &req, &task);
	if (rc == BA_OK) {
		const char *arn;
		rc = task_arn_region(&req, task, &arn, out, size);
		if (rc == BA_OK)
			log_debug("region %s from the task ARN", out);
	}
	cJSON_Delete(task);
	free(url);
	free(base);
	return rc;
}

/* obj[name] of kind, where obj is at prefix in the answer (for messages): true with
 * *out (NULL when absent), false (logged) on a wrong type. */
static bool member(const struct http_request *req, const cJSON *obj, const char *prefix, const char *name, int kind,
                   const cJSON **out)
{
	char path[160];
	snprintf(path, sizeof path, "%s%s", prefix, name);
	return aws_field_kind(req, obj, name, path, false, kind, out);
}

/* Networks[] of a container: the first non-empty IPv4Addresses[] entry and the first
 * NetworkMode. False (logged) on a wrong type or an address that is not IPv4. */
static bool container_network(const struct http_request *req, const cJSON *container,
                              const char *prefix, const char **ipv4, const char **mode)
{
	const cJSON *networks;
	char path[160];
	if (!member(req, container, prefix, "Networks", cJSON_Array, &networks))
		return false;
	if (networks == NULL)
		return true; /* left out: the ECS agent could not read them */
	int i = 0;
	const cJSON *net;
	cJSON_ArrayForEach(net, networks) {
		snprintf(path, sizeof path, "%sNetworks[%d]", prefix, i);
		if (!cJSON_IsObject(net)) {
			aws_field_error(req, path, "expected an object");
			return false;
		}
		const char *m;
		snprintf(path, sizeof path, "%sNetworks[%d].NetworkMode", prefix, i);
		if (!aws_field_string(req, net, "NetworkMode", path, false, &m))
			return false;
		if (*mode == NULL && m != NULL && m[0] != '\0')
			*mode = m;
		const cJSON *addrs;
		snprintf(path, sizeof path, "%sNetworks[%d].IPv4Addresses", prefix, i);
		if (!aws_field_kind(req, net, "IPv4Addresses", path, false, cJSON_Array, &addrs))
			return false;
		int j = 0;
		const cJSON *a;
		cJSON_ArrayForEach(a, addrs) {
			snprintf(path, sizeof path, "%sNetworks[%d].IPv4Addresses[%d]", prefix, i, j);
			if (!cJSON_IsString(a)) {
				aws_field_error(req, path, "expected a string");
				return false;
			}
			struct in_addr parsed;
			if (a->valuestring[0] != '\0' && inet_pton(AF_INET, a->valuestring, &parsed) != 1) {
				aws_field_error(req, path, "not an IPv4 address");
				return false;
			}
			if (*ipv4 == NULL && a->valuestring[0] != '\0')
				*ipv4 = a->valuestring;
			j++;
		}
		i++;
	}
	return true;
}

/* Limits.CPU / Limits.Memory of an object; absent or <= 0 -> not present. */
static bool limits(const struct http_request *req, const cJSON *obj, const char *prefix,
                   double *cpu, bool *has_cpu, double *mem, bool *has_mem)
{
	const cJSON *lim;
	char path[160];
	*has_cpu = *has_mem = false;
	if (!member(req, obj, prefix, "Limits", cJSON_Object, &lim))
		return false;
	if (lim == NULL)
		return true; /* no limits: the caller says null */
	snprintf(path, sizeof path, "%sLimits.CPU", prefix);
	if (!aws_field_number(req, lim, "CPU", path, false, cpu, has_cpu))
		return false;
	snprintf(path, sizeof path, "%sLimits.Memory", prefix);
	if (!aws_field_number(req, lim, "Memory", path, false, mem, has_mem))
		return false;
	*has_cpu = *has_cpu && *cpu > 0;
	*has_mem = *has_mem && *mem > 0;
	return true;
}

/* This container in /task: same DockerId, else the first NORMAL container with the
 * same Name; never the CNI_PAUSE container of awsvpc mode. *mine stays NULL when
 * none is; false (logged) on a field of the wrong type. */
static bool find_own_container(const struct http_request *creq, const cJSON *container,
                               const struct http_request *treq, const cJSON *task, const cJSON **mine,
                               char *prefix, size_t prefix_size)
{
	const char *docker_id, *name;
	const cJSON *containers, *c;
	*mine = NULL;
	if (!aws_field_string(creq, container, "DockerId", "DockerId", false, &docker_id) ||
	    !aws_field_string(creq, container, "Name", "Name", false, &name) ||
	    !aws_field_kind(treq, task, "Containers", "Containers", false, cJSON_Array, &containers))
		return false;
	int index = 0;
	cJSON_ArrayForEach(c, containers) {
		char path[64];
		const char *cid, *cname, *ctype;
		snprintf(path, sizeof path, "Containers[%d]", index);
		if (!cJSON_IsObject(c)) {
			aws_field_error(treq, path, "expected an object");
			return false;
		}
		snprintf(path, sizeof path, "Containers[%d].DockerId", index);
		if (!aws_field_string(treq, c, "DockerId", path, false, &cid))
			return false;
		snprintf(path, sizeof path, "Containers[%d].Name", index);
		if (!aws_field_string(treq, c, "Name", path, false, &cname))
			return false;
		snprintf(path, sizeof path, "Containers[%d].Type", index);
		if (!aws_field_string(treq, c, "Type", path, false, &ctype))
			return false;
		bool normal = ctype == NULL || strcmp(ctype, "CNI_PAUSE") != 0;
		if (normal && *mine == NULL &&
		    ((docker_id && cid && strcmp(docker_id, cid) == 0) ||
		     (!docker_id && name && cname && strcmp(name, cname) == 0))) {
			*mine = c;
			snprintf(prefix, prefix_size, "Containers[%d].", index);
		}
		index++;
	}
	return true;
}

bool tmds_read_facts(const struct http_request *creq, const cJSON *container, const struct http_request *treq,
                     const cJSON *task, struct task_facts *f)
{
	const cJSON *mine;
	char prefix[64] = "";
	if (!find_own_container(creq, container, treq, task, &mine, prefix, sizeof prefix) ||
	    !container_network(creq, container, "", &f->ipv4, &f->mode))
		return false;
	/* Networks is left out when the ECS agent could not read them: try /task. */
	if (f->ipv4 == NULL && f->mode == NULL && mine != NULL &&
	    !container_network(treq, mine, prefix, &f->ipv4, &f->mode))
		return false;
	return task_arn_region(treq, task, &f->arn, f->region, sizeof f->region) == BA_OK &&
	       aws_field_string(treq, task, "AvailabilityZone", "AvailabilityZone", false, &f->az) &&
	       limits(treq, task, "", &f->tcpu, &f->has_tcpu, &f->tmem, &f->has_tmem) &&
	       limits(creq, container, "", &f->ccpu, &f->has_ccpu, &f->cmem, &f->has_cmem);
}

static enum ba_status print_facts(const struct task_facts *f)
{
	cJSON *out = cJSON_CreateObject();
	if (out == NULL)
		return BA_EX_OSERR;
	bool ok = (f->ipv4 ? cJSON_AddStringToObject(out, "ipv4", f->ipv4) : cJSON_AddNullToObject(out, "ipv4")) &&
	          (f->mode ? cJSON_AddStringToObject(out, "networkMode", f->mode) :
	                     cJSON_AddNullToObject(out, "networkMode")) &&
	          cJSON_AddStringToObject(out, "taskArn", f->arn) &&
	          cJSON_AddStringToObject(out, "region", f->region) &&
	          (f->az ? cJSON_AddStringToObject(out, "availabilityZone", f->az) :
	                   cJSON_AddNullToObject(out, "availabilityZone")) &&
	          (f->has_tcpu ? cJSON_AddNumberToObject(out, "cpus", f->tcpu) :
	           f->has_ccpu ? cJSON_AddNumberToObject(out, "cpus", f->ccpu / 1024.0) :
	                         cJSON_AddNullToObject(out, "cpus")) &&
	          (f->has_tmem ? cJSON_AddNumberToObject(out, "memoryLimitBytes", f->tmem * 1048576.0) :
	           f->has_cmem ? cJSON_AddNumberToObject(out, "memoryLimitBytes", f->cmem * 1048576.0) :
	                         cJSON_AddNullToObject(out, "memoryLimitBytes"));
	if (!ok) {
		cJSON_Delete(out);
		return BA_EX_OSERR;
	}
	return aws_print_json(out);
}

enum ba_status tmds_command(void)
{
	char *base = NULL;
	char *task_url = NULL;
	cJSON *container = NULL, *task = NULL;
	struct http_request creq, treq;
	struct task_facts facts = { 0 };
	enum ba_status rc = metadata_base(&base);
	if (rc != BA_OK)
		return rc;
	size_t n = strlen(base) + sizeof "/task";
	rc = BA_EX_OSERR;
	if ((task_url = malloc(n)) == NULL)
		goto done;
	snprintf(task_url, n, "%s/task", base);
	rc = fetch("ECS task metadata endpoint (container)", base, &creq, &container);
	if (rc == BA_OK)
		rc = fetch("ECS task metadata endpoint (task)", task_url, &treq, &task);
	if (rc == BA_OK)
		rc = tmds_read_facts(&creq, container, &treq, task, &facts) ? print_facts(&facts) : BA_EX_PROTOCOL;
done:
	cJSON_Delete(container);
	cJSON_Delete(task);
	free(task_url);
	free(base);
	return rc;
}
