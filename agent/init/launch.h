/* The last stage: run the payload, either by becoming it (exec) or by supervising it.
 *
 * launch_prepare builds the payload's argv and environment: the agent's environment
 * minus the cookie, plus what the earlier stages learned (BATCH_AGENT_MANAGER,
 * BATCH_AGENT_NODE_ADDR, BATCH_AGENT_HOSTFILE, BATCH_AGENT_NODES, BATCH_AGENT_FD), and
 * {{NAME}} placeholders in the arguments replaced by the same values, because
 * exec-form ENTRYPOINT/CMD expands no variables. */
#ifndef BATCH_AGENT_LAUNCH_H
#define BATCH_AGENT_LAUNCH_H

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "sandbox.h"
#include "status.h"

struct launch_vars {
	const char *manager;   /* BATCH_AGENT_MANAGER, {{MANAGER}} */
	const char *node_addr; /* BATCH_AGENT_NODE_ADDR, {{NODE_ADDR}} */
	const char *hostfile;  /* BATCH_AGENT_HOSTFILE, {{HOSTFILE}} */
	const char *nodes;     /* BATCH_AGENT_NODES, {{NODES}} */
	int handover_fd;       /* BATCH_AGENT_FD; -1 for none */
	const char *const *extra_env; /* more NAME=VALUE entries, NULL-terminated, or NULL */
};

struct payload {
	char **argv;  /* owned */
	char **envp;  /* owned */
	int stdin_fd;  /* dup2'd onto 0 in the payload; -1 to inherit */
	int stdout_fd; /* dup2'd onto 1 in the payload; -1 to inherit */
	int keep_fd;   /* an agent descriptor the payload inherits (cleared CLOEXEC); -1 */
	struct sandbox *sandbox; /* owned: entered just before exec; NULL for none */
};

enum ba_status launch_prepare(struct payload *payload, const struct config *cfg, const struct launch_vars *vars);
void launch_release(struct payload *payload);

/* Replace the agent with the payload. Returns only on failure, with 126 or 127. */
enum ba_status launch_exec(const struct payload *payload);

/* Fork and exec the payload in its own process group. When the agent is in the
 * foreground of the terminal on its stdin, the payload takes that foreground over
 * (*took_terminal), so that Ctrl-C and job control reach it. BA_OK with *pid once exec
 * has succeeded; 126 or 127 (already reported and reaped) when it could not. */
enum ba_status launch_spawn(const struct payload *payload, pid_t *pid, bool *took_terminal);

/* True when stdin is a terminal whose foreground is our process group: only then may
 * the agent hand it to the payload (a background job that did so would take the
 * terminal from its shell). */
bool launch_in_foreground(void);

#endif
