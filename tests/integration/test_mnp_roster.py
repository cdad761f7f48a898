"""The roster and readiness (protocol version 3, PROTOCOL.md §4.1) across network
namespaces, each node a host of its own on 198.18.0.0/15:

- every node's payload, the main's and the children's, sees the same peer view
  (BATCH_AGENT_NODES, the hostfile with slots, BATCH_AGENT_NUM_NODES, --env torch) and
  its own rank, in a 4-node job whose node 3 runs another image (--nodes 0:2);
- the main payload starts only once every child is ready: with --ready-port, once the
  child's payload accepts on that port;
- a child that never gets ready is named, and the job fails with 69 at --wait-timeout;
- a child lost before the main payload starts fails the job at once (--on-node-loss
  fail), or is left out (continue);
- --payload-start registered: a child's payload starts at its registration, before the
  roster, without a peer view."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import netns  # noqa: E402
from mnp import Agent, Job, check, expect_exit, read, wait_for_file, wait_s  # noqa: E402

PORT = 49152
READY_PORT = 2222
runner = mnp.Runner()

# Every node runs this: it writes what it sees of the job, then, on the main, waits
# for $out/go; on a child it holds until the agent stops it.
VIEW = (
    'o="$1"; i=$AWS_BATCH_JOB_NODE_INDEX; '
    '{ echo "nodes=$BATCH_AGENT_NODES"; echo "rank=$BATCH_AGENT_NODE_RANK"; '
    'echo "num=$BATCH_AGENT_NUM_NODES"; echo "master_addr=$MASTER_ADDR"; '
    'echo "master_port=$MASTER_PORT"; echo "world=$WORLD_SIZE"; echo "node_rank=$NODE_RANK"; '
    'echo "---"; [ -n "$BATCH_AGENT_HOSTFILE" ] && cat "$BATCH_AGENT_HOSTFILE"; } > "$o/view-$i.tmp"; '
    'mv "$o/view-$i.tmp" "$o/view-$i"; '
    'if [ "$i" = "$AWS_BATCH_JOB_MAIN_NODE_INDEX" ]; then '
    'while [ ! -e "$o/go" ]; do sleep 0.05; done; else exec sleep 120; fi'
)


def view_payload(out):
    return ["/bin/sh", "-c", VIEW, "view", out]


def start(net, job, index, out, workdir, args=(), payload=None, cpus=None):
    """Node index on host index+1; cpus: the CPU affinity it runs with (the CPUs it
    registers, and so its hostfile slots)."""
    env = job.env(index, main_addr=net.addr(1) if index else None)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return Agent("main" if index == 0 else f"child{index}",
                 ["--heartbeat", "0.5", "--grace", "5", *args, "--", *(payload or view_payload(out))],
                 env, workdir, net=net, host=index + 1, preexec_fn=pin)


def parse_view(text):
    head, _, hostfile = text.partition("---\n")
    view = dict(line.split("=", 1) for line in head.splitlines())
    return view, hostfile.splitlines()


def outdir(workdir):
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    return out


@runner.case
def every_node_sees_the_same_view_and_its_own_rank(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(4)
    available = sorted(os.sched_getaffinity(0))
    # Distinct CPU counts where the machine has them: slots come from what each registered.
    pins = {0: {available[0]}, 1: set(available[:2]), 2: {available[-1]}}
    view_args = ["--env", "torch", "--hostfile-format", "openmpi"]
    with netns.Network(4) as net:
        main = start(net, job, 0, out, workdir, args=["--nodes", "0:2", "--wait-timeout", "300", *view_args],
                     cpus=pins[0])
        main.wait_for_log("rendezvous listening", 10)
        children = [start(net, job, i, out, workdir, args=view_args, cpus=pins[i]) for i in (1, 2)]
        views = {i: wait_for_file(os.path.join(out, f"view-{i}"), 30) for i in (0, 1, 2)}
        # The main payload started after both children's payloads had (their ready).
        err = main.stderr()
        start_at = err.find("all nodes present and ready")
        check(0 <= err.find("node 1 is ready") < start_at and 0 <= err.find("node 2 is ready") < start_at,
              f"the main payload started before the children were ready:\n{err}")
        open(os.path.join(out, "go"), "w").close()
        expect_exit(main, 0, 30)
        for c in children:
            expect_exit(c, 0, 15)

    addrs = [net.addr(h) for h in (1, 2, 3)]
    expected_hosts = [f"{addrs[i]} slots={len(pins[i])}" for i in range(3)]
    for i in (0, 1, 2):
        view, hosts = parse_view(views[i])
        check(view["nodes"] == ",".join(addrs), f"node {i}: BATCH_AGENT_NODES={view['nodes']!r}")
        check(hosts == expected_hosts, f"node {i}: hostfile {hosts}, expected {expected_hosts}")
        check(view["rank"] == str(i) and view["node_rank"] == str(i), f"node {i}: rank {view}")
        check(view["num"] == "3" and view["world"] == "3", f"node {i}: {view}")
        check(view["master_addr"] == addrs[0] and view["master_port"] == "29500", f"node {i}: {view}")
    err = main.stderr()
    check("roster sent to 2 children" in err and "node 1 is ready" in err and "node 2 is ready" in err, err)
    for c in children:
        check("roster: 3 nodes" in c.stderr(), c.stderr())


# A child's payload that listens on READY_PORT once $out/open exists, as an sshd
# that takes a while would.
LISTEN_LATE = (
    'o="$1"; while [ ! -e "$o/open" ]; do sleep 0.05; done; '
    'exec /usr/bin/python3 -c "import socket,time; s=socket.socket(); '
    's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\'0.0.0.0\', %d)); s.listen(8); '
    'time.sleep(120)"' % READY_PORT
)

# The main payload: can it reach the child's port the moment it starts?
PROBE = (
    'o="$1"; /usr/bin/python3 -c "import socket,sys; '
    'socket.create_connection((sys.argv[1], %d), timeout=5).close()" "$2" '
    '&& echo reachable > "$o/probe" || echo refused > "$o/probe"' % READY_PORT
)


@runner.case
def ready_port_gates_the_main_payload(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"],
                     payload=["/bin/sh", "-c", PROBE, "probe", out, net.addr(2)])
        child = start(net, job, 1, out, workdir, args=["--ready-port", str(READY_PORT)],
                      payload=["/bin/sh", "-c", LISTEN_LATE, "late", out])
        child.wait_for_log(f"waiting for the payload to accept connections on port {READY_PORT}", 30)
        check(not os.path.exists(os.path.join(out, "probe")), "the main payload started before the child was ready")
        open(os.path.join(out, "open"), "w").close()
        expect_exit(main, 0, 30)
        expect_exit(child, 0, 15)
    check(read(os.path.join(out, "probe")).strip() == "reachable", "the main payload could not reach the child's port")
    check("the payload accepts connections on port %d" % READY_PORT in child.stderr(), child.stderr())


@runner.case
def a_child_that_never_gets_ready_is_named(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", wait_s(2)],
                     payload=["/bin/sh", "-c", 'touch "$1/main.started"', "main", out])
        ready = start(net, job, 1, out, workdir)
        never = start(net, job, 2, out, workdir, args=["--ready-port", str(READY_PORT)],
                      payload=["/bin/sleep", "120"])
        expect_exit(main, mnp.EX_UNAVAILABLE, 30)
        # The children are told to shut down, and do, at once.
        expect_exit(ready, 0, 15)
        expect_exit(never, 0, 15)
    err = main.stderr()
    check(f"node 2 did not get ready within {wait_s(2)} s" in err and "1 of 2 ready" in err, err)
    check(not os.path.exists(os.path.join(out, "main.started")), "the main payload ran although node 2 was not ready")


@runner.case
def a_node_lost_before_the_main_payload_fails_the_job(workdir):
    """Node 1 is ready, node 2 is not yet (its port is closed), and node 1's agent dies:
    with the default --on-node-loss fail the job fails with 69 at once, long before
    --wait-timeout, and node 2 is told to shut down."""
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"],
                     payload=["/bin/sh", "-c", 'touch "$1/main.started"', "main", out])
        one = start(net, job, 1, out, workdir)
        two = start(net, job, 2, out, workdir, args=["--ready-port", str(READY_PORT)], payload=["/bin/sleep", "120"])
        main.wait_for_log("node 1 is ready", 30)
        two.wait_for_log("waiting for the payload to accept connections", 30)
        one.kill()
        expect_exit(main, mnp.EX_UNAVAILABLE, 30)
        expect_exit(two, 0, 15)
    err = main.stderr()
    check("node 1 was lost before the main payload started (--on-node-loss fail)" in err, err)
    check(not os.path.exists(os.path.join(out, "main.started")), "the main payload ran without node 1")


@runner.case
def on_node_loss_continue_goes_on_without_it(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300", "--on-node-loss", "continue"],
                     payload=["/bin/sh", "-c", 'printf "%s" "$BATCH_AGENT_NODES" > "$1/nodes"', "main", out])
        one = start(net, job, 1, out, workdir, args=["--ready-port", str(READY_PORT)], payload=["/bin/sleep", "120"])
        two = start(net, job, 2, out, workdir, args=["--ready-port", str(READY_PORT)],
                    payload=["/bin/sh", "-c", LISTEN_LATE, "late", out])
        one.wait_for_log("waiting for the payload to accept connections", 30)
        two.wait_for_log("waiting for the payload to accept connections", 30)
        one.kill()
        main.wait_for_log("the job goes on without it (--on-node-loss continue)", 30)
        open(os.path.join(out, "open"), "w").close()
        expect_exit(main, 0, 30)
        expect_exit(two, 0, 15)
    # The roster went out with node 1 in it: the view stays the one every node got.
    check(read(os.path.join(out, "nodes")) == ",".join(net.addr(h) for h in (1, 2, 3)), read(os.path.join(out, "nodes")))


@runner.case
def payload_start_registered_runs_before_the_roster(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"])
        main.wait_for_log("rendezvous listening", 10)
        early = start(net, job, 1, out, workdir, args=["--payload-start", "registered"])
        # Its payload runs while node 2 has not even started: no roster yet.
        view = wait_for_file(os.path.join(out, "view-1"), 30)
        check(not os.path.exists(os.path.join(out, "view-0")), "the main payload started before every node was in")
        late = start(net, job, 2, out, workdir)
        wait_for_file(os.path.join(out, "view-0"), 30)
        open(os.path.join(out, "go"), "w").close()
        expect_exit(main, 0, 30)
        expect_exit(early, 0, 15)
        expect_exit(late, 0, 15)
    early_view, hosts = parse_view(view)
    check(early_view["nodes"] == "" and early_view["rank"] == "" and hosts == [],
          f"an early child got a peer view: {view!r}")
    late_view, _ = parse_view(read(os.path.join(out, "view-2")))
    check(late_view["rank"] == "2" and late_view["num"] == "3", f"node 2: {late_view}")


if __name__ == "__main__":
    sys.exit(runner.run())
