/* AWS endpoint queries, through the batch-agent-aws helper program, so that libcurl
 * and its libraries never load into the agent itself. The helper prints one JSON
 * document on stdout; its diagnostics go to our stderr and name the endpoint; its exit
 * status (69 unreachable, 76 bad answer, 77 refused, 78 configuration) becomes ours. */
#ifndef BATCH_AGENT_AWSQUERY_H
#define BATCH_AGENT_AWSQUERY_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <sys/types.h>
#include "status.h"
#include "wait.h"

/* Run `batch-agent-aws args...` and parse its output; BA_OK with *out (caller deletes). */
enum ba_status awsquery_run(const char *const *args, int64_t timeout_ms, cJSON **out);

/* The same, with a choice of what signals do meanwhile (wait.h): WAIT_SIGNALS_HOLD
 * runs it to its end through terminating signals (a job submission, whose job ids we
 * must learn to stop them), the first one stored in *held; WAIT_SIGNALS_LEAVE leaves
 * them pending for the caller's event loop. */
enum ba_status awsquery_run_signals(const char *const *args, int64_t timeout_ms, cJSON **out,
				    enum wait_signals signals, int *held);

/* Start `batch-agent-aws args...` as a long-running child whose stdout is *stdout_fd
 * (non-blocking, close-on-exec). */
enum ba_status awsquery_spawn(const char *const *args, pid_t *pid, int *stdout_fd);

#endif
