"""Helpers for the multi-node (MNP) integration tests: starting agents as Batch would,
watching their stderr, payload scripts, and a minimal case runner.

Standard library only; run with /usr/bin/python3. Environment (set by ctest):
BATCH_AGENT_BIN, and BATCH_AGENT_WRAPPER (e.g. "valgrind -q --error-exitcode=99"),
which is put before every agent command.
"""

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("BATCH_AGENT_SOURCE_DIR", os.path.normpath(os.path.join(HERE, "..", "..")))
BIN = os.environ.get("BATCH_AGENT_BIN") or os.path.join(SOURCE_DIR, "build", "release", "agent", "batch-agent")
WRAPPER = shlex.split(os.environ.get("BATCH_AGENT_WRAPPER", ""))
# Timeouts stretch under valgrind.
# What a test run sets for every process: sanitizer verdicts (exitcode=99 and the
# like) and the run's own temporary directory.
PASSED_THROUGH = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TMPDIR")
SLOW = float(os.environ.get("BATCH_AGENT_TIMEOUT_SCALE") or (4.0 if WRAPPER else 1.0))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "peers"))


def wait_s(seconds):
    """An agent-side --wait-timeout that a test expects to expire, stretched by SLOW so
    that the nodes meant to make it still do under valgrind; formatted as the agent
    prints it ("%.3g s"), for the log checks."""
    return "%.3g" % (seconds * SLOW)

EX_USAGE, EX_UNAVAILABLE, EX_PROTOCOL, EX_NOPERM, EX_CONFIG = 64, 69, 76, 77, 78

_all_agents = []


class Skip(Exception):
    """A capability the test needs is absent: the script exits 77 if nothing ran."""


class Failure(AssertionError):
    pass


def need_netns():
    """Skip unless network namespaces can be made here (tests/lib/netns.py)."""
    import netns
    try:
        netns.check_available()
    except netns.Unavailable as e:
        raise Skip(str(e)) from None


def check(cond, message):
    if not cond:
        raise Failure(message)


# ----------------------------------------------------------------------------------
# A job's identity and environment

def new_cookie():
    return secrets.token_hex(32)


class Job:
    """One MNP job: id, node count, main index, cookie; env() gives a node's
    AWS_BATCH_* environment exactly as Batch sets it."""

    def __init__(self, num_nodes, main_index=0, cookie=None):
        self.uuid = str(uuid.uuid4())
        self.num_nodes = num_nodes
        self.main_index = main_index
        self.cookie = cookie or new_cookie()

    def env(self, index, main_addr=None, cookie=None, extra=None):
        env = {k: v for k, v in os.environ.items() if k in PASSED_THROUGH}
        env.update({
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "AWS_BATCH_JOB_ID": f"{self.uuid}#{index}",
            "AWS_BATCH_JOB_ATTEMPT": "1",
            "AWS_BATCH_JOB_NUM_NODES": str(self.num_nodes),
            "AWS_BATCH_JOB_NODE_INDEX": str(index),
            "AWS_BATCH_JOB_MAIN_NODE_INDEX": str(self.main_index),
            "AWS_BATCH_JQ_NAME": "mnp-queue",
            "AWS_BATCH_CE_NAME": "mnp-ce",
        })
        if index != self.main_index and main_addr is not None:
            env["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"] = main_addr
        c = self.cookie if cookie is None else cookie
        if c is not False:
            env["BATCH_AGENT_COOKIE"] = c
        if extra:
            env.update(extra)
        return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """True once a socket listens on TCP port `port` (any IPv4 address), read from
    /proc/net/tcp: the check is no connection the listener would have to refuse."""
    want = ":%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want) and fields[3] == "0A":
                return True
    return False


# ----------------------------------------------------------------------------------
# Agents

class Agent:
    """One batch-agent process with its stderr in a file."""

    def __init__(self, name, args, env, workdir, net=None, host=None, preexec_fn=None):
        self.name = name
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self.stdout_path = os.path.join(workdir, f"{name}.stdout")
        argv = WRAPPER + [BIN, *args]
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        kw = dict(env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                  start_new_session=True, preexec_fn=preexec_fn)
        if net is not None:
            self.proc = net.popen(host, argv, **kw)
        else:
            self.proc = subprocess.Popen(argv, **kw)
        self.pid = self.proc.pid
        self.started = time.monotonic()
        _all_agents.append(self)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f"{self.name} did not exit within {timeout * SLOW:.0f} s; stderr:\n{self.stderr()}") from None

    def wait_for_log(self, text, timeout):
        """Until text appears in stderr (returns it), or Failure."""
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            err = self.stderr()
            if text in err:
                return err
            if self.proc.poll() is not None:
                err = self.stderr()
                if text in err:
                    return err
                raise Failure(f"{self.name} exited {self.proc.returncode} before logging {text!r}; stderr:\n{err}")
            time.sleep(0.05)
        raise Failure(f"{self.name} did not log {text!r} within {timeout * SLOW:.0f} s; stderr:\n{self.stderr()}")

    def running(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def close(self):
        self.kill()
        # Payloads in the agent's session that outlived it: its own process group, and
        # the payload's (a payload leads a group of its own in the agent's session).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in session_members(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._err.close()
        self._out.close()


def session_members(sid):
    """Pids of the processes in session sid (field 6 of /proc/PID/stat)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def expect_exit(agent, code, timeout):
    rc = agent.wait(timeout)
    check(rc == code, f"{agent.name} exited {rc}, expected {code}; stderr:\n{agent.stderr()}")
    return rc


def kill_all_agents():
    for a in list(_all_agents):
        a.close()
    _all_agents.clear()


def wait_for_file(path, timeout, min_size=1):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        try:
            if os.path.getsize(path) >= min_size:
                time.sleep(0.02)  # let the writer finish its line
                return read(path)
        except OSError:
            pass
        time.sleep(0.05)
    raise Failure(f"{path} did not appear within {timeout * SLOW:.0f} s")


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_environ(pid):
    """/proc/<pid>/environ as a dict (entries without '=' kept as keys)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    out = {}
    for entry in raw.split(b"\0"):
        if entry:
            k, _, v = entry.partition(b"=")
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out, raw


# Payload scripts. {out} is the output directory; everything is plain sh.

def child_payload(out, hold=60):
    """Writes its view of the job, then waits (as a child's daemon would) until the
    main payload ends and the agent stops it."""
    script = (
        'set -e; o="$1/child-$AWS_BATCH_JOB_NODE_INDEX"; '
        'printf "%s\\n%s\\n" "$BATCH_AGENT_NODE_ADDR" "$BATCH_AGENT_MANAGER" > "$o.tmp"; '
        'env > "$o.env"; echo $$ > "$o.pid"; mv "$o.tmp" "$o"; '
        f'exec sleep {hold}'
    )
    return ["/bin/sh", "-c", script, "child", out]


def main_payload(out, wait_children=(), status=0, wait_s=20, gate=False):
    """Records its start, hostfile, node list and env; waits for the children's
    files (and for $out/go when gate), then exits with status."""
    waits = " ".join(f'"$o/child-{i}"' for i in wait_children)
    gate_files = '"$o/go"' if gate else ""
    script = (
        'o="$1"; date +%s.%N > "$o/main.started"; echo "$PPID" > "$o/main.ppid"; '
        'cp "$BATCH_AGENT_HOSTFILE" "$o/hostfile"; printf "%s" "$BATCH_AGENT_NODES" > "$o/nodes"; '
        'env > "$o/main.env"; n=0; '
        f'for f in {waits} {gate_files}; do '
        'while [ ! -e "$f" ]; do n=$((n+1)); '
        f'[ $n -gt {int(wait_s * 20)} ] && break; sleep 0.05; done; done; '
        f'exit {status}'
    )
    return ["/bin/sh", "-c", script, "main", out]


# ----------------------------------------------------------------------------------
# Runner

class Runner:
    """Register cases with @runner.case; run() prints one line per case and the final
    `N passed, N failed[, N skipped]`, and exits 1 on failure, 77 when every case was
    skipped, else 0."""

    def __init__(self):
        self.cases = []

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def run(self, argv=None):
        argv = sys.argv[1:] if argv is None else argv
        only = set(argv)
        passed = failed = skipped = 0
        for fn in self.cases:
            if only and fn.__name__ not in only:
                continue
            workdir = tempfile.mkdtemp(prefix=f"mnp-{fn.__name__}-")
            t0 = time.monotonic()
            try:
                fn(workdir)
            except Skip as e:
                skipped += 1
                print(f"SKIP {fn.__name__}: {e}", flush=True)
            except Exception as e:  # noqa: BLE001 - each case reports for itself
                failed += 1
                print(f"FAIL {fn.__name__} ({time.monotonic() - t0:.1f} s): {e}", flush=True)
                if not isinstance(e, Failure):
                    traceback.print_exc()
                print(f"     (files kept in {workdir})", flush=True)
                workdir = None
            else:
                passed += 1
                print(f"PASS {fn.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
            finally:
                kill_all_agents()
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        summary = f"{passed} passed, {failed} failed"
        if skipped:
            summary += f", {skipped} skipped"
        print(summary, flush=True)
        if failed:
            sys.exit(1)
        if skipped and not passed:
            sys.exit(77)
        sys.exit(0)


def json_load(path):
    import json
    with open(path, encoding="utf-8") as f:
        return json.load(f)
