"""Worker pools on loopback (issue 11): `batch-agent --role main --workers N` outside
MNP, its workers (array children and separate jobs) connecting with --manager, the
membership PROGRAM sees, who is refused, --min-workers and --wait-timeout, live
membership (late, lost, draining workers, --notify), and bad settings. The Batch API
side (--submit-workers, leftovers) is test_pool_batch.py."""

import json
import os
import signal
import socket
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
from mnp import Agent, check, expect_exit, read, wait_for_file, wait_s  # noqa: E402
import nativeproto as np  # noqa: E402

runner = mnp.Runner()
BASE = ["--heartbeat", "0.5", "--grace", "5"]


def base_env(cookie, extra=None):
    env = {k: v for k, v in os.environ.items() if k in mnp.PASSED_THROUGH}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["BATCH_AGENT_COOKIE"] = cookie
    env.update(extra or {})
    return env


def array_env(cookie, array, index):
    """An array child's AWS_BATCH_* environment, as Batch sets it."""
    return base_env(cookie, {"AWS_BATCH_JOB_ID": f"{array}:{index}", "AWS_BATCH_JOB_ARRAY_INDEX": str(index),
                             "AWS_BATCH_JOB_ATTEMPT": "1", "AWS_BATCH_JQ_NAME": "pool-queue",
                             "AWS_BATCH_CE_NAME": "pool-ce"})


def program(out, status=0, gate=False):
    """PROGRAM: records its environment, hostfile and membership file; with gate, waits
    for $out/go; on SIGUSR1 (--notify) copies the membership file to $out/members.N."""
    script = (
        'o="$1"; n=0; trap \'n=$((n+1)); cp "$BATCH_AGENT_MEMBERS" "$o/members.$n"; echo $n > "$o/notified.$n"\' USR1; '
        'cp "$BATCH_AGENT_HOSTFILE" "$o/hostfile"; printf "%s" "$BATCH_AGENT_NODES" > "$o/nodes"; '
        'cp "$BATCH_AGENT_MEMBERS" "$o/members.json"; env > "$o/env"; echo 1 > "$o/started"; '
        + ('while [ ! -e "$o/go" ]; do sleep 0.05; done; ' if gate else '')
        + f'exit {status}'
    )
    return ["/bin/sh", "-c", script, "program", out]


def start_manager(workdir, port, cookie, workers, args=(), prog=None, out=None, env=None):
    return Agent("manager", ["--role", "main", "--workers", str(workers), "--port", str(port), *BASE, *args, "--",
                             *(prog or program(out))], env or base_env(cookie), workdir)


def start_worker(workdir, port, env, name, addr=None, payload=("sleep", "60"), args=()):
    extra = ["--advertise-addr", addr] if addr else []
    return Agent(name, ["--manager", f"127.0.0.1:{port}", *BASE, *extra, *args, "--", *payload], env, workdir)


def outdir(workdir):
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    return out


class PyWorker:
    """A worker written with the protocol library, so that it can send draining, or
    fall silent, at will. Heartbeats every interval/3 from a thread until silenced."""

    def __init__(self, port, cookie, register, interval_s):
        self.conn = np.Conn(socket.create_connection(("127.0.0.1", port), timeout=10 * mnp.SLOW))
        np.worker_handshake(self.conn, cookie, register, timeout=10 * mnp.SLOW)
        self.lock, self.quiet = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._beat, args=(interval_s / 3,), daemon=True)
        self.thread.start()

    def _beat(self, every):
        while not self.quiet.wait(every):
            self.send(np.heartbeat())

    def send(self, msg):
        with self.lock:
            self.conn.send(msg)

    def silence(self):
        self.quiet.set()
        self.thread.join()

    def close(self):
        self.silence()
        self.conn.close()


def members(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@runner.case
def array_of_four(workdir):
    """Four array children, started out of order: PROGRAM sees them in array order in
    the hostfile, BATCH_AGENT_NODES and the membership file; when PROGRAM exits every
    worker is told to stop, and the pool's files go with the manager."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    manager = start_manager(workdir, port, cookie, 4, prog=program(out, gate=True))
    workers = [start_worker(workdir, port, array_env(cookie, array, i), f"w{i}", addr=f"127.0.1.{i + 1}")
               for i in (3, 1, 0, 2)]
    wait_for_file(os.path.join(out, "started"), 30)
    addrs = [f"127.0.1.{i + 1}" for i in range(4)]
    check(read(os.path.join(out, "hostfile")).splitlines() == addrs, read(os.path.join(out, "hostfile")))
    check(read(os.path.join(out, "nodes")) == ",".join(addrs), read(os.path.join(out, "nodes")))
    doc = members(os.path.join(out, "members.json"))
    check(doc["workers_wanted"] == 4 and doc["joined"] == 4 and doc["generation"] == 1, doc)
    check([m["job_id"] for m in doc["members"]] == [f"{array}:{i}" for i in range(4)], doc)
    for i, m in enumerate(doc["members"]):
        check(m["array_index"] == i and m["address"] == addrs[i] and m["state"] == "joined", m)
        check(isinstance(m["cpus"], (int, float)) and m["cpus"] > 0 and m["hostname"], m)
        check(m["exit_code"] is None and m["exit_signal"] is None, m)
    env = dict(line.split("=", 1) for line in read(os.path.join(out, "env")).splitlines() if "=" in line)
    check("BATCH_AGENT_COOKIE" not in env and cookie not in read(os.path.join(out, "env")), "PROGRAM sees the cookie")
    open(os.path.join(out, "go"), "w").close()
    expect_exit(manager, 0, 30)
    for w in workers:
        expect_exit(w, 0, 15)  # stopped by the manager: a clean end
    err = manager.stderr()
    check("telling 4 workers to shut down" in err, err)
    check("sent no exit report" not in err, err)
    check(not os.path.exists(env["BATCH_AGENT_MEMBERS"]) and not os.path.exists(os.path.dirname(env["BATCH_AGENT_MEMBERS"])),
          "the pool's directory outlived the manager")


@runner.case
def hostfile_format_gives_slots(workdir):
    """--hostfile-format openmpi: each worker's line carries the CPUs it registered
    (its CPU affinity here), in array order; mpich's form is ADDR:N."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    cpus = sorted(os.sched_getaffinity(0))
    pins = [{cpus[0]}, set(cpus[:2])]
    manager = start_manager(workdir, port, cookie, 2, out=out, args=["--hostfile-format", "openmpi"])
    workers = []
    for i in (1, 0):
        w = Agent(f"w{i}", ["--manager", f"127.0.0.1:{port}", *BASE, "--advertise-addr", f"127.0.3.{i + 1}", "--",
                            "sleep", "60"], array_env(cookie, array, i), workdir,
                  preexec_fn=lambda pin=pins[i]: os.sched_setaffinity(0, pin))
        workers.append(w)
    expect_exit(manager, 0, 30)
    for w in workers:
        expect_exit(w, 0, 15)
    lines = read(os.path.join(out, "hostfile")).splitlines()
    check(lines == [f"127.0.3.{i + 1} slots={len(pins[i])}" for i in (0, 1)], lines)


@runner.case
def separate_jobs_in_arrival_order(workdir):
    """Workers that are not array children are identified by job id, listed after the
    array children in the order they joined."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    manager = start_manager(workdir, port, cookie, 3, out=out)
    first = start_worker(workdir, port, base_env(cookie, {"AWS_BATCH_JOB_ID": "job-b"}), "b", addr="127.0.2.2")
    manager.wait_for_log("worker job-b joined", 20)
    second = start_worker(workdir, port, base_env(cookie, {"AWS_BATCH_JOB_ID": "job-a"}), "a", addr="127.0.2.1")
    manager.wait_for_log("worker job-a joined", 20)
    child = start_worker(workdir, port, array_env(cookie, array, 5), "c", addr="127.0.2.9")
    expect_exit(manager, 0, 30)
    for w in (first, second, child):
        expect_exit(w, 0, 15)
    check(read(os.path.join(out, "hostfile")).splitlines() == ["127.0.2.9", "127.0.2.2", "127.0.2.1"],
          read(os.path.join(out, "hostfile")))
    doc = members(os.path.join(out, "members.json"))
    check([(m["job_id"], m["array_index"]) for m in doc["members"]] == [(f"{array}:5", 5), ("job-b", None), ("job-a", None)],
          doc)


@runner.case
def duplicate_foreign_and_surplus_workers_are_refused(workdir):
    """A second worker for one array index (duplicate_node), a child of another array
    (job_mismatch), an array child whose id does not carry its index, and a worker
    beyond N (pool_full) are each refused with their reject code and exit 77."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    manager = start_manager(workdir, port, cookie, 2, args=["--wait-timeout", "60"], prog=program(out, gate=True),
                            out=out)
    w0 = start_worker(workdir, port, array_env(cookie, array, 0), "w0")
    manager.wait_for_log(f"worker {array}:0 joined", 20)
    dup = start_worker(workdir, port, array_env(cookie, array, 0), "dup")
    expect_exit(dup, 77, 20)
    check("duplicate_node" in dup.stderr(), dup.stderr())
    foreign = start_worker(workdir, port, array_env(cookie, "other-array", 1), "foreign")
    expect_exit(foreign, 77, 20)
    check("job_mismatch" in foreign.stderr() and "children of " + array in foreign.stderr(), foreign.stderr())
    env = array_env(cookie, array, 1)
    env["AWS_BATCH_JOB_ID"] = f"{array}:7"
    liar = start_worker(workdir, port, env, "liar")
    expect_exit(liar, 77, 20)
    check("job_mismatch" in liar.stderr(), liar.stderr())
    w1 = start_worker(workdir, port, array_env(cookie, array, 1), "w1")
    wait_for_file(os.path.join(out, "started"), 30)
    surplus = start_worker(workdir, port, base_env(cookie, {"AWS_BATCH_JOB_ID": "job-x"}), "surplus")
    expect_exit(surplus, 77, 20)
    check("pool_full" in surplus.stderr(), surplus.stderr())
    open(os.path.join(out, "go"), "w").close()
    expect_exit(manager, 0, 30)
    for w in (w0, w1):
        expect_exit(w, 0, 15)


@runner.case
def a_later_attempt_replaces_its_predecessor(workdir):
    """Batch retries a child under its own id with a higher attempt: the new attempt
    takes the place of a connection the manager still holds (a dead container's), while
    a second connection of the same attempt is a duplicate."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    beat = "%.3g" % (0.5 * mnp.SLOW)
    manager = start_manager(workdir, port, cookie, 2, args=["--heartbeat", beat], prog=program(out, gate=True))
    manager.wait_for_log("pool manager listening", 20)

    def register(attempt):
        return np.register_msg(f"{array}:0", "py-worker", "127.0.5.1", attempt=attempt, array_index=0)

    first = PyWorker(port, cookie, register(1), float(beat))
    second = PyWorker(port, cookie, register(2), float(beat))
    manager.wait_for_log(f"worker {array}:0: attempt 2 replaces attempt 1", 20)
    try:
        PyWorker(port, cookie, register(2), float(beat))
        raise mnp.Failure("a second connection of attempt 2 was admitted")
    except np.ProtocolError as e:
        check(e.code == "duplicate_node", f"refused with {e.code}")
    with first.lock:
        try:
            msg = first.conn.recv_msg(timeout=10 * mnp.SLOW)
            raise mnp.Failure(f"the replaced connection got {msg}")
        except (np.ConnectionClosed, OSError, np.ProtocolError):
            pass
    w1 = start_worker(workdir, port, array_env(cookie, array, 1), "w1", args=["--heartbeat", beat])
    wait_for_file(os.path.join(out, "started"), 30)
    doc = members(os.path.join(out, "members.json"))
    check(doc["joined"] == 2 and doc["members"][0]["address"] == "127.0.5.1", doc)
    first.silence()
    second.close()
    open(os.path.join(out, "go"), "w").close()
    expect_exit(manager, 0, 30)
    expect_exit(w1, 0, 15)


@runner.case
def min_workers_start_after_the_timeout(workdir):
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    manager = start_manager(workdir, port, cookie, 3, args=["--wait-timeout", wait_s(3), "--min-workers", "2"], out=out)
    workers = [start_worker(workdir, port, array_env(cookie, array, i), f"w{i}") for i in (0, 2)]
    expect_exit(manager, 0, 40)
    for w in workers:
        expect_exit(w, 0, 15)
    err = manager.stderr()
    check(f"starting with 2 of 3 workers after {wait_s(3)} s (--min-workers 2)" in err, err)
    check(members(os.path.join(out, "members.json"))["joined"] == 2, read(os.path.join(out, "members.json")))


@runner.case
def too_few_workers_is_69(workdir):
    """Fewer than --min-workers (default: all) at --wait-timeout: 69, saying how many,
    PROGRAM never starts, and the worker that came is told to shut down."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    manager = start_manager(workdir, port, cookie, 3, args=["--wait-timeout", wait_s(2)], out=out)
    w = start_worker(workdir, port, array_env(cookie, array, 1), "w1")
    expect_exit(manager, 69, 40)
    err = manager.stderr()
    check(f"1 of 3 workers joined within {wait_s(2)} s, 3 needed" in err, err)
    check(not os.path.exists(os.path.join(out, "started")), "PROGRAM started")
    rc = w.wait(20)
    check(rc in (0, 69, 143), f"worker exited {rc}:\n{w.stderr()}")


@runner.case
def live_membership_is_published_and_notified(workdir):
    """While PROGRAM runs: a late worker joins, one drains (a Spot notice) and one is
    lost (silent for three heartbeats). Each change rewrites the membership file
    (a new generation) and sends --notify to PROGRAM; the hostfile keeps its
    start-time meaning."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    beat = "%.3g" % (0.3 * mnp.SLOW)
    manager = start_manager(workdir, port, cookie, 3,
                            args=["--wait-timeout", wait_s(3), "--min-workers", "2", "--notify", "USR1",
                                  "--heartbeat", beat],
                            prog=program(out, gate=True))
    w0 = start_worker(workdir, port, array_env(cookie, array, 0), "w0", args=["--heartbeat", beat])
    manager.wait_for_log("pool manager listening", 20)
    py = PyWorker(port, cookie, np.register_msg(f"{array}:1", "py-worker", "127.0.3.2", attempt=1, array_index=1,
                                                cpus=1, memory_limit_bytes=1 << 30), float(beat))
    wait_for_file(os.path.join(out, "started"), 30)
    check(members(os.path.join(out, "members.json"))["joined"] == 2, read(os.path.join(out, "members.json")))
    hostfile = read(os.path.join(out, "hostfile"))
    late = start_worker(workdir, port, array_env(cookie, array, 2), "w2", addr="127.0.3.3", args=["--heartbeat", beat])
    wait_for_file(os.path.join(out, "notified.1"), 20)
    doc = members(os.path.join(out, "members.1"))
    check(doc["joined"] == 3 and doc["generation"] >= 2, doc)
    py.send(np.draining("spot-interruption", "2026-12-01T12:00:00Z"))
    manager.wait_for_log(f"worker {array}:1 is draining", 20)
    wait_for_file(os.path.join(out, "notified.2"), 20)
    doc = members(os.path.join(out, "members.2"))
    by_index = {m["array_index"]: m for m in doc["members"]}
    check(by_index[1]["state"] == "draining" and by_index[1]["drain_reason"] == "spot-interruption", doc)
    check(by_index[1]["cpus"] == 1 and by_index[1]["memory_limit_bytes"] == 1 << 30, doc)
    check(doc["joined"] == 2, doc)
    # Silence: the Python worker stops sending heartbeats; three intervals later it is lost.
    py.silence()
    manager.wait_for_log(f"worker {array}:1 (127.0.3.2) lost", 20)
    wait_for_file(os.path.join(out, "notified.3"), 20)
    doc = members(os.path.join(out, "members.3"))
    check({m["array_index"]: m["state"] for m in doc["members"]}[1] == "lost", doc)
    check(read(os.path.join(out, "hostfile")) == hostfile, "the hostfile changed after the start")
    py.close()
    open(os.path.join(out, "go"), "w").close()
    expect_exit(manager, 0, 30)
    for w in (w0, late):
        expect_exit(w, 0, 15)


@runner.case
def sigterm_stops_program_and_workers(workdir):
    """Batch's SIGTERM to the manager: PROGRAM gets it, every worker is told to shut
    down, and the manager exits with PROGRAM's status (143)."""
    out, port, cookie, array = outdir(workdir), mnp.free_port(), mnp.new_cookie(), str(uuid.uuid4())
    manager = start_manager(workdir, port, cookie, 2, prog=program(out, gate=True))
    workers = [start_worker(workdir, port, array_env(cookie, array, i), f"w{i}") for i in (0, 1)]
    wait_for_file(os.path.join(out, "started"), 30)
    os.kill(manager.pid, signal.SIGTERM)
    expect_exit(manager, 143, 30)
    for w in workers:
        expect_exit(w, 0, 15)
    check("telling 2 workers to shut down" in manager.stderr(), manager.stderr())


@runner.case
def sigterm_reports_get_what_is_left_of_the_grace(workdir):
    """Batch SIGKILLs 30 s after its SIGTERM. A PROGRAM that ignores SIGTERM is
    SIGKILLed at --grace, and a worker that never reports must not make the manager
    wait a second grace period: it exits at SIGTERM + grace + 1 s (the reports'
    margin), not grace + grace + 1 s, naming the silent worker."""
    out, port, cookie = outdir(workdir), mnp.free_port(), mnp.new_cookie()
    prog = ["/bin/sh", "-c", 'trap "" TERM; echo 1 > "$1/started"; while :; do sleep 0.05; done', "program", out]
    manager = start_manager(workdir, port, cookie, 1, prog=prog)
    manager.wait_for_log("pool manager listening", 20)
    silent = PyWorker(port, cookie, np.register_msg("job-silent", "py-worker", "127.0.4.2", attempt=1, cpus=1,
                                                     memory_limit_bytes=1 << 30), 0.5)
    try:
        wait_for_file(os.path.join(out, "started"), 30)
        t0 = time.monotonic()
        os.kill(manager.pid, signal.SIGTERM)
        expect_exit(manager, 128 + signal.SIGKILL, 30)
        dt = time.monotonic() - t0
    finally:
        silent.close()
    grace = 5  # BASE
    check(grace - 0.2 <= dt <= grace + 1 + 2 * mnp.SLOW,
          f"the manager exited {dt:.2f} s after SIGTERM; want --grace {grace} + 1 s (two graces would be {2 * grace + 1})")
    check("worker job-silent (127.0.4.2) sent no exit report" in manager.stderr(), manager.stderr())


@runner.case
def sigterm_while_waiting(workdir):
    port, cookie = mnp.free_port(), mnp.new_cookie()
    manager = start_manager(workdir, port, cookie, 2, prog=["true"])
    manager.wait_for_log("pool manager listening", 20)
    os.kill(manager.pid, signal.SIGTERM)
    expect_exit(manager, 143, 20)


@runner.case
def bad_pool_settings(workdir):
    """Each bad setting is named, with 64 for a bad command line and 78 where the
    environment is involved; nothing listens."""
    cookie = mnp.new_cookie()
    cases = [
        (["--role", "main", "--workers", "0"], {}, 64, "--workers"),
        (["--role", "main", "--workers", "2", "--min-workers", "3"], {}, 64, "--min-workers 3 is more than --workers 2"),
        (["--min-workers", "2"], {}, 64, "--min-workers needs a worker pool"),
        (["--role", "main", "--workers", "2", "--replace-drained"], {}, 64, "--replace-drained needs --submit-workers"),
        (["--role", "main", "--workers", "2", "--worker-job-queue", "q"], {}, 64, "--worker-job-queue needs --submit-workers"),
        (["--role", "worker", "--workers", "2"], {}, 64, "makes the main role"),
        (["--role", "main", "--workers", "2", "--notify", "KILL"], {}, 64, "--notify"),
        (["--role", "main", "--workers", "2", "--exec"], {}, 64, "--exec"),
        (["--workers", "2", "--manager", "127.0.0.1:1"], {}, 64, "--manager (BATCH_AGENT_MANAGER) with --workers"),
        (["--workers", "2", "--min-nodes", "2"], {}, 64, "a pool takes --min-workers"),
        ([], {"BATCH_AGENT_WORKERS": "many"}, 78, "BATCH_AGENT_WORKERS"),
        ([], {"BATCH_AGENT_WORKERS": "2", "AWS_BATCH_JOB_NUM_NODES": "3", "AWS_BATCH_JOB_NODE_INDEX": "0",
              "AWS_BATCH_JOB_MAIN_NODE_INDEX": "0", "AWS_BATCH_JOB_ID": "x#0"}, 78, "multi-node parallel job"),
    ]
    for i, (args, extra, code, text) in enumerate(cases):
        a = Agent(f"bad{i}", [*args, "--", "true"], base_env(cookie, extra), workdir)
        rc = a.wait(20)
        check(rc == code and text in a.stderr(), f"{args} {extra}: exit {rc}, expected {code} and {text!r}:\n{a.stderr()}")


if __name__ == "__main__":
    runner.run()
