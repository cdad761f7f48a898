/* What the two manager roles share, the MNP rendezvous (rendezvous.c) and the worker
 * pool (pool.c): one event loop with the listener (listener.c) and the supervised
 * payload, the cookie, the phases of the job, and its end.
 *
 *   WAITING --enough peers, or --wait-timeout--> RUNNING (the job starts the payload)
 *   WAITING/RUNNING --payload ended, interrupted, failure--> ENDING
 *   ENDING: the door closes, the cookie is wiped, every connected peer is told to shut
 *           down; the loop stops once the payload and everything it left are gone and
 *           no peer owes an exit report, or when the grace period (plus a margin for
 *           the reports) runs out: the grace from now, or after a SIGTERM what is
 *           left of the grace that the SIGTERM started (Batch's SIGKILL follows it by
 *           30 s).
 *
 * The loop's status is the payload's exit status (128+N for a signal), or the status
 * of a failure (manager_fail). */
#ifndef BATCH_AGENT_MANAGER_H
#define BATCH_AGENT_MANAGER_H

#include <stdbool.h>
#include <stdint.h>

#include "admit.h"
#include "config.h"
#include "cookie.h"
#include "listener.h"
#include "loop.h"
#include "status.h"
#include "supervise.h"

enum manager_phase { MANAGER_WAITING, MANAGER_RUNNING, MANAGER_ENDING };

struct manager_hooks {
	void *ctx;
	/* Connected peers that owe an exit report. */
	long (*owing)(void *ctx);
	/* The grace period is over: name the peers that still owe their report. */
	void (*silent)(void *ctx);
	/* Optional: the job is being stopped (SIGTERM, with or without a payload): what
	 * must happen before Batch's SIGKILL, 30 s later, and cannot wait for the end. */
	void (*stopping)(void *ctx);
};

struct manager {
	const struct config *cfg;
	struct loop *loop;
	struct supervisor *sv;
	struct listener *ls;
	struct cookie cookie;
	enum manager_phase phase;
	struct loop_timer wait_timer, report_timer;
	int64_t stopped_ms; /* CLOCK_MONOTONIC of Batch's SIGTERM (or INT, HUP, QUIT), 0 before */
	bool payload_finished;
	enum ba_status exit_status;
	enum ba_status forced_status; /* BA_OK, or the job's status whatever the payload's */
	const char *payload_name; /* "the main payload", "PROGRAM": for the log */
	const char *farewell;     /* the shutdown message's reason, for the peers */
	const char *peer_noun;    /* "node", "worker" */
	struct manager_hooks hooks;
};

/* The cookie, the loop, the supervisor (its hooks are the manager's) and the
 * listener with the job's admission and peer hooks. m's names and hooks are set. */
enum ba_status manager_set_up(struct manager *m, const struct config *cfg, const struct admit_job *job,
			      const struct listener_hooks *peer_hooks);
void manager_free(struct manager *m);

/* No more admissions, ever: the door closes and the cookie is wiped. */
void manager_close_door(struct manager *m, const char *why);
/* Start the payload (the descriptor limit we inherited); RUNNING on success. */
enum ba_status manager_spawn(struct manager *m, const struct payload *payload);
/* The job ends with status rc (no payload to wait for). */
void manager_fail(struct manager *m, enum ba_status rc, const char *reason);
/* The job fails with rc: the payload is asked to stop (SIGTERM, SIGKILL after the
 * grace period), and rc is the job's status, not the payload's. */
void manager_stop_payload(struct manager *m, enum ba_status rc, const char *reason);
/* A peer's report or departure: stop the loop when nothing is left to wait for. */
void manager_maybe_stop(struct manager *m);

#endif
