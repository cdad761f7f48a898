/* The pool's jobs in the Batch API. */
#include "pooljobs.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "awsquery.h"
#include "log.h"
#include "util.h"

#define DESCRIBE_TIMEOUT_MS 60000
#define SUBMIT_TIMEOUT_MS 60000
/* A replacement is submitted from inside the event loop: within 1.5 heartbeat
 * intervals, at most 15 s; under 1 s there is no time for it. */
#define REPLACE_TIMEOUT_MS 15000
#define REPLACE_TIMEOUT_MIN_MS 1000
/* Batch SIGKILLs 30 s after its SIGTERM, and the workers' reports come first. */
#define STOP_TIMEOUT_MS 15000

#define MAX_ARGS 32

/* argv for batch-agent-aws: the command, its options, then --endpoint-url if set. */
struct aws_args {
	const char *v[MAX_ARGS + 1];
	size_t n;
};

static void arg(struct aws_args *a, const char *value)
{
	if (a->n < MAX_ARGS)
		a->v[a->n++] = value;
	a->v[a->n] = NULL;
}

static void endpoint(struct aws_args *a, const struct config *cfg)
{
	if (cfg->aws_endpoint_url != NULL) {
		arg(a, "--endpoint-url");
		arg(a, cfg->aws_endpoint_url);
	}
}

static char *string_field(const cJSON *object, const char *name)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
	return cJSON_IsString(item) && item->valuestring[0] ? strdup(item->valuestring) : NULL;
}

/* Job names: letters, digits, hyphens and underscores, 128 at most. Ours is the
 * manager's with "-workers", so that the console lists them together. */
static void derive_job_name(struct pool_jobs *jobs, const char *manager_name)
{
	const char *base = manager_name ? manager_name : "batch-agent";
	snprintf(jobs->job_name, sizeof jobs->job_name, "%.120s-workers", base);
}

/* The manager's own job: its name, and the defaults for the workers' definition and
 * queue. Nothing is submitted yet: a terminating signal meanwhile simply ends us. */
static enum ba_status describe_self(const struct config *cfg, struct pool_jobs *jobs)
{
	struct aws_args a = { 0 };
	cJSON *self = NULL;
	arg(&a, "job-parameters");
	endpoint(&a, cfg);
	log_info("reading this job's definition and queue from the Batch API (DescribeJobs %s)", cfg->batch.job_id);
	enum ba_status rc = awsquery_run(a.v, DESCRIBE_TIMEOUT_MS, &self);
	if (rc != BA_OK)
		return rc;
	char *name = string_field(self, "jobName");
	derive_job_name(jobs, name);
	free(name);
	if (jobs->definition == NULL)
		jobs->definition = string_field(self, "jobDefinition");
	if (jobs->queue == NULL)
		jobs->queue = string_field(self, "jobQueue");
	cJSON_Delete(self);
	return BA_OK;
}

static enum ba_status resolve(const struct config *cfg, struct pool_jobs *jobs)
{
	if (cfg->worker_job_definition && (jobs->definition = strdup(cfg->worker_job_definition)) == NULL)
		return BA_EX_OSERR;
	const char *queue = cfg->worker_job_queue ? cfg->worker_job_queue : cfg->batch.queue;
	if (queue && (jobs->queue = strdup(queue)) == NULL)
		return BA_EX_OSERR;
	derive_job_name(jobs, NULL);
	if (cfg->batch.job_id != NULL) {
		enum ba_status rc = describe_self(cfg, jobs);
		bool needed = jobs->definition == NULL || jobs->queue == NULL;
		/* Given both, DescribeJobs would only have named the jobs after ours. */
		if (rc != BA_OK && (needed || rc > BA_EX_SIGNAL_BASE))
			return rc;
		if (rc != BA_OK)
			log_warn("naming the workers %s: this job's name is unknown", jobs->job_name);
	}
	if (jobs->definition == NULL || jobs->queue == NULL) {
		log_error("--submit-workers needs the workers' job %s: give --worker-job-%s (the default, this job's own, "
			  "is unknown%s)", jobs->definition == NULL ? "definition" : "queue",
			  jobs->definition == NULL ? "definition" : "queue",
			  cfg->batch.job_id ? "" : ": AWS_BATCH_JOB_ID is not set");
		return BA_EX_CONFIG;
	}
	return BA_OK;
}

/* SubmitJob through the helper; the new job's id into id. budget_ms 0: the helper's
 * own retries and SUBMIT_TIMEOUT_MS; else one attempt that ends by itself within the
 * budget (we never kill a helper that may have created a job). */
static enum ba_status submit(const struct config *cfg, const struct pool_jobs *jobs, long size, char *id,
			     int64_t budget_ms, enum wait_signals signals, int *held)
{
	struct aws_args a = { 0 };
	char size_text[24], parameter[sizeof jobs->manager + 300], attempt_s[32], connect_s[32];
	cJSON *answer = NULL;
	snprintf(size_text, sizeof size_text, "%ld", size);
	snprintf(parameter, sizeof parameter, "%s=%s", cfg->manager_param, jobs->manager);
	if (budget_ms > 0) {
		/* Room besides the attempt: the helper's start and the credentials. */
		int64_t attempt_ms = budget_ms * 2 / 3;
		snprintf(attempt_s, sizeof attempt_s, "%.3f", (double)attempt_ms / 1000.0);
		snprintf(connect_s, sizeof connect_s, "%.3f", (double)(attempt_ms < 3000 ? attempt_ms : 3000) / 1000.0);
		arg(&a, "--max-attempts"), arg(&a, "1");
		arg(&a, "--timeout"), arg(&a, attempt_s);
		arg(&a, "--connect-timeout"), arg(&a, connect_s);
	}
	arg(&a, "submit-job");
	arg(&a, "--job-name"), arg(&a, jobs->job_name);
	arg(&a, "--job-queue"), arg(&a, jobs->queue);
	arg(&a, "--job-definition"), arg(&a, jobs->definition);
	if (size > 1)
		arg(&a, "--array-size"), arg(&a, size_text);
	arg(&a, "--parameter"), arg(&a, parameter);
	endpoint(&a, cfg);
	enum ba_status rc = awsquery_run_signals(a.v, budget_ms > 0 ? budget_ms : SUBMIT_TIMEOUT_MS, &answer, signals,
						 held);
	if (rc != BA_OK)
		return rc;
	const cJSON *job_id = cJSON_GetObjectItemCaseSensitive(answer, "jobId");
	if (!cJSON_IsString(job_id) || strlen(job_id->valuestring) > POOLJOBS_ID_MAX || job_id->valuestring[0] == '\0') {
		log_error("batch-agent-aws submit-job printed no usable jobId");
		rc = BA_EX_SOFTWARE;
	} else {
		snprintf(id, POOLJOBS_ID_MAX + 1, "%s", job_id->valuestring);
	}
	cJSON_Delete(answer);
	return rc;
}

enum ba_status pooljobs_submit_pool(const struct config *cfg, const char *manager_addr, struct pool_jobs *jobs,
				    int *held)
{
	snprintf(jobs->manager, sizeof jobs->manager, strchr(manager_addr, ':') ? "[%s]:%ld" : "%s:%ld", manager_addr,
		 cfg->port);
	enum ba_status rc = resolve(cfg, jobs);
	if (rc != BA_OK)
		return rc;
	jobs->pool_is_array = cfg->workers > 1;
	log_info("submitting %ld worker%s: job %s, definition %s, queue %s, parameter %s=%s", cfg->workers,
		 cfg->workers == 1 ? "" : "s (an array job)", jobs->job_name, jobs->definition, jobs->queue,
		 cfg->manager_param, jobs->manager);
	rc = submit(cfg, jobs, cfg->workers, jobs->pool_id, 0, WAIT_SIGNALS_HOLD, held);
	if (rc == BA_OK)
		log_info("submitted the workers: job %s", jobs->pool_id);
	return rc;
}

enum ba_status pooljobs_submit_replacement(const struct config *cfg, struct pool_jobs *jobs)
{
	if (jobs->replacement_count == POOLJOBS_REPLACEMENTS_MAX) {
		log_warn("not replacing the drained worker: %d replacements submitted already", POOLJOBS_REPLACEMENTS_MAX);
		return BA_EX_UNAVAILABLE;
	}
	char *id = jobs->replacements[jobs->replacement_count];
	/* Inside the event loop, which waits meanwhile: signals (a SIGCHLD, Batch's
	 * SIGTERM) stay pending for it, and the wait ends well before the workers would
	 * miss three of our heartbeats. */
	int64_t budget_ms = cfg->heartbeat_ms * 3 / 2;
	if (budget_ms > REPLACE_TIMEOUT_MS)
		budget_ms = REPLACE_TIMEOUT_MS;
	if (budget_ms < REPLACE_TIMEOUT_MIN_MS) {
		log_warn("no replacement for the drained worker: --heartbeat %.3g s leaves no time to wait for SubmitJob",
			 (double)cfg->heartbeat_ms / 1000.0);
		return BA_EX_UNAVAILABLE;
	}
	enum ba_status rc = submit(cfg, jobs, 1, id, budget_ms, WAIT_SIGNALS_LEAVE, NULL);
	if (rc == BA_OK) {
		jobs->replacement_count++;
		log_info("submitted a replacement worker: job %s", id);
	} else {
		log_warn("no replacement for the drained worker: SubmitJob failed within %.3g s (status %d)",
			 (double)budget_ms / 1000.0, rc);
	}
	return rc;
}

bool pooljobs_is_replacement(const struct pool_jobs *jobs, const char *job_id)
{
	for (size_t i = 0; i < jobs->replacement_count; i++)
		if (strcmp(jobs->replacements[i], job_id) == 0)
			return true;
	return false;
}

static enum ba_status stop(const struct config *cfg, const char *const *ids, size_t count, const char *reason,
			   enum wait_signals signals, int *held)
{
	struct aws_args a = { 0 };
	cJSON *answer = NULL;
	if (count == 0)
		return BA_OK;
	arg(&a, "stop-jobs");
	arg(&a, "--reason"), arg(&a, reason);
	endpoint(&a, cfg);
	for (size_t i = 0; i < count && a.n < MAX_ARGS; i++)
		arg(&a, ids[i]);
	log_info("stopping %zu submitted job%s that may still be queued or running (TerminateJob: %s)", count,
		 count == 1 ? "" : "s", reason);
	enum ba_status rc = awsquery_run_signals(a.v, STOP_TIMEOUT_MS, &answer, signals, held);
	if (rc == BA_OK)
		log_info("stopped the pool's jobs");
	else
		log_error("could not stop every job of the pool (status %d): check the queue for leftovers", rc);
	cJSON_Delete(answer);
	return rc;
}

enum ba_status pooljobs_stop(const struct config *cfg, const char *const *ids, size_t count, const char *reason)
{
	int held = 0;
	return stop(cfg, ids, count, reason, WAIT_SIGNALS_HOLD, &held);
}

enum ba_status pooljobs_stop_now(const struct config *cfg, const char *const *ids, size_t count, const char *reason)
{
	return stop(cfg, ids, count, reason, WAIT_SIGNALS_LEAVE, NULL);
}

void pooljobs_release(struct pool_jobs *jobs)
{
	free(jobs->definition);
	free(jobs->queue);
	jobs->definition = jobs->queue = NULL;
}
