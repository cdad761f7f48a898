/* Finding and chain-loading the agent's helper programs. */
#include "chainload.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "status.h"

extern char **environ;

static bool executable(const char *path)
{
	return access(path, X_OK) == 0;
}

enum ba_status chainload_find_helper(const char *name, char *path, unsigned long size)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash)
			*slash = '\0';
		snprintf(path, size, "%s/%s", self, name);
		if (executable(path))
			return BA_OK;
		/* A relocated install: PREFIX/bin/batch-agent and PREFIX/libexec/batch-agent/. */
		snprintf(path, size, "%s/../libexec/batch-agent/%s", self, name);
		if (executable(path))
			return BA_OK;
	}
	snprintf(path, size, "%s/%s", BATCH_AGENT_LIBEXECDIR, name);
	if (executable(path))
		return BA_OK;
	log_error("%s is missing: looked next to the batch-agent binary and in %s (install both)", name,
		  BATCH_AGENT_LIBEXECDIR);
	return BA_EX_SOFTWARE;
}

enum ba_status chainload_network_stages(char **argv)
{
	char path[PATH_MAX];
	enum ba_status rc = chainload_find_helper("batch-agent-net", path, sizeof path);
	if (rc != BA_OK)
		return rc;
	execve(path, argv, environ);
	log_error("cannot execute %s: %m", path);
	return BA_EX_SOFTWARE;
}
