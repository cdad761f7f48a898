#!/usr/bin/python3
"""Payload wrapper for the Julia integration tests:

    julia_dump_exec.py OUT.json PROGRAM [ARG...]

Writes what the agent gave the payload (its environment and argv exactly as the kernel
shows them in /proc/self/environ and /proc/self/cmdline, and where fd 0/1 point) to
OUT.json, then execs PROGRAM with the same stdin, stdout, stderr and environment. The
cookie line waiting on stdin is not touched."""

import json
import os
import sys


def _split(raw):
    return [x.decode("utf-8", "surrogateescape") for x in raw.split(b"\0") if x]


def main():
    if len(sys.argv) < 3:
        sys.stderr.write("usage: julia_dump_exec.py OUT.json PROGRAM [ARG...]\n")
        return 2
    out, argv = sys.argv[1], sys.argv[2:]
    with open("/proc/self/environ", "rb") as f:
        environ = _split(f.read())
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = _split(f.read())
    fds = {}
    for fd in (0, 1):
        try:
            fds[str(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as e:
            fds[str(fd)] = f"error: {e}"
    rec = {"environ": environ, "cmdline": cmdline, "fds": fds, "pid": os.getpid()}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.rename(tmp, out)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
