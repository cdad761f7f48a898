/* Building the payload's argv and environment, and starting it. */
#include "launch.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "log.h"
#include "signals.h"
#include "status.h"
#include "util.h"

extern char **environ;

struct placeholder {
	const char *token;
	const char *env;
	const char *value;
};

static enum ba_status expand_argument(const char *arg, int index, const struct placeholder *table, size_t count,
			   char **out)
{
	size_t length = strlen(arg) + 1;
	/* First pass: size the result and refuse placeholders without a value. */
	for (size_t i = 0; i < count; i++) {
		size_t token_length = strlen(table[i].token);
		for (const char *p = strstr(arg, table[i].token); p; p = strstr(p + token_length, table[i].token)) {
			if (table[i].value == NULL) {
				log_error("PROGRAM argument %d uses %s, but this role has no %s to give", index,
					  table[i].token, table[i].env);
				return BA_EX_CONFIG;
			}
			length += strlen(table[i].value);
		}
	}
	char *result = malloc(length);
	if (result == NULL)
		return BA_EX_OSERR;
	char *w = result;
	for (const char *p = arg; *p;) {
		bool replaced = false;
		for (size_t i = 0; i < count && !replaced; i++) {
			size_t token_length = strlen(table[i].token);
			if (strncmp(p, table[i].token, token_length) == 0) {
				size_t value_length = strlen(table[i].value);
				memcpy(w, table[i].value, value_length);
				w += value_length;
				p += token_length;
				replaced = true;
			}
		}
		if (!replaced)
			*w++ = *p++;
	}
	*w = '\0';
	*out = result;
	return BA_OK;
}

static bool is_replaced(const char *entry, const struct placeholder *table, size_t count,
			const char *const *extra_env)
{
	if (strncmp(entry, "BATCH_AGENT_COOKIE=", 19) == 0 || strncmp(entry, "BATCH_AGENT_COOKIE_FD=", 22) == 0 ||
	    strncmp(entry, "BATCH_AGENT_FD=", 15) == 0)
		return true;
	for (size_t i = 0; i < count; i++) {
		size_t name_length = strlen(table[i].env);
		if (table[i].value && strncmp(entry, table[i].env, name_length) == 0 && entry[name_length] == '=')
			return true;
	}
	/* An extra entry (e.g. the manager's JULIA_WORKER_TIMEOUT) replaces an inherited one
	 * of the same name: with both in envp, getenv() would find the inherited one first. */
	for (size_t i = 0; extra_env && extra_env[i]; i++) {
		const char *eq = strchr(extra_env[i], '=');
		size_t name_length = eq ? (size_t)(eq - extra_env[i]) : strlen(extra_env[i]);
		if (strncmp(entry, extra_env[i], name_length) == 0 && entry[name_length] == '=')
			return true;
	}
	return false;
}

static char *format_entry(const char *name, const char *value)
{
	char *entry = NULL;
	if (asprintf(&entry, "%s=%s", name, value) < 0)
		return NULL;
	return entry;
}

enum ba_status launch_prepare(struct payload *payload, const struct config *cfg, const struct launch_vars *vars)
{
	static const struct launch_vars none = { .handover_fd = -1 };
	if (vars == NULL)
		vars = &none;
	const struct placeholder table[] = {
		{ "{{MANAGER}}", "BATCH_AGENT_MANAGER", vars->manager },
		{ "{{NODE_ADDR}}", "BATCH_AGENT_NODE_ADDR", vars->node_addr },
		{ "{{HOSTFILE}}", "BATCH_AGENT_HOSTFILE", vars->hostfile },
		{ "{{NODES}}", "BATCH_AGENT_NODES", vars->nodes },
	};
	const size_t count = sizeof table / sizeof table[0];
	enum ba_status rc = BA_EX_OSERR;
	memset(payload, 0, sizeof *payload);
	payload->stdin_fd = payload->stdout_fd = payload->keep_fd = -1;

	payload->argv = calloc((size_t)cfg->payload_argc + 1, sizeof *payload->argv);
	if (payload->argv == NULL)
		goto fail;
	for (int i = 0; i < cfg->payload_argc; i++) {
		rc = expand_argument(cfg->payload_argv[i], i, table, count, &payload->argv[i]);
		if (rc != BA_OK)
			goto fail;
	}

	size_t inherited = 0, extra = 0;
	while (environ[inherited])
		inherited++;
	while (vars->extra_env && vars->extra_env[extra])
		extra++;
	rc = BA_EX_OSERR;
	payload->envp = calloc(inherited + count + extra + 2, sizeof *payload->envp);
	if (payload->envp == NULL)
		goto fail;
	size_t n = 0;
	for (size_t i = 0; i < inherited; i++) {
		if (is_replaced(environ[i], table, count, vars->extra_env))
			continue;
		if ((payload->envp[n++] = strdup(environ[i])) == NULL)
			goto fail;
	}
	for (size_t i = 0; i < count; i++)
		if (table[i].value && (payload->envp[n++] = format_entry(table[i].env, table[i].value)) == NULL)
			goto fail;
	for (size_t i = 0; i < extra; i++)
		if ((payload->envp[n++] = strdup(vars->extra_env[i])) == NULL)
			goto fail;
	if (vars->handover_fd >= 0) {
		char number[16];
		snprintf(number, sizeof number, "%d", vars->handover_fd);
		if ((payload->envp[n++] = format_entry("BATCH_AGENT_FD", number)) == NULL)
			goto fail;
		payload->keep_fd = vars->handover_fd;
	}
	rc = sandbox_load(cfg->seccomp_profile, cfg->no_new_privs, &payload->sandbox);
	if (rc != BA_OK)
		goto fail;
	return BA_OK;
fail:
	if (rc == BA_EX_OSERR)
		log_error("preparing the payload: out of memory");
	launch_release(payload);
	return rc;
}

void launch_release(struct payload *payload)
{
	for (char **p = payload->argv; p && *p; p++)
		free(*p);
	for (char **p = payload->envp; p && *p; p++)
		free(*p);
	free(payload->argv);
	free(payload->envp);
	payload->argv = payload->envp = NULL;
	sandbox_free(payload->sandbox);
	payload->sandbox = NULL;
}

static int exec_failure_status(int error)
{
	return error == ENOENT || error == ENOTDIR ? BA_EX_NOTFOUND : BA_EX_NOEXEC;
}

static void report_exec_failure(const char *program, int error)
{
	bool has_slash = strchr(program, '/') != NULL;
	if ((error == ENOENT || error == ENOTDIR) && has_slash && access(program, F_OK) == 0)
		/* The file is there, so what execve did not find is its interpreter. */
		log_error("payload \"%s\" cannot be executed: its #! interpreter is missing (or the line ends in "
			  "CR/LF)", program);
	else if ((error == ENOENT || error == ENOTDIR) && !has_slash)
		log_error("payload \"%s\" not found in PATH=%s", program,
			  getenv("PATH") ? getenv("PATH") : "(unset, so the default /bin:/usr/bin)");
	else if (error == ENOENT || error == ENOTDIR)
		log_error("payload \"%s\" not found: %s", program, strerror(error));
	else
		log_error("payload \"%s\" cannot be executed: %s", program, strerror(error));
}

/* In the child: async-signal-safe calls only until exec. */
static enum ba_status prepare_child_fds(const struct payload *payload)
{
	if (payload->stdin_fd >= 0 && dup2(payload->stdin_fd, STDIN_FILENO) < 0)
		return -1;
	if (payload->stdout_fd >= 0 && dup2(payload->stdout_fd, STDOUT_FILENO) < 0)
		return -1;
	if (payload->keep_fd >= 0) {
		int flags = fcntl(payload->keep_fd, F_GETFD);
		if (flags < 0 || fcntl(payload->keep_fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)
			return -1;
	}
	return 0;
}

/* A child that could not enter its sandbox reports the errno with this flag, so that
 * the parent does not call it a failed exec. */
#define SANDBOX_FAILED 0x10000

static void report_sandbox_failure(int error)
{
	log_error("cannot apply --seccomp-profile/--no-new-privs to the payload: %s", strerror(error));
}

enum ba_status launch_exec(const struct payload *payload)
{
	signals_restore_inherited();
	int error = 0;
	if (prepare_child_fds(payload) == 0) {
		if ((error = sandbox_enter(payload->sandbox)) != 0) {
			report_sandbox_failure(error);
			return BA_EX_OSERR;
		}
		execvpe(payload->argv[0], payload->argv, payload->envp);
	}
	error = errno;
	report_exec_failure(payload->argv[0], error);
	return exec_failure_status(error);
}

bool launch_in_foreground(void)
{
	return isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp();
}

/* The forked side of launch_spawn: becomes the payload, or reports why not on
 * report_fd and exits. */
static _Noreturn void become_payload(const struct payload *payload, int report_fd, bool take_terminal, pid_t agent)
{
	/* An agent SIGKILLed while not PID 1 (the OOM killer, a kill -9 under another
	 * init) must not leave its payload running unsupervised: it dies with us, as a
	 * PID namespace's processes die with its init. Checked after, for an agent that
	 * died before the prctl. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != agent)
		_exit(128 + SIGKILL);
	/* Our own process group, and the terminal's foreground when we have one, so
	 * that Ctrl-C and job control reach the payload and not the agent (as tini).
	 * SIGTTOU is still blocked here, so tcsetpgrp works from the background. */
	setpgid(0, 0);
	if (take_terminal)
		tcsetpgrp(STDIN_FILENO, getpid());
	signals_restore_inherited();
	int error = 0;
	if (prepare_child_fds(payload) == 0) {
		if ((error = sandbox_enter(payload->sandbox)) == 0)
			execvpe(payload->argv[0], payload->argv, payload->envp);
	}
	error = error != 0 ? error | SANDBOX_FAILED : errno;
	ssize_t ignored = write(report_fd, &error, sizeof error);
	(void)ignored;
	_exit(exec_failure_status(error));
}

enum ba_status launch_spawn(const struct payload *payload, pid_t *pid_out, bool *took_terminal)
{
	bool take_terminal = payload->stdin_fd < 0 && launch_in_foreground();
	/* The child reports a failed exec through this pipe; a successful exec closes it
	 * (O_CLOEXEC), so the parent's read returns 0 exactly when exec worked. */
	int report[2];
	pid_t pid, agent = getpid();
	enum ba_status rc = util_fork_with_pipe(report, &pid);
	if (rc != BA_OK)
		return rc;
	if (pid == 0) {
		close(report[0]);
		become_payload(payload, report[1], take_terminal, agent);
	}
	close(report[1]);
	/* Also from the parent, so the group exists before we ever signal it. */
	setpgid(pid, pid);
	int error = 0;
	ssize_t n;
	do
		n = read(report[0], &error, sizeof error);
	while (n < 0 && errno == EINTR);
	close(report[0]);
	if (n == (ssize_t)sizeof error && (error & SANDBOX_FAILED) != 0) {
		report_sandbox_failure(error & ~SANDBOX_FAILED);
		waitpid(pid, NULL, 0);
		return BA_EX_OSERR;
	}
	if (n == (ssize_t)sizeof error) {
		report_exec_failure(payload->argv[0], error);
		waitpid(pid, NULL, 0);
		return exec_failure_status(error);
	}
	*pid_out = pid;
	*took_terminal = take_terminal;
	return BA_OK;
}
