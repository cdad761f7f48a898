/* submit-job and stop-jobs: AWS Batch SubmitJob and TerminateJob, for the worker-pool
 * manager, which submits its workers as one array job and stops them at the end. */
#ifndef BATCH_AGENT_AWS_BATCHJOBS_H
#define BATCH_AGENT_AWS_BATCHJOBS_H

#include <stddef.h>

#include "http.h"
#include "status.h"

#include <cjson/cJSON.h>

/* What submit-job was asked for, as given on the command line (checked by
 * batch_submit_job_command). */
struct batch_submit {
	const char *job_name;
	const char *job_queue;
	const char *job_definition;
	const char *array_size; /* NULL: not an array */
	const char *const *parameters; /* "NAME=VALUE", in order */
	size_t parameter_count;
	const char *endpoint; /* --endpoint-url or NULL */
};

/* Usage errors (64) first, then SubmitJob; prints {"jobId","jobName","jobArn"}. */
enum ba_status batch_submit_job_command(const struct batch_submit *s);

/* Usage errors (64) first, then one TerminateJob per id; prints
 * {"stopped":[...],"failed":[{"jobId","status","message"}...]}; the worst failure's
 * status, or BA_OK. */
enum ba_status batch_stop_jobs_command(const char *reason, char *const *ids, size_t count,
                                       const char *endpoint);

/* submit-job's output {"jobId","jobName","jobArn"|null} from the SubmitJob answer root:
 * a new object (caller deletes), or NULL (logged) with *rc set. Declared here for
 * tests/fuzz. */
cJSON *batchjobs_submit_result(const struct http_request *req, const cJSON *root, enum ba_status *rc);

/* Limits of our own (the Batch model sets none): */
#define BATCH_MAX_PARAMETERS 64 /* --parameter options */
#define BATCH_MAX_STOP_IDS 16   /* job ids per stop-jobs, which must end within Batch's 30 s */
#define BATCH_MAX_REASON 1024   /* bytes of --reason */

#endif
