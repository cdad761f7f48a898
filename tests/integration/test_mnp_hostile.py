"""Hostile peers against the rendezvous (raw sockets through nativeproto.py) while a
real 1+3 job registers around them: garbage, an oversized pre-auth frame, a mute
connection (dropped at the 1 s first-message deadline), a silent one after its hello
(dropped at the 10 s handshake deadline), silent connections past the cap (the oldest
evicted for a newcomer), a replayed authentication,
a duplicate node index, indexes outside the job, another job's id. The main keeps
serving throughout and the real job completes."""

import os
import signal
import socket
import struct
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import nativeproto as npr  # noqa: E402
from mnp import Agent, Job, check, expect_exit, read, wait_for_file  # noqa: E402

runner = mnp.Runner()


class Recorder:
    """A TCP proxy for one connection that keeps the bytes the worker sent."""

    def __init__(self, upstream):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.upstream = upstream
        self.from_worker = bytearray()
        self.socks = []
        threading.Thread(target=self._run, daemon=True).start()

    def _pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self):
        self.srv.settimeout(30)
        try:
            w, _ = self.srv.accept()
        except OSError:
            return
        m = socket.create_connection(self.upstream)
        self.socks = [w, m]
        threading.Thread(target=self._pump, args=(w, m, self.from_worker), daemon=True).start()
        threading.Thread(target=self._pump, args=(m, w, None), daemon=True).start()

    def frames(self):
        """The worker's whole frames as sent: plain hello and auth, then sealed ones."""
        return npr.split_frames(bytes(self.from_worker))[0]

    def close(self):
        self.srv.close()
        for s in self.socks:
            s.close()


def connect(port):
    return npr.Conn(socket.create_connection(("127.0.0.1", port), timeout=5))


def expect_error_and_close(conn, code, what, timeout=3):
    """The main answers with error `code` and closes."""
    try:
        msg = conn.recv_msg(timeout=timeout, expect=("error",))
    except npr.ConnectionClosed:
        raise mnp.Failure(f"{what}: the main closed without an error message") from None
    except TimeoutError:
        raise mnp.Failure(f"{what}: no answer within {timeout} s") from None
    check(msg["code"] == code, f"{what}: got error {msg['code']} ({msg.get('message')}), expected {code}")
    try:
        extra = conn.recv_payload(timeout=timeout)
        raise mnp.Failure(f"{what}: the main kept talking after the error: {extra!r}")
    except (npr.ConnectionClosed, ConnectionResetError):
        pass
    except TimeoutError:
        raise mnp.Failure(f"{what}: the main did not close the connection") from None
    finally:
        conn.close()


def answer_shutdown(conn):
    """As a registered child: heartbeats until the main's shutdown, then our exit report."""
    msg = conn.recv_msg(timeout=10, expect=("shutdown", "heartbeat"))
    while msg["type"] != "shutdown":
        msg = conn.recv_msg(timeout=10, expect=("shutdown", "heartbeat"))
    conn.send(npr.payload_exited(exit_code=0))


def expect_reject(job, port, index, code, job_id=None, num_nodes=None, address="127.0.0.1", attempt=1):
    conn = connect(port)
    try:
        reg = npr.register_msg(job_id=job_id or f"{job.uuid}#{index}", hostname="intruder", address=address,
                               attempt=attempt, node_index=index, num_nodes=num_nodes or job.num_nodes)
        try:
            npr.worker_handshake(conn, job.cookie, reg, timeout=5)
        except npr.ProtocolError as e:
            check(e.remote and e.code == code, f"node index {index}: refused with {e.code}, expected reject {code}")
        else:
            raise mnp.Failure(f"node index {index} (job id {reg['job_id']}) was accepted")
    finally:
        conn.close()


@runner.case
def hostile_peers_do_not_stop_the_job(workdir):
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    port, job = mnp.free_port(), Job(4)
    main = Agent("main", ["--port", str(port), "--heartbeat", "0.5", "--grace", "5", "--",
                          *mnp.main_payload(out, wait_children=(1, 2, 3))], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)

    # A peer that connects and says nothing loses the connection ~1 s after its
    # accept (the first-message deadline), with error timeout.
    mute = connect(port)
    mute_t0 = time.monotonic()
    expect_error_and_close(mute, npr.TIMEOUT, "a connection that sends nothing", timeout=5 * mnp.SLOW)
    waited = time.monotonic() - mute_t0
    check(0.9 <= waited <= 3 * mnp.SLOW, f"the mute peer was dropped after {waited:.1f} s, not ~1 s")

    # A peer that says hello and then nothing, from the start.
    silent = socket.create_connection(("127.0.0.1", port))
    silent_t0 = time.monotonic()
    npr.Conn(silent).send(npr.hello_worker(npr.nonce()))

    # Child 1 goes through a recording proxy, child 2 straight.
    rec = Recorder(("127.0.0.1", port))
    child = {1: Agent("child1", ["--port", str(rec.port), "--heartbeat", "0.5", "--", *mnp.child_payload(out)],
                      job.env(1, main_addr="127.0.0.1"), workdir),
             2: Agent("child2", ["--port", str(port), "--heartbeat", "0.5", "--", *mnp.child_payload(out)],
                      job.env(2, main_addr="127.0.0.1"), workdir)}
    main.wait_for_log("node 1 registered", 10)
    main.wait_for_log("node 2 registered", 10)

    # Garbage: an HTTP request (its first bytes read as a 1.2 GB length) and a
    # small frame that is not JSON.
    c = connect(port)
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    expect_error_and_close(c, npr.BAD_FRAME, "HTTP request")
    c = connect(port)
    c.send_frame_bytes(b"\xff\xfe not json")
    expect_error_and_close(c, npr.BAD_FRAME, "non-JSON frame")
    c = connect(port)
    c.send(npr.heartbeat())
    expect_error_and_close(c, npr.UNEXPECTED, "heartbeat instead of hello")

    # Oversized before auth: only the header; the main must not wait for 4097 bytes.
    c = connect(port)
    c.send_raw(struct.pack(">I", 4097))
    t0 = time.monotonic()
    expect_error_and_close(c, npr.BAD_FRAME, "4097-byte frame before auth")
    check(time.monotonic() - t0 < 2, "the oversized frame was not refused at once")
    # A valid hello padded over 4096 bytes.
    c = connect(port)
    big = npr.hello_worker(npr.nonce(), agent="x" * 4100)
    c.send(big)
    expect_error_and_close(c, npr.BAD_FRAME, "hello over 4096 bytes")

    # Replay child 1's recorded hello and proof, byte for byte, in a new session: the
    # manager's fresh nonce makes the recorded proof worthless.
    frames = rec.frames()
    plain = [npr.decode_payload(f[4:]) for f in frames[:2]]
    check(len(frames) >= 3 and plain[0]["type"] == "hello" and plain[1]["type"] == "auth",
          f"recorded frames: {[p.get('type') for p in plain]} of {len(frames)}")
    c = connect(port)
    c.send_raw(frames[0])
    hello = c.recv_msg(timeout=3, expect=("hello",))
    check(hello["kind"] == "hello_manager", f"answer to a replayed hello: {hello}")
    c.send_raw(frames[1])
    expect_error_and_close(c, npr.AUTH_FAILED, "replayed auth")
    # A peer that knows the cookie replays child 1's sealed registration in its own
    # session: it does not open under this session's keys.
    c = connect(port)
    hs = npr.WorkerHandshake(c, job.cookie)
    hs.send_hello()
    hs.recv_hello(3)
    hs.send_auth()
    c.send_raw(frames[2])
    hs.recv_auth(3)
    expect_error_and_close(c, npr.BAD_FRAME, "a registration replayed from another session")

    # Authenticated but wrong registrations.
    expect_reject(job, port, 1, "duplicate_node")
    expect_reject(job, port, 7, "node_out_of_range")
    expect_reject(job, port, 0, "node_out_of_range")  # the main's own index
    expect_reject(job, port, 3, "job_mismatch", job_id=f"{uuid.uuid4()}#3")
    expect_reject(job, port, 3, "job_mismatch", job_id=f"{job.uuid}#2")

    # The silent peer is dropped at the handshake deadline, with a timeout error.
    sc = npr.Conn(silent)
    try:
        sc.recv_msg(timeout=5, expect=("hello",))
        msg = sc.recv_msg(timeout=15, expect=("error",))
        check(msg["code"] == npr.TIMEOUT, f"silent peer got {msg}")
    finally:
        sc.close()
    waited = time.monotonic() - silent_t0
    check(9.5 <= waited <= 12 * mnp.SLOW, f"the silent peer was dropped after {waited:.1f} s, not ~10 s")

    # Children 1 and 2 are still registered; the last child completes the job.
    check(main.running(), f"the main exited: {main.proc.returncode}\n{main.stderr()}")
    child[3] = Agent("child3", ["--port", str(port), "--heartbeat", "0.5", "--", *mnp.child_payload(out)],
                     job.env(3, main_addr="127.0.0.1"), workdir)
    expect_exit(main, 0, 30)
    for c3 in child.values():
        expect_exit(c3, 0, 15)
    check(read(os.path.join(out, "hostfile")).splitlines() == ["127.0.0.1"] * 4, "hostfile")
    rec.close()

    err = main.stderr()
    # Garbage, oversized frames and the silent peer are only counted at info level.
    for text in ("refused peer 127.0.0.1:", "authentication failed", "already registered",
                 "is not a child of this 4-node job", "is not node 3 of this job",
                 "more peers in the last"):
        check(text in err, f"main log lacks {text!r}:\n{err}")
    check(job.cookie not in err, "the cookie is in the main's log")


@runner.case
def handshake_flood_is_bounded(workdir):
    """More connections than the pending-handshake cap (2 * nodes + 64), each of which
    said hello and then nothing: none is silent, so the main answers the excess with
    error busy as their first frame and closes them, holding no descriptor for them,
    and a real node that arrives meanwhile is answered busy too and dials again with
    backoff until the flood is gone."""
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--wait-timeout", "60", "--", "true"], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    cap = 2 * 2 + 64
    socks = []
    child = None
    try:
        for _ in range(cap):
            c = connect(port)
            c.send(npr.hello_worker(npr.nonce()))
            c.recv_msg(timeout=5 * mnp.SLOW, expect=("hello",))
            socks.append(c)
        # Past the cap, a newcomer's first frame is busy, and then the main closes.
        extra = connect(port)
        expect_error_and_close(extra, npr.BUSY, "a connection past the cap")
        main.wait_for_log("answering newcomers busy", 5)
        fd_count = len(os.listdir(f"/proc/{main.pid}/fd"))
        check(fd_count < cap + 20, f"the main holds {fd_count} descriptors")
        child = Agent("child", ["--connect-timeout", "60", "--", "true"],
                      job.env(1, main_addr="127.0.0.1", extra={"BATCH_AGENT_PORT": str(port)}), workdir)
        child.wait_for_log("for load", 10)
        check(child.proc.poll() is None, f"the child gave up during the flood:\n{child.stderr()}")
    finally:
        for s in socks:
            s.close()
    expect_exit(main, 0, 60)
    expect_exit(child, 0, 60)


@runner.case
def slow_but_progressing_peer_is_admitted(workdir):
    """PROTOCOL.md §3: the handshake deadline counts from the peer's last frame, not
    from accept. A worker that takes 6 s before each of its two frames after hello
    (12 s in all, past 10 s from accept) is still registered, because it never went
    10 s without progress."""
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--wait-timeout", "60", "--", "true"], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    conn = connect(port)
    try:
        hs = npr.WorkerHandshake(conn, job.cookie)
        hs.send_hello()
        hs.recv_hello(5)
        time.sleep(6)
        hs.send_auth()
        time.sleep(6)
        conn.send(npr.register_msg(job_id=f"{job.uuid}#1", hostname="slow", address="127.0.0.1", attempt=1,
                                   node_index=1, num_nodes=2))
        hs.recv_auth(5)
        ans = conn.recv_msg(timeout=5, expect=("accept", "reject"))
        check(ans["type"] == "accept", f"the slow peer got {ans}")
        # The main payload ran (true) and the main asks us to shut down.
        answer_shutdown(conn)
    finally:
        conn.close()
    expect_exit(main, 0, 30)


@runner.case
def full_manager_evicts_the_oldest_silent_peer(workdir):
    """At the cap of handshakes, a newcomer is not refused: the oldest connection that
    has sent nothing is closed (error busy) to make room, and the newcomer is served.
    The cap-sized burst must land within the 1 s first-message deadline; a run that
    was too slow for that (a loaded machine) is repeated, up to 3 times."""
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--wait-timeout", "60", "--", "true"], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    cap = 2 * 2 + 64
    for attempt in range(3):
        t0 = time.monotonic()
        mute = [connect(port) for _ in range(cap)]
        newcomer = connect(port)
        newcomer.send(npr.hello_worker(npr.nonce()))
        try:
            hello = newcomer.recv_msg(timeout=5 * mnp.SLOW, expect=("hello",))
            first = mute[0].recv_msg(timeout=5 * mnp.SLOW, expect=("error",))
        except npr.ProtocolError as e:
            hello, first = None, {"code": e.code}
        in_time = time.monotonic() - t0 < 0.8
        for c in [newcomer, *mute]:
            c.close()
        if not in_time and (hello is None or first["code"] != npr.BUSY):
            main.wait_for_log("no first message within", 5)
            continue
        check(hello is not None and hello.get("role") == "manager", "the newcomer was not served")
        check(first["code"] == npr.BUSY, f"the oldest silent peer got {first}, expected busy (evicted)")
        break
    else:
        raise mnp.Failure("3 bursts of connections each took over 0.8 s: the machine is too slow for this case")
    # The evictions are counted in the refusals' summary, which an exit writes too.
    os.kill(main.pid, signal.SIGTERM)
    main.wait(15)
    check("silent peer" in main.stderr() and "to make room for newcomers" in main.stderr(),
          f"the main does not count the evictions:\n{main.stderr()}")


@runner.case
def registration_is_checked(workdir):
    """The advertised address becomes a hostfile line: a newline (forged lines), a
    port, an over-long label are refused with bad_address; a long valid DNS name is
    taken whole (not cut at 63 bytes). Another num_nodes or attempt is job_mismatch."""
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--heartbeat", "0.5", "--grace", "2", "--", "/bin/sh", "-c",
                          'cp "$BATCH_AGENT_HOSTFILE" "$1/hostfile"', "main", out], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    for bad in ("10.0.0.1\n6.6.6.6 slots=999", "a" * 100, "10.0.0.1:22", "x,y", "999.1.1.1"):
        expect_reject(job, port, 1, "bad_address", address=bad)
    # PROTOCOL.md §3: job_mismatch covers num_nodes and attempt too.
    expect_reject(job, port, 1, "job_mismatch", num_nodes=99)
    expect_reject(job, port, 1, "job_mismatch", attempt=2)
    name = ".".join(["n" * 60] * 4)  # 243 bytes
    conn = connect(port)
    try:
        reg = npr.register_msg(job_id=f"{job.uuid}#1", hostname="h", address=name, attempt=1, node_index=1,
                               num_nodes=2)
        npr.worker_handshake(conn, job.cookie, reg, timeout=5)
        answer_shutdown(conn)
    finally:
        conn.close()
    expect_exit(main, 0, 15)
    lines = read(os.path.join(out, "hostfile")).splitlines()
    check(len(lines) == 2 and lines[1] == name, f"hostfile: {lines}")


@runner.case
def unexpected_message_from_a_child(workdir):
    """A registered child that sends what only a manager sends (accept) is answered
    with error unexpected_message and dropped (PROTOCOL.md §4), not ignored."""
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--", "true"], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    conn = connect(port)
    reg = npr.register_msg(job_id=f"{job.uuid}#1", hostname="h", address="127.0.0.1", attempt=1, node_index=1,
                           num_nodes=2)
    # The main may start its (instant) payload and shut down as soon as we register:
    # hold the registration until the accept is out, then misbehave at once.
    npr.worker_handshake(conn, job.cookie, reg, timeout=5)
    conn.send(npr.accept(1000))
    try:
        while True:
            msg = conn.recv_msg(timeout=5)
            check(msg["type"] in ("heartbeat", "shutdown"), f"the main answered {msg}")
    except npr.ProtocolError as e:
        check(e.remote and e.code == npr.UNEXPECTED, f"the main answered {e!r}")
    finally:
        conn.close()
    main.kill()


@runner.case
def refusals_are_rate_limited(workdir):
    """Thousands of garbage connections and a dozen wrong cookies: the first wrong
    cookies are warnings naming the peer, the rest are counted in one summary line."""
    port, job = mnp.free_port(), Job(2)
    # Stretched under valgrind: the twelve handshakes (an X25519 each) must end before it.
    main = Agent("main", ["--port", str(port), "--wait-timeout", mnp.wait_s(3), "--", "true"], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    wrong = mnp.new_cookie()
    for _ in range(12):
        conn = connect(port)
        try:
            npr.worker_handshake(conn, wrong, npr.register_msg(job_id=f"{job.uuid}#1", hostname="h",
                                                               address="127.0.0.1", node_index=1), timeout=5)
        except npr.ProtocolError as e:
            check(e.code == npr.AUTH_FAILED, f"wrong cookie: {e!r}")
        finally:
            conn.close()
    count, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 1.5:
        try:
            s = socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            break  # the door closed at --wait-timeout: no more garbage can reach the main
        try:
            s.sendall(b"\x00\x00\x00\x02{]")
        except OSError:
            pass  # already refused and reset by the main: it counts all the same
        s.close()
        count += 1
    expect_exit(main, mnp.EX_UNAVAILABLE, 15)
    lines = main.stderr().splitlines()
    refusals = [line for line in lines if "refused" in line]
    check(len(lines) < 25, f"{len(lines)} log lines for {count} garbage connections and 12 wrong cookies")
    check(sum("a different cookie" in line and "127.0.0.1:" in line for line in refusals) == 10,
          "the first 10 wrong cookies are not warnings naming the peer:\n" + "\n".join(refusals))
    check(any("more peers in the last" in line for line in refusals), "no summary line:\n" + "\n".join(refusals))


@runner.case
def error_first_and_register_during_shutdown(workdir):
    """A peer whose first message is an error is logged and closed without an answer
    (PROTOCOL.md §3). A registration that arrives while the main shuts down (here
    after --wait-timeout) is rejected shutting_down, not rendezvous_closed."""
    port, job = mnp.free_port(), Job(3)
    main = Agent("main", ["--port", str(port), "--wait-timeout", mnp.wait_s(2), "--grace", "3", "--", "true"],
                 job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    c = connect(port)
    c.send(npr.error("internal", "hello?"))
    try:
        got = c.recv_msg(timeout=3)
    except npr.ConnectionClosed:
        got = None
    finally:
        c.close()
    check(got is None, f"the main answered an opening error with {got}")
    main.wait_for_log("opened with error internal", 5)

    def reg(index):
        return npr.register_msg(job_id=f"{job.uuid}#{index}", hostname="h", address="127.0.0.1", attempt=1,
                                node_index=index, num_nodes=3)

    one = connect(port)
    npr.worker_handshake(one, job.cookie, reg(1), timeout=5)
    # Node 2 proves the cookie now but registers only once the rendezvous has failed.
    two = connect(port)
    hs = npr.WorkerHandshake(two, job.cookie)
    hs.send_hello()
    hs.recv_hello(5)
    hs.send_auth()
    hs.recv_auth(5)  # the manager proves itself at once, before any registration
    main.wait_for_log("did not register within", 10)
    two.send(reg(2))
    try:
        got = two.recv_msg(timeout=5, expect=("reject",))
    finally:
        two.close()
    check(got["code"] == "shutting_down", f"late registration: {got}")
    one.send(npr.payload_exited(exit_code=0))
    expect_exit(main, mnp.EX_UNAVAILABLE, 15)
    one.close()


@runner.case
def close_right_after_the_exit_report_is_not_a_loss(workdir):
    """A child that closes (here with a reset) right after its payload_exited, while
    the main payload runs, has lost nothing: the main says it disconnected after its
    report, and does not log it as a lost node."""
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--heartbeat", "0.2", "--", "sleep", "30"], job.env(0), workdir)
    main.wait_for_log("rendezvous listening", 10)
    c = connect(port)
    npr.worker_handshake(c, job.cookie, npr.register_msg(job_id=f"{job.uuid}#1", hostname="h", address="127.0.0.1",
                                                         attempt=1, node_index=1, num_nodes=2), timeout=5)
    main.wait_for_log("all nodes present", 10)
    c.send(npr.payload_exited(exit_code=0))
    main.wait_for_log("node 1's payload exited with status 0", 10)
    time.sleep(0.5)  # heartbeats of the main's, unread: the close below is a reset
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    err = main.wait_for_log("disconnected after its exit report", 10)
    check("lost:" not in err, f"the main calls the node lost:\n{err}")
    main.kill()


def cpu_ticks(pid):
    fields = read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@runner.case
def descriptor_limit_does_not_spin(workdir):
    """Under a low descriptor limit, a flood of connections must neither make the main
    spin on its (level-triggered) listen socket nor fill the log; the main raises its
    soft limit to the hard one for itself, keeps its handshakes under it, and the main
    payload still starts with the limit the agent inherited."""
    if mnp.WRAPPER:
        raise mnp.Skip("valgrind needs descriptors of its own under the low limit")
    import resource
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--wait-timeout", "60", "--", "/bin/sh", "-c",
                          'ulimit -n > "$1/nofile"', "main", out],
                 job.env(0), workdir, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (48, 64)))
    main.wait_for_log("rendezvous listening", 10)
    socks = []
    child = None
    try:
        for _ in range(100):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        before = cpu_ticks(main.pid)
        time.sleep(2)
        spent = cpu_ticks(main.pid) - before
        check(spent < 30, f"the main used {spent} ticks of CPU in 2 s with the flood waiting")
        lines = main.stderr().strip().splitlines()
        check(len(lines) < 8, f"{len(lines)} log lines for one flood:\n{main.stderr()}")
    finally:
        for s in socks:
            s.close()
    child = Agent("child", ["--connect-timeout", "30", "--", "true"],
                  job.env(1, main_addr="127.0.0.1", extra={"BATCH_AGENT_PORT": str(port)}), workdir)
    expect_exit(main, 0, 40)
    expect_exit(child, 0, 20)
    check(read(os.path.join(out, "nofile")).strip() == "48", "the main payload did not get the inherited limit")


if __name__ == "__main__":
    runner.run()
