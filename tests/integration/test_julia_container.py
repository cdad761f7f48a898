#!/usr/bin/python3
"""The container-manager flow (AWSClusterManagers.jl AWSBatchManager/DockerManager):
julia_manager.py --mode container listens on 198.18.3.1; the agent runs with
--manager HOST:PORT --protocol julia and the cookie from BATCH_AGENT_COOKIE or
--cookie-file; no line exchange, the payload's julia_worker line goes straight to the
manager, which connects back with its cookie. The cookie must reach the payload only on
stdin: never in its argv or environment (nor in the agent's stderr).
Prints `N passed, N failed`."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import juliatest as jt  # noqa: E402
from juliatest import check  # noqa: E402

SUBNET = 3
COOKIE = "ContainerCookie7"
counter = [0]


def container_env(extra=None):
    env = jt.mnp_env(0, 1)  # clears the harness's AWS_BATCH_* / BATCH_AGENT_* ...
    for k in list(env):
        if k.startswith("AWS_BATCH_"):
            env[k] = None  # ... and this is not an MNP node at all
    env.update(extra or {})
    return env


def start(lab, nodes, agent_env, agent_opts=(), manager_extra=(), manager_cookie=COOKIE,
          worker_timeout=20):
    main, child = nodes
    counter[0] += 1
    name = f"k{counter[0]}"
    mgr = jt.start_manager(lab, main, name=f"{name}-mgr", host=main.eth0, port=0, workers=1,
                           worker_timeout=worker_timeout,
                           env={"JT_MANAGER_COOKIE": manager_cookie},
                           extra=["--mode", "container", "--cookie-env", "JT_MANAGER_COOKIE",
                                  *manager_extra])
    port = mgr.wait_event("listening", 10 * jt.slow_factor())["port"]
    dump = lab.path(f"{name}.dump.json")
    status = lab.path(f"{name}.status")
    env = container_env(agent_env)
    env["FAKE_JULIA_STATUS"] = status
    agent = lab.start(child, jt.agent_argv(
        ["--manager", f"{main.eth0}:{port}", "--protocol", "julia", "--connect-timeout", "10",
         *agent_opts], jt.worker_payload(dump)), env=env, name=f"{name}-agent")
    return mgr, agent, dump, status, port


def check_success(nodes, mgr, agent, dump_path, status_path, port):
    main, child = nodes
    rc = agent.wait(30 * jt.slow_factor())
    mgr.proc.wait(20 * jt.slow_factor())
    err = agent.stderr()
    check(rc == 0, f"agent exited {rc}: {err}")
    ws = mgr.workers()
    check(len(ws) == 1, f"manager events: {mgr.events()}")
    w = ws[0]
    check(w.get("addr") == child.eth0, f"worker line advertised {w.get('addr')}")
    check(w.get("cookie_ok") is True, f"connect-back failed: {w}")
    check(not mgr.find("job_id"), "a job_id line was sent in container mode")
    dump = jt.read_json(dump_path)
    check(dump is not None, "payload never started")
    env, _names = jt.env_of(dump)
    check("BATCH_AGENT_COOKIE" not in env, "BATCH_AGENT_COOKIE is in the payload's environment")
    for where, items in (("environment", dump["environ"]), ("argv", dump["cmdline"])):
        check(not any(COOKIE in x for x in items), f"the cookie is in the payload's {where}")
    check(env.get("BATCH_AGENT_NODE_ADDR") == child.eth0,
          f"BATCH_AGENT_NODE_ADDR={env.get('BATCH_AGENT_NODE_ADDR')}")
    check(env.get("BATCH_AGENT_MANAGER") == f"{main.eth0}:{port}",
          f"BATCH_AGENT_MANAGER={env.get('BATCH_AGENT_MANAGER')}")
    check("JULIA_WORKER_TIMEOUT" not in env, "JULIA_WORKER_TIMEOUT set without a manager line")
    check(dump["fds"]["1"].startswith("socket:"), f"payload stdout is {dump['fds']['1']}")
    status = jt.read_json_lines(status_path)
    started = [s for s in status if s["event"] == "started"]
    check(started and started[0]["cookie_source"] == "stdin", f"worker status {status}")
    check(started[0]["bind_addr"] == child.eth0, f"worker bound to {started[0]['bind_addr']}")
    exits = [s for s in status if s["event"] == "exit"]
    check(exits and exits[-1]["reason"] == "remote_exit", f"worker exit {exits}")
    check(COOKIE not in err, "the cookie appears in the agent's stderr")
    # 198.18.0.0/15 is no private range: the dialect's clear-text cookie is worth a warning,
    # exactly one.
    warnings = [line for line in err.splitlines() if "is not on a private address" in line]
    check(len(warnings) == 1 and f"{main.eth0}:{port}" in warnings[0] and "clear text" in warnings[0],
          f"not one warning about the public manager:\n{err}")


def case_cookie_env(lab, nodes):
    mgr, agent, dump, status, port = start(lab, nodes, {"BATCH_AGENT_COOKIE": COOKIE})
    check_success(nodes, mgr, agent, dump, status, port)


def case_cookie_file(lab, nodes):
    path = lab.path("cookie")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (COOKIE + "\n").encode())
    os.close(fd)
    mgr, agent, dump, status, port = start(lab, nodes, {}, agent_opts=["--cookie-file", path])
    check_success(nodes, mgr, agent, dump, status, port)


def case_agent_environ_scrubbed(lab, nodes):
    """While the payload runs, the agent's own /proc/<pid>/environ no longer shows the
    cookie either (anyone who can read it could otherwise take it)."""
    if jt.wrapper():
        raise jt.Skip("under BATCH_AGENT_WRAPPER the process is the wrapper's")
    mgr, agent, dump, status, port = start(
        lab, nodes, {"BATCH_AGENT_COOKIE": COOKIE},
        manager_extra=["--finish", "hold", "--drain", "3"])
    # "worker" is reported only after the hold; the worker's own "joined" comes first
    deadline = time.monotonic() + 15 * jt.slow_factor()
    while not [s for s in jt.read_json_lines(status) if s["event"] == "joined"]:
        check(time.monotonic() < deadline, f"worker never joined: {mgr.events()}")
        time.sleep(0.05)
    check(agent.alive(), f"agent ended early: {agent.stderr()}")
    with open(f"/proc/{agent.pid}/environ", "rb") as f:
        environ = f.read()
    with open(f"/proc/{agent.pid}/cmdline", "rb") as f:
        cmdline = f.read()
    check(b"batch-agent" in cmdline, f"pid {agent.pid} is not the agent: {cmdline!r}")
    check(COOKIE.encode() not in environ, "the cookie is still in the agent's environ")
    rc = agent.wait(20)
    # --finish hold: the manager closes after holding, so the worker exits 1 as Julia does
    check(rc == 1, f"agent exited {rc}: {agent.stderr()}")


def case_mismatched_cookie(lab, nodes):
    """The agent does not check the cookie in container mode: the worker does, rejecting
    the manager's connection; the agent supervises it to its end (status 1)."""
    other = "SomeOtherCookie1"
    mgr, agent, dump, status, port = start(
        lab, nodes, {"BATCH_AGENT_COOKIE": other, "JULIA_WORKER_TIMEOUT": "3"})
    mgr.wait_event("done", 20 * jt.slow_factor())
    ws = mgr.workers()
    check(len(ws) == 1 and ws[0].get("rejected") is True, f"manager events {mgr.events()}")
    rc = agent.wait(20 * jt.slow_factor())
    check(rc == 1, f"agent exited {rc}: {agent.stderr()}")
    st = jt.read_json_lines(status)
    check([s for s in st if s["event"] == "rejected_connection"], f"worker status {st}")
    check(other not in agent.stderr() and COOKIE not in agent.stderr(), "a cookie in stderr")


def case_no_cookie(lab, nodes):
    mgr, agent, dump, status, port = start(lab, nodes, {})
    rc = agent.wait(15 * jt.slow_factor())
    check(rc == jt.EX_CONFIG, f"agent exited {rc}: {agent.stderr()}")
    check("BATCH_AGENT_COOKIE" in agent.stderr(), f"stderr: {agent.stderr()}")
    check(jt.read_json(dump) is None, "payload started without a cookie")
    mgr.proc.kill()


def main():
    def topology(lab):
        return lab.cluster(SUBNET, 1)

    return jt.run_script("julia_container", topology, [
        ("container manager, cookie from BATCH_AGENT_COOKIE", case_cookie_env),
        ("container manager, cookie from --cookie-file", case_cookie_file),
        ("agent's own environ scrubbed of the cookie", case_agent_environ_scrubbed),
        ("mismatched cookie: worker rejects, agent supervises to the end",
         case_mismatched_cookie),
        ("no cookie at all => 78", case_no_cookie),
    ])


if __name__ == "__main__":
    sys.exit(main())
