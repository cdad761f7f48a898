/* Loading, scrubbing and wiping the cookie. */
#include "cookie.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
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
/* The descriptor batch-agent hands the cookie over in (init/chainload.c), and its size:
 * room for COOKIE_MAX bytes, a final CR LF, and one byte to notice a longer one. */
#define COOKIE_FD_ENV "BATCH_AGENT_COOKIE_FD"
#define COOKIE_BUFFER (COOKIE_MAX + 3)

static int handover_fd = -1;

enum ba_status cookie_alloc(struct cookie *out)
{
	*out = (struct cookie){ util_secret_alloc(COOKIE_BUFFER), 0 };
	return out->bytes ? BA_OK : BA_EX_OSERR;
}

enum ba_status cookie_claim_handover(void)
{
	const char *text = getenv(COOKIE_FD_ENV);
	long fd;
	if (text == NULL)
		return BA_OK;
	if (!util_parse_long(text, 3, INT_MAX, &fd) || fcntl((int)fd, F_SETFD, FD_CLOEXEC) != 0) {
		log_error("%s=\"%s\" is not an open descriptor: batch-agent-net is chain-loaded by batch-agent, "
			  "which sets it",
			  COOKIE_FD_ENV, text);
		return BA_EX_SOFTWARE;
	}
	handover_fd = (int)fd;
	unsetenv(COOKIE_FD_ENV);
	return BA_OK;
}

void cookie_scrub_environment(void)
{
	char *value = getenv(COOKIE_ENV);
	if (handover_fd >= 0)
		close(handover_fd);
	handover_fd = -1;
	if (value == NULL)
		return;
	/* getenv points into the initial environment block, which is what the kernel
	 * shows in /proc/<pid>/environ: zero it there, then drop the entry. */
	util_wipe(value, strlen(value));
	unsetenv(COOKIE_ENV);
}

/* Up to COOKIE_MAX bytes from fd, to its end, into a secret buffer; `what` names the
 * source in errors. A file may end in a newline (LF or CR LF) that is not part of it:
 * the buffer has room for those two bytes and one more, to tell a longer cookie. */
static enum ba_status read_cookie_stream(int fd, const char *what, bool strip_newline, struct cookie *out)
{
	enum ba_status rc = cookie_alloc(out);
	while (rc == BA_OK && out->length < COOKIE_BUFFER) {
		ssize_t n = read(fd, out->bytes + out->length, COOKIE_BUFFER - out->length);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error("%s: %s", what, strerror(errno));
			rc = BA_EX_CONFIG;
		} else if (n == 0) {
			break;
		} else {
			out->length += (size_t)n;
		}
	}
	/* Editors and `echo` add a final newline that nobody means as part of a secret. */
	if (rc == BA_OK && strip_newline && out->length > 0 && out->bytes[out->length - 1] == '\n') {
		out->length--;
		if (out->length > 0 && out->bytes[out->length - 1] == '\r')
			out->length--;
	}
	if (rc == BA_OK && out->length > COOKIE_MAX) {
		log_error("%s is longer than %d bytes", what, COOKIE_MAX);
		rc = BA_EX_CONFIG;
	}
	if (rc != BA_OK)
		cookie_wipe(out);
	return rc;
}

static enum ba_status read_cookie_file(const char *path, struct cookie *out)
{
	char what[PATH_MAX + 32];
	snprintf(what, sizeof what, "cookie file %s (--cookie-file)", path);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		log_error("%s: %s", what, strerror(errno));
		return BA_EX_CONFIG;
	}
	struct stat info;
	if (fstat(fd, &info) == 0 && (info.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		log_warn("cookie file %s is readable by group or others (mode %03o): chmod 600 it", path,
			 (unsigned)(info.st_mode & 0777));
	enum ba_status rc = read_cookie_stream(fd, what, true, out);
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
	enum ba_status rc = cookie_alloc(out);
	if (rc != BA_OK)
		return rc;
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
	else if (handover_fd >= 0)
		rc = read_cookie_stream(handover_fd, COOKIE_ENV, false, out);
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
	util_secret_free(cookie->bytes, COOKIE_BUFFER);
	*cookie = (struct cookie){ 0 };
}
