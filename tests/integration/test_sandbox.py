"""The sandboxes (issue 10, item 5): batch-agent-net confines itself (Seccomp: 2 while a
worker and a main run their payloads); --seccomp-profile applies a Docker-format
seccomp profile to the payload before exec (Seccomp: 2, a denied call fails with the
profile's errno), --no-new-privs sets NoNewPrivs, both with BATCH_AGENT_* twins, in the
init role and in a worker; a bad profile is 78, naming the file and the entry, before
any payload starts."""

import errno
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
from mnp import Agent, Job, check, expect_exit, wait_for_file  # noqa: E402

runner = mnp.Runner()
PY = "/usr/bin/python3"

# The payload: what the kernel says about it, and what mkdir and uname do.
PROBE = r"""
import json, os, sys
seen = {}
with open("/proc/self/status") as f:
    for line in f:
        k, _, v = line.partition(":")
        if k in ("Seccomp", "NoNewPrivs"):
            seen[k] = int(v)
for name, call in (("mkdir", lambda: os.mkdir(sys.argv[1] + "/made")), ("uname", os.uname)):
    try:
        call()
        seen[name] = 0
    except OSError as e:
        seen[name] = e.errno
with open(sys.argv[1] + "/seen.tmp", "w") as f:
    json.dump(seen, f)
os.rename(sys.argv[1] + "/seen.tmp", sys.argv[1] + "/seen")
"""

DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
        # Docker's conditions: an entry for another machine, or one that needs a
        # capability we do not test for, must not apply.
        {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS,
         "includes": {"arches": ["s390x"]}},
        {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}, "includes": {"minKernel": "2.6"}},
        # An argument condition that never matches (mkdir is already denied above).
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 123456, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
    ],
}


def write_profile(workdir, name, doc):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def agent(args, env=None, timeout=20):
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    e.update(env or {})
    p = subprocess.run(mnp.WRAPPER + [mnp.BIN, *args], env=e, capture_output=True, text=True,
                       timeout=timeout * mnp.SLOW)
    return p.returncode, p.stderr


def seen(workdir):
    with open(os.path.join(workdir, "seen")) as f:
        return json.load(f)


def status_of(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Seccomp", "NoNewPrivs"):
                out[k] = int(v)
    return out


def needs_seccomp():
    if mnp.WRAPPER:
        raise mnp.Skip("the payload would run inside the wrapper (valgrind does not implement seccomp(2))")


def has_cap_sys_admin():
    with open("/proc/self/status") as f:
        eff = [int(line.split()[1], 16) for line in f if line.startswith("CapEff:")][0]
    return bool(eff >> 21 & 1)


@runner.case
def init_profile_denies_mkdir_with_its_errno(workdir):
    needs_seccomp()
    profile = write_profile(workdir, "deny-mkdir.json", DENY_MKDIR)
    for how, args, env in (("--seccomp-profile", ["--seccomp-profile", profile], None),
                           ("BATCH_AGENT_SECCOMP_PROFILE", [], {"BATCH_AGENT_SECCOMP_PROFILE": profile})):
        if os.path.exists(os.path.join(workdir, "seen")):
            os.unlink(os.path.join(workdir, "seen"))
        rc, err = agent(["--role", "init", *args, "--", PY, "-c", PROBE, workdir], env)
        check(rc == 0, f"{how}: exit {rc}:\n{err}")
        got = seen(workdir)
        check(got["Seccomp"] == 2, f"{how}: the payload runs with Seccomp {got['Seccomp']}")
        check(got["mkdir"] == errno.EACCES, f"{how}: mkdir gave errno {got['mkdir']}, the profile says EACCES")
        check(not os.path.exists(os.path.join(workdir, "made")), f"{how}: the directory was made")
        want_uname = 0 if has_cap_sys_admin() else errno.EPERM
        check(got["uname"] == want_uname, f"{how}: uname gave {got['uname']}, expected {want_uname} "
                                          "(the s390x entry must not apply, the caps exclusion must)")


@runner.case
def no_new_privs_for_the_payload(workdir):
    rc, err = agent(["--role", "init", "--", PY, "-c", PROBE, workdir])
    check(rc == 0 and seen(workdir)["NoNewPrivs"] == 0, f"NoNewPrivs without the flag: {rc} {err}")
    for args, env in ((["--no-new-privs"], None), ([], {"BATCH_AGENT_NO_NEW_PRIVS": "1"})):
        rc, err = agent(["--role", "init", *args, "--", PY, "-c", PROBE, workdir], env)
        got = seen(workdir)
        check(rc == 0 and got["NoNewPrivs"] == 1 and got["Seccomp"] == 0, f"{args or env}: {got}, exit {rc}: {err}")


@runner.case
def worker_payload_gets_the_profile(workdir):
    needs_seccomp()
    port, job = mnp.free_port(), Job(2)
    profile = write_profile(workdir, "deny-mkdir.json", DENY_MKDIR)
    main = Agent("main", ["--port", str(port), "--wait-timeout", "30", "--"]
                 + mnp.main_payload(workdir, gate=True, wait_s=60), job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    child = Agent("child", ["--seccomp-profile", profile, "--no-new-privs", "--", PY, "-c", PROBE, workdir],
                  job.env(1, main_addr="127.0.0.1", extra={"BATCH_AGENT_PORT": str(port)}), workdir)
    try:
        wait_for_file(os.path.join(workdir, "seen"), 20)
        got = seen(workdir)
        check(got["Seccomp"] == 2 and got["NoNewPrivs"] == 1 and got["mkdir"] == errno.EACCES,
              f"the worker's payload: {got}")
        # batch-agent-net confines itself once its payload runs, in both roles.
        wait_for_file(os.path.join(workdir, "main.started"), 20)
        for a in (child, main):
            if mnp.WRAPPER:
                break  # the process is the wrapper's
            status = status_of(a.pid)
            check(status.get("Seccomp") == 2, f"{a.name}'s batch-agent-net runs with Seccomp {status.get('Seccomp')}")
    finally:
        open(os.path.join(workdir, "go"), "w").close()
    expect_exit(main, 0, 20)
    expect_exit(child, 0, 20)


@runner.case
def the_default_profile_of_containers_common_loads(workdir):
    """A real Docker-format profile: containers-common's default (podman's), with archMap,
    includes and excludes. The payload runs under it, and mkdir is allowed there."""
    needs_seccomp()
    real = "/usr/share/containers/seccomp.json"
    if not os.path.exists(real):
        raise mnp.Skip(f"{real} (containers-common) is not installed")
    rc, err = agent(["--role", "init", "--seccomp-profile", real, "--", PY, "-c", PROBE, workdir])
    got = seen(workdir)
    check(rc == 0 and got["Seccomp"] == 2 and got["mkdir"] == 0, f"under {real}: {got}, exit {rc}:\n{err}")


BAD = [
    ("not-json.json", "{\"defaultAction\": ", "not JSON"),
    # cJSON alone would read the first object and ignore the second
    ("two-objects.json", '{"defaultAction": "SCMP_ACT_ALLOW"} {"defaultAction": "SCMP_ACT_KILL"}',
     "not JSON (near byte 36)"),
    ("unknown-default.json", {"defaultAction": "SCMP_ACT_MAYBE"}, "defaultAction: unknown action \"SCMP_ACT_MAYBE\""),
    ("unknown-action.json", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["mkdir"], "action": "SCMP_ACT_DENY"}]}, "syscalls[1] (mkdir): unknown action \"SCMP_ACT_DENY\""),
    ("unknown-syscall.json", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "no_such_call"], "action": "SCMP_ACT_ERRNO"}]},
     "syscalls[0] (mkdir): unknown system call \"no_such_call\""),
    ("bad-op.json", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ROUGHLY"}]}]},
     "syscalls[0] (personality): argument 0: unknown op \"SCMP_CMP_ROUGHLY\""),
    ("bad-index.json", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "syscalls[0] (personality): an argument's \"index\" is not 0 to 5"),
    ("bad-arch.json", {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]},
     "architectures: unknown architecture \"SCMP_ARCH_VAX\""),
    ("missing.json", None, "No such file or directory"),
]


@runner.case
def bad_profiles_are_78_naming_file_and_entry(workdir):
    marker = os.path.join(workdir, "ran")
    for name, doc, what in BAD:
        path = write_profile(workdir, name, doc) if doc is not None else os.path.join(workdir, name)
        for role_args, env in ((["--role", "init"], None), ([], Job(2).env(0))):
            rc, err = agent([*role_args, "--seccomp-profile", path, "--", "touch", marker], env)
            check(rc == 78, f"{name} ({role_args or 'main'}): exit {rc}, expected 78:\n{err}")
            check(path in err and what in err, f"{name}: the error does not say {what!r} about {path}:\n{err}")
            check("rendezvous listening" not in err, f"{name}: the main started its rendezvous:\n{err}")
            check(not os.path.exists(marker), f"{name}: the payload ran")


if __name__ == "__main__":
    runner.run()
