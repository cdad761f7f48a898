#!/usr/bin/python3
"""Self-test of nativeproto.py: the test vectors printed in proto/PROTOCOL.md, message
validation, and both handshake sides against each other and against hostile peers.
If PROTO_PEER_BIN names the C interop peer (tests/peers/proto_peer.c), the handshake
is also run across the two implementations."""

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nativeproto as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("BATCH_AGENT_SOURCE_DIR", os.path.join(HERE, "..", ".."))
COOKIE = "correct horse battery staple 2026"

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def vectors():
    text = open(os.path.join(SOURCE, "proto", "PROTOCOL.md"), encoding="utf-8").read()
    block = re.search(r"```vectors\n(.*?)```", text, re.S)
    assert block, "no vectors block in PROTOCOL.md"
    out = {}
    for line in block.group(1).splitlines():
        if line.strip():
            key, _, value = line.partition(" = ")
            out[key.strip()] = value.strip()
    return out


@case
def test_vectors():
    v = vectors()
    wn = bytes.fromhex(v["worker_nonce"])
    mn = bytes.fromhex(v["manager_nonce"])
    assert wn == bytes(range(32)) and mn == bytes(range(32, 64))
    assert v["cookie"] == COOKIE
    assert (b"batch-agent/1 manager\n" + wn + mn).hex() == v["manager_msg"]
    assert (b"batch-agent/1 worker\n" + mn + wn).hex() == v["worker_msg"]
    mp = np.proof(COOKIE, "manager", wn, mn)
    wp = np.proof(COOKIE, "worker", wn, mn)
    assert mp.hex() == v["manager_proof"], mp.hex()
    assert wp.hex() == v["worker_proof"], wp.hex()
    assert np.proof(v["wrong_cookie"], "manager", wn, mn).hex() == v["wrong_cookie_manager_proof"]
    assert np.encode_frame(np.heartbeat()).hex() == v["frame_heartbeat"]
    assert np.encode_frame(np.hello_worker(wn, "batch-agent 0.1.0")).hex() == v["frame_hello_worker"]
    assert np.encode_frame(np.hello_manager(mn, mp)).hex() == v["frame_hello_manager"]
    for name in ("frame_heartbeat", "frame_hello_worker", "frame_hello_manager"):
        frame = bytes.fromhex(v[name])
        (n,) = struct.unpack(">I", frame[:4])
        assert n == len(frame) - 4
        np.validate(np.decode_payload(frame[4:]))


@case
def test_verify():
    wn, mn = bytes(range(32)), bytes(range(32, 64))
    wp = np.proof(COOKIE, "worker", wn, mn)
    assert np.verify(COOKIE, "worker", wn, mn, wp)
    assert not np.verify(COOKIE, "manager", wn, mn, wp), "roles must not be interchangeable"
    assert not np.verify(COOKIE, "worker", wn, np.nonce(), wp), "replay against a fresh nonce"
    assert not np.verify("x" + COOKIE, "worker", wn, mn, wp), "wrong cookie"
    assert not np.verify(COOKIE, "worker", wn, mn, wp, version=2), "version is bound"
    assert not np.verify(COOKIE, "worker", wn, wn, np.proof(COOKIE, "worker", wn, wn))


def expect_bad(fn, arg, code):
    try:
        fn(arg)
    except np.ProtocolError as e:
        assert e.code == code, (arg, e.code)
        return
    raise AssertionError(f"accepted: {arg!r}")


@case
def test_framing_rules():
    bad = [b"[1]", b"42", b'{"a":01}', b'{"a":1.}', b'{"a":NaN}', b'{"a":"x\ty"}',
           b'{"a":"\\u0000"}', b'{"a":"\\ud800"}', b'{"a":"\xc0\xaf"}', b'{"a":"\xed\xa0\x80"}',
           b'\xef\xbb\xbf{"type":"heartbeat"}', b'{"type":"a","type":"b"}',
           b'{"x":{"a":1,"a":2}}', b'{"a":1} {}', b'{"a":"\x00"}', b"",
           b'{"a":' + b"[" * 32 + b"]" * 32 + b"}"]
    for payload in bad:
        expect_bad(np.decode_payload, payload, np.BAD_FRAME)
    np.decode_payload(b'{"a":' + b"[" * 31 + b"]" * 31 + b"}")
    np.decode_payload(b' {"a":"\\u00e9\xc3\xa9\\ud83d\\ude00\\\\u0000","b":[1,-0.5e+3,true,null]} ')


@case
def test_message_rules():
    good = [np.heartbeat(), np.accept(10), np.reject("duplicate_node", "m"),
            {"type": "error", "code": "x"}, np.payload_started(1), np.payload_exited(0),
            np.payload_exited(signal=9), {"type": "payload_exited", "exit_code": 3, "signal": None},
            np.draining("rebalance"), np.draining("spot_interruption", "2026-01-02T03:04:05.5+01:00"),
            np.shutdown(0), {"type": "shutdown", "grace_ms": 5.0}, {"type": "heartbeat", "x": [1]},
            np.register_msg("j", "h", "a", node_index=0, num_nodes=2, cpus=0.5,
                            memory_limit_bytes=2**53 - 1)]
    for m in good:
        np.validate(dict(m))
    reg = np.register_msg("j", "h", "a")
    bad = [{}, {"type": 1}, {"type": "bogus"}, {"type": "accept"},
           np.accept(9), {"type": "accept", "heartbeat_interval_ms": True},
           {"type": "reject", "code": "Bad"}, {"type": "error", "message": "m"},
           np.payload_started(0), {"type": "payload_exited"},
           {"type": "payload_exited", "exit_code": 0, "signal": 9},
           {"type": "payload_exited", "exit_code": 256}, np.draining(""),
           np.draining("r", "2026-01-02 03:04:05Z"), {"type": "draining", "reason": "r"},
           {"type": "shutdown", "grace_ms": -1}, {"type": "shutdown", "grace_ms": 1.5},
           {"type": "auth", "proof": "AB" * 32},
           {"type": "hello", "role": "worker", "versions": [], "nonce": "00" * 32, "agent": "a"},
           {"type": "hello", "role": "boss", "version": 1, "nonce": "00" * 32, "proof": "00" * 32},
           dict(reg, job_id=""), dict(reg, attempt=-1), dict(reg, num_nodes=0),
           dict(reg, cpus=0), dict(reg, cpus="2"), dict(reg, attempt=2**53),
           {k: v for k, v in reg.items() if k != "attempt"},
           {k: v for k, v in reg.items() if k != "cpus"}, dict(reg, hostname=None)]
    for m in bad:
        expect_bad(np.validate, dict(m), np.BAD_MESSAGE)


def run_pair(manager_fn, worker_fn):
    """Runs both ends over a socketpair; returns (manager result, worker result), each
    a value or the exception raised."""
    a, b = socket.socketpair()
    results = {}

    def run(name, fn, sock):
        conn = np.Conn(sock)
        try:
            results[name] = fn(conn)
        except Exception as e:  # noqa: BLE001: the caller inspects it
            results[name] = e
        finally:
            conn.close()

    t = threading.Thread(target=run, args=("m", manager_fn, a))
    t.start()
    run("w", worker_fn, b)
    t.join(15)
    return results["m"], results["w"]


REG = np.register_msg("job-1#1", "ip-10-0-1-23", "10.0.1.23", attempt=1, node_index=1,
                      num_nodes=2, cpus=4, memory_limit_bytes=8 << 30)


@case
def test_handshake_accept():
    m, w = run_pair(lambda c: np.manager_handshake(c, COOKIE, lambda r: np.accept(250)),
                    lambda c: np.worker_handshake(c, COOKIE, REG))
    reg, answer = m
    assert reg["node_index"] == 1 and answer["type"] == "accept"
    assert w["heartbeat_interval_ms"] == 250


@case
def test_handshake_reject():
    m, w = run_pair(
        lambda c: np.manager_handshake(c, COOKIE, lambda r: np.reject("duplicate_node", "taken")),
        lambda c: np.worker_handshake(c, COOKIE, REG))
    assert isinstance(w, np.ProtocolError) and w.remote and w.code == "duplicate_node", w


@case
def test_handshake_wrong_cookie():
    m, w = run_pair(lambda c: np.manager_handshake(c, COOKIE),
                    lambda c: np.worker_handshake(c, COOKIE + "x", REG))
    assert isinstance(w, np.ProtocolError) and not w.remote and w.code == "auth_failed", w
    assert isinstance(m, np.ProtocolError) and m.remote and m.code == "auth_failed", m


def hostile_worker(actions):
    """A worker that sends what actions(conn) says; returns what it then reads."""
    def fn(conn):
        actions(conn)
        try:
            return conn.recv(5)
        except np.ConnectionClosed:
            return None
    return fn


@case
def test_manager_refuses_hostile_workers():
    wn = bytes(range(32))

    def replayed_auth(conn):
        conn.send(np.hello_worker(wn))
        conn.recv(5)
        # A proof recorded from another connection (the vectors' manager nonce).
        conn.send(np.auth(np.proof(COOKIE, "worker", wn, bytes(range(32, 64)))))

    scenarios = [
        (lambda c: c.send_raw(struct.pack(">I", 4097) + b"{" * 10), np.BAD_FRAME),
        (lambda c: c.send_raw(b"\0\0\0\0"), np.BAD_FRAME),
        (lambda c: c.send_frame_bytes(b"GET / HTTP/1.1\r\n"), np.BAD_FRAME),
        (lambda c: c.send(np.heartbeat()), np.UNEXPECTED),
        (lambda c: c.send(np.register_msg("j", "h", "a")), np.UNEXPECTED),
        (lambda c: c.send(np.hello_worker(wn, versions=[2, 3])), np.UNSUPPORTED_VERSION),
        (lambda c: c.send({"type": "hello", "role": "worker"}), np.BAD_MESSAGE),
        (replayed_auth, np.AUTH_FAILED),
    ]
    for actions, code in scenarios:
        m, w = run_pair(lambda c: np.manager_handshake(c, COOKIE), hostile_worker(actions))
        assert isinstance(m, np.ProtocolError) and m.code == code, (code, m)
        assert isinstance(w, dict) and w["type"] == "error" and w["code"] == code, (code, w)


@case
def test_handshake_timeout():
    def silent(conn):
        conn.recv(3)

    m, w = run_pair(lambda c: np.manager_handshake(c, COOKIE, timeout=0.3), silent)
    assert isinstance(m, TimeoutError), m


def c_peer(role):
    """The C interop peer, or None when it was not built."""
    path = os.environ.get("PROTO_PEER_BIN")
    return [path, role, COOKIE] if path and os.access(path, os.X_OK) else None


@case
def test_interop_with_c():
    for role in ("worker", "manager"):
        cmd = c_peer(role)
        if cmd is None:
            print("  (PROTO_PEER_BIN not set: C interop skipped)")
            return
        a, b = socket.socketpair()
        proc = subprocess.Popen(cmd + [str(b.fileno())], pass_fds=(b.fileno(),))
        b.close()
        conn = np.Conn(a)
        try:
            if role == "worker":
                reg, _ = np.manager_handshake(conn, COOKIE, lambda r: np.accept(100))
                assert reg["job_id"] == "c-job" and reg["node_index"] == 1, reg
                ev = np.validate(conn.recv(5))
                assert ev["type"] == "payload_exited" and ev["exit_code"] == 7, ev
            else:
                acc = np.worker_handshake(conn, COOKIE, REG)
                assert acc["heartbeat_interval_ms"] == 100
                conn.send(np.payload_exited(exit_code=7))
                sd = np.validate(conn.recv(5))
                assert sd["type"] == "shutdown", sd
        finally:
            conn.close()
        assert proc.wait(10) == 0, f"C {role} peer failed"


def main():
    passed = failed = 0
    for fn in CASES:
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__}")
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
