"""A fake AWS Batch API on 127.0.0.1, built from botocore's Batch model (2016-08-10).

Standard library plus Debian's python3-botocore; run with /usr/bin/python3.

What it speaks (rest-json, routed by the model's http.requestUri):
  POST /v1/describejobs   DescribeJobs   {"jobs": [id, ...]} -> {"jobs": [JobDetail, ...]}
  POST /v1/submitjob      SubmitJob      -> {"jobArn", "jobName", "jobId"}
  POST /v1/terminatejob   TerminateJob   {"jobId", "reason"} -> {}
  POST /v1/canceljob      CancelJob      {"jobId", "reason"} -> {}

Every request, in this order:
  1. is routed by method and path (anything else: 404 UnknownOperationException);
  2. has its SigV4 signature recomputed with botocore's own signer (botocore.auth.SigV4Auth,
     service "batch", the fake's region, the received X-Amz-Date): no/unknown key or a
     wrong/unsigned session token -> 403 UnrecognizedClientException; a wrong signature,
     scope or a date more than 15 minutes off -> 403 InvalidSignatureException;
  3. may get an injected error (fail_next);
  4. needs Content-Type application/json and a JSON object body, which must pass
     botocore.validate.ParamValidator against the operation's input shape, then the
     documented rules the model states only in prose (array size 2..10000, job name
     syntax, up to 100 ids, known job definition and job id, no AWS_BATCH_ variables in
     overrides) -> otherwise 400 ClientException.
Errors are answered as Batch does: status, header x-amzn-ErrorType, body {"message": ...}
(what botocore's RestJSONParser reads). Every error is appended to fake.errors:
  {"kind": "route"|"signature"|"injected"|"validation"|"client", "operation", "status",
   "error_type", "message", "headers"}
Every accepted request is appended to fake.requests: {"operation", "params", "headers"}
(headers: dict, lower-case names).

Jobs follow the Batch user guide and the model's documentation:
  single job:  SUBMITTED -> PENDING -> RUNNABLE -> (launcher) STARTING -> RUNNING ->
               SUCCEEDED (exit 0) | FAILED (exit != 0, statusReason "Essential container in
               task exited", container.exitCode; a signal N is reported as 128+N as docker does)
  array job (arrayProperties.size N): the parent and its children "<parentId>:<i>" are
               created by SubmitJob (children PENDING, arrayProperties {"index": i}); the
               parent is SUBMITTED, PENDING once any child is RUNNABLE, SUCCEEDED when every
               child succeeded, else FAILED ("Array Child Job failed") once all children are
               done; it carries arrayProperties {"size", "statusSummary"} and startedAt 0, as
               in the captured samples (../shared/aws-reference/batch).
Children are started from a background thread after SubmitJob is answered: each RUNNABLE job
is given to launcher(job_detail, env), which returns a Popen-like handle (poll, wait(timeout),
send_signal, kill, returncode) or None = "never gets a host": the job stays RUNNABLE.
env = base_env + containerOverrides.environment + AWS_BATCH_JOB_ID, AWS_BATCH_JOB_ATTEMPT
("1"), AWS_BATCH_JQ_NAME (queue name), AWS_BATCH_CE_NAME ("fake-ce") and, for array
children, AWS_BATCH_JOB_ARRAY_INDEX and AWS_BATCH_JOB_ARRAY_SIZE.
  TerminateJob: SUBMITTED/PENDING/RUNNABLE -> FAILED (statusReason = reason) at once;
               STARTING/RUNNING -> SIGTERM, SIGKILL (handle.kill()) stop_timeout seconds later;
               FAILED with statusReason = reason when the process has exited (a job added with
               add_job has no process: FAILED at once).
  CancelJob:   SUBMITTED/PENDING/RUNNABLE -> FAILED (statusReason = reason); STARTING/RUNNING
               untouched, the call still succeeds.
  Both on an array parent apply to every child; the parent's statusReason becomes the reason.
  Jobs already SUCCEEDED/FAILED are left alone; an unknown jobId is a ClientException.

API (all timeouts are multiplied by BATCH_AGENT_TIMEOUT_SCALE, as tests/lib/agenttest.py):
  fake = FakeBatch(credentials={"AKID": "secret"}, region="us-east-1", session_token=None,
                   launcher=None, base_env=None, stop_timeout=30.0)
      credentials values may also be (secret, session_token) pairs.
  fake.url, fake.port, fake.region
  fake.add_job_definition(name, revision=1, parameters=None) -> ARN
  fake.add_job(job_id, job_name, job_queue, job_definition, parameters=None,
               status="RUNNING", extra=None) -> detail   (a job that exists already, e.g. the
               manager's own; extra is merged into its JobDetail; it is never launched)
  fake.jobs() -> {id: detail}        fake.job(id) -> detail (KeyError if unknown)
  fake.children(parent_id) -> [detail, ...] by index
  fake.history(id) -> [status, ...]  every status the job went through, in order
  fake.live(prefix_or_ids) -> sorted ids whose status is SUBMITTED..RUNNING; a string is a
               prefix (parent id: the parent and its children; "<parent>:" only children)
  fake.wait_for(predicate, timeout=10) -> predicate's value; waits on a Condition notified
               on every job change, request and error; TimeoutError naming job statuses
  fake.fail_next(operation, status, error_type, message, count=1)   e.g.
               fail_next("SubmitJob", 400, "ThrottlingException", "Rate exceeded")
  fake.stop()  kills every process it launched (handle.kill()), waits for them, shuts the
               server down; also on leaving "with FakeBatch(...) as fake:".
  subprocess_launcher(argv, **popen_kwargs) -> a launcher running argv (a list, or
               argv(job, env) -> list) in a new session; its handle's kill() kills the whole
               process group, as tearing down a container would.
"""

import copy
import datetime
import hmac
import http.server
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid

import botocore.auth
import botocore.awsrequest
import botocore.compat
import botocore.credentials
import botocore.session
import botocore.validate

# One factor for every internal wait (tests/lib/agenttest.py: default 1, 10 under a wrapper).
SCALE = float(os.environ.get("BATCH_AGENT_TIMEOUT_SCALE")
              or (10 if shlex.split(os.environ.get("BATCH_AGENT_WRAPPER", "")) else 1))

ACCOUNT = "123456789012"
CE_NAME = "fake-ce"
OPERATIONS = ("DescribeJobs", "SubmitJob", "TerminateJob", "CancelJob")
# botocore's signer and AWS both allow this much clock skew.
MAX_SKEW_SECONDS = 900
CONTAINER_EXITED = "Essential container in task exited"
ARRAY_CHILD_FAILED = "Array Child Job failed"
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/"
                     r"aws4_request,\s*SignedHeaders=([a-z0-9;\-]+),\s*Signature=([0-9a-f]{64})$")

_model_lock = threading.Lock()
_model = None


def service_model():
    """botocore's Batch model (Debian python3-botocore), loaded once."""
    global _model
    with _model_lock:
        if _model is None:
            _model = botocore.session.get_session().get_service_model("batch")
        return _model


def statuses():
    """The JobStatus enum, in the model's (lifecycle) order."""
    return list(service_model().shape_for("JobStatus").enum)


LIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED")


def now_ms():
    return int(time.time() * 1000)


class ClientError(Exception):
    """A request Batch rejects with 400 ClientException."""


# ---- launching local processes -------------------------------------------------------

class GroupHandle:
    """A Popen leading its own session. Signals go to the leader only (docker stop signals
    the container's PID 1); kill() takes the whole group, as tearing a container down does,
    so nothing a worker started outlives it."""

    def __init__(self, popen):
        self.popen = popen
        self.pid = popen.pid

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def send_signal(self, sig):
        self.popen.send_signal(sig)

    def kill(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def subprocess_launcher(argv, **popen_kwargs):
    """A launcher for FakeBatch: argv is a list or argv(job, env) -> list."""
    def launch(job, env):
        args = argv(job, env) if callable(argv) else list(argv)
        return GroupHandle(subprocess.Popen(args, env=env, start_new_session=True,
                                            **popen_kwargs))
    return launch


# ---- jobs ----------------------------------------------------------------------------

class _Job:
    def __init__(self, job_id, name, queue_arn, definition_arn, parameters, region):
        self.id = job_id
        self.arn = "arn:aws:batch:%s:%s:job/%s" % (region, ACCOUNT, job_id)
        self.name = name
        self.queue_arn = queue_arn
        self.definition_arn = definition_arn
        self.parameters = dict(parameters or {})
        self.environment = []          # containerOverrides.environment, [{name, value}]
        self.status = None
        self.status_reason = None
        self.created = now_ms()
        self.started = None
        self.stopped = None
        self.exit_code = None
        self.attempts = []
        self.size = None               # array parent
        self.children = []
        self.index = None              # array child
        self.parent = None
        self.handle = None
        self.waiter = None
        self.terminating = None        # TerminateJob's reason once SIGTERM was sent
        self.kill_timer = None
        self.extra = None
        self.history = []

    @property
    def queue_name(self):
        return self.queue_arn.rsplit("/", 1)[1]

    def container(self):
        c = {"command": [], "environment": copy.deepcopy(self.environment), "mountPoints": [],
             "volumes": [], "ulimits": [], "networkInterfaces": []}
        if self.exit_code is not None:
            c["exitCode"] = self.exit_code
        return c

    def detail(self, summary=None):
        d = {"jobArn": self.arn, "jobName": self.name, "jobId": self.id,
             "jobQueue": self.queue_arn, "status": self.status}
        if self.status_reason is not None:
            d["statusReason"] = self.status_reason
        d["attempts"] = copy.deepcopy(self.attempts)
        d["createdAt"] = self.created
        d["retryStrategy"] = {"attempts": 1}
        if self.size is not None:
            d["startedAt"] = 0      # as the captured array parents
        elif self.started is not None:
            d["startedAt"] = self.started
        if self.stopped is not None and self.size is None:
            d["stoppedAt"] = self.stopped
        d["dependsOn"] = []
        d["jobDefinition"] = self.definition_arn
        d["parameters"] = dict(self.parameters)
        d["container"] = self.container()
        if self.size is not None:
            d["arrayProperties"] = {"size": self.size, "statusSummary": summary}
        elif self.index is not None:
            d["arrayProperties"] = {"index": self.index, "statusSummary": {}}
        if self.extra:
            for k, v in copy.deepcopy(self.extra).items():
                if isinstance(v, dict) and isinstance(d.get(k), dict):
                    d[k].update(v)
                else:
                    d[k] = v
        return d


# ---- the server ----------------------------------------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):
            return      # the client went away
        super().handle_error(request, client_address)


class FakeBatch:
    def __init__(self, credentials, region="us-east-1", session_token=None, launcher=None,
                 base_env=None, stop_timeout=30.0):
        self.region = region
        self._keys = {}
        for akid, value in credentials.items():
            secret, token = value if isinstance(value, tuple) else (value, session_token)
            self._keys[akid] = (secret, token)
        self.launcher = launcher
        self.base_env = dict(base_env or {})
        self.stop_timeout = stop_timeout
        self.requests = []
        self.errors = []
        self._cond = threading.Condition()     # guards everything below; RLock: reentrant
        self._jobs = {}
        self._definitions = {}                 # name -> {revision: parameters}
        self._inject = {}                      # operation -> [(status, type, message)]
        self._threads = []
        self._handles = []
        self._stopping = False
        self._statuses = statuses()
        self._validator = botocore.validate.ParamValidator()
        model = service_model()
        self._routes = {}
        for name in OPERATIONS:
            op = model.operation_model(name)
            self._routes[(op.http["method"], op.http["requestUri"])] = op
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self.port = self._server.server_address[1]
        self._serve = threading.Thread(target=self._server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True,
                                       name="fake-batch-server")
        self._serve.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- setup

    def queue_arn(self, queue):
        """SubmitJob takes a queue name or ARN; JobDetail.jobQueue is always the ARN."""
        if queue.startswith("arn:"):
            m = re.match(r"^arn:aws:batch:[^:]+:\d{12}:job-queue/([A-Za-z0-9_-]{1,128})$", queue)
            if not m:
                raise ClientError("jobQueue %s is not a job queue ARN" % queue)
            return queue
        if not JOB_NAME_RE.match(queue):
            raise ClientError("jobQueue %r is not a valid job queue name" % queue)
        return "arn:aws:batch:%s:%s:job-queue/%s" % (self.region, ACCOUNT, queue)

    def definition_arn(self, name, revision):
        return "arn:aws:batch:%s:%s:job-definition/%s:%d" % (self.region, ACCOUNT, name, revision)

    def add_job_definition(self, name, revision=1, parameters=None):
        with self._cond:
            self._definitions.setdefault(name, {})[int(revision)] = dict(parameters or {})
        return self.definition_arn(name, int(revision))

    def _resolve_definition(self, ref):
        """name (latest revision), name:revision or the ARN -> (ARN, parameters)."""
        prefix = "arn:aws:batch:%s:%s:job-definition/" % (self.region, ACCOUNT)
        body = ref[len(prefix):] if ref.startswith(prefix) else ref
        if ref.startswith("arn:") and body == ref:
            raise ClientError("Job definition %s does not exist" % ref)
        name, _, rev = body.partition(":")
        revisions = self._definitions.get(name)
        if not revisions or (rev and (not rev.isdigit() or int(rev) not in revisions)) \
                or (ref.startswith("arn:") and not rev):
            raise ClientError("Job definition %s does not exist" % ref)
        revision = int(rev) if rev else max(revisions)
        return self.definition_arn(name, revision), revisions[revision]

    def add_job(self, job_id, job_name, job_queue, job_definition, parameters=None,
                status="RUNNING", extra=None):
        with self._cond:
            try:
                arn, params = self._resolve_definition(job_definition)
                merged = dict(params, **(parameters or {}))
            except ClientError:
                arn, merged = job_definition, dict(parameters or {})
            job = _Job(job_id, job_name, self.queue_arn(job_queue), arn, merged, self.region)
            job.extra = extra
            self._jobs[job_id] = job
            self._set(job, status)
            return self._detail(job)

    def fail_next(self, operation, status, error_type, message, count=1):
        if operation not in OPERATIONS:
            raise ValueError("unknown operation %s" % operation)
        with self._cond:
            self._inject.setdefault(operation, []).extend(
                [(status, error_type, message)] * count)

    # -- inspection

    def _detail(self, job):
        summary = None
        if job.size is not None:
            summary = {s: 0 for s in self._statuses}
            for cid in job.children:
                summary[self._jobs[cid].status] += 1
        return job.detail(summary)

    def jobs(self):
        with self._cond:
            return {jid: self._detail(j) for jid, j in self._jobs.items()}

    def job(self, job_id):
        with self._cond:
            return self._detail(self._jobs[job_id])

    def children(self, parent_id):
        with self._cond:
            return [self._detail(self._jobs[c]) for c in self._jobs[parent_id].children]

    def history(self, job_id):
        with self._cond:
            return [s for s, _ in self._jobs[job_id].history]

    def live(self, prefix_or_ids):
        with self._cond:
            if isinstance(prefix_or_ids, str):
                ids = [j for j in self._jobs if j.startswith(prefix_or_ids)]
            else:
                ids = [j for j in prefix_or_ids if j in self._jobs]
            return sorted(j for j in ids if self._jobs[j].status in LIVE)

    def wait_for(self, predicate, timeout=10.0):
        limit = timeout * SCALE
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("condition not met within %.1fs; jobs: %s" % (
                        limit, {j: x.status for j, x in self._jobs.items()}))
                self._cond.wait(left)

    # -- state changes (all with self._cond held)

    def _set(self, job, status, reason=None):
        if status not in self._statuses:
            raise ValueError("unknown status %s" % status)
        t = now_ms()
        job.status = status
        if reason is not None:
            job.status_reason = reason
        if status == "RUNNING" and job.started is None:
            job.started = t
        if status in TERMINAL and job.stopped is None:
            job.stopped = t
        job.history.append((status, t))
        if job.parent is not None:
            self._update_parent(self._jobs[job.parent])
        self._cond.notify_all()

    def _update_parent(self, parent):
        kids = [self._jobs[c].status for c in parent.children]
        if all(s == "SUCCEEDED" for s in kids):
            new, reason = "SUCCEEDED", None
        elif all(s in TERMINAL for s in kids):
            # Cancelled or terminated through the parent: the caller's reason; otherwise
            # what Batch says in the captured sample.
            new, reason = "FAILED", parent.terminating or ARRAY_CHILD_FAILED
        elif any(s not in ("SUBMITTED", "PENDING") for s in kids):
            new, reason = "PENDING", None
        else:
            new, reason = parent.status, None
        if new != parent.status:
            self._set(parent, new, reason)

    def _cancel(self, job, reason):
        """CancelJob's effect on one job; True if it was cancelled."""
        if job.status in ("SUBMITTED", "PENDING", "RUNNABLE"):
            self._set(job, "FAILED", reason)
            return True
        return False

    def _terminate(self, job, reason):
        """TerminateJob's effect on one job; returns the handles to send SIGTERM to (signals
        are sent after the lock is released: a Popen-like handle may block)."""
        if job.status in ("SUBMITTED", "PENDING", "RUNNABLE"):
            self._set(job, "FAILED", reason)
        elif job.status in ("STARTING", "RUNNING"):
            if job.handle is None:
                self._set(job, "FAILED", reason)       # added with add_job: no process
            elif job.terminating is None:
                job.terminating = reason
                job.kill_timer = threading.Timer(self.stop_timeout * SCALE, self._kill, (job,))
                job.kill_timer.daemon = True
                job.kill_timer.start()
                self._cond.notify_all()
                return [job.handle]
        return []

    def _kill(self, job):
        with self._cond:
            handle = job.handle if job.status in ("STARTING", "RUNNING") else None
        if handle is not None:
            handle.kill()

    # -- operations (called with self._cond held; return (answer, after-answer callable))

    def _op_DescribeJobs(self, params):
        if len(params["jobs"]) > 100:
            raise ClientError("jobs: a list of up to 100 job IDs, got %d" % len(params["jobs"]))
        seen, out = set(), []
        for jid in params["jobs"]:
            if jid in self._jobs and jid not in seen:      # unknown ids are simply absent
                seen.add(jid)
                out.append(self._detail(self._jobs[jid]))
        return {"jobs": out}, None

    def _op_SubmitJob(self, params):
        name = params["jobName"]
        if not JOB_NAME_RE.match(name):
            raise ClientError("jobName %r: up to 128 letters, numbers, hyphens and underscores, "
                              "starting with a letter or number" % name)
        queue = self.queue_arn(params["jobQueue"])
        definition, def_params = self._resolve_definition(params["jobDefinition"])
        size = None
        if "arrayProperties" in params:
            size = params["arrayProperties"].get("size")
            if size is None or not 2 <= size <= 10000:
                raise ClientError("arrayProperties.size must be between 2 and 10000, got %s"
                                  % size)
        environment = params.get("containerOverrides", {}).get("environment", [])
        for var in environment:
            if var.get("name", "").startswith("AWS_BATCH_"):
                raise ClientError("containerOverrides.environment: %s uses the reserved "
                                  "prefix AWS_BATCH_" % var.get("name"))
        parameters = dict(def_params, **params.get("parameters", {}))
        job_id = str(uuid.uuid4())

        def make(jid):
            job = _Job(jid, name, queue, definition, parameters, self.region)
            job.environment = [{"name": v.get("name", ""), "value": v.get("value", "")}
                               for v in environment]
            self._jobs[jid] = job
            return job

        job = make(job_id)
        self._set(job, "SUBMITTED")
        if size is not None:
            job.size = size
            for i in range(size):
                child = make("%s:%d" % (job_id, i))
                child.index = i
                # Children are spawned in PENDING (JobSummary.createdAt's documentation);
                # linked to the parent once they have a status.
                self._set(child, "PENDING")
                child.parent = job_id
                job.children.append(child.id)
            runnable = list(job.children)
        else:
            runnable = [job_id]
        answer = {"jobArn": job.arn, "jobName": name, "jobId": job_id}
        return answer, lambda: self._start_thread(self._schedule, runnable, "schedule")

    def _lookup(self, params):
        job = self._jobs.get(params["jobId"])
        if job is None:
            raise ClientError("Job %s not found" % params["jobId"])
        return job

    def _op_TerminateJob(self, params):
        job = self._lookup(params)
        reason = params["reason"]
        handles = []
        if job.size is not None:
            job.terminating = reason
            for cid in job.children:
                handles += self._terminate(self._jobs[cid], reason)
        else:
            handles = self._terminate(job, reason)
        return {}, lambda: self._signal(handles, signal.SIGTERM)

    def _op_CancelJob(self, params):
        job = self._lookup(params)
        reason = params["reason"]
        if job.size is not None:
            # The parent's statusReason becomes the reason only if a child was cancelled:
            # set it before the last child's change makes the parent FAILED.
            cancellable = [c for c in job.children if self._jobs[c].status in
                           ("SUBMITTED", "PENDING", "RUNNABLE")]
            if cancellable:
                job.terminating = reason
            for cid in cancellable:
                self._cancel(self._jobs[cid], reason)
        else:
            self._cancel(job, reason)
        return {}, None

    # -- background work

    def _start_thread(self, target, arg, name):
        t = threading.Thread(target=target, args=(arg,), daemon=True, name="fake-batch-" + name)
        # Started and listed in one step, so stop() never joins a thread not yet started.
        with self._cond:
            t.start()
            self._threads.append(t)

    def _signal(self, handles, sig):
        for h in handles:
            try:
                h.send_signal(sig)
            except (ProcessLookupError, OSError):
                pass

    def _schedule(self, ids):
        """What the scheduler does after SubmitJob: PENDING -> RUNNABLE, then a host."""
        with self._cond:
            for jid in ids:
                job = self._jobs[jid]
                if job.status == "SUBMITTED":
                    self._set(job, "PENDING")
                if job.status == "PENDING" and not self._stopping:
                    self._set(job, "RUNNABLE")
        for jid in ids:
            self._launch(self._jobs[jid])

    def _env(self, job):
        env = dict(self.base_env)
        env.update({v["name"]: v["value"] for v in job.environment})
        env.update(AWS_BATCH_JOB_ID=job.id, AWS_BATCH_JOB_ATTEMPT="1",
                   AWS_BATCH_JQ_NAME=job.queue_name, AWS_BATCH_CE_NAME=CE_NAME)
        if job.index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.index)
            env["AWS_BATCH_JOB_ARRAY_SIZE"] = str(self._jobs[job.parent].size)
        return env

    def _launch(self, job):
        with self._cond:
            if job.status != "RUNNABLE" or self._stopping or self.launcher is None:
                return
            detail, env = self._detail(job), self._env(job)
        # The launcher runs without the lock: it may take its time, and the job may be
        # cancelled meanwhile (it is still RUNNABLE, so TerminateJob cancels it).
        try:
            handle = self.launcher(detail, env)
        except Exception as e:     # a broken launcher is the test's bug: say so, fail the job
            with self._cond:
                self._error("launcher", None, 0, "LauncherError", "launcher(%s): %r" % (job.id, e), {})
                if job.status == "RUNNABLE":
                    self._set(job, "FAILED", "CannotStartContainerError: launcher raised %r" % e)
            return
        if handle is None:
            return      # never gets a host: stays RUNNABLE
        with self._cond:
            self._handles.append(handle)
            late = job.status != "RUNNABLE" or self._stopping
            if not late:
                job.handle = handle
                self._set(job, "STARTING")
                self._set(job, "RUNNING")
        if late:
            # Cancelled (or the fake stopped) while the launcher ran: the process must not
            # outlive its job.
            handle.kill()
            return
        self._start_thread(self._watch, job, "watch-" + job.id)

    def _watch(self, job):
        """Notices the exit of one job's process (each handle has its own blocking wait)."""
        rc = job.handle.wait()
        with self._cond:
            if job.kill_timer is not None:
                job.kill_timer.cancel()
            job.exit_code = rc if rc >= 0 else 128 - rc
            if job.terminating is not None:
                status, reason = "FAILED", job.terminating
            else:
                status, reason = ("SUCCEEDED" if rc == 0 else "FAILED"), CONTAINER_EXITED
            stopped = now_ms()
            job.attempts.append({"container": {"exitCode": job.exit_code, "networkInterfaces": []},
                                 "startedAt": job.started, "stoppedAt": stopped,
                                 "statusReason": reason})
            self._set(job, status, reason)

    def stop(self):
        """Kills every process the fake launched, waits for them, stops the server."""
        with self._cond:
            if self._stopping and self._server is None:
                return
            self._stopping = True
            handles = list(self._handles)
            timers = [j.kill_timer for j in self._jobs.values() if j.kill_timer is not None]
        for t in timers:
            t.cancel()
        for h in handles:
            h.kill()
        deadline = time.monotonic() + 10 * SCALE
        for h in handles:
            try:
                h.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with self._cond:
                    self._error("stop", None, 0, "StopError",
                                "process %s did not die" % getattr(h, "pid", h), {})
        with self._cond:
            threads = list(self._threads)
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the wire

    def _error(self, kind, operation, status, error_type, message, headers):
        self.errors.append({"kind": kind, "operation": operation, "status": status,
                            "error_type": error_type, "message": message, "headers": headers})
        self._cond.notify_all()

    def check_sigv4(self, method, target, headers, body):
        """botocore's SigV4Auth over the request as received: (None, None) if it is good,
        else (error type, message)."""
        got = {}
        for n, v in headers:
            got.setdefault(n.lower(), []).append(v)
        bad_token = ("UnrecognizedClientException",
                     "The security token included in the request is invalid.")
        auth = got.get("authorization", [])
        if len(auth) != 1:
            return "UnrecognizedClientException", "Request is missing Authentication Token"
        m = AUTH_RE.match(auth[0].strip())
        if not m:
            return "InvalidSignatureException", "Authorization header is malformed"
        akid, date, region, service, signed, signature = m.groups()
        if akid not in self._keys:
            return bad_token
        secret, token = self._keys[akid]
        if region != self.region or service != "batch":
            return ("InvalidSignatureException",
                    "Credential should be scoped to a valid region and service 'batch' in "
                    "%s, not %s/%s" % (self.region, region, service))
        signed_list = signed.split(";")
        received_token = got.get("x-amz-security-token")
        if token is None and received_token is not None:
            return bad_token
        if token is not None and (received_token != [token]
                                  or "x-amz-security-token" not in signed_list):
            return bad_token
        for must in ("host", "x-amz-date"):
            if must not in signed_list or len(got.get(must, [])) != 1:
                return "InvalidSignatureException", "%s must be present and signed" % must
        amz_date = got["x-amz-date"][0]
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            return "InvalidSignatureException", "X-Amz-Date %r is not a date" % amz_date
        if not amz_date.startswith(date):
            return "InvalidSignatureException", "X-Amz-Date does not match the credential date"
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) \
                > MAX_SKEW_SECONDS:
            return "InvalidSignatureException", "Signature expired: %s" % amz_date
        missing = [h for h in signed_list if h not in got]
        if missing:
            return "InvalidSignatureException", "signed header %s is absent" % missing[0]
        # Rebuild the request with exactly the headers the client signed, and let botocore
        # sign it with the client's timestamp.
        req = botocore.awsrequest.AWSRequest(method=method, url="http://%s%s" % (
            got["host"][0], target), data=body)
        req.headers = botocore.compat.HTTPHeaders()
        for n, v in headers:
            if n.lower() in signed_list:
                req.headers[n] = v
        req.context["timestamp"] = amz_date
        signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials(akid, secret, token),
                                         "batch", self.region)
        canonical = signer.canonical_request(req)
        expect = signer.signature(signer.string_to_sign(req, canonical), req)
        if signer.signed_headers(signer.headers_to_sign(req)) != signed \
                or not hmac.compare_digest(expect, signature):
            return ("InvalidSignatureException",
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your AWS Secret Access Key and signing method.")
        return None, None

    def _handler_class(fake):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, doc, error_type=None):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _fail(self, kind, operation, status, error_type, message, headers):
                with fake._cond:
                    fake._error(kind, operation, status, error_type, message, headers)
                self._answer(status, {"message": message}, error_type)

            def do_GET(self):
                self._dispatch("GET")

            def do_PUT(self):
                self._dispatch("PUT")

            def do_DELETE(self):
                self._dispatch("DELETE")

            def do_POST(self):
                self._dispatch("POST")

            def _dispatch(self, method):
                length = self.headers.get("Content-Length")
                try:
                    body = self.rfile.read(int(length)) if length else b""
                except ValueError:
                    self.close_connection = True
                    body = b""
                pairs = list(self.headers.items())
                hdrs = {n.lower(): v for n, v in pairs}
                path = self.path.split("?", 1)[0]
                op = fake._routes.get((method, path))
                if op is None:
                    self._fail("route", None, 404, "UnknownOperationException",
                               "no operation at %s %s" % (method, path), hdrs)
                    return
                name = op.name
                error_type, message = fake.check_sigv4(method, self.path, pairs, body)
                if error_type:
                    self._fail("signature", name, 403, error_type, message, hdrs)
                    return
                with fake._cond:
                    queue = fake._inject.get(name)
                    injected = queue.pop(0) if queue else None
                if injected:
                    self._fail("injected", name, injected[0], injected[1], injected[2], hdrs)
                    return
                ctype = hdrs.get("content-type", "")
                if ctype.split(";")[0].strip().lower() != "application/json":
                    self._fail("validation", name, 400, "ClientException",
                               "Content-Type must be application/json, not %r" % ctype, hdrs)
                    return
                try:
                    params = json.loads(body)
                except ValueError as e:
                    self._fail("validation", name, 400, "ClientException",
                               "request body is not JSON: %s" % e, hdrs)
                    return
                if not isinstance(params, dict):
                    self._fail("validation", name, 400, "ClientException",
                               "request body is not a JSON object", hdrs)
                    return
                report = fake._validator.validate(params, op.input_shape)
                if report.has_errors():
                    self._fail("validation", name, 400, "ClientException",
                               report.generate_report(), hdrs)
                    return
                with fake._cond:
                    try:
                        answer, after = getattr(fake, "_op_" + name)(params)
                    except ClientError as e:
                        fake._error("client", name, 400, "ClientException", str(e), hdrs)
                        answer = e
                    else:
                        fake.requests.append({"operation": name, "params": params,
                                              "headers": hdrs})
                        fake._cond.notify_all()
                if isinstance(answer, ClientError):
                    self._answer(400, {"message": str(answer)}, "ClientException")
                    return
                self._answer(200, answer)
                if after is not None:
                    after()

        return Handler


if __name__ == "__main__":
    # Manual use: serve until interrupted, credentials from the command line.
    if len(sys.argv) != 3:
        sys.exit("usage: fake_batch.py ACCESS_KEY_ID SECRET (the secret is for local tests only)")
    f = FakeBatch({sys.argv[1]: sys.argv[2]})
    print("fake Batch at %s (region %s)" % (f.url, f.region), flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    f.stop()
