/* batch-agent-aws's command line: --help, the global options, each command's options. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "log.h"
#include "util.h"

#define PROGRAM "batch-agent-aws"

static void usage(FILE *out)
{
	fputs(
"Usage: " PROGRAM " [GLOBAL OPTIONS] COMMAND [OPTIONS]\n"
"\n"
"AWS endpoint queries for batch-agent, run as a subprocess. Results are JSON on stdout;\n"
"diagnostics go to stderr. No secret is ever taken from the command line.\n"
"\n"
"Global options:\n"
"  --log-level error|warn|info|debug   (default: info)\n"
"  --log-format text|json              (default: text)\n"
"  --connect-timeout SECONDS   connect timeout of each attempt (default: per endpoint)\n"
"  --timeout SECONDS           total time of each attempt (default: per endpoint)\n"
"  --max-attempts N            attempts per request, 1-10 (default: per endpoint)\n"
"      The last three apply to Batch, STS, task metadata and IMDS polls; the container\n"
"      credentials endpoint keeps botocore's 2 s timeout, 3 attempts, 1 s apart.\n"
"  -h, --help, --version\n"
"\n"
"Commands:\n"
"  job-parameters [--endpoint-url URL]\n"
"      POST /v1/describejobs {\"jobs\":[AWS_BATCH_JOB_ID]} signed SigV4 (service batch)\n"
"      and print {\"jobId\":\"...\",\"parameters\":{\"NAME\":\"VALUE\",...},\n"
"       \"jobName\":\"...\"|null,\"jobQueue\":\"...\"|null,\"jobDefinition\":\"...\"|null}.\n"
"      Endpoint: --endpoint-url, else BATCH_AGENT_AWS_ENDPOINT_URL, else\n"
"      AWS_ENDPOINT_URL_BATCH, else AWS_ENDPOINT_URL, else https://batch.REGION.amazonaws.com.\n"
"      An http:// endpoint must be a loopback address (127.0.0.0/8, [::1]): any other\n"
"      is refused (78) before a request, as the signed request carries the token.\n"
"      The same endpoint rules hold for submit-job and stop-jobs.\n"
"      Default: 3 s connect, 10 s per attempt, 4 attempts.\n"
"  submit-job --job-name NAME --job-queue QUEUE --job-definition DEF [--array-size N]\n"
"             [--parameter NAME=VALUE]... [--endpoint-url URL]\n"
"      POST /v1/submitjob {\"jobName\",\"jobQueue\",\"jobDefinition\",\"parameters\":{...},\n"
"      \"arrayProperties\":{\"size\":N}} (an array only for N >= 2; N is 1-10000, default 1)\n"
"      and print {\"jobId\":\"...\",\"jobName\":\"...\",\"jobArn\":\"...\"|null}.\n"
"      NAME: 1-128 letters, digits, '-', '_', the first a letter or digit. Up to 64\n"
"      --parameter, each NAME given once. Retried on connection errors, timeouts, 5xx\n"
"      and throttling, as the AWS SDKs do: SubmitJob is not idempotent, and a retry\n"
"      after an attempt whose answer was lost can create a second job.\n"
"      Default: 3 s connect, 15 s per attempt, 3 attempts.\n"
"  stop-jobs --reason TEXT [--endpoint-url URL] JOBID...\n"
"      POST /v1/terminatejob {\"jobId\",\"reason\"} for each JOBID (1-16, after the\n"
"      options), in order, every one tried even after a failure: a job not yet STARTING\n"
"      is cancelled, a STARTING or RUNNING one terminated (FAILED); an array parent takes\n"
"      its children with it. TEXT: 1-1024 bytes. Prints\n"
"      {\"stopped\":[\"JOBID\",...],\"failed\":[{\"jobId\":\"...\",\"status\":HTTP|null,\n"
"       \"message\":\"...\"},...]} (also when some failed) and exits 0 when every job was\n"
"      stopped, else with the worst failure: 77 over 69 over 76.\n"
"      Default, to end within Batch's 30 s stop timeout: 2 s connect, 5 s per attempt,\n"
"      3 attempts (up to about 17 s per JOBID when Batch does not answer).\n"
"  task-metadata\n"
"      GET ${ECS_CONTAINER_METADATA_URI_V4} and .../task and print\n"
"      {\"ipv4\":\"A.B.C.D\"|null,\"networkMode\":\"awsvpc|host|bridge|...\"|null,\n"
"       \"taskArn\":\"...\",\"region\":\"...\",\"availabilityZone\":\"...\"|null,\n"
"       \"cpus\":N|null,\"memoryLimitBytes\":N|null}\n"
"      cpus/memory: the task's limits, else this container's (CPU units / 1024).\n"
"      Default: 1 s connect, 3 s per attempt, 3 attempts.\n"
"  spot-watch [--interval SECONDS] [--token-ttl SECONDS] [--optional]\n"
"      IMDSv2: get a token, then poll spot/instance-action and\n"
"      events/recommendations/rebalance every interval (default 5 s) and print one\n"
"      line per new notice, flushed:\n"
"        {\"type\":\"instance-action\",\"action\":\"terminate|stop|hibernate\",\"time\":\"...\"}\n"
"        {\"type\":\"rebalance\",\"time\":\"...\"}\n"
"      The token (ttl default 21600 s) is renewed before it expires and after a 401.\n"
"      Runs until SIGTERM or SIGINT (exit 0). Exit 69 at once when the first token\n"
"      request fails (1 s timeout, 2 attempts): in a container on a bridge network the\n"
"      token answer needs an instance metadata hop limit of 2 or more. Later failures\n"
"      (hostile answers; a notice that is not the documented JSON, once per distinct\n"
"      answer in a row) are logged and polling goes on. --optional: an IMDS that does\n"
"      not answer at start is expected (the agent's --spot-watch auto), logged at\n"
"      debug level.\n"
"  imds-probe\n"
"      Exit 0 when the IMDS token endpoint answers, 69 otherwise (within about 2 s).\n"
"\n"
"Credentials, in botocore's order: the environment keys; web identity (EKS IRSA):\n"
"  AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN through STS AssumeRoleWithWebIdentity\n"
"  (unsigned; the token only in the POST body); the container credentials endpoint.\n"
"\n"
"Environment:\n"
"  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (or AWS_SECURITY_TOKEN)\n"
"  AWS_WEB_IDENTITY_TOKEN_FILE (4-20000 bytes, sent as read), AWS_ROLE_ARN\n"
"    (arn:PARTITION:iam::ACCOUNT:role/NAME), AWS_ROLE_SESSION_NAME (default\n"
"    batch-agent-SECONDS)\n"
"  AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL (https, or http to loopback only), else\n"
"    https://sts.REGION.amazonaws.com; AWS_STS_REGIONAL_ENDPOINTS=legacy: the global\n"
"    https://sts.amazonaws.com for botocore's legacy regions. STS: 2 s connect, 5 s\n"
"    per attempt, 3 attempts, retried on throttling, 5xx and IDPCommunicationError.\n"
"  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (on http://169.254.170.2),\n"
"  AWS_CONTAINER_CREDENTIALS_FULL_URI (https, or http to loopback, 169.254.170.2,\n"
"    169.254.170.23, fd00:ec2::23, localhost),\n"
"  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read per request; wins over)\n"
"  AWS_CONTAINER_AUTHORIZATION_TOKEN\n"
"  AWS_REGION, else AWS_DEFAULT_REGION, else the region of the ECS task ARN\n"
"  AWS_BATCH_JOB_ID, ECS_CONTAINER_METADATA_URI_V4\n"
"  AWS_CA_BUNDLE (CA certificates for TLS verification; HTTPS_PROXY etc. apply to\n"
"    the Batch endpoint only)\n"
"  AWS_EC2_METADATA_SERVICE_ENDPOINT (default http://169.254.169.254),\n"
"  AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6, AWS_EC2_METADATA_DISABLED=true\n"
"  BATCH_AGENT_AWS_ENDPOINT_URL (as --endpoint-url)\n"
"\n"
"Exit status:\n"
"  0 success; 64 bad command line; 69 endpoint unreachable or still failing after\n"
"  retries: 5xx, a body cut short, an attempt over its timeout (IMDS: unavailable,\n"
"  disabled, or any bad token answer); 70 internal error; 71 out of memory or\n"
"  cannot write stdout;\n"
"  76 bad response from the endpoint, not retried (not HTTP at all, headers over\n"
"  64 KiB, a body over the endpoint's limit, a 3xx redirect, which is never followed,\n"
"  not JSON, a field of the wrong type, job not found, unexpected HTTP status); 77 credentials or permission refused (HTTP 401/403; STS:\n"
"  InvalidIdentityToken, ExpiredTokenException, IDPRejectedClaim, AccessDenied);\n"
"  78 bad configuration or environment (no credentials, no region, not under ECS, a\n"
"  missing, unreadable or empty web identity token file, a bad AWS_ROLE_ARN, ...).\n",
	      out);
}

/* "PROGRAM: WHAT 'ARG'" (ARG may be NULL) and a hint. */
enum ba_status cli_usage_error(const char *what, const char *arg)
{
	if (arg != NULL)
		fprintf(stderr, PROGRAM ": %s '%s'\n", what, arg);
	else
		fprintf(stderr, PROGRAM ": %s\n", what);
	fprintf(stderr, "Try '" PROGRAM " --help'.\n");
	return BA_EX_USAGE;
}

bool cli_parse_seconds(const char *text, int64_t min_ms, int64_t max_ms, int64_t *out)
{
	return util_parse_duration_ms(text, max_ms, out) && *out >= min_ms;
}

/* Parses the options of a command (argv[0] is the command): BA_OK, or BA_EX_USAGE
 * (reported). */
enum ba_status cli_command_options(int argc, char **argv, const struct option *opts, int repeatable,
                                   bool operands, struct cli_command_line *out)
{
	optind = 0; /* glibc: restart the scan */
	opterr = 0;
	int c, index;
	/* "+": options stop at the first operand, so that a job id is never read as one. */
	while ((c = getopt_long(argc, argv, "+", opts, &index)) != -1) {
		if (c == '?')
			return cli_usage_error("unknown or incomplete option", argv[optind - 1]);
		out->values[c] = optarg ? optarg : ""; /* a switch: present, no value */
		if (c == repeatable && out->repeated_count++ < CLI_MAX_REPEATED)
			out->repeated[out->repeated_count - 1] = optarg;
	}
	if (optind < argc && !operands)
		return cli_usage_error("unexpected argument", argv[optind]);
	out->operands = argv + optind;
	out->operand_count = argc - optind;
	return BA_OK;
}

/* The global options, before COMMAND: BA_OK (with *answered after --help or
 * --version, which printed), or BA_EX_USAGE (reported). */
enum ba_status cli_global_options(int argc, char **argv, bool *answered)
{
	enum log_level level = LOG_LEVEL_INFO;
	enum log_format format = LOG_FORMAT_TEXT;
	static const struct option global[] = {
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-format", required_argument, NULL, 'f' },
		{ "connect-timeout", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 't' },
		{ "max-attempts", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	opterr = 0;
	int c;
	int64_t ms;
	long n;
	*answered = false;
	while ((c = getopt_long(argc, argv, "+h", global, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (!log_level_parse(optarg, &level))
				return cli_usage_error("bad --log-level", optarg);
			break;
		case 'f':
			if (!log_format_parse(optarg, &format))
				return cli_usage_error("bad --log-format", optarg);
			break;
		case 'c':
		case 't':
			if (!cli_parse_seconds(optarg, 1, 600000, &ms))
				return cli_usage_error(c == 'c' ? "bad --connect-timeout" : "bad --timeout", optarg);
			*(c == 'c' ? &aws_settings.connect_timeout_ms : &aws_settings.timeout_ms) = (long)ms;
			break;
		case 'a':
			if (!util_parse_long(optarg, 1, 10, &n))
				return cli_usage_error("bad --max-attempts", optarg);
			aws_settings.max_attempts = (int)n;
			break;
		case 'h':
			usage(stdout);
			*answered = true;
			return BA_OK;
		case 'V':
			puts(PROGRAM " " BATCH_AGENT_VERSION);
			*answered = true;
			return BA_OK;
		default:
			return cli_usage_error("unknown or incomplete option", argv[optind - 1]);
		}
	}
	log_setup(PROGRAM, level, format);
	return BA_OK;
}
