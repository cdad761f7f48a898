#!/usr/bin/python3
"""Init role, interactive use (docker run -it): when stdin is a terminal the payload
gets the terminal's foreground, so Ctrl-C typed on the pty interrupts the foreground job
of an interactive shell payload, the shell survives, and its exit status comes back."""

import os
import pty
import select
import shlex
import time

from agenttest import (SCALE, TestFailure, case, check, check_eq, clean_env, cmdline,
                       descendants, init_argv, is_alive, mode_argv, run_cases, track_pid,
                       wait_for)


class Pty:
    def __init__(self, argv, env):
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        track_pid(pid)
        self.pid, self.fd, self.buf = pid, fd, b""
        self.status = None

    def write(self, data):
        os.write(self.fd, data)

    def expect(self, needle, timeout=10):
        deadline = time.monotonic() + timeout * SCALE
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("timed out waiting for %r on the terminal; got %r" % (
                    needle, self.buf[-500:]))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the other side closed
                    chunk = b""
                if not chunk:
                    raise TestFailure("terminal closed while waiting for %r; got %r" % (
                        needle, self.buf[-500:]))
                self.buf += chunk
        i = self.buf.index(needle) + len(needle)
        self.buf = self.buf[i:]

    def wait(self, timeout=10):
        deadline = time.monotonic() + timeout * SCALE
        while True:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.05)
                if r:
                    self.buf += os.read(self.fd, 4096)
            except OSError:
                pass
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = st
                return os.waitstatus_to_exitcode(st)
            if time.monotonic() > deadline:
                raise TestFailure("init on the pty did not exit within %gs" % (timeout * SCALE))

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


@case(requires=["tty"])
def ctrl_c_reaches_interactive_payload(mode):
    env = clean_env(PS1="$ ", ENV=None, TERM="dumb")
    t = Pty(mode_argv(mode, init_argv(["/bin/sh", "-i"])), env)
    try:
        t.write(b"echo R$((40+2))\n")
        t.expect(b"R42", 15)
        t.write(b"sleep 30\n")

        def sleeper():
            return [p for p in descendants(t.pid) if cmdline(p) == [b"sleep", b"30"]]
        sl = wait_for(sleeper, 10, "`sleep 30` to run in the shell's foreground")[0]
        # The sleep's process group must be the terminal's foreground group.
        wait_for(lambda: os.tcgetpgrp(t.fd) == os.getpgid(sl), 5,
                 "the shell's job to be in the terminal's foreground")
        t0 = time.monotonic()
        t.write(b"\x03")
        wait_for(lambda: not is_alive(sl), 5, "Ctrl-C to interrupt `sleep 30`")
        check(time.monotonic() - t0 < 5 * SCALE, "sleep outlived Ctrl-C")
        t.write(b"echo A$((3+4))\n")
        t.expect(b"A7", 10)     # the shell survived Ctrl-C and still reads the terminal
        t.write(b"exit 7\n")
        check_eq(t.wait(10), 7, "init's exit status (the shell's `exit 7`)")
    finally:
        t.close()


@case(requires=["tty"])
def terminal_payload_exit_status_and_output(mode):
    # A non-interactive payload on a terminal: its output reaches the terminal and the
    # init exits with its status (the init must not get stuck on the terminal).
    env = clean_env(TERM="dumb")
    t = Pty(mode_argv(mode, init_argv(["/bin/sh", "-c", "test -t 0 && echo tty-ok; exit 12"])), env)
    try:
        t.expect(b"tty-ok", 10)
        check_eq(t.wait(10), 12, "init's exit status")
    finally:
        t.close()


@case(modes=("sub",), requires=["tty"], agent_only=True)
def background_agent_leaves_the_terminal_to_its_shell(mode):
    # `batch-agent -- prog &` from an interactive shell: the agent is a background job,
    # so its payload must not take the terminal's foreground (the shell would lose its
    # terminal and exit).
    env = clean_env(PS1="$ ", ENV=None, TERM="dumb")
    t = Pty(["/bin/sh", "-i"], env)
    try:
        cmd = " ".join(shlex.quote(a) for a in init_argv(["/bin/sleep", "2"]))
        t.write(("%s &\n" % cmd).encode())
        t.write(b"echo B$((40+1))\n")
        t.expect(b"B41", 10)
        time.sleep(0.5)
        check_eq(os.tcgetpgrp(t.fd), os.getpgid(t.pid), "the terminal's foreground group (the shell's)")
        t.write(b"echo C$((2+3))\n")
        t.expect(b"C5", 10)
        t.write(b"wait; exit 3\n")
        check_eq(t.wait(15), 3, "the shell's exit status")
    finally:
        t.close()


if __name__ == "__main__":
    run_cases()
