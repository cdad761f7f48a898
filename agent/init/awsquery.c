/* Running the AWS helper program. */
#include "awsquery.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chainload.h"
#include "log.h"
#include "signals.h"
#include "status.h"
#include "util.h"
#include "wait.h"

#define MAX_OUTPUT (1024 * 1024)
#define MAX_ARGS 32
#define FIXED_ARGS 5

extern char **environ;

enum ba_status awsquery_spawn(const char *const *args, pid_t *pid_out, int *stdout_fd)
{
	char path[PATH_MAX];
	char *argv[FIXED_ARGS + MAX_ARGS + 1];
	size_t n = 0;
	enum ba_status rc = chainload_find_helper("batch-agent-aws", path, sizeof path);
	if (rc != BA_OK)
		return rc;
	argv[n++] = "batch-agent-aws";
	/* The helper logs in our style, so its lines read like ours. */
	argv[n++] = "--log-level";
	argv[n++] = (char *)log_level_name(log_get_level());
	argv[n++] = "--log-format";
	argv[n++] = (char *)log_format_name(log_get_format());
	for (size_t i = 0; args[i] && n < FIXED_ARGS + MAX_ARGS; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;

	int fds[2];
	pid_t pid;
	rc = util_fork_with_pipe(fds, &pid);
	if (rc != BA_OK)
		return rc;
	if (pid == 0) {
		/* The helper must die of SIGTERM like any program: give it the signal state
		 * we inherited, not the agent's blocked mask. Its own process group keeps a
		 * Ctrl-C on our terminal for the agent, which decides what to do. */
		setpgid(0, 0);
		signals_restore_inherited();
		if (dup2(fds[1], STDOUT_FILENO) >= 0)
			execve(path, argv, environ);
		/* After fork, so no log_*: stdio is not ours to use in the child. */
		const char *reason = strerror(errno);
		const struct iovec parts[] = { { "batch-agent: cannot execute ", 28 }, { path, strlen(path) },
					       { ": ", 2 }, { (void *)reason, strlen(reason) }, { "\n", 1 } };
		ssize_t ignored = writev(STDERR_FILENO, parts, 5);
		(void)ignored;
		_exit(BA_EX_SOFTWARE);
	}
	close(fds[1]);
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	*pid_out = pid;
	*stdout_fd = fds[0];
	return BA_OK;
}

enum ba_status awsquery_run(const char *const *args, int64_t timeout_ms, cJSON **out)
{
	return awsquery_run_signals(args, timeout_ms, out, WAIT_SIGNALS_END, NULL);
}

enum ba_status awsquery_run_signals(const char *const *args, int64_t timeout_ms, cJSON **out,
				    enum wait_signals signals, int *held)
{
	pid_t pid;
	int fd;
	char *output = NULL;
	size_t length = 0;
	int64_t deadline = util_now_ms() + timeout_ms;
	const char *command = args[0]; /* for the log: the first argument that is no option's */
	for (size_t i = 0; args[i]; i++)
		if (args[i][0] != '-' && (i == 0 || args[i - 1][0] != '-')) {
			command = args[i];
			break;
		}
	/* Room for the whole answer first: a helper we could not read from is one to kill. */
	if ((output = malloc(MAX_OUTPUT + 1)) == NULL)
		return BA_EX_OSERR;
	enum ba_status rc = awsquery_spawn(args, &pid, &fd);
	if (rc != BA_OK) {
		free(output);
		return rc;
	}
	for (;;) {
		int64_t left = deadline - util_now_ms();
		if (left <= 0) {
			log_error("batch-agent-aws %s did not finish within %.1f s", command, (double)timeout_ms / 1000.0);
			rc = BA_EX_UNAVAILABLE;
			goto reap;
		}
		/* A SIGTERM while we wait (Batch stopping the job before its payload even
		 * started) ends the query at once: the stop timeout is not ours to spend. */
		bool ready;
		rc = wait_fd_signals(fd, POLLIN, deadline, &ready, signals, held);
		if (rc != BA_OK)
			goto reap;
		if (!ready)
			continue;
		ssize_t got = read(fd, output + length, MAX_OUTPUT - length);
		if (got == 0)
			break;
		if (got < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (got < 0 || (length += (size_t)got) >= MAX_OUTPUT) {
			log_error("batch-agent-aws %s: unreadable or oversized output", command);
			rc = BA_EX_SOFTWARE;
			goto reap;
		}
	}
	output[length] = '\0';
reap:
	if (rc != BA_OK)
		kill(pid, SIGKILL);
	int wait_status = 0;
	while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR)
		;
	close(fd);
	if (rc == BA_OK) {
		if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == BA_EX_NOTFOUND) {
			/* The helper never exits 127; a dynamic loader does, when a library is
			 * missing (it said which, on stderr). That is a broken installation, not
			 * a payload that was not found. */
			char path[PATH_MAX] = "batch-agent-aws";
			chainload_find_helper("batch-agent-aws", path, sizeof path);
			log_error("%s could not be loaded (the loader's reason is above, status 127): "
				  "its libraries are missing from the image; install the bundle", path);
			rc = BA_EX_SOFTWARE;
		} else if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) != 0) {
			rc = WEXITSTATUS(wait_status); /* the helper said why, on stderr */
		} else if (!WIFEXITED(wait_status)) {
			log_error("batch-agent-aws %s died of signal %d", command, WTERMSIG(wait_status));
			rc = BA_EX_SOFTWARE;
		} else if ((*out = util_json_parse(output, strlen(output), NULL)) == NULL) {
			log_error("batch-agent-aws %s printed no JSON", command);
			rc = BA_EX_SOFTWARE;
		}
	}
	free(output);
	return rc;
}
