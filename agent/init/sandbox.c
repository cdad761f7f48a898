/* The payload's sandbox: a Docker-format seccomp profile into a libseccomp filter. */
#include "sandbox.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define PROFILE_MAX (1 << 20)

struct sandbox {
	scmp_filter_ctx filter; /* NULL: no profile */
	bool no_new_privs;
};

/* One profile being read: its name for errors, and what includes/excludes test. */
struct reader {
	const char *path;
	uint64_t caps; /* the agent's effective capabilities */
	int kernel[2]; /* major, minor */
};

static bool fail(const struct reader *r, const char *entry, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(const struct reader *r, const char *entry, const char *fmt, ...)
{
	char why[512];
	va_list args;
	va_start(args, fmt);
	vsnprintf(why, sizeof why, fmt, args);
	va_end(args);
	log_error("seccomp profile %s (--seccomp-profile): %s: %s", r->path, entry, why);
	return false;
}

/* Docker's names for this machine in includes/excludes "arches". */
#if defined(__x86_64__)
#define NATIVE_ARCH "amd64"
#define NATIVE_SCMP_ARCH "SCMP_ARCH_X86_64"
#elif defined(__aarch64__)
#define NATIVE_ARCH "arm64"
#define NATIVE_SCMP_ARCH "SCMP_ARCH_AARCH64"
#elif defined(__i386__)
#define NATIVE_ARCH "x86"
#define NATIVE_SCMP_ARCH "SCMP_ARCH_X86"
#else
#define NATIVE_ARCH ""
#define NATIVE_SCMP_ARCH ""
#endif

static const char *const cap_names[] = {
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE",
};

static int cap_number(const char *name)
{
	if (strncmp(name, "CAP_", 4) == 0)
		name += 4;
	for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
		if (strcmp(name, cap_names[i]) == 0)
			return (int)i;
	return -1;
}

static uint64_t effective_caps(void)
{
	struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2] = { { 0 } };
	if (syscall(SYS_capget, &header, data) != 0)
		return 0;
	return (uint64_t)data[0].effective | (uint64_t)data[1].effective << 32;
}

static const cJSON *string_array(const struct reader *r, const cJSON *parent, const char *key, const char *entry,
				 bool *ok)
{
	const cJSON *array = cJSON_GetObjectItemCaseSensitive(parent, key);
	const cJSON *item;
	if (array == NULL || cJSON_IsNull(array))
		return NULL;
	if (!cJSON_IsArray(array))
		*ok = fail(r, entry, "\"%s\" is not an array", key);
	cJSON_ArrayForEach(item, array) if (*ok && !cJSON_IsString(item))
		*ok = fail(r, entry, "\"%s\" holds something that is not a string", key);
	return *ok ? array : NULL;
}

static bool in_array(const cJSON *array, const char *text)
{
	const cJSON *item;
	cJSON_ArrayForEach(item, array) if (strcmp(item->valuestring, text) == 0) return true;
	return false;
}

/* Docker's rules for one entry: it applies when everything in "includes" holds (this
 * machine among the arches, every cap held, the kernel at least minKernel) and nothing
 * in "excludes" does (this machine among the arches, any cap held). */
static bool entry_applies(const struct reader *r, const cJSON *call, const char *entry, bool *ok)
{
	const char *const keys[] = { "includes", "excludes" };
	bool applies = true;
	for (int k = 0; k < 2 && *ok; k++) {
		bool include = k == 0;
		const cJSON *cond = cJSON_GetObjectItemCaseSensitive(call, keys[k]), *item;
		if (cond == NULL || cJSON_IsNull(cond))
			continue;
		if (!cJSON_IsObject(cond)) {
			*ok = fail(r, entry, "\"%s\" is not an object", keys[k]);
			break;
		}
		const cJSON *arches = string_array(r, cond, "arches", entry, ok);
		const cJSON *caps = string_array(r, cond, "caps", entry, ok);
		if (arches != NULL && cJSON_GetArraySize(arches) > 0 && in_array(arches, NATIVE_ARCH) != include)
			applies = false;
		cJSON_ArrayForEach(item, caps)
		{
			int n = cap_number(item->valuestring);
			if (n < 0) {
				*ok = fail(r, entry, "unknown capability \"%s\"", item->valuestring);
				break;
			}
			if ((((r->caps >> n) & 1) != 0) != include)
				applies = false;
		}
		const cJSON *min = cJSON_GetObjectItemCaseSensitive(cond, "minKernel");
		int major, minor;
		if (!include || min == NULL || cJSON_IsNull(min) || !*ok)
			continue;
		if (!cJSON_IsString(min) || sscanf(min->valuestring, "%d.%d", &major, &minor) != 2)
			*ok = fail(r, entry, "minKernel is not a \"MAJOR.MINOR\" string");
		else if (r->kernel[0] < major || (r->kernel[0] == major && r->kernel[1] < minor))
			applies = false;
	}
	return applies;
}

static bool read_errno(const struct reader *r, const cJSON *parent, const char *key, uint32_t fallback,
		       const char *entry, uint32_t *out)
{
	const cJSON *value = cJSON_GetObjectItemCaseSensitive(parent, key);
	*out = fallback;
	if (value == NULL || cJSON_IsNull(value))
		return true;
	if (!cJSON_IsNumber(value) || value->valuedouble < 0 || value->valuedouble > 4095 ||
	    value->valuedouble != (double)(int)value->valuedouble)
		return fail(r, entry, "\"%s\" is not an errno number from 0 to 4095", key);
	*out = (uint32_t)value->valueint;
	return true;
}

static bool parse_action(const struct reader *r, const cJSON *name, uint32_t errno_ret, const char *entry,
			 uint32_t *out)
{
	static const struct {
		const char *name;
		uint32_t action;
	} plain[] = {
		{ "SCMP_ACT_ALLOW", SCMP_ACT_ALLOW },		  { "SCMP_ACT_KILL", SCMP_ACT_KILL_THREAD },
		{ "SCMP_ACT_KILL_THREAD", SCMP_ACT_KILL_THREAD }, { "SCMP_ACT_KILL_PROCESS", SCMP_ACT_KILL_PROCESS },
		{ "SCMP_ACT_TRAP", SCMP_ACT_TRAP },		  { "SCMP_ACT_LOG", SCMP_ACT_LOG },
	};
	if (!cJSON_IsString(name))
		return fail(r, entry, "no action (a string such as \"SCMP_ACT_ERRNO\")");
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
		if (strcmp(name->valuestring, plain[i].name) == 0)
			return *out = plain[i].action, true;
	if (strcmp(name->valuestring, "SCMP_ACT_ERRNO") == 0)
		return *out = SCMP_ACT_ERRNO(errno_ret), true;
	if (strcmp(name->valuestring, "SCMP_ACT_TRACE") == 0)
		return *out = SCMP_ACT_TRACE(errno_ret), true;
	if (strcmp(name->valuestring, "SCMP_ACT_NOTIFY") == 0)
		return fail(r, entry, "SCMP_ACT_NOTIFY needs a listener, which batch-agent does not provide");
	return fail(r, entry, "unknown action \"%s\"", name->valuestring);
}

static bool parse_arg(const struct reader *r, const cJSON *arg, const char *entry, struct scmp_arg_cmp *out)
{
	static const char *const ops[] = { NULL, "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
					   "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ" };
	const cJSON *index = cJSON_GetObjectItemCaseSensitive(arg, "index");
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(arg, "op");
	const char *keys[] = { "value", "valueTwo" };
	uint64_t values[2] = { 0, 0 };
	if (!cJSON_IsNumber(index) || index->valuedouble < 0 || index->valuedouble > 5 ||
	    index->valuedouble != (double)index->valueint)
		return fail(r, entry, "an argument's \"index\" is not 0 to 5");
	for (int i = 0; i < 2; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(arg, keys[i]);
		/* JSON numbers are doubles here: exact only up to 2^53. */
		if (v != NULL && (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
				  v->valuedouble != (double)(uint64_t)v->valuedouble))
			return fail(r, entry, "argument %d: \"%s\" is not an integer from 0 to 2^53", index->valueint,
				    keys[i]);
		values[i] = v ? (uint64_t)v->valuedouble : 0;
	}
	for (int i = 1; i < (int)(sizeof ops / sizeof ops[0]); i++) {
		if (cJSON_IsString(op) && strcmp(op->valuestring, ops[i]) == 0) {
			*out = (struct scmp_arg_cmp){ (unsigned)index->valueint, (enum scmp_compare)i, values[0], values[1] };
			return true;
		}
	}
	return fail(r, entry, "argument %d: unknown op \"%s\"", index->valueint,
		    cJSON_IsString(op) ? op->valuestring : "(none)");
}

static bool add_entry(const struct reader *r, scmp_filter_ctx filter, const cJSON *call, int i, uint32_t default_action,
		      uint32_t default_errno)
{
	const cJSON *names = cJSON_GetObjectItemCaseSensitive(call, "names");
	const cJSON *single = cJSON_GetObjectItemCaseSensitive(call, "name");
	char entry[160];
	const cJSON *first = cJSON_IsArray(names) ? cJSON_GetArrayItem(names, 0) : single;
	snprintf(entry, sizeof entry, "syscalls[%d] (%.80s)", i, cJSON_IsString(first) ? first->valuestring : "?");
	if (!cJSON_IsObject(call))
		return fail(r, entry, "not an object");
	if (!cJSON_IsArray(names) && !cJSON_IsString(single))
		return fail(r, entry, "no \"names\" array");
	bool ok = true;
	bool applies = entry_applies(r, call, entry, &ok);
	uint32_t errno_ret, action;
	if (!ok || !read_errno(r, call, "errnoRet", default_errno, entry, &errno_ret) ||
	    !parse_action(r, cJSON_GetObjectItemCaseSensitive(call, "action"), errno_ret, entry, &action))
		return false;
	struct scmp_arg_cmp args[6];
	unsigned count = 0;
	const cJSON *arg, *list = cJSON_GetObjectItemCaseSensitive(call, "args");
	if (list != NULL && !cJSON_IsNull(list) && !cJSON_IsArray(list))
		return fail(r, entry, "\"args\" is not an array");
	cJSON_ArrayForEach(arg, list)
	{
		if (count == 6)
			return fail(r, entry, "more than 6 argument conditions");
		if (!parse_arg(r, arg, entry, &args[count++]))
			return false;
	}
	const cJSON *name, *name_list = cJSON_IsArray(names) ? names : NULL;
	cJSON_ArrayForEach(name, name_list)
	{
		if (!cJSON_IsString(name))
			return fail(r, entry, "a name that is not a string");
	}
	for (const cJSON *n = cJSON_IsArray(names) ? names->child : single; n != NULL;
	     n = cJSON_IsArray(names) ? n->next : NULL) {
		int nr = seccomp_syscall_resolve_name(n->valuestring);
		if (nr == __NR_SCMP_ERROR)
			return fail(r, entry, "unknown system call \"%s\"", n->valuestring);
		/* As runc: a rule that does what the default does is no rule (libseccomp
		 * refuses it), and an entry for another machine is skipped. */
		if (!applies || action == default_action)
			continue;
		int err = seccomp_rule_add_array(filter, action, nr, count, args);
		if (err != 0)
			return fail(r, entry, "libseccomp refuses the rule for \"%s\": %s", n->valuestring, strerror(-err));
	}
	return true;
}

/* archMap (Docker's default profile): the subarchitectures of this machine's entry. */
static const cJSON *arch_map_entry(const struct reader *r, const cJSON *profile, bool *ok)
{
	const cJSON *entry, *map = cJSON_GetObjectItemCaseSensitive(profile, "archMap");
	if (!cJSON_IsArray(map))
		return NULL;
	cJSON_ArrayForEach(entry, map)
	{
		const cJSON *arch = cJSON_GetObjectItemCaseSensitive(entry, "architecture");
		if (cJSON_IsString(arch) && strcmp(arch->valuestring, NATIVE_SCMP_ARCH) == 0)
			return string_array(r, entry, "subArchitectures", "archMap", ok);
	}
	return NULL;
}

static bool add_architectures(const struct reader *r, scmp_filter_ctx filter, const cJSON *profile)
{
	bool ok = true;
	const cJSON *arch, *list = string_array(r, profile, "architectures", "architectures", &ok);
	if (ok && (list == NULL || cJSON_GetArraySize(list) == 0))
		list = arch_map_entry(r, profile, &ok);
	cJSON_ArrayForEach(arch, list)
	{
		char name[32];
		const char *text = arch->valuestring;
		if (strncmp(text, "SCMP_ARCH_", 10) == 0)
			text += 10;
		size_t n = 0;
		for (; text[n] && n + 1 < sizeof name; n++)
			name[n] = (char)tolower((unsigned char)text[n]);
		name[n] = '\0';
		uint32_t token = seccomp_arch_resolve_name(name);
		if (token == 0)
			return fail(r, "architectures", "unknown architecture \"%s\"", arch->valuestring);
		int err = seccomp_arch_add(filter, token);
		if (err != 0 && err != -EEXIST)
			return fail(r, "architectures", "%s: %s", arch->valuestring, strerror(-err));
	}
	return ok;
}

static bool build_filter(const struct reader *r, const cJSON *profile, scmp_filter_ctx *out)
{
	uint32_t default_errno, default_action;
	if (!cJSON_IsObject(profile))
		return fail(r, "the document", "not a JSON object");
	if (!read_errno(r, profile, "defaultErrnoRet", EPERM, "defaultErrnoRet", &default_errno) ||
	    !parse_action(r, cJSON_GetObjectItemCaseSensitive(profile, "defaultAction"), default_errno, "defaultAction",
			  &default_action))
		return false;
	scmp_filter_ctx filter = seccomp_init(default_action);
	if (filter == NULL)
		return fail(r, "defaultAction", "libseccomp cannot start a filter with it");
	/* The kernel installs a filter for a process without CAP_SYS_ADMIN only under
	 * no_new_privs: libseccomp sets it at load (its default), as docs say. */
	bool ok = add_architectures(r, filter, profile);
	const cJSON *call, *calls = cJSON_GetObjectItemCaseSensitive(profile, "syscalls");
	if (ok && calls != NULL && !cJSON_IsNull(calls) && !cJSON_IsArray(calls))
		ok = fail(r, "syscalls", "not an array");
	int i = 0;
	const cJSON *call_list = ok ? calls : NULL;
	cJSON_ArrayForEach(call, call_list)
	{
		if (!(ok = add_entry(r, filter, call, i++, default_action, default_errno)))
			break;
	}
	if (!ok) {
		seccomp_release(filter);
		return false;
	}
	*out = filter;
	return true;
}

static char *read_profile(const char *path, size_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	char *text = malloc(PROFILE_MAX + 1);
	size_t length = 0;
	ssize_t n = 0;
	if (fd < 0 || text == NULL) {
		log_error("seccomp profile %s (--seccomp-profile): %s", path, fd < 0 ? strerror(errno) : "out of memory");
		goto fail;
	}
	while (length <= PROFILE_MAX && (n = read(fd, text + length, PROFILE_MAX + 1 - length)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error("seccomp profile %s (--seccomp-profile): %s", path, strerror(errno));
			goto fail;
		}
		length += (size_t)n;
	}
	if (length > PROFILE_MAX) {
		log_error("seccomp profile %s (--seccomp-profile) is larger than %d bytes", path, PROFILE_MAX);
		goto fail;
	}
	text[length] = '\0';
	close(fd);
	*size = length;
	return text;
fail:
	if (fd >= 0)
		close(fd);
	free(text);
	return NULL;
}

enum ba_status sandbox_load(const char *profile_path, bool no_new_privs, struct sandbox **out)
{
	*out = NULL;
	if (profile_path == NULL && !no_new_privs)
		return BA_OK;
	struct sandbox *sandbox = calloc(1, sizeof *sandbox);
	if (sandbox == NULL)
		return BA_EX_OSERR;
	sandbox->no_new_privs = no_new_privs;
	if (profile_path != NULL) {
		struct utsname uts;
		struct reader r = { .path = profile_path, .caps = effective_caps() };
		if (uname(&uts) == 0)
			sscanf(uts.release, "%d.%d", &r.kernel[0], &r.kernel[1]);
		size_t size = 0, error_at = 0;
		char *text = read_profile(profile_path, &size);
		cJSON *profile = text ? util_json_parse(text, size, &error_at) : NULL;
		bool ok = profile != NULL;
		if (text != NULL && profile == NULL)
			log_error("seccomp profile %s (--seccomp-profile) is not JSON (near byte %zu)", profile_path,
				  error_at);
		ok = ok && build_filter(&r, profile, &sandbox->filter);
		cJSON_Delete(profile);
		free(text);
		if (!ok) {
			free(sandbox);
			return BA_EX_CONFIG;
		}
	}
	*out = sandbox;
	return BA_OK;
}

int sandbox_enter(const struct sandbox *sandbox)
{
	if (sandbox == NULL)
		return 0;
	if (sandbox->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return errno;
	if (sandbox->filter != NULL) {
		int err = seccomp_load(sandbox->filter);
		if (err != 0)
			return -err;
	}
	return 0;
}

void sandbox_free(struct sandbox *sandbox)
{
	if (sandbox == NULL)
		return;
	if (sandbox->filter != NULL)
		seccomp_release(sandbox->filter);
	free(sandbox);
}
