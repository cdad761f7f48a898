/* A worker pool's jobs in the Batch API, through the batch-agent-aws helper: which job
 * definition and queue the manager's own job has (DescribeJobs), submitting the
 * workers (SubmitJob: an array of N, one job when N is 1, and single replacements),
 * and stopping what may be left of them (TerminateJob, which cancels what has not
 * started and terminates what runs; on an array parent, every child).
 *
 * The cookie never goes into a request: parameters and overrides of a submitted job
 * are visible to anyone allowed DescribeJobs. The workers get the cookie from their
 * job definition's secrets. */
#ifndef BATCH_AGENT_POOLJOBS_H
#define BATCH_AGENT_POOLJOBS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "status.h"

#define POOLJOBS_ID_MAX 128       /* Batch job ids are a UUID, plus ":index" for array children */
#define POOLJOBS_REPLACEMENTS_MAX 11 /* stop-jobs takes 16 ids: up to 4 children (or the array) and these */

struct pool_jobs {
	/* What SubmitJob needs, resolved once. */
	char job_name[129];
	char *definition; /* owned */
	char *queue;      /* owned */
	char manager[300]; /* the parameter's value: "<advertised address>:<port>" */
	/* What we submitted. */
	char pool_id[POOLJOBS_ID_MAX + 1]; /* the array parent (or the single job); "" before */
	bool pool_is_array;
	char replacements[POOLJOBS_REPLACEMENTS_MAX][POOLJOBS_ID_MAX + 1];
	size_t replacement_count;
};

/* Resolve the job definition, queue and job name (DescribeJobs on our own job), then
 * submit the pool of cfg->workers. A terminating signal before the submission ends us
 * (128+N, nothing submitted); one during it is stored in *held, and the submission
 * still runs to its end, so that its job id is known and can be stopped. */
enum ba_status pooljobs_submit_pool(const struct config *cfg, const char *manager_addr, struct pool_jobs *jobs,
				    int *held);
/* One more worker, a single job, in place of a drained one. */
enum ba_status pooljobs_submit_replacement(const struct config *cfg, struct pool_jobs *jobs);
/* TerminateJob ids, bounded in time and through terminating signals; logged. */
enum ba_status pooljobs_stop(const struct config *cfg, const char *const *ids, size_t count, const char *reason);
/* The same from inside the event loop: signals stay pending for it. */
enum ba_status pooljobs_stop_now(const struct config *cfg, const char *const *ids, size_t count, const char *reason);
bool pooljobs_is_replacement(const struct pool_jobs *jobs, const char *job_id);
void pooljobs_release(struct pool_jobs *jobs);

#endif
