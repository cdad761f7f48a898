"""The agent as the ENTRYPOINT of real containers (podman), in every test image:
docker/example/Dockerfile built on Debian bullseye, bookworm, trixie and a busybox-only
root. For each image:

* the invocation convention (README, "Invocation"): the image's ENTRYPOINT and CMD;
  `podman run IMG PAYLOAD...`; `podman run IMG AGENT-OPTIONS... -- PAYLOAD...`; a Batch
  job's command with Ref::manager substituted;
* exit codes 0, 1, 3, 126, 127, 137;
* `podman stop -t N` on a payload that traps SIGTERM and on one that ignores it, side by
  side with tini-static as the ENTRYPOINT of the same image;
* zombie reaping as PID 1 under a payload that never waits (and, as the control that
  proves the count can fail, the same payload with no init);
* `podman run -it` in tmux: Ctrl-C ends the payload, exit 130.
"""

import os
import subprocess
import time

import containertest as ct
from agenttest import TestFailure, check, check_eq, wait_for

TINI = "/usr/bin/tini-static"
# podman stop -t: seconds before podman SIGKILLs PID 1. A payload that ignores SIGTERM
# waits the whole time, so keep that short; one that traps it gets a long one, so that
# "stopped before the timeout" measures the agent's forwarding, not podman's own speed
# on a busy machine (2 s was seen taken by podman alone).
STOP_TIMEOUT_IGNORED = 2
STOP_TIMEOUT_TRAPPED = 30
ENV_ARGS = ["-e", "BATCH_AGENT_COOKIE=" + ct.COOKIE]
_names = []


def name(tag):
    n = "ba-test-%d-%s-%d" % (os.getpid(), tag, len(_names))
    _names.append(n)
    return n


def run(img, *args, opts=()):
    """podman run --rm [opts] IMG ARGS...: (status, stdout, stderr)."""
    r = ct.podman("run", "--rm", *ENV_ARGS, *opts, img, *args, check=False, timeout=120)
    return r.returncode, r.stdout, r.stderr


def expect(img, args, code, what, opts=()):
    status, out, err = run(img, *args, opts=opts)
    if status != code:
        raise TestFailure("%s [%s]: exit %d, want %d\nstdout: %s\nstderr: %s" % (what, img, status, code, out, err))
    return out, err


def case_invocation(img):
    out, _ = expect(img, [], 0, "the image's ENTRYPOINT and CMD")
    check("payload running on" in out, "CMD ran under the agent: %r" % out)
    expect(img, ["/bin/sh", "-c", "exit 4"], 4, "podman run IMG PAYLOAD")
    _, err = expect(img, ["--log-level", "debug", "--grace", "1", "--", "/bin/sh", "-c", "exit 5"], 5,
                    "podman run IMG OPTIONS -- PAYLOAD")
    check("debug:" in err, "--log-level debug reached the agent: %r" % err)
    # What a Batch job's command becomes once Batch substitutes Ref::manager.
    _, err = expect(img, ["--manager", "127.0.0.1:9", "--connect-timeout", "1", "--", "/bin/true"], 69,
                    "a Batch-style command with Ref::manager substituted")
    check("127.0.0.1:9" in err, "the agent dialled the substituted manager: %r" % err)
    _, err = expect(img, ["--no-such-option", "--", "/bin/true"], 64, "an unknown agent option")
    check("--no-such-option" in err, "the error names the option: %r" % err)


def case_exit_codes(img):
    for args, code in ((["/bin/true"], 0), (["/bin/false"], 1), (["/bin/sh", "-c", "exit 3"], 3),
                       (["/etc/hostname"], 126), (["/no/such/program"], 127),
                       (["/bin/sh", "-c", "kill -9 $$"], 137)):
        expect(img, ["--", *args], code, "payload %s" % args)


def logs(container):
    return ct.podman("logs", container, check=False, timeout=60).stdout


def stop_once(img, entrypoint, payload, stop_timeout):
    """Start payload under entrypoint, podman stop -t stop_timeout it: (seconds, exit status)."""
    c = name("stop")
    opts = ["--entrypoint", entrypoint, "-v", "%s:%s:ro" % (TINI, TINI)] if entrypoint else []
    ct.podman("run", "-d", "--name", c, *ENV_ARGS, *opts, img, "--", "/bin/sh", "-c", payload, timeout=120)
    try:
        wait_for(lambda: "ready" in logs(c), 30, "payload of %s to start" % c, interval=0.05)
        t0 = time.monotonic()
        ct.podman("stop", "-t", str(stop_timeout), c, timeout=60 + stop_timeout)
        elapsed = time.monotonic() - t0
        return elapsed, (ct.container_state(c) or {}).get("ExitCode")
    finally:
        ct.remove(c)


def case_stop(img):
    trapping = 'trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    ignoring = 'trap "" TERM; echo ready; while :; do sleep 0.1; done'
    rows = []
    for label, payload, want, timeout in (("traps TERM", trapping, 7, STOP_TIMEOUT_TRAPPED),
                                          ("ignores TERM", ignoring, 137, STOP_TIMEOUT_IGNORED)):
        agent = stop_once(img, None, payload, timeout)
        tini = stop_once(img, TINI, payload, timeout)
        rows.append((label, agent, tini))
        check_eq(agent[1], want, "exit status after podman stop, payload that %s [%s]" % (label, img))
        check_eq(agent[1], tini[1], "batch-agent and tini agree on the exit status (%s)" % label)
        if want == 7:
            # It must not wait for podman's SIGKILL, which tini does not either.
            check(agent[0] < STOP_TIMEOUT_TRAPPED, "stopped before the timeout: %.2fs" % agent[0])
    for label, agent, tini in rows:
        print("#   %-22s %-14s batch-agent %5.2fs exit %s | tini %5.2fs exit %s" % (
            img.split("/")[-1], label, agent[0], agent[1], tini[0], tini[1]))


def zombies_in(pid):
    """Zombie processes in the PID namespace of host process pid."""
    ns = os.readlink("/proc/%d/ns/pid" % pid)
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/ns/pid" % entry) != ns:
                continue
            with open("/proc/%s/stat" % entry) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        count += state == "Z"
    return count


def zombies_left(img, entrypoint_opts):
    """Zombies left once three orphans (children of a subshell that is gone) have exited,
    under a payload that never waits (sleep)."""
    c = name("zombie")
    payload = "(sleep 0.3 & sleep 0.3 & sleep 0.3 &); echo ready; exec sleep 1000"
    args = ["--", "/bin/sh", "-c", payload] if not entrypoint_opts else ["-c", payload]
    ct.podman("run", "-d", "--name", c, *ENV_ARGS, *entrypoint_opts, img, *args, timeout=120)
    try:
        wait_for(lambda: "ready" in logs(c), 30, "payload of %s to start" % c, interval=0.05)
        pid = (ct.container_state(c) or {}).get("Pid")
        live = 1 if entrypoint_opts else 2  # sleep 1000 (and the agent)
        wait_for(lambda: len(proc_names(pid)) == live, 10, "the orphans to exit", interval=0.05)
        if entrypoint_opts:
            return wait_for(lambda: zombies_in(pid) >= 3 and zombies_in(pid), 10, "3 zombies without an init")
        # Reaping follows each exit at once; a missed one stays a zombie for good.
        wait_for(lambda: zombies_in(pid) == 0, 5, "no zombie left under the agent", interval=0.05)
        return zombies_in(pid)
    finally:
        ct.remove(c)


def proc_names(pid):
    ns = os.readlink("/proc/%d/ns/pid" % pid)
    names = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink("/proc/%s/ns/pid" % entry) == ns:
                with open("/proc/%s/stat" % entry) as f:
                    text = f.read()
                if text.rsplit(")", 1)[1].split()[0] != "Z":
                    names.append(text.split("(", 1)[1].rsplit(")", 1)[0])
        except OSError:
            continue
    return names


def case_zombies(img):
    check_eq(zombies_left(img, []), 0, "zombies left with the agent as PID 1")
    without = zombies_left(img, ["--entrypoint", "/bin/sh"])
    check(without >= 3, "the control (sh as PID 1, no init) keeps its zombies: %d" % without)


def case_ctrl_c(img):
    c = name("tty")
    session = c
    status_file = os.path.join(ct.path(), c + ".status")
    podman = " ".join(["podman", *ct.runtime_args(), "run", "-it", "--rm", "--name", c, *ENV_ARGS, img,
                       "/bin/sh", "-c", "'echo ready; exec /bin/sleep 1000'"])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    "%s; echo $? > %s" % (podman, status_file)], check=True, timeout=30)
    try:
        wait_for(lambda: "ready" in tmux_screen(session), 60, "the interactive payload to start", interval=0.1)
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True, timeout=30)
        wait_for(lambda: os.path.exists(status_file) and open(status_file).read().strip(), 30,
                 "podman run -it to end after Ctrl-C", interval=0.1)
        check_eq(open(status_file).read().strip(), "130", "exit status after Ctrl-C")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=30)
        ct.remove(c)


def tmux_screen(session):
    r = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, timeout=30)
    return r.stdout


if __name__ == "__main__":
    ct.require_podman()
    cases = []
    for base in ct.BASES:
        img = ct.image("ba-worker-" + base)
        for label, fn in (("invocation", case_invocation), ("exit_codes", case_exit_codes), ("stop", case_stop),
                          ("zombies", case_zombies), ("ctrl_c", case_ctrl_c)):
            cases.append(("%s[%s]" % (label, base), (lambda f, i: lambda: f(i))(fn, img)))
    try:
        ct.run_cases(cases)
    finally:
        ct.remove(*_names)
