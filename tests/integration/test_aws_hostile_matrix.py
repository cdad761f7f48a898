"""Hostile AWS answers x every endpoint of batch-agent-aws (issue 13, item 4).

A loopback proxy stands in front of the fakes (fake_aws.py for task metadata, container
credentials and IMDS, fake_batch.py for Batch, fake_sts.py for STS). The requests of the
endpoint under test get one hostile answer; every other request goes to the fake as it
came (Host included, so that SigV4 still verifies) and comes back as the fake answered.

The seven answers:
  huge        200, 100 MiB of chunked body (no length to refuse up front)
  truncated   the fake's real answer, Content-Length intact, cut at half, then close
  drip        the fake's real answer, one byte per second from the status line on
  error500    HTTP 500 with the endpoint's own error format, every time
  redirect    307 to the same path on another host (127.0.0.2), which counts visitors
  nonhttp     an SSH banner
  hugeheader  200 with 80 KiB of ordinary header lines (each short)

Documented outcome (agent/aws/README.md, "Hostile answers"): huge, redirect, nonhttp and
hugeheader are bad answers, 76, not retried; truncated, drip and error500 are retried
per the endpoint's policy, then 69. imds-probe (the IMDS token) answers 69 for all
seven: IMDS is unusable. spot-watch keeps polling through each of them, given to its
polls or to its token renewals (logged), still prints a notice once IMDS answers again,
and stops at once on SIGTERM, exit 0, also in the middle of an answer.

Each run must end within calls x (attempts x per-attempt timeout + the backoff between
attempts) + 2 s, scaled by BATCH_AGENT_TIMEOUT_SCALE: --timeout 1 --max-attempts 2
where the command takes them; the container credentials endpoint's and the IMDS
token's fixed policies otherwise. The redirect's other host gets no connection, no
secret reaches stderr, and nothing is left in the run's process group."""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import fake_aws
import fake_batch
import fake_sts
from fake_aws import check

cases, case = fake_aws.case_list()
SCALE = fake_aws.slowdown()
KINDS = ("huge", "truncated", "drip", "error500", "redirect", "nonhttp", "hugeheader")
RETRIED = ("truncated", "drip", "error500")
HUGE_BYTES = 100 << 20
# What stderr must say, per answer.
WORDS = {"huge": "larger than", "truncated": "partial file", "drip": "no answer in time",
         "error500": "HTTP 500", "redirect": "not followed", "nonhttp": "not HTTP",
         "hugeheader": "headers larger than 64 KiB"}
JOB = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f"
OTHER_JOB = "3286a19c-68a9-47c9-8000-427d23ffc7ca"
ROLE = "arn:aws:iam::123456789012:role/batch-agent-irsa"
WEB_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImV4YW1wbGUifQ.eyJhdWQiOlsic3RzLmFtYXpvbmF3cy5jb20iXX0.hostile"
KEY_ID, SECRET = "AKIDHOSTILEMATRIX", "hostile-matrix-secret-key"
SHORT = ["--connect-timeout", "1", "--timeout", "1", "--max-attempts", "2"]
TMP = tempfile.mkdtemp(prefix="test_aws_hostile_matrix.")


class HostileProxy:
    """Loopback front of the fake at upstream_port: a request for which target(method,
    path) is true gets the answer self.kind (None: the fake's own); every other request
    is passed on. Each connection is answered once, then closed."""

    def __init__(self, upstream_port, target, kind, error500):
        self.upstream_port, self.target, self.kind, self.error500 = upstream_port, target, kind, error500
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.hits = 0            # requests that got a hostile answer
        self.passed = []         # paths passed on to the fake
        self.huge_sent = []      # bytes of each huge body sent before the client hung up
        self.drips_cut = 0       # drips the client hung up on
        self.bait_visits = 0
        self.sock = self._listen("127.0.0.1")
        self.bait = self._listen("127.0.0.2")
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, args=(self.sock, self._serve), daemon=True).start()
        threading.Thread(target=self._accept, args=(self.bait, self._visit), daemon=True).start()

    @staticmethod
    def _listen(address):
        s = socket.socket()
        s.bind((address, 0))
        s.listen(16)
        return s

    def close(self):
        self.stop.set()
        self.sock.close()
        self.bait.close()

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout * SCALE
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def _accept(self, sock, fn):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=fn, args=(conn,), daemon=True).start()

    def _visit(self, conn):
        with self.cond:
            self.bait_visits += 1
            self.cond.notify_all()
        conn.close()

    def _serve(self, conn):
        with conn:
            conn.settimeout(10 * SCALE)
            try:
                method, path, headers, body = self._read_request(conn)
                with self.cond:
                    kind = self.kind if self.target(method, path) else None
                if kind is None:
                    conn.sendall(self._passed_on(method, path, headers, body))
                else:
                    self._hostile(conn, kind, method, path, headers, body)
            except (OSError, ValueError):
                pass

    @staticmethod
    def _read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise ValueError("no request")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        names = {n.lower(): v for n, v in headers}
        if names.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = int(names.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                raise ValueError("short request body")
            body += chunk
        return method, path, headers, body

    def _upstream(self, method, path, headers, body):
        """The fake's answer: (status, reason, headers, body)."""
        c = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=10 * SCALE)
        try:
            c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in ("connection", "expect"):
                    c.putheader(name, value)
            c.endheaders(body if body else None)
            r = c.getresponse()
            return r.status, r.reason, r.getheaders(), r.read()
        finally:
            c.close()

    def _passed_on(self, method, path, headers, body, declared=None):
        with self.cond:
            self.passed.append(path)
            self.cond.notify_all()
        status, reason, got, data = self._upstream(method, path, headers, body)
        head = "HTTP/1.1 %d %s\r\n" % (status, reason)
        for name, value in got:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                head += "%s: %s\r\n" % (name, value)
        head += "Content-Length: %d\r\nConnection: close\r\n\r\n" % (len(data) if declared is None else declared)
        return head.encode("latin-1") + data

    def _hostile(self, conn, kind, method, path, headers, body):
        with self.cond:
            self.hits += 1
            self.cond.notify_all()
        if kind == "huge":
            self._huge(conn)
        elif kind == "truncated":
            whole = self._passed_on(method, path, headers, body)
            head, data = whole.split(b"\r\n\r\n", 1)
            conn.sendall(head + b"\r\n\r\n" + data[: len(data) // 2])
        elif kind == "drip":
            whole = self._passed_on(method, path, headers, body)
            for i, byte in enumerate(whole):
                if i > 0 and self.stop.wait(1.0):
                    return
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    with self.cond:
                        self.drips_cut += 1
                        self.cond.notify_all()
                    return
        elif kind == "error500":
            status, extra, doc = self.error500
            data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n" +
                         b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in extra) +
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(data), data))
        elif kind == "redirect":
            conn.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:%d%s\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                         % (self.bait.getsockname()[1], path.encode()))
        elif kind == "nonhttp":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        elif kind == "hugeheader":
            pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 200) for i in range(400))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + pad +
                         b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")

    def _huge(self, conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        chunk = b"x" * 65536
        sent = 0
        try:
            first = b'{"padding":"'
            conn.sendall(b"%x\r\n%s\r\n" % (len(first), first))
            while sent < HUGE_BYTES and not self.stop.is_set():
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            conn.sendall(b'2\r\n"}\r\n0\r\n\r\n')
        finally:
            with self.cond:
                self.huge_sent.append(sent)
                self.cond.notify_all()


# ---- the endpoints ---------------------------------------------------------------------

class Endpoint:
    """One row of the matrix: its command, the fake behind the proxy, which requests are
    its own, its error format, and its documented policy (--help, agent/aws/README.md):
    per-attempt timeout, attempts, the longest sleep between attempts, calls per run."""

    def __init__(self, name, args, target, error500, timeout, attempts, sleep, calls=1,
                 codes=None):
        self.name, self.args, self.target, self.error500 = name, args, target, error500
        self.timeout, self.attempts, self.sleep, self.calls = timeout, attempts, sleep, calls
        self.codes = codes or {k: (69 if k in RETRIED else 76) for k in KINDS}

    def tries(self, kind):
        return self.attempts if kind in RETRIED else 1

    def bound(self, kind):
        """Seconds the run may take: every attempt its full timeout, every sleep its
        longest, and 2 s for starting and ending the process on a busy machine (an
        attempt too many is caught by counting them, not by the clock)."""
        n = self.tries(kind)
        return self.calls * (n * self.timeout + (n - 1) * self.sleep) + 2.0


def batch_upstream():
    f = fake_batch.FakeBatch(credentials={KEY_ID: SECRET})
    f.add_job_definition("pool-worker", revision=1)
    for jid in (JOB, OTHER_JOB):
        f.add_job(jid, "worker", "queue", "pool-worker", parameters={"manager": "198.18.0.10:9000"})
    return f, f.port, {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}


def aws_upstream():
    f = fake_aws.FakeAWS()
    return f, f.port, {}


def sts_upstream():
    f = fake_sts.FakeSTS(tokens={WEB_TOKEN: [ROLE]})
    token = os.path.join(TMP, "web-identity-token")
    with open(token, "w") as out:
        out.write(WEB_TOKEN)
    return f, f.port, {"AWS_WEB_IDENTITY_TOKEN_FILE": token, "AWS_ROLE_ARN": ROLE,
                       "AWS_ROLE_SESSION_NAME": "hostile-matrix"}


def close(fake):
    (fake.close if hasattr(fake, "close") else fake.stop)()


# Error formats: Batch's (botocore model: ServerException, 500, x-amzn-ErrorType and
# {"message"}, as fake_batch answers); STS's JSON query error (fake_sts's envelope) with
# AWS's common InternalFailure; the ECS agent's credentials error (InternalServerError,
# CONTAINER_CREDENTIALS_RULES.md); task metadata's bare JSON string; IMDS: none documented,
# an empty body.
BATCH_500 = (500, [("x-amzn-ErrorType", "ServerException")], {"message": "Internal server error"})
STS_500 = (500, [], {"Error": {"Type": "Receiver", "Code": "InternalFailure",
                               "Message": "An internal error occurred"}, "RequestId": str(uuid.uuid4())})
CREDS_500 = (500, [], {"code": "InternalServerError", "message": "CredentialsV2Request: internal error",
                       "HTTPErrorCode": 500})
TMDS_500 = (500, [], "internal server error")
IMDS_500 = (500, [], b"")


def post(path):
    return lambda method, p: method == "POST" and p == path


ENDPOINTS = [
    # Batch: 3 s connect, 10 s x 4 by default; backoff 200 ms before the 2nd attempt.
    (Endpoint("describe-jobs", SHORT + ["job-parameters"], post("/v1/describejobs"), BATCH_500,
              1, 2, 0.2), batch_upstream, "BATCH_AGENT_AWS_ENDPOINT_URL"),
    (Endpoint("submit-job", SHORT + ["submit-job", "--job-name", "pool-1", "--job-queue", "queue",
                                     "--job-definition", "pool-worker:1"],
              post("/v1/submitjob"), BATCH_500, 1, 2, 0.2), batch_upstream, "BATCH_AGENT_AWS_ENDPOINT_URL"),
    # Two ids: each is tried with its own attempts, the second after the first failed.
    (Endpoint("terminate-job", SHORT + ["stop-jobs", "--reason", "hostile", JOB, OTHER_JOB],
              post("/v1/terminatejob"), BATCH_500, 1, 2, 0.2, calls=2),
     batch_upstream, "BATCH_AGENT_AWS_ENDPOINT_URL"),
    # STS: 2 s connect, 5 s x 3 by default; backoff 200 ms.
    (Endpoint("sts", SHORT + ["job-parameters"], post("/"), STS_500, 1, 2, 0.2),
     sts_upstream, "AWS_ENDPOINT_URL_STS"),
    # The container credentials endpoint keeps botocore's 2 s x 3, 1 s apart.
    (Endpoint("container-credentials", SHORT + ["job-parameters"],
              lambda m, p: p.startswith("/v2/credentials/"), CREDS_500, 2, 3, 1.0),
     aws_upstream, "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    # Task metadata: 1 s connect, 3 s x 3 by default; backoff 100 ms.
    (Endpoint("task-metadata", SHORT + ["task-metadata"], lambda m, p: p.startswith("/v4/"),
              TMDS_500, 1, 2, 0.1), aws_upstream, "ECS_CONTAINER_METADATA_URI_V4"),
    # The IMDS token: fixed 1 s x 2, 100 ms apart; any failure is 69.
    (Endpoint("imds-token", ["imds-probe"], lambda m, p: p == "/latest/api/token", IMDS_500,
              1, 2, 0.1, codes={k: 69 for k in KINDS}), aws_upstream, "AWS_EC2_METADATA_SERVICE_ENDPOINT"),
]


def endpoint_env(variable, proxy, fake):
    env = {"AWS_REGION": "us-east-1", "AWS_BATCH_JOB_ID": JOB}
    if variable == "AWS_CONTAINER_CREDENTIALS_FULL_URI":
        env[variable] = proxy.url + fake.creds_path
    elif variable == "ECS_CONTAINER_METADATA_URI_V4":
        env[variable] = proxy.url + fake.tmds_prefix
    else:
        env[variable] = proxy.url
    return env


def secrets_of(fake):
    if isinstance(fake, fake_aws.FakeAWS):
        return [fake.creds_doc["SecretAccessKey"], fake.creds_doc["Token"]]
    if isinstance(fake, fake_sts.FakeSTS):
        return [WEB_TOKEN, fake.issued["SecretAccessKey"], fake.issued["SessionToken"]]
    return [SECRET]


def spawn(args, env):
    """The program in a process group of its own, so that whatever it left can be found."""
    e = fake_aws.base_env()
    e.update(env)
    return subprocess.Popen(fake_aws.wrapper() + [fake_aws.binary()] + list(args), env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def nothing_left(p):
    try:
        os.killpg(p.pid, 0)
    except ProcessLookupError:
        return
    os.killpg(p.pid, signal.SIGKILL)
    raise AssertionError("processes left in the group of pid %d" % p.pid)


def run_cell(ep, make_upstream, variable, kind):
    fake, port, env = make_upstream()
    proxy = HostileProxy(port, ep.target, kind, ep.error500)
    try:
        env.update(endpoint_env(variable, proxy, fake))
        limit = ep.bound(kind) * SCALE + (15.0 if fake_aws.wrapper() else 0.0)
        start = time.monotonic()
        p = spawn(ep.args, env)
        try:
            out, err = p.communicate(timeout=limit + 10 * SCALE)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError("%s x %s: still running after %.1fs\n%s" % (ep.name, kind, limit, err))
        took = time.monotonic() - start
        r = fake_aws.Result(p.returncode, out, err, took)
        where = "%s x %s: " % (ep.name, kind)
        check(r.code == ep.codes[kind], where + "exit %d" % ep.codes[kind], r)
        check(took <= limit, where + "took %.2fs, bound %.2fs" % (took, limit), r)
        check(WORDS[kind] in r.err, where + "stderr says %r" % WORDS[kind], r)
        with proxy.cond:
            hits = proxy.hits
        check(hits == ep.calls * ep.tries(kind),
              where + "%d hostile answers served, expected %d" % (hits, ep.calls * ep.tries(kind)), r)
        if kind == "drip":
            low = ep.calls * ep.attempts * ep.timeout * 0.9
            check(took >= low, where + "ended by the timeout (%.2fs < %.2fs)" % (took, low), r)
        if kind == "huge":
            check(proxy.wait(lambda: len(proxy.huge_sent) == hits, 10),
                  where + "the huge answers ended", r)
            check(all(n < HUGE_BYTES for n in proxy.huge_sent),
                  where + "the client hung up before 100 MiB: %r" % proxy.huge_sent, r)
        check(proxy.bait_visits == 0, where + "the redirect's host was visited", r)
        for s in secrets_of(fake):
            check(s not in r.err and s not in r.out, where + "a secret in the output", r)
        nothing_left(p)
        return took
    finally:
        proxy.close()
        close(fake)


def matrix_row(entry):
    ep, make_upstream, variable = entry
    for kind in KINDS:
        took = run_cell(ep, make_upstream, variable, kind)
        print("    %-22s %-10s exit %d in %.2fs (bound %.1fs)" % (
            ep.name, kind, ep.codes[kind], took, ep.bound(kind) * SCALE), flush=True)


def row_case(entry):
    def fn():
        matrix_row(entry)
    fn.__name__ = "matrix_" + entry[0].name.replace("-", "_")
    return case(fn)


for _entry in ENDPOINTS:
    row_case(_entry)


# ---- spot-watch: the loop goes on ---------------------------------------------------------

class Lines:
    """A stream's lines, collected in a thread."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout * SCALE
        with self.cond:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


TERMINATE = fake_aws.sample("imds/spot_instance-action_terminate_docs.json")
ACTION = "/latest/meta-data/spot/instance-action"


def spot_watch_cell(kind, route):
    """route (the instance-action polls, or the token renewals: --token-ttl 1 renews every
    0.75 s) gets kind once the watcher runs: it must say so, go on polling (the hostile
    requests come again, in a later round), print the notice once IMDS answers again,
    and end at once on SIGTERM, also mid-answer."""
    fake = fake_aws.FakeAWS()
    proxy = HostileProxy(fake.port, lambda m, p: p == route, None, IMDS_500)
    where = "spot-watch %s x %s: " % (route, kind)
    polls = route == ACTION
    # Polls take --timeout; 3 s, so that a stop within 1 s of SIGTERM mid-drip is the
    # abort, not the attempt's end. Token requests keep their fixed 1 s.
    timeout = 3 if polls else 1
    try:
        p = spawn(["--connect-timeout", "1", "--timeout", str(timeout), "--max-attempts", "2",
                   "spot-watch", "--interval", "0.1"] + ([] if polls else ["--token-ttl", "1"]),
                  {"AWS_EC2_METADATA_SERVICE_ENDPOINT": proxy.url})
        out, err = Lines(p.stdout), Lines(p.stderr)
        try:
            check(proxy.wait(lambda: ACTION in proxy.passed, 5), where + "first poll %r" % err.lines)
            with proxy.cond:
                proxy.kind = kind
            tries = 2 if kind in RETRIED else 1
            # More hostile answers than one request's attempts: a later round came.
            went_on = proxy.wait(lambda: proxy.hits > tries, 2 * (tries * timeout + 0.5) + 5)
            check(went_on, where + "polling went on (%d hostile, %r)" % (proxy.hits, err.lines))
            check(p.poll() is None, where + "the watcher is still running")
            check(err.wait(lambda ls: any(WORDS[kind] in l and "warn" in l for l in ls), 5),
                  where + "logged %r: %r" % (WORDS[kind], err.lines))
            with proxy.cond:
                proxy.kind = None
                fake.imds_action_after = 0
            check(out.wait(lambda ls: len(ls) >= 1, 10),
                  where + "the notice once IMDS answers: %r %r" % (out.lines, err.lines))
            check(json.loads(out.lines[0]) == {"type": "instance-action", "action": TERMINATE["action"],
                                               "time": TERMINATE["time"]}, where + "notice %r" % out.lines)
            # Hostile again; SIGTERM while an answer is under way (the drip's is long).
            with proxy.cond:
                before = proxy.hits
                proxy.kind = kind
            check(proxy.wait(lambda: proxy.hits > before, 10), where + "hostile again")
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            code = p.wait(timeout=10 * SCALE)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        # The agent gives its watcher 1 s after the SIGTERM (README, "Grace and Batch's 30 seconds").
        limit = 1.0 * SCALE + (15.0 if fake_aws.wrapper() else 0.0)
        check(code == 0, where + "exit 0 on SIGTERM, got %s: %r" % (code, err.lines))
        check(took <= limit, where + "stopped in %.2fs, limit %.2fs" % (took, limit))
        if kind == "drip":
            check(proxy.wait(lambda: proxy.drips_cut > 0, 5), where + "the drip was cut by the watcher")
        check(err.wait(lambda ls: any("stopped by a signal" in l for l in ls), 5),
              where + "says it stopped: %r" % err.lines)
        check(proxy.bait_visits == 0, where + "the redirect's host was visited")
        nothing_left(p)
        return took
    finally:
        proxy.close()
        fake.close()


def spot_watch_row(route, name):
    for kind in KINDS:
        took = spot_watch_cell(kind, route)
        print("    %-22s %-10s kept polling; SIGTERM: exit 0 in %.2fs" % (name, kind, took), flush=True)


@case
def spot_watch_polls_keep_watching():
    spot_watch_row(ACTION, "spot-watch polls")


@case
def spot_watch_token_renewals_keep_watching():
    spot_watch_row("/latest/api/token", "spot-watch token")


if __name__ == "__main__":
    raise SystemExit(fake_aws.main_cases(cases))
