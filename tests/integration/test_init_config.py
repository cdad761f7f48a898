#!/usr/bin/python3
"""batch-agent command line and configuration in the init role.

Bad command line -> 64, bad configuration/environment (BATCH_AGENT_* twins, strict
AWS_BATCH_* parsing) -> 78 with stderr naming the variable, and in both cases the
payload never runs; --print-config prints one JSON object incl. "role"; role auto-
detection picks init with no cluster variables; -h / -V; --log-format json lines.
All batch-agent only; test values use 198.18.0.0/15 addresses only."""

import json
import os
import re

from agenttest import (TempDir, agent_stderr, case, check, check_eq, clean_env, init_argv, run, run_cases)

EX_USAGE, EX_CONFIG = 64, 78


def _marker_payload(d):
    m = d.path("payload-ran")
    return m, ["/bin/sh", "-c", "echo ran > %s" % m]


def _agent(args, env=None, mode="sub", timeout=10):
    return run(mode, None, argv=init_argv([], role=False)[:-1] + list(args),
               env=env or clean_env(), timeout=timeout)


# A well-formed multi-node-parallel environment for node 1 of 2.
MNP_OK = {
    "AWS_BATCH_JOB_ID": "0f8a1a4e-1111-2222-3333-444455556666#1",
    "AWS_BATCH_JOB_ATTEMPT": "1",
    "AWS_BATCH_JOB_NUM_NODES": "2",
    "AWS_BATCH_JOB_NODE_INDEX": "1",
    "AWS_BATCH_JOB_MAIN_NODE_INDEX": "0",
    "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "198.18.0.10",
}

BAD_BATCH_ENV = [
    ("AWS_BATCH_JOB_NODE_INDEX", {"AWS_BATCH_JOB_NODE_INDEX": "abc"}),
    ("AWS_BATCH_JOB_NODE_INDEX", {"AWS_BATCH_JOB_NODE_INDEX": "2"}),   # == NUM_NODES
    ("AWS_BATCH_JOB_NODE_INDEX", {"AWS_BATCH_JOB_NODE_INDEX": "7"}),   # > NUM_NODES
    ("AWS_BATCH_JOB_NODE_INDEX", {"AWS_BATCH_JOB_NODE_INDEX": "-1"}),
    ("AWS_BATCH_JOB_NODE_INDEX", {"AWS_BATCH_JOB_NODE_INDEX": "1x"}),
    ("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
     {"AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "198.18.0.256"}),
    ("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
     {"AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "198.18.0"}),
    ("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
     {"AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": " 198.18.0.1"}),
    ("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
     {"AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "198.18.0.1 "}),
    ("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
     {"AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "198.18.0.1.5"}),
]


@case(agent_only=True, modes=("sub",))
def malformed_aws_batch_env_is_78_naming_variable(mode):
    # Default role (auto), as in a container ENTRYPOINT: the agent rejects the
    # environment before starting anything.
    bad = []
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        for var, change in BAD_BATCH_ENV:
            env = clean_env(**dict(MNP_OK, **change))
            rc, out, err = _agent(["--"] + payload, env=env)
            what = "%s=%r" % (var, change[var])
            if rc != EX_CONFIG:
                bad.append("%s: status %r, want 78 (stderr %r)" % (what, rc, err[-200:]))
            elif var.encode() not in err:
                bad.append("%s: stderr does not name %s: %r" % (what, var, err[-300:]))
            if os.path.exists(marker):
                bad.append("%s: the payload ran" % what)
                os.unlink(marker)
    check(not bad, "; ".join(bad))


@case(agent_only=True, modes=("sub",))
def wellformed_aws_batch_env_runs_payload_in_init_role(mode):
    # Control for the case above: the same variables, well-formed, are accepted.
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        rc, out, err = _agent(["--role", "init", "--"] + payload, env=clean_env(**MNP_OK))
        check_eq(rc, 0, "status with valid AWS_BATCH_* and --role init (stderr %r)" % err[-300:])
        check(os.path.exists(marker), "payload did not run")


BAD_FLAGS = [
    ["--no-such-option"],
    ["--grace"],                     # missing value
    ["--grace", "abc"],
    ["--grace", "-1"],
    ["--grace", "1s"],
    ["--spot-hold", "yes"],          # on, off or seconds: no other words
    ["--spot-hold", "3601"],
    ["--spot-hold", "-1"],
    ["--log-level", "loud"],
    ["--log-format", "xml"],
    ["--role", "emperor"],
    ["--env", "jax"],                # torch is the one family
    ["--hostfile-format", "slurm"],
    ["--ready-port", "0"],
    ["--ready-port", "65536"],
    ["--payload-start", "early"],
]


@case(agent_only=True, modes=("sub",))
def bad_command_line_is_64(mode):
    bad = []
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        for flags in BAD_FLAGS + [[]]:
            args = flags + ["--"] + payload if flags else []   # [] : no PROGRAM at all
            rc, out, err = _agent(args)
            if rc != EX_USAGE:
                bad.append("%s: status %r, want 64 (stderr %r)" % (flags or "no PROGRAM", rc, err[-200:]))
            elif not err.strip():
                bad.append("%s: nothing on stderr" % flags)
            if os.path.exists(marker):
                bad.append("%s: the payload ran" % flags)
                os.unlink(marker)
    check(not bad, "; ".join(bad))


BAD_ENV_TWINS = [
    ("BATCH_AGENT_GRACE", "abc"),
    ("BATCH_AGENT_GRACE", "-2"),
    ("BATCH_AGENT_SPOT_HOLD", "true"),
    ("BATCH_AGENT_LOG_LEVEL", "loud"),
    ("BATCH_AGENT_LOG_FORMAT", "xml"),
    ("BATCH_AGENT_ROLE", "emperor"),
    ("BATCH_AGENT_ENV", "torch,jax"),
    ("BATCH_AGENT_HOSTFILE_FORMAT", "OpenMPI"),
    ("BATCH_AGENT_READY_PORT", "ssh"),
    ("BATCH_AGENT_PAYLOAD_START", "now"),
]


@case(agent_only=True, modes=("sub",))
def bad_env_twin_is_78_naming_variable(mode):
    bad = []
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        for var, val in BAD_ENV_TWINS:
            rc, out, err = _agent(["--role", "init", "--"] + payload if var != "BATCH_AGENT_ROLE"
                                  else ["--"] + payload, env=clean_env(**{var: val}))
            if rc != EX_CONFIG:
                bad.append("%s=%s: status %r, want 78 (stderr %r)" % (var, val, rc, err[-200:]))
            elif var.encode() not in err:
                bad.append("%s=%s: stderr does not name it: %r" % (var, val, err[-300:]))
            if os.path.exists(marker):
                bad.append("%s=%s: the payload ran" % (var, val))
                os.unlink(marker)
    check(not bad, "; ".join(bad))


@case(agent_only=True, modes=("sub",))
def role_conflicts_64_from_flags_78_with_the_environment(mode):
    """--exec and the Julia dialect have no main role: given as flags alone the
    conflict is a bad command line (64); where the role or the other setting comes from
    the environment (an MNP main node, BATCH_AGENT_EXEC) it is bad configuration (78).
    Nothing runs either way."""
    mnp_main = dict(MNP_OK, AWS_BATCH_JOB_ID="0f8a1a4e-1111-2222-3333-444455556666#0", AWS_BATCH_JOB_NODE_INDEX="0")
    tries = [
        (["--role", "main", "--exec"], {}, EX_USAGE, b"--exec"),
        (["--role", "main", "--protocol", "julia"], {}, EX_USAGE, b"--protocol julia"),
        (["--role", "main"], {"BATCH_AGENT_EXEC": "1"}, EX_CONFIG, b"BATCH_AGENT_EXEC"),
        (["--exec"], mnp_main, EX_CONFIG, b"MNP main node"),
    ]
    bad = []
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        for flags, env, want, says in tries:
            rc, out, err = _agent(flags + ["--"] + payload, env=clean_env(**{**MNP_OK, **env}))
            if rc != want or says not in err:
                bad.append("%s %s: status %r, want %d naming %r (stderr %r)" % (flags, env, rc, want, says, err[-200:]))
            if os.path.exists(marker):
                bad.append("%s %s: the payload ran" % (flags, env))
                os.unlink(marker)
    check(not bad, "; ".join(bad))


def _print_config(args, env=None):
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        rc, out, err = _agent(list(args) + ["--print-config", "--"] + payload, env=env)
        check_eq(rc, 0, "--print-config status (stderr %r)" % err[-300:])
        check(not os.path.exists(marker), "--print-config ran the payload")
    try:
        cfg = json.loads(out)
    except ValueError as e:
        raise AssertionError("--print-config stdout is not JSON (%s): %r" % (e, out[:300])) from None
    check(isinstance(cfg, dict), "--print-config is not a JSON object: %r" % out[:300])
    return cfg


@case(agent_only=True, modes=("sub",))
def print_config_json_with_role(mode):
    cfg = _print_config(["--role", "init", "--grace", "2.5", "-g"])
    check_eq(cfg.get("role"), "init", "role in --print-config")
    # auto role with no AWS_BATCH_* and no --manager resolves to init
    cfg = _print_config([])
    check_eq(cfg.get("role"), "init", "auto-detected role in --print-config")
    # the env twin
    cfg = _print_config([], env=clean_env(BATCH_AGENT_ROLE="init"))
    check_eq(cfg.get("role"), "init", "role from BATCH_AGENT_ROLE")


SOURCE = os.environ.get("BATCH_AGENT_SOURCE_DIR") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


@case(agent_only=True, modes=("sub",))
def default_grace_is_the_documented_one(mode):
    # The default --grace is one number in four places: what the agent uses (its
    # configuration dump), --help, README's options table and its budget table; and
    # it leaves the 5 s the budget needs before Batch's SIGKILL at 30 s.
    grace = _print_config([]).get("grace_seconds")
    check_eq(grace, 25, "grace_seconds in --print-config without --grace")
    rc, out, err = _agent(["--help"])
    check_eq(rc, 0, "--help status")
    text = " ".join(out.decode().split())
    m = re.search(r"--grace SECONDS \[GRACE\] .*?\(default (\d+(?:\.\d+)?)", text)
    check(m and float(m.group(1)) == grace, "--help gives default %s for --grace, the agent %r" % (
        m and m.group(1), grace))
    with open(os.path.join(SOURCE, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    m = re.search(r"^\| `--grace SECONDS` \| (\d+) \|", readme, re.M)
    check(m and float(m.group(1)) == grace, "README's options table gives default %s for --grace" % (m and m.group(1)))
    m = re.search(r"with the default `--grace (\d+)`", readme)
    check(m and float(m.group(1)) == grace, "README's budget gives default %s for --grace" % (m and m.group(1)))
    check(grace + 5 <= 30, "default grace %gs leaves under 5 s of Batch's 30 s" % grace)


@case(agent_only=True, modes=("sub",))
def spot_hold_setting(mode):
    # --spot-hold on|off|SECONDS, twin BATCH_AGENT_SPOT_HOLD: the margin past a Spot
    # interruption's time, in seconds, or null when off; default on (30 s).
    for args, env, want in [([], None, 30), (["--spot-hold", "on"], None, 30), (["--spot-hold", "off"], None, None),
                            (["--spot-hold", "2.5"], None, 2.5), ([], {"BATCH_AGENT_SPOT_HOLD": "off"}, None),
                            (["--spot-hold", "0"], {"BATCH_AGENT_SPOT_HOLD": "off"}, 0)]:
        cfg = _print_config(args, env=clean_env(**(env or {})))
        check_eq(cfg.get("spot_hold_seconds", "absent"), want, "spot_hold_seconds for %s %s" % (args, env))


@case(agent_only=True, modes=("sub",))
def auto_role_runs_payload_without_cluster_env(mode):
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        rc, out, err = _agent(["--"] + payload + [], env=clean_env())
        check_eq(rc, 0, "status with auto role (stderr %r)" % err[-300:])
        check(os.path.exists(marker), "payload did not run with the default (auto) role")


@case(agent_only=True, modes=("sub",))
def help_and_version(mode):
    for flag in ("-h", "--help"):
        rc, out, err = _agent([flag])
        check_eq(rc, 0, "%s status" % flag)
        check(b"--grace" in out and b"--role" in out, "%s output lacks the options: %r" % (flag, out[:300]))
        check(b"--remap-exit FROM:TO" in out and b"--rewrite-signal FROM:TO" in out,
              "%s output lacks --remap-exit or --rewrite-signal" % flag)
    for flag in ("-V", "--version"):
        rc, out, err = _agent([flag])
        check_eq(rc, 0, "%s status" % flag)
        check(re.search(rb"\d+\.\d+\.\d+", out), "%s prints no version: %r" % (flag, out))


@case(agent_only=True, modes=("sub",))
def json_log_lines(mode):
    # The agent's own lines (here: the error for a missing payload) in --log-format json
    # are whole lines, each one JSON object with "level" and "msg".
    prog = "/nonexistent/ba-json-log-prog"
    rc, out, err = _agent(["--role", "init", "--log-format", "json", "--log-level", "debug",
                           "--", prog])
    check_eq(rc, 127, "status for a missing payload")
    err = agent_stderr(err)
    lines = err.decode(errors="replace").splitlines()
    check(lines, "no log line on stderr")
    check(err.endswith(b"\n"), "stderr does not end with a whole line: %r" % err[-100:])
    named = False
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError("stderr line is not JSON: %r" % line) from None
        check(isinstance(obj, dict) and "level" in obj and "msg" in obj,
              "log line lacks level/msg: %r" % line)
        check(obj["level"] in ("error", "warn", "info", "debug"), "odd level in %r" % line)
        named = named or prog in line
    check(named, "no log line names %s: %r" % (prog, lines))


@case(agent_only=True, modes=("sub",))
def log_level_error_is_quiet_on_success(mode):
    # A normal run at --log-level error writes nothing of the agent's own to stderr.
    rc, out, err = _agent(["--role", "init", "--log-level", "error", "--", "/bin/true"])
    check_eq(rc, 0, "status")
    check_eq(agent_stderr(err), b"", "stderr at --log-level error")


SEVENTEEN_PAIRS = ",".join("%d:0" % i for i in range(17))
BAD_LISTS = [
    ("remap-exit", "256:0"), ("remap-exit", "3:256"), ("remap-exit", "-1:0"), ("remap-exit", "3"),
    ("remap-exit", "3:"), ("remap-exit", ":0"), ("remap-exit", "a:b"), ("remap-exit", "3:0,"),
    ("remap-exit", "3:0,3:1"), ("remap-exit", SEVENTEEN_PAIRS),
    ("rewrite-signal", "KILL:TERM"), ("rewrite-signal", "STOP:TERM"), ("rewrite-signal", "CHLD:TERM"),
    ("rewrite-signal", "TERM:0"), ("rewrite-signal", "NOPE:TERM"), ("rewrite-signal", "TERM:NOPE"),
    ("rewrite-signal", "TERM:-1"), ("rewrite-signal", "0:TERM"), ("rewrite-signal", "USR1"),
    ("rewrite-signal", "USR1:0,USR1:HUP"),
]


@case(agent_only=True, modes=("sub",))
def bad_remap_and_rewrite_are_64_or_78_naming_the_setting(mode):
    # As a flag: 64 naming the flag; in the environment: 78 naming the variable. Nothing
    # runs. A 17th pair is refused, not cut.
    bad = []
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        for flag, value in BAD_LISTS:
            var = "BATCH_AGENT_" + flag.upper().replace("-", "_")
            for args, env, want, says in ((["--" + flag, value], {}, EX_USAGE, "--" + flag),
                                         ([], {var: value}, EX_CONFIG, var)):
                rc, out, err = _agent(["--role", "init"] + args + ["--"] + payload, env=clean_env(**env))
                if rc != want or says.encode() not in err:
                    bad.append("%s %s: status %r, want %d naming %s (stderr %r)" % (
                        args, env, rc, want, says, err[-200:]))
                if os.path.exists(marker):
                    bad.append("%s %s: the payload ran" % (args, env))
                    os.unlink(marker)
    check(not bad, "; ".join(bad))


@case(agent_only=True, modes=("sub",))
def remap_and_rewrite_refuse_exec(mode):
    # With --exec nothing is left to remap or rewrite: refused rather than ignored.
    tries = [
        (["--exec", "--remap-exit", "1:0"], {}, EX_USAGE, b"--remap-exit"),
        (["--exec", "--rewrite-signal", "TERM:QUIT"], {}, EX_USAGE, b"--rewrite-signal"),
        (["--remap-exit", "1:0"], {"BATCH_AGENT_EXEC": "1"}, EX_CONFIG, b"BATCH_AGENT_EXEC"),
        (["--exec"], {"BATCH_AGENT_REWRITE_SIGNAL": "TERM:QUIT"}, EX_CONFIG, b"BATCH_AGENT_REWRITE_SIGNAL"),
    ]
    bad = []
    with TempDir() as d:
        marker, payload = _marker_payload(d)
        for flags, env, want, says in tries:
            rc, out, err = _agent(["--role", "init"] + flags + ["--"] + payload, env=clean_env(**env))
            if rc != want or says not in err:
                bad.append("%s %s: status %r, want %d naming %r (stderr %r)" % (flags, env, rc, want, says, err[-200:]))
            if os.path.exists(marker):
                bad.append("%s %s: the payload ran" % (flags, env))
                os.unlink(marker)
    check(not bad, "; ".join(bad))


@case(agent_only=True, modes=("sub",))
def print_config_shows_remap_and_rewrite(mode):
    cfg = _print_config(["--role", "init"])
    check_eq((cfg.get("remap_exit"), cfg.get("rewrite_signal")), ({}, {}), "defaults in --print-config")
    sixteen = ",".join("%d:%d" % (i, 255 - i) for i in range(16))
    cfg = _print_config(["--role", "init", "--remap-exit", "3:0", "--remap-exit", "143:0",
                         "--rewrite-signal", "TERM:QUIT", "--rewrite-signal", "usr1:0,12:RTMIN+1"],
                        env=clean_env(BATCH_AGENT_REMAP_EXIT=sixteen, BATCH_AGENT_REWRITE_SIGNAL="HUP:INT"))
    # The flags replace the variables' lists (each is parsed, so a bad variable is still 78).
    check_eq(cfg.get("remap_exit"), {"3": 0, "143": 0}, "remap_exit in --print-config")
    check_eq(cfg.get("rewrite_signal"), {"SIGTERM": "SIGQUIT", "SIGUSR1": None, "SIGUSR2": "SIGRTMIN+1"},
             "rewrite_signal in --print-config")
    cfg = _print_config(["--role", "init"], env=clean_env(BATCH_AGENT_REMAP_EXIT=sixteen))
    check_eq(len(cfg.get("remap_exit") or {}), 16, "16 pairs from BATCH_AGENT_REMAP_EXIT")
    check_eq(cfg["remap_exit"].get("15"), 240, "pair 15:240")


if __name__ == "__main__":
    run_cases()
