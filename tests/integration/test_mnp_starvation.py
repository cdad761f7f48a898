"""The rendezvous under CPU starvation (issue 9): 2,000 simulated workers (loadgen, one
process, real handshakes) against one real main agent on loopback while two CPU-bound
processes compete for the machine's cores. Every worker must register, the main payload
must start with all 2,001 nodes in its hostfile, the workers must be shut down and the
main must exit 0, and nothing may be left running.

"Compete": the two hogs run at the default priority, the main agent's scheduling group
at nice 19 (less under BATCH_AGENT_TIMEOUT_SCALE, see MAIN_NICE) (its session's autogroup, which is what the scheduler weighs against other
sessions; the process itself where autogroups are off), so that the hogs take most of
the CPU, as other work on a busy main node does. At equal priority two hogs on two cores
leave the main half a core, and it needs only a few hundred milliseconds of CPU for 2,000
handshakes: nothing would be starved. Measured here: a 0.2 s CPU burst in such a group
takes 18 s of wall time against the two hogs. The workers dial once the main listens, all
at once, as issue 9 saw them.

loadgen's workers answer every message at once and redial a refusal for load (error
"busy" or "timeout", or no manager hello). Besides every worker registering, the test
wants no worker refused with "timeout": a manager that admits only what it can serve and
measures deadlines from each peer's last progress never times out a peer that keeps up
(a timeout throws away the proofs both sides computed, which a starved main can least
afford).

Under a wrapper (BATCH_AGENT_WRAPPER: valgrind, the suite's last stage) the main runs
tens of times slower by itself: then 200 workers, the main is not reniced, and timeouts
are reported but not counted against it (valgrind, not the rendezvous, sets the pace).
That still sends a burst of handshakes through the main's admission, under valgrind's
checks, in about 5 s; 2,000 would take minutes and test valgrind's speed.

Environment (set by ctest): BATCH_AGENT_BIN, LOADGEN_BIN, BATCH_AGENT_WRAPPER; optional
STARVATION_WORKERS (the number of simulated workers)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import agenttest  # noqa: E402
import mnp  # noqa: E402
from agenttest import SCALE, proc_stat, wait_for  # noqa: E402
from mnp import WRAPPER, Agent, Job, check, read  # noqa: E402

# STARVATION_WORKERS overrides the count, e.g. to look for where a build gives way.
WORKERS = int(os.environ.get("STARVATION_WORKERS") or (200 if WRAPPER else 2000))
# A scale above 1 says the agent is that much slower (sanitizers, a slow machine): the
# main then needs that much more CPU for the same rendezvous, and gets as much more
# weight against the hogs (each nice step is a factor of about 1.25), so that the test
# measures the same starvation rather than a slower build's collapse.
MAIN_NICE = 0 if WRAPPER else max(0, 19 - round(math.log(max(SCALE, 1.0)) / math.log(1.25)))
LOADGEN = os.environ.get("LOADGEN_BIN") or os.path.join(mnp.SOURCE_DIR, "build", "release", "tests",
                                                         "integration", "loadgen")
# Wall-clock budget of the case, times the scale: it bounds the CPU hogs' lives, the
# main's --wait-timeout and loadgen's --deadline. A passing run takes 15 to 50 s here
# (protocol v2's X25519 doubled the main's CPU per handshake, and so the starved wall
# time); the budget leaves room for a CI machine that runs other work besides.
BUDGET_S = 200

runner = mnp.Runner()

# A CPU-bound process that ends by itself after argv[1] seconds, whatever happens to us.
HOG = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def lower_priority():
    """In the main agent's child, after setsid (a new autogroup): nice 19 for the
    autogroup when autogroups are on (kernel.sched_autogroup_enabled), else for the
    process."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            autogroups = f.read().strip() == "1"
        if autogroups:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(MAIN_NICE))
    except OSError:
        autogroups = False
    if not autogroups:
        os.nice(MAIN_NICE)


def group_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


class Hogs:
    """Two CPU-bound processes, neither pinned nor reniced, each in a session of its own;
    they end by themselves after the budget, and are killed on the way out."""

    def __init__(self, seconds):
        self.procs = [subprocess.Popen([agenttest.PYTHON, "-S", "-c", HOG, str(seconds)],
                                       stdin=subprocess.DEVNULL, start_new_session=True)
                      for _ in range(2)]
        # They compete once they have taken CPU time, not merely once forked.
        wait_for(lambda: all((proc_stat(p.pid) or (0,) * 5)[4] > 0 for p in self.procs), 10, "the CPU hogs to run")

    def still_burning(self):
        return all(p.poll() is None for p in self.procs)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def describe(summary):
    """What loadgen saw, in one line for a failure message."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary["redial_reasons"].items())) or "none"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(summary["rejected"].items())) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(summary["errors"].items())) or "none"
    return (f"{summary['registered']} of {summary['workers']} workers registered, {summary['completed']} shut down "
            f"cleanly; rejected by code: {rejected}; errors: {errors}; {summary['redials']} redials "
            f"({reasons}); loadgen exit {summary['exit_code']}"
            + (", its --deadline passed" if summary["deadline_passed"] else ""))


def run_loadgen(job, port, workdir):
    """loadgen to its end (bounded by its own --deadline and ours): its JSON summary."""
    out_path, err_path = os.path.join(workdir, "loadgen.json"), os.path.join(workdir, "loadgen.stderr")
    deadline_s = BUDGET_S * SCALE * 0.75
    argv = [LOADGEN, "--workers", str(WORKERS), "--manager", f"127.0.0.1:{port}", "--job", job.uuid,
            "--num-nodes", str(job.num_nodes), "--connect-timeout", str(deadline_s * 0.8),
            "--deadline", str(deadline_s)]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, env={"BATCH_AGENT_COOKIE": job.cookie}, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=deadline_s + 30 * SCALE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise mnp.Failure(f"loadgen outlived its own --deadline {deadline_s:.0f} s") from None
    text = read(out_path)
    try:
        summary = json.loads(text)
    except ValueError:
        raise mnp.Failure(f"loadgen exited {rc} without a JSON summary: {text!r}; stderr: {read(err_path)!r}") from None
    check(summary["exit_code"] == rc, f"loadgen exited {rc} but its summary says {summary['exit_code']}")
    return summary, proc.pid


def tail(text, lines=15):
    return "\n".join(text.splitlines()[-lines:])


@runner.case
def every_worker_registers_while_two_processes_burn_the_cpus(workdir):
    for exe in (mnp.BIN, LOADGEN):
        if not os.access(exe, os.X_OK):
            raise mnp.Failure(f"{exe} is not an executable (set BATCH_AGENT_BIN / LOADGEN_BIN, or build)")
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    port, job = mnp.free_port(), Job(WORKERS + 1)
    hogs = Hogs(BUDGET_S * SCALE)
    t0 = time.time()
    try:
        # The main payload records its start and hostfile and exits at once: the main
        # then tells every worker to shut down and waits for their exit reports.
        main = Agent("main", ["--role", "main", "--port", str(port), "--heartbeat", "5", "--grace", "10",
                              "--wait-timeout", str(int(BUDGET_S * SCALE * 0.6)), "--log-level", "warn", "--",
                              *mnp.main_payload(out)], job.env(0), workdir,
                     preexec_fn=lower_priority if MAIN_NICE else None)
        # All workers at once on a listening main: dialing earlier, their backoff on
        # refused connects would spread them out and spare the main the burst.
        wait_for(lambda: mnp.listening(port) or not main.running(), 30, "the main agent to listen")
        check(main.running(), f"the main agent exited {main.proc.returncode} before listening:\n{main.stderr()}")
        summary, loadgen_pgid = run_loadgen(job, port, workdir)
        burning = hogs.still_burning()
        main_rc = main.wait(30 * SCALE / mnp.SLOW)
    finally:
        hogs.stop()
    what = describe(summary)
    check(burning, f"a CPU hog ended before the workers did: the run was not starved ({what})")
    check(summary["registered"] == WORKERS,
          f"not every worker registered under starvation: {what}; main exit {main_rc}; main stderr:\n"
          f"{tail(main.stderr())}")
    check(os.path.exists(os.path.join(out, "main.started")), f"the main payload never started: {what}")
    hosts = read(os.path.join(out, "hostfile")).splitlines()
    check(len(hosts) == WORKERS + 1 and all(h.startswith("127.") for h in hosts),
          f"the main payload's hostfile has {len(hosts)} lines, want {WORKERS + 1} loopback addresses")
    check(summary["completed"] == WORKERS and not summary["errors"] and not summary["rejected"],
          f"not every worker was shut down cleanly: {what}")
    timeouts = summary["redial_reasons"].get("timeout", 0)
    check(WRAPPER or timeouts == 0,
          f"the main refused {timeouts} handshakes with \"timeout\" although loadgen's workers answer every "
          f"message at once: its deadlines do not follow the peers' progress, or it admits more handshakes "
          f"than it can serve ({what})")
    check(main_rc == 0, f"the main agent exited {main_rc}, want 0 ({what}); stderr:\n{tail(main.stderr())}")
    # Nothing left running: the main's session (payload included) and loadgen's.
    wait_for(lambda: group_gone(main.pid) and group_gone(loadgen_pgid), 10, "the main's and loadgen's sessions to end")
    print(f"     {what}; the main payload started {float(read(os.path.join(out, 'main.started'))) - t0:.2f} s "
          f"after the main agent", flush=True)


if __name__ == "__main__":
    runner.run()
