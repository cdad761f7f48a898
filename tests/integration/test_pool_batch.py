"""Worker pools that submit their own workers (issue 11): `batch-agent --role main
--workers N --submit-workers` against the fake Batch API (tests/peers/fake_batch.py,
built from botocore's model: every request validated, every SigV4 signature checked),
which runs the submitted array children as local worker agents with the AWS_BATCH_*
variables Batch sets. The workers find the manager through their job parameter
(DescribeJobs on their own id), as on Batch.

Asserted: the SubmitJob request (array of N, defaults from the manager's own job, the
manager parameter, no cookie anywhere), the end to end run, and that no job of the pool
is left queued or running when the manager ends: after PROGRAM, after too few workers,
and on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
from mnp import Agent, check, expect_exit, read, wait_for_file, wait_s  # noqa: E402
from fake_batch import FakeBatch  # noqa: E402
import fake_batch  # noqa: E402
import nativeproto as np  # noqa: E402

runner = mnp.Runner()
PEERS = os.path.join(mnp.SOURCE_DIR, "tests", "peers")
AKID, SECRET = "AKIDPOOLTEST", "pool-test-secret-key"
MANAGER_JOB = "6f1d7f0e-0c8f-4d8e-9d64-7b0c3e9b1a11"
BASE = ["--heartbeat", "0.5", "--grace", "5"]


def aws_env(fake, cookie, extra=None):
    env = {k: v for k, v in os.environ.items() if k in mnp.PASSED_THROUGH}
    env.update({"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": fake.region,
                "BATCH_AGENT_AWS_ENDPOINT_URL": fake.url, "BATCH_AGENT_COOKIE": cookie})
    env.update(extra or {})
    return env


class Pool:
    """The fake, its job definition, the manager's own job, and a launcher that runs each
    child as a worker agent (hold: array indexes that never get a host)."""

    def __init__(self, workdir, cookie, hold=(), drain=(), worker_env=None):
        self.workdir, self.cookie, self.hold, self.drain = workdir, cookie, set(hold), set(drain)
        # The workers' job definition would say so (or pass --manager Ref::manager).
        self.worker_env = worker_env or {"BATCH_AGENT_MANAGER_PARAM": "manager"}
        self.workers = {}
        self.fake = FakeBatch({AKID: SECRET}, launcher=self.launch, stop_timeout=10)
        self.definition = self.fake.add_job_definition("pool-worker", 3)
        self.fake.add_job(MANAGER_JOB, "pool-manager", "pool-queue", self.definition)

    def launch(self, job, env):
        index = job.get("arrayProperties", {}).get("index")
        if index in self.hold:
            return None
        if index in self.drain:
            full = aws_env(self.fake, self.cookie, env)
            proc = subprocess.Popen([sys.executable, "-c", DRAINER, job["parameters"]["manager"], PEERS], env=full,
                                    start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=open(os.path.join(self.workdir, f"drainer{index}.stderr"), "wb"))
            return fake_batch.GroupHandle(proc)
        name = "w%s" % (index if index is not None else job["jobId"][:8])
        full = aws_env(self.fake, self.cookie, {**self.worker_env, **env})
        agent = Agent(name, [*BASE, "--", "sleep", "120"], full, self.workdir)
        self.workers[job["jobId"]] = agent
        return fake_batch.GroupHandle(agent.proc)

    def manager(self, out, args=(), prog=None, extra_env=None):
        env = aws_env(self.fake, self.cookie, {"AWS_BATCH_JOB_ID": MANAGER_JOB, "AWS_BATCH_JQ_NAME": "pool-queue",
                                               "AWS_BATCH_JOB_ATTEMPT": "1", **(extra_env or {})})
        return Agent("manager", ["--role", "main", "--submit-workers", "--advertise-addr", "127.0.0.1",
                                 "--port", str(self.port), *BASE, *args, "--", *(prog or program(out))], env,
                     self.workdir)

    def submits(self):
        return [r["params"] for r in self.fake.requests if r["operation"] == "SubmitJob"]

    def pool_id(self):
        """The first job the manager submitted (replacements come later)."""
        jobs = [d for j, d in self.fake.jobs().items() if d["jobName"].endswith("-workers") and ":" not in j]
        check(jobs, "no pool job")
        return min(jobs, key=lambda d: d["createdAt"])["jobId"]

    def no_leftovers(self, pool_id, timeout=30):
        """Every job of the pool ends (the fake's own state), within timeout."""
        try:
            self.fake.wait_for(lambda: not self.fake.live(pool_id), timeout)
        except TimeoutError as e:
            raise mnp.Failure(f"jobs of the pool still queued or running: {e}") from None

    def clean(self):
        check(self.fake.errors == [], f"the fake refused requests: {self.fake.errors}")
        for r in self.fake.requests:
            text = json.dumps(r)
            check(self.cookie not in text and SECRET not in text, f"a secret in a request: {r['operation']}")

    def close(self):
        self.fake.stop()


# A worker that drains at once (as on a Spot notice), written with the protocol library:
# it heartbeats until the manager's shutdown, then reports its exit.
DRAINER = r"""
import os, socket, sys, time
sys.path.insert(0, sys.argv[2])
import nativeproto as np
host, port = sys.argv[1].rsplit(":", 1)
conn = np.Conn(socket.create_connection((host, int(port)), timeout=60))
np.worker_handshake(conn, os.environ["BATCH_AGENT_COOKIE"], np.register_msg(
    os.environ["AWS_BATCH_JOB_ID"], "drainer", "127.0.4.1", attempt=1,
    array_index=int(os.environ["AWS_BATCH_JOB_ARRAY_INDEX"])), timeout=60)
conn.send(np.draining("spot-interruption"))
while True:
    try:
        msg = conn.recv_msg(timeout=0.1)
    except TimeoutError:
        conn.send(np.heartbeat())
        continue
    if msg["type"] == "shutdown":
        conn.send(np.payload_exited(exit_code=0))
        sys.exit(0)
"""


def program(out, status=0, gate=False):
    script = ('o="$1"; cp "$BATCH_AGENT_MEMBERS" "$o/members.json"; cp "$BATCH_AGENT_HOSTFILE" "$o/hostfile"; '
              'echo 1 > "$o/started"; '
              + ('while [ ! -e "$o/go" ]; do sleep 0.05; done; ' if gate else '')
              + f'exit {status}')
    return ["/bin/sh", "-c", script, "program", out]


def case(fn):
    def run(workdir):
        out = os.path.join(workdir, "out")
        os.mkdir(out)
        pool = None
        try:
            pool = fn(workdir, out)
        finally:
            if isinstance(pool, Pool):
                pool.close()
    run.__name__ = fn.__name__
    return runner.case(run)


def new_pool(workdir, **kw):
    pool = Pool(workdir, mnp.new_cookie(), **kw)
    pool.port = mnp.free_port()
    return pool


@case
def pool_of_four_end_to_end(workdir, out):
    """The manager submits an array of 4 with its own job's definition and queue; the
    workers find it through the job parameter, PROGRAM sees 4, exits, the workers shut
    down and every job of the pool succeeds: nothing is left queued or running."""
    pool = new_pool(workdir)
    try:
        manager = pool.manager(out, ["--workers", "4"])
        expect_exit(manager, 0, 90)
        pool_id = pool.pool_id()
        pool.no_leftovers(pool_id)
        [submit] = pool.submits()
        check(submit == {"jobName": "pool-manager-workers", "jobQueue": "pool-queue", "jobDefinition": pool.definition,
                         "arrayProperties": {"size": 4}, "parameters": {"manager": f"127.0.0.1:{pool.port}"}}, submit)
        doc = json.loads(read(os.path.join(out, "members.json")))
        check(doc["joined"] == 4 and [m["job_id"] for m in doc["members"]] == [f"{pool_id}:{i}" for i in range(4)], doc)
        for child in pool.fake.children(pool_id):
            check(child["status"] == "SUCCEEDED", child)
        check(pool.fake.job(pool_id)["status"] == "SUCCEEDED", pool.fake.job(pool_id))
        check("every submitted worker finished: no job to stop" in manager.stderr(), manager.stderr())
        check(not any(r["operation"] == "TerminateJob" for r in pool.fake.requests), "a TerminateJob after a clean end")
        pool.clean()
    finally:
        pool.close()


@case
def a_child_that_never_started_is_cancelled(workdir, out):
    """Child 2 never gets a host: PROGRAM starts with 2 of 3 after --wait-timeout
    (--min-workers 2); when it ends, the manager stops child 2 through the API
    (cancelled: FAILED with the manager's reason) and leaves the finished ones alone."""
    pool = new_pool(workdir, hold={2})
    try:
        manager = pool.manager(out, ["--workers", "3", "--min-workers", "2", "--wait-timeout", wait_s(4)])
        expect_exit(manager, 0, 90)
        pool_id = pool.pool_id()
        pool.no_leftovers(pool_id)
        children = pool.fake.children(pool_id)
        check([c["status"] for c in children] == ["SUCCEEDED", "SUCCEEDED", "FAILED"], children)
        check(children[2]["statusReason"] == "the pool's manager ended", children[2])
        check("RUNNING" not in pool.fake.history(children[2]["jobId"]), pool.fake.history(children[2]["jobId"]))
        terminates = [r["params"] for r in pool.fake.requests if r["operation"] == "TerminateJob"]
        check(terminates == [{"jobId": f"{pool_id}:2", "reason": "the pool's manager ended"}], terminates)
        err = manager.stderr()
        check("missing array index 2 of " + pool_id in err, err)
        pool.clean()
    finally:
        pool.close()


@case
def too_few_workers_stops_the_pool(workdir, out):
    """Fewer than --min-workers at --wait-timeout: 69, and every submitted job that is
    not finished (the joined worker's too: PROGRAM never ran) is stopped."""
    pool = new_pool(workdir, hold={1, 2})
    try:
        manager = pool.manager(out, ["--workers", "3", "--wait-timeout", wait_s(3)])
        expect_exit(manager, 69, 90)
        pool_id = pool.pool_id()
        pool.no_leftovers(pool_id)
        children = pool.fake.children(pool_id)
        check([c["status"] for c in children][1:] == ["FAILED", "FAILED"], children)
        check(not os.path.exists(os.path.join(out, "started")), "PROGRAM started")
        pool.clean()
    finally:
        pool.close()


@case
def sigterm_stops_the_pool(workdir, out):
    """Batch's SIGTERM while the manager waits for child 1 (held): the manager stops the
    pool's jobs at once through the API (Batch SIGKILLs it 30 s later), the joined
    worker is told to shut down too, and the manager exits 143."""
    pool = new_pool(workdir, hold={1})
    try:
        manager = pool.manager(out, ["--workers", "2"])
        manager.wait_for_log(":0 joined", 60)
        os.kill(manager.pid, signal.SIGTERM)
        expect_exit(manager, 143, 60)
        pool_id = pool.pool_id()
        pool.no_leftovers(pool_id)
        child = pool.fake.children(pool_id)[1]
        check(child["status"] == "FAILED" and child["statusReason"] == "the pool's manager was stopped", child)
        check("stopping its workers' jobs now" in manager.stderr(), manager.stderr())
        terminates = [r["params"]["jobId"] for r in pool.fake.requests if r["operation"] == "TerminateJob"]
        check(terminates == [pool_id], terminates)
        pool.clean()
    finally:
        pool.close()


@case
def sigterm_while_program_runs_stops_the_pool_first(workdir, out):
    """Batch's SIGTERM while PROGRAM runs (child 2 never started): the pool's jobs are
    stopped before PROGRAM's grace period and the workers' reports, which together could
    outlast Batch's 30 s; PROGRAM gets its SIGTERM and the manager exits with its status."""
    pool = new_pool(workdir, hold={2})
    try:
        trap = ["/bin/sh", "-c", 'trap "exit 0" TERM; echo 1 > "$1/started"; while :; do sleep 0.05; done', "p", out]
        manager = pool.manager(out, ["--workers", "3", "--min-workers", "2", "--wait-timeout", wait_s(3)], prog=trap)
        wait_for_file(os.path.join(out, "started"), 60)
        os.kill(manager.pid, signal.SIGTERM)
        expect_exit(manager, 0, 60)
        pool_id = pool.pool_id()
        pool.no_leftovers(pool_id)
        err = manager.stderr()
        check(err.index("stopping its workers' jobs now") < err.index("PROGRAM exited"), err)
        held = pool.fake.children(pool_id)[2]
        check(held["status"] == "FAILED" and "RUNNING" not in pool.fake.history(held["jobId"]), held)
        pool.clean()
    finally:
        pool.close()


@case
def one_worker_with_explicit_definition_queue_and_parameter(workdir, out):
    """--workers 1 submits a single job (no arrayProperties) with the given definition,
    queue and parameter name; the worker reads that parameter (--manager-param)."""
    pool = new_pool(workdir, worker_env={"BATCH_AGENT_MANAGER_PARAM": "poolmgr"})
    try:
        manager = pool.manager(out, ["--workers", "1", "--worker-job-definition", "pool-worker:3",
                                     "--worker-job-queue", "other-queue", "--manager-param", "poolmgr"],
                               prog=program(out, gate=True))
        manager.wait_for_log("pool manager listening", 60)
        # A child of some array is not the single job this pool submitted.
        try:
            conn = np.Conn(socket.create_connection(("127.0.0.1", pool.port), timeout=30 * mnp.SLOW))
            np.worker_handshake(conn, pool.cookie, np.register_msg("other-array:0", "stranger", "127.0.6.1",
                                                                   attempt=1, array_index=0), timeout=30 * mnp.SLOW)
            raise mnp.Failure("an array child joined a pool of one submitted job")
        except np.ProtocolError as e:
            check(e.code == "job_mismatch", f"refused with {e.code}")
        open(os.path.join(out, "go"), "w").close()
        expect_exit(manager, 0, 90)
        [submit] = pool.submits()
        check(submit == {"jobName": "pool-manager-workers", "jobQueue": "other-queue", "jobDefinition": "pool-worker:3",
                         "parameters": {"poolmgr": f"127.0.0.1:{pool.port}"}}, submit)
        pool_id = pool.pool_id()
        pool.no_leftovers(pool_id)
        check(pool.fake.job(pool_id)["status"] == "SUCCEEDED", pool.fake.job(pool_id))
        doc = json.loads(read(os.path.join(out, "members.json")))
        check([(m["job_id"], m["array_index"]) for m in doc["members"]] == [(pool_id, None)], doc)
        pool.clean()
    finally:
        pool.close()


@case
def a_drained_worker_is_replaced(workdir, out):
    """Child 1 drains at once (--replace-drained): the manager submits one single job
    in its place, which joins; PROGRAM (gated) sees the replacement in the membership
    file, and at the end no job of the pool or its replacement is left."""
    pool = new_pool(workdir, drain={1})
    try:
        # The replacement is submitted within 1.5 heartbeat intervals (the loop waits for it).
        manager = pool.manager(out, ["--workers", "2", "--min-workers", "1", "--wait-timeout", wait_s(2),
                                     "--replace-drained", "--heartbeat", "%.3g" % (2 * mnp.SLOW)],
                               prog=program(out, gate=True))
        wait_for_file(os.path.join(out, "started"), 60)
        err = manager.wait_for_log("submitted a replacement worker: job ", 60)
        replacement = err.split("submitted a replacement worker: job ", 1)[1].split()[0]
        manager.wait_for_log(f"worker {replacement} joined", 60)
        open(os.path.join(out, "go"), "w").close()
        expect_exit(manager, 0, 90)
        pool_id = pool.pool_id()
        submits = pool.submits()
        check(len(submits) == 2 and "arrayProperties" not in submits[1], submits)
        check(submits[1]["parameters"] == submits[0]["parameters"] and submits[1]["jobDefinition"] == pool.definition,
              submits)
        pool.no_leftovers(pool_id)
        pool.fake.wait_for(lambda: not pool.fake.live([replacement]), 30)
        check(pool.fake.job(replacement)["status"] == "SUCCEEDED", pool.fake.job(replacement))
        check("worker %s:1 is draining: spot-interruption" % pool_id in manager.stderr(), manager.stderr())
        pool.clean()
    finally:
        pool.close()


@case
def a_refused_submission_is_reported(workdir, out):
    """SubmitJob refused (an unknown job definition): the manager exits with the
    helper's status, names the request and the server's message, and PROGRAM never
    starts."""
    pool = new_pool(workdir)
    try:
        manager = pool.manager(out, ["--workers", "2", "--worker-job-definition", "no-such-def"])
        rc = manager.wait(60)
        err = manager.stderr()
        check(rc not in (0, 69) and "SubmitJob" in err and "no-such-def" in err, f"exit {rc}:\n{err}")
        check(not os.path.exists(os.path.join(out, "started")), "PROGRAM started")
        check(pool.fake.live("") == [MANAGER_JOB], pool.fake.jobs())
    finally:
        pool.close()


if __name__ == "__main__":
    runner.run()
