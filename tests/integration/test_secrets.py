"""The cookie out of a payload's reach (issue 10, item 4), for a worker and for a main
with one child, on loopback:

- the agent runs as an unprivileged uid (nobody, no capabilities), and its payload, with
  the same uid, cannot open /proc/PPID/mem or /proc/PPID/environ (PR_SET_DUMPABLE 0);
- batch-agent-net's /proc/PID/environ holds no BATCH_AGENT_COOKIE entry, not even
  zeroed (the cookie came over a descriptor);
- as root, a scan of every readable mapping of the agent (/proc/PID/maps, /proc/PID/mem)
  finds no copy of the cookie once the worker's handshake is over, and in the main any
  copy still needed for admissions lies only in memory left out of core dumps (VmFlags
  "dd" in /proc/PID/smaps)."""

import json
import os
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
from mnp import Agent, Job, check, expect_exit, wait_for_file  # noqa: E402

runner = mnp.Runner()
PY = "/usr/bin/python3"

# Run as the payload, with no capabilities: what can it read of its agent?
PROBE = r"""
import json, os, sys, time
out = sys.argv[1]
ppid = os.getppid()
seen = {"ppid": ppid, "exe": os.readlink("/proc/self/exe")}
with open("/proc/self/status") as f:
    seen["capeff"] = [l.split()[1] for l in f if l.startswith("CapEff:")][0]
for name in ("mem", "environ"):
    # The kernel checks access when the file is opened (the first bytes of mem are
    # unmapped and would fail to read anyway).
    try:
        os.close(os.open(f"/proc/{ppid}/{name}", os.O_RDONLY))
        seen[name] = "readable"
    except OSError as e:
        seen[name] = e.strerror
with open(out + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(out + ".tmp", out)
while not os.path.exists(out + ".release"):
    time.sleep(0.05)
"""


NOBODY = 65534


def payload(out):
    return [PY, "-c", PROBE, out]


def as_nobody():
    """preexec_fn: the agent (and so its payload) as uid/gid nobody, no capabilities."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def regions(pid):
    """(start, end, perms, name, vmflags) of every mapping, from /proc/PID/smaps."""
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                start, end = (int(x, 16) for x in head[0].split("-"))
                cur = [start, end, head[1], head[5] if len(head) > 5 else "", ""]
                out.append(cur)
            elif head[0] == "VmFlags:":
                cur[4] = " ".join(head[1:])
    return out


def copies(pid, secret):
    """[(address, mapping name, vmflags)] of every copy of secret in readable memory."""
    found = []
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for start, end, perms, name, flags in regions(pid):
            # Reservations of 1 GiB and more are a sanitizer's shadow and allocator
            # space (Sanitize builds), mostly never touched; the agent's own data is far
            # smaller. Read in chunks that overlap by the secret's length.
            if not perms.startswith("r") or name in ("[vvar]", "[vsyscall]") or end - start >= 1 << 30:
                continue
            chunk = 1 << 20
            for at in range(start, end, chunk):
                try:
                    data = os.pread(fd, min(chunk + len(secret), end - at), at)
                except OSError:
                    continue
                hit = data.find(secret)
                while 0 <= hit < chunk:
                    found.append((hex(at + hit), name, flags))
                    hit = data.find(secret, hit + 1)
    finally:
        os.close(fd)
    return found


def check_payload_view(path, agent):
    seen = json.load(open(path))
    check(seen["ppid"] == agent.pid, f"the payload's parent is {seen['ppid']}, the agent {agent.pid}")
    check(int(seen["capeff"], 16) == 0, f"the probe kept capabilities {seen['capeff']}")
    for name in ("mem", "environ"):
        check(seen[name] != "readable", f"{agent.name}: a payload of the agent's uid read /proc/PPID/{name}")


def check_environ(agent):
    _, raw = mnp.read_environ(agent.pid)
    names = [e.partition(b"=")[0] for e in raw.split(b"\0") if e]
    check(b"BATCH_AGENT_COOKIE" not in names, f"{agent.name}: BATCH_AGENT_COOKIE in /proc/PID/environ: {names}")
    exe = os.path.basename(os.readlink(f"/proc/{agent.pid}/exe"))
    check(mnp.WRAPPER or exe == "batch-agent-net", f"{agent.name} runs as {exe}")


def needs_root(workdir):
    if os.geteuid() != 0:
        raise mnp.Skip("needs root (to run the agent as another uid and to scan its memory)")
    os.chmod(workdir, 0o777)
    # uid nobody must reach it, and the agent's programs: scripts/test.sh's TMPDIR,
    # above the workdir, is mktemp's 0700, and so may be the checkout (a clone made in a
    # mktemp directory). Traversal only (o+x), so nothing becomes listable.
    for start in (workdir, mnp.BIN):
        parent = os.path.dirname(os.path.abspath(start))
        while parent != "/":
            mode = os.stat(parent).st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)
            parent = os.path.dirname(parent)
    if mnp.WRAPPER:
        raise mnp.Skip("under a wrapper the payload's parent is the wrapper's process")


@runner.case
def worker_cookie_out_of_reach(workdir):
    needs_root(workdir)
    port, job = mnp.free_port(), Job(2)
    probe = os.path.join(workdir, "worker-probe")
    main = Agent("main", ["--port", str(port), "--wait-timeout", "30", "--"] + mnp.main_payload(workdir, gate=True, wait_s=60),
                 job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    # The child (uid nobody) writes its hostfile in TMPDIR too: the suite's is root's.
    child = Agent("child", ["--"] + payload(probe),
                  job.env(1, main_addr="127.0.0.1", extra={"BATCH_AGENT_PORT": str(port), "TMPDIR": workdir}),
                  workdir, preexec_fn=as_nobody)
    try:
        wait_for_file(probe, 20)
        check_payload_view(probe, child)
        check_environ(child)
        found = copies(child.pid, job.cookie.encode())
        check(not found, f"the worker keeps the cookie after its handshake: {found}")
    finally:
        open(probe + ".release", "w").close()
        open(os.path.join(workdir, "go"), "w").close()
    expect_exit(main, 0, 20)
    expect_exit(child, 0, 20)


@runner.case
def main_cookie_out_of_reach(workdir):
    needs_root(workdir)
    port, job = mnp.free_port(), Job(2)
    probe = os.path.join(workdir, "main-probe")
    # The main (uid nobody) writes its hostfile in TMPDIR: the suite's is root's.
    main = Agent("main", ["--port", str(port), "--wait-timeout", "30", "--"] + payload(probe),
                 job.env(0, extra={"TMPDIR": workdir}), workdir, preexec_fn=as_nobody)
    main.wait_for_log("rendezvous listening", 10)
    child = Agent("child", ["--"] + mnp.child_payload(workdir),
                  job.env(1, main_addr="127.0.0.1", extra={"BATCH_AGENT_PORT": str(port)}), workdir)
    try:
        wait_for_file(probe, 20)
        check_payload_view(probe, main)
        check_environ(main)
        found = copies(main.pid, job.cookie.encode())
        outside = [c for c in found if "dd" not in c[2].split()]
        check(not outside, f"the main keeps the cookie in memory a core dump would hold: {outside}")
        check(len(found) <= 1, f"the main keeps {len(found)} copies of the cookie: {found}")
    finally:
        open(probe + ".release", "w").close()
    expect_exit(main, 0, 20)
    expect_exit(child, 0, 20)


if __name__ == "__main__":
    runner.run()
