#!/usr/bin/python3
"""Self-test of loadgen (tests/peers/loadgen.c) against a scripted manager written with
nativeproto.py, on 127.0.0.1: the redial contract (error "busy" as the first frame, no
manager hello, error "timeout" during the handshake), rejects counted by code, a wrong
cookie, --no-redial, and the steady state through shutdown. LOADGEN_BIN names the
binary (ctest sets it)."""

import json
import os
import socket
import subprocess
import sys
import threading
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nativeproto as np  # noqa: E402

LOADGEN = os.environ.get("LOADGEN_BIN", "")
COOKIE = "loadgen self-test cookie, 32 bytes or more"
JOB = "0f0e2c5a-1b2c-4d5e-8f90-123456789abc"
TIMEOUT = 30 * float(os.environ.get("BATCH_AGENT_TIMEOUT_SCALE") or 1)


class Manager:
    """Accepts on 127.0.0.1; the n-th connection (from 0) is served by
    script(n, conn), each in a thread of its own. Records what it saw in .log."""

    def __init__(self, script):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.log = []
        self.lock = threading.Lock()
        self.threads = []
        self.count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                n, self.count = self.count, self.count + 1
            t = threading.Thread(target=self._serve, args=(n, s), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, n, s):
        with np.Conn(s) as conn:
            try:
                self.script(self, n, conn)
            except (np.ProtocolError, OSError, TimeoutError) as e:
                self.note(f"connection {n}: {type(e).__name__} {e}")

    def note(self, what):
        with self.lock:
            self.log.append(what)

    def close(self):
        """Stops accepting and waits for the connections being served (their notes)."""
        self.sock.close()
        for t in list(self.threads):
            t.join(TIMEOUT)


def run_loadgen(port, workers, *extra, cookie=COOKIE):
    r = subprocess.run([LOADGEN, "--workers", str(workers), "--manager", f"127.0.0.1:{port}", "--job", JOB,
                        "--connect-timeout", "20", "--deadline", str(TIMEOUT), *extra],
                       env={"BATCH_AGENT_COOKIE": cookie}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TIMEOUT + 10)
    summary = json.loads(r.stdout)
    assert summary["exit_code"] == r.returncode, (summary, r.returncode)
    return summary


def steady_state(manager, conn, all_in):
    """After accept: payload_started, then (once every worker is in) shutdown, the exit
    report, and the worker's half-close."""
    conn.recv_msg(expect=("payload_started",))
    all_in.wait(TIMEOUT)
    conn.send(np.shutdown(1000, "self-test"))
    while conn.recv_msg(expect=("heartbeat", "payload_exited"))["type"] == "heartbeat":
        pass  # heartbeats keep coming until the worker has read the shutdown
    try:
        conn.recv(timeout=TIMEOUT)
    except np.ConnectionClosed:
        manager.note("clean exit report")


def case_redials_rejects_and_shutdown():
    """4 workers: connections 0 and 1 are refused with busy, 2 closes before hello, 3 is
    timed out after hello; node 4 is rejected as a duplicate; the rest register."""
    registered = []
    all_in = threading.Event()

    def script(manager, n, conn):
        if n < 2:
            conn.send(np.error("busy", "at capacity"))
            return
        if n == 2:
            conn.recv_msg(expect=("hello",))
            return
        if n == 3:
            raise_timeout_after_hello(conn)
            return
        reg, answer = np.manager_handshake(
            conn, COOKIE, lambda r: np.reject("duplicate_node", "taken") if r["node_index"] == 4 else np.accept(100),
            timeout=TIMEOUT)
        if answer["type"] == "reject":
            return
        assert reg["job_id"] == f"{JOB}#{reg['node_index']}" and reg["num_nodes"] == 5, reg
        assert reg["address"].startswith("127.") and reg["cpus"] == 1, reg
        with manager.lock:
            registered.append(reg["node_index"])
            if len(registered) == 3:
                all_in.set()
        steady_state(manager, conn, all_in)

    m = Manager(script)
    try:
        s = run_loadgen(m.port, 4)
    finally:
        m.close()
    assert s["registered"] == 3 and s["completed"] == 3, s
    assert s["rejected"] == {"duplicate_node": 1}, s
    assert s["redial_reasons"] == {"busy": 2, "no_hello": 1, "timeout": 1}, s
    assert s["redials"] == 4 and s["errors"] == {} and s["exit_code"] == 1, s
    assert s["first_connect"] <= s["last_accept"] and s["cpu_s_at_last_accept"] is None, s
    assert sorted(registered) == [1, 2, 3], registered
    assert m.log.count("clean exit report") == 3, m.log


def raise_timeout_after_hello(conn):
    """Manager side up to the worker's register, then error timeout."""
    hs = np.ManagerHandshake(conn, COOKIE)
    hs.recv_hello()
    hs.send_hello()
    hs.recv_auth()
    hs.send_auth()
    conn.recv_msg(expect=("register",))
    conn.send(np.error("timeout", "handshake not completed in time"))  # sealed, as the codec does


def case_wrong_cookie_is_final():
    m = Manager(lambda manager, n, conn: np.manager_handshake(conn, "another cookie entirely, also 32+ bytes"))
    try:
        s = run_loadgen(m.port, 3)
    finally:
        m.close()
    # The worker proves itself first: the manager refuses its proof (auth_failed).
    assert s["errors"] == {"cookie_refused": 3} and s["redials"] == 0 and s["exit_code"] == 1, s
    assert sum("auth_failed" in line for line in m.log) == 3, m.log


def case_no_redial_gives_up_on_busy():
    m = Manager(lambda manager, n, conn: conn.send(np.error("busy")))
    try:
        s = run_loadgen(m.port, 2, "--no-redial")
    finally:
        m.close()
    assert s["errors"] == {"gave_up_after_busy": 2} and s["registered"] == 0 and s["exit_code"] == 1, s


def main():
    if not os.access(LOADGEN, os.X_OK):
        print(f"LOADGEN_BIN={LOADGEN!r} is not an executable (ctest sets it)")
        return 1
    failed = 0
    for name, fn in list(globals().items()):
        if name.startswith("case_"):
            try:
                fn()
                print(f"PASS {name}", flush=True)
            except Exception:  # noqa: BLE001 - each case reports for itself
                failed += 1
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    print(f"{failed} failed" if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
