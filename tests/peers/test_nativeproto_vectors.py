#!/usr/bin/python3
"""Self-test of nativeproto.py: the test vectors printed in proto/PROTOCOL.md (every one
recomputed from the inputs), message validation, sealed frames and what breaks them
(replay, reordering, deletion, tampering), and both handshake sides against each other
and against hostile peers. If PROTO_PEER_BIN names the C interop peer
(tests/peers/proto_peer.c), the handshake is also run across the two implementations."""

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
WN, MN = bytes(range(32)), bytes(range(32, 64))
W_PRIV, M_PRIV = bytes(range(0x40, 0x60)), bytes(range(0x60, 0x80))

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


class Vectors(dict):
    """The ```vectors block; remembers which entries were read, so that a vector added
    to PROTOCOL.md without a check here fails the test."""

    def __init__(self, items):
        super().__init__(items)
        self.used = set()

    def __getitem__(self, key):
        self.used.add(key)
        return super().__getitem__(key)

    def hex(self, key):
        return bytes.fromhex(self[key])


def vectors():
    text = open(os.path.join(SOURCE, "proto", "PROTOCOL.md"), encoding="utf-8").read()
    block = re.search(r"```vectors\n(.*?)```", text, re.S)
    assert block, "no vectors block in PROTOCOL.md"
    out = {}
    for line in block.group(1).splitlines():
        if line.strip():
            key, _, value = line.partition(" = ")
            out[key.strip()] = value.strip()
    return Vectors(out)


@case
def test_vectors():
    v = vectors()
    assert v["cookie"] == COOKIE
    assert v.hex("worker_nonce") == WN and v.hex("manager_nonce") == MN
    assert v.hex("worker_private") == W_PRIV and v.hex("manager_private") == M_PRIV
    wpriv, mpriv = np.private_key(W_PRIV), np.private_key(M_PRIV)
    wk, mk = np.public_key(wpriv), np.public_key(mpriv)
    assert wk.hex() == v["worker_key"], wk.hex()
    assert mk.hex() == v["manager_key"], mk.hex()
    assert np.transcript(WN, wk, MN, mk).hex() == v["transcript_input"]
    dh = np.shared_secret(wpriv, mk)
    assert dh == np.shared_secret(mpriv, wk), "X25519 disagrees with itself"
    assert dh.hex() == v["dh"], dh.hex()
    keys = np.derive(COOKIE, WN, wk, MN, mk, dh)
    assert keys.th.hex() == v["transcript_hash"], keys.th.hex()
    assert keys.wp.hex() == v["worker_proof"], keys.wp.hex()
    assert keys.mp.hex() == v["manager_proof"], keys.mp.hex()
    assert keys.k_w2m.hex() == v["key_w2m"], keys.k_w2m.hex()
    assert keys.k_m2w.hex() == v["key_m2w"], keys.k_m2w.hex()
    wrong = np.derive(v["wrong_cookie"], WN, wk, MN, mk, dh)
    assert wrong.wp.hex() == v["wrong_cookie_worker_proof"], wrong.wp.hex()

    # Plain frames, byte for byte as the builders make them.
    built = {"frame_heartbeat": np.heartbeat(),
             "frame_hello_worker": np.hello_worker(WN, "batch-agent 0.1.0", key=wk),
             "frame_hello_manager": np.hello_manager(MN, mk),
             "frame_auth_worker": np.auth(keys.wp),
             "frame_auth_manager": np.auth(keys.mp)}
    for name, msg in built.items():
        frame = v.hex(name)
        assert np.encode_frame(msg) == frame, (name, np.encode_frame(msg).hex())
        (n,) = struct.unpack(">I", frame[:4])
        assert n == len(frame) - 4, name
        np.validate(np.decode_payload(frame[4:]))

    # Sealed frames: opened, and sealed again from their plaintext.
    sealed = {"sealed_w2m_0_heartbeat": (keys.k_w2m, 0, np.heartbeat()),
              "sealed_w2m_1_heartbeat": (keys.k_w2m, 1, np.heartbeat()),
              "sealed_m2w_0_accept": (keys.k_m2w, 0, np.accept(5000))}
    for name, (key, seq, msg) in sealed.items():
        frame = v.hex(name)
        payload = np.unseal(key, seq, frame)
        assert np.validate(np.decode_payload(payload)) == msg, (name, payload)
        assert payload == np.encode_payload(msg), (name, payload)
        assert np.seal(key, seq, payload) == frame, (name, np.seal(key, seq, payload).hex())
        assert struct.unpack(">I", frame[:4])[0] == len(payload) + np.TAG_LEN, name
        for wrong_key, wrong_seq in ((key, seq + 1), (keys.k_m2w if key == keys.k_w2m else keys.k_w2m, seq)):
            expect_bad(lambda f: np.unseal(wrong_key, wrong_seq, f), frame, np.BAD_FRAME)
    assert v.hex("sealed_w2m_0_heartbeat")[:4] == b"\0\0\0\x24"  # N = 20 + 16, as dissected

    unchecked = set(v) - v.used
    assert not unchecked, f"vectors without a check: {sorted(unchecked)}"


@case
def test_key_schedule():
    """Every input is bound, the proofs are not interchangeable, small-order keys fail."""
    wpriv, mpriv = np.private_key(W_PRIV), np.private_key(M_PRIV)
    wk, mk = np.public_key(wpriv), np.public_key(mpriv)
    dh = np.shared_secret(wpriv, mk)
    base = np.derive(COOKIE, WN, wk, MN, mk, dh)
    assert len(set(base[1:])) == 4, "the four outputs must differ"
    other = bytes(32 * [0x99])
    variants = [np.derive(COOKIE, other, wk, MN, mk, dh), np.derive(COOKIE, WN, other, MN, mk, dh),
                np.derive(COOKIE, WN, wk, other, mk, dh), np.derive(COOKIE, WN, wk, MN, other, dh),
                np.derive(COOKIE, WN, wk, MN, mk, other), np.derive(COOKIE + " ", WN, wk, MN, mk, dh),
                np.derive(COOKIE, WN, wk, MN, mk, dh, version=3)]
    for keys in variants:  # (th binds neither dh nor the cookie: compare the outputs)
        assert not set(keys[1:]) & set(base[1:]), "an input does not change every output"
    for bad in (bytes(32), b"\x01" + bytes(31),
                bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")):
        expect_bad(lambda k: np.shared_secret(wpriv, k), bad, np.AUTH_FAILED)
    try:
        np.derive("short cookie", WN, wk, MN, mk, dh)
    except ValueError:
        pass
    else:
        raise AssertionError("a cookie under 16 bytes was used")


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
    key = "ab" * 32
    good = [np.heartbeat(), np.accept(10), np.reject("duplicate_node", "m"),
            {"type": "error", "code": "x"}, np.payload_started(1), np.payload_exited(0),
            np.payload_exited(signal=9), {"type": "payload_exited", "exit_code": 3, "signal": None},
            np.draining("rebalance"), np.draining("spot_interruption", "2026-01-02T03:04:05.5+01:00"),
            np.shutdown(0), {"type": "shutdown", "grace_ms": 5.0}, {"type": "heartbeat", "x": [1]},
            np.register_msg("j", "h", "a", node_index=0, num_nodes=2, cpus=0.5,
                            memory_limit_bytes=2**53 - 1),
            np.hello_worker(WN), np.hello_manager(MN), np.auth(WN),
            {"type": "error", "code": "unsupported_version", "versions": [2]}]
    for m in good:
        np.validate(dict(m))
    reg = np.register_msg("j", "h", "a")
    hw = np.hello_worker(WN)
    hm = np.hello_manager(MN)
    bad = [{}, {"type": 1}, {"type": "bogus"}, {"type": "accept"},
           np.accept(9), {"type": "accept", "heartbeat_interval_ms": True},
           {"type": "reject", "code": "Bad"}, {"type": "error", "message": "m"},
           np.payload_started(0), {"type": "payload_exited"},
           {"type": "payload_exited", "exit_code": 0, "signal": 9},
           {"type": "payload_exited", "exit_code": 256}, np.draining(""),
           np.draining("r", "2026-01-02 03:04:05Z"), {"type": "draining", "reason": "r"},
           {"type": "shutdown", "grace_ms": -1}, {"type": "shutdown", "grace_ms": 1.5},
           {"type": "auth", "proof": "AB" * 32}, {"type": "auth"},
           dict(hw, versions=[]), dict(hw, versions=[0]), dict(hw, key="AB" * 32), dict(hw, key=key[:62]),
           {k: v for k, v in hw.items() if k != "key"}, {k: v for k, v in hw.items() if k != "agent"},
           {k: v for k, v in hm.items() if k != "key"}, dict(hm, version=0), dict(hm, nonce=None),
           # v1's manager hello (a proof, no key)
           {"type": "hello", "role": "manager", "version": 1, "nonce": "00" * 32, "proof": key},
           dict(hm, role="boss"),
           dict(reg, job_id=""), dict(reg, attempt=-1), dict(reg, num_nodes=0),
           dict(reg, cpus=0), dict(reg, cpus="2"), dict(reg, attempt=2**53),
           {k: v for k, v in reg.items() if k != "attempt"},
           {k: v for k, v in reg.items() if k != "cpus"}, dict(reg, hostname=None)]
    for m in bad:
        expect_bad(np.validate, dict(m), np.BAD_MESSAGE)


# ----------------------------------------------------------------------------------
# Sealed frames

K1, K2 = bytes(range(100, 132)), bytes(range(200, 232))


def sealed_pair():
    """Two Conns over a socketpair, a's sending direction sealed with K1 into b."""
    s1, s2 = socket.socketpair()
    a, b = np.Conn(s1, recv_limit=np.MAX_FRAME), np.Conn(s2, recv_limit=np.MAX_FRAME)
    a.seal_send(K1)
    b.seal_recv(K1)
    return a, b


def expect_frame_error(conn, what):
    """conn's next frame fails as bad_frame, and so does every read after it."""
    for attempt in ("first", "again"):
        try:
            got = conn.recv(2)
        except np.ProtocolError as e:
            assert e.code == np.BAD_FRAME and not e.remote, (what, attempt, e)
        else:
            raise AssertionError(f"{what}: accepted {got} ({attempt})")


@case
def test_sealed_roundtrip():
    a, b = sealed_pair()
    with a, b:
        for i in range(5):
            a.send(np.payload_started(i + 1))
            assert b.recv_msg(2)["pid"] == i + 1
        assert a.sealed_send.seq == b.sealed_recv.seq == 5
        # What crossed is not the plaintext: record one frame raw.
        a.send(np.draining("spot_interruption"))
        (frame,), rest = np.split_frames(b.sock.recv(4096))
        assert not rest and b"spot_interruption" not in frame
        assert np.decode_payload(np.unseal(K1, 5, frame))["type"] == "draining"
        # A plain direction beside a sealed one: b to a is still plain.
        b.send(np.heartbeat())
        assert a.recv(2) == np.heartbeat()


@case
def test_sealed_frames_resist_forgery():
    payload = np.encode_payload(np.heartbeat())
    n = len(payload) + np.TAG_LEN
    forgeries = {
        # Sent again: frame 0 once more after 0 and 1.
        "replayed": lambda a: (a.send(np.heartbeat()), a.send(np.heartbeat()),
                               a.send_frame_bytes(payload, seq=0)),
        # Frames 0 and 1, swapped.
        "reordered": lambda a: a.send_raw(np.seal(K1, 1, payload) + np.seal(K1, 0, payload)),
        # Frame 0 dropped before frame 1.
        "dropped": lambda a: a.send_frame_bytes(payload, seq=1),
        "ciphertext bit": lambda a: a.send_frame_bytes(payload, tamper=lambda f: np.flip_bit(f, 8 * 4 + 3)),
        "tag bit": lambda a: a.send_frame_bytes(payload, tamper=lambda f: np.flip_bit(f, 8 * len(f) - 1)),
        # N = 32 instead of 36 (still in range): the tag covers the header.
        "length header": lambda a: a.send_frame_bytes(payload, tamper=lambda f: np.flip_bit(f, 29)),
        # N one larger, and a byte to complete it.
        "length header, longer": lambda a: a.send_frame_bytes(
            payload, tamper=lambda f: struct.pack(">I", n + 1) + f[4:] + b"\0"),
        "truncated tag": lambda a: a.send_raw(struct.pack(">I", n - 1) + np.seal(K1, 0, payload)[4:-1]),
        "wrong key": lambda a: a.send_raw(np.seal(K2, 0, payload)),
        "plain frame": lambda a: a.send_raw(np.encode_frame(np.heartbeat())),
        # Below 17 (no plaintext) and above 65536 + 16: refused on the header alone.
        "empty": lambda a: a.send_raw(struct.pack(">I", np.TAG_LEN) + bytes(np.TAG_LEN)),
        "oversized": lambda a: a.send_raw(struct.pack(">I", np.MAX_FRAME + np.TAG_LEN + 1)),
    }
    for what, forge in forgeries.items():
        a, b = sealed_pair()
        with a, b:
            forge(a)
            if what == "replayed":  # the two genuine frames first
                assert b.recv(2) == np.heartbeat() and b.recv(2) == np.heartbeat()
            expect_frame_error(b, what)


@case
def test_sealed_frame_limits():
    """65536 bytes of plaintext pass (N = 65552); a plaintext of 65537 is not sent."""
    a, b = sealed_pair()
    with a, b:
        big = np.heartbeat()
        big["pad"] = "x" * (np.MAX_FRAME - len(np.encode_payload(dict(big, pad=""))))
        assert len(np.encode_payload(big)) == np.MAX_FRAME
        t = threading.Thread(target=a.send, args=(big,))
        t.start()
        assert b.recv(5)["pad"] == big["pad"]
        t.join()
        try:
            a.send(dict(big, pad=big["pad"] + "x"))
        except np.ProtocolError as e:
            assert e.code == np.BAD_FRAME
        else:
            raise AssertionError("a plaintext over 65536 bytes was sent")


# ----------------------------------------------------------------------------------
# Handshakes

class Tap:
    """A socket that keeps a copy of every byte sent through it."""

    def __init__(self, sock):
        self._sock = sock
        self.sent = bytearray()

    def sendall(self, data):
        self.sent += data
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def run_pair(manager_fn, worker_fn):
    """Runs both ends over a socketpair; returns (manager result, worker result), each
    a value or the exception raised, and the two Conns (their sockets Taps)."""
    a, b = socket.socketpair()
    results, conns = {}, {}

    def run(name, fn, sock):
        conn = conns[name] = np.Conn(Tap(sock))
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
    return results["m"], results["w"], conns["m"], conns["w"]


REG = np.register_msg("0f0e2c5a-1b2c-4d5e-8f90-123456789abc#1", "ip-10-0-1-23", "10.0.1.23", attempt=1,
                      node_index=1, num_nodes=2, queue="mnp-queue", compute_environment="mnp-ce",
                      cpus=4, memory_limit_bytes=8589934592)


@case
def test_handshake_accept_and_steady_state():
    def manager(c):
        reg, answer = np.manager_handshake(c, COOKIE, lambda r: np.accept(250))
        assert c.recv_msg(expect=("payload_started",))["pid"] == 42
        c.send(np.shutdown(30000, "done"))
        return reg, answer

    def worker(c):
        acc = np.worker_handshake(c, COOKIE, REG)
        c.send(np.payload_started(42))
        return acc, c.recv_msg(expect=("shutdown",))

    m, w, mc, wc = run_pair(manager, worker)
    assert not isinstance(m, Exception), m
    assert not isinstance(w, Exception), w
    reg, answer = m
    assert reg["node_index"] == 1 and answer["type"] == "accept"
    assert w[0]["heartbeat_interval_ms"] == 250 and w[1]["grace_ms"] == 30000
    assert mc.sealed_recv.key == wc.sealed_send.key and mc.sealed_send.key == wc.sealed_recv.key
    assert mc.sealed_recv.key != mc.sealed_send.key
    assert mc.recv_limit == wc.recv_limit == np.MAX_FRAME
    # On the wire: hello and auth plain, everything after sealed.
    wf, rest = np.split_frames(wc.sock.sent)
    mf, rest2 = np.split_frames(mc.sock.sent)
    assert not rest and not rest2 and len(wf) == 4 and len(mf) == 4
    assert [np.decode_payload(f[4:])["type"] for f in wf[:2] + mf[:2]] == ["hello", "auth"] * 2
    assert np.decode_payload(np.unseal(wc.sealed_send.key, 0, wf[2])) == REG
    assert np.decode_payload(np.unseal(mc.sealed_send.key, 0, mf[2]))["type"] == "accept"
    assert all(b"job_id" not in f and b"type" not in f for f in wf[2:] + mf[2:])


@case
def test_handshake_bytes_match_the_vectors():
    """Both sides with the vectors' nonces and keys put exactly the vectors' frames on
    the wire, the example transcript's register and accept included."""
    v = vectors()
    m, w, mc, wc = run_pair(
        lambda c: np.manager_handshake(c, COOKIE, lambda r: np.accept(5000), manager_nonce=MN,
                                       private=np.private_key(M_PRIV)),
        lambda c: np.worker_handshake(c, COOKIE, REG, agent="batch-agent 0.1.0", worker_nonce=WN,
                                      private=np.private_key(W_PRIV)))
    assert not isinstance(m, Exception) and not isinstance(w, Exception), (m, w)
    wf, _ = np.split_frames(wc.sock.sent)
    mf, _ = np.split_frames(mc.sock.sent)
    assert wf[0] == v.hex("frame_hello_worker") and wf[1] == v.hex("frame_auth_worker")
    assert mf[0] == v.hex("frame_hello_manager") and mf[1] == v.hex("frame_auth_manager")
    assert np.decode_payload(np.unseal(v.hex("key_w2m"), 0, wf[2])) == REG
    assert mf[2] == v.hex("sealed_m2w_0_accept")


@case
def test_handshake_reject():
    m, w, _, _ = run_pair(
        lambda c: np.manager_handshake(c, COOKIE, lambda r: np.reject("duplicate_node", "taken")),
        lambda c: np.worker_handshake(c, COOKIE, REG))
    assert isinstance(w, np.ProtocolError) and w.remote and w.code == "duplicate_node", w


@case
def test_handshake_wrong_cookie():
    """The worker proves first: the manager refuses its proof with a plain error and
    never reads the sealed register behind it."""
    m, w, mc, _ = run_pair(lambda c: np.manager_handshake(c, COOKIE),
                           lambda c: np.worker_handshake(c, COOKIE + "x", REG))
    assert isinstance(m, np.ProtocolError) and not m.remote and m.code == np.AUTH_FAILED, m
    assert isinstance(w, np.ProtocolError) and w.remote and w.code == np.AUTH_FAILED, w
    mf, _ = np.split_frames(mc.sock.sent)
    assert [np.decode_payload(f[4:])["type"] for f in mf] == ["hello", "error"]
    assert mc.sealed_recv is None and mc.sealed_send is None


@case
def test_stranger_gets_nothing_cookie_dependent():
    """A stranger that sends hello, then a made-up proof, gets the same bytes from
    managers with different cookies (same nonce and key): nothing to test guesses on."""
    mpriv = np.private_key(M_PRIV)
    seen = []
    for cookie in (COOKIE, "another cookie, quite different"):
        def stranger(c):
            c.send(np.hello_worker(WN, key=np.public_key(np.private_key(W_PRIV))))
            c.recv(5)
            c.send(np.auth(bytes(32)))
            return c.recv(5)

        m, w, mc, _ = run_pair(lambda c: np.manager_handshake(c, cookie, manager_nonce=MN, private=mpriv),
                               stranger)
        assert isinstance(m, np.ProtocolError) and m.code == np.AUTH_FAILED, m
        assert w["type"] == "error" and w["code"] == np.AUTH_FAILED, w
        seen.append(bytes(mc.sock.sent))
    assert seen[0] == seen[1], "the manager's answers depend on its cookie"


def hostile_worker(actions):
    """A worker that sends what actions(conn) says; returns what it then reads."""
    def fn(conn):
        actions(conn)
        try:
            return conn.recv(5)
        except np.ConnectionClosed:
            return None
    return fn


def authenticated_then(forge):
    """A worker that proves the cookie, then forge(conn, handshake) instead of a
    genuine register; reads the manager's auth so that its answer can be opened."""
    def actions(conn):
        hs = np.WorkerHandshake(conn, COOKIE)
        hs.send_hello()
        hs.recv_hello(5)
        hs.send_auth()
        forge(conn, hs)
        hs.recv_auth(5)
    return actions


@case
def test_manager_refuses_hostile_workers():
    recorded_wp = bytes.fromhex(vectors()["worker_proof"])

    def replayed_auth(conn):
        # A proof recorded from another connection (the vectors'), over its own hello.
        conn.send(np.hello_worker(WN, key=np.public_key(np.private_key(W_PRIV))))
        conn.recv(5)
        conn.send(np.auth(recorded_wp))

    def small_order_key(conn):
        conn.send(np.hello_worker(WN, key=bytes(32)))
        conn.recv(5)
        conn.send(np.auth(bytes(32)))

    encoded_reg = np.encode_payload(REG)
    big_reg = dict(REG, pad="")
    big_reg["pad"] = "x" * (np.MAX_FRAME + 1 - len(np.encode_payload(big_reg)))
    scenarios = [
        (lambda c: c.send_raw(struct.pack(">I", 4097) + b"{" * 10), np.BAD_FRAME),
        (lambda c: c.send_raw(b"\0\0\0\0"), np.BAD_FRAME),
        (lambda c: c.send_frame_bytes(b"GET / HTTP/1.1\r\n"), np.BAD_FRAME),
        (lambda c: c.send(np.heartbeat()), np.UNEXPECTED),
        (lambda c: c.send(np.register_msg("j", "h", "a")), np.UNEXPECTED),
        (lambda c: c.send(np.hello_worker(WN, versions=[1, 3])), np.UNSUPPORTED_VERSION),
        (lambda c: c.send({"type": "hello", "role": "worker"}), np.BAD_MESSAGE),
        (replayed_auth, np.AUTH_FAILED),
        (small_order_key, np.AUTH_FAILED),
        # After a good auth, the register must come sealed, in order, intact.
        (authenticated_then(lambda c, hs: c.send_raw(np.encode_frame(REG))), np.BAD_FRAME),
        (authenticated_then(lambda c, hs: c.send_frame_bytes(encoded_reg, seq=1)), np.BAD_FRAME),
        (authenticated_then(lambda c, hs: c.send_frame_bytes(
            encoded_reg, tamper=lambda f: np.flip_bit(f, 8 * len(f) - 8))), np.BAD_FRAME),
        (authenticated_then(lambda c, hs: c.send_raw(np.seal(hs.keys.k_m2w, 0, encoded_reg))), np.BAD_FRAME),
        (authenticated_then(lambda c, hs: c.send(big_reg, limit=np.MAX_FRAME + 1)), np.BAD_FRAME),
        (authenticated_then(lambda c, hs: c.send(np.heartbeat())), np.UNEXPECTED),
    ]
    for actions, code in scenarios:
        m, w, _, _ = run_pair(lambda c: np.manager_handshake(c, COOKIE), hostile_worker(actions))
        assert isinstance(m, np.ProtocolError) and m.code == code, (code, m)
        assert isinstance(w, dict) and w["type"] == "error" and w["code"] == code, (code, w)
        if code == np.UNSUPPORTED_VERSION:
            assert w.get("versions") == [2], w


@case
def test_manager_takes_a_full_frame_right_after_auth():
    """The worker's first sealed frame may carry 65536 bytes (the limit rises right
    after the proof is verified)."""
    big_reg = dict(REG, pad="")
    big_reg["pad"] = "x" * (np.MAX_FRAME - len(np.encode_payload(big_reg)))
    m, w, _, _ = run_pair(lambda c: np.manager_handshake(c, COOKIE), lambda c: np.worker_handshake(c, COOKIE, big_reg))
    assert not isinstance(m, Exception), m
    assert m[0]["pad"] == big_reg["pad"] and w["type"] == "accept", w


def hostile_manager(script):
    """A manager that runs script(conn, handshake) after reading the worker's hello;
    returns what it then reads from the worker (None at a close)."""
    def fn(conn):
        hs = np.ManagerHandshake(conn, COOKIE)
        hs.recv_hello(5)
        script(conn, hs)
        try:
            return conn.recv(5)
        except np.ConnectionClosed:
            return None
    return fn


def proven(then):
    """A manager that completes the handshake up to its own auth, then then(conn)."""
    def script(conn, hs):
        hs.send_hello()
        hs.recv_auth(5)
        conn.recv_msg(5, expect=("register",))
        hs.send_auth()
        then(conn)
    return script


@case
def test_worker_refuses_hostile_managers():
    accept = np.encode_payload(np.accept(100))
    scenarios = [
        (lambda c, hs: c.send(np.hello_manager(hs.mn, bytes(32))), np.AUTH_FAILED),
        (lambda c, hs: c.send(np.hello_manager(hs.wn, hs.mk)), np.AUTH_FAILED),  # our nonce reflected
        (lambda c, hs: c.send(np.hello_manager(hs.mn, hs.mk, version=3)), np.UNSUPPORTED_VERSION),
        (lambda c, hs: c.send(np.hello_worker(hs.mn)), np.UNEXPECTED),
        (lambda c, hs: c.send(np.accept(100)), np.UNEXPECTED),
        # A manager that does not know the cookie: a proof of its own making.
        (lambda c, hs: (hs.send_hello(), hs.recv_auth(5), c.recv_msg(5), hs.send_auth(bytes(32))),
         np.AUTH_FAILED),
        (proven(lambda c: c.send_raw(np.encode_frame(np.accept(100)))), np.BAD_FRAME),
        (proven(lambda c: c.send_frame_bytes(accept, seq=1)), np.BAD_FRAME),
        (proven(lambda c: c.send_frame_bytes(accept, tamper=lambda f: np.flip_bit(f, 40))), np.BAD_FRAME),
        (proven(lambda c: c.send(np.heartbeat())), np.UNEXPECTED),
    ]
    for script, code in scenarios:
        m, w, _, _ = run_pair(hostile_manager(script), lambda c: np.worker_handshake(c, COOKIE, REG))
        assert isinstance(w, np.ProtocolError) and not w.remote and w.code == code, (code, w)
        assert isinstance(m, dict) and m["type"] == "error" and m["code"] == code, (code, m)


@case
def test_session_handover():
    """A worker's session, exported in the BATCH_AGENT_SESSION_FD format and read back
    from a memfd, continues the connection in a new Conn."""
    got = {}

    def manager(c):
        np.manager_handshake(c, COOKIE, lambda r: np.accept(200))
        assert c.recv_msg(expect=("heartbeat",))  # the worker's, before the handover
        got["started"] = c.recv_msg(expect=("payload_started",))
        c.send(np.shutdown(1000, "from the manager"))
        return c.recv_msg(expect=("payload_exited",))

    def worker(c):
        np.worker_handshake(c, COOKIE, REG)
        c.send(np.heartbeat())
        session = c.session()
        assert set(session) == {"cipher", "send_key", "send_seq", "recv_key", "recv_seq"}, session
        assert session["cipher"] == "chacha20-poly1305" and session["send_seq"] == 2
        assert session["recv_seq"] == 1, session
        fd = os.memfd_create("session")
        os.write(fd, np.encode_payload(session))  # the position is now at the end
        payload = np.Conn.from_session(socket.socket(fileno=os.dup(c.sock.fileno())),
                                       np.read_session_fd(fd))
        with payload:
            payload.send(np.payload_started(os.getpid()))
            sd = payload.recv_msg(expect=("shutdown",))
            payload.send(np.payload_exited(signal=15))
        return sd

    m, w, _, _ = run_pair(manager, worker)
    assert not isinstance(w, Exception), w
    assert not isinstance(m, Exception), m
    assert w["reason"] == "from the manager" and m["signal"] == 15 and got["started"]["pid"] == os.getpid()
    bad = [{"cipher": "aes-gcm"}, dict(cipher="chacha20-poly1305", send_key="00" * 32, send_seq=0,
                                       recv_key="00" * 31, recv_seq=0),
           dict(cipher="chacha20-poly1305", send_key="00" * 32, send_seq=-1, recv_key="00" * 32, recv_seq=0)]
    for s in bad:
        try:
            np.Conn.from_session(None, s)
        except ValueError:
            pass
        else:
            raise AssertionError(f"took session {s}")


@case
def test_handshake_timeout():
    def silent(conn):
        conn.recv(3)

    m, w, _, _ = run_pair(lambda c: np.manager_handshake(c, COOKIE, timeout=0.3), silent)
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
            assert conn.sealed_send is not None and conn.sealed_recv is not None
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
