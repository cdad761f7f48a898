/* Watching for Spot interruption and rebalance notices: a batch-agent-aws spot-watch
 * child polls IMDSv2 and prints one JSON line per new notice, which arrive here as
 * loop events. The watcher is our child: the supervisor reaps it and hands its status
 * to spotwatch_reaped. */
#ifndef BATCH_AGENT_SPOTWATCH_H
#define BATCH_AGENT_SPOTWATCH_H

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "loop.h"
#include "status.h"

/* type: "instance-action" or "rebalance"; action ("terminate", "stop", "hibernate") and
 * time may be NULL. */
typedef void (*spotwatch_fn)(void *ctx, const char *type, const char *action, const char *time);

struct spotwatch;

/* Whether to watch: --spot-watch on, or auto and running under ECS (where IMDS may
 * answer; elsewhere we never send it a packet). */
bool spotwatch_wanted(const struct config *cfg, bool auto_allowed);

enum ba_status spotwatch_start(struct spotwatch **out, struct loop *loop, bool required, spotwatch_fn fn, void *ctx);
/* True when pid was the watcher (its end is logged). */
bool spotwatch_reaped(struct spotwatch *watch, pid_t pid, int wait_status);
/* Stop the watcher (SIGTERM); it is reaped like any child. */
void spotwatch_stop(struct spotwatch *watch);
/* The watcher has not been reaped yet. */
bool spotwatch_running(const struct spotwatch *watch);
/* For a watcher that did not answer spotwatch_stop. */
void spotwatch_kill(struct spotwatch *watch);
void spotwatch_free(struct spotwatch *watch);

#endif
