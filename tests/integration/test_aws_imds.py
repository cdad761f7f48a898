"""batch-agent-aws spot-watch and imds-probe against the fake IMDSv2 (token flow, 404
when nothing is pending, Spot instance-action and rebalance notices from the docs)."""

import json
import os
import shutil
import signal
import socket
import sys
import threading
import time

import fake_aws
from fake_aws import check, within

cases, case = fake_aws.case_list()
TERMINATE = {"type": "instance-action", "action": "terminate", "time": "2017-09-18T08:22:00Z"}
STOP = {"type": "instance-action", "action": "stop", "time": "2017-09-18T08:22:00Z"}
REBALANCE = {"type": "rebalance", "time": "2020-10-27T08:22:00Z"}


def imds_env(fake):
    return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": fake.url}


class Watch:
    def __init__(self, fake, *args, env=None):
        e = imds_env(fake) if fake else {}
        e.update(env or {})
        self.p = fake_aws.start(["spot-watch", "--interval", "0.1"] + list(args), e)
        self.reader = fake_aws.LineReader(self.p.stdout)
        self.err = ""

    def stop(self, timeout=5):
        """SIGTERM; returns (exit code, seconds to exit)."""
        t0 = time.monotonic()
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            code = self.p.wait(timeout * fake_aws.slowdown())
        except Exception:
            self.p.kill()
            code = self.p.wait()
        self.err = self.p.stderr.read()
        self.reader.thread.join(2)
        return code, time.monotonic() - t0

    def notices(self):
        return [json.loads(line) for line in self.reader.lines]


def wait_until(cond, timeout):
    deadline = time.monotonic() + timeout * fake_aws.slowdown()
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@case
def probe_ok():
    with fake_aws.FakeAWS() as fake:
        r = fake_aws.run(["imds-probe"], imds_env(fake))
        check(r.code == 0 and r.out == "", "exit 0", r)
        hdrs = dict((k.lower(), v) for k, v in fake.routed("imds-token")[0]["headers"])
        check(hdrs.get("x-aws-ec2-metadata-token-ttl-seconds", "").isdigit(), "ttl header sent")


@case
def probe_refused_69_fast():
    r = fake_aws.run(["imds-probe"])  # base_env points IMDS at a dead port
    check(r.code == 69 and "IMDS token" in r.err, "exit 69", r)
    within(r, 1.5)


@case
def probe_no_answer_69_fast():
    # Like a bridge-mode container with hop limit 1: the PUT is never answered.
    with fake_aws.FakeAWS() as fake:
        fake.always["imds-token"] = "hang"
        r = fake_aws.run(["imds-probe"], imds_env(fake))
        check(r.code == 69 and "hop limit" in r.err, "exit 69", r)
        within(r, 3.5)


@case
def probe_silent_listener_69_fast():
    # A listener that accepts and never reads (no HTTP server at all).
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        r = fake_aws.run(["imds-probe"], {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:%d" % s.getsockname()[1]})
        check(r.code == 69, "exit 69", r)
        within(r, 3.5)
    finally:
        s.close()


@case
def disabled_is_69():
    with fake_aws.FakeAWS() as fake:
        env = imds_env(fake)
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        for cmd in ("imds-probe", "spot-watch"):
            r = fake_aws.run([cmd], env)
            check(r.code == 69 and "disabled" in r.err, cmd, r)
        check(fake.count("imds-token") == 0, "no request")


@case
def token_refused_at_start_69():
    with fake_aws.FakeAWS() as fake:
        fake.always["imds-token"] = ("status", 403, "Forbidden")
        r = fake_aws.run(["spot-watch"], imds_env(fake))
        check(r.code == 69 and "HTTP 403" in r.err, "exit 69", r)
        within(r, 2)


@case
def spot_watch_unreachable_69_fast():
    r = fake_aws.run(["spot-watch"])
    check(r.code == 69, "exit 69", r)
    within(r, 1.5)


@case
def notice_appears_mid_run_printed_once():
    with fake_aws.FakeAWS() as fake:
        fake.imds_action_after = 5
        w = Watch(fake)
        got = w.reader.wait_for(1, 10)
        # Keep polling a while: the same notice must not come again.
        wait_until(lambda: fake.imds_polls["imds-action"] >= 15, 10)
        code, took = w.stop()
        check(got, "a notice within 10 s: " + w.err)
        check(w.notices() == [TERMINATE], "one terminate line, got %r" % w.reader.lines)
        check(fake.imds_polls["imds-action"] >= 15, "kept polling")
        check(code == 0 and took < 3 * fake_aws.slowdown(), "SIGTERM -> exit 0 quickly (%s, %.1fs)" % (code, took))
        polls = fake.routed("imds-action")
        hdrs = dict((k.lower(), v) for k, v in polls[-1]["headers"])
        check(hdrs.get("x-aws-ec2-metadata-token", "").startswith(fake.IMDS_TOKEN_PREFIX), "token header")
        check(fake.count("imds-token") == 1, "one token for the run")


@case
def rebalance_and_action_change():
    with fake_aws.FakeAWS() as fake:
        fake.imds_rebalance_after = 2
        fake.imds_action_after = 4
        fake.imds_action_doc = fake_aws.sample("imds/spot_instance-action_stop_docs.json")
        w = Watch(fake)
        w.reader.wait_for(2, 10)
        fake.imds_action_doc = fake_aws.sample("imds/spot_instance-action_terminate_docs.json")
        w.reader.wait_for(3, 10)
        time.sleep(0.5)
        code, _ = w.stop()
        check(sorted(w.notices()[:2], key=lambda n: n["type"]) == [STOP, REBALANCE],
              "rebalance and stop, got %r" % w.reader.lines)
        check(w.notices()[2:] == [TERMINATE], "then terminate once, got %r" % w.reader.lines)
        check(code == 0, "exit 0")


@case
def token_refreshed_before_expiry():
    with fake_aws.FakeAWS() as fake:
        w = Watch(fake, "--token-ttl", "1")
        wait_until(lambda: fake.count("imds-token") >= 3, 10)
        code, _ = w.stop()
        check(fake.count("imds-token") >= 3, "tokens renewed: %d" % fake.count("imds-token"))
        bad = [r for r in fake.requests if r["route"] == "imds-action"]
        check(len(bad) > 0, "polled")
        check(code == 0, "exit 0: " + w.err)
        # Counted at the fake: the log's "401" could be part of a port number.
        check(fake.imds_unauthorized == 0, "no 401 when renewing in time (%d): %s" % (fake.imds_unauthorized, w.err))


@case
def unauthorized_gets_new_token():
    with fake_aws.FakeAWS() as fake:
        fake.imds_action_after = 10
        w = Watch(fake)
        wait_until(lambda: fake.imds_polls["imds-action"] >= 3, 10)
        with fake.lock:
            fake.imds_tokens.clear()  # every token now answers 401
        got = w.reader.wait_for(1, 10)
        code, _ = w.stop()
        check(got and w.notices() == [TERMINATE], "notice after re-authentication: %r %s" % (w.reader.lines, w.err))
        check(fake.count("imds-token") >= 2, "new token after 401")
        check(fake.imds_unauthorized > 0, "the fake answered 401")
        check(code == 0, "exit 0")


@case
def transient_failures_keep_watching():
    with fake_aws.FakeAWS() as fake:
        fake.imds_action_after = 0
        fake.plan["imds-action"] = [("status", 500, "oops")] * 4 + ["slow", "truncated", "huge-chunked"]
        fake.slow_seconds = 3
        w = Watch(fake, env={})
        got = w.reader.wait_for(1, 20)
        code, _ = w.stop()
        check(got and w.notices() == [TERMINATE], "notice after failures: %r %s" % (w.reader.lines, w.err))
        check(code == 0, "exit 0: " + w.err)


@case
def sigterm_while_waiting_for_first_token_exits_0():
    with fake_aws.FakeAWS() as fake:
        fake.always["imds-token"] = "hang"
        w = Watch(fake)
        wait_until(lambda: fake.count("imds-token") >= 1, 5)
        code, took = w.stop()
        check(code == 0 and took < 0.8 * fake_aws.slowdown(), "exit 0 at once (%s, %.2fs) %s" % (code, took, w.err))


@case
def bad_notice_logged_once_watching_goes_on():
    """A 200 that is not a readable notice is logged once, though the same answer comes
    back every interval, and the watcher goes on: the good notice that follows is
    printed, and SIGTERM still ends it with 0."""
    for doc, text in (({"action": 3, "time": "x"}, "field action: expected a string"),
                      ({"action": "terminate"}, "field time: missing"),
                      ("not json at all", "not JSON")):
        with fake_aws.FakeAWS() as fake:
            fake.imds_action_after = 0
            if isinstance(doc, dict):
                fake.imds_action_doc = doc
            else:
                fake.always["imds-action"] = "nonjson"
            w = Watch(fake)
            polled = wait_until(lambda: fake.count("imds-action") >= 10, 10)
            running = w.p.poll() is None
            with fake.lock:
                fake.imds_action_doc = fake_aws.sample("imds/spot_instance-action_terminate_docs.json")
                fake.always.pop("imds-action", None)
            got = w.reader.wait_for(1, 10)
            code, took = w.stop()
            check(polled and running, "%s: still polling after 10 bad answers: %s" % (text, w.err))
            check(got and w.notices() == [TERMINATE], "%s: the good notice: %r %s" % (text, w.reader.lines, w.err))
            check(code == 0 and took < 3 * fake_aws.slowdown(), "%s: SIGTERM -> 0 (%s, %.1fs)" % (text, code, took))
            check(w.err.count(text) == 1 and w.err.count("not a notice; will retry") == 1,
                  "%s: logged once: %s" % (text, w.err))


@case
def bad_options_64():
    for args in (["spot-watch", "--interval", "0"], ["spot-watch", "--interval", "x"],
                 ["spot-watch", "--token-ttl", "21601"], ["imds-probe", "extra"]):
        r = fake_aws.run(args)
        check(r.code == 64, " ".join(args), r)


@case
def long_run_under_valgrind_no_leak():
    # Many poll iterations under valgrind: leaks per iteration would be "definitely lost".
    if fake_aws.wrapper():
        return  # the whole suite already runs under the wrapper
    with open(fake_aws.binary(), "rb") as f:
        if b"__asan_init" in f.read():
            print("    (sanitizer build: valgrind cannot run it; ASan's leak check applies)")
            return
    valgrind = shutil.which("valgrind")
    check(valgrind is not None, "valgrind is needed (scripts/install-deps.sh installs it)")
    with fake_aws.FakeAWS() as fake:
        fake.imds_action_after = 20
        fake.imds_rebalance_after = 30
        env = fake_aws.base_env()
        env.update(imds_env(fake))
        import subprocess
        p = subprocess.Popen([valgrind, "-q", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                              "--error-exitcode=99", fake_aws.binary(), "spot-watch", "--interval", "0.1",
                              "--token-ttl", "2"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reader = fake_aws.LineReader(p.stdout)
        ok = reader.wait_for(2, 60) and wait_until(lambda: fake.imds_polls["imds-action"] >= 40, 60)
        p.send_signal(signal.SIGTERM)
        code = p.wait(30)
        err = p.stderr.read()
        check(ok, "notices under valgrind: %r %s" % (reader.lines, err))
        check(code == 0, "valgrind clean exit, got %d:\n%s" % (code, err))


if __name__ == "__main__":
    sys.exit(fake_aws.main_cases(cases))
