/* Finding and chain-loading the agent's helper programs. */
#include "chainload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "util.h"

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

/* BATCH_AGENT_COOKIE into a sealed memfd that batch-agent-net inherits, its number in
 * BATCH_AGENT_COOKIE_FD: execve builds the new process's environment block from ours,
 * and the cookie, even zeroed (its length), must not be in it. */
static enum ba_status hand_over_cookie(void)
{
	char *value = getenv("BATCH_AGENT_COOKIE");
	if (value == NULL)
		return BA_OK;
	size_t length = strlen(value);
	int fd = memfd_create("batch-agent-cookie", MFD_ALLOW_SEALING);
	if (fd < 0) {
		log_error("memfd_create (to hand the cookie to batch-agent-net): %m");
		util_scrub_env("BATCH_AGENT_COOKIE");
		return BA_EX_OSERR;
	}
	enum ba_status rc = BA_OK;
	ssize_t n = write(fd, value, length);
	/* A short write to memory sets no errno of its own; the scrub may change errno. */
	int write_errno = n < 0 ? errno : EIO;
	util_scrub_env("BATCH_AGENT_COOKIE");
	char number[16];
	snprintf(number, sizeof number, "%d", fd);
	errno = write_errno;
	if (n != (ssize_t)length ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0 ||
	    lseek(fd, 0, SEEK_SET) != 0 || setenv("BATCH_AGENT_COOKIE_FD", number, 1) != 0) {
		log_error("handing the cookie to batch-agent-net: %m");
		close(fd);
		rc = BA_EX_OSERR;
	}
	return rc;
}

enum ba_status chainload_network_stages(char **argv)
{
	char path[PATH_MAX];
	enum ba_status rc = chainload_find_helper("batch-agent-net", path, sizeof path);
	if (rc != BA_OK)
		return rc;
	/* We hold the cookie until the execve (which resets this; batch-agent-net sets it
	 * again). */
	util_protect_process();
	rc = hand_over_cookie();
	if (rc != BA_OK)
		return rc;
	execve(path, argv, environ);
	log_error("cannot execute %s: %m", path);
	return BA_EX_SOFTWARE;
}
