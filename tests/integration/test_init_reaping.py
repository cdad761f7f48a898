#!/usr/bin/python3
"""Init role: reaping of orphans and clean-up of what an exited payload leaves behind.

As PID 1 and, when not PID 1, as a child subreaper (set automatically), the agent reaps
every orphan re-parented to it; when the payload exits, it SIGTERMs whatever the payload
left running, SIGKILLs it after --grace, then exits with the payload's status."""

import time

from agenttest import (INIT, PYTHON, SCALE, Init, TempDir, case, check, check_eq, clean_env,
                       init_argv, is_alive, proc_stat, proc_state, read_pids, recorded,
                       run_cases, wait_file, wait_for, zombie_children)

# Payload: a subshell starts N `sleep 1` children and exits at once, so they become
# orphans (re-parented to the init) and die ~1 s later; some may die before their
# parent, as zombies, and are then re-parented as zombies. The payload itself waits for
# $GO (bounded) and exits 3.
ORPHANS_SH = r"""
( i=0; while [ $i -lt 100 ]; do sleep 1 & echo $! >> "$PIDS"; i=$((i+1)); done )
echo ready > "$READY"
i=0; while [ ! -e "$GO" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
exit 3
"""


@case(requires=["subreaper"])
def hundred_orphans_leave_no_zombie(mode):
    with TempDir() as d:
        env = clean_env(PIDS=d.path("pids"), READY=d.path("ready"), GO=d.path("go"))
        p = Init(mode, init_argv(["/bin/sh", "-c", ORPHANS_SH]), env=env)
        wait_file(d.path("ready"), 10, "the payload to orphan its children")
        pids = p.host_pids(read_pids(d.path("pids")))
        check(len(pids) > 50, "only %d of the 100 orphans could be found" % len(pids))
        # They must have been re-parented to the init (PID 1 / subreaper), not elsewhere.
        parents = {proc_stat(x)[1] for x in pids if is_alive(x)}
        check(parents, "orphans died before they could be checked (machine too slow?)")
        check_eq(parents, {p.pid}, "parents of the orphans (the init is %d)" % p.pid)
        wait_for(lambda: not any(is_alive(x) for x in pids), 10, "the orphans to exit")
        # Now every one of them must be reaped: no zombie child of the init remains.
        try:
            wait_for(lambda: not zombie_children(p.pid), 5, "the init to reap its zombies")
        except AssertionError:
            raise AssertionError("%d zombie children of the init left unreaped" %
                                 len(zombie_children(p.pid))) from None
        check(all(proc_state(x) is None for x in pids), "an orphan still exists")
        check(p.alive(), "init exited while its payload still runs")
        open(d.path("go"), "w").close()
        check_eq(p.wait(10), 3, "init's exit status (the payload's)")


@case(requires=["subreaper"])
def reaps_orphan_zombies_while_payload_waits_in_wait(mode):
    # The payload is blocked in wait() for its own child while grandchildren are orphaned
    # and die: the init must reap them without disturbing the payload's wait().
    code = r"""
import os, sys, time
pid = os.fork()
if pid == 0:
    for _ in range(20):
        if os.fork() == 0:
            time.sleep(0.3); os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
child = os.fork()
if child == 0:
    time.sleep(1.5); os._exit(7)
open(sys.argv[1], "w").write("x")
_, st = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(st) + 10)
"""
    with TempDir() as d:
        p = Init(mode, init_argv([PYTHON, "-S", "-c", code, d.path("ready")]))
        wait_file(d.path("ready"), 10, "payload start")
        time.sleep(0.8)
        check(not zombie_children(p.pid), "zombies left while the payload runs")
        check_eq(p.wait(10), 17, "exit status (payload saw its child's 7 and added 10)")


# Payload leaving two orphans behind and exiting 5: one in a new session (setsid), one
# double-forked in the payload's own session. Each records the signals it gets in
# $REC.<n> and exits on SIGTERM unless $IGNORE is set.
LEAVER = r"""
import os, signal, sys, time
def orphan(n, new_session):
    if os.fork() == 0:
        if os.fork() == 0:
            if new_session:
                os.setsid()
            rec = os.environ["REC"] + ".%d" % n
            def h(sig, frame):
                with open(rec, "a") as f:
                    f.write("%d\n" % sig)
                if not os.environ.get("IGNORE"):
                    os._exit(0)
            signal.signal(signal.SIGTERM, h)
            with open(os.environ["PIDS"], "a") as f:
                f.write("%d\n" % os.getpid())
            end = time.monotonic() + 120
            while time.monotonic() < end:
                time.sleep(0.05)
            os._exit(0)
        os._exit(0)
    os.wait()
orphan(1, True)
orphan(2, False)
end = time.monotonic() + 10
while len(open(os.environ["PIDS"]).read().split()) < 2 and time.monotonic() < end:
    time.sleep(0.01)
sys.exit(5)
"""


def _leaver(mode, d, grace, ignore):
    env = clean_env(REC=d.path("rec"), PIDS=d.path("pids"), IGNORE="1" if ignore else None)
    open(d.path("pids"), "w").close()
    p = Init(mode, init_argv([PYTHON, "-S", "-c", LEAVER], grace=grace), env=env)
    rc = p.wait(30)
    return p, rc, time.monotonic() - p.t0


@case(agent_only=True)
def orphans_left_by_payload_get_sigterm(mode):
    with TempDir() as d:
        p, rc, elapsed = _leaver(mode, d, grace=20, ignore=False)
        check_eq(rc, 5, "agent's exit status (the payload's)")
        pids = read_pids(d.path("pids"))
        check_eq(len(pids), 2, "orphans started")
        if mode == "sub":  # (in a PID namespace the kernel kills them with the agent anyway)
            for n, pid in enumerate(pids, 1):
                check(not is_alive(pid), "orphan %d (pid %d) still runs after the agent exited" % (n, pid))
        for n in (1, 2):
            check_eq(recorded(d.path("rec.%d" % n)), [15], "signals received by orphan %d" % n)
        check(elapsed < 10 * SCALE, "agent took %.1fs to exit although the orphans exited "
              "on SIGTERM at once (grace was 20s)" % elapsed)


@case(agent_only=True)
def orphans_ignoring_sigterm_are_killed_after_grace(mode):
    with TempDir() as d:
        p, rc, elapsed = _leaver(mode, d, grace=1, ignore=True)
        check_eq(rc, 5, "agent's exit status (the payload's)")
        pids = read_pids(d.path("pids"))
        check_eq(len(pids), 2, "orphans started")
        for n, pid in enumerate(pids, 1):
            check(mode == "pid1" or not is_alive(pid),
                  "orphan %d (pid %d) still runs after the agent exited" % (n, pid))
            check_eq(recorded(d.path("rec.%d" % (n))), [15], "signals recorded by orphan %d" % n)
        check(0.5 <= elapsed <= 5 * SCALE,
              "agent exited %.2fs after start; want about the 1s grace" % elapsed)


@case(requires=["subreaper"])
def payload_exit_status_with_running_orphan(mode):
    # Whatever the init does about leftovers, its status is the payload's, and it
    # exits (tini at once, the agent after terminating the orphan).
    args = {"grace": 1} if INIT == "batch-agent" else {}
    with TempDir() as d:
        p = Init(mode, init_argv(["/bin/sh", "-c", "sleep 1000 & echo $! > %s; exit 6"
                                  % d.path("pid")], **args))
        check_eq(p.wait(10), 6, "init's exit status")


if __name__ == "__main__":
    run_cases()
