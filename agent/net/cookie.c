/* Loading, scrubbing and wiping the cookie. */
#include "cookie.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "util.h"

#define COOKIE_ENV "BATCH_AGENT_COOKIE"
#define COOKIE_MIN 16             /* bytes: shorter ones are refused (64) */
#define COOKIE_MIN_RECOMMENDED 32 /* bytes: shorter ones load, with a warning (native protocol) */
#define COOKIE_JULIA_MAX 16       /* Distributed.jl's HDR_COOKIE_LEN */

void cookie_scrub_environment(void)
{
	char *value = getenv(COOKIE_ENV);
	if (value == NULL)
		return;
	/* getenv points into the initial environment block, which is what the kernel
	 * shows in /proc/<pid>/environ: zero it there, then drop the entry. */
	util_wipe(value, strlen(value));
	unsetenv(COOKIE_ENV);
}

static enum ba_status read_cookie_file(const char *path, struct cookie *out)
{
	enum ba_status rc = BA_EX_CONFIG;
	unsigned char *buffer = malloc(COOKIE_MAX + 2);
	size_t length = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (buffer == NULL) {
		rc = BA_EX_OSERR;
		goto out;
	}
	if (fd < 0) {
		log_error("cookie file %s (--cookie-file): %s", path, strerror(errno));
		goto out;
	}
	struct stat info;
	if (fstat(fd, &info) == 0 && (info.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		log_warn("cookie file %s is readable by group or others (mode %03o): chmod 600 it", path,
			 (unsigned)(info.st_mode & 0777));
	for (;;) {
		ssize_t n = read(fd, buffer + length, COOKIE_MAX + 1 - length);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error("cookie file %s (--cookie-file): %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		length += (size_t)n;
		if (length > COOKIE_MAX) {
			log_error("cookie file %s (--cookie-file) is longer than %d bytes", path, COOKIE_MAX);
			goto out;
		}
	}
	/* Editors and `echo` add a final newline that nobody means as part of a secret. */
	if (length > 0 && buffer[length - 1] == '\n')
		length--;
	if (length > 0 && buffer[length - 1] == '\r')
		length--;
	out->bytes = buffer;
	out->length = length;
	buffer = NULL;
	rc = BA_OK;
out:
	if (buffer != NULL) {
		util_wipe(buffer, COOKIE_MAX + 2);
		free(buffer);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

static enum ba_status copy_cookie_env(const char *value, struct cookie *out)
{
	size_t length = strlen(value);
	if (length > COOKIE_MAX) {
		log_error("%s is longer than %d bytes", COOKIE_ENV, COOKIE_MAX);
		return BA_EX_CONFIG;
	}
	out->bytes = malloc(length + 1);
	if (out->bytes == NULL)
		return BA_EX_OSERR;
	memcpy(out->bytes, value, length);
	out->length = length;
	return BA_OK;
}

static bool all_ascii(const struct cookie *cookie)
{
	for (size_t i = 0; i < cookie->length; i++)
		if (cookie->bytes[i] >= 0x80)
			return false;
	return true;
}

/* The length rules (PROTOCOL.md §7), named by where the cookie came from, never by its
 * value. The native protocol's manager proof can be collected by anyone who reaches
 * the port and tested against guesses offline: its length is the whole defence. The
 * Julia dialect sends the cookie itself in clear, and Distributed.jl takes at most
 * HDR_COOKIE_LEN ASCII bytes (init_worker asserts it), space-padded to 16. */
static enum ba_status check_strength(const struct config *cfg, const struct cookie *cookie)
{
	const char *source = cfg->cookie_file ? cfg->cookie_file : COOKIE_ENV;
	const char *flag = cfg->cookie_file ? " (--cookie-file)" : "";
	if (cookie->length == 0) {
		log_error("the cookie %s%s is empty", source, flag);
		return BA_EX_CONFIG;
	}
	if (cookie->length < COOKIE_MIN) {
		log_error("the cookie %s%s is %zu bytes: at least %d are required (e.g. openssl rand -hex 32)", source,
			  flag, cookie->length, COOKIE_MIN);
		return BA_EX_USAGE;
	}
	if (cfg->protocol != PROTOCOL_JULIA) {
		if (cookie->length < COOKIE_MIN_RECOMMENDED)
			log_warn("the cookie %s%s is only %zu bytes: use at least %d random characters (e.g. openssl rand -hex 32)",
				 source, flag, cookie->length, COOKIE_MIN_RECOMMENDED);
		return BA_OK;
	}
	if (cookie->length > COOKIE_JULIA_MAX || !all_ascii(cookie))
		log_warn("the cookie %s%s is %zu bytes%s: Julia's Distributed accepts at most %d ASCII bytes "
			 "(HDR_COOKIE_LEN) and its worker will fail on this one",
			 source, flag, cookie->length, all_ascii(cookie) ? "" : " and not ASCII", COOKIE_JULIA_MAX);
	log_warn("the Julia dialect sends the cookie in clear text (julia_cookie and Distributed's 16-byte header): "
		 "anyone on the path can read it");
	return BA_OK;
}

enum ba_status cookie_load(const struct config *cfg, struct cookie *out)
{
	enum ba_status rc;
	const char *value = getenv(COOKIE_ENV);
	memset(out, 0, sizeof *out);
	if (cfg->cookie_file != NULL)
		rc = read_cookie_file(cfg->cookie_file, out);
	else if (value != NULL)
		rc = copy_cookie_env(value, out);
	else {
		log_error("there is a manager to talk to but no cookie: set %s (a Batch secret) or --cookie-file",
			  COOKIE_ENV);
		rc = BA_EX_CONFIG;
	}
	cookie_scrub_environment();
	if (rc == BA_OK)
		rc = check_strength(cfg, out);
	if (rc != BA_OK)
		cookie_wipe(out);
	return rc;
}

void cookie_wipe(struct cookie *cookie)
{
	util_wipe_free(cookie->bytes, cookie->length);
	*cookie = (struct cookie){ 0 };
}
