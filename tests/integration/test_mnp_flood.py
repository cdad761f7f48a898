"""A stranger cannot stall the rendezvous (issue 10, finding 2), in network namespaces:
the main on host 1, an attacker on host 2, the children on hosts of their own.

Cases: an attacker that holds 3,000 idle connections (reopening those dropped) while
the children register and the main payload starts; the per-source cap (a source at
its cap evicts its own oldest silent connection, and another source is not touched)."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import nativeproto as npr  # noqa: E402
import netns  # noqa: E402
from mnp import Agent, Job, check, expect_exit, read, wait_for_file  # noqa: E402

PORT = 49152
PER_SOURCE = 16  # agent/net/pending.h, PENDING_PER_SOURCE_MAX
FLOOD = int(os.environ.get("FLOOD_CONNECTIONS") or 3000)
runner = mnp.Runner()


def wait_line(proc, prefix, timeout):
    """The first stdout line of proc that starts with prefix."""
    deadline = time.monotonic() + timeout * mnp.SLOW
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise mnp.Failure(f"the attacker exited {proc.wait()} before printing {prefix!r}")
        if line.startswith(prefix):
            return line.split()
    raise mnp.Failure(f"the attacker did not print {prefix!r} within {timeout * mnp.SLOW:.0f} s")


@runner.case
def idle_flood_does_not_stall_the_rendezvous(workdir):
    """Within 30 s (scaled) of the children's start, both register and the main
    payload starts, while host 2 holds FLOOD idle connections to the main's port and
    reopens each one it loses. On the base commit the attacker's connections fill
    every handshake slot for 10 s at a time, the children are answered busy until
    --wait-timeout, and the main exits 69."""
    mnp.need_netns()
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    job = Job(3)
    budget = 30 * mnp.SLOW
    with netns.Network(4) as net:
        main = Agent("main", ["--heartbeat", "0.5", "--grace", "5", "--wait-timeout", f"{budget:.0f}", "--",
                              *mnp.main_payload(out, wait_children=(1, 2))],
                     job.env(0), workdir, net=net, host=1)
        main.wait_for_log("rendezvous listening", 10)
        attacker = net.popen(2, [sys.executable, os.path.join(mnp.SOURCE_DIR, "tests", "peers", "idle_flood.py"),
                                 net.addr(1), str(PORT), str(FLOOD)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_line(attacker, "ready", 60)
            t0 = time.monotonic()
            children = [Agent(f"child{i}", ["--heartbeat", "0.5", "--grace", "5", "--connect-timeout",
                                            f"{budget:.0f}", "--", *mnp.child_payload(out)],
                              job.env(i, main_addr=net.addr(1)), workdir, net=net, host=i + 2)
                        for i in (1, 2)]
            wait_for_file(os.path.join(out, "main.started"), 30)
            took = time.monotonic() - t0
            check(took <= budget, f"the main payload started {took:.1f} s after the children, over {budget:.0f} s")
            check(attacker.poll() is None, "the attacker stopped during the rendezvous")
        finally:
            if attacker.poll() is None:
                attacker.terminate()
            tail = attacker.communicate(timeout=20)[0].split()
        # The flood was real: the attacker opened at least FLOOD connections.
        opened = int(tail[tail.index("opened") + 1]) if "opened" in tail else 0
        check(opened >= FLOOD, f"the attacker opened only {opened} connections")
        expect_exit(main, 0, 30)
        for c in children:
            expect_exit(c, 0, 15)
        hosts = read(os.path.join(out, "hostfile")).splitlines()
        check(hosts == [net.addr(1), net.addr(3), net.addr(4)], f"hostfile: {hosts}")
        err = main.stderr()
        check("to make room for newcomers" in err, f"the main does not count its evictions:\n{err}")


@runner.case
def per_source_cap_evicts_that_source_only(workdir):
    """Host 2 opens PER_SOURCE silent connections, then one more: the oldest of host 2's
    is closed with error busy, the newest stays, and host 3's silent connection, opened
    first of all, is untouched (the global cap is far). The burst must land within the
    1 s first-message deadline: a run too slow for it is repeated, up to 3 times."""
    mnp.need_netns()
    job = Job(2)
    with netns.Network(3) as net:
        main = Agent("main", ["--wait-timeout", "60", "--", "true"], job.env(0), workdir, net=net, host=1)
        main.wait_for_log("rendezvous listening", 10)
        for _ in range(3):
            t0 = time.monotonic()
            other = npr.Conn(net.connect(3, (net.addr(1), PORT)))
            mine = [npr.Conn(net.connect(2, (net.addr(1), PORT))) for _ in range(PER_SOURCE + 1)]
            try:
                first = mine[0].recv_msg(timeout=5 * mnp.SLOW, expect=("error",))
            except (npr.ProtocolError, npr.ConnectionClosed, TimeoutError) as e:
                first = {"code": repr(e)}
            # Still inside the deadline: the others are open (nothing to read yet).
            alive = [c for c in (other, mine[-1]) if not readable(c)]
            in_time = time.monotonic() - t0 < 0.8
            for c in (other, *mine):
                c.close()
            if not in_time:
                main.wait_for_log("no first message within", 5)
                continue
            check(first["code"] == npr.BUSY, f"host 2's oldest connection got {first}, expected busy (evicted)")
            check(len(alive) == 2, "host 3's connection or host 2's newest one was closed too")
            break
        else:
            raise mnp.Failure("3 bursts of connections each took over 0.8 s: the machine is too slow for this case")
        main.kill()


def readable(conn):
    import select
    return bool(select.select([conn.sock], [], [], 0)[0])


if __name__ == "__main__":
    runner.run()
