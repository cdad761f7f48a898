"""The worker role on its own, against fake managers written with nativeproto.py (or
none at all): unreachable manager, bad configuration, shutdown, manager loss,
--on-manager-loss continue, --exec with the connection handed over."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import nativeproto as npr  # noqa: E402
from mnp import Agent, Job, check, expect_exit, read, wait_for_file  # noqa: E402

runner = mnp.Runner()
PY = "/usr/bin/python3"


class FakeManager:
    """A listening socket on loopback; script(conn, reg) runs on a thread once a
    worker has registered (accepted with accept_ms). Errors are kept for the test."""

    def __init__(self, cookie, script, accept_ms=200, answer=None, versions=npr.SUPPORTED_VERSIONS):
        self.versions = versions
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.cookie, self.script, self.accept_ms, self.answer = cookie, script, accept_ms, answer
        self.error = None
        self.result = None
        self.registered = threading.Event()
        self.conn = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.srv.settimeout(30)
            sock, _ = self.srv.accept()
            self.conn = npr.Conn(sock)
            reg, _ = npr.manager_handshake(self.conn, self.cookie,
                                           decide=lambda r: self.answer or npr.accept(self.accept_ms),
                                           versions=self.versions)
            self.reg = reg
            self.registered.set()
            self.result = self.script(self.conn, reg)
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.error = e
            self.registered.set()

    def finish(self, timeout=20):
        self.thread.join(timeout * mnp.SLOW)
        check(not self.thread.is_alive(), "the fake manager's script did not finish")
        if self.error:
            raise Failure(f"fake manager: {self.error!r}")
        return self.result

    def close(self):
        self.srv.close()
        if self.conn:
            self.conn.close()


Failure = mnp.Failure


def worker(job, workdir, args, payload, env_extra=None, cookie=None, name="worker"):
    return Agent(name, [*args, "--", *payload], job.env(1, main_addr="127.0.0.1", cookie=cookie, extra=env_extra),
                 workdir)


def recv_until(conn, types, timeout):
    """Frames until one of types (heartbeats and others skipped); returns it."""
    deadline = time.monotonic() + timeout * mnp.SLOW
    seen = []
    while True:
        msg = conn.recv_msg(timeout=max(0.01, deadline - time.monotonic()))
        seen.append(msg["type"])
        if msg["type"] in types:
            return msg, seen


@runner.case
def unreachable_manager_exits_69_quietly(workdir):
    port = mnp.free_port()  # nothing listens there
    job = Job(2)
    t0 = time.monotonic()
    w = worker(job, workdir, ["--port", str(port), "--connect-timeout", "2"], ["true"])
    expect_exit(w, mnp.EX_UNAVAILABLE, 15)
    took = time.monotonic() - t0
    check(1.8 <= took < 6 * mnp.SLOW, f"gave up after {took:.1f} s, --connect-timeout 2")
    err = w.stderr()
    check("unreachable for 2 s" in err and f"127.0.0.1:{port}" in err, f"stderr does not say so:\n{err}")
    lines = err.strip().splitlines()
    check(len(lines) <= 4, f"{len(lines)} log lines for one unreachable manager:\n{err}")


@runner.case
def the_wrapper_follows_the_chain_load(workdir):
    """batch-agent chain-loads batch-agent-net for the network roles: natively the
    process becomes batch-agent-net, and a wrapper (valgrind in CI) must follow the
    execve, or every network role would go unchecked by it."""
    job = Job(2)
    w = worker(job, workdir, ["--port", str(mnp.free_port()), "--connect-timeout", "60"], ["true"])
    try:
        w.wait_for_log("not reachable yet", 30)
        exe = os.path.basename(os.readlink(f"/proc/{w.pid}/exe"))
        if mnp.WRAPPER and "valgrind" in os.path.basename(mnp.WRAPPER[0]):
            check(exe.startswith("memcheck"), f"after the chain-load the agent runs as {exe}, outside valgrind")
        elif not mnp.WRAPPER:
            check(exe == "batch-agent-net", f"the network role runs as {exe}")
    finally:
        w.close()


@runner.case
def literal_ref_manager_is_config_error(workdir):
    job = Job(2)
    w = Agent("ref", ["--", "true"], job.env(1, extra={"BATCH_AGENT_MANAGER": "Ref::manager"}), workdir)
    expect_exit(w, mnp.EX_CONFIG, 10)
    err = w.stderr()
    check('"Ref::manager"' in err and 'parameter "manager"' in err, f"stderr does not name the parameter:\n{err}")
    w2 = Agent("ref2", ["--manager", "Ref::mgr", "--", "true"], {"PATH": "/usr/bin:/bin", "BATCH_AGENT_COOKIE": "x" * 32},
               workdir)
    expect_exit(w2, mnp.EX_CONFIG, 10)
    check('parameter "mgr"' in w2.stderr(), f"stderr does not name the parameter:\n{w2.stderr()}")


@runner.case
def short_cookie_is_a_warning(workdir):
    """PROTOCOL.md §7: a cookie of 16 to 31 bytes loads, with a warning that names where
    it came from (never the cookie)."""
    job = Job(2, cookie="0123456789abcdefghijklmnopqrs")  # 29 bytes
    w = worker(job, workdir, ["--port", str(mnp.free_port()), "--connect-timeout", "0"], ["true"])
    expect_exit(w, mnp.EX_UNAVAILABLE, 10)
    err = w.stderr()
    check("the cookie BATCH_AGENT_COOKIE is only 29 bytes: use at least 32" in err, err)
    check(job.cookie not in err, "the cookie is in the log")


@runner.case
def cookie_under_16_bytes_is_refused(workdir):
    """Under 16 bytes: exit 64 before any connection, naming the variable or the file,
    never the value; the main refuses it too."""
    job = Job(2, cookie="0123456789abcde")  # 15 bytes
    port = mnp.free_port()
    w = worker(job, workdir, ["--port", str(port), "--connect-timeout", "5"], ["true"])
    expect_exit(w, mnp.EX_USAGE, 10)
    err = w.stderr()
    check("the cookie BATCH_AGENT_COOKIE is 15 bytes: at least 16 are required" in err, err)
    check(job.cookie not in err, "the cookie is in the log")
    path = os.path.join(workdir, "short-cookie")
    with open(path, "w") as f:
        f.write("x" * 10 + "\n")
    os.chmod(path, 0o600)
    w2 = worker(job, workdir, ["--port", str(port), "--cookie-file", path], ["true"], cookie=False, name="file")
    expect_exit(w2, mnp.EX_USAGE, 10)
    check(f"the cookie {path} (--cookie-file) is 10 bytes" in w2.stderr(), w2.stderr())
    main = Agent("main", ["--port", str(port), "--", "true"], job.env(0), workdir)
    expect_exit(main, mnp.EX_USAGE, 10)
    check("is 15 bytes: at least 16 are required" in main.stderr(), main.stderr())


@runner.case
def cookie_file_of_4096_bytes_and_a_newline(workdir):
    """The longest cookie (4096 bytes) in a file that ends in CR LF, as editors write
    it, authenticates; one byte more is refused (78), naming the file."""
    cookie = "k" * 4096
    job = Job(2, cookie=cookie)
    path = os.path.join(workdir, "long-cookie")
    with open(path, "w", newline="") as f:
        f.write(cookie + "\r\n")
    os.chmod(path, 0o600)
    def script(conn, reg):
        recv_until(conn, ("payload_exited",), 10)  # `true` ran: the cookie was taken
        conn.send(npr.shutdown(3000, "done"))

    fm = FakeManager(cookie, script)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--cookie-file", path], ["true"], cookie=False)
        expect_exit(w, 0, 15)
        fm.finish()
    finally:
        fm.close()
    with open(path, "w") as f:
        f.write(cookie + "k\n")
    w2 = worker(job, workdir, ["--port", "1", "--cookie-file", path], ["true"], cookie=False, name="long")
    expect_exit(w2, mnp.EX_CONFIG, 10)
    check(f"cookie file {path} (--cookie-file) is longer than 4096 bytes" in w2.stderr(), w2.stderr())


@runner.case
def julia_cookie_warnings(workdir):
    """The Julia dialect: the cookie travels in clear, and Distributed takes at most 16
    ASCII bytes (HDR_COOKIE_LEN); no warning about 32 bytes, which Julia cannot use."""
    job = Job(2, cookie="0123456789abcdefghij")  # 20 bytes
    w = worker(job, workdir, ["--protocol", "julia", "--manager", f"127.0.0.1:{mnp.free_port()}",
                              "--connect-timeout", "0"], ["true"])
    w.wait(10)
    err = w.stderr()
    check("is 20 bytes: Julia's Distributed accepts at most 16 ASCII bytes" in err, err)
    check("sends the cookie in clear text" in err, err)
    check("use at least 32" not in err, err)
    check(job.cookie not in err, "the cookie is in the log")


@runner.case
def no_cookie_is_config_error(workdir):
    job = Job(2)
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        w = worker(job, workdir, ["--port", str(srv.getsockname()[1])], ["true"], cookie=False)
        expect_exit(w, mnp.EX_CONFIG, 10)
        check("no cookie" in w.stderr(), f"stderr does not say the cookie is missing:\n{w.stderr()}")
        w2 = worker(job, workdir, ["--port", "1", "--cookie-file", os.path.join(workdir, "nope")], ["true"],
                    cookie=False, name="nofile")
        expect_exit(w2, mnp.EX_CONFIG, 10)
        check("nope" in w2.stderr(), f"stderr does not name the cookie file:\n{w2.stderr()}")
    finally:
        srv.close()


@runner.case
def shutdown_from_manager_exits_0(workdir):
    job = Job(2)
    out = os.path.join(workdir, "payload.pid")

    def script(conn, reg):
        started, _ = recv_until(conn, ("payload_started",), 10)
        wait_for_file(out, 10)  # the payload is under way
        conn.send(npr.shutdown(3000, "test is over"))
        exited, _ = recv_until(conn, ("payload_exited",), 10)
        return reg, started, exited

    fm = FakeManager(job.cookie, script)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2"],
                   ["/bin/sh", "-c", 'echo $$ > "$1"; exec sleep 60', "p", out])
        expect_exit(w, 0, 15)
        reg, started, exited = fm.finish()
        check(reg["node_index"] == 1 and reg["num_nodes"] == 2 and reg["job_id"] == f"{job.uuid}#1",
              f"registration: {reg}")
        check(reg["address"] == "127.0.0.1", f"advertised address {reg['address']!r}")
        check(started["pid"] == int(read(out)), f"payload_started pid {started['pid']} vs {read(out)}")
        check(exited.get("signal") == 15, f"payload_exited: {exited}")
        check("asks us to shut down: test is over" in w.stderr(), w.stderr())
    finally:
        fm.close()


# A payload that writes its peer view (PROTOCOL.md 4.1, README "The peer view").
VIEW = ('o="$1"; { echo "$BATCH_AGENT_NODES"; echo "$BATCH_AGENT_NODE_RANK"; echo "$BATCH_AGENT_NUM_NODES"; '
        'cat "$BATCH_AGENT_HOSTFILE"; } > "$o.tmp"; mv "$o.tmp" "$o"; exec sleep 60')
ROSTER = [(0, "198.18.0.1", 4), (1, "127.0.0.1", 2.5), (2, "198.18.0.3", None)]


@runner.case
def roster_starts_the_payload_with_the_peer_view(workdir):
    """Version 3: accepted with roster: true, the worker starts nothing until the whole
    roster is in, then its payload sees the view, and it reports payload_started and
    ready, in that order."""
    job = Job(3)
    out = os.path.join(workdir, "view")

    def script(conn, reg):
        w_ready.wait(10 * mnp.SLOW)
        check(not os.path.exists(out), "the payload started before the roster")
        for chunk in npr.rosters(ROSTER):
            conn.send(chunk)
        started, seen = recv_until(conn, ("payload_started",), 10)
        ready, _ = recv_until(conn, ("ready",), 10)
        wait_for_file(out, 10)
        conn.send(npr.shutdown(3000, "test is over"))
        recv_until(conn, ("payload_exited",), 10)
        return started

    w_ready = threading.Event()
    fm = FakeManager(job.cookie, script, answer=npr.accept(200, roster=True), versions=npr.ALL_VERSIONS)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2", "--hostfile-format", "mpich"],
                   ["/bin/sh", "-c", VIEW, "p", out])
        w.wait_for_log("waiting for the roster", 10)
        w_ready.set()
        expect_exit(w, 0, 15)
        fm.finish()
        lines = read(out).splitlines()
        check(lines == ["198.18.0.1,127.0.0.1,198.18.0.3", "1", "3", "198.18.0.1:4", "127.0.0.1:2", "198.18.0.3"],
              f"the payload's view: {lines}")
        check("roster: 3 nodes, this one is rank 1" in w.stderr(), w.stderr())
    finally:
        fm.close()


def error_code(conn):
    """The code of the error the worker sends next (heartbeats skipped)."""
    try:
        msg, seen = recv_until(conn, ("error",), 10)
        return msg["code"]
    except npr.ProtocolError as e:
        if not e.remote:
            raise
        return e.code


def worker_refuses_the_roster(workdir, chunks, why, versions=npr.ALL_VERSIONS, roster=True):
    """The manager sends chunks after accept: the worker answers bad_message, starts no
    payload and exits 76, saying why."""
    job = Job(3)
    out = os.path.join(workdir, "view")

    def script(conn, reg):
        for chunk in chunks:
            conn.send(chunk)
        return error_code(conn)

    fm = FakeManager(job.cookie, script, answer=npr.accept(200, roster=roster), versions=versions)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2"], ["/bin/sh", "-c", VIEW, "p", out])
        expect_exit(w, mnp.EX_PROTOCOL, 15)
        if chunks:
            code = fm.finish()
            check(code == npr.BAD_MESSAGE, f"the worker answered {code}")
        check(why in w.stderr(), w.stderr())
        check(not os.path.exists(out), "a payload started on a bad roster")
    finally:
        fm.close()


@runner.case
def roster_chunk_out_of_order_exits_76(workdir):
    worker_refuses_the_roster(workdir, [npr.roster(3, 1, ROSTER[1:])], "a roster chunk out of order")


@runner.case
def roster_without_this_node_exits_76(workdir):
    nodes = [(0, "198.18.0.1", 4), (2, "198.18.0.3", None)]
    worker_refuses_the_roster(workdir, npr.rosters(nodes), "a roster without this node")


@runner.case
def roster_out_of_index_order_exits_76(workdir):
    worker_refuses_the_roster(workdir, npr.rosters([ROSTER[1], ROSTER[0], ROSTER[2]]), "out of node-index order")


@runner.case
def roster_promised_in_version_2_exits_76(workdir):
    """accept with roster: true in a version 2 session: the manager broke the protocol."""
    worker_refuses_the_roster(workdir, [], "promised a roster in a version 2 session",
                              versions=npr.SUPPORTED_VERSIONS)


@runner.case
def roster_not_promised_exits_76(workdir):
    """A roster to a worker accepted without roster: true (its payload already runs)."""
    job = Job(3)

    def script(conn, reg):
        recv_until(conn, ("payload_started",), 10)
        for chunk in npr.rosters(ROSTER):
            conn.send(chunk)
        return error_code(conn)

    fm = FakeManager(job.cookie, script, versions=npr.ALL_VERSIONS)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2"], ["/bin/sleep", "60"])
        expect_exit(w, mnp.EX_PROTOCOL, 15)
        check(fm.finish() == npr.BAD_MESSAGE, "the worker did not answer bad_message")
        check("a roster we were not promised" in w.stderr(), w.stderr())
    finally:
        fm.close()


@runner.case
def shutdown_after_payload_exit_keeps_status(workdir):
    """A shutdown that arrives after the payload already failed (here while what it left
    behind still runs) must not turn its status into exit 0."""
    job = Job(2)

    def script(conn, reg):
        exited, _ = recv_until(conn, ("payload_exited",), 10)
        conn.send(npr.shutdown(3000, "the job is over"))
        return exited

    fm = FakeManager(job.cookie, script)
    try:
        # What the payload leaves ignores SIGTERM (the payload exits only once the
        # trap is set) and lives until the grace period's SIGKILL: the shutdown reaches
        # the worker within that window however slow the machine (the grace stretches
        # with the timeout scale).
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2", "--grace", mnp.wait_s(3)],
                   ["/bin/sh", "-c", "(trap '' TERM; : > \"$1\"; exec sleep 60) & "
                    "n=0; until [ -e \"$1\" ] || [ $n -ge 1000 ]; do n=$((n+1)); sleep 0.01; done; exit 3",
                    "p", os.path.join(workdir, "trap-set")])
        expect_exit(w, 3, 15)
        exited = fm.finish()
        check(exited.get("exit_code") == 3, f"payload_exited: {exited}")
        check("the payload has already ended" in w.stderr(), w.stderr())
    finally:
        fm.close()


@runner.case
def silent_manager_is_lost_exit_69(workdir):
    job = Job(2)
    pidfile = os.path.join(workdir, "payload.pid")
    lost = threading.Event()

    def script(conn, reg):
        # Say nothing more; wait until the worker hangs up.
        t0 = time.monotonic()
        try:
            while True:
                conn.recv_msg(timeout=20)
        except npr.ConnectionClosed:
            pass
        lost.set()
        return time.monotonic() - t0

    fm = FakeManager(job.cookie, script, accept_ms=200)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2", "--grace", "2"],
                   ["/bin/sh", "-c", 'echo $$ > "$1"; exec sleep 60', "p", pidfile])
        fm.registered.wait(10 * mnp.SLOW)
        t0 = time.monotonic()
        expect_exit(w, mnp.EX_UNAVAILABLE, 15)
        took = time.monotonic() - t0
        silent_for = fm.finish()
        # 3 heartbeats of 0.2 s, plus one timer tick.
        check(silent_for < 1.5 * mnp.SLOW, f"the worker noticed the silence after {silent_for:.2f} s")
        check(took < 2.5 * mnp.SLOW, f"the worker exited {took:.2f} s after registering")
        err = w.stderr()
        check("lost the manager" in err and "no heartbeat" in err, f"stderr:\n{err}")
        pid = int(read(pidfile))
        check(not os.path.exists(f"/proc/{pid}"), "the payload outlived its agent")
    finally:
        fm.close()


@runner.case
def manager_closes_exit_69(workdir):
    job = Job(2)

    def script(conn, reg):
        recv_until(conn, ("payload_started",), 10)
        conn.close()

    fm = FakeManager(job.cookie, script)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2"], ["sleep", "60"])
        expect_exit(w, mnp.EX_UNAVAILABLE, 10)
        fm.finish()
        check("lost the manager" in w.stderr(), w.stderr())
    finally:
        fm.close()


@runner.case
def manager_breaking_protocol_exits_76(workdir):
    """After accept, a frame that does not open (garbage inside the seal, a forged tag,
    a replayed or a plain frame) or a message the worker does not take (a second
    accept) is answered with error bad_frame / unexpected_message; the payload is
    stopped as on manager loss and the worker exits 76, not 69."""
    job = Job(2)
    heartbeat = npr.encode_payload(npr.heartbeat())
    cases = (("garbage", npr.BAD_FRAME), ("forged_tag", npr.BAD_FRAME), ("replayed", npr.BAD_FRAME),
             ("plain", npr.BAD_FRAME), ("accept", npr.UNEXPECTED))
    for case, expected in cases:
        pidfile = os.path.join(workdir, f"{case}.pid")

        def script(conn, reg, case=case):
            recv_until(conn, ("payload_started",), 10)
            wait_for_file(pidfile, 10)
            if case == "garbage":
                conn.send_frame_bytes(b"{bad}")  # sealed, so only the JSON is wrong
            elif case == "forged_tag":
                conn.send_frame_bytes(heartbeat, tamper=lambda f: npr.flip_bit(f, 8 * len(f) - 1))
            elif case == "replayed":
                conn.send_frame_bytes(heartbeat, seq=0)  # the number of the accept, already used
            elif case == "plain":
                conn.send_raw(npr.encode_frame(npr.heartbeat()))
            else:
                conn.send(npr.accept(200))
            try:
                while True:
                    conn.recv_msg(timeout=5)
            except npr.ProtocolError as e:
                return e

        fm = FakeManager(job.cookie, script)
        try:
            w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2", "--grace", "2"],
                       ["/bin/sh", "-c", 'echo $$ > "$1"; exec sleep 60', "p", pidfile], name=f"worker-{case}")
            expect_exit(w, mnp.EX_PROTOCOL, 15)
            got = fm.finish()
            check(isinstance(got, npr.ProtocolError) and got.remote and got.code == expected,
                  f"{case}: the manager got {got!r}, expected error {expected}")
            check("broke the protocol" in w.stderr(), f"{case}:\n{w.stderr()}")
            check(not os.path.exists(f"/proc/{int(read(pidfile))}"), f"{case}: the payload outlived its agent")
        finally:
            fm.close()


def worker_refuses_the_managers_hello(job, workdir, reply, code):
    """A raw listener answers the worker's hello with reply(hello): the worker must send
    error `code`, exit 76 and never run its payload."""
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        ran = os.path.join(workdir, "ran")
        w = worker(job, workdir, ["--port", str(srv.getsockname()[1])], ["touch", ran])
        srv.settimeout(10 * mnp.SLOW)
        sock, _ = srv.accept()
        conn = npr.Conn(sock)
        hello = conn.recv_msg(timeout=5, expect=("hello",))
        conn.send(reply(hello))
        try:
            got = conn.recv_msg(timeout=5)
        except npr.ProtocolError as e:
            got = e
        check(isinstance(got, npr.ProtocolError) and got.remote and got.code == code,
              f"the worker answered {got!r}")
        expect_exit(w, mnp.EX_PROTOCOL, 10)
        check(not os.path.exists(ran), "the payload ran")
        conn.close()
    finally:
        srv.close()


@runner.case
def manager_hello_of_wrong_type_is_unexpected(workdir):
    """A manager that answers our hello with something else (here a worker's hello)
    gets error unexpected_message; the worker exits 76."""
    worker_refuses_the_managers_hello(Job(2), workdir, lambda hello: npr.hello_worker(npr.nonce()),
                                      npr.UNEXPECTED)


@runner.case
def manager_choosing_unoffered_version_exits_76(workdir):
    """A manager hello with a version the worker never offered (4; it offers 3 and 2) is
    answered with error unsupported_version; the worker exits 76."""
    worker_refuses_the_managers_hello(Job(2), workdir, lambda hello: npr.hello_manager(npr.nonce(), version=4),
                                      npr.UNSUPPORTED_VERSION)


@runner.case
def peer_closing_before_hello_is_named(workdir):
    """A port where something accepts and hangs up without a hello: the worker redials
    until --connect-timeout and then says what it saw."""
    job = Job(2)
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                srv.accept()[0].close()
            except OSError:
                pass

    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        w = worker(job, workdir, ["--port", str(srv.getsockname()[1]), "--connect-timeout", "2"], ["true"])
        expect_exit(w, mnp.EX_UNAVAILABLE, 15)
        check("closed or stayed silent before its hello" in w.stderr() and "not a batch-agent manager?" in w.stderr(),
              w.stderr())
    finally:
        stop.set()
        t.join(2)
        srv.close()


@runner.case
def manager_silent_after_its_hello_is_unavailable(workdir):
    """The silence rule (PROTOCOL.md 3, "Timeouts"): a manager that sends a valid hello
    and then says nothing is unavailable, as one that says nothing at all: the worker
    gives up the attempt after 10 s, dials again while --connect-timeout allows, then
    exits 69 (it was 76, as if the manager had broken the protocol)."""
    job = Job(2)
    srv = socket.create_server(("127.0.0.1", 0))
    stop, held = threading.Event(), []

    def hello_then_silence():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                sock = srv.accept()[0]
            except OSError:
                continue
            conn = npr.Conn(sock)
            hs = npr.ManagerHandshake(conn, job.cookie)
            try:
                hs.recv_hello(10 * mnp.SLOW)
                hs.send_hello()
            except (npr.ProtocolError, OSError, TimeoutError):
                pass
            held.append(conn)  # open, and silent

    t = threading.Thread(target=hello_then_silence, daemon=True)
    t.start()
    try:
        w = worker(job, workdir, ["--port", str(srv.getsockname()[1]), "--connect-timeout", "2"], ["true"])
        expect_exit(w, mnp.EX_UNAVAILABLE, 40)
        err = w.stderr()
        check("did not answer" in err and "within 10 s" in err, err)
        check("stopped answering during the handshake" in err, err)
    finally:
        stop.set()
        t.join(2)
        srv.close()
        for conn in held:
            conn.close()


@runner.case
def julia_cookie_line_with_control_byte_exits_76(workdir):
    """--protocol julia: a NUL (or another control byte) inside the manager's cookie line
    would silently truncate the cookie; the worker refuses the line with 76, naming it,
    never echoing it, and the payload does not start."""
    job = Job(2)
    for bad in (b"julia_cookie:qqq\x00SECRETSECRET", b"julia_cookie:qqq\x1bSECRETSECRET"):
        srv = socket.create_server(("127.0.0.1", 0))
        ran = os.path.join(workdir, "ran")
        try:
            w = worker(job, workdir, ["--port", str(srv.getsockname()[1]), "--protocol", "julia"], ["touch", ran],
                       cookie=False)
            srv.settimeout(10 * mnp.SLOW)
            sock, _ = srv.accept()
            sock.settimeout(5)
            sock.recv(4096)  # job_id:...
            sock.sendall(bad + b"\njulia_worker_timeout:60\n")
            expect_exit(w, mnp.EX_PROTOCOL, 10)
            err = w.stderr()
            check("julia_cookie line holds the control byte" in err, err)
            check("SECRET" not in err and "qqq" not in err, f"the line is echoed:\n{err}")
            check("not on a private address" not in err, f"a manager on loopback is private:\n{err}")
            check(not os.path.exists(ran), "the payload ran")
            sock.close()
        finally:
            srv.close()


@runner.case
def on_manager_loss_continue_keeps_payload(workdir):
    job = Job(2)
    after = os.path.join(workdir, "after")

    def script(conn, reg):
        recv_until(conn, ("payload_started",), 10)
        conn.close()  # the manager is gone

    fm = FakeManager(job.cookie, script)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--heartbeat", "0.2", "--on-manager-loss", "continue"],
                   ["/bin/sh", "-c", 'sleep 1.5; echo still here > "$1"; exit 7', "p", after])
        w.wait_for_log("the payload carries on", 10)
        expect_exit(w, 7, 15)
        fm.finish()
        check(read(after).strip() == "still here", "the payload did not run to its end")
    finally:
        fm.close()


EXEC_PAYLOAD = r"""
import json, os, socket, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
out = sys.argv[1]
fd = int(os.environ["BATCH_AGENT_FD"])
# PROTOCOL.md 4: the session (both directions sealed) in a read-only descriptor.
sfd = int(os.environ["BATCH_AGENT_SESSION_FD"])
raw, off = b"", 0
while True:
    chunk = os.pread(sfd, 4096, off)
    if not chunk:
        break
    raw, off = raw + chunk, off + len(chunk)
try:
    os.write(sfd, b"x")
    session_writable = True
except OSError:
    session_writable = False
os.close(sfd)
session = json.loads(raw)
tx, rx = ChaCha20Poly1305(bytes.fromhex(session["send_key"])), ChaCha20Poly1305(bytes.fromhex(session["recv_key"]))
def nonce(seq):
    return b"\0\0\0\0" + struct.pack(">Q", seq)
s = socket.socket(fileno=fd)
peer = s.getpeername()
payload = b'{"type":"heartbeat"}'
header = struct.pack(">I", len(payload) + 16)
s.sendall(header + tx.encrypt(nonce(session["send_seq"]), payload, header))
s.settimeout(10)
buf = b""
while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
n = struct.unpack(">I", buf[:4])[0]
msg = json.loads(rx.decrypt(nonce(session["recv_seq"]), buf[4:4 + n], buf[:4]))
with open(out, "w") as f:
    json.dump({"pid": os.getpid(), "fd": fd, "peer": list(peer), "got": msg,
               "cookie": "BATCH_AGENT_COOKIE" in os.environ,
               "heartbeat_ms": os.environ.get("BATCH_AGENT_HEARTBEAT_MS"),
               "session": sorted(session), "session_cipher": session["cipher"],
               "session_writable": session_writable}, f)
"""


@runner.case
def exec_hands_over_connection(workdir):
    job = Job(2)
    out = os.path.join(workdir, "exec.json")

    def script(conn, reg):
        msg, _ = recv_until(conn, ("heartbeat",), 10)
        conn.send(npr.shutdown(1000, "from the fake manager"))
        return msg

    fm = FakeManager(job.cookie, script)
    try:
        w = worker(job, workdir, ["--port", str(fm.port), "--exec"], [PY, "-c", EXEC_PAYLOAD, out])
        expect_exit(w, 0, 15)
        fm.finish()
        got = mnp.json_load(out)
        if not mnp.WRAPPER:
            check(got["pid"] == w.pid, f"payload pid {got['pid']} is not the agent's {w.pid}")
        check(got["peer"][1] == fm.port, f"BATCH_AGENT_FD is connected to {got['peer']}, not the manager")
        check(got["got"]["type"] == "shutdown", f"payload read {got['got']} from the connection")
        check(not got["cookie"], "the payload sees BATCH_AGENT_COOKIE")
        check(got["heartbeat_ms"] == "200", f"BATCH_AGENT_HEARTBEAT_MS={got['heartbeat_ms']!r}, accept said 200")
        # The session came through the sealed, read-only descriptor (the payload's
        # sealed heartbeat reached the manager, and it opened the sealed shutdown).
        check(got["session"] == sorted(["cipher", "send_key", "send_seq", "recv_key", "recv_seq"]),
              f"BATCH_AGENT_SESSION_FD held {got['session']}")
        check(got["session_cipher"] == "chacha20-poly1305", f"cipher {got['session_cipher']!r}")
        check(not got["session_writable"], "the payload could write to the session descriptor")
    finally:
        fm.close()


@runner.case
def fake_manager_with_wrong_cookie_exits_77(workdir):
    """A manager with another cookie refuses the worker's proof (the worker proves
    first in v2): the worker exits 77 and says the cookies differ."""
    job = Job(2)
    fm = FakeManager(mnp.new_cookie(), lambda conn, reg: None)
    try:
        w = worker(job, workdir, ["--port", str(fm.port)], ["touch", os.path.join(workdir, "ran")])
        expect_exit(w, mnp.EX_NOPERM, 15)
        fm.thread.join(10)
        check(isinstance(fm.error, npr.ProtocolError) and fm.error.code == npr.AUTH_FAILED,
              f"the fake manager did not refuse the worker's proof: {fm.error!r}")
        check(not os.path.exists(os.path.join(workdir, "ran")), "the payload ran")
        check("does not accept our cookie" in w.stderr(), w.stderr())
    finally:
        fm.close()


@runner.case
def impersonating_manager_exits_77(workdir):
    """Something at the manager's address that does not know the cookie takes the
    worker's proof without checking it and answers with a made-up proof: the worker
    exits 77, runs nothing, and what it sent after its proof (the registration) is
    sealed, so the impostor cannot read it."""
    job = Job(2)
    srv = socket.create_server(("127.0.0.1", 0))
    got = {}

    def impostor():
        sock, _ = srv.accept()
        conn = npr.Conn(sock)
        hs = npr.ManagerHandshake(conn, mnp.new_cookie())
        hs.recv_hello()
        hs.send_hello()
        conn.recv_msg(expect=("auth",))  # not checked: the impostor cannot
        conn.send(npr.auth(os.urandom(32)))
        sock.settimeout(10 * mnp.SLOW)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        got["after_auth"] = data
        conn.close()

    t = threading.Thread(target=impostor, daemon=True)
    t.start()
    try:
        w = worker(job, workdir, ["--port", str(srv.getsockname()[1])], ["touch", os.path.join(workdir, "ran")])
        expect_exit(w, mnp.EX_NOPERM, 15)
        t.join(20 * mnp.SLOW)
        check(not os.path.exists(os.path.join(workdir, "ran")), "the payload ran")
        check("failed to prove the cookie" in w.stderr(), w.stderr())
        data = got.get("after_auth", b"")
        check(data, "the worker sent nothing after its proof (its sealed registration)")
        check(job.uuid.encode() not in data and b"register" not in data,
              f"the registration crossed in clear text: {data[:200]!r}")
    finally:
        srv.close()


@runner.case
def rejected_registration_exits_77(workdir):
    job = Job(2)
    fm = FakeManager(job.cookie, lambda conn, reg: None,
                     answer=npr.reject("duplicate_node", "node index 1 is already registered"))
    try:
        w = worker(job, workdir, ["--port", str(fm.port)], ["touch", os.path.join(workdir, "ran")])
        expect_exit(w, mnp.EX_NOPERM, 15)
        check(not os.path.exists(os.path.join(workdir, "ran")), "the payload ran")
        check("rejected our registration: duplicate_node" in w.stderr(), w.stderr())
    finally:
        fm.close()


@runner.case
def peer_text_reaches_the_log_escaped(workdir):
    """A manager's reject message with a terminal escape, a newline that would forge a
    second record, a C1 control and a backslash reach the
    text log escaped, on the one line of its record."""
    job = Job(2)
    forged = "a\u001b[31mred\nbatch-agent[1]: error: forged\u009b\\x41"
    fm = FakeManager(job.cookie, lambda conn, reg: None, answer=npr.reject("duplicate_node", forged))
    try:
        w = worker(job, workdir, ["--port", str(fm.port)], ["true"])
        expect_exit(w, mnp.EX_NOPERM, 15)
        with open(w.stderr_path, "rb") as f:
            raw = f.read()
        check(b"\x1b" not in raw and b"\xc2\x9b" not in raw, f"a control character reached the log: {raw!r}")
        lines = [line for line in raw.split(b"\n") if b"rejected our registration" in line]
        check(len(lines) == 1, f"not one record: {raw!r}")
        check(lines[0].endswith(b"a\\x1b[31mred\\x0abatch-agent[1]: error: forged\\u009b\\\\x41"),
              f"escaped as {lines[0]!r}")
        check(not any(line.startswith(b"batch-agent[1]") for line in raw.split(b"\n")), f"a forged record: {raw!r}")
    finally:
        fm.close()


@runner.case
def sigterm_while_the_manager_is_silent_exits_143(workdir):
    """A SIGTERM while the worker waits for a silent manager (the native hello, up to
    10 s; the Julia cookie line, up to 60 s) ends the agent at once with 128+15."""
    import signal
    job = Job(2)
    for proto in ("native", "julia"):
        srv = socket.create_server(("127.0.0.1", 0))
        try:
            args = ["--port", str(srv.getsockname()[1]), "--protocol", proto]
            w = worker(job, workdir, args, ["touch", os.path.join(workdir, "ran")], name=f"worker-{proto}",
                       cookie=False if proto == "julia" else None)
            srv.settimeout(10 * mnp.SLOW)
            conn, _ = srv.accept()
            w.wait_for_log("connected to the manager", 10)
            time.sleep(0.3)  # well inside the exchange
            t0 = time.monotonic()
            os.kill(w.pid, signal.SIGTERM)
            expect_exit(w, 128 + signal.SIGTERM, 5)
            took = time.monotonic() - t0
            check(took < 2 * mnp.SLOW, f"{proto}: exited {took:.1f} s after SIGTERM")
            check("received SIGTERM before the payload started" in w.stderr(), f"{proto}:\n{w.stderr()}")
            check(not os.path.exists(os.path.join(workdir, "ran")), f"{proto}: the payload ran")
            conn.close()
        finally:
            srv.close()


if __name__ == "__main__":
    runner.run()
