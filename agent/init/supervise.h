/* The init: runs the payload and stays its correct parent.
 *
 * It reaps every child, orphans included (as PID 1, or as a child subreaper when it is
 * not PID 1); forwards every signal it receives to the payload (or its process group
 * with -g), except SIGCHLD, after --rewrite-signal; on SIGTERM forwards it (rewritten or
 * not) and SIGKILLs the payload's group after the grace period; when the payload exits,
 * terminates whatever it left running (SIGTERM, then SIGKILL after the grace period)
 * and reports the payload's status after --remap-exit. Once the payload runs, the agent
 * works from "/", so that it pins no mount the payload's directory is on.
 *
 * After a Spot interruption notice (and no terminating signal), the report waits, with
 * nothing else running, until the host goes or the notice's time plus --spot-hold has
 * passed; a terminating signal ends that wait at once (see hold() in supervise.c).
 *
 * Everything happens in the caller's loop, so roles with a network side (the worker's
 * session, the main node's rendezvous) share the agent's single blocking wait. */
#ifndef BATCH_AGENT_SUPERVISE_H
#define BATCH_AGENT_SUPERVISE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "launch.h"
#include "loop.h"
#include "status.h"

struct supervise_opts {
	bool group;         /* -g */
	int64_t grace_ms;   /* --grace */
	bool spot_watch;    /* watch for Spot notices while the payload runs */
	bool spot_required; /* --spot-watch on: say so when it cannot */
	int spot_signal;    /* --spot-signal, sent on an interruption notice */
	int64_t spot_hold_ms; /* --spot-hold margin, or CONFIG_SPOT_HOLD_OFF */
	struct config_pairs remap_exit;     /* --remap-exit */
	struct config_pairs rewrite_signal; /* --rewrite-signal */
};

/* The options every role uses, from the configuration. */
struct supervise_opts supervise_opts_from_config(const struct config *cfg);

/* All optional. Without a finished hook the loop stops with the exit status. */
struct supervise_hooks {
	void *ctx;
	void (*started)(void *ctx, pid_t pid);
	/* The payload ended; what it left may still run. exit_status is the agent's for
	 * it: its code, or 128+signal, after --remap-exit; wait_status, as from waitpid, is
	 * what really happened (what a worker reports to its manager). */
	void (*exited)(void *ctx, int exit_status, int wait_status);
	/* The payload and everything it left are gone (and any Spot hold is over): the
	 * agent may exit now, with exit_status (remapped as for exited). */
	void (*finished)(void *ctx, int exit_status);
	/* A terminating signal (TERM, INT, HUP, QUIT) while no payload runs. Without
	 * this hook the loop stops with 128+sig. */
	void (*interrupted)(void *ctx, int sig);
	/* SIGTERM while the payload runs, after it was forwarded and the grace period
	 * armed: Batch is stopping the job, and SIGKILLs it 30 s later. */
	void (*stopping)(void *ctx, int sig);
	/* A Spot notice ("instance-action" or "rebalance"), after the supervisor has
	 * logged it and, for an interruption, signalled the payload. */
	void (*spot_notice)(void *ctx, const char *type, const char *action, const char *time);
};

struct supervisor;

/* Takes over signals, becomes a subreaper when not PID 1, watches the signalfd. */
enum ba_status supervise_create(struct supervisor **out, struct loop *loop, const struct supervise_opts *opts,
		     const struct supervise_hooks *hooks);
void supervise_free(struct supervisor *sv);

/* Start the payload: BA_OK, or 126/127/71 when it could not start. */
enum ba_status supervise_spawn(struct supervisor *sv, const struct payload *payload);

/* Send sig to the payload (its group with -g), if it runs. */
void supervise_signal(struct supervisor *sv, int sig);

/* Ask the payload to stop: send sig (after --rewrite-signal: the agent's own stop
 * requests mean what Batch's SIGTERM means), SIGKILL its group after grace_ms. */
void supervise_terminate(struct supervisor *sv, int sig, int64_t grace_ms, const char *reason);

bool supervise_running(const struct supervisor *sv);
/* The grace period ran out and the agent had to SIGKILL. */
bool supervise_grace_expired(const struct supervisor *sv);

/* The common case: supervise one payload in a loop of its own; returns the status. */
enum ba_status supervise_run(const struct supervise_opts *opts, const struct payload *payload, const struct supervise_hooks *hooks);

#endif
