#!/usr/bin/python3
"""A 1+3 node multi-node parallel job speaking AWSClusterManagers.jl's protocol, in
network namespaces.

Topology: a "switch" namespace with a bridge; four awsvpc-like nodes, each with a
link-local ecs-eth0 (169.254.172.x/22, first in interface order: the trap a naive
"first non-loopback address" falls into) and eth0 (198.18.1.<i+1>/24) on the bridge.
Node 0 runs batch-agent --protocol julia (role auto => init) over the fake
AWSBatchNodeManager; nodes 1-3 run batch-agent --protocol julia over
`fake_julia_worker.py --worker --bind-to {{NODE_ADDR}}` (through a wrapper that dumps
the payload's environment and argv). Prints `N passed, N failed`."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import juliatest as jt  # noqa: E402
from juliatest import check  # noqa: E402

SUBNET = 1
CHILDREN = 3
COOKIE = "Mnp1p3CookieXyZ7"  # 16 chars, as Distributed generates them
WORKER_TIMEOUT = 20


def start_child(lab, node, main, name, connect_timeout=15, extra_env=None):
    index = int(node.name[1:])
    env = jt.mnp_env(index, CHILDREN + 1, main_addr=main.eth0)
    env["FAKE_JULIA_STATUS"] = lab.path(f"{name}.status")
    env.update(extra_env or {})
    dump = lab.path(f"{name}.dump.json")
    argv = jt.agent_argv(["--protocol", "julia", "--connect-timeout", str(connect_timeout)],
                         jt.worker_payload(dump))
    return lab.start(node, argv, env=env, name=name), dump, env["FAKE_JULIA_STATUS"]


def start_main(lab, main, listen_delay=0.0):
    extra = ["--cookie", COOKIE]
    if listen_delay:
        extra += ["--listen-delay", str(listen_delay)]
    return jt.start_manager(lab, main, name="main", under_agent=["--protocol", "julia"],
                            env=jt.mnp_env(0, CHILDREN + 1), workers=CHILDREN,
                            worker_timeout=WORKER_TIMEOUT, extra=extra)


def check_job(lab, nodes, mgr, children):
    main = nodes[0]
    slow = jt.slow_factor()
    rc_main = mgr.proc.wait(40 * slow)
    rcs = {name: proc.wait(20 * slow) for name, (proc, _d, _s) in children.items()}
    done = mgr.done()
    check(done is not None, f"manager never finished: {mgr.proc.stdout()[-2000:]}")
    check(done.get("ok") == CHILDREN and done.get("workers") == CHILDREN,
          f"manager summary {done}; events: {mgr.events()}")
    check(rc_main == 0, f"main agent exited {rc_main}: {mgr.proc.stderr()[-2000:]}")
    for name, rc in rcs.items():
        check(rc == 0, f"{name}: agent exited {rc}: {children[name][0].stderr()[-2000:]}")

    workers = {w["node_index"]: w for w in mgr.workers()}
    check(sorted(workers) == list(range(1, CHILDREN + 1)),
          f"worker events for nodes {sorted(workers)}")
    for node in nodes[1:]:
        i = int(node.name[1:])
        w = workers[i]
        check(not str(w.get("addr", "")).startswith("169.254."),
              f"node {i}: manager was told a link-local address {w.get('addr')}")
        check(w.get("addr") == node.eth0,
              f"node {i}: manager connected back to {w.get('addr')}, expected eth0 {node.eth0}")
        check(w.get("cookie_ok") is True, f"node {i}: cookie check failed: {w}")
        check(w.get("job_id") == f"{jt.JOB_UUID}#{i}", f"node {i}: job_id {w.get('job_id')}")

        proc, dump_path, status_path = children[f"child{i}"]
        dump = jt.read_json(dump_path)
        check(dump is not None, f"node {i}: payload never started")
        env, names = jt.env_of(dump)
        check(env.get("BATCH_AGENT_NODE_ADDR") == node.eth0,
              f"node {i}: BATCH_AGENT_NODE_ADDR={env.get('BATCH_AGENT_NODE_ADDR')}")
        check(env.get("JULIA_WORKER_TIMEOUT") == str(WORKER_TIMEOUT),
              f"node {i}: JULIA_WORKER_TIMEOUT={env.get('JULIA_WORKER_TIMEOUT')}")
        check(names.count("JULIA_WORKER_TIMEOUT") == 1, f"node {i}: duplicate entries")
        check("--bind-to" in dump["cmdline"] and node.eth0 in dump["cmdline"],
              f"node {i}: {{{{NODE_ADDR}}}} not expanded: {dump['cmdline']}")
        blob = "\0".join(dump["environ"] + dump["cmdline"])
        check(COOKIE not in blob, f"node {i}: the cookie is in the payload's argv/environment")
        check(dump["fds"]["1"].startswith("socket:"), f"node {i}: stdout is {dump['fds']['1']}")

        status = jt.read_json_lines(status_path)
        started = [s for s in status if s["event"] == "started"]
        joined = [s for s in status if s["event"] == "joined"]
        exits = [s for s in status if s["event"] == "exit"]
        check(started and started[0]["bind_addr"] == node.eth0,
              f"node {i}: worker bound to {started and started[0]['bind_addr']}")
        check(started[0]["cookie_source"] == "stdin", f"node {i}: cookie not from stdin")
        check(started[0]["worker_timeout"] == float(WORKER_TIMEOUT),
              f"node {i}: worker saw timeout {started[0]['worker_timeout']}")
        check(joined and joined[0]["peer"] == main.eth0,
              f"node {i}: join from {joined and joined[0]['peer']}")
        check(exits and exits[-1]["code"] == 0 and exits[-1]["reason"] == "remote_exit",
              f"node {i}: worker exit {exits}")
        err = proc.stderr()
        check(COOKIE not in err, f"node {i}: the cookie is in the agent's stderr")
    check(COOKIE not in mgr.proc.stderr(), "the cookie is in the main agent's stderr")
    return rcs


def case_trap_armed(lab, nodes):
    """Every node's interface order puts ecs-eth0 first: without the agent's choice, a
    Julia worker would advertise 169.254.172.x."""
    for node in nodes:
        naive = node.naive_first_address()
        check(naive == node.ecs, f"{node.ns}: naive pick is {naive}, expected {node.ecs}")


def case_job(lab, nodes):
    main = nodes[0]
    mgr = start_main(lab, main)
    mgr.wait_event("listening", 10 * jt.slow_factor())
    children = {f"child{n.name[1:]}": start_child(lab, n, main, f"child{n.name[1:]}")
                for n in nodes[1:]}
    check_job(lab, nodes, mgr, children)


def case_late_manager(lab, nodes):
    """Workers start first and find no manager (each says so and keeps dialing); the
    manager starts listening only then: they retry and the job runs."""
    main = nodes[0]
    children = {f"late{n.name[1:]}": start_child(lab, n, main, f"late{n.name[1:]}")
                for n in nodes[1:]}
    # Until each worker has failed a first attempt, however slowly it starts (valgrind):
    # a fixed 2 s once let a worker reach a manager that was already up.
    deadline = time.monotonic() + 30 * jt.slow_factor()
    for name, (proc, dump, _s) in children.items():
        while "not reachable yet" not in proc.stderr():
            check(proc.alive(), f"{name} gave up before the manager came: {proc.stderr()}")
            check(time.monotonic() < deadline, f"{name}: no sign of a retry in stderr: {proc.stderr()}")
            time.sleep(0.05)
        check(proc.alive(), f"{name} gave up before the manager came: {proc.stderr()}")
        check(not os.path.exists(dump), f"{name}: payload started without a manager")
    mgr = start_main(lab, main)
    renamed = {f"child{k[4:]}": v for k, v in children.items()}
    check_job(lab, nodes, mgr, renamed)


def case_ecs_eth0_silent(lab, nodes):
    """Nothing was ever sent out of a link-local ecs-eth0."""
    for node in nodes:
        tx = node.tx_packets("ecs-eth0")
        check(tx == 0, f"{node.ns}: {tx} packets went out of ecs-eth0")


def main():
    def topology(lab):
        return lab.cluster(SUBNET, CHILDREN)

    return jt.run_script("julia_mnp", topology, [
        ("ecs-eth0 trap armed (naive pick is link-local)", case_trap_armed),
        ("1+3 MNP job: connect-back to eth0, cookies, exits", case_job),
        ("manager listening 2 s after the workers", case_late_manager),
        ("no traffic out of ecs-eth0", case_ecs_eth0_silent),
    ])


if __name__ == "__main__":
    sys.exit(main())
