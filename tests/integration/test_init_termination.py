#!/usr/bin/python3
"""Init role: termination (docker stop / Batch job termination).

On SIGTERM the agent forwards it, waits up to --grace seconds (default 25, decimals
allowed, BATCH_AGENT_GRACE twin, the flag wins), then SIGKILLs the payload's process
group; a payload that exits on SIGTERM makes the agent exit at once with its status.
Time bounds are loose (0.5x .. 5x, upper bounds scaled under a wrapper)."""

import signal
import time

from agenttest import (INIT, PYTHON, SCALE, Init, TempDir, case, check, check_eq, clean_env,
                       descendants, init_argv, is_alive, run_cases, wait_file)

# Payload: TERM handling chosen by argv[2] ("exit": exit 3 on TERM, "ignore": SIG_IGN);
# optionally (argv[3] == "child") starts a child in its process group that ignores TERM
# too; writes its pid(s) to argv[1] when ready; runs for at most 120 s.
PAYLOAD = r"""
import os, signal, sys, time
if sys.argv[2] == "exit":
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(3))
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = [os.getpid()]
if len(sys.argv) > 3 and os.fork() == 0:
    time.sleep(120); os._exit(0)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
end = time.monotonic() + 120
while time.monotonic() < end:
    time.sleep(0.05)
"""


def _start(mode, d, how, child=False, env=None, **kw):
    ready = d.path("ready")
    argv = [PYTHON, "-S", "-c", PAYLOAD, ready, how] + (["child"] if child else [])
    p = Init(mode, init_argv(argv, **kw), env=env or clean_env())
    wait_file(ready, 10, "the payload to set up its SIGTERM handling")
    return p


def _term_and_time(p, timeout=30):
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait(timeout)
    return rc, time.monotonic() - t0


@case()
def sigterm_payload_exits_promptly_with_its_status(mode):
    # With a long grace the agent still exits as soon as the payload does.
    kw = {"grace": 30} if INIT == "batch-agent" else {}
    with TempDir() as d:
        p = _start(mode, d, "exit", **kw)
        rc, dt = _term_and_time(p)
        check_eq(rc, 3, "status after SIGTERM (the payload's exit code)")
        check(dt < 5 * SCALE, "init took %.1fs to exit after its payload did" % dt)


def _check_killed_after(p, grace, lo=0.5, hi=5.0):
    rc, dt = _term_and_time(p, timeout=grace * hi + 10)
    check_eq(rc, 128 + signal.SIGKILL, "status of a payload that ignored SIGTERM")
    upper = grace * hi + (SCALE - 1)  # a wrapper (valgrind) slows the agent down
    check(grace * lo <= dt <= upper,
          "payload killed %.2fs after SIGTERM; grace was %gs (accepting %.2f..%.2fs)" % (
              dt, grace, grace * lo, upper))


@case(agent_only=True)
def ignored_sigterm_killed_after_grace(mode):
    with TempDir() as d:
        _check_killed_after(_start(mode, d, "ignore", grace=1), 1)


@case(agent_only=True)
def decimal_grace(mode):
    with TempDir() as d:
        _check_killed_after(_start(mode, d, "ignore", grace=0.5), 0.5)


@case(agent_only=True, modes=("sub",))
def grace_env_twin(mode):
    with TempDir() as d:
        _check_killed_after(_start(mode, d, "ignore", env=clean_env(BATCH_AGENT_GRACE="1")), 1)


@case(agent_only=True, modes=("sub",))
def grace_flag_wins_over_env(mode):
    with TempDir() as d:
        p = _start(mode, d, "ignore", env=clean_env(BATCH_AGENT_GRACE="60"), grace=0.5)
        _check_killed_after(p, 0.5)


@case(agent_only=True)
def group_killed_after_grace(mode):
    # Without -g only the payload gets the SIGTERM, but after the grace the whole process
    # group is SIGKILLed: the payload's TERM-ignoring child does not survive, and is not
    # left for a second grace period (killing only the payload would make the child a
    # leftover, SIGTERMed and SIGKILLed a grace later: ~2x the grace in all).
    with TempDir() as d:
        p = _start(mode, d, "ignore", child=True, grace=2)
        group = descendants(p.pid)
        check_eq(len(group), 2, "payload and its child running")
        _check_killed_after(p, 2, hi=1.5)
        if mode == "sub":
            for pid in group:
                check(not is_alive(pid), "process %d of the payload's group survived" % pid)


# What Batch allows: SIGKILL 30 s after its SIGTERM; the agent must be gone before.
BATCH_STOP_TIMEOUT = 30
DEFAULT_GRACE = 25


@case(agent_only=True, modes=("sub",))
def default_grace_fits_batchs_stop_timeout(mode):
    # No --grace: a payload that ignores SIGTERM gets the whole default grace (not a
    # second less), then SIGKILL, and the agent has exited well before Batch's SIGKILL
    # would come (scaled only on the late side, for a wrapper such as valgrind).
    with TempDir() as d:
        p = _start(mode, d, "ignore")
        rc, dt = _term_and_time(p, timeout=DEFAULT_GRACE + 10)
        check_eq(rc, 128 + signal.SIGKILL, "status of a payload that ignored SIGTERM")
        margin = BATCH_STOP_TIMEOUT - DEFAULT_GRACE
        check(DEFAULT_GRACE - 0.2 <= dt <= DEFAULT_GRACE + margin * SCALE,
              "agent exited %.2fs after SIGTERM; want the default grace, %ds, and under %gs" % (
                  dt, DEFAULT_GRACE, DEFAULT_GRACE + margin * SCALE))


if __name__ == "__main__":
    run_cases()
