/* AWS Batch API: DescribeJobs of AWS_BATCH_JOB_ID, signed SigV4 by libcurl. */
#ifndef BATCH_AGENT_AWS_BATCHAPI_H
#define BATCH_AGENT_AWS_BATCHAPI_H

#include "status.h"

/* job-parameters: prints {"jobId":...,"parameters":{...}} on stdout; returns the exit
 * status. endpoint_option is --endpoint-url or NULL. */
enum ba_status batch_job_parameters_command(const char *endpoint_option);

#endif
