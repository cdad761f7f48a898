"""MNP jobs on loopback (127.0.0.1, a free --port per case): the basic 1+2 job, and
the rendezvous when a child never comes (--wait-timeout, --min-nodes)."""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import nativeproto as np  # noqa: E402
from mnp import Agent, Job, check, expect_exit, read, wait_for_file, wait_s  # noqa: E402

runner = mnp.Runner()


def start_child(job, index, port, out, workdir, args=(), payload=None):
    return Agent(f"child{index}", ["--port", str(port), "--heartbeat", "0.5", "--grace", "5", *args, "--",
                                   *(payload or mnp.child_payload(out))],
                 job.env(index, main_addr="127.0.0.1"), workdir)


def start_main(job, port, out, workdir, args=(), payload=None):
    return Agent("main", ["--port", str(port), "--heartbeat", "0.5", "--grace", "5", *args, "--",
                          *(payload or mnp.main_payload(out))],
                 job.env(job.main_index), workdir)


def outdir(workdir):
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    return out


@runner.case
def job_1_plus_2(workdir):
    out, port, job = outdir(workdir), mnp.free_port(), Job(3)
    main = start_main(job, port, out, workdir, payload=mnp.main_payload(out, wait_children=(1, 2), gate=True))
    children = [start_child(job, i, port, out, workdir) for i in (1, 2)]
    wait_for_file(os.path.join(out, "main.started"), 30)
    # Every node is in: the port is closed (said once), a connect is refused.
    check(main.stderr().count("closed port %d (every node registered)" % port) == 1, main.stderr())
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        raise mnp.Failure("the main still accepts connections once every node registered")
    except ConnectionRefusedError:
        pass
    open(os.path.join(out, "go"), "w").close()
    expect_exit(main, 0, 30)
    check(main.stderr().count("closed port") == 1, f"the closing is logged more than once:\n{main.stderr()}")
    for c in children:
        expect_exit(c, 0, 15)
    check(read(os.path.join(out, "hostfile")).splitlines() == ["127.0.0.1"] * 3,
          f"hostfile: {read(os.path.join(out, 'hostfile'))!r}")
    check(read(os.path.join(out, "nodes")) == "127.0.0.1,127.0.0.1,127.0.0.1", "BATCH_AGENT_NODES")
    for i in (1, 2):
        addr, manager = read(os.path.join(out, f"child-{i}")).splitlines()
        check(addr == "127.0.0.1" and manager == f"127.0.0.1:{port}", f"child {i}: {addr!r} {manager!r}")
        env = read(os.path.join(out, f"child-{i}.env"))
        check("BATCH_AGENT_COOKIE" not in env and job.cookie not in env, f"child {i}'s payload sees the cookie")
    # The hostfile is the agent's temporary file: gone with it.
    env = dict(line.split("=", 1) for line in read(os.path.join(out, "main.env")).splitlines() if "=" in line)
    check("BATCH_AGENT_HOSTFILE" in env, "no BATCH_AGENT_HOSTFILE")
    check(not os.path.exists(env["BATCH_AGENT_HOSTFILE"]), "the hostfile outlived the main agent")


@runner.case
def silent_child_is_logged_as_lost(workdir):
    """A child that stops answering (here: its agent is SIGSTOPped) is lost after three
    heartbeat intervals: the main logs it by node index and, with --on-node-loss
    continue, the job goes on."""
    port, job = mnp.free_port(), Job(2)
    args = ["--heartbeat", "0.2", "--grace", "2"]
    main = Agent("main", ["--port", str(port), *args, "--on-node-loss", "continue", "--", "sleep", "3"], job.env(0),
                 workdir)
    child = Agent("child1", ["--port", str(port), *args, "--", "sleep", "60"],
                  job.env(1, main_addr="127.0.0.1"), workdir)
    main.wait_for_log("all nodes present", 20)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        main.wait_for_log("node 1 (127.0.0.1) lost", 10)
        expect_exit(main, 0, 20)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    expect_exit(child, mnp.EX_UNAVAILABLE, 20)


@runner.case
def main_index_not_zero(workdir):
    """Batch lets any node be the main one: node 1 of 3 here."""
    out, port, job = outdir(workdir), mnp.free_port(), Job(3, main_index=1)
    main = start_main(job, port, out, workdir, payload=mnp.main_payload(out, wait_children=(0, 2)))
    children = [start_child(job, i, port, out, workdir) for i in (0, 2)]
    expect_exit(main, 0, 30)
    for c in children:
        expect_exit(c, 0, 15)
    check(len(read(os.path.join(out, "hostfile")).splitlines()) == 3, "hostfile should list 3 nodes")


@runner.case
def missing_child_times_out(workdir):
    out, port, job = outdir(workdir), mnp.free_port(), Job(4)
    main = start_main(job, port, out, workdir, args=["--wait-timeout", wait_s(2)])
    child = start_child(job, 1, port, out, workdir)
    # Its payload waits for the roster, which never comes: the job never had its nodes.
    child.wait_for_log("waiting for the roster", 10)
    expect_exit(main, mnp.EX_UNAVAILABLE, 15)
    expect_exit(child, 0, 10)
    check(not os.path.exists(os.path.join(out, "child-1")), "the child's payload ran without a roster")
    err = main.stderr()
    check(f"nodes 2, 3 did not register within {wait_s(2)} s" in err, f"main does not name the missing nodes:\n{err}")
    check("telling 1 node to shut down" in err, f"main does not shut the present child down:\n{err}")
    check(not os.path.exists(os.path.join(out, "main.started")), "the main payload ran")
    check("asks us to shut down" in child.stderr(), f"child did not hear the shutdown:\n{child.stderr()}")


@runner.case
def min_nodes_starts_with_present(workdir):
    out, port, job = outdir(workdir), mnp.free_port(), Job(4)
    main = start_main(job, port, out, workdir, args=["--wait-timeout", wait_s(2), "--min-nodes", "3"],
                      payload=mnp.main_payload(out, wait_children=(1, 3), gate=True))
    children = [start_child(job, i, port, out, workdir) for i in (1, 3)]
    wait_for_file(os.path.join(out, "main.started"), 15)
    # The door closed when the payload started: a connect is refused...
    main.wait_for_log("closed port", 5)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        raise mnp.Failure("the main still accepts connections after the rendezvous")
    except ConnectionRefusedError:
        pass
    # ...and node 2, too late, retries the refused connect within its --connect-timeout
    # (the worker cannot tell a closed door from a manager not up yet), then exits 69.
    late = start_child(job, 2, port, out, workdir, args=["--connect-timeout", "1"])
    expect_exit(late, mnp.EX_UNAVAILABLE, 15)
    check("unreachable for 1 s" in late.stderr() and "refused" in late.stderr(),
          f"late child does not say why:\n{late.stderr()}")
    open(os.path.join(out, "go"), "w").close()
    expect_exit(main, 0, 15)
    for c in children:
        expect_exit(c, 0, 10)
    hosts = read(os.path.join(out, "hostfile")).splitlines()
    check(hosts == ["127.0.0.1"] * 3, f"hostfile should list the 3 present nodes: {hosts}")
    err = main.stderr()
    check("starting with 3 of 4 nodes" in err and "missing node 2" in err, f"main log:\n{err}")
    check(not os.path.exists(os.path.join(out, "child-2")), "the late child's payload ran")


@runner.case
def min_nodes_not_reached(workdir):
    out, port, job = outdir(workdir), mnp.free_port(), Job(4)
    main = start_main(job, port, out, workdir, args=["--wait-timeout", wait_s(1.5), "--min-nodes", "3"])
    child = start_child(job, 2, port, out, workdir)
    expect_exit(main, mnp.EX_UNAVAILABLE, 15)
    expect_exit(child, 0, 10)
    err = main.stderr()
    check("nodes 1, 3 did not register" in err and "2 of 4 nodes present, 3 needed" in err, f"main log:\n{err}")


@runner.case
def heartbeat_or_grace_out_of_protocol_range(workdir):
    """--heartbeat above 3600 s or --grace above 86400 s cannot be carried by accept or
    shutdown: the agent refuses them at start (64 as flags, 78 from the environment)
    instead of turning every child away."""
    job = Job(2)
    for name, value in (("heartbeat", "3601"), ("grace", "86401")):
        main = Agent("main", ["--port", str(mnp.free_port()), "--wait-timeout", "20", f"--{name}", value,
                              "--", "true"], job.env(0), workdir)
        expect_exit(main, 64, 10)
        check(f"--{name}" in main.stderr(), f"--{name}: stderr does not name it:\n{main.stderr()}")
        env = dict(job.env(0), **{f"BATCH_AGENT_{name.upper()}": value})
        main = Agent("main", ["--port", str(mnp.free_port()), "--", "true"], env, workdir)
        expect_exit(main, mnp.EX_CONFIG, 10)
        check(f"BATCH_AGENT_{name.upper()}" in main.stderr(), f"stderr does not name the variable:\n{main.stderr()}")


@runner.case
def short_heartbeat_keeps_pace(workdir):
    """--heartbeat 0.05: the main's heartbeats leave from its sweep, which must tick at
    heartbeat / 3 (not its usual 250 ms), or its workers hear 3 intervals of silence.
    A protocol-library child measures the gaps between the main's heartbeats. Their
    median, not their maximum, is what is checked: a busy machine may stall either
    side now and then, and --on-node-loss continue keeps such a stall from ending the
    job before the sample is taken. A 250 ms sweep gives a median near 250 ms."""
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--heartbeat", "0.05", "--grace", "5", "--on-node-loss", "continue",
                          "--", "sleep", "3"], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    conn = np.Conn(socket.create_connection(("127.0.0.1", port), timeout=10 * mnp.SLOW))
    reg = np.register_msg(job_id=f"{job.uuid}#1", hostname="h", address="127.0.0.1", attempt=1, node_index=1,
                          num_nodes=2)
    acc = np.worker_handshake(conn, job.cookie, reg, timeout=10 * mnp.SLOW)
    check(acc["heartbeat_interval_ms"] == 50, f"accept: {acc}")
    lock, quiet = threading.Lock(), threading.Event()

    def beat():  # well inside the main's 150 ms of allowed silence
        while not quiet.wait(0.01):
            with lock:
                conn.send(np.heartbeat())

    sender = threading.Thread(target=beat, daemon=True)
    sender.start()
    arrivals, ended = [], "the main's payload ended"
    try:
        while len(arrivals) < 41:
            try:
                msg = conn.recv_msg(timeout=5 * mnp.SLOW)
            except np.ConnectionClosed:
                ended = "the main closed the connection"
                break
            if msg["type"] == "shutdown":
                break
            if msg["type"] == "heartbeat":
                arrivals.append(time.monotonic())
    finally:
        quiet.set()
        sender.join()
        conn.close()
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    check(len(gaps) >= 10, f"{ended} after only {len(arrivals)} heartbeats:\n{main.stderr()}")
    median = gaps[len(gaps) // 2]
    check(median < 0.15, f"the main's heartbeats are {median * 1000:.0f} ms apart (median of {len(gaps)}), "
                         f"not about 50 ms:\n{main.stderr()}")
    main.kill()


@runner.case
def slow_task_metadata_does_not_eat_the_handshake(workdir):
    """A task metadata endpoint that accepts and never answers costs the worker its
    15 s query once, before it dials: not inside the manager's 10 s handshake
    deadline, and not again on each redial."""
    import socket
    black_hole = socket.create_server(("127.0.0.1", 0))  # the backlog accepts, nobody answers
    try:
        port, job = mnp.free_port(), Job(2)
        main = Agent("main", ["--port", str(port), "--grace", "5", "--wait-timeout", "60", "--", "true"],
                     job.env(0), workdir)
        tmds = f"http://127.0.0.1:{black_hole.getsockname()[1]}/v4"
        child = Agent("child1", ["--port", str(port), "--grace", "5", "--", "sleep", "60"],
                      job.env(1, main_addr="127.0.0.1", extra={"ECS_CONTAINER_METADATA_URI_V4": tmds}), workdir)
        expect_exit(main, 0, 45)
        expect_exit(child, 0, 20)
        err = main.stderr()
        check("handshake not completed" not in err, f"the child's handshake timed out:\n{err}")
        cerr = child.stderr()
        unavailable, connected = cerr.find("task metadata unavailable"), cerr.find("connected to the manager")
        check(0 <= unavailable < connected and cerr.count("task metadata unavailable") == 1,
              f"the child did not query the task metadata once, before dialing:\n{cerr}")
    finally:
        black_hole.close()


@runner.case
def node_groups_the_main_waits_only_for_agent_nodes(workdir):
    """A 4-node job whose node 3 runs another image (--nodes 0:2): the main starts as
    soon as nodes 1 and 2 are in, without waiting for --wait-timeout, lists only the
    agent nodes, and refuses node 3 should it dial (node_out_of_range, 77)."""
    out, port, job = outdir(workdir), mnp.free_port(), Job(4)
    main = start_main(job, port, out, workdir, args=["--nodes", "0:2", "--wait-timeout", "300"],
                      payload=mnp.main_payload(out, wait_children=(1, 2), gate=True))
    children = [start_child(job, i, port, out, workdir) for i in (1, 2)]
    wait_for_file(os.path.join(out, "main.started"), 30)
    err = main.stderr()
    check("nodes that run the agent (--nodes 0:2): 3 of 4" in err and "all nodes present" in err, err)
    check(read(os.path.join(out, "hostfile")).splitlines() == ["127.0.0.1"] * 3, read(os.path.join(out, "hostfile")))
    open(os.path.join(out, "go"), "w").close()
    expect_exit(main, 0, 30)
    for c in children:
        expect_exit(c, 0, 15)


@runner.case
def node_outside_the_groups_is_refused(workdir):
    out, port, job = outdir(workdir), mnp.free_port(), Job(4)
    main = start_main(job, port, out, workdir, args=["--nodes", "0:1,2", "--wait-timeout", "60"],
                      payload=mnp.main_payload(out, wait_children=(1, 2), gate=True))
    stray = start_child(job, 3, port, out, workdir)
    expect_exit(stray, mnp.EX_NOPERM, 30)
    check("node_out_of_range" in stray.stderr() and "--nodes 0:1,2" in stray.stderr(), stray.stderr())
    children = [start_child(job, i, port, out, workdir) for i in (1, 2)]
    wait_for_file(os.path.join(out, "main.started"), 30)
    open(os.path.join(out, "go"), "w").close()
    expect_exit(main, 0, 30)
    for c in children:
        expect_exit(c, 0, 15)


@runner.case
def a_failed_child_fails_the_job(workdir):
    """--on-node-loss fail (the default): a child's payload fails while the main payload
    runs; the main stops its payload (SIGTERM) and exits 69, whatever the payload's
    status, so that the attempt can be retried."""
    out, port, job = outdir(workdir), mnp.free_port(), Job(3)
    failing = ["/bin/sh", "-c", 'echo x > "$1/child-$AWS_BATCH_JOB_NODE_INDEX"; '
               'while [ ! -e "$1/fail" ]; do sleep 0.05; done; exit 5', "c", out]
    main_prog = ["/bin/sh", "-c", 'trap "echo term > $1/main.term; exit 0" TERM; echo 1 > "$1/main.started"; '
                 'while :; do sleep 0.05; done', "main", out]
    main = start_main(job, port, out, workdir, payload=main_prog)
    good = start_child(job, 1, port, out, workdir)
    bad = start_child(job, 2, port, out, workdir, payload=failing)
    wait_for_file(os.path.join(out, "main.started"), 30)
    open(os.path.join(out, "fail"), "w").close()
    expect_exit(bad, 5, 20)
    expect_exit(main, mnp.EX_UNAVAILABLE, 30)
    err = main.stderr()
    check("node 2 failed (--on-node-loss fail): stopping the main payload; the job fails with 69" in err, err)
    check(read(os.path.join(out, "main.term")).strip() == "term", "the main payload did not get SIGTERM")
    expect_exit(good, 0, 15)


@runner.case
def a_lost_child_fails_the_job(workdir):
    """--on-node-loss fail: a child that stops answering while the main payload runs."""
    port, job = mnp.free_port(), Job(2)
    args = ["--heartbeat", "%.3g" % (0.3 * mnp.SLOW), "--grace", "2"]
    main = Agent("main", ["--port", str(port), *args, "--", "sleep", "60"], job.env(0), workdir)
    child = Agent("child1", ["--port", str(port), *args, "--", "sleep", "60"],
                  job.env(1, main_addr="127.0.0.1"), workdir)
    main.wait_for_log("all nodes present", 20)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        expect_exit(main, mnp.EX_UNAVAILABLE, 30)
        check("node 1 was lost (--on-node-loss fail)" in main.stderr(), main.stderr())
    finally:
        os.kill(child.pid, signal.SIGCONT)
    child.wait(30)


@runner.case
def bad_node_ranges(workdir):
    job = Job(4)
    for value, code, text in (("3:1", 64, "--nodes"), ("x", 64, "--nodes"), ("1:2", 64, "leaves out the main node 0"),
                              (",", 64, "--nodes"), ("0:4", 64, "names node 4, beyond this 4-node job"),
                              ("0,7:", 64, "names node 7, beyond this 4-node job")):
        a = Agent("bad", ["--nodes", value, "--", "true"], job.env(0), workdir)
        rc = a.wait(20)
        check(rc == code and text in a.stderr(), f"--nodes {value!r}: exit {rc}:\n{a.stderr()}")
    a = Agent("badenv", ["--", "true"], job.env(0, extra={"BATCH_AGENT_NODE_RANGES": "2:1"}), workdir)
    rc = a.wait(20)
    check(rc == 78 and "BATCH_AGENT_NODE_RANGES" in a.stderr(), f"exit {rc}:\n{a.stderr()}")


if __name__ == "__main__":
    runner.run()
