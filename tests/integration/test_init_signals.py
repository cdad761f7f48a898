#!/usr/bin/python3
"""Init role: signal forwarding.

Every catchable signal sent to the agent reaches the payload (SIGCHLD never does); with
-g (or BATCH_AGENT_GROUP=1) the whole process group gets it, without -g only the payload;
the payload runs in its own process group; the agent sleeps while supervising and works
from / (the payload keeps its directory). --rewrite-signal FROM:TO (and
BATCH_AGENT_REWRITE_SIGNAL) forwards FROM as TO, or not at all for TO 0; a SIGTERM still
starts the grace period."""

import os
import signal
import time

from agenttest import (PYTHON, SCALE, Init, TempDir, case, check, check_eq, children, clean_env,
                       cmdline, forwarded_signals, init_argv, proc_stat,
                       read_pids, recorded, recorder_payload, run_cases, signame, wait_file,
                       wait_for)


def _start_recorder(mode, d, sigs, **kw):
    rec = d.path("rec")
    env = kw.pop("env", clean_env())
    p = Init(mode, init_argv(recorder_payload(rec, sigs), **kw), env=env)
    wait_file(rec + ".ready", 10, "the payload to install its handlers")
    return p, rec


@case()
def every_catchable_signal_is_forwarded(mode):
    sigs = forwarded_signals()
    with TempDir() as d:
        p, rec = _start_recorder(mode, d, sigs + [int(signal.SIGCHLD)])
        for i, sig in enumerate(sigs):
            p.signal(sig)
            wait_for(lambda: len(recorded(rec)) > i, 5,
                     "%s to reach the payload (so far: %s)" % (
                         signame(sig), [signame(s) for s in recorded(rec)]))
            check_eq(recorded(rec)[i], sig, "signal received by the payload")
            check(p.alive(), "init exited after %s although the payload handled it" % signame(sig))
        # SIGCHLD to the agent is its own business: never forwarded. USR1 after it acts
        # as a sentinel, so once USR1 arrives a forwarded CHLD would have arrived too.
        p.signal(signal.SIGCHLD)
        p.signal(signal.SIGUSR1)
        wait_for(lambda: len(recorded(rec)) > len(sigs), 5, "the sentinel SIGUSR1")
        time.sleep(0.1)
        got = recorded(rec)[len(sigs):]
        check_eq([signame(s) for s in got], ["SIGUSR1"], "signals after SIGCHLD+SIGUSR1")


@case()
def forwarded_signal_kills_payload_status(mode):
    # A payload with default dispositions dies of the forwarded signal; the agent
    # reports 128+N.
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGUSR2):
        with TempDir() as d:
            ready = d.path("ready")
            p = Init(mode, init_argv(["/bin/sh", "-c", "echo > %s; exec sleep 60" % ready]))
            wait_file(ready, 10, "payload start")
            # the payload must have exec'd sleep (otherwise the signal may hit sh)
            wait_for(lambda: any((cmdline(c) or [b""])[0].endswith(b"sleep")
                                 for c in children(p.pid)), 10, "payload to exec sleep")
            p.signal(sig)
            check_eq(p.wait(10), 128 + sig, "status after forwarding %s" % signame(sig))


# Payload for the group tests: a shell (the agent's direct child) that handles or
# ignores the signals, and a grandchild recorder in the same process group.
GROUP_SH = r"""
%(traps)s
"$@" &
gc=$!
echo $gc > "$GCPID"
while kill -0 $gc 2>/dev/null; do wait $gc; done
"""


def _group_run(mode, d, child_traps, group, env=None):
    gc_rec = d.path("gc")
    sh = GROUP_SH % {"traps": child_traps}
    argv = init_argv(["/bin/sh", "-c", sh, "sh"] + recorder_payload(
        gc_rec, [signal.SIGUSR1, signal.SIGTERM]), group=group)
    p = Init(mode, argv, env=env or clean_env(GCPID=d.path("gcpid"), CHILD_REC=d.path("child")))
    wait_file(gc_rec + ".ready", 10, "the grandchild to install its handlers")
    gc = read_pids(d.path("gcpid"))[0]
    return p, gc_rec, gc


@case(requires=["group"])
def group_reaches_grandchild_when_child_ignores(mode):
    with TempDir() as d:
        p, gc_rec, gc = _group_run(mode, d, "trap '' USR1 TERM", group=True)
        for i, sig in enumerate((signal.SIGUSR1, signal.SIGTERM)):
            p.signal(sig)
            wait_for(lambda: len(recorded(gc_rec)) > i, 5,
                     "%s to reach the grandchild with -g" % signame(sig))
            check_eq(recorded(gc_rec)[i], sig, "signal received by the grandchild")
        sh_pid = [c for c in children(p.pid) if c != gc]
        check(p.alive(), "init exited although its child ignores the signals")
        check(sh_pid and proc_stat(sh_pid[0])[0] not in ("Z", None),
              "the child (which ignores the signals) died")


@case(agent_only=True)
def group_env_twin(mode):
    with TempDir() as d:
        env = clean_env(GCPID=d.path("gcpid"), BATCH_AGENT_GROUP=1)
        p, gc_rec, gc = _group_run(mode, d, "trap '' USR1 TERM", group=False, env=env)
        p.signal(signal.SIGUSR1)
        wait_for(lambda: recorded(gc_rec), 5, "SIGUSR1 to reach the grandchild with BATCH_AGENT_GROUP=1")
        check_eq(recorded(gc_rec), [signal.SIGUSR1], "grandchild's signals")


@case(requires=["nogroup"])
def without_group_only_the_child_is_signalled(mode):
    with TempDir() as d:
        p, gc_rec, gc = _group_run(mode, d, "trap 'echo usr1 >> \"$CHILD_REC\"' USR1",
                                   group=False)
        p.signal(signal.SIGUSR1)
        wait_file(d.path("child"), 5, "SIGUSR1 to reach the direct child")
        time.sleep(0.3)
        check_eq(recorded(gc_rec), [], "signals received by the grandchild without -g")
        check(p.alive(), "init exited although the child handled the signal")


@case(requires=["setpgid"])
def payload_runs_in_its_own_process_group(mode):
    with TempDir() as d:
        p, rec = _start_recorder(mode, d, [])
        kids = children(p.pid)
        check_eq(len(kids), 1, "number of children of the init")
        st_child, st_init = proc_stat(kids[0]), proc_stat(p.pid)
        check_eq(st_child[2], kids[0], "payload's process group id (== its pid)")
        check(st_child[2] != st_init[2], "payload shares the init's process group")


# A payload that records each signal of argv[2:] in argv[1] and exits with 7 on the
# first of them, or with 9 on any other it handles (argv[3:]).
EXIT_ON_FIRST = r"""
import os, signal, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def h(sig, frame):
    os.write(out, b"%d\n" % sig)
    os._exit(7 if sig == int(sys.argv[2]) else 9)
for s in sys.argv[2:]:
    signal.signal(int(s), h)
with open(sys.argv[1] + ".ready", "w") as f:
    f.write("%d\n" % os.getpid())
time.sleep(120)
"""


@case(agent_only=True)
def rewrite_signal_term_to_usr1(mode):
    # dumb-init -r: what the payload gets is the rewritten signal, never the received one,
    # and the agent still exits with the payload's own status.
    with TempDir() as d:
        rec = d.path("rec")
        p = Init(mode, init_argv([PYTHON, "-S", "-c", EXIT_ON_FIRST, rec, str(int(signal.SIGUSR1)),
                                  str(int(signal.SIGTERM))], extra=["--rewrite-signal", "TERM:USR1"]))
        wait_file(rec + ".ready", 10, "the payload to install its handlers")
        p.signal(signal.SIGTERM)
        check_eq(p.wait(10), 7, "agent's status (7: the payload got SIGUSR1, 9: it got SIGTERM)")
        check_eq([signame(s) for s in recorded(rec)], ["SIGUSR1"], "signals the payload received")


@case(agent_only=True)
def rewritten_term_still_starts_the_grace_period(mode):
    # Batch's SIGKILL follows its SIGTERM whatever the payload was sent: a payload that
    # shrugs off the rewritten signal is SIGKILLed after --grace.
    with TempDir() as d:
        p, rec = _start_recorder(mode, d, [signal.SIGUSR1, signal.SIGTERM], grace=0.5,
                                 extra=["--rewrite-signal", "SIGTERM:10"])
        p.signal(signal.SIGTERM)
        check_eq(p.wait(10), 128 + signal.SIGKILL, "status after the grace period")
        check_eq([signame(s) for s in recorded(rec)], ["SIGUSR1"], "signals the payload received")


def _check_usr1_dropped(p, rec):
    # USR2 after USR1 is the sentinel: once it arrives, a forwarded USR1 (a lower number,
    # so delivered first) would have arrived too.
    p.signal(signal.SIGUSR1)
    p.signal(signal.SIGUSR2)
    wait_for(lambda: recorded(rec), 5, "the sentinel SIGUSR2")
    time.sleep(0.1)
    check_eq([signame(s) for s in recorded(rec)], ["SIGUSR2"], "signals the payload received")
    check(p.alive(), "init exited although the payload handled its signals")


@case(agent_only=True)
def rewrite_signal_to_0_drops_it(mode):
    with TempDir() as d:
        p, rec = _start_recorder(mode, d, [signal.SIGUSR1, signal.SIGUSR2],
                                 extra=["--rewrite-signal", "USR1:0"])
        _check_usr1_dropped(p, rec)


@case(agent_only=True, modes=("sub",))
def rewrite_signal_env_twin_takes_a_list(mode):
    with TempDir() as d:
        env = clean_env(BATCH_AGENT_REWRITE_SIGNAL="USR1:0,SIGHUP:%d" % signal.SIGWINCH)
        p, rec = _start_recorder(mode, d, [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGWINCH],
                                 env=env)
        _check_usr1_dropped(p, rec)
        p.signal(signal.SIGHUP)
        wait_for(lambda: len(recorded(rec)) > 1, 5, "SIGHUP, rewritten, to reach the payload")
        check_eq([signame(s) for s in recorded(rec)], ["SIGUSR2", "SIGWINCH"], "signals the payload received")


def _cwd(pid):
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return None


@case(agent_only=True)
def agent_leaves_its_directory_to_the_payload(mode):
    # dumb-init chdirs to /: an init that stays in the job's directory keeps its mount
    # busy. The payload keeps the directory it was started in.
    with TempDir() as d:
        rec = d.path("rec")
        p = Init(mode, init_argv(recorder_payload(rec, [])), cwd=d.dir)
        wait_file(rec + ".ready", 10, "the payload to start")
        payload = read_pids(rec + ".ready")[0] if mode == "sub" else children(p.pid)[0]
        check_eq(_cwd(payload), os.path.realpath(d.dir), "the payload's working directory")
        wait_for(lambda: _cwd(p.pid) == "/", 5, "the agent to change to / (it is in %s)" % _cwd(p.pid))
        check(p.alive(), "init exited")


@case()
def no_busy_loop_while_supervising(mode):
    with TempDir() as d:
        p, rec = _start_recorder(mode, d, [])
        tck = os.sysconf("SC_CLK_TCK")
        time.sleep(0.3)
        t1 = proc_stat(p.pid)[4]
        time.sleep(1.5)
        t2 = proc_stat(p.pid)[4]
        used = (t2 - t1) / tck
        allowed = min(0.05 * SCALE, 0.5)
        check(used <= allowed, "init used %.2fs CPU in 1.5s of supervising a sleeping "
              "payload (allowed %.2fs): busy loop?" % (used, allowed))
        check(p.alive(), "init exited")


if __name__ == "__main__":
    run_cases()
