/* AWS Batch API: DescribeJobs of AWS_BATCH_JOB_ID, signed SigV4 by libcurl. */
#ifndef BATCH_AGENT_AWS_BATCHAPI_H
#define BATCH_AGENT_AWS_BATCHAPI_H

/* job-parameters: prints {"jobId":...,"parameters":{...}} on stdout; returns the exit
 * status. endpoint_option is --endpoint-url or NULL. */
int batch_job_parameters_command(const char *endpoint_option);

#endif
