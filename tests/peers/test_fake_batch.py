#!/usr/bin/python3
"""Self-test of tests/peers/fake_batch.py, driven by botocore's own Batch client (so the
fake speaks what botocore speaks, and real SigV4 passes) and by raw signed HTTP where
botocore would refuse to send the request. Loopback only. Prints `N passed, N failed`,
exits non-zero on failure."""

import http.client
import json
import os
import select
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Proxies from the caller's environment must not see loopback traffic.
for _k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_k, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1"

import botocore.auth  # noqa: E402
import botocore.awsrequest  # noqa: E402
import botocore.config  # noqa: E402
import botocore.credentials  # noqa: E402
import botocore.exceptions  # noqa: E402
import botocore.session  # noqa: E402
import botocore.validate  # noqa: E402

import fake_batch as fb  # noqa: E402

REGION = "us-west-2"
AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKEN"
QUEUE = "pool-queue"


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def client(fake, secret=SECRET, akid=AKID, token=None, attempts=1):
    cfg = botocore.config.Config(retries={"total_max_attempts": attempts, "mode": "standard"},
                                 connect_timeout=5 * fb.SCALE, read_timeout=30 * fb.SCALE)
    return botocore.session.get_session().create_client(
        "batch", region_name=REGION, endpoint_url=fake.url, aws_access_key_id=akid,
        aws_secret_access_key=secret, aws_session_token=token, config=cfg)


def raw(fake, path, body, content_type="application/json", sign=True, secret=SECRET,
        token=None, send=None):
    """One request signed by botocore's SigV4Auth but not serialised by botocore (it
    refuses invalid input): (status, headers dict lower-case, parsed body)."""
    req = botocore.awsrequest.AWSRequest(method="POST", url=fake.url + path, data=body)
    if content_type:
        req.headers["Content-Type"] = content_type
    req.headers["Host"] = "127.0.0.1:%d" % fake.port
    if sign:
        creds = botocore.credentials.Credentials(AKID, secret, token)
        botocore.auth.SigV4Auth(creds, "batch", REGION).add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=30 * fb.SCALE)
    try:
        conn.request("POST", path, body=body if send is None else send,
                     headers=dict(req.headers.items()))
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data)
    finally:
        conn.close()


def error_of(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"], \
            e.response["Error"]["Message"]
    raise Failure("%s did not fail" % call.__name__)


def sh_launcher(script_for):
    """Runs /bin/sh -c script_for(job) per job (None: the job never starts)."""
    def launch(job, env):
        script = script_for(job)
        if script is None:
            return None
        return fb.subprocess_launcher(["/bin/sh", "-c", script])(job, env)
    return launch


def index_of(job):
    return job.get("arrayProperties", {}).get("index")


def validate_detail(detail):
    """The fake's JobDetail against the model; startedAt is 'required' in the model but
    absent before RUNNING in real answers (reference notes), so that one is tolerated."""
    shape = fb.service_model().shape_for("JobDetail")
    report = botocore.validate.ParamValidator().validate(detail, shape)
    problems = [line for line in report.generate_report().splitlines()[1:]
                if '"startedAt"' not in line]
    check(not problems, "JobDetail %s not valid: %s" % (detail["jobId"], problems))


# -- cases ---------------------------------------------------------------------------------

def case_array_succeeds(tmp):
    base = {"PATH": "/usr/bin:/bin", "FROM_BASE": "yes"}
    script = 'env | grep -E "^(AWS_BATCH_|FROM_|OVERRIDE_)" | sort > "%s/$AWS_BATCH_JOB_ID.env"' % tmp
    with fb.FakeBatch({AKID: SECRET}, region=REGION, base_env=base,
                      launcher=sh_launcher(lambda job: script)) as fake:
        fake.add_job_definition("worker", 1, {"a": "def", "b": "def"})
        fake.add_job_definition("worker", 2, {"a": "def2", "b": "def2"})
        bc = client(fake)
        queue_arn = "arn:aws:batch:%s:%s:job-queue/%s" % (REGION, fb.ACCOUNT, QUEUE)
        resp = bc.submit_job(jobName="workers", jobQueue=queue_arn, jobDefinition="worker:1",
                             arrayProperties={"size": 3}, parameters={"b": "req"},
                             containerOverrides={"environment": [
                                 {"name": "OVERRIDE_X", "value": "1"}]})
        pid = resp["jobId"]
        check(resp["jobName"] == "workers", resp)
        check(resp["jobArn"] == "arn:aws:batch:%s:%s:job/%s" % (REGION, fb.ACCOUNT, pid), resp)
        fake.wait_for(lambda: fake.job(pid)["status"] == "SUCCEEDED", 30)
        ids = [pid] + ["%s:%d" % (pid, i) for i in range(3)] + ["no-such-job"]
        jobs = {j["jobId"]: j for j in bc.describe_jobs(jobs=ids)["jobs"]}
        check(set(jobs) == set(ids[:-1]), "unknown id must be absent: %s" % list(jobs))
        parent = jobs[pid]
        check(parent["status"] == "SUCCEEDED", parent)
        check(parent["arrayProperties"]["size"] == 3, parent)
        summary = parent["arrayProperties"]["statusSummary"]
        check(summary == {s: (3 if s == "SUCCEEDED" else 0) for s in fb.statuses()}, summary)
        check(parent["jobQueue"] == queue_arn and parent["parameters"] == {"a": "def", "b": "req"},
              parent)
        check(parent["jobDefinition"] == "arn:aws:batch:%s:%s:job-definition/worker:1"
              % (REGION, fb.ACCOUNT), parent)
        for i in range(3):
            cid = "%s:%d" % (pid, i)
            child = jobs[cid]
            check(child["status"] == "SUCCEEDED" and child["arrayProperties"]["index"] == i, child)
            check(child["container"]["exitCode"] == 0, child)
            check(child["statusReason"] == fb.CONTAINER_EXITED, child)
            check(child["startedAt"] <= child["stoppedAt"], child)
            check(fake.history(cid) == ["PENDING", "RUNNABLE", "STARTING", "RUNNING",
                                        "SUCCEEDED"], fake.history(cid))
            with open(os.path.join(tmp, cid + ".env")) as f:
                env = dict(line.rstrip("\n").split("=", 1) for line in f)
            check(env == {"AWS_BATCH_JOB_ID": cid, "AWS_BATCH_JOB_ARRAY_INDEX": str(i),
                          "AWS_BATCH_JOB_ARRAY_SIZE": "3", "AWS_BATCH_JOB_ATTEMPT": "1",
                          "AWS_BATCH_JQ_NAME": QUEUE, "AWS_BATCH_CE_NAME": "fake-ce",
                          "FROM_BASE": "yes", "OVERRIDE_X": "1"}, env)
        check(fake.history(pid) == ["SUBMITTED", "PENDING", "SUCCEEDED"], fake.history(pid))
        for j in fake.jobs().values():
            validate_detail(j)
        check(fake.live(pid) == [], fake.live(pid))
        check([r["operation"] for r in fake.requests] == ["SubmitJob", "DescribeJobs"],
              fake.requests)
        check(fake.errors == [], fake.errors)


def case_child_failure_and_definition_forms(tmp):
    fail_one = sh_launcher(lambda job: "exit 3" if index_of(job) == 1 else "exit 0")
    with fb.FakeBatch({AKID: SECRET}, region=REGION, launcher=fail_one) as fake:
        fake.add_job_definition("worker", 1, {"p": "1"})
        fake.add_job_definition("worker", 4, {"p": "4"})
        bc = client(fake)
        pid = bc.submit_job(jobName="w", jobQueue=QUEUE, jobDefinition="worker",
                            arrayProperties={"size": 2})["jobId"]
        fake.wait_for(lambda: fake.job(pid)["status"] == "FAILED", 30)
        parent = fake.job(pid)
        check(parent["statusReason"] == fb.ARRAY_CHILD_FAILED, parent)
        check(parent["jobDefinition"].endswith("job-definition/worker:4"), "name = latest")
        check(parent["parameters"] == {"p": "4"}, parent)
        bad = fake.job(pid + ":1")
        check(bad["container"]["exitCode"] == 3 and bad["statusReason"] == fb.CONTAINER_EXITED,
              bad)
        check(bad["attempts"][0]["container"]["exitCode"] == 3, bad)
        check(fake.job(pid + ":0")["status"] == "SUCCEEDED", fake.job(pid + ":0"))
        # A single job by ARN: launched once, no array index.
        arn = fake.add_job_definition("single", 7)
        sid = bc.submit_job(jobName="one", jobQueue=QUEUE, jobDefinition=arn)["jobId"]
        fake.wait_for(lambda: fake.job(sid)["status"] in fb.TERMINAL, 30)
        single = bc.describe_jobs(jobs=[sid])["jobs"][0]
        check(single["status"] == "SUCCEEDED" and "arrayProperties" not in single, single)
        check(single["jobDefinition"] == arn, single)
        for ref in ("nosuch", "worker:3", "arn:aws:batch:%s:%s:job-definition/worker:9"
                    % (REGION, fb.ACCOUNT)):
            status, code, msg = error_of(bc.submit_job, jobName="x", jobQueue=QUEUE,
                                         jobDefinition=ref)
            check((status, code) == (400, "ClientException") and ref in msg, (status, code, msg))
        check(len([e for e in fake.errors if e["kind"] == "client"]) == 3, fake.errors)


def case_terminate_parent(tmp):
    never_1 = sh_launcher(lambda job: None if index_of(job) == 1 else "exec sleep 600")
    with fb.FakeBatch({AKID: SECRET}, region=REGION, launcher=never_1) as fake:
        fake.add_job_definition("worker")
        bc = client(fake)
        pid = bc.submit_job(jobName="w", jobQueue=QUEUE, jobDefinition="worker",
                            arrayProperties={"size": 3})["jobId"]
        c0, c1, c2 = ("%s:%d" % (pid, i) for i in range(3))
        fake.wait_for(lambda: [fake.job(c)["status"] for c in (c0, c1, c2)]
                      == ["RUNNING", "RUNNABLE", "RUNNING"], 30)
        # CancelJob does not touch a RUNNING job, and still succeeds.
        bc.cancel_job(jobId=c0, reason="not me")
        check(fake.job(c0)["status"] == "RUNNING", fake.job(c0))
        check("statusReason" not in fake.job(c0), fake.job(c0))
        check(fake.live(pid) == sorted([pid, c0, c1, c2]), fake.live(pid))
        bc.terminate_job(jobId=pid, reason="pool shut down")
        # The child that never started is cancelled by the call itself.
        c1d = fake.job(c1)
        check(c1d["status"] == "FAILED" and c1d["statusReason"] == "pool shut down", c1d)
        check("exitCode" not in c1d["container"] and "startedAt" not in c1d, c1d)
        fake.wait_for(lambda: fake.job(pid)["status"] == "FAILED", 30)
        for c in (c0, c2):
            d = fake.job(c)
            check(d["status"] == "FAILED" and d["statusReason"] == "pool shut down", d)
            check(d["container"]["exitCode"] == 128 + signal.SIGTERM, d)
        check(fake.job(pid)["statusReason"] == "pool shut down", fake.job(pid))
        check(fake.live(pid) == [], fake.live(pid))
        status, code, _ = error_of(bc.terminate_job, jobId="no-such-job", reason="x")
        check((status, code) == (400, "ClientException"), (status, code))
        status, code, _ = error_of(bc.cancel_job, jobId="no-such-job", reason="x")
        check((status, code) == (400, "ClientException"), (status, code))


def case_sigkill_after_stop_timeout(tmp):
    stubborn = sh_launcher(lambda job: 'trap "" TERM; while :; do sleep 1; done')
    with fb.FakeBatch({AKID: SECRET}, region=REGION, launcher=stubborn,
                      stop_timeout=0.5) as fake:
        fake.add_job_definition("worker")
        bc = client(fake)
        jid = bc.submit_job(jobName="w", jobQueue=QUEUE, jobDefinition="worker")["jobId"]
        fake.wait_for(lambda: fake.job(jid)["status"] == "RUNNING", 30)
        t0 = time.monotonic()
        bc.terminate_job(jobId=jid, reason="stop")
        check(fake.job(jid)["status"] == "RUNNING", "terminating: RUNNING until it exits")
        fake.wait_for(lambda: fake.job(jid)["status"] == "FAILED", 30)
        check(time.monotonic() - t0 >= 0.5 * fb.SCALE, "SIGKILL came before the stop timeout")
        d = fake.job(jid)
        check(d["container"]["exitCode"] == 128 + signal.SIGKILL and d["statusReason"] == "stop", d)


def case_add_job_and_cancel(tmp):
    with fb.FakeBatch({AKID: (SECRET, TOKEN)}, region=REGION) as fake:   # no launcher
        fake.add_job_definition("mgr", 3, {"role": "manager"})
        fake.add_job("11111111-2222-3333-4444-555555555555", "manager", QUEUE, "mgr:3",
                     parameters={"port": "9009"},
                     extra={"container": {"networkInterfaces": [
                         {"privateIpv4Address": "10.0.0.238"}]}})
        bc = client(fake, token=TOKEN)
        me = bc.describe_jobs(jobs=["11111111-2222-3333-4444-555555555555"])["jobs"][0]
        check(me["status"] == "RUNNING" and me["parameters"] == {"role": "manager", "port": "9009"},
              me)
        check(me["container"]["networkInterfaces"][0]["privateIpv4Address"] == "10.0.0.238", me)
        jid = bc.submit_job(jobName="w", jobQueue=QUEUE, jobDefinition="mgr")["jobId"]
        fake.wait_for(lambda: fake.job(jid)["status"] == "RUNNABLE", 30)
        bc.cancel_job(jobId=jid, reason="never mind")
        d = fake.job(jid)
        check(d["status"] == "FAILED" and d["statusReason"] == "never mind", d)
        bc.terminate_job(jobId="11111111-2222-3333-4444-555555555555", reason="done")
        check(fake.job("11111111-2222-3333-4444-555555555555")["status"] == "FAILED", "add_job")
        # The session token is part of the credentials: without it the key is refused.
        status, code, _ = error_of(client(fake).describe_jobs, jobs=[jid])
        check((status, code) == (403, "UnrecognizedClientException"), (status, code))
        status, code, _ = error_of(client(fake, token="other").describe_jobs, jobs=[jid])
        check((status, code) == (403, "UnrecognizedClientException"), (status, code))


def case_bad_signature(tmp):
    with fb.FakeBatch({AKID: SECRET}, region=REGION) as fake:
        fake.add_job_definition("worker")
        status, code, _ = error_of(client(fake, secret="wrong").submit_job, jobName="w",
                                   jobQueue=QUEUE, jobDefinition="worker")
        check((status, code) == (403, "InvalidSignatureException"), (status, code))
        status, code, _ = error_of(client(fake, akid="AKIDUNKNOWN").describe_jobs, jobs=["x"])
        check((status, code) == (403, "UnrecognizedClientException"), (status, code))
        status, hdrs, doc = raw(fake, "/v1/describejobs", b'{"jobs": []}', sign=False)
        check(status == 403 and hdrs["x-amzn-errortype"] == "UnrecognizedClientException"
              and "message" in doc, (status, hdrs, doc))
        # The body is signed: the same length, another job id.
        status, hdrs, doc = raw(fake, "/v1/describejobs", b'{"jobs": ["a"]}',
                                send=b'{"jobs": ["b"]}')
        check(status == 403 and hdrs["x-amzn-errortype"] == "InvalidSignatureException",
              (status, hdrs, doc))
        check(fake.jobs() == {} and fake.requests == [], "a refused request changed state")
        kinds = [(e["kind"], e["status"], e["error_type"]) for e in fake.errors]
        check(kinds == [("signature", 403, "InvalidSignatureException"),
                        ("signature", 403, "UnrecognizedClientException"),
                        ("signature", 403, "UnrecognizedClientException"),
                        ("signature", 403, "InvalidSignatureException")], kinds)
        # Signed properly, the same raw path is accepted.
        status, hdrs, doc = raw(fake, "/v1/describejobs", b'{"jobs": ["a"]}')
        check(status == 200 and doc == {"jobs": []}, (status, hdrs, doc))


def case_invalid_requests(tmp):
    with fb.FakeBatch({AKID: SECRET}, region=REGION) as fake:
        fake.add_job_definition("worker")
        bad = [
            (b'{"jobName": "w", "jobDefinition": "worker"}', "application/json", "jobQueue"),
            (b'{"jobName": "w", "jobQueue": "q", "jobDefinition": "worker", "bogus": 1}',
             "application/json", "bogus"),
            (b'{"jobName": 5, "jobQueue": "q", "jobDefinition": "worker"}',
             "application/json", "jobName"),
            (b'{"jobName": "w", "jobQueue": "q", "jobDefinition": "worker"}',
             "application/x-www-form-urlencoded", "Content-Type"),
            (b'jobName=w', "application/json", "JSON"),
        ]
        for body, ctype, word in bad:
            status, hdrs, doc = raw(fake, "/v1/submitjob", body, content_type=ctype)
            check(status == 400 and hdrs["x-amzn-errortype"] == "ClientException"
                  and word in doc["message"], (body, status, hdrs, doc))
        # Valid for botocore (the model has no bounds), not for Batch: size 2..10000.
        bc = client(fake)
        for size in (1, 10001):
            status, code, msg = error_of(bc.submit_job, jobName="w", jobQueue=QUEUE,
                                         jobDefinition="worker", arrayProperties={"size": size})
            check((status, code) == (400, "ClientException") and "size" in msg, (status, code, msg))
        status, code, _ = error_of(bc.submit_job, jobName="-w", jobQueue=QUEUE,
                                   jobDefinition="worker")
        check((status, code) == (400, "ClientException"), (status, code))
        status, code, _ = error_of(bc.describe_jobs, jobs=["j%d" % i for i in range(101)])
        check((status, code) == (400, "ClientException"), (status, code))
        status, hdrs, doc = raw(fake, "/v1/listjobs", b"{}")
        check(status == 404, (status, hdrs, doc))
        check(fake.jobs() == {} and fake.requests == [], "an invalid request changed state")
        kinds = [e["kind"] for e in fake.errors]
        check(kinds == ["validation"] * 5 + ["client"] * 4 + ["route"], kinds)


def case_fail_next(tmp):
    with fb.FakeBatch({AKID: SECRET}, region=REGION) as fake:
        fake.add_job_definition("worker")
        bc = client(fake)
        fake.fail_next("DescribeJobs", 500, "ServerException", "injected")
        status, code, msg = error_of(bc.describe_jobs, jobs=["x"])
        check((status, code, msg) == (500, "ServerException", "injected"), (status, code, msg))
        check(bc.describe_jobs(jobs=["x"])["jobs"] == [], "the second call succeeds")
        # botocore's standard retry mode retries throttling: one error, then success.
        retrying = client(fake, attempts=3)
        fake.fail_next("SubmitJob", 400, "ThrottlingException", "Rate exceeded")
        jid = retrying.submit_job(jobName="w", jobQueue=QUEUE, jobDefinition="worker")["jobId"]
        check(jid in fake.jobs(), "retried submit created the job")
        injected = [(e["operation"], e["status"], e["error_type"]) for e in fake.errors]
        check(injected == [("DescribeJobs", 500, "ServerException"),
                           ("SubmitJob", 400, "ThrottlingException")], injected)
        check([r["operation"] for r in fake.requests] == ["DescribeJobs", "SubmitJob"],
              fake.requests)


def case_stop_kills_everything(tmp):
    handles = []

    def launch(job, env):
        h = fb.subprocess_launcher(["/bin/sh", "-c", "sleep 600 & wait"])(job, env)
        handles.append(h)
        return h

    fake = fb.FakeBatch({AKID: SECRET}, region=REGION, launcher=launch)
    try:
        fake.add_job_definition("worker")
        pid = client(fake).submit_job(jobName="w", jobQueue=QUEUE, jobDefinition="worker",
                                      arrayProperties={"size": 2})["jobId"]
        fake.wait_for(lambda: len(fake.live(pid + ":")) == 2 and all(
            fake.job(c)["status"] == "RUNNING" for c in fake.live(pid + ":")), 30)
    finally:
        fake.stop()
    check(len(handles) == 2 and all(h.poll() is not None for h in handles),
          "stop() left processes running")
    for h in handles:
        left = group_members(h.pid)
        check(not left, "stop() left %s of group %d alive" % (left, h.pid))
    fake.stop()     # idempotent


def group_members(pgid):
    """Processes of group pgid that have not exited within 10 s (scaled). Exit is awaited
    with a pidfd per process (readable once it has exited, zombie or reaped), not polled."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    alive = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not select.select([fd], [], [], 10 * fb.SCALE)[0]:
                alive.append(pid)
        finally:
            os.close(fd)
    return alive


CASES = [case_array_succeeds, case_child_failure_and_definition_forms, case_terminate_parent,
         case_sigkill_after_stop_timeout, case_add_job_and_cancel, case_bad_signature,
         case_invalid_requests, case_fail_next, case_stop_kills_everything]


def main():
    passed = failed = 0
    only = os.environ.get("FAKE_BATCH_ONLY")
    for fn in CASES:
        if only and only not in fn.__name__:
            continue
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="fake-batch-") as tmp:
            try:
                fn(tmp)
            except Exception:
                failed += 1
                print("FAIL %s (%.1fs)" % (fn.__name__, time.monotonic() - t0))
                print("    " + traceback.format_exc().replace("\n", "\n    "))
            else:
                passed += 1
                print("ok   %s (%.1fs)" % (fn.__name__, time.monotonic() - t0))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
