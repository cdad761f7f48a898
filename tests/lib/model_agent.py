#!/usr/bin/python3
"""A rough Python model of batch-agent's *init role* contract, used only to check that the
batch-agent-only test cases pass against something implementing the contract (and
so are not wrong) before the real agent exists:

  BATCH_AGENT_BIN=tests/lib/model_agent.py PYTHONPATH=tests/lib:tests/peers \\
      /usr/bin/python3 tests/integration/test_init_config.py

Not used by ctest. Known gap: Python changes SIGPIPE/SIGXFSZ/SIGINT at start-up before
this code runs, so the "inherited ignored signals" cases cannot pass against it.
"""

import json
import os
import signal
import sys
import time

EX_USAGE, EX_CONFIG = 64, 78
FWD = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
       signal.SIGTERM, signal.SIGWINCH, signal.SIGCONT, signal.SIGPWR] + \
    list(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
LEVELS = ["error", "warn", "info", "debug"]
cfg = {"role": "auto", "group": False, "grace": 25.0, "exec": False, "log_level": "info",
       "log_format": "text", "manager": None}


def log(level, msg):
    if LEVELS.index(level) > LEVELS.index(cfg["log_level"]):
        return
    if cfg["log_format"] == "json":
        line = json.dumps({"level": level, "msg": msg})
    else:
        line = "batch-agent: %s: %s" % (level, msg)
    os.write(2, (line + "\n").encode())


def die(code, msg):
    log("error", msg)
    sys.exit(code)


def setopt(key, val, src, code):
    try:
        if key == "grace":
            v = float(val)
            if not v >= 0 or v != v or v == float("inf"):
                raise ValueError
            cfg[key] = v
        elif key in ("group", "exec"):
            if val not in ("1", "0", "true", "false"):
                raise ValueError
            cfg[key] = val in ("1", "true")
        elif key == "log_level":
            if val not in LEVELS:
                raise ValueError
            cfg[key] = val
        elif key == "log_format":
            if val not in ("text", "json"):
                raise ValueError
            cfg[key] = val
        elif key == "role":
            if val not in ("auto", "init", "worker", "main"):
                raise ValueError
            cfg[key] = val
    except ValueError:
        die(code, "invalid value %r for %s" % (val, src))


def parse(argv):
    for key in ("role", "group", "grace", "exec", "log_level", "log_format"):
        var = "BATCH_AGENT_" + key.upper()
        if var in os.environ:
            setopt(key, os.environ[var], var, EX_CONFIG)
    i, prog, want_print = 0, None, False
    takes = {"--role": "role", "--grace": "grace", "--log-level": "log_level",
             "--log-format": "log_format", "--manager": "manager"}
    while i < len(argv):
        a = argv[i]
        if a == "--":
            prog = argv[i + 1:]
            break
        if a in ("-h", "--help"):
            print("usage: batch-agent [--role R] [-g] [--grace S] [--exec] [--log-level L] "
                  "[--log-format F] [--print-config] [--] PROGRAM [ARG...]")
            sys.exit(0)
        if a in ("-V", "--version"):
            print("batch-agent 0.1.0 (model)")
            sys.exit(0)
        if a in ("-g", "--group"):
            cfg["group"] = True
        elif a == "--exec":
            cfg["exec"] = True
        elif a == "--print-config":
            want_print = True
        elif a in takes:
            if i + 1 >= len(argv):
                die(EX_USAGE, "%s needs a value" % a)
            i += 1
            if takes[a] == "manager":
                cfg["manager"] = argv[i]
            else:
                setopt(takes[a], argv[i], a, EX_USAGE)
        elif a.startswith("-"):
            die(EX_USAGE, "unknown option %s" % a)
        else:
            prog = argv[i:]
            break
        i += 1
    return prog, want_print


def strict_int(var):
    v = os.environ.get(var)
    if v is None:
        return None
    if not v.isdigit() or not v.isascii():
        die(EX_CONFIG, "%s=%r is not a non-negative integer" % (var, v))
    return int(v)


def batch_env():
    n = strict_int("AWS_BATCH_JOB_NUM_NODES")
    idx = strict_int("AWS_BATCH_JOB_NODE_INDEX")
    strict_int("AWS_BATCH_JOB_MAIN_NODE_INDEX")
    if idx is not None and n is not None and idx >= n:
        die(EX_CONFIG, "AWS_BATCH_JOB_NODE_INDEX=%d is not below AWS_BATCH_JOB_NUM_NODES=%d" % (idx, n))
    var = "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"
    a = os.environ.get(var)
    if a is not None:
        parts = a.split(".")
        if len(parts) != 4 or not all(p.isdigit() and p.isascii() and int(p) < 256 and
                                      (p == "0" or not p.startswith("0")) for p in parts):
            die(EX_CONFIG, "%s=%r is not a dotted-quad IPv4 address" % (var, a))
    return n is not None or idx is not None or a is not None


def children():
    out = []
    for t in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/children" % t) as f:
            out += [int(x) for x in f.read().split()]
    return out


def main():
    orig_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    prog, want_print = parse(sys.argv[1:])
    mnp = batch_env()
    role = cfg["role"]
    if role == "auto":
        role = "worker" if (mnp or cfg["manager"]) else "init"
    if want_print:
        print(json.dumps(dict(cfg, role=role)))
        sys.exit(0)
    if not prog:
        die(EX_USAGE, "no PROGRAM given")
    if role != "init":
        die(70, "role %s not modelled" % role)
    if cfg["exec"]:
        exec_payload(prog, orig_mask)
    if os.getpid() != 1:
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
    sigs = set(FWD) | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        if os.isatty(0):
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                os.tcsetpgrp(0, os.getpgrp())
            except OSError:
                pass
            signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        exec_payload(prog, orig_mask)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    status, deadline, killed = None, None, False
    while status is None:
        timeout = 1.0 if deadline is None or killed else max(0.0, deadline - time.monotonic())
        info = signal.sigtimedwait(sigs, timeout)
        if info is None:
            if deadline is not None and not killed and time.monotonic() >= deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                killed = True
        elif info.si_signo != signal.SIGCHLD:
            try:
                os.killpg(pid, info.si_signo) if cfg["group"] else os.kill(pid, info.si_signo)
            except OSError:
                pass
            if info.si_signo == signal.SIGTERM and deadline is None:
                deadline = time.monotonic() + cfg["grace"]
        while status is None:
            try:
                p, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if p == 0:
                break
            if p == pid:
                status = os.waitstatus_to_exitcode(st)
    code = status if status >= 0 else 128 - status
    # what the payload left: TERM, wait up to grace, KILL
    left = children()
    for c in left:
        try:
            os.kill(c, signal.SIGTERM)
        except OSError:
            pass
    end = time.monotonic() + cfg["grace"]
    while children() and time.monotonic() < end:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            break
        time.sleep(0.01)
    for c in children():
        try:
            os.kill(c, signal.SIGKILL)
        except OSError:
            pass
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass
    sys.exit(code)


def exec_payload(prog, mask):
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        os.execvp(prog[0], prog)
    except OSError as e:
        import errno
        log("error", "cannot execute %s: %s" % (prog[0], e.strerror))
        os._exit(127 if e.errno == errno.ENOENT else 126)


if __name__ == "__main__":
    main()
