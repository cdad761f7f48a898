#!/usr/bin/python3
"""Init role: what the payload inherits.

The payload starts with the signal mask and ignored signals the agent itself inherited
(not the agent's own blocking), the agent's cwd and environment, stdin/stdout/stderr
untouched, and no file descriptor beyond those the agent inherited."""

import json
import os
import signal

from agenttest import (WRAPPER, PYTHON, Init, TempDir, case, check, check_eq, clean_env, init_argv,
                       py_payload, run, run_cases)

# Exec argv[1:] with exactly: SIG_IGN for the signals in $IGN, SIG_DFL for all others,
# and the signals in $BLK blocked (comma-separated numbers).
SIGSETUP = r"""
import os, signal, sys
ign = {int(x) for x in os.environ.pop("IGN").split(",") if x}
blk = {int(x) for x in os.environ.pop("BLK").split(",") if x}
for s in range(1, signal.SIGRTMAX + 1):
    if s in (signal.SIGKILL, signal.SIGSTOP, 32, 33):
        continue
    signal.signal(s, signal.SIG_IGN if s in ign else signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, blk)
os.execvp(sys.argv[1], sys.argv[1:])
"""

# Prints the payload's own SigBlk/SigIgn; cat does not touch its signal state.
SHOW_SIGS = ["/bin/cat", "/proc/self/status"]


def _mask(sigs):
    return sum(1 << (int(s) - 1) for s in sigs)


def _sig_state(mode, ign, blk):
    env = clean_env(IGN=",".join(str(int(s)) for s in ign),
                    BLK=",".join(str(int(s)) for s in blk))
    argv = [PYTHON, "-S", "-c", SIGSETUP] + init_argv(SHOW_SIGS)
    rc, out, err = run(mode, None, argv=argv, env=env)
    check_eq(rc, 0, "status (stderr %r)" % err[-300:])
    fields = dict(line.split(":", 1) for line in out.decode().splitlines() if ":" in line)
    return int(fields["SigBlk"], 16), int(fields["SigIgn"], 16)


@case(requires=["sigmask"])
def payload_gets_empty_mask_and_default_dispositions(mode):
    # The init blocks/handles signals for itself; none of that may leak to the payload.
    blk, ign = _sig_state(mode, [], [])
    check_eq(hex(blk), hex(0), "payload's SigBlk")
    check_eq(hex(ign), hex(0), "payload's SigIgn")


@case(requires=["sigmask"])
def inherited_ignored_and_blocked_signals_pass_through(mode):
    ign = [signal.SIGHUP, signal.SIGPIPE, signal.SIGUSR2]   # e.g. nohup, a shell's PIPE
    blk = [signal.SIGUSR1, signal.SIGALRM, signal.SIGRTMIN + 2]
    got_blk, got_ign = _sig_state(mode, ign, blk)
    check_eq(hex(got_blk), hex(_mask(blk)), "payload's SigBlk")
    check_eq(hex(got_ign), hex(_mask(ign)), "payload's SigIgn")


@case(agent_only=True)
def cookie_is_neither_in_the_payloads_environment_nor_the_agents(mode):
    # An init has no use for BATCH_AGENT_COOKIE (a job-wide Batch secret): the payload
    # must not inherit it, nor read it from the agent's /proc/<pid>/environ.
    secret = "cookie-" + os.urandom(12).hex()
    code = ("import os; print(os.environ.get('BATCH_AGENT_COOKIE', 'absent')); "
            "print(open('/proc/' + str(os.getppid()) + '/environ', 'rb').read().count(" + repr(secret) + ".encode()))")
    rc, out, err = run(mode, py_payload(code), env=clean_env(BATCH_AGENT_COOKIE=secret))
    check_eq(rc, 0, "status (stderr %r)" % err[-300:])
    lines = out.decode().split()
    check_eq(lines[0], "absent", "BATCH_AGENT_COOKIE in the payload's environment")
    if not WRAPPER:  # under valgrind /proc/<pid>/environ is the tool's
        check_eq(lines[1], "0", "occurrences of the cookie in the agent's /proc/<pid>/environ")


@case()
def payload_gets_agents_cwd_and_environment(mode):
    with TempDir() as d:
        weird = "a b=c\n\t'\"$x\\ é"
        code = ("import os, json; print(json.dumps({'cwd': os.getcwd(), "
                "'env': dict(os.environ)}))")
        env = clean_env(BA_TEST_VAR=weird, BA_EMPTY="")
        rc, out, err = run(mode, py_payload(code), env=env, cwd=d.dir)
        check_eq(rc, 0, "status (stderr %r)" % err[-300:])
        got = json.loads(out)
        check_eq(got["cwd"], os.path.realpath(d.dir), "payload's cwd")
        check_eq(got["env"].get("BA_TEST_VAR"), weird, "payload's BA_TEST_VAR")
        check_eq(got["env"].get("BA_EMPTY"), "", "payload's BA_EMPTY")
        check_eq(got["env"].get("PATH"), env.get("PATH"), "payload's PATH")


@case()
def stdio_is_untouched(mode):
    code = ("import os, sys\n"
            "data = sys.stdin.read()\n"
            "links = [os.readlink('/proc/self/fd/%d' % i) for i in (0, 1, 2)]\n"
            "print(repr((data, links)))\n")
    with TempDir() as d:
        inp = d.write("stdin.txt", "line one\nline two\n")
        errf = d.path("stderr.txt")
        r, w = os.pipe()
        try:
            with open(inp) as fin, open(errf, "w") as ferr:
                p = Init(mode, init_argv(py_payload(code)), stdin=fin, stdout=w, stderr=ferr)
            os.close(w)
            w = -1
            p.wait(10)
            out = b""
            while True:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                out += chunk
            ino = os.fstat(r).st_ino
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        check_eq(p.proc.returncode, 0, "status (stderr %r)" % open(errf).read()[-300:])
        data, links = eval(out.decode())  # our own repr() output
        check_eq(data, "line one\nline two\n", "what the payload read on stdin")
        check_eq(links[0], inp, "payload's fd 0")
        check_eq(links[1], "pipe:[%d]" % ino, "payload's fd 1")
        check_eq(links[2], errf, "payload's fd 2")


def _wrapper_log_dir():
    """Where the wrapper (valgrind --log-file=DIR/%p.log in CI) writes its logs: it keeps
    those files open across the exec of a payload it does not trace. They are the
    wrapper's, not the agent's, so the listing leaves them out."""
    for arg in WRAPPER:
        if arg.startswith("--log-file="):
            return os.path.dirname(arg.split("=", 1)[1])
    return None


LIST_FDS = r"""
import os
ignored = %r
fds = []
for name in os.listdir("/proc/self/fd"):
    try:
        os.fstat(int(name))          # the listing's own fd is closed by now
        if ignored and os.readlink("/proc/self/fd/" + name).startswith(ignored + "/"):
            continue
        fds.append(int(name))
    except OSError:
        pass
print(" ".join(map(str, sorted(fds))))
""" % _wrapper_log_dir()


@case()
def no_fd_leaked_to_payload(mode):
    rc, out, err = run(mode, py_payload(LIST_FDS))
    check_eq(rc, 0, "status (stderr %r)" % err[-300:])
    check_eq(out.decode().split(), ["0", "1", "2"], "payload's open fds")


@case()
def deliberately_inherited_fd_reaches_payload(mode):
    r, w = os.pipe()
    try:
        fd = 9
        os.dup2(w, fd)
        code = LIST_FDS + "os.write(%d, b'via-fd')\n" % fd
        rc, out, err = run(mode, py_payload(code), pass_fds=(fd,))
        check_eq(rc, 0, "status (stderr %r)" % err[-300:])
        check_eq(out.decode().split(), ["0", "1", "2", str(fd)], "payload's open fds")
        os.close(fd)
        os.close(w)
        w = -1
        check_eq(os.read(r, 100), b"via-fd", "data written by the payload to the inherited fd")
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
            try:
                os.close(9)
            except OSError:
                pass


if __name__ == "__main__":
    run_cases()
