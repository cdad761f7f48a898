"""MNP jobs across network namespaces: each node a host of its own on a bridged test
network (198.18.0.0/15), as Batch's nodes are hosts of one VPC subnet.

Cases: the whole 1+4 job (children first), a child with the wrong cookie, a failing
main payload, a failing child payload."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import netns  # noqa: E402
from mnp import Agent, Job, check, expect_exit, read, wait_for_file  # noqa: E402

PORT = 49152
runner = mnp.Runner()


def start_child(net, job, index, out, workdir, args=(), payload=None, cookie=None):
    # Host i+1 is node i (the main, node 0, is host 1).
    return Agent(f"child{index}", ["--heartbeat", "0.5", "--grace", "5", *args, "--",
                                   *(payload or mnp.child_payload(out))],
                 job.env(index, main_addr=net.addr(1), cookie=cookie), workdir, net=net, host=index + 1)


def start_main(net, job, out, workdir, args=(), payload=None):
    return Agent("main", ["--heartbeat", "0.5", "--grace", "5", *args, "--",
                          *(payload or mnp.main_payload(out))],
                 job.env(0), workdir, net=net, host=1)


def check_no_cookie(job, env_text, what):
    check("BATCH_AGENT_COOKIE" not in env_text, f"{what} has BATCH_AGENT_COOKIE in its environment")
    check(job.cookie not in env_text, f"{what} has the cookie's value in its environment")


def check_agent_environ(job, agent):
    if mnp.WRAPPER:
        return  # under valgrind /proc/<pid>/environ is the tool's, not the agent's
    env, raw = mnp.read_environ(agent.pid)
    # The agent wipes the value in place (the kernel shows that block); the name may stay.
    check(not env.get("BATCH_AGENT_COOKIE"), f"/proc/{agent.pid}/environ of {agent.name} has a cookie value")
    check(job.cookie.encode() not in raw, f"/proc/{agent.pid}/environ of {agent.name} still holds the cookie")


@runner.case
def job_1_plus_4_children_first(workdir):
    mnp.need_netns()
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    job = Job(5)
    with netns.Network(5) as net:
        children = [start_child(net, job, i, out, workdir) for i in range(1, 5)]
        # The children are up first and knock on a closed port.
        for c in children:
            c.wait_for_log("not reachable yet", 10)
        main = start_main(net, job, out, workdir,
                          payload=mnp.main_payload(out, wait_children=range(1, 5), gate=True))
        main.wait_for_log("rendezvous listening", 10)
        check_agent_environ(job, main)
        wait_for_file(os.path.join(out, "main.started"), 30)
        for i in range(1, 5):
            wait_for_file(os.path.join(out, f"child-{i}"), 20)
        # Everybody is running: no agent holds the cookie in its visible environment.
        for a in [main, *children]:
            check(a.running(), f"{a.name} exited early: {a.proc.returncode}\n{a.stderr()}")
            check_agent_environ(job, a)
        open(os.path.join(out, "go"), "w").close()

        expect_exit(main, 0, 30)
        for c in children:
            expect_exit(c, 0, 15)

        hosts = read(os.path.join(out, "hostfile")).splitlines()
        check(hosts == [net.addr(i) for i in range(1, 6)], f"hostfile: {hosts}")
        nodes = read(os.path.join(out, "nodes"))
        check(nodes == ",".join(net.addr(i) for i in range(1, 6)), f"BATCH_AGENT_NODES: {nodes!r}")
        main_env = read(os.path.join(out, "main.env"))
        check_no_cookie(job, main_env, "the main payload")
        check(f"BATCH_AGENT_HOSTFILE=" in main_env, "main payload lacks BATCH_AGENT_HOSTFILE")
        for i in range(1, 5):
            addr, manager = read(os.path.join(out, f"child-{i}")).splitlines()
            check(addr == net.addr(i + 1), f"child {i}: BATCH_AGENT_NODE_ADDR={addr!r}")
            check(manager == f"{net.addr(1)}:{PORT}", f"child {i}: BATCH_AGENT_MANAGER={manager!r}")
            check_no_cookie(job, read(os.path.join(out, f"child-{i}.env")), f"child {i}'s payload")
        err = main.stderr()
        check("all nodes present" in err, f"main did not announce the start:\n{err}")
        check(job.cookie not in err and all(job.cookie not in c.stderr() for c in children),
              "the cookie appears in an agent's log")


@runner.case
def wrong_cookie_is_refused_others_work(workdir):
    mnp.need_netns()
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    job = Job(4)
    with netns.Network(4) as net:
        main = start_main(net, job, out, workdir, args=["--wait-timeout", mnp.wait_s(4), "--min-nodes", "3"],
                          payload=mnp.main_payload(out, wait_children=(1, 3)))
        main.wait_for_log("rendezvous listening", 10)
        bad = start_child(net, job, 2, out, workdir, cookie=mnp.new_cookie())
        good = [start_child(net, job, i, out, workdir) for i in (1, 3)]
        expect_exit(bad, mnp.EX_NOPERM, 15)
        check("different cookies" in bad.stderr(), f"the refused child does not say why:\n{bad.stderr()}")
        expect_exit(main, 0, 30)
        for c in good:
            expect_exit(c, 0, 15)
        check(not os.path.exists(os.path.join(out, "child-2")), "the refused child's payload ran")
        err = main.stderr()
        check(f"refused peer {net.addr(3)}:" in err, f"main does not name the refused peer {net.addr(3)}:\n{err}")
        hosts = read(os.path.join(out, "hostfile")).splitlines()
        check(hosts == [net.addr(1), net.addr(2), net.addr(4)], f"hostfile: {hosts}")
        check("missing node 2" in err, f"main does not name the missing node 2:\n{err}")


@runner.case
def main_payload_fails_children_shut_down(workdir):
    mnp.need_netns()
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    job = Job(3)
    with netns.Network(3) as net:
        children = [start_child(net, job, i, out, workdir) for i in (1, 2)]
        main = start_main(net, job, out, workdir, payload=mnp.main_payload(out, wait_children=(1, 2), status=3))
        t0 = time.monotonic()
        expect_exit(main, 3, 30)
        for c in children:
            expect_exit(c, 0, 10)
        check(time.monotonic() - t0 < 20, "shutting down took too long")
        err = main.stderr()
        check("telling 2 nodes to shut down" in err, f"main did not shut the children down:\n{err}")
        for c in children:
            check("asks us to shut down" in c.stderr(), f"{c.name} did not hear the shutdown:\n{c.stderr()}")
            pid = int(read(os.path.join(out, f"child-{c.name[-1]}.pid")))
            check(not os.path.exists(f"/proc/{pid}"), f"{c.name}'s payload {pid} still runs")


@runner.case
def child_payload_fails_main_logs_it(workdir):
    mnp.need_netns()
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    job = Job(3)
    # Fails once the job is assembled (a node leaving before that frees its slot).
    failing = ["/bin/sh", "-c", 'echo x > "$1/child-$AWS_BATCH_JOB_NODE_INDEX"; '
               'n=0; while [ ! -e "$1/fail" ] && [ $n -lt 400 ]; do n=$((n+1)); sleep 0.05; done; exit 5', "c", out]
    with netns.Network(3) as net:
        good = start_child(net, job, 1, out, workdir)
        bad = start_child(net, job, 2, out, workdir, payload=failing)
        main = start_main(net, job, out, workdir, payload=mnp.main_payload(out, wait_children=(1, 2), gate=True),
                          args=["--on-node-loss", "continue"])
        main.wait_for_log("all nodes present", 15)
        open(os.path.join(out, "fail"), "w").close()
        expect_exit(bad, 5, 20)
        main.wait_for_log("node 2's payload failed with status 5", 10)
        main.wait_for_log("node 2 failed: the main payload goes on (--on-node-loss continue)", 10)
        open(os.path.join(out, "go"), "w").close()
        expect_exit(main, 0, 20)
        expect_exit(good, 0, 10)


if __name__ == "__main__":
    runner.run()
