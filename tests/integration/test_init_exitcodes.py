#!/usr/bin/python3
"""Init role: the agent exits with the payload's status.

Exit code N -> N (all 256), death by signal N -> 128+N, payload not found -> 127,
not executable -> 126 (with a message naming the program), each as PID 1 and as a
plain (subreaper) process; --remap-exit FROM:TO (and BATCH_AGENT_REMAP_EXIT) changes the
status named and no other."""

import concurrent.futures
import signal
import subprocess

from agenttest import (VALGRIND, WRAPPER, Init, Skip, TempDir, case, check, check_eq, clean_env, init_argv,
                       py_payload, run, run_cases, wait_file)


def exit_codes():
    if not WRAPPER:
        return list(range(256))
    # Under valgrind & co. one run costs ~1 s: a sample that still covers every
    # boundary (0, 1, usage/config codes, 125..129, signal-looking codes, 255).
    return [0, 1, 2, 3, 63, 64, 77, 78, 100, 125, 126, 127, 128, 129, 130, 137, 143,
            200, 254, 255]


@case()
def exit_code_passthrough_0_255(mode):
    codes = exit_codes()

    def one(n):
        rc, out, err = run(mode, ["/bin/sh", "-c", "exit %d" % n], timeout=30)
        return n, rc, err

    bad = []
    # Eight inits at once, but two under a wrapper: eight valgrinds in PID namespaces on
    # a 2-core machine once returned 1 for one exit 143, with no error in any log.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 if WRAPPER else 8) as ex:
        for n, rc, err in ex.map(one, codes):
            if rc != n:
                bad.append("exit %d -> %r (stderr %r)" % (n, rc, err[-200:]))
    check(not bad, "%d of %d codes wrong: %s" % (len(bad), len(codes), "; ".join(bad[:10])))


@case()
def exit_code_with_output(mode):
    # The payload's stdout/stderr go through untouched, and the code still comes back.
    rc, out, err = run(mode, ["/bin/sh", "-c", "echo out-line; echo err-line >&2; exit 42"])
    check_eq(rc, 42, "exit status")
    check_eq(out, b"out-line\n", "stdout")
    check(b"err-line\n" in err, "stderr %r lacks the payload's line" % err)


@case()
def death_by_signal_is_128_plus_n(mode):
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGKILL,
                signal.SIGHUP, signal.SIGSEGV):
        rc, _, err = run(mode, py_payload(
            "import os, signal\n"
            "if %d != signal.SIGKILL: signal.signal(%d, signal.SIG_DFL)\n"
            "os.kill(os.getpid(), %d)\n"
            "import time; time.sleep(30)\n" % (sig, sig, sig)))
        check_eq(rc, 128 + sig, "status of a payload killed by %s (stderr %r)" % (
            signal.Signals(sig).name, err[-200:]))


@case(requires=["exitcodes127"])
def payload_not_found_127(mode):
    for prog in ("/nonexistent/dir/no-such-program", "no-such-program-ba7"):
        rc, out, err = run(mode, [prog, "arg"])
        check_eq(rc, 127, "status for missing %s (stderr %r)" % (prog, err))
        check(prog.encode() in err, "stderr does not name %s: %r" % (prog, err))


@case(requires=["exitcodes127"])
def payload_not_executable_126(mode):
    with TempDir() as d:
        script = d.write("not-exec.sh", "#!/bin/sh\nexit 0\n", mode=0o644)
        rc, out, err = run(mode, [script])
        check_eq(rc, 126, "status for a non-executable file (stderr %r)" % err)
        check(script.encode() in err, "stderr does not name %s: %r" % (script, err))
        rc, out, err = run(mode, [d.dir])
        check_eq(rc, 126, "status for a directory as payload (stderr %r)" % err)
        check(d.dir.encode() in err, "stderr does not name %s: %r" % (d.dir, err))


@case(requires=["exitcodes127"])
def payload_missing_interpreter_127(mode):
    # A script whose #! interpreter is missing fails at execve with ENOENT: 127, and
    # never looks like success.
    if VALGRIND:
        raise Skip("valgrind aborts (status 101) when an execve it let through fails")
    with TempDir() as d:
        script = d.write("bad-interp", "#!/nonexistent/interp\nexit 0\n", mode=0o755)
        rc, out, err = run(mode, [script])
        check_eq(rc, 127, "status for a script with a missing interpreter (stderr %r)" % err)


def _exec_run(mode, env):
    p = Init(mode, init_argv(["/bin/sh", "-c", "echo $$; exit 9"], exec_="BATCH_AGENT_EXEC" not in env),
             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    check_eq(p.proc.returncode, 9, "exit status with --exec (stderr %r)" % err)
    # the payload's pid as it sees itself == the agent's pid (1 inside a PID namespace)
    want = 1 if mode == "pid1" else p.proc.pid
    check_eq(int(out.split()[0]), want, "payload pid vs agent pid with exec")


@case(agent_only=True)
def exec_mode_replaces_agent(mode):
    _exec_run(mode, clean_env())


@case(agent_only=True, modes=("sub",))
def exec_mode_env_twin(mode):
    _exec_run(mode, clean_env(BATCH_AGENT_EXEC=1))


@case(agent_only=True)
def remap_exit_changes_only_the_status_named(mode):
    # tini -e: a payload whose exit 3 means "nothing to do" must not fail the job; every
    # other status (0 included) still comes back as it was.
    for code, want in ((3, 0), (4, 4), (0, 0), (1, 1)):
        rc, out, err = run(mode, ["/bin/sh", "-c", "exit %d" % code], extra=["--remap-exit", "3:0"])
        check_eq(rc, want, "status for exit %d with --remap-exit 3:0 (stderr %r)" % (code, err[-200:]))


@case(agent_only=True)
def remap_exit_143_makes_a_stopped_job_succeed(mode):
    # Batch stops a job with SIGTERM: a payload that dies of it (143) is the agent's 0,
    # while a payload that dies of another signal is still reported as such. Chained
    # pairs are looked up once: 143 -> 7 stays 7 although 7:1 is given.
    with TempDir() as d:
        ready = d.path("ready")
        p = Init(mode, init_argv(py_payload(
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
            "open(%r, 'w').write('1')\n"
            "time.sleep(60)\n" % ready), extra=["--remap-exit", "143:0"]))
        wait_file(ready, 10, "the payload to start")
        p.signal(signal.SIGTERM)
        check_eq(p.wait(10), 0, "status after a SIGTERM'd payload with --remap-exit 143:0")
    rc, out, err = run(mode, py_payload("import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"),
                       extra=["--remap-exit", "143:0"])
    check_eq(rc, 128 + signal.SIGUSR1, "status of a payload killed by SIGUSR1 with --remap-exit 143:0")
    rc, out, err = run(mode, py_payload("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
                       extra=["--remap-exit", "143:7", "--remap-exit", "7:1"])
    check_eq(rc, 7, "status with --remap-exit 143:7 --remap-exit 7:1 (one lookup)")


@case(agent_only=True, modes=("sub",))
def remap_exit_env_twin_takes_a_list(mode):
    env = clean_env(BATCH_AGENT_REMAP_EXIT="3:0,143:0,0:9")
    for code, want in ((3, 0), (143, 0), (0, 9), (5, 5)):
        rc, out, err = run(mode, ["/bin/sh", "-c", "exit %d" % code], env=env)
        check_eq(rc, want, "status for exit %d with BATCH_AGENT_REMAP_EXIT=3:0,143:0,0:9 (stderr %r)" % (
            code, err[-200:]))
    # The flag wins: its list replaces the variable's.
    rc, out, err = run(mode, ["/bin/sh", "-c", "exit 3"], env=env, extra=["--remap-exit", "4:0"])
    check_eq(rc, 3, "exit 3 with BATCH_AGENT_REMAP_EXIT=3:0 and --remap-exit 4:0")


if __name__ == "__main__":
    run_cases()
