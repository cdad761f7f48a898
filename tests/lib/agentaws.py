"""Helpers for the batch-agent tests that involve AWS endpoints (test_agent_aws*.py):
the agent itself (batch-agent, chain-loading batch-agent-net and running
batch-agent-aws) against the fakes of tests/peers/fake_aws.py and a fake native
manager (tests/peers/nativeproto.py), all on 127.0.0.1.

Standard library only; run with /usr/bin/python3. The test process is a child
subreaper: whatever a case leaves behind is killed and reaped after it (bounded).
Every default AWS address is replaced by a dead loopback port (fake_aws.base_env), so
nothing can reach 169.254.x.x.
"""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import agenttest
import fake_aws
import nativeproto

PYTHON = "/usr/bin/python3"
WRAPPER = shlex.split(os.environ.get("BATCH_AGENT_WRAPPER", ""))
SCALE = agenttest.SCALE
COOKIE = "agent-aws-test-cookie-0123456789"
# A captured array child job (batch/parallelcluster_captured), not an MNP node, so
# that role auto-detection sees no cluster.
ARRAY_JOB = "3286a19c-68a9-47c9-8000-427d23ffc7ca:1"
# From ecs_tmds_v4/task_awsvpc_ec2_docs.json: the task's IPv4 and the NORMAL
# container's limits (CPU units / 1024, MiB).
AWSVPC_IPV4 = "10.0.2.61"
SAMPLE_CPUS = 10 / 1024
SAMPLE_MEMORY = 128 << 20


# The shared assertions (agenttest), under the name these scripts use.
Failure = agenttest.TestFailure
check = agenttest.check
check_eq = agenttest.check_eq


# ---------------------------------------------------------------- the payload

# argv: DIR EXIT_CODE LINGER_SECONDS CATCH. With CATCH=1 records SIGTERM/SIGUSR1/SIGUSR2
# (one number per line in DIR/signals; else they kill it), writes DIR/info.json (pid, ppid, manager env), then waits until
# DIR/stop exists or LINGER seconds pass, and exits with EXIT_CODE.
PAYLOAD = r"""
import json, os, signal, sys, time
d, code, linger, catch = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
def rec(sig, frame):
    fd = os.open(os.path.join(d, "signals"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"%d\n" % sig)
    os.close(fd)
for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2) if catch else ():
    signal.signal(s, rec)
info = {"pid": os.getpid(), "ppid": os.getppid(),
        "manager": os.environ.get("BATCH_AGENT_MANAGER"),
        "node_addr": os.environ.get("BATCH_AGENT_NODE_ADDR"),
        "cookie": os.environ.get("BATCH_AGENT_COOKIE")}
with open(os.path.join(d, "info.tmp"), "w") as f:
    json.dump(info, f)
os.rename(os.path.join(d, "info.tmp"), os.path.join(d, "info.json"))
end = time.monotonic() + linger
while time.monotonic() < end and not os.path.exists(os.path.join(d, "stop")):
    time.sleep(0.02)
sys.exit(code)
"""


wait_for = agenttest.wait_for


_dirs = []


class Agent:
    """A running batch-agent with the recording payload, in its own temp dir.
    stdout/stderr go to files (no pipe can fill up)."""

    def __init__(self, args, env, code=0, linger=0.0, catch=True):
        self.dir = tempfile.mkdtemp(prefix="ba-agent-aws.")
        _dirs.append(self.dir)
        self.code = code
        self.out_path = os.path.join(self.dir, "agent.out")
        self.err_path = os.path.join(self.dir, "agent.err")
        argv = WRAPPER + [agenttest.binary("BATCH_AGENT_BIN")] + list(args) + [
            "--", PYTHON, "-S", "-c", PAYLOAD, self.dir, str(code), str(linger), "1" if catch else "0"]
        self.t0 = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, close_fds=True)
        agenttest._procs.append(self.proc)
        self.elapsed = None

    def path(self, name):
        return os.path.join(self.dir, name)

    @property
    def stderr(self):
        return agenttest.read_text(self.err_path)

    def info(self, timeout=20):
        """The payload's info.json, once it started."""
        wait_for(lambda: os.path.exists(self.path("info.json")) or self.proc.poll() is not None,
                 timeout, "the payload to start")
        if not os.path.exists(self.path("info.json")):
            raise Failure("the agent exited %s before the payload started\n%s" % (
                self.proc.returncode, self.stderr))
        with open(self.path("info.json")) as f:
            return json.load(f)

    def signals(self):
        return [int(x) for x in agenttest.read_text(self.path("signals")).split()]

    def stop_payload(self):
        with open(self.path("stop"), "w"):
            pass

    def wait(self, timeout=20):
        try:
            rc = self.proc.wait(timeout=timeout * SCALE)
        except subprocess.TimeoutExpired:
            raise Failure("the agent did not exit within %gs\n%s" % (timeout * SCALE, self.stderr)) from None
        self.elapsed = time.monotonic() - self.t0
        return rc

    def describe(self):
        return "exit %s\nagent stderr:\n%s" % (self.proc.returncode, self.stderr)


# ---------------------------------------------------------------- environments

def agent_env(fake=None, **extra):
    """fake_aws.base_env() (dead loopback for every default AWS address), the cookie, the
    job's identity and, with a fake, credentials it accepts and its Batch endpoint.
    extra: more variables; None removes one."""
    env = fake_aws.base_env()
    env["BATCH_AGENT_COOKIE"] = COOKIE
    env["AWS_BATCH_JOB_ID"] = ARRAY_JOB
    env["AWS_BATCH_JOB_ARRAY_INDEX"] = "1"
    env["AWS_BATCH_JOB_ATTEMPT"] = "1"
    env["AWS_REGION"] = "us-east-1"
    if fake is not None:
        env["AWS_ACCESS_KEY_ID"] = fake.creds_doc["AccessKeyId"]
        env["AWS_SECRET_ACCESS_KEY"] = fake.creds_doc["SecretAccessKey"]
        env["AWS_SESSION_TOKEN"] = fake.creds_doc["Token"]
        env["BATCH_AGENT_AWS_ENDPOINT_URL"] = fake.url
        env["AWS_REGION"] = fake.batch_region
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


# ---------------------------------------------------------------- fake native manager

class FakeManager:
    """A native-protocol manager on 127.0.0.1 that takes one worker: authenticates it,
    accepts it, and records every message it sends afterwards."""

    def __init__(self, heartbeat_ms=30000):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.heartbeat_ms = heartbeat_ms
        self.register = None
        self.messages = []
        self.error = None
        self.connections = 0
        self.local_addr = None
        self.closed = False
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn = None
        try:
            while not self.stop.is_set():
                try:
                    s, peer = self.sock.accept()
                except socket.timeout:
                    continue
                break
            else:
                return
            with self.cond:
                self.connections += 1
                self.peer = peer
            conn = nativeproto.Conn(s)
            reg, _ = nativeproto.manager_handshake(
                conn, COOKIE, decide=lambda r: nativeproto.accept(self.heartbeat_ms))
            with self.cond:
                self.register = reg
                self.cond.notify_all()
            while not self.stop.is_set():
                try:
                    msg = conn.recv_msg(timeout=0.2)
                except TimeoutError:
                    continue
                with self.cond:
                    self.messages.append(msg)
                    self.cond.notify_all()
        except nativeproto.ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the case
            with self.cond:
                self.error = "%s: %s" % (type(e).__name__, e)
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()
            if conn is not None:
                conn.close()

    def wait_register(self, timeout=20):
        deadline = time.monotonic() + timeout * SCALE
        with self.cond:
            while self.register is None and self.error is None and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            if self.register is None:
                raise Failure("no register message (error: %s, closed: %s)" % (self.error, self.closed))
            return self.register

    def wait_msg(self, mtype, timeout=20):
        deadline = time.monotonic() + timeout * SCALE
        with self.cond:
            while True:
                for m in self.messages:
                    if m["type"] == mtype:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise Failure("no %s message from the worker (got %s; error %s)" % (
                        mtype, [m["type"] for m in self.messages], self.error))
                self.cond.wait(left)

    def types(self):
        with self.cond:
            return [m["type"] for m in self.messages if m["type"] != "heartbeat"]

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- /proc

def maps(pid):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise Failure("process %d is gone: no maps to read" % pid) from None


def mapped_libraries(pid):
    libs = set()
    for line in maps(pid).splitlines():
        parts = line.split()
        if len(parts) >= 6 and "/" in parts[5]:
            libs.add(os.path.basename(parts[5]))
    return libs


def exe_name(pid):
    try:
        return os.path.basename(os.readlink("/proc/%d/exe" % pid))
    except OSError:
        return None


# ---------------------------------------------------------------- runner

def run_cases(cases):
    """cases: [(name, fn)]. Optional argv substrings select cases. Prints one line per
    case and `N passed, N failed`; exits 1 on a failure."""
    agenttest.become_subreaper()
    only = sys.argv[1:]
    passed = failed = 0
    print("# batch-agent %s%s (timeout scale %g)" % (
        os.environ.get("BATCH_AGENT_BIN"), " wrapped by " + " ".join(WRAPPER) if WRAPPER else "", SCALE))
    for name, fn in cases:
        if only and not any(o in name for o in only):
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any error fails the case
            failed += 1
            detail = "%s: %s" % (type(e).__name__, e)
            if not isinstance(e, Failure):
                detail += "\n" + traceback.format_exc()
            print("FAIL %s (%.2fs): %s" % (name, time.monotonic() - t0, detail))
        else:
            passed += 1
            print("PASS %s (%.2fs)" % (name, time.monotonic() - t0))
        finally:
            agenttest.cleanup()
            while _dirs:
                shutil.rmtree(_dirs.pop(), ignore_errors=True)
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)


def case_list():
    cases = []

    def case(fn):
        cases.append((fn.__name__, fn))
        return fn
    return cases, case
