"""Web identity credentials (EKS IAM roles for service accounts) in batch-agent-aws:
AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN traded at STS AssumeRoleWithWebIdentity
(tests/peers/fake_sts.py: botocore's sts model, unsigned requests), the keys then signing
DescribeJobs (tests/peers/fake_batch.py: botocore's SigV4 signer recomputes it); the
chain's order, every bad input and STS refusal with its exit status, and the token kept
out of argv, logs and the payload's environment (the agent end to end)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import agentaws
import agenttest
import fake_aws
import fake_batch
import fake_sts
from fake_aws import check, within

cases, case = fake_aws.case_list()
JOB = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f"
ROLE = "arn:aws:iam::123456789012:role/batch-agent-irsa"
# A projected service account token is a JWT; this one also holds the characters that
# form encoding must escape, so that a value that arrives intact proves the encoding.
TOKEN = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImV4YW1wbGUifQ."
         + "eyJhdWQiOlsic3RzLmFtYXpvbmF3cy5jb20iXSwiZXhwIjoxNzAwMDAwMDAwfQ" * 8
         + ".sig+/=&%;x y~_-.")
TMP = tempfile.mkdtemp(prefix="test_aws_web_identity.")


_files = []


def token_file(content=TOKEN):
    """A new file holding content."""
    _files.append(content)
    path = os.path.join(TMP, "token-%d" % len(_files))
    with open(path, "w") as f:
        f.write(content)
    return path


class Fakes:
    """A fake STS that knows TOKEN for ROLE, and a fake Batch that accepts only the keys
    that STS hands out, with the job in it."""

    def __enter__(self):
        self.sts = fake_sts.FakeSTS(tokens={TOKEN: [ROLE]})
        issued = self.sts.issued
        self.batch = fake_batch.FakeBatch(
            credentials={issued["AccessKeyId"]: (issued["SecretAccessKey"], issued["SessionToken"])})
        self.batch.add_job(JOB, "worker", "queue", "jobdef", parameters={"manager": "10.0.0.1:7000"})
        self.token_file = token_file()
        return self

    def __exit__(self, *exc):
        self.batch.stop()
        self.sts.stop()

    def env(self, **extra):
        env = {"AWS_REGION": "us-east-1", "AWS_BATCH_JOB_ID": JOB,
               "BATCH_AGENT_AWS_ENDPOINT_URL": self.batch.url, "AWS_ENDPOINT_URL_STS": self.sts.url,
               "AWS_WEB_IDENTITY_TOKEN_FILE": self.token_file, "AWS_ROLE_ARN": ROLE,
               "AWS_ROLE_SESSION_NAME": "batch-job-1"}
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def secrets(self):
        return (TOKEN, self.sts.issued["SecretAccessKey"], self.sts.issued["SessionToken"])


def no_secrets(fakes, r):
    for s in fakes.secrets():
        check(s not in r.err and s not in r.out, "a secret in the output", r)
    # The token's distinctive part, in case a log cut it.
    check("eyJhdWQiOlsic3Rz" not in r.err, "part of the token in stderr", r)


@case
def success_signs_describejobs_with_the_sts_keys():
    with Fakes() as f:
        r = fake_aws.run(["--log-level", "debug", "job-parameters"], f.env())
        check(r.code == 0 and r.json()["parameters"] == {"manager": "10.0.0.1:7000"}, "exit 0", r)
        check(f.sts.errors == [] and len(f.sts.requests) == 1, "one valid STS request: %r" % f.sts.errors)
        params = f.sts.requests[0]["params"]
        check(params == {"RoleArn": ROLE, "RoleSessionName": "batch-job-1", "WebIdentityToken": TOKEN},
              "the form body decodes to the model's parameters, the token intact: %r" % params)
        check(f.batch.errors == [], "DescribeJobs signature verified by botocore: %r" % f.batch.errors)
        hdrs = f.batch.requests[-1]["headers"]
        check(f.sts.issued["AccessKeyId"] + "/" in hdrs["authorization"], "signed with the STS key")
        check(hdrs["x-amz-security-token"] == f.sts.issued["SessionToken"], "the STS session token sent")
        check("STS AssumeRoleWithWebIdentity" in r.err and ROLE in r.err, "debug log names the source", r)
        no_secrets(f, r)


@case
def default_session_name_like_botocore():
    with Fakes() as f:
        r = fake_aws.run(["job-parameters"], f.env(AWS_ROLE_SESSION_NAME=None))
        check(r.code == 0, "exit 0", r)
        name = f.sts.requests[0]["params"]["RoleSessionName"]
        check(re.fullmatch(r"batch-agent-\d{10}", name), "RoleSessionName %r" % name)


@case
def expired_token_is_77_not_retried():
    with Fakes() as f:
        f.sts.expired.add(TOKEN)
        r = fake_aws.run(["job-parameters"], f.env())
        check(r.code == 77 and "ExpiredTokenException" in r.err and "has expired" in r.err, "77", r)
        check("AWS_WEB_IDENTITY_TOKEN_FILE" in r.err and ROLE in r.err, "names the inputs", r)
        check(len(f.sts.requests) == 1 and f.batch.requests == [], "one STS request, no Batch request")
        no_secrets(f, r)


@case
def refused_token_and_role_are_77():
    with Fakes() as f:
        r = fake_aws.run(["job-parameters"], f.env(AWS_WEB_IDENTITY_TOKEN_FILE=token_file("eyJ.unknown.token")))
        check(r.code == 77 and "InvalidIdentityToken" in r.err and "OIDC provider" in r.err, "unknown token", r)
        r = fake_aws.run(["job-parameters"], f.env(AWS_ROLE_ARN="arn:aws:iam::123456789012:role/other"))
        check(r.code == 77 and "HTTP 403 AccessDenied" in r.err and "trust policy" in r.err, "other role", r)
        check(len(f.sts.requests) == 2, "neither retried")
        no_secrets(f, r)


@case
def token_file_problems_are_78_before_any_request():
    with Fakes() as f:
        missing = os.path.join(TMP, "absent")
        for path, text in ((missing, "cannot open"), (token_file(""), "empty"),
                           (TMP, "cannot read"), (token_file("abc"), "shorter than"),
                           (token_file("x" * 20001), "longer than 20000 bytes")):
            r = fake_aws.run(["job-parameters"], f.env(AWS_WEB_IDENTITY_TOKEN_FILE=path))
            check(r.code == 78 and "AWS_WEB_IDENTITY_TOKEN_FILE (%s)" % path in r.err and text in r.err, text, r)
        check(f.sts.requests == [] and f.sts.errors == [], "nothing sent")


@case
def role_and_session_problems_are_78():
    with Fakes() as f:
        for extra, text in (({"AWS_ROLE_ARN": None}, "AWS_ROLE_ARN is not"),
                            ({"AWS_ROLE_ARN": "arn:aws:iam::1234:role/x"}, "is not an IAM role ARN"),
                            ({"AWS_ROLE_ARN": "arn:aws:iam::123456789012:user/someone"}, "is not an IAM role ARN"),
                            ({"AWS_ROLE_SESSION_NAME": "a"}, "AWS_ROLE_SESSION_NAME"),
                            ({"AWS_ROLE_SESSION_NAME": "has space"}, "AWS_ROLE_SESSION_NAME"),
                            ({"AWS_ENDPOINT_URL_STS": "http://192.0.2.7/"}, "in clear text"),
                            ({"AWS_ENDPOINT_URL_STS": "ftp://127.0.0.1/"}, "not an http or https URL")):
            r = fake_aws.run(["job-parameters"], f.env(**extra))
            check(r.code == 78 and text in r.err, text, r)
            within(r, 2)
        check(f.sts.requests == [] and f.sts.errors == [], "nothing sent")


@case
def transient_errors_retried_like_botocore():
    with Fakes() as f:
        f.sts.fail_next(400, "Throttling", "Rate exceeded")
        f.sts.fail_next(400, "IDPCommunicationError", "Couldn't reach the identity provider")
        f.sts.fail_next(503, "ServiceUnavailable", "Service unavailable")
        r = fake_aws.run(["--max-attempts", "4", "job-parameters"], f.env())
        check(r.code == 0 and len(f.sts.requests) == 4, "three retries, then success", r)
        f.sts.fail_next(400, "IDPCommunicationError", "Couldn't reach the identity provider", count=3)
        r = fake_aws.run(["job-parameters"], f.env())
        check(r.code == 69 and "IDPCommunicationError" in r.err and "3 attempts" in r.err, "69 after 3", r)


@case
def unreachable_sts_is_69_in_bounded_time():
    with Fakes() as f:
        dead = "http://127.0.0.1:%d" % fake_aws.dead_port()
        r = fake_aws.run(["job-parameters"], f.env(AWS_ENDPOINT_URL_STS=dead))
        check(r.code == 69 and "STS AssumeRoleWithWebIdentity" in r.err and "3 attempts" in r.err, "69", r)
        within(r, 8)


@case
def bad_answers_are_76():
    def iso_expiration(text):
        return re.sub(r'"Expiration": [0-9.E]+', '"Expiration": "2026-12-01T20:00:00Z"', text)

    def no_session_token(text):
        return text.replace('"SessionToken"', '"Token"')

    def xml(text):
        return '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"/>'

    with Fakes() as f:
        for mutate, text in ((iso_expiration, "Credentials.Expiration: expected a number"),
                             (no_session_token, "Credentials.SessionToken: missing"),
                             (xml, "bad response: not JSON")):
            f.sts.mutate = mutate
            r = fake_aws.run(["job-parameters"], f.env())
            check(r.code == 76 and text in r.err, text, r)
            no_secrets(f, r)
        check(f.batch.requests == [], "no Batch request with half a key")


@case
def environment_keys_win_over_web_identity():
    with Fakes() as f:
        f.batch._keys["AKIDEXAMPLEENVKEY001"] = ("envSecretExample/0123456789abcdefghijklm", None)
        r = fake_aws.run(["job-parameters"], f.env(AWS_ACCESS_KEY_ID="AKIDEXAMPLEENVKEY001",
                                                   AWS_SECRET_ACCESS_KEY="envSecretExample/0123456789abcdefghijklm"))
        check(r.code == 0 and f.sts.requests == [], "STS not asked", r)
        check("AKIDEXAMPLEENVKEY001/" in f.batch.requests[-1]["headers"]["authorization"], "env key used")


@case
def web_identity_wins_over_container_credentials():
    with Fakes() as f, fake_aws.FakeAWS() as container:
        r = fake_aws.run(["job-parameters"], f.env(AWS_CONTAINER_CREDENTIALS_FULL_URI=container.creds_url))
        check(r.code == 0 and len(f.sts.requests) == 1, "STS asked", r)
        check(container.count("creds") == 0, "the container endpoint was not asked")
        check(f.batch.errors == [], "signed with the STS keys: %r" % f.batch.errors)


def run_without_network(env):
    """The helper in a network namespace with no interface up: the default STS endpoint
    is named in the error, and nothing can leave this host. None when not possible."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    e = fake_aws.base_env()
    e.pop("AWS_ENDPOINT_URL_STS")
    e.update(env)
    argv = ["unshare", "--net", "--", *fake_aws.wrapper(), fake_aws.binary(), "--max-attempts", "1",
            "job-parameters"]
    p = subprocess.run(argv, env=e, capture_output=True, text=True, timeout=60 * fake_aws.slowdown())
    return fake_aws.Result(p.returncode, p.stdout, p.stderr, 0)


@case
def default_endpoint_is_regional():
    with Fakes() as f:
        for extra, url in (({"AWS_REGION": "eu-west-1"}, "https://sts.eu-west-1.amazonaws.com/"),
                           ({"AWS_REGION": "eu-west-1", "AWS_STS_REGIONAL_ENDPOINTS": "legacy"},
                            "https://sts.amazonaws.com/"),
                           ({"AWS_REGION": "ap-east-1", "AWS_STS_REGIONAL_ENDPOINTS": "legacy"},
                            "https://sts.ap-east-1.amazonaws.com/"),
                           ({"AWS_REGION": "cn-north-1"}, "https://sts.cn-north-1.amazonaws.com.cn/"),
                           # botocore checks the variable only when no endpoint is given.
                           ({"AWS_STS_REGIONAL_ENDPOINTS": "global"}, None)):
            env = f.env(**extra)
            env.pop("AWS_ENDPOINT_URL_STS")
            r = run_without_network(env)
            if r is None:
                print("default_endpoint_is_regional: SKIP (needs root and unshare for a network namespace)")
                return
            if url is None:
                check(r.code == 78 and 'AWS_STS_REGIONAL_ENDPOINTS="global"' in r.err, "bad mode", r)
            else:
                check(r.code == 69 and "STS AssumeRoleWithWebIdentity (%s)" % url in r.err, url, r)


def scan_processes(root_pid, secret):
    """Every process of the agent's tree: (pid, cmdline) of those whose argv or
    environment holds the secret."""
    found = []
    for pid in [root_pid] + agenttest.descendants(root_pid):
        for part in ("cmdline", "environ"):
            try:
                with open("/proc/%d/%s" % (pid, part), "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if secret.encode() in data:
                found.append((pid, part))
    return found


@case
def agent_keeps_the_token_out_of_argv_logs_and_payload():
    """batch-agent --manager Ref::manager: while STS holds the request, no process of the
    agent has the token in its argv or environment; the payload's environment has the
    file's path (its own SDK needs it), never the token."""
    with Fakes() as f, agentaws.FakeManager() as mgr:
        f.batch.add_job(agentaws.ARRAY_JOB, "worker", "queue", "jobdef", parameters={"manager": mgr.addr})
        f.sts.hold.set()
        env = agentaws.agent_env(None, BATCH_AGENT_AWS_ENDPOINT_URL=f.batch.url,
                                 AWS_ENDPOINT_URL_STS=f.sts.url, AWS_WEB_IDENTITY_TOKEN_FILE=token_file(),
                                 AWS_ROLE_ARN=ROLE)
        agent = agentaws.Agent(["--log-level", "debug", "--manager", "Ref::manager"], env, code=0, linger=60)
        try:
            check(f.sts.arrived.wait(20 * fake_aws.slowdown()), "STS request arrived\n" + agent.describe())
            procs = agenttest.descendants(agent.proc.pid)
            check(len(procs) >= 1, "the helper runs under the agent")
            check(scan_processes(agent.proc.pid, TOKEN) == [], "token in a process's argv or environment")
            f.sts.release.set()
            mgr.wait_register()
            info = agent.info()
            with open("/proc/%d/environ" % info["pid"], "rb") as fh:
                payload_env = fh.read().split(b"\0")
            check(b"AWS_WEB_IDENTITY_TOKEN_FILE=" + env["AWS_WEB_IDENTITY_TOKEN_FILE"].encode() in payload_env,
                  "the payload keeps the token file's path")
            check(scan_processes(agent.proc.pid, TOKEN) == [], "token in the payload's environment")
            agent.stop_payload()
            check(agent.wait() == 0, "exit 0\n" + agent.describe())
            check(f.batch.errors == [], "DescribeJobs signed with the STS keys: %r" % f.batch.errors)
            err = agent.stderr
            for s in f.secrets():
                check(s not in err, "a secret in the agent's log")
        finally:
            f.sts.release.set()
            agenttest.cleanup()


if __name__ == "__main__":
    agenttest.become_subreaper()
    try:
        sys.exit(fake_aws.main_cases(cases))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
