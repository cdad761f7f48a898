"""Credential resolution of batch-agent-aws (through job-parameters, the command that
needs credentials) against the fake container credentials endpoint: botocore's order,
allowed hosts, authorization token and token file, retries and timeouts."""

import os
import shutil
import subprocess
import sys
import tempfile

import fake_aws
from fake_aws import check, within

cases, case = fake_aws.case_list()
JOB = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f#0"
TMP = tempfile.mkdtemp(prefix="test_aws_credentials.")


def env_for(fake, **extra):
    env = {"AWS_REGION": "us-east-1", "AWS_BATCH_JOB_ID": JOB,
           "BATCH_AGENT_AWS_ENDPOINT_URL": fake.url,
           "AWS_CONTAINER_CREDENTIALS_FULL_URI": fake.creds_url}
    env.update(extra)
    return env


def no_secrets(fake, r, *more):
    for s in (fake.creds_doc["SecretAccessKey"], fake.creds_doc["Token"]) + more:
        check(s not in r.err and s not in r.out, "secret in output", r)


@case
def full_uri_loopback():
    with fake_aws.FakeAWS() as fake:
        r = fake_aws.run(["--log-level", "debug", "job-parameters"], env_for(fake))
        check(r.code == 0 and r.json()["jobId"] == JOB, "exit 0", r)
        req = fake.routed("creds")[0]
        hdrs = {k.lower(): v for k, v in req["headers"]}
        check(hdrs.get("accept") == "application/json", "Accept: application/json")
        check("authorization" not in hdrs, "no Authorization without a token")
        no_secrets(fake, r)


@case
def full_uri_localhost_allowed():
    with fake_aws.FakeAWS() as fake:
        url = fake.creds_url.replace("127.0.0.1", "localhost")
        r = fake_aws.run(["job-parameters"], env_for(fake, AWS_CONTAINER_CREDENTIALS_FULL_URI=url))
        check(r.code == 0, "localhost allowed", r)


@case
def full_uri_other_hosts_refused_78():
    for url in ("http://192.0.2.10/creds", "http://169.254.0.1/creds", "http://example.com/creds",
                "ftp://127.0.0.1/creds", "not a url"):
        with fake_aws.FakeAWS() as fake:
            r = fake_aws.run(["job-parameters"], env_for(fake, AWS_CONTAINER_CREDENTIALS_FULL_URI=url))
            check(r.code == 78 and "AWS_CONTAINER_CREDENTIALS_FULL_URI" in r.err, url, r)
            within(r, 1)


def run_without_network(args, env):
    """The helper in a new network namespace with no interface up: 169.254.170.2 (and
    every other address) is unreachable at once, so nothing can leave this host."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    e = fake_aws.base_env()
    e.update(env)
    argv = ["unshare", "--net", "--", *fake_aws.wrapper(), fake_aws.binary(), *args]
    p = subprocess.run(argv, env=e, capture_output=True, text=True, timeout=60 * fake_aws.slowdown())
    return fake_aws.Result(p.returncode, p.stdout, p.stderr, 0)


@case
def relative_uri_wins_over_full_uri():
    """botocore's order: the relative URI, on http://169.254.170.2, before the full URI;
    and no variable moves that address (the test hook BATCH_AGENT_AWS_ECS_CREDENTIALS_ENDPOINT
    is gone: set to the fake, it must not be used)."""
    with fake_aws.FakeAWS() as fake:
        env = env_for(fake, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=fake.creds_path,
                      BATCH_AGENT_AWS_ECS_CREDENTIALS_ENDPOINT=fake.url)
        r = run_without_network(["--max-attempts", "1", "job-parameters"], env)
        if r is None:
            print("relative_uri_wins_over_full_uri: SKIP (needs root and unshare for a network namespace)")
            return
        check(r.code == 69 and "169.254.170.2" + fake.creds_path in r.err, "relative URI on 169.254.170.2", r)
        check(fake.count("creds") == 0, "the credentials request reached the fake", r)


@case
def environment_keys_win():
    with fake_aws.FakeAWS() as fake:
        fake.add_key("AKIDEXAMPLEENVKEY001", "envSecretExample/0123456789abcdefghijklm", None)
        env = env_for(fake, AWS_ACCESS_KEY_ID="AKIDEXAMPLEENVKEY001",
                      AWS_SECRET_ACCESS_KEY="envSecretExample/0123456789abcdefghijklm")
        r = fake_aws.run(["job-parameters"], env)
        check(r.code == 0 and fake.count("creds") == 0, "endpoint not asked", r)


@case
def uninitialized_503_then_success():
    with fake_aws.FakeAWS() as fake:
        fake.plan["creds"] = [("status", 503, fake_aws.sample_text("ecs_credentials/error_503_uninitialized.json"))]
        r = fake_aws.run(["job-parameters"], env_for(fake))
        check(r.code == 0, "exit 0", r)
        a, b = fake.routed("creds")
        check(0.9 <= b["time"] - a["time"] <= 2.5 * fake_aws.slowdown(), "1 s between attempts (botocore)")


@case
def authorization_token_variable():
    with fake_aws.FakeAWS() as fake:
        fake.creds_auth = "Bearer abcdefghijklmnopqrstuvwxyz0123456789"
        r = fake_aws.run(["--log-level", "debug", "job-parameters"],
                         env_for(fake, AWS_CONTAINER_AUTHORIZATION_TOKEN=fake.creds_auth))
        check(r.code == 0, "exit 0", r)
        no_secrets(fake, r, fake.creds_auth)


@case
def wrong_authorization_token_is_77_after_retries():
    with fake_aws.FakeAWS() as fake:
        fake.creds_auth = "right-token"
        r = fake_aws.run(["job-parameters"], env_for(fake, AWS_CONTAINER_AUTHORIZATION_TOKEN="wrong-token"))
        check(r.code == 77 and "HTTP 401" in r.err and "3 attempts" in r.err, "exit 77", r)
        check(fake.count("creds") == 3, "botocore retries every non-200 answer 3 times")
        check("wrong-token" not in r.err, "token in stderr", r)
        within(r, 5)


@case
def token_file_wins_and_is_reread():
    with fake_aws.FakeAWS() as fake:
        path = os.path.join(TMP, "token")
        env = env_for(fake, AWS_CONTAINER_AUTHORIZATION_TOKEN="variable-token",
                      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=path)
        for token in ("file-token-one", "file-token-two"):
            with open(path, "w") as f:
                f.write(token)
            fake.creds_auth = token
            r = fake_aws.run(["job-parameters"], env)
            check(r.code == 0, "token %s accepted" % token, r)


@case
def token_file_problems_are_78():
    with fake_aws.FakeAWS() as fake:
        path = os.path.join(TMP, "token-nl")
        with open(path, "w") as f:
            f.write("token-with-newline\n")
        r = fake_aws.run(["job-parameters"], env_for(fake, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=path))
        check(r.code == 78 and "newline" in r.err and "token-with-newline" not in r.err, "newline", r)
        r = fake_aws.run(["job-parameters"],
                         env_for(fake, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=os.path.join(TMP, "absent")))
        check(r.code == 78 and "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" in r.err, "missing file", r)
        r = fake_aws.run(["job-parameters"], env_for(fake, AWS_CONTAINER_AUTHORIZATION_TOKEN="a\r\nX-Evil: 1"))
        check(r.code == 78, "CR/LF in the variable", r)
        check(fake.count("creds") == 0, "nothing sent")


@case
def non_json_retried_then_76():
    """Not JSON, or a good answer with more after it (an answer is one JSON value)."""
    for behaviour in ("nonjson", "trailing"):
        with fake_aws.FakeAWS() as fake:
            fake.always["creds"] = behaviour
            r = fake_aws.run(["job-parameters"], env_for(fake))
            check(r.code == 76 and "not JSON" in r.err and "container credentials endpoint" in r.err,
                  f"{behaviour}: exit 76", r)
            check(fake.count("creds") == 3, f"{behaviour}: 3 attempts")


@case
def wrong_types_are_76():
    for field, value, text in (("AccessKeyId", 5, "field AccessKeyId: expected a string"),
                               ("Token", None, "field Token: missing"),
                               ("Expiration", [], "field Expiration: expected a string"),
                               ("SecretAccessKey", "", "field SecretAccessKey: empty")):
        with fake_aws.FakeAWS() as fake:
            def mut(d, field=field, value=value):
                if value is None:
                    d.pop(field)
                else:
                    d[field] = value
            fake.always["creds"] = "wrongtypes"
            fake.wrongtypes["creds"] = mut
            r = fake_aws.run(["job-parameters"], env_for(fake))
            check(r.code == 76 and text in r.err, text, r)
            no_secrets(fake, r)


@case
def slow_endpoint_bounded_69():
    with fake_aws.FakeAWS() as fake:
        fake.always["creds"] = "slow"
        r = fake_aws.run(["job-parameters"], env_for(fake))
        check(r.code == 69 and "no answer in time" in r.err and "3 attempts" in r.err, "exit 69", r)
        within(r, 10)  # 3 x 2 s + 2 x 1 s


@case
def unreachable_endpoint_69():
    with fake_aws.FakeAWS() as fake:
        dead = "http://127.0.0.1:%d/v2/credentials/x" % fake_aws.dead_port()
        r = fake_aws.run(["job-parameters"], env_for(fake, AWS_CONTAINER_CREDENTIALS_FULL_URI=dead))
        check(r.code == 69 and "127.0.0.1" in r.err, "exit 69", r)
        within(r, 4)


@case
def huge_answer_76():
    with fake_aws.FakeAWS() as fake:
        fake.always["creds"] = "huge"
        r = fake_aws.run(["job-parameters"], env_for(fake))
        check(r.code == 76 and "larger than" in r.err, "exit 76", r)


if __name__ == "__main__":
    try:
        sys.exit(fake_aws.main_cases(cases))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
