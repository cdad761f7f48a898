#!/usr/bin/python3
"""Benchmark batch-agent's init role side by side with tini, tini-static, dumb-init and catatonit.

  /usr/bin/python3 bench/bench-init.py [--agent PATH] [--runs 2000] [--orphans 10000]
                                       [--reap-repeats 3] [--rss-repeats 5] [--joins 9]

Measures, in one run:
  start-up  wall time of `INIT -- /bin/true` (not PID 1; subreaper mode), median and p90
            over --runs runs per init, all inits interleaved round-robin so drift hits
            all alike; the plain /bin/true baseline is measured the same way.
  RSS       VmRSS (and RssAnon) of the init while it supervises `sleep`.
  reap      the init runs as PID 1 of a new PID namespace (unshare; falls back to
            subreaper mode); its payload starts a helper that forks --orphans children
            which _exit at once, and then exits itself, so they are re-parented to the init
            as zombies all in one go; time from the helper's exit until the init has no
            child left but the payload.
  join      a worker agent joining a rendezvous on loopback (a main agent, 2 nodes): the
            worker's CPU time (schedstat, batch-agent and the chain-loaded batch-agent-net
            together) and peak RSS (VmHWM) from its start until its payload runs;
            median of --joins joins.
Ratios are to tini (Debian's, dynamic). Goals for batch-agent: start-up <= 0.9x tini,
RSS while supervising <= 0.7x tini, a worker's join <= 2.5 ms of CPU and <= 2.5 MB of
RSS. Measure the installed (static) build: --agent build/release/agent/batch-agent, or
BATCH_AGENT_BIN. Standard library only.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

PY = "/usr/bin/python3"
TRUE = shutil.which("true") or "/bin/true"
SLEEP = shutil.which("sleep") or "/bin/sleep"


def init_prefixes(agent):
    inits = {}
    if agent:
        inits["batch-agent"] = [agent, "--role", "init", "--"]
    for name, argv in (("tini", ["/usr/bin/tini", "-s", "--"]),
                       ("tini-static", ["/usr/bin/tini-static", "-s", "--"]),
                       ("dumb-init", ["/usr/bin/dumb-init"]),
                       ("catatonit", ["/usr/bin/catatonit", "--"])):
        if os.access(argv[0], os.X_OK):
            inits[name] = argv
    return inits


def clean_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_BATCH_", "BATCH_AGENT_", "TINI_", "DUMB_INIT_"))}


DEVNULL_ERR = [(os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
               (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]


def time_one(argv, env):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=DEVNULL_ERR)
    _, st = os.waitpid(pid, 0)
    dt = time.perf_counter_ns() - t0
    if os.waitstatus_to_exitcode(st) != 0:
        raise RuntimeError("%s exited with %d" % (" ".join(argv), os.waitstatus_to_exitcode(st)))
    return dt


def bench_startup(inits, runs, env):
    cmds = {"/bin/true": [TRUE]}
    cmds.update({n: p + [TRUE] for n, p in inits.items()})
    times = {n: [] for n in cmds}
    names = list(cmds)
    for n in names:                       # warm-up: page cache, dynamic loader
        for _ in range(20):
            time_one(cmds[n], env)
    for i in range(runs):
        # rotate the order each round so no init always goes first
        k = i % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(time_one(cmds[n], env))
    out = {}
    for n, ts in times.items():
        ts.sort()
        out[n] = (statistics.median(ts) / 1e6, ts[int(len(ts) * 0.9)] / 1e6)
    return out


def children(pid):
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += f.read().split()
    except OSError:
        pass
    return out


def rss_of(pid):
    vals = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                vals[k] = int(v.split()[0])
    return vals


def bench_rss(inits, repeats, env):
    out = {}
    for n, prefix in inits.items():
        rss, anon = [], []
        for _ in range(repeats):
            p = subprocess.Popen(prefix + [SLEEP, "30"], env=env, stdin=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    kids = children(p.pid)
                    if kids and os.readlink("/proc/%s/exe" % kids[0]).endswith("sleep"):
                        break
                    time.sleep(0.005)
                else:
                    raise RuntimeError("%s: payload did not start" % n)
                time.sleep(0.2)           # let the init settle into its loop
                v = rss_of(p.pid)
                rss.append(v["VmRSS"])
                anon.append(v.get("RssAnon", 0))
            finally:
                kill_tree(p)
        out[n] = (statistics.median(rss), statistics.median(anon))
    return out


def kill_tree(p):
    for pid in [p.pid] + descendants(p.pid):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children(int(todo.pop())):
            out.append(int(c))
            todo.append(c)
    return out


# The payload: fork a helper; the helper forks N children that _exit at once (zombies
# of the helper), writes its CLOCK_MONOTONIC time and exits, so all N zombies are
# re-parented to the init together. Once the helper is reaped (all N re-parented by
# then), the payload says so and waits for the bench's go-file. The time measured runs
# from the helper's last instant to the init having no child but the payload; it thus
# includes the kernel's re-parenting at the helper's exit, the same for every init.
REAP_PAYLOAD = r"""
import os, sys, time
n, stamp, done = int(sys.argv[1]), sys.argv[2], sys.argv[3]
h = os.fork()
if h == 0:
    for _ in range(n):
        if os.fork() == 0:
            os._exit(0)
    t = time.monotonic()
    with open(stamp + ".tmp", "w") as f:
        f.write(repr(t))
    os.rename(stamp + ".tmp", stamp)
    os._exit(0)
os.waitpid(h, 0)
open(stamp + ".reparented", "w").close()   # the helper is gone: all N are the init's
end = time.monotonic() + 120
while not os.path.exists(done) and time.monotonic() < end:
    time.sleep(0.01)
"""


def pidns_ok():
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def bench_reap(inits, n, repeats, env, pid1):
    out = {}
    for name, prefix in inits.items():
        if not pid1 and name == "dumb-init":
            out[name] = None              # not a subreaper: cannot be measured outside PID 1
            continue
        ts = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="ba-bench-") as d:
                stamp, done = os.path.join(d, "stamp"), os.path.join(d, "done")
                argv = prefix + [PY, "-S", "-c", REAP_PAYLOAD, str(n), stamp, done]
                if pid1:
                    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"] + argv
                p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
                try:
                    deadline = time.monotonic() + 120
                    init = p.pid
                    if pid1:
                        while not children(p.pid) and time.monotonic() < deadline:
                            time.sleep(0.001)
                        init = int(children(p.pid)[0])
                    while (not os.path.exists(stamp + ".reparented")
                           and time.monotonic() < deadline):
                        time.sleep(0.0005)
                    # done when the init has only the payload left as a child
                    while len(children(init)) > 1 and time.monotonic() < deadline:
                        time.sleep(0.0005)
                    t_end = time.monotonic()
                    if time.monotonic() >= deadline:
                        raise RuntimeError("%s: reap benchmark timed out" % name)
                    with open(stamp) as f:
                        ts.append((t_end - float(f.read())) * 1e3)
                    open(done, "w").close()
                    p.wait(timeout=30)
                finally:
                    kill_tree(p)
        out[name] = statistics.median(ts)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def schedstat_ns(pid):
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0])


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def listening(port):
    """A TCP socket in LISTEN state on port (/proc/net/tcp: no connection to the main,
    which would count it as a peer)."""
    with open("/proc/net/tcp") as f:
        return any(fields[1].endswith(":%04X" % port) and fields[3] == "0A"
                   for fields in (line.split() for line in list(f)[1:]))


def join_once(agent, env):
    """(CPU ms, peak RSS kB) of one worker agent, from its start until its payload runs."""
    job, port = str(uuid.uuid4()), free_port()
    base = dict(env, AWS_BATCH_JOB_NUM_NODES="2", AWS_BATCH_JOB_MAIN_NODE_INDEX="0",
                AWS_BATCH_JOB_ATTEMPT="1", BATCH_AGENT_COOKIE="b" * 64)
    common = ["--port", str(port), "--connect-timeout", "30", "--wait-timeout", "30", "--"]
    main = subprocess.Popen([agent] + common + [SLEEP, "60"], stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(base, AWS_BATCH_JOB_ID=job + "#0", AWS_BATCH_JOB_NODE_INDEX="0"))
    worker = None
    try:
        # The worker starts once the main listens, so it connects at its first attempt.
        deadline = time.monotonic() + 10
        while not listening(port):
            if time.monotonic() > deadline or main.poll() is not None:
                raise RuntimeError("the main agent does not listen on %d" % port)
            time.sleep(0.005)
        worker = subprocess.Popen([agent] + common + [SLEEP, "60"], stdin=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True,
                                  env=dict(base, AWS_BATCH_JOB_ID=job + "#1", AWS_BATCH_JOB_NODE_INDEX="1",
                                           AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS="127.0.0.1"))
        deadline = time.monotonic() + 10
        while not any(os.readlink("/proc/%s/exe" % k).endswith("sleep") for k in children(worker.pid)):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker's payload did not start")
            time.sleep(0.001)
        return schedstat_ns(worker.pid) / 1e6, hwm_kb(worker.pid)
    finally:
        for p in (worker, main):
            if p is not None:
                kill_tree(p)


def bench_join(agent, repeats, env):
    samples = [join_once(agent, env) for _ in range(repeats)]
    return statistics.median(c for c, _ in samples), statistics.median(r for _, r in samples)


def fmt_ratio(v, ref):
    if v is None or not ref:
        return "n/a"
    return "%.2fx" % (v / ref)


def met(ok):
    return "met" if ok else "NOT MET"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", default=os.environ.get("BATCH_AGENT_BIN"),
                    help="batch-agent binary (default: $BATCH_AGENT_BIN)")
    ap.add_argument("--runs", type=int, default=2000, help="start-up runs per init")
    ap.add_argument("--orphans", type=int, default=10000, help="zombies to reap")
    ap.add_argument("--reap-repeats", type=int, default=3)
    ap.add_argument("--rss-repeats", type=int, default=5)
    ap.add_argument("--joins", type=int, default=9, help="worker joins to measure")
    a = ap.parse_args()

    agent = a.agent
    if agent and not os.access(agent, os.X_OK):
        sys.exit("agent %s is not executable" % agent)
    if not agent:
        print("note: no --agent / BATCH_AGENT_BIN: measuring the reference inits only")
    inits = init_prefixes(agent)
    if "tini" not in inits:
        sys.exit("tini (/usr/bin/tini) is needed as the reference")
    env = clean_env()
    pid1 = pidns_ok()

    print("start-up: %d runs each, interleaved ..." % a.runs, flush=True)
    su = bench_startup(inits, a.runs, env)
    print("RSS: %d samples each ..." % a.rss_repeats, flush=True)
    rss = bench_rss(inits, a.rss_repeats, env)
    print("reap: %d orphaned zombies, %d repeats, %s ..." % (
        a.orphans, a.reap_repeats, "as PID 1 (unshare)" if pid1 else "as subreaper"), flush=True)
    reap = bench_reap(inits, a.orphans, a.reap_repeats, env, pid1)
    join = None
    if agent:
        print("join: %d workers joining a rendezvous on loopback ..." % a.joins, flush=True)
        join = bench_join(agent, a.joins, env)

    base = su["/bin/true"][0]
    t_su, t_rss, t_reap = su["tini"][0], rss["tini"][0], reap.get("tini")
    print()
    print("baseline /bin/true: median %.3f ms, p90 %.3f ms" % su["/bin/true"])
    hdr = "%-12s %9s %9s %9s %8s %8s | %8s %8s %7s | %9s %7s" % (
        "init", "start ms", "p90 ms", "over ms", "x tini", "over x", "RSS kB", "anon kB",
        "x tini", "reap ms", "x tini")
    print(hdr)
    print("-" * len(hdr))
    for n in inits:
        med, p90 = su[n]
        over, over_tini = med - base, t_su - base
        print("%-12s %9.3f %9.3f %9.3f %8s %8s | %8d %8d %7s | %9s %7s" % (
            n, med, p90, over, fmt_ratio(med, t_su),
            fmt_ratio(over, over_tini) if over_tini > 0 else "n/a",
            rss[n][0], rss[n][1], fmt_ratio(rss[n][0], t_rss),
            "%.1f" % reap[n] if reap.get(n) is not None else "n/a",
            fmt_ratio(reap.get(n), t_reap)))
    print()
    print("ratio columns: start = total wall time of `INIT -- /bin/true`; over = the same"
          " minus the /bin/true baseline")
    if "batch-agent" in inits:
        r_su, r_rss = su["batch-agent"][0] / t_su, rss["batch-agent"][0] / t_rss
        print("goals for batch-agent:")
        print("  start-up %.2fx tini (goal <= 0.9x): %s" % (r_su, met(r_su <= 0.9)))
        print("  RSS      %.2fx tini (goal <= 0.7x): %s" % (r_rss, met(r_rss <= 0.7)))
        cpu, hwm = join
        print("  worker join: %.2f ms CPU (goal <= 2.5 ms): %s; peak RSS %.2f MB (goal <= 2.5 MB): %s" % (
            cpu, met(cpu <= 2.5), hwm / 1000.0, met(hwm / 1000.0 <= 2.5)))
    else:
        print("goals (batch-agent): start-up <= 0.9x tini, RSS <= 0.7x tini, join <= 2.5 ms CPU and 2.5 MB")


if __name__ == "__main__":
    main()
