"""Shared helpers for the init-role integration tests of batch-agent.

Standard library only; run with /usr/bin/python3.

Environment:
  BATCH_AGENT_BIN          the batch-agent binary (set by ctest)
  BATCH_AGENT_NET_BIN, BATCH_AGENT_AWS_BIN, BATCH_AGENT_SOURCE_DIR   (set by ctest)
  BATCH_AGENT_WRAPPER      optional command prefix for the init under test, split with
                           shlex (e.g. "valgrind --error-exitcode=99 --log-file=...")
  BATCH_AGENT_TIMEOUT_SCALE  multiplies every timeout / upper time bound (default 1,
                           or 10 when a wrapper is set)
  INIT_UNDER_TEST          batch-agent (default) | tini | dumb-init | catatonit: lets the
                           suite be validated against the reference inits.

Every process a test starts is a descendant of the test process, which makes itself a
child subreaper: whatever a case leaves behind is re-parented to it, and the runner kills
and reaps all of it after each case. Every wait is bounded.
"""

import ctypes
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback

PYTHON = "/usr/bin/python3"
SKIP = 77

INIT = os.environ.get("INIT_UNDER_TEST", "batch-agent")
WRAPPER = shlex.split(os.environ.get("BATCH_AGENT_WRAPPER", ""))
SCALE = float(os.environ.get("BATCH_AGENT_TIMEOUT_SCALE") or (10 if WRAPPER else 1))
VALGRIND = bool(WRAPPER) and "valgrind" in os.path.basename(WRAPPER[0])

# What each reference init can do, so cases needing more are skipped rather than failed.
#   pid1: works as PID 1          subreaper: reaps orphans when not PID 1
#   group: has a "signal the whole process group" mode
#   nogroup: has a "signal only the direct child" mode
#   setpgid: puts the payload in its own process group
#   tty: hands the terminal foreground to the payload
#   exitcodes127: 127/126 for payload not found / not executable
#   sigmask: the payload gets the signal mask the init inherited (dumb-init empties it,
#            catatonit 0.1.7 leaks TSTP/TTIN/TTOU blocked)
FEATURES = {
    "batch-agent": {"pid1", "subreaper", "group", "nogroup", "setpgid", "tty",
                    "exitcodes127", "sigmask", "agent"},
    "tini": {"pid1", "subreaper", "group", "nogroup", "setpgid", "tty", "exitcodes127",
             "sigmask"},
    "dumb-init": {"pid1", "group", "nogroup"},  # setsid only in its group mode
    "catatonit": {"pid1", "subreaper", "group", "nogroup", "tty"},  # tty: shares the fg group
}
if INIT not in FEATURES:
    sys.exit("INIT_UNDER_TEST must be one of %s, not %r" % (", ".join(FEATURES), INIT))

CATCHABLE_FORWARDED = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM",
                       "SIGWINCH", "SIGCONT", "SIGPWR"]


def forwarded_signals():
    """The signals the contract says are forwarded, as numbers, incl. SIGRTMIN..SIGRTMAX
    (but SIGRTMAX under valgrind, which reserves it for itself)."""
    sigs = [getattr(signal, n) for n in CATCHABLE_FORWARDED]
    sigs += list(range(signal.SIGRTMIN, signal.SIGRTMAX + (0 if VALGRIND else 1)))
    return [int(s) for s in sigs]


# ---------------------------------------------------------------- errors and runner

class Skip(Exception):
    """Raised by a case that cannot run here; message names the missing capability."""


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(got, want, what):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


def skip_script(msg):
    """Skip a whole script (exit 77), naming what is missing."""
    print("SKIP: " + msg)
    sys.stdout.flush()
    sys.exit(SKIP)


def binary(var):
    path = os.environ.get(var)
    if not path:
        raise TestFailure("%s is not set (ctest sets it; set it by hand to run directly)" % var)
    if not os.access(path, os.X_OK):
        raise TestFailure("%s=%s is not an executable file" % (var, path))
    return path


_CASES = []


def case(name=None, modes=("pid1", "sub"), requires=(), agent_only=False):
    """Register a test case. The function gets the mode ("pid1": the init runs as real
    PID 1 of a new PID namespace; "sub": the init runs as an ordinary process and must act
    as child subreaper). requires: FEATURES the case needs ("subreaper" only matters in
    mode "sub"). agent_only marks batch-agent features the reference inits lack."""
    req = set(requires)
    if agent_only:
        req.add("agent")

    def deco(fn):
        _CASES.append((name or fn.__name__, fn, tuple(modes), req))
        return fn
    return deco


def run_cases(argv=None):
    """Run every registered case (optionally filtered by substrings in argv), print one
    line per result and a summary `N passed, N failed, N skipped`; exit 1 on a failure,
    77 when nothing ran at all, else 0."""
    argv = sys.argv[1:] if argv is None else argv
    become_subreaper()
    passed = failed = skipped = 0
    print("# init under test: %s%s (timeout scale %g)" % (
        INIT, " wrapped by " + " ".join(WRAPPER) if WRAPPER else "", SCALE))
    for name, fn, modes, req in _CASES:
        for mode in modes:
            full = "%s[%s]" % (name, mode)
            if argv and not any(a in full for a in argv):
                continue
            t0 = time.monotonic()
            status, detail = "PASS", ""
            try:
                missing = req - FEATURES[INIT]
                if mode == "pid1":
                    missing.discard("subreaper")  # PID 1 reaps orphans anyway
                if missing:
                    raise Skip("%s lacks %s" % (INIT, ", ".join(sorted(missing))))
                if mode == "pid1":
                    require_pidns()
                fn(mode)
            except Skip as e:
                status, detail = "SKIP", str(e)
            except Exception as e:  # noqa: BLE001 - any error is a failed case
                status = "FAIL"
                detail = "%s: %s" % (type(e).__name__, e)
                if not isinstance(e, TestFailure):
                    detail += "\n" + traceback.format_exc()
            finally:
                cleanup()
            dt = time.monotonic() - t0
            print("%s %s (%.2fs)%s" % (status, full, dt, (": " + detail) if detail else ""))
            sys.stdout.flush()
            if status == "PASS":
                passed += 1
            elif status == "FAIL":
                failed += 1
            else:
                skipped += 1
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    sys.stdout.flush()
    if failed:
        sys.exit(1)
    if passed == 0 and skipped:
        sys.exit(SKIP)
    sys.exit(0)


# ---------------------------------------------------------------- process plumbing

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


_pidns = None


def require_pidns():
    """Skip unless `unshare --pid --fork --mount-proc` works here."""
    global _pidns
    if _pidns is None:
        try:
            r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               timeout=30 * SCALE)
            _pidns = "" if r.returncode == 0 else (
                "unshare --pid --fork --mount-proc fails: " + r.stderr.decode(errors="replace").strip())
        except (OSError, subprocess.TimeoutExpired) as e:
            _pidns = "unshare --pid --fork --mount-proc unavailable: %s" % e
    if _pidns:
        raise Skip(_pidns)


PIDNS_PREFIX = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def init_argv(payload, group=False, grace=None, extra=(), role=True, exec_=False):
    """argv for the init under test supervising `payload` (a list), including the
    wrapper. group: signal the payload's whole process group. grace: seconds (agent
    only). extra: further batch-agent options (agent only)."""
    payload = list(payload)
    if INIT == "batch-agent":
        argv = WRAPPER + [binary("BATCH_AGENT_BIN")]
        if role:
            argv += ["--role", "init"]
        if group:
            argv.append("-g")
        if grace is not None:
            argv += ["--grace", str(grace)]
        if exec_:
            argv.append("--exec")
        argv += list(extra)
        return argv + ["--"] + payload
    if grace is not None or extra or exec_:
        raise Skip("%s has no equivalent of batch-agent options %s" % (
            INIT, " ".join(list(extra) + (["--grace"] if grace is not None else []) + (["--exec"] if exec_ else []))))
    if INIT == "tini":
        return WRAPPER + ["/usr/bin/tini", "-s"] + (["-g"] if group else []) + ["--"] + payload
    if INIT == "dumb-init":
        return WRAPPER + ["/usr/bin/dumb-init"] + ([] if group else ["--single-child"]) + payload
    if INIT == "catatonit":
        return WRAPPER + ["/usr/bin/catatonit"] + (["-g"] if group else []) + ["--"] + payload
    raise AssertionError(INIT)


def mode_argv(mode, argv):
    """Prefix argv so the init runs as PID 1 of a new PID namespace (mode "pid1") or as it
    is (mode "sub")."""
    if mode == "pid1":
        require_pidns()
        return PIDNS_PREFIX + list(argv)
    if mode == "sub":
        return list(argv)
    raise ValueError(mode)


def clean_env(**extra):
    """The test's environment without AWS_BATCH_* / BATCH_AGENT_* / tini variables (so
    role auto-detection sees no cluster), plus `extra` (None values remove)."""
    # Nothing of the host's AWS either: under ECS, ECS_CONTAINER_METADATA_URI_V4 would
    # make the agent watch the real IMDS for Spot notices.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ECS_", "BATCH_AGENT_", "TINI_", "DUMB_INIT_"))}
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


_procs = []
_raw_pids = []


class Init:
    """A running init under test. .proc is the Popen of the outermost process (unshare in
    pid1 mode); .pid is the host PID of the init itself (to signal it, read its /proc)."""

    def __init__(self, mode, argv, **popen_kw):
        self.mode = mode
        self.argv = mode_argv(mode, argv)
        popen_kw.setdefault("env", clean_env())
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        popen_kw.setdefault("close_fds", True)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, **popen_kw)
        _procs.append(self.proc)
        self._pid = None

    @property
    def pid(self):
        if self._pid is None:
            if self.mode == "sub":
                self._pid = self.proc.pid
            else:
                self._pid = wait_for(lambda: (children(self.proc.pid) or [None])[0],
                                     5, "the init to be forked by unshare")
        return self._pid

    def signal(self, sig):
        os.kill(self.pid, sig)

    def host_pids(self, pids):
        """Translate pids a payload reported (as seen inside the init's PID namespace) to
        host pids; only processes still present can be translated (others are left out
        in mode pid1)."""
        if self.mode == "sub":
            return list(pids)
        inner = {}
        for hp in [self.pid] + descendants(self.pid):
            try:
                ns = proc_status(hp).get("NSpid", "").split()
            except OSError:
                continue
            if len(ns) >= 2:
                inner[int(ns[-1])] = hp
        return [inner[x] for x in pids if x in inner]

    def wait(self, timeout=10):
        """Exit status of the init (returncode as subprocess reports it), bounded."""
        try:
            return self.proc.wait(timeout=timeout * SCALE)
        except subprocess.TimeoutExpired:
            raise TestFailure("init did not exit within %gs" % (timeout * SCALE)) from None

    def communicate(self, timeout=10):
        try:
            return self.proc.communicate(timeout=timeout * SCALE)
        except subprocess.TimeoutExpired:
            raise TestFailure("init did not exit within %gs" % (timeout * SCALE)) from None

    def alive(self):
        return self.proc.poll() is None


def run(mode, payload, timeout=10, input=None, **kw):
    """Run the init with `payload` to completion; returns (returncode, stdout, stderr)
    as bytes. kw: init_argv options plus env/cwd/pass_fds."""
    popen_kw = {k: kw.pop(k) for k in ("env", "cwd", "pass_fds", "preexec_fn") if k in kw}
    argv = kw.pop("argv", None) or init_argv(payload, **kw)
    p = Init(mode, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
             stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, **popen_kw)
    try:
        out, err = p.proc.communicate(input=input, timeout=timeout * SCALE)
    except subprocess.TimeoutExpired:
        raise TestFailure("init (%s) did not exit within %gs" % (
            " ".join(p.argv), timeout * SCALE)) from None
    return p.proc.returncode, out, err


def track_pid(pid):
    """Register a raw child pid (e.g. from pty.fork) to be killed and reaped in cleanup."""
    _raw_pids.append(pid)


def cleanup():
    """SIGKILL everything the case left (all our descendants, re-parented to us since we
    are a subreaper), then reap it all. Bounded."""
    me = os.getpid()
    for _ in range(5):
        victims = descendants(me)
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    for p in _procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (p.stdin, p.stdout, p.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
    _procs.clear()
    for pid in _raw_pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    _raw_pids.clear()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if not descendants(me):
                break
            time.sleep(0.02)


# ---------------------------------------------------------------- /proc helpers

def proc_stat(pid):
    """(state, ppid, pgrp, session, utime+stime ticks) of pid, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[11]) + int(rest[12])


def proc_state(pid):
    st = proc_stat(pid)
    return st[0] if st else None


def is_alive(pid):
    """Exists and is not a zombie (a dead process not yet reaped does not count)."""
    return proc_state(pid) not in (None, "Z", "X")


def children(pid):
    pids = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return []
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                pids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return pids


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def zombie_children(pid):
    return [c for c in children(pid) if proc_state(c) == "Z"]


def proc_status(pid):
    """Fields of /proc/pid/status as a dict of strings."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[:-1]
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- waiting

def wait_for(pred, timeout, what, interval=0.01):
    """Poll pred() until it returns something truthy (returned); fail after timeout
    (scaled) seconds, naming `what`."""
    deadline = time.monotonic() + timeout * SCALE
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %gs waiting for %s" % (timeout * SCALE, what))
        time.sleep(interval)


def wait_file(path, timeout=10, what=None, nonempty=True):
    def ok():
        try:
            return os.path.getsize(path) > 0 if nonempty else os.path.exists(path)
        except OSError:
            return False
    wait_for(ok, timeout, what or ("file %s" % path))


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def read_pids(path):
    return [int(x) for x in read_text(path).split()]


class TempDir:
    """A temporary directory: `with TempDir() as d: d.path("x")`."""

    def __enter__(self):
        self._td = tempfile.TemporaryDirectory(prefix="ba-init-")
        self.dir = self._td.name
        return self

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text, mode=0o644):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def __exit__(self, *exc):
        self._td.cleanup()


def py_payload(code):
    """A payload running Python `code` with Debian's interpreter (-S: no site, faster)."""
    return [PYTHON, "-S", "-c", code]


# Small Python payload: installs a recording handler for every signal in argv[2:]
# (numbers), appends "<signo>\n" to argv[1] for each one received, writes "ready" to
# argv[1] + ".ready" and sleeps until killed (or up to 120 s).
RECORDER = r"""
import os, signal, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def h(sig, frame):
    os.write(out, b"%d\n" % sig)
for s in sys.argv[2:]:
    signal.signal(int(s), h)
with open(sys.argv[1] + ".ready", "w") as f:
    f.write("%d\n" % os.getpid())
end = time.monotonic() + 120
while time.monotonic() < end:
    time.sleep(0.05)
"""


def recorder_payload(record, sigs):
    return [PYTHON, "-S", "-c", RECORDER, record] + [str(int(s)) for s in sigs]


def recorded(record):
    return [int(x) for x in read_text(record).split()]


def signame(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def agent_stderr(err):
    """The agent's own stderr, minus a wrapper's lines (valgrind's "==PID== ...")."""
    if not WRAPPER:
        return err
    return b"".join(l for l in err.splitlines(keepends=True)
                    if not re.match(rb"==\d+==", l))


def parse_json_object(text, what):
    try:
        v = json.loads(text)
    except ValueError as e:
        raise TestFailure("%s is not JSON (%s): %r" % (what, e, text[:300])) from None
    check(isinstance(v, dict), "%s is not a JSON object: %r" % (what, text[:300]))
    return v
