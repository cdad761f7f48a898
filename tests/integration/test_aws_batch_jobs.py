"""batch-agent-aws submit-job, stop-jobs and job-parameters' job identity against the fake
Batch API of tests/peers/fake_batch.py (botocore's model: every request validated with
botocore's ParamValidator, every SigV4 signature recomputed with botocore's signer, array
parents and children). What the worker-pool manager relies on: the request it sends, the
JSON it reads back, which failures are retried, and that every job id is tried at the end.
Under BATCH_AGENT_WRAPPER (valgrind) every run goes through the wrapper
(fake_aws.run)."""

import json
import sys

import fake_aws
import fake_batch
from fake_aws import check, within

cases, case = fake_aws.case_list()
V = fake_aws.parse_vector()
QUEUE = "pool-queue"
DEFINITION = "pool-worker"
MANAGER_ID = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f"


def fake(**kw):
    """A fake Batch that knows the vector's keys and session token."""
    f = fake_batch.FakeBatch(credentials={V["access key"]: (V["secret key"], V["session token"])},
                             **kw)
    f.add_job_definition(DEFINITION, revision=3)
    return f


def env_for(f, **extra):
    env = {"AWS_ACCESS_KEY_ID": V["access key"], "AWS_SECRET_ACCESS_KEY": V["secret key"],
           "AWS_SESSION_TOKEN": V["session token"], "AWS_REGION": f.region,
           "BATCH_AGENT_AWS_ENDPOINT_URL": f.url}
    env.update(extra)
    return env


def secrets_absent(r):
    for s in (V["secret key"], V["session token"]):
        check(s not in r.out and s not in r.err, "a secret reached the output", r)


def requests_of(f, operation):
    return [q for q in f.requests if q["operation"] == operation]


def submit_args(name="pool-1", *more):
    return ["submit-job", "--job-name", name, "--job-queue", QUEUE,
            "--job-definition", DEFINITION + ":3"] + list(more)


@case
def submit_array_of_4_validated():
    with fake() as f:
        r = fake_aws.run(["--log-level", "debug"] +
                         submit_args("pool-1", "--array-size", "4", "--parameter",
                                     "manager=198.18.0.10:9000", "--parameter=empty=",
                                     "--parameter", "eq=a=b"), env_for(f))
        check(r.code == 0, "exit 0", r)
        check(f.errors == [], "the fake accepted every request: %s" % f.errors)
        sent = requests_of(f, "SubmitJob")
        check(len(sent) == 1, "one SubmitJob, got %d" % len(sent))
        check(sent[0]["params"] == {"jobName": "pool-1", "jobQueue": QUEUE,
                                    "jobDefinition": DEFINITION + ":3",
                                    "parameters": {"manager": "198.18.0.10:9000", "empty": "",
                                                   "eq": "a=b"},
                                    "arrayProperties": {"size": 4}},
              "request %r" % sent[0]["params"])
        out = r.json()
        check(r.out.count("\n") == 1, "one JSON line", r)
        job = f.job(out["jobId"])
        check(out == {"jobId": job["jobId"], "jobName": "pool-1", "jobArn": job["jobArn"]},
              "output %r" % out)
        check(job["arrayProperties"]["size"] == 4 and len(f.children(out["jobId"])) == 4,
              "an array parent with 4 children")
        check(f.children(out["jobId"])[0]["parameters"]["manager"] == "198.18.0.10:9000",
              "children carry the parameters")
        secrets_absent(r)


@case
def submit_of_1_sends_no_array_properties():
    with fake() as f:
        for extra in ([], ["--array-size", "1"]):
            r = fake_aws.run(submit_args("single", *extra), env_for(f))
            check(r.code == 0, "exit 0 with %s" % extra, r)
            params = requests_of(f, "SubmitJob")[-1]["params"]
            check("arrayProperties" not in params and params["parameters"] == {},
                  "no arrayProperties, empty parameters: %r" % params)
            check("arrayProperties" not in f.job(r.json()["jobId"]), "a plain job")
        check(f.errors == [], "the fake accepted every request: %s" % f.errors)


@case
def bad_flags_are_64_naming_the_flag():
    long_name = "a" * 129
    bad = [
        (["submit-job", "--job-queue", QUEUE, "--job-definition", "d"], "--job-name"),
        (["submit-job", "--job-name", "x", "--job-definition", "d"], "--job-queue"),
        (["submit-job", "--job-name", "x", "--job-queue", QUEUE], "--job-definition"),
        (submit_args("-leading-hyphen"), "--job-name"),
        (submit_args("_x"), "--job-name"),
        (submit_args("has space"), "--job-name"),
        (submit_args("dot.name"), "--job-name"),
        (submit_args(long_name), "--job-name"),
        (submit_args("x", "--job-queue", ""), "--job-queue"),
        (submit_args("x", "--array-size", "0"), "--array-size"),
        (submit_args("x", "--array-size", "10001"), "--array-size"),
        (submit_args("x", "--array-size", "four"), "--array-size"),
        (submit_args("x", "--parameter", "novalue"), "--parameter"),
        (submit_args("x", "--parameter", "=v"), "--parameter"),
        (submit_args("x", "--parameter", "a=1", "--parameter", "a=2"), "--parameter"),
        (submit_args("x", "--parameter", "bad=\udcff"), "--parameter"),
        (submit_args("x", *sum((["--parameter", "p%d=v" % i] for i in range(65)), [])), "--parameter"),
        (submit_args("x", "--endpoint-url", ""), "--endpoint-url"),
        (submit_args("x", "--bogus"), "--bogus"),
        (submit_args("x", "stray"), "stray"),
        (["stop-jobs", "job-1"], "--reason"),
        (["stop-jobs", "--reason", "", "job-1"], "--reason"),
        (["stop-jobs", "--reason", "x" * 1025, "job-1"], "--reason"),
        (["stop-jobs", "--reason", "done"], "JOBID"),
        (["stop-jobs", "--reason", "done", "job-\udcff"], "JOBID is not UTF-8"),
        (["stop-jobs", "--reason", "r\udcff", "job-1"], "--reason is not UTF-8"),
        (["stop-jobs", "job-1", "--reason", "done"], "--reason"),
        (["stop-jobs", "--reason", "done"] + ["job-%d" % i for i in range(17)], "at most 16"),
    ]
    with fake() as f:
        for args, flag in bad:
            r = fake_aws.run(args, env_for(f))
            check(r.code == 64, "%s: exit 64" % args[:8], r)
            check(flag in r.err, "%s: message names %s" % (args[:8], flag), r)
            check(r.out == "", "no stdout", r)
        r = fake_aws.run(submit_args("a" * 128, "--array-size", "10000"), env_for(f))
        check(r.code == 0, "a 128-character name and 10000 children are allowed", r)
        check(len(requests_of(f, "SubmitJob")) == 1 and f.errors == [],
              "only the good command reached Batch: %s" % f.errors)
        check(len(requests_of(f, "TerminateJob")) == 0, "no TerminateJob sent")


@case
def throttling_then_success_retried_once():
    with fake() as f:
        f.fail_next("SubmitJob", 400, "ThrottlingException", "Rate exceeded")
        r = fake_aws.run(submit_args("pool-2", "--array-size", "2"), env_for(f))
        check(r.code == 0, "exit 0 after a retry", r)
        injected = [e for e in f.errors if e["kind"] == "injected"]
        check(len(injected) == 1 and len(f.errors) == 1, "one throttled attempt: %s" % f.errors)
        check(len(requests_of(f, "SubmitJob")) == 1, "then one accepted SubmitJob")
        parents = [j for j in f.jobs().values() if "size" in j.get("arrayProperties", {})]
        check(len(parents) == 1 and parents[0]["jobId"] == r.json()["jobId"], "one job created")
        within(r, 8)


@case
def server_errors_exhaust_3_attempts_69():
    with fake() as f:
        f.fail_next("SubmitJob", 500, "ServerException", "internal error", count=5)
        r = fake_aws.run(submit_args("pool-3"), env_for(f))
        check(r.code == 69, "exit 69", r)
        check(len(f.errors) == 3, "3 attempts (the default), got %d" % len(f.errors))
        check("SubmitJob" in r.err and "ServerException" in r.err and "3 attempts" in r.err, "message", r)
        check(f.jobs() == {}, "no job")
        within(r, 15)


@case
def client_exception_not_retried_76():
    with fake() as f:
        r = fake_aws.run(["submit-job", "--job-name", "pool-4", "--job-queue", QUEUE,
                          "--job-definition", "no-such-definition:1"], env_for(f))
        check(r.code == 76, "exit 76", r)
        check(len(f.errors) == 1 and f.errors[0]["kind"] == "client", "one attempt: %s" % f.errors)
        check("SubmitJob" in r.err and "ClientException" in r.err and
              f.errors[0]["message"] in r.err, "message names SubmitJob and Batch's message", r)
        check(f.jobs() == {} and r.out == "", "no job, no output", r)


@case
def access_denied_is_77():
    with fake() as f:
        r = fake_aws.run(submit_args("pool-5"),
                         env_for(f, AWS_SECRET_ACCESS_KEY="wrongSecretKeyExample0123456789abcdefghi"))
        check(r.code == 77 and "InvalidSignatureException" in r.err, "exit 77", r)
        check("wrongSecretKey" not in r.err, "secret in stderr", r)
        r = fake_aws.run(["stop-jobs", "--reason", "x", "job-1"],
                         env_for(f, AWS_SECRET_ACCESS_KEY="wrongSecretKeyExample0123456789abcdefghi"))
        check(r.code == 77 and r.json()["failed"][0]["status"] == 403, "stop-jobs: 77", r)
        check(f.jobs() == {}, "nothing created")


@case
def bad_answer_is_76_naming_the_field():
    # SubmitJobResponse requires jobName and jobId (botocore's model); the fake always
    # answers well, so a one-route server answers these mutations of its document.
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps(self.server.doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % srv.server_address[1]
    env = {"AWS_ACCESS_KEY_ID": V["access key"], "AWS_SECRET_ACCESS_KEY": V["secret key"],
           "AWS_REGION": "us-east-1", "BATCH_AGENT_AWS_ENDPOINT_URL": url}
    try:
        for doc, text in (({"jobName": "x"}, "field jobId: missing"),
                          ({"jobId": 5, "jobName": "x"}, "field jobId: expected a string"),
                          ({"jobId": "i"}, "field jobName: missing"),
                          ({"jobId": "i", "jobName": "x", "jobArn": []}, "field jobArn: expected a string")):
            srv.doc = doc
            r = fake_aws.run(submit_args("x"), env)
            check(r.code == 76 and text in r.err and r.out == "", "76 with %r" % text, r)
        srv.doc = {"jobId": "i", "jobName": "x"}
        r = fake_aws.run(submit_args("x"), env)
        check(r.code == 0 and r.json() == {"jobId": "i", "jobName": "x", "jobArn": None}, "jobArn null", r)
    finally:
        srv.shutdown()


@case
def stop_jobs_cancels_a_child_that_never_started():
    with fake(launcher=lambda job, env: None) as f:
        r = fake_aws.run(submit_args("pool-6", "--array-size", "3"), env_for(f))
        check(r.code == 0, "submitted", r)
        parent = r.json()["jobId"]
        f.wait_for(lambda: all(c["status"] == "RUNNABLE" for c in f.children(parent)))
        r = fake_aws.run(["stop-jobs", "--reason", "pool finished", parent], env_for(f))
        check(r.code == 0, "exit 0", r)
        check(r.json() == {"stopped": [parent], "failed": []}, "output", r)
        check(requests_of(f, "TerminateJob")[-1]["params"] == {"jobId": parent, "reason": "pool finished"},
              "TerminateJob request")
        f.wait_for(lambda: all(c["status"] == "FAILED" for c in f.children(parent)))
        for c in f.children(parent):
            check(c.get("statusReason") == "pool finished", "child %s reason %r" % (c["jobId"], c.get("statusReason")))
            check("STARTING" not in f.history(c["jobId"]), "never started")
        check(f.errors == [], "requests valid: %s" % f.errors)
        secrets_absent(r)


@case
def stop_jobs_tries_every_id():
    with fake() as f:
        f.add_job("11111111-2222-4333-8444-555555555555", "replacement", QUEUE, DEFINITION)
        f.add_job("66666666-2222-4333-8444-555555555555", "replacement2", QUEUE, DEFINITION)
        unknown = "00000000-0000-4000-8000-000000000000"
        ids = [unknown, "11111111-2222-4333-8444-555555555555", "66666666-2222-4333-8444-555555555555"]
        r = fake_aws.run(["stop-jobs", "--reason", "shutting down"] + ids, env_for(f))
        check(r.code == 76, "exit 76 (one bad id)", r)
        out = r.json()
        check(out["stopped"] == ids[1:], "the good ones stopped, in order: %r" % out)
        check(len(out["failed"]) == 1 and out["failed"][0]["jobId"] == unknown and
              out["failed"][0]["status"] == 400 and "ClientException" in out["failed"][0]["message"] and
              "TerminateJob" in out["failed"][0]["message"], "failure listed: %r" % out["failed"])
        for jid in ids[1:]:
            f.wait_for(lambda: f.job(jid)["status"] == "FAILED")
            check(f.job(jid)["statusReason"] == "shutting down", "reason on %s" % jid)
        check(unknown in r.err and "1 of 3 jobs not stopped" in r.err, "stderr says so", r)


@case
def stop_jobs_unreachable_is_69_bounded():
    dead = "http://127.0.0.1:%d" % fake_aws.dead_port()
    env = {"AWS_ACCESS_KEY_ID": V["access key"], "AWS_SECRET_ACCESS_KEY": V["secret key"],
           "AWS_REGION": "us-east-1"}
    r = fake_aws.run(["stop-jobs", "--reason", "x", "--endpoint-url", dead, "a", "b"], env)
    check(r.code == 69, "exit 69", r)
    out = r.json()
    check(out["stopped"] == [] and [x["jobId"] for x in out["failed"]] == ["a", "b"], "both failed", r)
    check(all(x["status"] is None and dead in x["message"] and "3 attempts" in x["message"]
              for x in out["failed"]), "no HTTP status, 3 attempts each", r)
    within(r, 10)


@case
def stop_jobs_throttled_then_stopped():
    with fake() as f:
        f.add_job("77777777-2222-4333-8444-555555555555", "w", QUEUE, DEFINITION)
        f.fail_next("TerminateJob", 429, "TooManyRequestsException", "slow down", count=2)
        r = fake_aws.run(["stop-jobs", "--reason", "done", "77777777-2222-4333-8444-555555555555"], env_for(f))
        check(r.code == 0 and r.json()["failed"] == [], "retried to success", r)
        check(len(f.errors) == 2 and len(requests_of(f, "TerminateJob")) == 1, "2 throttled + 1")
        within(r, 8)


@case
def job_parameters_prints_the_job_identity():
    with fake() as f:
        arn = f.definition_arn(DEFINITION, 3)
        f.add_job(MANAGER_ID, "pool-manager", QUEUE, arn, parameters={"workers": "4"})
        r = fake_aws.run(["job-parameters"], env_for(f, AWS_BATCH_JOB_ID=MANAGER_ID))
        check(r.code == 0, "exit 0", r)
        check(r.json() == {"jobId": MANAGER_ID, "parameters": {"workers": "4"}, "jobName": "pool-manager",
                           "jobQueue": f.queue_arn(QUEUE), "jobDefinition": arn}, "output", r)
        check(f.errors == [] and requests_of(f, "DescribeJobs")[-1]["params"] == {"jobs": [MANAGER_ID]},
              "DescribeJobs valid: %s" % f.errors)
        secrets_absent(r)
        # The manager submits its workers with its own queue and definition.
        got = r.json()
        r = fake_aws.run(["submit-job", "--job-name", "pool-workers", "--job-queue", got["jobQueue"],
                          "--job-definition", got["jobDefinition"], "--array-size", "2"], env_for(f))
        check(r.code == 0 and f.errors == [], "queue and definition ARNs accepted: %s" % f.errors, r)
        # Absent: null; wrong type: 76 naming the field.
        f.add_job("absent-1", "x", QUEUE, arn, extra={"jobQueue": None, "jobDefinition": None})
        r = fake_aws.run(["job-parameters"], env_for(f, AWS_BATCH_JOB_ID="absent-1"))
        check(r.code == 0 and r.json()["jobQueue"] is None and r.json()["jobDefinition"] is None, "nulls", r)
        for field in ("jobName", "jobQueue", "jobDefinition"):
            f.add_job("wrong-" + field, "x", QUEUE, arn, extra={field: 7})
            r = fake_aws.run(["job-parameters"], env_for(f, AWS_BATCH_JOB_ID="wrong-" + field))
            check(r.code == 76 and ("field jobs[0].%s: expected a string" % field) in r.err, field, r)


@case
def plaintext_endpoint_refused_78():
    # 198.18.0.1: not loopback, so refused before any connection is tried.
    env = {"AWS_ACCESS_KEY_ID": V["access key"], "AWS_SECRET_ACCESS_KEY": V["secret key"],
           "AWS_REGION": "us-east-1"}
    for args in (submit_args("x", "--endpoint-url", "http://198.18.0.1"),
                 ["stop-jobs", "--reason", "x", "--endpoint-url", "http://198.18.0.1", "a"]):
        r = fake_aws.run(args, env)
        check(r.code == 78 and "clear text" in r.err and r.out == "", "refused", r)
        within(r, 3)


@case
def credentials_from_the_environment_only():
    with fake() as f:
        r = fake_aws.run(["--log-level", "debug"] + submit_args("pool-7"), env_for(f))
        check(r.code == 0, "exit 0", r)
        auth = requests_of(f, "SubmitJob")[-1]["headers"]["authorization"]
        check(V["access key"] in auth, "signed with the environment's key")
        check(requests_of(f, "SubmitJob")[-1]["headers"].get("x-amz-security-token") == V["session token"],
              "session token sent as a header")
        secrets_absent(r)
    r = fake_aws.run(["--help"])
    check(r.code == 0 and "submit-job" in r.out and "stop-jobs" in r.out and "jobName" in r.out, "help", r)
    for word in ("--secret", "--access-key", "--session-token", "--aws-"):
        check(word not in r.out, "no credential option %s" % word, r)


if __name__ == "__main__":
    sys.exit(fake_aws.main_cases(cases))
