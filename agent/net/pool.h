/* The main role outside MNP: a manager for a pool of workers (array children or
 * separate jobs that connect back, as AWSClusterManagers.jl's AWSBatchManager does).
 *
 * Listens on --port (listener.c, admit.c, as the MNP rendezvous), optionally submits
 * its N workers through the Batch API (pooljobs.c), waits up to --wait-timeout for N
 * of them (--min-workers: enough after the timeout), then starts PROGRAM with
 * BATCH_AGENT_HOSTFILE, BATCH_AGENT_NODES and BATCH_AGENT_MEMBERS. While PROGRAM runs it
 * keeps admitting (a late worker, a replacement), marks workers lost or draining,
 * rewrites the membership file (members.c) on each change and signals PROGRAM with
 * --notify. When PROGRAM ends, or the manager does for any reason, every worker is
 * told to shut down, their reports are awaited within the grace period, and every job
 * it submitted that may still be queued or running is stopped. */
#ifndef BATCH_AGENT_POOL_H
#define BATCH_AGENT_POOL_H

#include "config.h"
#include "status.h"

enum ba_status pool_run(const struct config *cfg);

#endif
