/* Small helpers shared by every module. */
#include "util.h"

#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

bool util_parse_long(const char *text, long min, long max, long *out)
{
	if (text == NULL || *text == '\0')
		return false;
	/* strtol would accept leading blanks and a '+'; a setting that looks odd is a
	 * typo more often than intent, so insist on plain digits. */
	const char *digits = text;
	if (*digits == '-' && min < 0)
		digits++;
	if (*digits == '\0')
		return false;
	for (const char *p = digits; *p; p++)
		if (!isdigit((unsigned char)*p))
			return false;
	errno = 0;
	char *end = NULL;
	long value = strtol(text, &end, 10);
	if (errno != 0 || *end != '\0' || value < min || value > max)
		return false;
	*out = value;
	return true;
}

bool util_parse_duration_ms(const char *text, int64_t max_ms, int64_t *out)
{
	if (text == NULL || !isdigit((unsigned char)*text))
		return false;
	int64_t whole = 0;
	const char *p = text;
	for (; isdigit((unsigned char)*p); p++) {
		whole = whole * 10 + (*p - '0');
		if (whole > max_ms / 1000 + 1)
			return false;
	}
	int64_t fraction_ms = 0;
	if (*p == '.') {
		p++;
		int digits = 0;
		for (; isdigit((unsigned char)*p); p++, digits++) {
			if (digits >= 3)
				return false;
			fraction_ms = fraction_ms * 10 + (*p - '0');
		}
		if (digits == 0)
			return false;
		for (; digits < 3; digits++)
			fraction_ms *= 10;
	}
	if (*p != '\0')
		return false;
	int64_t total = whole * 1000 + fraction_ms;
	if (total > max_ms)
		return false;
	*out = total;
	return true;
}

bool util_parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };
	if (text == NULL)
		return false;
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static const struct {
	int number;
	const char *name;
} signal_names[] = {
	{ SIGHUP, "HUP" },   { SIGINT, "INT" },   { SIGQUIT, "QUIT" },     { SIGILL, "ILL" },
	{ SIGTRAP, "TRAP" }, { SIGABRT, "ABRT" }, { SIGBUS, "BUS" },       { SIGFPE, "FPE" },
	{ SIGKILL, "KILL" }, { SIGUSR1, "USR1" }, { SIGSEGV, "SEGV" },     { SIGUSR2, "USR2" },
	{ SIGPIPE, "PIPE" }, { SIGALRM, "ALRM" }, { SIGTERM, "TERM" },     { SIGSTKFLT, "STKFLT" },
	{ SIGCHLD, "CHLD" }, { SIGCONT, "CONT" }, { SIGSTOP, "STOP" },     { SIGTSTP, "TSTP" },
	{ SIGTTIN, "TTIN" }, { SIGTTOU, "TTOU" }, { SIGURG, "URG" },       { SIGXCPU, "XCPU" },
	{ SIGXFSZ, "XFSZ" }, { SIGVTALRM, "VTALRM" }, { SIGPROF, "PROF" }, { SIGWINCH, "WINCH" },
	{ SIGIO, "IO" },     { SIGPWR, "PWR" },   { SIGSYS, "SYS" },
};

int util_signal_parse(const char *text)
{
	if (text == NULL)
		return 0;
	long number;
	if (util_parse_long(text, 1, SIGRTMAX, &number))
		return (int)number;
	if (strncasecmp(text, "SIG", 3) == 0)
		text += 3;
	for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++)
		if (strcasecmp(text, signal_names[i].name) == 0)
			return signal_names[i].number;
	if (strncasecmp(text, "RTMIN", 5) == 0 || strncasecmp(text, "RTMAX", 5) == 0) {
		bool from_min = strncasecmp(text, "RTMIN", 5) == 0;
		const char *offset_text = text + 5;
		long offset = 0;
		if (*offset_text != '\0') {
			if (*offset_text != (from_min ? '+' : '-'))
				return 0;
			if (!util_parse_long(offset_text + 1, 0, SIGRTMAX - SIGRTMIN, &offset))
				return 0;
		}
		return from_min ? SIGRTMIN + (int)offset : SIGRTMAX - (int)offset;
	}
	return 0;
}

const char *util_signal_name(int sig, char *buf, size_t size)
{
	for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++) {
		if (signal_names[i].number == sig) {
			snprintf(buf, size, "SIG%s", signal_names[i].name);
			return buf;
		}
	}
	if (sig >= SIGRTMIN && sig <= SIGRTMAX)
		snprintf(buf, size, "SIGRTMIN+%d", sig - SIGRTMIN);
	else
		snprintf(buf, size, "signal %d", sig);
	return buf;
}

int64_t util_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* n decimal digits at s, within [min, max]. */
static bool fixed_digits(const char *s, int n, int min, int max, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return v >= min && v <= max;
}

/* The zone after the seconds: Z, or +HH:MM / -HH:MM, as seconds east of UTC. */
static bool rfc3339_zone(const char *s, long *east_s)
{
	int hours, minutes;
	if ((s[0] == 'Z' || s[0] == 'z') && s[1] == '\0') {
		*east_s = 0;
		return true;
	}
	if ((s[0] != '+' && s[0] != '-') || strlen(s) != 6 || !fixed_digits(s + 1, 2, 0, 23, &hours) || s[3] != ':' ||
	    !fixed_digits(s + 4, 2, 0, 59, &minutes))
		return false;
	*east_s = (s[0] == '-' ? -1 : 1) * (hours * 3600L + minutes * 60L);
	return true;
}

bool util_parse_rfc3339_ms(const char *s, int64_t *epoch_ms)
{
	struct tm tm = { 0 };
	int year, month, seconds, millis = 0;
	if (strlen(s) < 20 || !fixed_digits(s, 4, 0, 9999, &year) || s[4] != '-' ||
	    !fixed_digits(s + 5, 2, 1, 12, &month) || s[7] != '-' || !fixed_digits(s + 8, 2, 1, 31, &tm.tm_mday) ||
	    (s[10] != 'T' && s[10] != 't') || !fixed_digits(s + 11, 2, 0, 23, &tm.tm_hour) || s[13] != ':' ||
	    !fixed_digits(s + 14, 2, 0, 59, &tm.tm_min) || s[16] != ':' || !fixed_digits(s + 17, 2, 0, 60, &seconds))
		return false;
	const char *p = s + 19;
	if (*p == '.') {
		int scale = 100;
		if (!(*++p >= '0' && *p <= '9'))
			return false;
		for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
			millis += (*p - '0') * scale;
	}
	long east_s;
	if (!rfc3339_zone(p, &east_s))
		return false;
	tm.tm_year = year - 1900;
	tm.tm_mon = month - 1;
	tm.tm_sec = seconds;
	time_t t = timegm(&tm);
	*epoch_ms = ((int64_t)t - east_s) * 1000 + millis;
	return true;
}

void util_wipe(void *p, size_t n)
{
	if (p == NULL || n == 0)
		return;
	/* explicit_bzero is glibc's guaranteed-not-elided memset. */
	explicit_bzero(p, n);
}

static size_t page_round(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (size + page - 1) / page * page;
}

void *util_secret_alloc(size_t size)
{
	size_t length = page_round(size ? size : 1);
	void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Both are hardening, not correctness: an older kernel without them still gets
	 * the wiping. */
	madvise(p, length, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
	madvise(p, length, MADV_WIPEONFORK);
#endif
	return p;
}

void util_secret_free(void *p, size_t size)
{
	if (p == NULL)
		return;
	size_t length = page_round(size ? size : 1);
	util_wipe(p, length);
	munmap(p, length);
}

void util_protect_process(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		log_warn("prctl(PR_SET_DUMPABLE, 0): %m: a core dump of this process could hold the cookie");
}

void util_scrub_env(const char *name)
{
	char *value = getenv(name);
	if (value == NULL)
		return;
	util_wipe(value, strlen(value));
	unsetenv(name);
}

bool util_url_safe_for_secrets(const char *url)
{
	if (strncasecmp(url, "https://", 8) == 0)
		return true;
	if (strncasecmp(url, "http://", 7) != 0)
		return false;
	const char *host = url + 7;
	size_t length = strcspn(host, "/?#");
	char authority[64];
	if (length == 0 || length >= sizeof authority)
		return false;
	memcpy(authority, host, length);
	authority[length] = '\0';
	/* HOST or HOST:PORT, with an IPv6 HOST in brackets; the port all digits. */
	char *port = NULL;
	char *name = authority;
	if (authority[0] == '[') {
		char *close = strchr(authority, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			return false;
		*close = '\0';
		name = authority + 1;
		port = close[1] == ':' ? close + 2 : NULL;
	} else if ((port = strchr(authority, ':')) != NULL) {
		*port++ = '\0';
	}
	if (port != NULL && (port[0] == '\0' || strspn(port, "0123456789") != strlen(port)))
		return false;
	struct in_addr a4;
	struct in6_addr a6;
	if (name == authority && inet_pton(AF_INET, name, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return name != authority && inet_pton(AF_INET6, name, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

const char *util_url_origin(const char *url, char *buf, size_t size)
{
	const char *sep = strstr(url, "://");
	size_t scheme = sep != NULL ? (size_t)(sep - url) + 3 : 0;
	const char *authority = url + scheme;
	size_t length = strcspn(authority, "/?#");
	/* userinfo ends at the authority's last '@'. */
	for (size_t i = length; i > 0; i--) {
		if (authority[i - 1] == '@') {
			authority += i;
			length -= i;
			break;
		}
	}
	snprintf(buf, size, "%.*s%.*s", (int)scheme, url, (int)length, authority);
	return buf;
}

void util_ensure_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* open returns the lowest free number: this one. */
		int opened = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
		if (opened >= 0 && opened != fd)
			close(opened);
	}
}

enum ba_status util_fork_with_pipe(int fds[2], pid_t *pid)
{
	if (pipe2(fds, O_CLOEXEC) < 0) {
		log_error("pipe2: %m");
		return BA_EX_OSERR;
	}
	*pid = fork();
	if (*pid >= 0)
		return BA_OK;
	log_error("fork: %m");
	close(fds[0]);
	close(fds[1]);
	return BA_EX_OSERR;
}

void util_wipe_free(void *p, size_t n)
{
	if (p == NULL)
		return;
	util_wipe(p, n);
	free(p);
}

enum ba_status util_write_all(int fd, const void *data, size_t length)
{
	const char *bytes = data;
	size_t done = 0;
	while (done < length) {
		ssize_t n = write(fd, bytes + done, length - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return BA_EX_OSERR;
		done += (size_t)n;
	}
	return BA_OK;
}

cJSON *util_json_parse(const char *text, size_t len, size_t *error_at)
{
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (root == NULL)
		end = cJSON_GetErrorPtr();
	else
		while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
			end++;
	if (root != NULL && end == text + len)
		return root;
	cJSON_Delete(root);
	if (error_at != NULL)
		*error_at = end != NULL && end >= text && end <= text + len ? (size_t)(end - text) : 0;
	return NULL;
}

/* Where the agent may write without asking: a writable directory. */
static bool usable_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(path, W_OK | X_OK) == 0;
}

const char *util_temp_dir(char *buf, size_t size)
{
	const char *dir = getenv("TMPDIR");
	char resolved[PATH_MAX];
	if (dir == NULL || dir[0] == '\0') {
		/* Images built FROM scratch, and some distroless ones, have no /tmp. A root we
		 * may write makes one (as a container's /tmp is: 1777); a read-only one still
		 * has the runtime's /dev/shm. Failing all, /tmp, and the error names it. */
		if (usable_dir("/tmp") || (mkdir("/tmp", 01777) == 0 && chmod("/tmp", 01777) == 0))
			dir = "/tmp";
		else if (usable_dir("/dev/shm"))
			dir = "/dev/shm";
		else
			dir = "/tmp";
	}
	/* Absolute, whatever TMPDIR says: the agent moves to / once the payload runs, and
	 * removes its files from there. */
	if (dir[0] != '/' && realpath(dir, resolved) != NULL)
		dir = resolved;
	snprintf(buf, size, "%s", dir);
	return buf;
}
