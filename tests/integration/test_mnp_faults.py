"""Faults in a multi-node job (issue 13, item 3), each node a host of its own in a
network namespace on 198.18.0.0/15. Every case asserts the outcome README's "Faults"
table documents: each agent's exit status and message, no process left in any agent's
session, and no payload status lost (a child's payload status reaches the main, or the
child says why there is none).

- the main SIGKILLed during the rendezvous, and while the payloads run;
- a manager restarted: after a worker was accepted, and while a worker still dials;
- a child's agent SIGKILLed, and a child's payload SIGKILLed;
- a partition (the child's link down) longer than three heartbeats, then healed, with
  the default --on-node-loss fail / --on-manager-loss exit and with continue on both;
- a full disk where the hostfile is written (a small tmpfs as TMPDIR), on the main and
  on a child;
- descriptor exhaustion in a worker (its RLIMIT_NOFILE lowered to what it holds): at the
  roster, while probing its --ready-port, and while its payload runs;
- SIGTERM at every stage: the AWS query, the dial, the handshake, the rendezvous (the
  main and a registered child) and the payload (the main and a child)."""

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import netns  # noqa: E402
from mnp import SLOW, Agent, Failure, Job, check, expect_exit, wait_for_file, wait_s  # noqa: E402

EX_OSERR, EX_TERM = 71, 128 + signal.SIGTERM
runner = mnp.Runner()


def start(net, job, index, out, workdir, args=(), payload=None, name=None, env=None):
    """Node index on host index+1 (the main, node 0, on host 1)."""
    default = mnp.main_payload(out, gate=True) if index == 0 else mnp.child_payload(out, hold=120)
    return Agent(name or ("main" if index == 0 else f"child{index}"),
                 ["--heartbeat", "0.5", "--grace", "5", *args, "--", *(payload or default)],
                 job.env(index, main_addr=net.addr(1) if index else None, extra=env), workdir,
                 net=net, host=index + 1)


def outdir(workdir):
    out = os.path.join(workdir, "out")
    os.makedirs(out, exist_ok=True)
    return out


def running_job(net, job, out, workdir, main_args=(), child_args=()):
    """A job whose payloads all run: the main's waits for $out/go."""
    main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300", *main_args])
    main.wait_for_log("rendezvous listening", 10)
    children = [start(net, job, i, out, workdir, args=child_args) for i in range(1, job.num_nodes)]
    wait_for_file(os.path.join(out, "main.started"), 30)
    for i in range(1, job.num_nodes):
        wait_for_file(os.path.join(out, f"child-{i}.pid"), 10)
    return main, children


def nothing_left(*agents, timeout=10):
    """Every agent has exited and no process is left in its session (a payload, or what
    a payload started): waits for the kernel to deliver what the agent sent."""
    deadline = time.monotonic() + timeout * SLOW
    for a in agents:
        check(not a.running(), f"{a.name} is still running:\n{a.stderr()}")
        while True:
            left = mnp.session_members(a.pid)
            if not left:
                break
            if time.monotonic() > deadline:
                raise Failure(f"{a.name} left processes behind: {left} ({describe(left)})\n{a.stderr()}")
            time.sleep(0.05)


def describe(pids):
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except OSError:
            pass
    return "; ".join(out)


def logged(agent, *texts):
    err = agent.stderr()
    for t in texts:
        check(t in err, f"{agent.name} did not log {t!r}:\n{err}")


def gone(path):
    return not os.path.exists(path)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout * SLOW
    while not predicate():
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {timeout * SLOW:.0f} s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------
# The main SIGKILLed (Batch's SIGKILL after the 30 s, or the OOM killer)

@runner.case
def main_killed_during_the_rendezvous(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"])
        main.wait_for_log("rendezvous listening", 10)
        child = start(net, job, 1, out, workdir)
        child.wait_for_log("waiting for the roster", 20)
        os.kill(main.pid, signal.SIGKILL)
        expect_exit(child, mnp.EX_UNAVAILABLE, 15)
        nothing_left(main, child)
    logged(child, "before the roster came: no payload started")
    check(gone(os.path.join(out, "child-1")), "the child's payload started without a roster")


@runner.case
def main_killed_while_the_payloads_run(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main, children = running_job(net, job, out, workdir)
        os.kill(main.pid, signal.SIGKILL)
        for c in children:
            expect_exit(c, mnp.EX_UNAVAILABLE, 15)
        # The main payload goes with its agent, the children's with theirs.
        nothing_left(main, *children)
    for c in children:
        logged(c, "stopping the payload (--on-manager-loss exit)")


# ---------------------------------------------------------------------------------
# A manager restarted (a container restarted in place, or a new main at the address)

@runner.case
def manager_restarted_after_the_worker_was_accepted(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        main, (child,) = running_job(net, job, out, workdir)
        os.kill(main.pid, signal.SIGKILL)
        again = start(net, job, 0, out, workdir, args=["--wait-timeout", wait_s(2)], name="main-again")
        # The accepted worker does not come back: its session, its keys and its payload
        # belonged to the old main. The new one waits for it in vain.
        expect_exit(child, mnp.EX_UNAVAILABLE, 15)
        expect_exit(again, mnp.EX_UNAVAILABLE, 30)
        nothing_left(main, child, again)
    logged(child, "lost the manager", "stopping the payload (--on-manager-loss exit)")
    logged(again, f"node 1 did not register within {wait_s(2)} s")


@runner.case
def a_worker_still_dialing_finds_the_restarted_manager(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        first = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"], name="main-first")
        first.wait_for_log("rendezvous listening", 10)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        child = start(net, job, 1, out, workdir)
        child.wait_for_log("not reachable yet", 15)
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"])
        wait_for_file(os.path.join(out, "main.started"), 30)
        open(os.path.join(out, "go"), "w").close()
        expect_exit(main, 0, 30)
        expect_exit(child, 0, 15)
        nothing_left(first, main, child)
    logged(main, "node 1's payload ended")


# ---------------------------------------------------------------------------------
# A child killed

@runner.case
def child_agent_killed(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main, (killed, other) = running_job(net, job, out, workdir)
        os.kill(killed.pid, signal.SIGKILL)
        expect_exit(main, mnp.EX_UNAVAILABLE, 20)
        expect_exit(other, 0, 15)
        nothing_left(main, killed, other)
    logged(main, "node 1 (", "lost", "stopping the main payload; the job fails with 69",
           "node 2's payload ended")


@runner.case
def child_payload_killed(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main, (victim, other) = running_job(net, job, out, workdir)
        os.kill(int(mnp.read(os.path.join(out, "child-1.pid"))), signal.SIGKILL)
        expect_exit(victim, 128 + signal.SIGKILL, 15)
        expect_exit(main, mnp.EX_UNAVAILABLE, 20)
        expect_exit(other, 0, 15)
        nothing_left(main, victim, other)
    # The status reached the main before anything else happened.
    logged(main, "node 1's payload was killed by signal 9", "stopping the main payload; the job fails with 69")


# ---------------------------------------------------------------------------------
# A partition longer than three heartbeats, then healed

@runner.case
def partition_longer_than_three_heartbeats(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        main, (child,) = running_job(net, job, out, workdir)
        net.partition(2)
        # Each side finds the other silent for three heartbeats (1.5 s) on its own.
        main.wait_for_log("node 1 (", 20)
        child.wait_for_log("lost the manager", 20)
        net.heal(2)
        expect_exit(main, mnp.EX_UNAVAILABLE, 20)
        expect_exit(child, mnp.EX_UNAVAILABLE, 20)
        nothing_left(main, child)
    logged(main, "no heartbeat", "stopping the main payload; the job fails with 69")
    logged(child, "no heartbeat", "stopping the payload (--on-manager-loss exit)")


@runner.case
def partition_with_continue_on_both_sides(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        main, (child,) = running_job(net, job, out, workdir, main_args=["--on-node-loss", "continue"],
                                     child_args=["--on-manager-loss", "continue"])
        net.partition(2)
        main.wait_for_log("the main payload goes on (--on-node-loss continue)", 20)
        child.wait_for_log("the payload carries on (--on-manager-loss continue)", 20)
        net.heal(2)
        # The healed link brings back no session: the main ends without the dropped node,
        # whose payload runs on until Batch stops the job (its SIGTERM).
        open(os.path.join(out, "go"), "w").close()
        expect_exit(main, 0, 20)
        check(child.running(), f"the child did not carry on:\n{child.stderr()}")
        sigterm(child, EX_TERM, timeout=15)
        nothing_left(main, child)
    check("telling" not in main.stderr(), f"the main still counted the dropped node:\n{main.stderr()}")


# ---------------------------------------------------------------------------------
# A full disk where the hostfile is written

class SmallTmpfs:
    """A 64 KiB tmpfs for a TMPDIR, filled by fill() once the agent runs (valgrind, as a
    wrapper, needs room there to start); unmounted on exit."""

    def __init__(self, path):
        self.path = path
        os.makedirs(path)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise mnp.Skip(f"cannot mount a tmpfs: {r.stderr.strip()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", self.path], capture_output=True)

    def fill(self):
        try:
            with open(os.path.join(self.path, "filler"), "wb") as f:
                while True:
                    f.write(b"x" * 4096)
                    f.flush()
        except OSError:
            pass

    def hostfiles(self):
        return [f for f in os.listdir(self.path) if f.startswith("batch-agent")]


@runner.case
def full_disk_for_the_main_hostfile(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with SmallTmpfs(os.path.join(workdir, "full")) as tmp, netns.Network(2) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"], env={"TMPDIR": tmp.path})
        main.wait_for_log("rendezvous listening", 10)
        tmp.fill()
        child = start(net, job, 1, out, workdir)
        expect_exit(main, EX_OSERR, 30)
        # The children were ready and running: they are told to stop.
        expect_exit(child, 0, 15)
        nothing_left(main, child)
        check(tmp.hostfiles() == [], f"the main left a hostfile behind: {tmp.hostfiles()}")
    logged(main, f"{tmp.path}/batch-agent-hostfile.", "No space left on device",
           "the main payload could not start", "node 1's payload ended")
    check(gone(os.path.join(out, "main.started")), "the main payload started without its hostfile")


@runner.case
def full_disk_for_a_child_hostfile(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with SmallTmpfs(os.path.join(workdir, "full")) as tmp, netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"])
        main.wait_for_log("rendezvous listening", 10)
        child = start(net, job, 1, out, workdir, env={"TMPDIR": tmp.path})
        child.wait_for_log("waiting for the roster", 20)
        tmp.fill()
        other = start(net, job, 2, out, workdir)
        expect_exit(child, EX_OSERR, 30)
        expect_exit(main, mnp.EX_UNAVAILABLE, 15)
        expect_exit(other, 0, 15)
        nothing_left(main, child, other)
        check(tmp.hostfiles() == [], f"the child left a hostfile behind: {tmp.hostfiles()}")
    logged(child, f"{tmp.path}/batch-agent-hostfile.", "No space left on device")
    # Not a silent loss: the child's status (71, its own) reached the main first.
    logged(main, "node 1's payload failed with status 71",
           "node 1 failed before the main payload started (--on-node-loss fail): the job fails with 69")
    check(gone(os.path.join(out, "child-1")) and gone(os.path.join(out, "main.started")),
          "a payload started")


# ---------------------------------------------------------------------------------
# Descriptor exhaustion in a worker

def starve(pid):
    """Lowers pid's RLIMIT_NOFILE to its lowest free descriptor, so that its next one
    fails with EMFILE (valgrind keeps descriptors of its own far above: counting them
    would leave room)."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    lowest = next(fd for fd in range(len(used) + 1) if fd not in used)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest, lowest))


@runner.case
def descriptors_exhausted_in_a_worker(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"])
        main.wait_for_log("rendezvous listening", 10)
        starved = start(net, job, 1, out, workdir)
        starved.wait_for_log("waiting for the roster", 20)
        # Not one descriptor more than it holds: the roster's hostfile cannot be opened.
        starve(starved.pid)
        other = start(net, job, 2, out, workdir)
        expect_exit(starved, EX_OSERR, 30)
        expect_exit(main, mnp.EX_UNAVAILABLE, 15)
        expect_exit(other, 0, 15)
        nothing_left(main, starved, other)
    logged(starved, "Too many open files")
    # Not a silent loss: the child's status (71, its own) reached the main first.
    logged(main, "node 1's payload failed with status 71",
           "node 1 failed before the main payload started (--on-node-loss fail): the job fails with 69")
    check(gone(os.path.join(out, "child-1")) and gone(os.path.join(out, "main.started")),
          "a payload started")


# The child's payload: listens on READY_PORT once $out/open exists (an sshd coming up).
READY_PORT = 2222
LISTEN_LATE = (
    'o="$1"; while [ ! -e "$o/open" ]; do sleep 0.05; done; '
    'exec /usr/bin/python3 -c "import socket,time; s=socket.socket(); '
    's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\'127.0.0.1\', %d)); s.listen(8); '
    'time.sleep(120)"' % READY_PORT
)


@runner.case
def descriptors_exhausted_in_a_worker_probing_its_ready_port(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", wait_s(3)])
        main.wait_for_log("rendezvous listening", 10)
        child = start(net, job, 1, out, workdir, args=["--ready-port", str(READY_PORT)],
                      payload=["/bin/sh", "-c", LISTEN_LATE, "late", out])
        child.wait_for_log("(--ready-port)", 20)
        starve(child.pid)
        open(os.path.join(out, "open"), "w").close()
        # The port accepts, but the worker has no socket to see it with: it says so.
        child.wait_for_log(f"cannot try --ready-port {READY_PORT}: socket: Too many open files", 10)
        expect_exit(main, mnp.EX_UNAVAILABLE, 30)
        expect_exit(child, 0, 15)
        nothing_left(main, child)
    logged(main, f"node 1 did not get ready within {wait_s(3)} s")


# The child's payload: starts a daemon, records itself, and exits 0 once $out/end exists,
# leaving the daemon behind for the agent to clean up.
LEAVES_A_DAEMON = (
    'o="$1"; sleep 120 & echo $! > "$o/daemon.pid"; echo $$ > "$o/child-1.pid"; '
    'while [ ! -e "$o/end" ]; do sleep 0.05; done; exit 0'
)


@runner.case
def descriptors_exhausted_in_a_worker_while_its_payload_runs(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"])
        main.wait_for_log("rendezvous listening", 10)
        child = start(net, job, 1, out, workdir, payload=["/bin/sh", "-c", LEAVES_A_DAEMON, "daemon", out])
        wait_for_file(os.path.join(out, "main.started"), 30)
        daemon = int(wait_for_file(os.path.join(out, "daemon.pid"), 10))
        starve(child.pid)
        # Its payload ends: the report needs no descriptor, the clean-up must do without.
        open(os.path.join(out, "end"), "w").close()
        main.wait_for_log("node 1's payload exited with status 0", 20)
        open(os.path.join(out, "go"), "w").close()
        expect_exit(main, 0, 20)
        expect_exit(child, 0, 20)
        nothing_left(main, child)
    check(not pid_alive(daemon), "the payload's daemon outlived the worker")


# ---------------------------------------------------------------------------------
# SIGTERM at every stage (Batch stops the job; SIGKILL follows 30 s later)

def sigterm(agent, code, timeout=10):
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    expect_exit(agent, code, timeout)
    return time.monotonic() - t0


@runner.case
def sigterm_during_the_aws_query(workdir):
    import agentaws
    import fake_aws
    out = outdir(workdir)
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = "hang"
        worker = Agent("worker", ["--manager", "Ref::manager", "--", "/bin/sh", "-c", 'touch "$1/ran"', "p", out],
                       agentaws.agent_env(fake), workdir)
        wait_until(lambda: fake.count("describejobs") >= 1, 20, "the DescribeJobs request")
        took = sigterm(worker, EX_TERM)
        nothing_left(worker)
    check(took < 3 * SLOW, f"SIGTERM took {took:.1f} s to end the agent")
    check(gone(os.path.join(out, "ran")), "the payload ran")


@runner.case
def sigterm_while_dialing(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        child = start(net, job, 1, out, workdir)
        child.wait_for_log("not reachable yet", 15)
        took = sigterm(child, EX_TERM)
        nothing_left(child)
    check(took < 3 * SLOW, f"SIGTERM took {took:.1f} s to end the agent")
    check(gone(os.path.join(out, "child-1")), "the payload ran")


@runner.case
def sigterm_in_the_handshake(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(2)
    with netns.Network(2) as net:
        # A "main" that accepts and never says hello: the worker waits in the handshake.
        srv = net.run_in(1, lambda: socket.create_server((net.addr(1), 49152)))
        accepted, conns = threading.Event(), []

        def serve():
            try:
                conns.append(srv.accept()[0])
                accepted.set()
            except OSError:
                pass

        threading.Thread(target=serve, daemon=True).start()
        try:
            child = start(net, job, 1, out, workdir)
            check(accepted.wait(15 * SLOW), f"the worker never connected:\n{child.stderr()}")
            took = sigterm(child, EX_TERM)
            nothing_left(child)
        finally:
            srv.close()
            for c in conns:
                c.close()
    check(took < 3 * SLOW, f"SIGTERM took {took:.1f} s to end the agent")
    check(gone(os.path.join(out, "child-1")), "the payload ran")


@runner.case
def sigterm_to_the_main_during_the_rendezvous(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", "300"])
        main.wait_for_log("rendezvous listening", 10)
        child = start(net, job, 1, out, workdir)
        child.wait_for_log("waiting for the roster", 20)
        sigterm(main, EX_TERM)
        # Told to shut down before any payload: nothing of its ran, nothing failed.
        expect_exit(child, 0, 15)
        nothing_left(main, child)
    check(gone(os.path.join(out, "child-1")), "the child's payload started")
    # It owed no report: its leaving is no loss.
    logged(main, "interrupted: telling 1 node to shut down", "node 1 (", "left with no payload started")
    check(" lost" not in main.stderr(), f"the main calls a node that left as told lost:\n{main.stderr()}")


@runner.case
def sigterm_to_a_registered_child_during_the_rendezvous(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main = start(net, job, 0, out, workdir, args=["--wait-timeout", wait_s(3)])
        main.wait_for_log("rendezvous listening", 10)
        child = start(net, job, 1, out, workdir)
        child.wait_for_log("waiting for the roster", 20)
        sigterm(child, EX_TERM)
        # The main hears it leave and waits for it (and node 2) until --wait-timeout.
        main.wait_for_log("node 1 (", 10)
        expect_exit(main, mnp.EX_UNAVAILABLE, 30)
        nothing_left(main, child)
    logged(main, "nodes 1, 2 did not register")


@runner.case
def sigterm_to_the_main_while_the_payloads_run(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main, children = running_job(net, job, out, workdir)
        sigterm(main, EX_TERM, timeout=20)
        for c in children:
            expect_exit(c, 0, 15)
        nothing_left(main, *children)
    logged(main, "node 1's payload ended", "node 2's payload ended")


@runner.case
def sigterm_to_a_child_while_the_payloads_run(workdir):
    mnp.need_netns()
    out, job = outdir(workdir), Job(3)
    with netns.Network(3) as net:
        main, (stopped, other) = running_job(net, job, out, workdir)
        sigterm(stopped, EX_TERM)
        expect_exit(main, mnp.EX_UNAVAILABLE, 20)
        expect_exit(other, 0, 15)
        nothing_left(main, stopped, other)
    logged(main, "node 1's payload was killed by signal 15", "stopping the main payload; the job fails with 69")


if __name__ == "__main__":
    sys.exit(runner.run())
