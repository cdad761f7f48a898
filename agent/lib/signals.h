/* The agent's signal plumbing.
 *
 * At start the agent records the signal mask and the ignored signals it inherited,
 * then blocks every signal it may receive and reads them from one signalfd, so that
 * signals are events in the loop rather than handlers racing with it. A child restores
 * the inherited state before exec, so the payload starts exactly as it would without
 * the agent (the agent installs no handlers, so exec has nothing of ours to reset). */
#ifndef BATCH_AGENT_SIGNALS_H
#define BATCH_AGENT_SIGNALS_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>
#include "status.h"

/* Idempotent; returns BA_OK or BA_EX_OSERR. */
enum ba_status signals_take_over(void);
int signals_fd(void);

/* Next pending signal: BA_OK with *sig set, or 0 in *sig when none is pending.
 * Signals the agent raised against itself (SIGPIPE from a write) and signals it
 * inherited as ignored are consumed and never reported. */
enum ba_status signals_next(int *sig);

/* TERM, INT, HUP and QUIT: the signals that end the agent while no payload runs. */
bool signals_is_terminating(int sig);
/* Before the payload runs (dialing, querying AWS): consume what is pending and return
 * the first terminating signal, or 0. Others have nobody to go to yet. */
int signals_next_terminating(void);

/* In a forked child, before exec: async-signal-safe. */
void signals_restore_inherited(void);

#endif
