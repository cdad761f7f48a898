#!/usr/bin/python3
"""The AWSBatchNodeManager line exchange as batch-agent --protocol julia does it on an MNP
child node, against well-behaved and misbehaving fake managers (tests/peers), in network
namespaces (main node 198.18.2.1, child 198.18.2.2, both with a link-local ecs-eth0).

Malformed manager lines must end the agent with 76 (a manager that closes early: 76 when
it closed cleanly, 69 when the connection was reset), name the problem, never start the
payload and never print the cookie. Older managers (no timeout line), padded cookies and a
manager presenting the wrong cookie at the worker's port are handled as Julia would.
Prints `N passed, N failed`."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import juliatest as jt  # noqa: E402
from juliatest import check  # noqa: E402

SUBNET = 2
COOKIE = "HandshakeCookie9"
SECRET_IN_BAD_LINE = "NotAWordCookie-Secret"


class Run:
    def __init__(self, mgr, agent, dump, status):
        self.mgr, self.agent, self.dump_path, self.status_path = mgr, agent, dump, status
        self.rc = None

    @property
    def err(self):
        return self.agent.stderr()

    def dump(self):
        return jt.read_json(self.dump_path)

    def status(self):
        return jt.read_json_lines(self.status_path)


counter = [0]


def exchange(lab, nodes, manager_extra=(), child_env=None, worker_timeout=20,
             agent_opts=(), wait=True):
    main, child = nodes
    counter[0] += 1
    name = f"c{counter[0]}"
    mgr = jt.start_manager(lab, main, name=f"{name}-mgr", workers=1,
                           worker_timeout=worker_timeout,
                           extra=["--cookie", COOKIE, *manager_extra])
    mgr.wait_event("listening", 10 * jt.slow_factor())
    env = jt.mnp_env(1, 2, main_addr=main.eth0)
    status = lab.path(f"{name}.status")
    env["FAKE_JULIA_STATUS"] = status
    env.update(child_env or {})
    dump = lab.path(f"{name}.dump.json")
    agent = lab.start(child, jt.agent_argv(["--protocol", "julia", "--connect-timeout", "10",
                                            *agent_opts], jt.worker_payload(dump)),
                      env=env, name=f"{name}-agent")
    run = Run(mgr, agent, dump, status)
    if wait:
        run.rc = agent.wait(30 * jt.slow_factor())
        mgr.proc.wait(30 * jt.slow_factor())
    return run


def expect_refused(run, rc_allowed, must_mention, secrets=(COOKIE,)):
    check(run.rc in rc_allowed, f"agent exited {run.rc}, expected {rc_allowed}: {run.err}")
    low = run.err.lower()
    for word in must_mention:
        check(word.lower() in low, f"stderr does not mention {word!r}: {run.err}")
    check(run.dump() is None, "the payload was started")
    for s in secrets:
        check(s not in run.err, f"the secret {s!r} appears in the agent's stderr: {run.err}")
        check(s.strip() not in run.mgr.proc.stdout(), "the fake manager reported the secret")


# -- malformed managers ----------------------------------------------------------------------
def case_bad_cookie_chars(lab, nodes):
    r = exchange(lab, nodes, ["--cookie-line", f"julia_cookie:{SECRET_IN_BAD_LINE}"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_cookie"], secrets=(SECRET_IN_BAD_LINE,
                                                                    "NotAWordCookie"))


def case_bad_cookie_prefix(lab, nodes):
    r = exchange(lab, nodes, ["--cookie-line", f"cookie:{COOKIE}"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_cookie"])


def case_empty_cookie(lab, nodes):
    r = exchange(lab, nodes, ["--cookie-line", "julia_cookie:"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_cookie"])


def case_cookie_line_too_long(lab, nodes):
    secret = "Q" * 3000
    r = exchange(lab, nodes, ["--cookie-line", f"julia_cookie:{secret}"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_cookie", "longer"], secrets=(COOKIE, "Q" * 40))


def case_bad_timeout_word(lab, nodes):
    r = exchange(lab, nodes, ["--timeout-line", "julia_worker_timeout:soon"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_worker_timeout", "soon"])


def case_bad_timeout_negative(lab, nodes):
    r = exchange(lab, nodes, ["--timeout-line", "julia_worker_timeout:-5"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_worker_timeout", "-5"])


def case_bad_timeout_prefix(lab, nodes):
    r = exchange(lab, nodes, ["--timeout-line", "worker_timeout:300"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_worker_timeout"])


def case_garbage(lab, nodes):
    r = exchange(lab, nodes, ["--garbage", "HTTP/1.1 400 Bad Request\\r\\n\\r\\n\\x00\\xff"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["julia_cookie"])


def case_close_at_accept(lab, nodes):
    # The manager closes without reading job_id: a FIN (76) or, with the job_id line
    # unread in its buffer, a reset (69). The agent documents both: 76 "peer broke the
    # protocol", 69 "manager lost".
    r = exchange(lab, nodes, ["--close-early", "accept"])
    expect_refused(r, (jt.EX_PROTOCOL, jt.EX_UNAVAILABLE), ["manager"])
    check("julia_cookie" in r.err or "job_id" in r.err, f"stderr: {r.err}")


def case_close_after_job_id(lab, nodes):
    r = exchange(lab, nodes, ["--close-early", "job_id"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["closed", "julia_cookie"])


def case_close_after_cookie(lab, nodes):
    r = exchange(lab, nodes, ["--close-early", "cookie"])
    expect_refused(r, (jt.EX_PROTOCOL,), ["closed", "julia_worker_timeout"])


# -- well-behaved variants -------------------------------------------------------------------
def expect_ok(run, worker_timeout_env):
    check(run.rc == 0, f"agent exited {run.rc}: {run.err}")
    ws = run.mgr.workers()
    check(len(ws) == 1 and ws[0].get("cookie_ok") is True, f"manager: {run.mgr.events()}")
    check(ws[0].get("addr") == "198.18.%d.2" % SUBNET, f"connect-back to {ws[0].get('addr')}")
    dump = run.dump()
    check(dump is not None, "payload never started")
    env, names = jt.env_of(dump)
    if worker_timeout_env is None:
        check("JULIA_WORKER_TIMEOUT" not in env,
              f"JULIA_WORKER_TIMEOUT={env.get('JULIA_WORKER_TIMEOUT')} set")
    else:
        check(env.get("JULIA_WORKER_TIMEOUT") == worker_timeout_env,
              f"JULIA_WORKER_TIMEOUT={env.get('JULIA_WORKER_TIMEOUT')}, "
              f"expected {worker_timeout_env}")
        check(names.count("JULIA_WORKER_TIMEOUT") == 1,
              f"JULIA_WORKER_TIMEOUT appears {names.count('JULIA_WORKER_TIMEOUT')} times: "
              f"{[e for e in dump['environ'] if e.startswith('JULIA_WORKER_TIMEOUT')]}")
    started = [s for s in run.status() if s["event"] == "started"]
    check(started and started[0]["cookie_source"] == "stdin", f"worker status {run.status()}")
    check(COOKIE not in run.err, "the cookie appears in the agent's stderr")
    blob = "\0".join(dump["environ"] + dump["cmdline"])
    check(COOKIE not in blob, "the cookie is in the payload's argv or environment")
    return env, started[0]


def case_old_manager(lab, nodes):
    r = exchange(lab, nodes, ["--no-timeout-line"])
    env, started = expect_ok(r, None)
    check(started["worker_timeout"] == 60.0,
          f"worker used timeout {started['worker_timeout']} (Distributed default 60)")
    check("julia_worker_timeout" in r.err, f"agent did not say the line was missing: {r.err}")


def case_padded_cookie(lab, nodes):
    global COOKIE
    saved, COOKIE = COOKIE, "abc"
    try:
        main, child = nodes
        r = exchange(lab, nodes)  # sends "julia_cookie:abc" + 13 spaces
        sent = r.mgr.find("sent")
        check(sent, "manager sent nothing")
        check(r.rc == 0, f"agent exited {r.rc}: {r.err}")
        ws = r.mgr.workers()
        check(len(ws) == 1 and ws[0].get("cookie_ok") is True,
              f"padded cookie not accepted: {r.mgr.events()}")
    finally:
        COOKIE = saved


def case_wrong_cookie_at_worker(lab, nodes):
    """The manager presents another cookie at the worker's port: the worker rejects it
    (as Julia does: closes that connection, keeps waiting for pid 1 until its timeout),
    and the agent keeps supervising it, exiting with its status in the end."""
    wt = 4
    r = exchange(lab, nodes, ["--wrong-cookie", "--drain", "1.5"], worker_timeout=wt,
                 wait=False)
    done = r.mgr.wait_event("done", 20 * jt.slow_factor())
    ws = r.mgr.workers()
    check(len(ws) == 1 and ws[0].get("rejected") is True and ws[0].get("cookie_ok") is False,
          f"manager did not see a rejection: {r.mgr.events()}")
    check(done.get("ok") == 0, f"done: {done}")
    out = " ".join(e.get("line", "") for e in r.mgr.find("worker_output"))
    check("Invalid connection credentials" in out,
          f"worker's rejection text not relayed on the check-in socket: {r.mgr.events()}")
    check(r.agent.alive(), f"agent gave up on the rejection: {r.err}")
    rejected = [s for s in r.status() if s["event"] == "rejected_connection"]
    check(rejected and rejected[0]["reason"] == "bad_cookie", f"worker status {r.status()}")
    r.rc = r.agent.wait((wt + 15) * jt.slow_factor())
    r.mgr.proc.wait(10)
    exits = [s for s in r.status() if s["event"] == "exit"]
    check(exits and exits[-1]["reason"] in ("master_timeout", "manager_closed"),
          f"worker exit {exits}")
    check(r.rc == exits[-1]["code"] == 1, f"agent exited {r.rc}, payload {exits}")
    check(COOKIE not in r.err, "the cookie appears in the agent's stderr")


def case_inherited_timeout_replaced(lab, nodes):
    """A JULIA_WORKER_TIMEOUT in the agent's own environment must not shadow the one the
    manager sent (the payload would see two entries, and getenv/Julia take the first)."""
    r = exchange(lab, nodes, child_env={"JULIA_WORKER_TIMEOUT": "7"}, worker_timeout=21)
    env, started = expect_ok(r, "21")
    check(started["worker_timeout"] == 21.0, f"worker used timeout {started['worker_timeout']}")


def case_cookie_env_scrubbed(lab, nodes):
    """On an MNP node the manager hands out the cookie; a BATCH_AGENT_COOKIE in the
    environment still never reaches the payload."""
    stray = "StrayCookieFromEnv42"
    r = exchange(lab, nodes, child_env={"BATCH_AGENT_COOKIE": stray})
    env, _ = expect_ok(r, "20")
    check("BATCH_AGENT_COOKIE" not in env, "BATCH_AGENT_COOKIE reached the payload")
    check(stray not in "\0".join(r.dump()["environ"]), "the stray cookie reached the payload")


def main():
    def topology(lab):
        return lab.cluster(SUBNET, 1)

    return jt.run_script("julia_handshake", topology, [
        ("cookie line with non-word characters => 76", case_bad_cookie_chars),
        ("cookie line with the wrong prefix => 76", case_bad_cookie_prefix),
        ("empty cookie => 76", case_empty_cookie),
        ("cookie line longer than the agent's limit => 76", case_cookie_line_too_long),
        ("timeout line not a number => 76", case_bad_timeout_word),
        ("negative timeout => 76", case_bad_timeout_negative),
        ("timeout line with the wrong prefix => 76", case_bad_timeout_prefix),
        ("garbage instead of both lines => 76", case_garbage),
        ("manager closes at accept => 76 or 69", case_close_at_accept),
        ("manager closes after job_id => 76", case_close_after_job_id),
        ("manager closes after the cookie line => 76", case_close_after_cookie),
        ("older manager without timeout line works, JULIA_WORKER_TIMEOUT unset",
         case_old_manager),
        ("short cookie padded with spaces works", case_padded_cookie),
        ("wrong cookie at the worker's port: rejected, agent keeps supervising",
         case_wrong_cookie_at_worker),
        ("inherited JULIA_WORKER_TIMEOUT replaced by the manager's", case_inherited_timeout_replaced),
        ("BATCH_AGENT_COOKIE scrubbed on an MNP node", case_cookie_env_scrubbed),
    ])


if __name__ == "__main__":
    sys.exit(main())
