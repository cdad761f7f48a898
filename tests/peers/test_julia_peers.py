#!/usr/bin/python3
"""Self-test of the Julia test peers: julia_manager.FakeJuliaManager <-> a small Python
shim doing what batch-agent will do on a worker node (connect, job_id line, read cookie and
timeout lines, run `julia --worker` = fake_julia_worker.py with the cookie on stdin and
stdout on the socket). Loopback only. Prints `N passed, N failed`."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake_julia_worker as fw  # noqa: E402
import julia_manager as jm  # noqa: E402
import julia_wire as jw  # noqa: E402

PY = sys.executable or "/usr/bin/python3"
WORKER = os.path.join(HERE, "fake_julia_worker.py")
MANAGER = os.path.join(HERE, "julia_manager.py")
LO = "127.0.0.1"


def job_id(index, uuid="0f3c1a52-6d1e-4b8e-9a7f-1c2d3e4f5a6b"):
    return f"{uuid}#{index}"


class ShimError(Exception):
    pass


def connect_retry(host, port, total=10.0):
    """start_batch_node_worker's retry(connect) with exponential back-off, bounded."""
    deadline = time.monotonic() + total
    delay = 0.05
    while True:
        try:
            return socket.create_connection((host, port), timeout=2.0)
        except OSError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def run_worker(sock, cookie, timeout, bind="127.0.0.1", status=None, extra_env=None,
               wait=30.0, cookie_on_stdin=True):
    env = dict(os.environ)
    env["JULIA_WORKER_TIMEOUT"] = str(timeout)
    env["FAKE_JULIA_PORT_HINT"] = "0"
    if status:
        env["FAKE_JULIA_STATUS"] = status
    env.update(extra_env or {})
    argv = [PY, WORKER, "--worker"]
    if bind:
        argv += ["--bind-to", bind]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=sock.fileno(),
                            stderr=subprocess.PIPE, env=env)
    try:
        _, errout = proc.communicate((cookie + "\n").encode() if cookie_on_stdin else b"",
                                     timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, errout = proc.communicate()
        raise ShimError("worker did not exit in time")
    return proc.returncode, errout.decode(errors="replace")


def shim_batch_node(host, port, jid, status=None, io_timeout=5.0, worker_env=None,
                    results=None):
    """Worker-node side of AWSBatchNodeManager, as batch-agent will do it."""
    sock = connect_retry(host, port)
    try:
        sock.sendall(f"job_id:{jid}\n".encode())
        deadline = jw.deadline_in(io_timeout)
        try:
            cl = jw.recv_line(sock, deadline)
            if cl is None:
                raise ShimError("manager closed before the cookie line")
            cookie = jw.parse_cookie_line(cl)
            if cookie is None:
                raise ShimError("malformed cookie line")
            tl = jw.recv_line(sock, deadline)
            if tl is None:
                raise ShimError("manager closed before the timeout line")
            timeout = jw.parse_worker_timeout_line(tl)
            if timeout is None:
                raise ShimError("malformed timeout line")
        except jw.PeerTimeout:
            raise ShimError("timed out reading manager lines") from None
        rc, errout = run_worker(sock, cookie, timeout, status=status, extra_env=worker_env)
        res = {"rc": rc, "stderr": errout, "cookie": cookie}
    except ShimError as e:
        res = {"shim_error": str(e)}
    finally:
        sock.close()
    if results is not None:
        results.append(res)
    return res


def shim_container(host, port, cookie, status=None, worker_env=None, results=None):
    """AWSBatchManager/DockerManager worker: connect; start_worker(sock, cookie)."""
    sock = connect_retry(host, port)
    try:
        rc, errout = run_worker(sock, cookie, 10, status=status, extra_env=worker_env)
        res = {"rc": rc, "stderr": errout}
    finally:
        sock.close()
    if results is not None:
        results.append(res)
    return res


def start_manager(**kw):
    kw.setdefault("host", LO)
    kw.setdefault("port", 0)
    kw.setdefault("io_timeout", 5.0)
    kw.setdefault("launch_timeout", 10.0)
    kw.setdefault("manager_worker_timeout", 10.0)
    m = jm.FakeJuliaManager(**kw)
    m.start()
    host, port = m.wait_listening(10)
    return m, host, port


def in_threads(*targets):
    ts = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in ts:
        t.start()
    return ts


def join_all(ts, timeout=40):
    end = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.1, end - time.monotonic()))
        if t.is_alive():
            raise AssertionError("shim thread hung")


def events(m, name):
    return [e for e in m.events if e["event"] == name]


def read_status(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


# -- cases --------------------------------------------------------------------------------
def case_regexes():
    ok = ["a" * 36 + "#123", "0-" + "a" * 34 + "#123"]
    bad = ["a" * 35 + "#123", "a" * 37 + "#123", "!" * 36 + "#123", "a" * 36 + "#",
           "a" * 36 + "#abc"]
    for c in ok:
        assert jw.parse_job_id("job_id:" + c) == c, c
    for c in bad:
        assert jw.parse_job_id("job_id:" + c) is None, c
    assert jw.parse_cookie_line("julia_cookie:1000") == "1000"
    assert jw.parse_cookie_line("julia_cookie:1.5") == "1"
    assert jw.parse_cookie_line("julia_cookie:foobar") == "foobar"
    for c in ("julia_cookie:-1", "foobar", "foobar:julia_cookie:1"):
        assert jw.parse_cookie_line(c) is None, c
    assert jw.parse_worker_timeout_line("julia_worker_timeout:1000") == 1000
    assert jw.parse_worker_timeout_line("julia_worker_timeout:1.5") == 1
    for c in ("julia_worker_timeout:-1", "julia_worker_timeout:foobar", "foobar",
              "foobar:julia_worker_timeout:1"):
        assert jw.parse_worker_timeout_line(c) is None, c
    assert jw.parse_worker_line("julia_worker:9001#198.18.0.3") == ("198.18.0.3", 9001)
    assert jw.parse_worker_line("From worker: julia_worker:1#x") is None
    assert jw.pad_cookie("abc") == b"abc" + b" " * 13
    assert jw.version_header("1.10.4") == b"1.10.4          "
    assert len(jw.version_header("1.12.0-DEV.12345678")) == 16


def case_bind_rule():
    f = fw.simulated_interfaces
    assert fw.pick_bind_addr(f("lo=127.0.0.1:loopback,eth0=198.18.0.3")) == "198.18.0.3"
    # first non-loopback wins, even link-local (the ecs-eth0 problem)
    assert fw.pick_bind_addr(
        f("lo=127.0.0.1:loopback,ecs-eth0=169.254.172.2,eth0=198.18.0.3")) == "169.254.172.2"
    assert fw.pick_bind_addr(f("eth1=198.18.0.9:down,eth0=198.18.0.3")) == "198.18.0.3"
    assert fw.pick_bind_addr(f("lo=127.0.0.1:loopback")) == "127.0.0.1"  # silent fallback
    assert fw.pick_bind_addr([]) == "127.0.0.1"
    assert fw.parse_bind_to("198.18.0.3:9100") == ("198.18.0.3", 9100)
    msg = fw.available_ipv4_msg(f("lo=127.0.0.1:loopback,ecs-eth0=169.254.172.2,eth0=198.18.0.3"))
    assert msg == ("Available IPv4 interfaces are:\n  ecs-eth0: inet 169.254.172.2"
                   "\n  eth0: inet 198.18.0.3"), msg


def case_linklocal_abort():
    env = dict(os.environ, FAKE_JULIA_INTERFACES="lo=127.0.0.1:loopback,ecs-eth0=169.254.172.2",
               JULIA_WORKER_TIMEOUT="1")
    p = subprocess.run([PY, WORKER, "--worker", "--aws-batch-node"], input=b"abc\n",
                       capture_output=True, env=env, timeout=20)
    assert p.returncode == 1, p
    assert b"Aborting due to use of link-local address (169.254.172.2)" in p.stderr, p.stderr
    assert b"ecs-eth0: inet 169.254.172.2" in p.stderr


def case_batch_node_two_workers():
    with tempfile.TemporaryDirectory() as d:
        st = os.path.join(d, "status")
        m, host, port = start_manager(workers=2, worker_timeout=20)
        res = []
        # node 2 checks in first; the manager must still order by node index
        ts = in_threads(lambda: shim_batch_node(host, port, job_id(2), st, results=res))
        time.sleep(0.3)
        ts += in_threads(lambda: shim_batch_node(host, port, job_id(1), st, results=res))
        summary = m.join(40)
        join_all(ts)
        assert summary["ok"] == 2, m.events
        ws = events(m, "worker")
        assert [w["node_index"] for w in ws] == [1, 2], ws
        for w in ws:
            assert w["cookie_ok"] is True and w["addr"] == LO and w["port"] > 0, w
            assert w["version"] == jw.DEFAULT_JULIA_VERSION
        assert all(r.get("rc") == 0 for r in res), res
        assert [e["job_id"] for e in events(m, "job_id")] == [job_id(2), job_id(1)]
        status = read_status(st)
        assert sum(1 for s in status if s["event"] == "joined") == 2, status
        assert all(s["reason"] == "remote_exit" for s in status if s["event"] == "exit")
        # the cookie appears nowhere: not in worker status/stderr, not in manager events
        blob = json.dumps(status) + json.dumps(m.events) + "".join(r["stderr"] for r in res)
        assert m.cookie not in blob


def case_container_mode():
    with tempfile.TemporaryDirectory() as d:
        st = os.path.join(d, "status")
        m, host, port = start_manager(workers=1, mode="container")
        res = []
        ts = in_threads(lambda: shim_container(host, port, m.cookie, st, results=res))
        summary = m.join(30)
        join_all(ts)
        assert summary["ok"] == 1, m.events
        assert not events(m, "job_id")
        assert res[0]["rc"] == 0, res


def case_startup_lines_ignored():
    # extra output before julia_worker: tolerated by read_worker_host_port
    m, host, port = start_manager(workers=1, mode="container")

    def worker():
        s = connect_retry(host, port)
        with s:
            s.sendall(b"some banner\n")
            run_worker(s, m.cookie, 10)
    ts = in_threads(worker)
    summary = m.join(30)
    join_all(ts)
    assert summary["ok"] == 1, m.events
    assert [e["line"] for e in events(m, "startup_line")] == ["some banner"]


def case_wrong_cookie_rejected():
    with tempfile.TemporaryDirectory() as d:
        st = os.path.join(d, "status")
        m, host, port = start_manager(workers=1, worker_timeout=2, wrong_cookie=True,
                                      drain=4.0)
        res = []
        ts = in_threads(lambda: shim_batch_node(host, port, job_id(1), st, results=res))
        summary = m.join(30)
        join_all(ts)
        assert summary["ok"] == 0
        w = events(m, "worker")[0]
        assert w["cookie_ok"] is False and w.get("rejected") is True, w
        out = [e["line"] for e in events(m, "worker_output")]
        assert any("Invalid connection credentials" in x for x in out), m.events
        assert any("Master process (id 1) could not connect within 2.0 seconds." in x
                   for x in out), out
        assert res[0]["rc"] == 1, res
        status = read_status(st)
        assert any(s["event"] == "rejected_connection" and s["reason"] == "bad_cookie"
                   for s in status), status
        assert status[-1]["reason"] == "master_timeout"


def case_manager_close_after_join():
    # connection to pid 1 lost after the join: Distributed's worker exits 1
    with tempfile.TemporaryDirectory() as d:
        st = os.path.join(d, "status")
        m, host, port = start_manager(workers=1, finish="close")
        res = shim_batch_node(host, port, job_id(1), st)
        summary = m.join(30)
        assert summary["ok"] == 1 and res["rc"] == 1, (res, m.events)
        assert read_status(st)[-1]["reason"] == "manager_closed"


def case_bad_version_header():
    with tempfile.TemporaryDirectory() as d:
        st = os.path.join(d, "status")
        m, host, port = start_manager(workers=1, worker_timeout=1, bad_version=True)
        res = shim_batch_node(host, port, job_id(1), st)
        m.join(30)
        w = events(m, "worker")[0]
        assert w["cookie_ok"] is False and w.get("rejected"), w
        rej = [s for s in read_status(st) if s["event"] == "rejected_connection"]
        assert rej and "invalid version string" in rej[0]["reason"], rej
        assert res["rc"] == 1


def _shim_against(**mkw):
    m, host, port = start_manager(workers=1, **mkw)
    res = shim_batch_node(host, port, job_id(1), io_timeout=3.0)
    m.join(30)
    return m, res


def case_malformed_cookie_line():
    m, res = _shim_against(cookie_line="julia_cookie:-1")
    assert res.get("shim_error") == "malformed cookie line", res


def case_malformed_timeout_line():
    m, res = _shim_against(timeout_line="julia_worker_timeout:soon")
    assert res.get("shim_error") == "malformed timeout line", res


def case_garbage():
    m, res = _shim_against(garbage=b"\x00\xffHTTP/1.1 400 Bad Request\r\n\r\n")
    assert res.get("shim_error") == "malformed cookie line", res


def case_close_early():
    for point, expect in (("accept", "manager closed before the cookie line"),
                          ("job_id", "manager closed before the cookie line"),
                          ("cookie", "manager closed before the timeout line")):
        m, res = _shim_against(close_early=point)
        assert res.get("shim_error") == expect, (point, res)


def case_old_manager_no_timeout_line():
    # BN0 sends only the cookie line: a worker waiting for the second line times out
    m, host, port = start_manager(workers=1, no_timeout_line=True, manager_worker_timeout=3)
    res = shim_batch_node(host, port, job_id(1), io_timeout=1.0)
    m.join(30)
    assert res.get("shim_error") == "timed out reading manager lines", res


def case_bad_job_id_rejected():
    m, host, port = start_manager(workers=2)
    res1 = shim_batch_node(host, port, "job_id_is_not_a_uuid#1", io_timeout=3.0)
    summary = m.join(30)
    assert res1.get("shim_error") == "manager closed before the cookie line", res1
    rej = events(m, "reject")
    assert rej and rej[0]["reason"] == "bad_job_id", m.events
    # like the real manager, registration stops after a bad job_id
    assert summary["workers"] == 0


def case_listen_delay():
    m = jm.FakeJuliaManager(host=LO, port=0, workers=1, listen_delay=0.5, io_timeout=5,
                            launch_timeout=10, manager_worker_timeout=10)
    # port 0 is only known after the delay: reserve one first
    probe = socket.socket()
    probe.bind((LO, 0))
    m.port = probe.getsockname()[1]
    probe.close()
    m.start()
    res = shim_batch_node(LO, m.port, job_id(1))
    summary = m.join(30)
    assert res.get("rc") == 0 and summary["ok"] == 1, (res, m.events)


def case_worker_master_timeout():
    env = dict(os.environ, JULIA_WORKER_TIMEOUT="0.5", FAKE_JULIA_PORT_HINT="0")
    p = subprocess.run([PY, WORKER, "--worker", "--bind-to", LO], input=b"cookie\n",
                       capture_output=True, env=env, timeout=20)
    assert p.returncode == 1, p
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith("julia_worker:") and lines[0].endswith("#127.0.0.1"), lines
    assert "Master process (id 1) could not connect within 0.5 seconds." in lines, lines
    assert lines[-1] == "exiting.", lines
    assert b"cookie" not in p.stdout.replace(b"could", b"")  # never echoes the cookie


def case_worker_cookie_too_long():
    env = dict(os.environ, JULIA_WORKER_TIMEOUT="1", FAKE_JULIA_PORT_HINT="0")
    p = subprocess.run([PY, WORKER, "--worker", "--bind-to", LO],
                       input=b"x" * 17 + b"\n", capture_output=True, env=env, timeout=20)
    assert p.returncode == 1 and b"AssertionError" in p.stdout, p


def case_manager_cli():
    # the CLI emits JSON lines; run it against a shim
    probe = socket.socket()
    probe.bind((LO, 0))
    port = probe.getsockname()[1]
    probe.close()
    env = dict(os.environ, TEST_COOKIE="clicookie")
    p = subprocess.Popen([PY, MANAGER, "--host", LO, "--port", str(port), "--workers", "1",
                          "--cookie-env", "TEST_COOKIE", "--worker-timeout", "10",
                          "--launch-timeout", "10", "--io-timeout", "5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    res = shim_batch_node(LO, port, job_id(3))
    out, errout = p.communicate(timeout=30)
    recs = [json.loads(x) for x in out.decode().splitlines()]
    assert p.returncode == 0, (out, errout)
    w = [r for r in recs if r["event"] == "worker"][0]
    assert w["cookie_ok"] and w["node_index"] == 3 and w["job_id"] == job_id(3), w
    assert res["cookie"] == "clicookie" and res["rc"] == 0
    assert b"clicookie" not in out


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


def main():
    passed = failed = 0
    for case in CASES:
        t0 = time.monotonic()
        try:
            case()
        except Exception:
            failed += 1
            print(f"FAIL {case.__name__} ({time.monotonic() - t0:.1f}s)")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {case.__name__} ({time.monotonic() - t0:.1f}s)")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
