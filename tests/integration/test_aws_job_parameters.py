"""batch-agent-aws job-parameters against the fake Batch endpoint (SigV4 verified by the
fake), over http and https (throwaway self-signed certificate), with every misbehaviour
giving a clear error or a bounded retry."""

import json
import os
import shutil
import sys
import tempfile

import fake_aws
from fake_aws import check, within

cases, case = fake_aws.case_list()
V = fake_aws.parse_vector()
MNP = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f#1"
ARRAY = "3286a19c-68a9-47c9-8000-427d23ffc7ca:1"
TMP = tempfile.mkdtemp(prefix="test_aws_job_parameters.")
CERT = fake_aws.make_cert(TMP)


def env_creds(fake, **extra):
    """Environment credentials (the vector's keys) accepted by the fake."""
    fake.add_key(V["access key"], V["secret key"], V["session token"])
    env = {"AWS_ACCESS_KEY_ID": V["access key"], "AWS_SECRET_ACCESS_KEY": V["secret key"],
           "AWS_SESSION_TOKEN": V["session token"], "AWS_REGION": fake.batch_region,
           "AWS_BATCH_JOB_ID": MNP, "BATCH_AGENT_AWS_ENDPOINT_URL": fake.url}
    env.update(extra)
    return env


def identity(fake, job_id):
    """What job-parameters prints besides the parameters: the job's name, queue and
    definition as the (real, captured) DescribeJobs answer has them."""
    [job] = fake.describejobs_doc([job_id])["jobs"]
    return {k: job.get(k) for k in ("jobName", "jobQueue", "jobDefinition")}


def secrets_absent(result):
    for s in (V["secret key"], V["session token"]):
        check(s not in result.err and s not in result.out, "a secret reached the output", result)


@case
def mnp_node_over_https_with_session_token():
    check(CERT is not None, "openssl CLI is needed to make a test certificate")
    with fake_aws.FakeAWS(tls=CERT) as fake:
        r = fake_aws.run(["--log-level", "debug", "job-parameters"],
                         env_creds(fake, AWS_CA_BUNDLE=CERT[0]))
        check(r.code == 0, "exit 0", r)
        check(r.json() == {"jobId": MNP, "parameters": {}, **identity(fake, MNP)}, "output", r)
        check(r.json()["jobQueue"].startswith("arn:aws:batch:"), "the queue as Batch names it", r)
        check(r.out.count("\n") == 1, "one JSON line", r)
        ok, reason, d = fake.sigv4_results[-1]
        check(ok, "fake verified the signature: " + reason)
        check(d["signed_headers"] == ["content-type", "host", "x-amz-date", "x-amz-security-token"],
              "signed headers %s" % d["signed_headers"])
        req = fake.routed("describejobs")[-1]
        check(json.loads(req["body"]) == {"jobs": [MNP]}, "request body %r" % req["body"])
        secrets_absent(r)


@case
def array_child_with_container_credentials_and_parameters():
    with fake_aws.FakeAWS() as fake:
        fake.batch_parameters = {"inputfile": "s3://bucket/in.txt", "threads": "4"}
        fake.creds_auth = "Basic dGVzdDp0b2tlbg=="
        env = {"AWS_REGION": "us-east-1", "AWS_BATCH_JOB_ID": ARRAY,
               "AWS_CONTAINER_CREDENTIALS_FULL_URI": fake.creds_url,
               "AWS_CONTAINER_AUTHORIZATION_TOKEN": fake.creds_auth}
        r = fake_aws.run(["--log-level", "debug", "job-parameters", "--endpoint-url", fake.url], env)
        check(r.code == 0, "exit 0", r)
        check(r.json() == {"jobId": ARRAY, "parameters": fake.batch_parameters, **identity(fake, ARRAY)}, "output", r)
        check(fake.sigv4_results[-1][0], "signature verified: %s" % fake.sigv4_results[-1][1])
        check(fake.sigv4_results[-1][2]["access_key"] == fake.creds_doc["AccessKeyId"], "key from endpoint")
        for s in (fake.creds_doc["SecretAccessKey"], fake.creds_doc["Token"], fake.creds_auth):
            check(s not in r.err, "secret in stderr", r)


@case
def long_term_keys_without_token():
    with fake_aws.FakeAWS() as fake:
        fake.add_key("AKIDEXAMPLELONGTERM1", "longTermSecretExampleKey/0123456789abcd", None)
        env = env_creds(fake, AWS_ACCESS_KEY_ID="AKIDEXAMPLELONGTERM1",
                        AWS_SECRET_ACCESS_KEY="longTermSecretExampleKey/0123456789abcd")
        del env["AWS_SESSION_TOKEN"]
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 0, "exit 0", r)
        ok, reason, d = fake.sigv4_results[-1]
        check(ok and "x-amz-security-token" not in d["signed_headers"], reason)


@case
def job_not_found_is_76():
    with fake_aws.FakeAWS() as fake:
        r = fake_aws.run(["job-parameters"], env_creds(fake, AWS_BATCH_JOB_ID="00000000-0000-4000-8000-000000000000"))
        check(r.code == 76, "exit 76", r)
        check("not found" in r.err and "00000000-0000-4000-8000-000000000000" in r.err, "message", r)
        check(r.out == "", "no stdout", r)


@case
def throttling_then_success():
    with fake_aws.FakeAWS() as fake:
        fake.plan["describejobs"] = ["throttle", "throttle429", ("status", 503, {"message": "busy"})]
        r = fake_aws.run(["job-parameters"], env_creds(fake))
        check(r.code == 0, "exit 0 after retries", r)
        check(fake.count("describejobs") == 4, "4 attempts, got %d" % fake.count("describejobs"))
        within(r, 10)


@case
def server_errors_exhaust_retries_69():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = ("status", 500, {"message": "internal"},
                                       [("x-amzn-ErrorType", "ServerException")])
        r = fake_aws.run(["--max-attempts", "3", "job-parameters"], env_creds(fake))
        check(r.code == 69, "exit 69", r)
        check(fake.count("describejobs") == 3, "3 attempts")
        check("HTTP 500" in r.err and "ServerException" in r.err and fake.url in r.err, "message", r)
        within(r, 10)


@case
def access_denied_is_77_without_retry():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = ("status", 403, {"message": "not authorized to perform: batch:DescribeJobs"},
                                       [("x-amzn-ErrorType", "AccessDeniedException")])
        r = fake_aws.run(["job-parameters"], env_creds(fake))
        check(r.code == 77, "exit 77", r)
        check(fake.count("describejobs") == 1, "no retry")
        check("AccessDeniedException" in r.err and "batch:DescribeJobs" in r.err, "message", r)


@case
def bad_signature_is_77():
    with fake_aws.FakeAWS() as fake:
        env = env_creds(fake, AWS_SECRET_ACCESS_KEY="wrongSecretKeyExample0123456789abcdefghi")
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 77, "exit 77", r)
        check("InvalidSignatureException" in r.err, "message", r)
        check("wrongSecretKey" not in r.err, "secret in stderr", r)


@case
def client_error_is_76():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = ("status", 400, {"message": "jobs must have length <= 100"},
                                       [("x-amzn-ErrorType", "ClientException")])
        r = fake_aws.run(["job-parameters"], env_creds(fake))
        check(r.code == 76 and "ClientException" in r.err, "exit 76 naming the error", r)


@case
def slow_server_times_out_69():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = "slow"
        r = fake_aws.run(["--timeout", "0.5", "--max-attempts", "2", "job-parameters"], env_creds(fake))
        check(r.code == 69, "exit 69", r)
        check("no answer in time" in r.err and "2 attempts" in r.err, "message", r)
        within(r, 4)


@case
def default_timeouts_bound_a_hang():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = "hang"
        r = fake_aws.run(["--max-attempts", "1", "job-parameters"], env_creds(fake))
        check(r.code == 69, "exit 69", r)
        within(r, 14)


@case
def truncated_body_bounded():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = "truncated"
        r = fake_aws.run(["--max-attempts", "2", "job-parameters"], env_creds(fake))
        check(r.code == 69, "exit 69", r)
        check("ransfer" in r.err or "partial" in r.err.lower(), "message names the partial transfer", r)
        within(r, 5)


@case
def huge_body_refused_76():
    with fake_aws.FakeAWS() as fake:
        for mode in ("huge", "huge-chunked"):
            fake.always["describejobs"] = mode
            r = fake_aws.run(["job-parameters"], env_creds(fake))
            check(r.code == 76, "%s: exit 76" % mode, r)
            check("larger than 1048576 bytes" in r.err, "%s: message" % mode, r)


@case
def non_json_is_76():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = "nonjson"
        r = fake_aws.run(["job-parameters"], env_creds(fake))
        check(r.code == 76 and "not JSON" in r.err and "Service Unavailable" in r.err, "exit 76", r)


@case
def wrong_types_are_76_naming_the_field():
    muts = [
        (lambda d: {"jobs": {"a": 1}}, "field jobs: expected an array"),
        (lambda d: {"jobs": ["x"]}, "field jobs[0]: expected an object"),
        (lambda d: {"jobs": [dict(d["jobs"][0], jobId=7)]}, "field jobs[0].jobId: expected a string"),
        (lambda d: {"jobs": [dict(d["jobs"][0], parameters=["a"])]}, "field jobs[0].parameters: expected an object"),
        (lambda d: {"jobs": [dict(d["jobs"][0], parameters={"n": 4})]}, "field jobs[0].parameters.n: expected a string"),
        (lambda d: [], "expected a JSON object"),
    ]
    with fake_aws.FakeAWS() as fake:
        for mut, text in muts:
            fake.always["describejobs"] = "wrongtypes"
            fake.wrongtypes["describejobs"] = mut
            r = fake_aws.run(["job-parameters"], env_creds(fake))
            check(r.code == 76 and text in r.err, "exit 76 with %r" % text, r)


@case
def region_from_task_metadata():
    with fake_aws.FakeAWS() as fake:
        fake.batch_region = "us-west-2"  # the region of the task ARN in the samples
        env = env_creds(fake, ECS_CONTAINER_METADATA_URI_V4=fake.tmds_url)
        del env["AWS_REGION"]
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 0, "exit 0", r)
        check(fake.sigv4_results[-1][2]["region"] == "us-west-2", "signed for us-west-2")


@case
def default_region_variable():
    with fake_aws.FakeAWS() as fake:
        fake.batch_region = "eu-west-1"
        env = env_creds(fake, AWS_DEFAULT_REGION="eu-west-1")
        del env["AWS_REGION"]
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 0 and fake.sigv4_results[-1][2]["region"] == "eu-west-1", "eu-west-1", r)


@case
def configuration_errors_are_78():
    with fake_aws.FakeAWS() as fake:
        env = env_creds(fake)
        del env["AWS_REGION"]
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 78 and "AWS_REGION" in r.err, "no region", r)
        env = env_creds(fake)
        del env["AWS_BATCH_JOB_ID"]
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 78 and "AWS_BATCH_JOB_ID" in r.err, "no job id", r)
        env = env_creds(fake)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            del env[k]
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 78 and "no AWS credentials" in r.err, "no credentials", r)
        env = env_creds(fake)
        del env["AWS_SECRET_ACCESS_KEY"]
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 78 and "AWS_SECRET_ACCESS_KEY" in r.err, "partial credentials", r)
        r = fake_aws.run(["job-parameters"], env_creds(fake, AWS_REGION="us-east-1:evil"))
        check(r.code == 78 and "not a region" in r.err, "bad region", r)
        r = fake_aws.run(["job-parameters", "--endpoint-url", "ftp://127.0.0.1/"], env_creds(fake))
        check(r.code == 78 and "--endpoint-url" in r.err, "bad endpoint scheme", r)
        check(fake.count("describejobs") == 0, "no request sent")


@case
def endpoint_precedence():
    with fake_aws.FakeAWS() as fake:
        dead = "http://127.0.0.1:%d" % fake_aws.dead_port()
        r = fake_aws.run(["--max-attempts", "1", "job-parameters", "--endpoint-url", fake.url],
                         env_creds(fake, BATCH_AGENT_AWS_ENDPOINT_URL=dead, AWS_ENDPOINT_URL_BATCH=dead))
        check(r.code == 0, "--endpoint-url wins", r)
        r = fake_aws.run(["job-parameters"], env_creds(fake, AWS_ENDPOINT_URL_BATCH=dead))
        check(r.code == 0, "BATCH_AGENT_AWS_ENDPOINT_URL wins", r)
        env = env_creds(fake, AWS_ENDPOINT_URL_BATCH=fake.url + "/", AWS_ENDPOINT_URL=dead)
        del env["BATCH_AGENT_AWS_ENDPOINT_URL"]
        r = fake_aws.run(["job-parameters"], env, unset=["BATCH_AGENT_AWS_ENDPOINT_URL"])
        check(r.code == 0, "AWS_ENDPOINT_URL_BATCH wins over AWS_ENDPOINT_URL", r)
        check(fake.routed("describejobs")[-1]["path"] == "/v1/describejobs", "path joined")


@case
def connection_refused_69_bounded():
    with fake_aws.FakeAWS() as fake:
        dead = "http://127.0.0.1:%d" % fake_aws.dead_port()
        r = fake_aws.run(["job-parameters", "--endpoint-url", dead], env_creds(fake))
        check(r.code == 69 and dead in r.err and "4 attempts" in r.err, "exit 69", r)
        within(r, 8)


@case
def untrusted_certificate_69_no_retry():
    check(CERT is not None, "openssl CLI is needed to make a test certificate")
    with fake_aws.FakeAWS(tls=CERT) as fake:
        r = fake_aws.run(["job-parameters"], env_creds(fake))
        check(r.code == 69, "exit 69", r)
        check("AWS_CA_BUNDLE" in r.err and "1 attempt" in r.err, "message", r)
        check(fake.count("describejobs") == 0, "nothing sent")
        r = fake_aws.run(["job-parameters"], env_creds(fake, AWS_CA_BUNDLE=os.path.join(TMP, "missing.pem")))
        check(r.code == 78, "missing CA bundle is 78", r)


@case
def usage_errors_are_64():
    r = fake_aws.run(["job-parameters", "--bogus"])
    check(r.code == 64, "unknown option", r)
    r = fake_aws.run(["frobnicate"])
    check(r.code == 64 and "unknown command" in r.err, "unknown command", r)
    r = fake_aws.run([])
    check(r.code == 64, "no command", r)
    r = fake_aws.run(["--help"])
    check(r.code == 0 and "job-parameters" in r.out and "Exit status" in r.out, "help", r)


if __name__ == "__main__":
    try:
        sys.exit(fake_aws.main_cases(cases))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
