"""batch-agent native wire protocol, versions 2 and 3, in Python (standard library plus
python3-cryptography; run with /usr/bin/python3).

An implementation independent of the C codec in proto/, written from PROTOCOL.md, for
the integration tests: a fake manager, a fake worker, and hostile peers (raw frames,
wrong proofs, oversized lengths, forged or replayed sealed frames...). Everything
raises ProtocolError (with a protocol error code) on a protocol violation and
TimeoutError when a deadline passes.

    # fake manager
    srv = socket.create_server(("127.0.0.1", 0))
    conn = Conn(srv.accept()[0])
    reg, answer = manager_handshake(conn, cookie, decide=lambda reg: accept(500))
    # fake worker
    conn = Conn(socket.create_connection(addr))
    acc = worker_handshake(conn, cookie, register_msg(job_id="j", hostname="h", ...))
    # either way, conn.send()/recv_msg() now seal and open frames transparently

A test that stops or misbehaves half-way through the handshake drives it step by
step with WorkerHandshake / ManagerHandshake. An --exec payload continues a worker's
session with Conn.from_session(sock, read_session_fd(fd)).
"""

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import socket
import struct
import time
from collections import namedtuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 2
# What these peers offer and pick unless a test asks for more: version 3 (2 plus the
# roster, PROTOCOL.md 4.1) is spoken when passed in versions=ALL_VERSIONS.
SUPPORTED_VERSIONS = (2,)
ALL_VERSIONS = (2, 3)
ROSTER_CHUNK = 128
ROSTER_MAX_NODES = 100000
MAX_FRAME = 65536
MAX_HANDSHAKE_FRAME = 4096
TAG_LEN = 16
MAX_SEQ = 2**64 - 1
MAX_DEPTH = 32
MAX_VERSIONS = 32
MAX_STRING = 1024
MAX_CODE = 64
MAX_INT = 2**53 - 1
NONCE_LEN = 32
KEY_LEN = 32
MIN_COOKIE = 16
CIPHER = "chacha20-poly1305"
HANDSHAKE_TIMEOUT = 10.0
HEARTBEAT_MISSES = 3
HEARTBEAT_MIN_MS = 10
HEARTBEAT_MAX_MS = 3600000
GRACE_MAX_MS = 86400000

# Error codes (PROTOCOL.md, "Error codes").
BAD_FRAME = "bad_frame"
BAD_MESSAGE = "bad_message"
UNEXPECTED = "unexpected_message"
UNSUPPORTED_VERSION = "unsupported_version"
AUTH_FAILED = "auth_failed"
TIMEOUT = "timeout"
INTERNAL = "internal"
BUSY = "busy"  # the manager serves no more handshakes now: dial again later


class ProtocolError(Exception):
    """A protocol violation. code is the error code to send the peer (or the one the
    peer sent, when remote is True); fields are extra members for the error message
    sent (unsupported_version's "versions")."""

    def __init__(self, code, message="", remote=False, fields=None):
        super().__init__(f"{'peer sent ' if remote else ''}{code}: {message}")
        self.code = code
        self.message = message
        self.remote = remote
        self.fields = fields or {}


class ConnectionClosed(ProtocolError):
    """The peer closed the stream at a frame boundary."""

    def __init__(self):
        super().__init__("closed", "connection closed by peer")


# ----------------------------------------------------------------------------------
# Framing

MAX_MEMBERS = 64  # PROTOCOL.md 1: members of one object, at any depth


def _no_duplicates(pairs):
    if len(pairs) > MAX_MEMBERS:
        raise ValueError(f"an object of {len(pairs)} members (at most {MAX_MEMBERS})")
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate member name {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _check_tree(value, depth):
    """Depth, and strings that C cannot carry (NUL) or UTF-8 cannot encode (lone
    surrogates from \\ud800 escapes)."""
    if isinstance(value, (dict, list)):
        if depth + 1 > MAX_DEPTH:
            raise ValueError("nested too deeply")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_tree(key, depth + 1)
            _check_tree(item, depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError("NUL in string")
        value.encode("utf-8")  # raises on surrogates


def decode_payload(payload):
    """One frame payload (bytes, without header) to a dict, or ProtocolError(bad_frame)."""
    if not 1 <= len(payload) <= MAX_FRAME:
        raise ProtocolError(BAD_FRAME, f"payload length {len(payload)}")
    try:
        text = payload.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        _check_tree(obj, 0)
    except (ValueError, RecursionError, UnicodeError) as e:
        raise ProtocolError(BAD_FRAME, str(e)) from None
    return obj


def encode_payload(obj):
    """Compact JSON text as UTF-8 bytes, the same bytes cJSON_PrintUnformatted makes
    for the same object built in the same key order."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def encode_frame(obj, limit=MAX_FRAME):
    """A plain frame: header and payload (a message, or bytes taken as they are)."""
    payload = encode_payload(obj) if not isinstance(obj, (bytes, bytearray)) else bytes(obj)
    if not 1 <= len(payload) <= limit:
        raise ProtocolError(BAD_FRAME, f"payload length {len(payload)} over {limit}")
    return struct.pack(">I", len(payload)) + payload


def split_frames(data):
    """Whole frames (header included, plain or sealed alike) at the start of a byte
    string, and what is left after them: for tests that record or replay a stream."""
    frames, data = [], bytes(data)
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        if len(data) < 4 + n:
            break
        frames.append(data[:4 + n])
        data = data[4 + n:]
    return frames, data


# ----------------------------------------------------------------------------------
# Sealed frames (PROTOCOL.md 1.1)

def aead_nonce(seq):
    """The 12-byte nonce of sequence number seq: 4 zero bytes, seq as 8 bytes BE."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number {seq} out of range")
    return b"\0\0\0\0" + struct.pack(">Q", seq)


def seal(key, seq, payload):
    """The whole sealed frame (header, ciphertext, tag) of payload at number seq."""
    return Direction(key).seal(bytes(payload), seq)


def unseal(key, seq, frame):
    """The payload of a whole sealed frame at number seq, or ProtocolError(bad_frame)."""
    frame = bytes(frame)
    if len(frame) < 4 + 1 + TAG_LEN or struct.unpack(">I", frame[:4])[0] != len(frame) - 4:
        raise ProtocolError(BAD_FRAME, "not a whole sealed frame")
    return Direction(key, seq).open(frame[:4], frame[4:])


def flip_bit(data, bit):
    """data with bit number `bit` inverted (bit 0 is the high bit of byte 0): for
    tampering with a frame's header, ciphertext or tag."""
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


class Direction:
    """One sealed direction of a connection: its key and the next sequence number.
    Nobody sends the number; both sides count."""

    def __init__(self, key, seq=0):
        if len(key) != KEY_LEN:
            raise ValueError("a direction key is 32 bytes")
        self.key = bytes(key)
        self.seq = seq
        self._aead = ChaCha20Poly1305(self.key)

    def take(self):
        """The next sequence number, used up. A sender never wraps around."""
        if self.seq > MAX_SEQ:
            raise ProtocolError(INTERNAL, "sequence numbers exhausted")
        seq, self.seq = self.seq, self.seq + 1
        return seq

    def seal(self, payload, seq):
        """The whole frame of payload at number seq (the caller's: take() for the next)."""
        header = struct.pack(">I", len(payload) + TAG_LEN)
        return header + self._aead.encrypt(aead_nonce(seq), bytes(payload), header)

    def open(self, header, body):
        """body (ciphertext and tag) of the next frame, checked against the number it
        must carry; the number is used up only when the tag verifies."""
        try:
            payload = self._aead.decrypt(aead_nonce(self.seq), bytes(body), bytes(header))
        except InvalidTag:
            raise ProtocolError(BAD_FRAME, f"sealed frame {self.seq} does not verify") from None
        self.seq += 1
        return payload


class Conn:
    """One stream socket speaking frames. recv_limit is the receive limit in force for
    payloads (plaintexts): MAX_HANDSHAKE_FRAME until the peer has proven the cookie;
    the handshake raises it. Each direction is plain until seal_send()/seal_recv()
    (the handshake calls them), sealed after: send() and recv() then seal and open
    frames transparently. send_raw() and send_frame_bytes() are for hostile tests."""

    def __init__(self, sock, recv_limit=MAX_HANDSHAKE_FRAME):
        self.sock = sock
        self.recv_limit = recv_limit
        self.sealed_send = None  # a Direction once our direction is sealed
        self.sealed_recv = None  # a Direction once the peer's direction is sealed
        self._buf = bytearray()
        self._failed = None  # the framing error that ended reading, sticky

    @classmethod
    def from_session(cls, sock, session):
        """A Conn that continues a sealed session: session is the JSON object of
        BATCH_AGENT_SESSION_FD (PROTOCOL.md 4), as a dict, str or bytes; its send_*
        are this side's direction, recv_* the peer's. Both are sealed, so the peer
        has proven the cookie and the full frame limit applies."""
        if isinstance(session, (bytes, bytearray, str)):
            session = json.loads(session)
        if not isinstance(session, dict) or session.get("cipher") != CIPHER:
            raise ValueError(f"session: cipher must be {CIPHER}")
        conn = cls(sock, recv_limit=MAX_FRAME)
        dirs = []
        for name in ("send", "recv"):
            key, seq = session.get(f"{name}_key"), session.get(f"{name}_seq")
            if not isinstance(key, str) or not _HEX64.match(key):
                raise ValueError(f"session: {name}_key must be 64 lowercase hex digits")
            if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
                raise ValueError(f"session: {name}_seq must be an integer in [0, 2^64)")
            dirs.append(Direction(bytes.fromhex(key), seq))
        conn.sealed_send, conn.sealed_recv = dirs
        return conn

    def session(self):
        """This side's session, in the format of BATCH_AGENT_SESSION_FD."""
        if self.sealed_send is None or self.sealed_recv is None:
            raise ValueError("both directions must be sealed to hand a session over")
        return {"cipher": CIPHER,
                "send_key": self.sealed_send.key.hex(), "send_seq": self.sealed_send.seq,
                "recv_key": self.sealed_recv.key.hex(), "recv_seq": self.sealed_recv.seq}

    def seal_send(self, key, seq=0):
        """Seals our direction from the next frame on."""
        self.sealed_send = Direction(key, seq)

    def seal_recv(self, key, seq=0):
        """Seals the peer's direction from the next frame on (also what is already
        buffered of it: frames are opened when taken, not when read)."""
        self.sealed_recv = Direction(key, seq)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _frame(self, payload, seq=None):
        """payload as the next frame of our direction: plain, or sealed at seq (the
        next number, used up, when seq is None)."""
        if self.sealed_send is None:
            return struct.pack(">I", len(payload)) + payload
        return self.sealed_send.seal(payload, self.sealed_send.take() if seq is None else seq)

    def send(self, msg, limit=MAX_FRAME):
        payload = encode_payload(msg)
        if not 1 <= len(payload) <= limit:
            raise ProtocolError(BAD_FRAME, f"payload length {len(payload)} over {limit}")
        self.sock.sendall(self._frame(payload))

    def send_raw(self, data):
        """Bytes as they are, whatever the direction's state."""
        self.sock.sendall(data)

    def send_frame_bytes(self, payload, seq=None, tamper=None):
        """A frame around an arbitrary payload (no validation). In a sealed direction
        it is sealed, at sequence number seq: by default the next one, used up; an
        explicit seq leaves the count alone (to replay a number or skip ahead).
        tamper, when given, maps the finished frame to the bytes sent (flip_bit...)."""
        frame = self._frame(bytes(payload), seq)
        self.sock.sendall(tamper(frame) if tamper else frame)

    def _fill(self, n, deadline):
        while len(self._buf) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("deadline passed waiting for a frame")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(n - len(self._buf), 4096))
            except socket.timeout:
                raise TimeoutError("deadline passed waiting for a frame") from None
            if not chunk:
                if self._buf:
                    raise ProtocolError(BAD_FRAME, "connection closed inside a frame")
                raise ConnectionClosed()
            self._buf += chunk

    def recv_payload(self, timeout=HANDSHAKE_TIMEOUT):
        """The payload bytes of the next frame (opened, when sealed), length-checked
        before anything is read past the header. A timeout keeps what was read, so
        the call can be repeated; a framing error is sticky."""
        if self._failed:
            raise self._failed
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fill(4, deadline)
        (n,) = struct.unpack(">I", self._buf[:4])
        # Sealed: the limit is on the plaintext, and there is at least one byte of it.
        lo, hi = (1, self.recv_limit) if self.sealed_recv is None else \
            (1 + TAG_LEN, self.recv_limit + TAG_LEN)
        if not lo <= n <= hi:
            self._failed = ProtocolError(BAD_FRAME, f"frame length {n}, limit {hi}")
            raise self._failed
        self._fill(4 + n, deadline)
        header, body = bytes(self._buf[:4]), bytes(self._buf[4:4 + n])
        del self._buf[:4 + n]
        if self.sealed_recv is None:
            return body
        try:
            return self.sealed_recv.open(header, body)
        except ProtocolError as e:
            self._failed = e
            raise

    def recv(self, timeout=HANDSHAKE_TIMEOUT):
        """The next frame as a dict (framing checked, message not validated)."""
        return decode_payload(self.recv_payload(timeout))

    def recv_msg(self, timeout=HANDSHAKE_TIMEOUT, expect=None):
        """The next frame, validated as a message. An "error" from the peer raises
        ProtocolError(remote=True); a type not in expect raises unexpected_message."""
        msg = validate(self.recv(timeout))
        if msg["type"] == "error" and (expect is None or "error" not in expect):
            raise ProtocolError(msg["code"], msg.get("message") or "", remote=True)
        if expect is not None and msg["type"] not in expect:
            raise ProtocolError(UNEXPECTED, f"got {msg['type']}, expected {'/'.join(expect)}")
        return msg

    def send_error(self, code, message="", fields=None):
        """Best effort: the peer may already be gone. Sealed once our direction is."""
        try:
            self.send(dict(error(code, message), **(fields or {})))
        except OSError:
            pass


def read_session_fd(fd):
    """The session object (a dict) from a BATCH_AGENT_SESSION_FD descriptor, which it
    closes. Read from offset 0 whatever the descriptor's position."""
    data, off = b"", 0
    try:
        while True:
            chunk = os.pread(fd, 4096, off)
            if not chunk:
                break
            data += chunk
            off += len(chunk)
    finally:
        os.close(fd)
    return json.loads(data)


# ----------------------------------------------------------------------------------
# Messages: builders (key order matches the C builders, so the bytes match too)

def hello_worker(nonce, agent="batch-agent-py 0.1.0", versions=(VERSION,), key=None):
    """key is the worker's X25519 public key (32 bytes); without one, a throwaway key
    (for a hostile or idle peer that never derives anything)."""
    return {"type": "hello", "versions": list(versions), "role": "worker",
            "nonce": nonce.hex(), "key": (key or _throwaway_key()).hex(), "agent": agent}


def hello_manager(nonce, key=None, version=VERSION):
    """key is the manager's X25519 public key; without one, a throwaway key."""
    return {"type": "hello", "version": version, "role": "manager",
            "nonce": nonce.hex(), "key": (key or _throwaway_key()).hex()}


def auth(proof):
    return {"type": "auth", "proof": proof.hex()}


def register_msg(job_id, hostname, address, attempt=None, array_index=None,
                 node_index=None, num_nodes=None, queue=None, compute_environment=None,
                 agent_version="0.1.0", cpus=None, memory_limit_bytes=None):
    return {"type": "register", "job_id": job_id, "attempt": attempt,
            "array_index": array_index, "node_index": node_index, "num_nodes": num_nodes,
            "queue": queue, "compute_environment": compute_environment,
            "hostname": hostname, "address": address, "agent_version": agent_version,
            "cpus": cpus, "memory_limit_bytes": memory_limit_bytes}


def accept(heartbeat_interval_ms, roster=False):
    """roster=True: version 3, a roster follows (PROTOCOL.md 4.1)."""
    msg = {"type": "accept", "heartbeat_interval_ms": heartbeat_interval_ms}
    if roster:
        msg["roster"] = True
    return msg


def roster(num_nodes, offset, nodes):
    """nodes: (node_index, address, cpus or None) tuples, one chunk (version 3)."""
    return {"type": "roster", "num_nodes": num_nodes, "offset": offset,
            "nodes": [{"node_index": i, "address": a, "cpus": c} for i, a, c in nodes]}


def rosters(nodes):
    """A whole roster in chunks of ROSTER_CHUNK, as a manager sends it."""
    return [roster(len(nodes), o, nodes[o:o + ROSTER_CHUNK]) for o in range(0, len(nodes), ROSTER_CHUNK)]


def ready():
    return {"type": "ready"}


def reject(code, message=""):
    return {"type": "reject", "code": code, "message": message}


def heartbeat():
    return {"type": "heartbeat"}


def payload_started(pid):
    return {"type": "payload_started", "pid": pid}


def payload_exited(exit_code=None, signal=None):
    if (exit_code is None) == (signal is None):
        raise ValueError("exactly one of exit_code and signal")
    if signal is None:
        return {"type": "payload_exited", "exit_code": exit_code}
    return {"type": "payload_exited", "signal": signal}


def draining(reason, deadline=None):
    return {"type": "draining", "reason": reason, "deadline": deadline}


def shutdown(grace_ms, reason=""):
    return {"type": "shutdown", "grace_ms": grace_ms, "reason": reason}


def error(code, message=""):
    return {"type": "error", "code": code, "message": message}


# ----------------------------------------------------------------------------------
# Messages: validation, field by field, as PROTOCOL.md's tables say

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_CODE = re.compile(r"[a-z0-9_]+\Z")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"([Zz]|[+-](\d{2}):(\d{2}))\Z", re.ASCII)

_ABSENT = object()


def _bad(msg):
    raise ProtocolError(BAD_MESSAGE, msg)


def _is_int(v, lo, hi):
    # bool is an int to Python but not to JSON; 5.0 is an integer to cJSON.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        return False
    return lo <= v <= hi


def _int(m, name, lo, hi, nullable=False):
    v = m.get(name, _ABSENT)
    if v is _ABSENT:
        _bad(f"{name} missing")
    if v is None and nullable:
        return None
    if not _is_int(v, lo, hi):
        _bad(f"{name} must be an integer in [{lo}, {hi}]")
    return int(v)


def _str(m, name, min_len=1, max_len=MAX_STRING, nullable=False, optional=False):
    v = m.get(name, _ABSENT)
    if v is _ABSENT or (v is None and optional):
        if optional:
            return ""
        _bad(f"{name} missing")
    if v is None and nullable:
        return None
    # Lengths are in UTF-8 bytes, as C counts them.
    if not isinstance(v, str) or not min_len <= len(v.encode("utf-8")) <= max_len:
        _bad(f"{name} must be a string of {min_len}..{max_len} bytes")
    return v


def _code(m, name):
    v = _str(m, name, 1, MAX_CODE)
    if not _CODE.match(v):
        _bad(f"{name} must match [a-z0-9_]+")
    return v


def _hex(m, name):
    v = m.get(name)
    if not isinstance(v, str) or not _HEX64.match(v):
        _bad(f"{name} must be 64 lowercase hex digits")
    return bytes.fromhex(v)


def is_rfc3339(s):
    g = _RFC3339.match(s)
    if not g:
        return False
    mo, d, h, mi, sec = (int(x) for x in g.group(2, 3, 4, 5, 6))
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and sec <= 60):
        return False
    if g.group(9) is not None:
        return int(g.group(9)) <= 23 and int(g.group(10)) <= 59
    return True


def validate(m):
    """Checks a decoded frame as a message and returns it (the same dict, with
    nonce/key/proof fields also decoded into bytes under "_nonce"/"_key"/"_proof", and "kind"
    "hello_worker"/"hello_manager" for hellos). Raises ProtocolError(bad_message)."""
    if not isinstance(m, dict):
        _bad("not an object")
    t = _str(m, "type", 1, MAX_CODE)
    if t == "hello":
        role = _str(m, "role")
        if role == "worker":
            vs = m.get("versions")
            if not isinstance(vs, list) or not 1 <= len(vs) <= MAX_VERSIONS:
                _bad("versions must be an array of 1..32 integers")
            if not all(_is_int(v, 1, 65535) for v in vs):
                _bad("versions must be integers in [1, 65535]")
            m["_nonce"] = _hex(m, "nonce")
            m["_key"] = _hex(m, "key")
            _str(m, "agent")
            m["kind"] = "hello_worker"
        elif role == "manager":
            _int(m, "version", 1, 65535)
            m["_nonce"] = _hex(m, "nonce")
            m["_key"] = _hex(m, "key")
            m["kind"] = "hello_manager"
        else:
            _bad("role must be worker or manager")
    elif t == "auth":
        m["_proof"] = _hex(m, "proof")
    elif t == "register":
        _str(m, "job_id")
        for name, lo in (("attempt", 0), ("array_index", 0), ("node_index", 0),
                         ("num_nodes", 1)):
            _int(m, name, lo, MAX_INT, nullable=True)
        _str(m, "queue", 0, nullable=True)
        _str(m, "compute_environment", 0, nullable=True)
        _str(m, "hostname")
        _str(m, "address")
        _str(m, "agent_version")
        _int(m, "memory_limit_bytes", 0, MAX_INT, nullable=True)
        cpus = m.get("cpus", _ABSENT)
        if cpus is _ABSENT:
            _bad("cpus missing")
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float))
                                 or not math.isfinite(cpus) or not 0 < cpus <= 1e6):
            _bad("cpus must be a number in (0, 1e6] or null")
    elif t == "accept":
        _int(m, "heartbeat_interval_ms", HEARTBEAT_MIN_MS, HEARTBEAT_MAX_MS)
        if m.get("roster") is not None and not isinstance(m["roster"], bool):
            _bad("roster must be a boolean or null")
    elif t == "roster":
        num = _int(m, "num_nodes", 1, ROSTER_MAX_NODES)
        offset = _int(m, "offset", 0, num - 1)
        nodes = m.get("nodes")
        if not isinstance(nodes, list) or not 1 <= len(nodes) <= ROSTER_CHUNK or offset + len(nodes) > num:
            _bad("nodes must be an array of 1..128 entries within num_nodes")
        for node in nodes:
            if not isinstance(node, dict):
                _bad("a roster entry must be an object")
            _int(node, "node_index", 0, MAX_INT)
            _str(node, "address")
            cpus = node.get("cpus", _ABSENT)
            if cpus is _ABSENT or (cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float))
                                                         or not math.isfinite(cpus) or not 0 < cpus <= 1e6)):
                _bad("cpus must be a number in (0, 1e6] or null")
    elif t == "ready":
        pass
    elif t in ("reject", "error"):
        _code(m, "code")
        _str(m, "message", 0, MAX_FRAME, optional=True)
    elif t == "heartbeat":
        pass
    elif t == "payload_started":
        _int(m, "pid", 1, 2**31 - 1)
    elif t == "payload_exited":
        has_code = m.get("exit_code") is not None
        has_sig = m.get("signal") is not None
        if has_code == has_sig:
            _bad("exactly one of exit_code and signal")
        if has_code:
            _int(m, "exit_code", 0, 255)
        else:
            _int(m, "signal", 1, 127)
    elif t == "draining":
        _str(m, "reason")
        dl = _str(m, "deadline", 0, nullable=True)
        if dl is not None and not is_rfc3339(dl):
            _bad("deadline must be RFC 3339 or null")
    elif t == "shutdown":
        _int(m, "grace_ms", 0, GRACE_MAX_MS)
        _str(m, "reason", 0, optional=True)
    else:
        _bad(f"unknown type {t!r}")
    return m


# ----------------------------------------------------------------------------------
# Key agreement and proofs (PROTOCOL.md 3)

Keys = namedtuple("Keys", "th wp mp k_w2m k_m2w")
Keys.__doc__ = """What both sides derive: the transcript hash, the worker's and the
manager's proofs, and the two direction keys."""


def nonce():
    return secrets.token_bytes(NONCE_LEN)


def private_key(raw=None):
    """An X25519 private key: from 32 raw bytes (clamped as RFC 7748 says, by the
    library), or fresh."""
    return X25519PrivateKey.from_private_bytes(bytes(raw)) if raw is not None \
        else X25519PrivateKey.generate()


def public_key(private):
    """The 32-byte public key of an X25519 private key."""
    return private.public_key().public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)


def _throwaway_key():
    return public_key(private_key())


def _cookie_bytes(cookie):
    """Cookie bytes exactly as given (no trimming); at least MIN_COOKIE of them."""
    key = cookie.encode("utf-8") if isinstance(cookie, str) else bytes(cookie)
    if len(key) < MIN_COOKIE:
        raise ValueError(f"a cookie of {len(key)} bytes: at least {MIN_COOKIE} are required")
    return key


def transcript(wn, wk, mn, mk, version=VERSION):
    """What th hashes: the version label, both nonces and both public keys."""
    return f"batch-agent/{version}\n".encode("ascii") + wn + wk + mn + mk


def shared_secret(private, peer_key):
    """X25519 of our private key and the peer's public key. A peer key of small order
    (an all-zero result) raises ProtocolError(auth_failed): it fails the handshake as a
    wrong proof would."""
    try:
        dh = private.exchange(X25519PublicKey.from_public_bytes(bytes(peer_key)))
    except ValueError:  # OpenSSL refuses the all-zero result itself
        dh = bytes(KEY_LEN)
    if not any(dh):
        raise ProtocolError(AUTH_FAILED, "peer key of small order")
    return dh


def derive(cookie, wn, wk, mn, mk, dh, version=VERSION):
    """The proofs and direction keys of one connection (Keys)."""
    th = hashlib.sha256(transcript(wn, wk, mn, mk, version)).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=4 * KEY_LEN, salt=th,
               info=f"batch-agent/{version} keys".encode("ascii")).derive(dh + _cookie_bytes(cookie))
    return Keys(th, okm[0:32], okm[32:64], okm[64:96], okm[96:128])


# ----------------------------------------------------------------------------------
# Handshakes

def _deadline_left(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("handshake deadline passed")
    return left


@contextlib.contextmanager
def answering_errors(conn):
    """Around a handshake: a local protocol error goes to the peer as an error message
    (sealed once our direction is), a timeout as error timeout; the exception then
    goes on to the caller, who closes."""
    try:
        yield
    except ProtocolError as e:
        if not e.remote and not isinstance(e, ConnectionClosed):
            conn.send_error(e.code, e.message, e.fields)
        raise
    except TimeoutError:
        conn.send_error(TIMEOUT, "handshake not complete in time")
        raise


class WorkerHandshake:
    """The worker's side of PROTOCOL.md 3, one step per method, for tests that stop,
    wait or misbehave half-way; worker_handshake() runs it all. Nothing here sends an
    error: wrap the steps in answering_errors(conn) for that."""

    def __init__(self, conn, cookie, worker_nonce=None, private=None,
                 agent="batch-agent-py 0.1.0", versions=SUPPORTED_VERSIONS):
        self.conn = conn
        self.cookie = _cookie_bytes(cookie)
        self.wn = worker_nonce or nonce()
        self.private = private or private_key()
        self.wk = public_key(self.private)
        self.agent = agent
        self.versions = tuple(versions)
        self.version = self.mn = self.mk = self.keys = None

    def hello(self):
        return hello_worker(self.wn, self.agent, self.versions, key=self.wk)

    def send_hello(self):
        self.conn.send(self.hello())

    def recv_hello(self, timeout=HANDSHAKE_TIMEOUT):
        """The manager's hello; derives the keys. Returns the hello."""
        hello = self.conn.recv_msg(timeout, expect=("hello",))
        if hello["kind"] != "hello_manager":
            raise ProtocolError(UNEXPECTED, "expected a manager hello")
        if hello["version"] not in self.versions:
            raise ProtocolError(UNSUPPORTED_VERSION, f"worker offered {list(self.versions)}")
        if hello["_nonce"] == self.wn:
            raise ProtocolError(AUTH_FAILED, "the manager reflected our nonce")
        self.version, self.mn, self.mk = hello["version"], hello["_nonce"], hello["_key"]
        dh = shared_secret(self.private, self.mk)
        self.keys = derive(self.cookie, self.wn, self.wk, self.mn, self.mk, dh, self.version)
        return hello

    def send_auth(self, proof=None):
        """Our proof (or a chosen one), then our direction is sealed."""
        self.conn.send(auth(self.keys.wp if proof is None else proof))
        self.conn.seal_send(self.keys.k_w2m)

    def recv_auth(self, timeout=HANDSHAKE_TIMEOUT):
        """The manager's proof, checked; then the full limit and its direction sealed."""
        msg = self.conn.recv_msg(timeout, expect=("auth",))
        if not hmac.compare_digest(msg["_proof"], self.keys.mp):
            raise ProtocolError(AUTH_FAILED, "manager proof does not match")
        self.conn.recv_limit = MAX_FRAME
        self.conn.seal_recv(self.keys.k_m2w)
        return msg


class ManagerHandshake:
    """The manager's side of PROTOCOL.md 3, one step per method (see WorkerHandshake).
    private may be shared by many connections, as a manager MAY; mn is fresh unless
    manager_nonce is given."""

    def __init__(self, conn, cookie, manager_nonce=None, private=None,
                 versions=SUPPORTED_VERSIONS):
        self.conn = conn
        self.cookie = _cookie_bytes(cookie)
        self.mn = manager_nonce or nonce()
        self.private = private or private_key()
        self.mk = public_key(self.private)
        self.versions = tuple(versions)
        self.version = self.wn = self.wk = self.keys = None

    def recv_hello(self, timeout=HANDSHAKE_TIMEOUT):
        """The worker's hello; picks the highest common version. Returns the hello."""
        hello = self.conn.recv_msg(timeout, expect=("hello",))
        if hello["kind"] != "hello_worker":
            raise ProtocolError(UNEXPECTED, "expected a worker hello")
        common = [v for v in hello["versions"] if v in self.versions]
        if not common:
            raise ProtocolError(UNSUPPORTED_VERSION, f"manager speaks {list(self.versions)}",
                                fields={"versions": list(self.versions)})
        self.version = int(max(common))
        self.wn, self.wk = hello["_nonce"], hello["_key"]
        return hello

    def hello(self):
        return hello_manager(self.mn, self.mk, self.version)

    def send_hello(self):
        """Only random values go out before the worker has proven the cookie."""
        self.conn.send(self.hello())

    def recv_auth(self, timeout=HANDSHAKE_TIMEOUT):
        """The worker's proof, checked; then the full limit and its direction sealed."""
        msg = self.conn.recv_msg(timeout, expect=("auth",))
        try:
            dh = shared_secret(self.private, self.wk)
            keys = derive(self.cookie, self.wn, self.wk, self.mn, self.mk, dh, self.version)
        except ProtocolError:  # a key of small order: as a wrong proof
            keys = None
        if keys is None or self.mn == self.wn or not hmac.compare_digest(msg["_proof"], keys.wp):
            raise ProtocolError(AUTH_FAILED, "worker proof does not match")
        self.keys = keys
        self.conn.recv_limit = MAX_FRAME
        self.conn.seal_recv(keys.k_w2m)
        return msg

    def send_auth(self, proof=None):
        """Our proof (or a chosen one), plain, then our direction is sealed."""
        self.conn.send(auth(self.keys.mp if proof is None else proof))
        self.conn.seal_send(self.keys.k_m2w)


def manager_handshake(conn, cookie, decide=None, timeout=HANDSHAKE_TIMEOUT,
                      manager_nonce=None, private=None, versions=SUPPORTED_VERSIONS):
    """Manager side, on an accepted connection: hellos, proofs, registration.

    decide(register) returns the answer to send: accept(ms) or reject(code, msg);
    default accept(1000). Returns (register, answer); both directions are sealed
    after it. On a protocol error sends the matching error message, and raises
    ProtocolError; the caller closes."""
    deadline = time.monotonic() + timeout
    hs = ManagerHandshake(conn, cookie, manager_nonce, private, versions)
    with answering_errors(conn):
        hs.recv_hello(_deadline_left(deadline))
        hs.send_hello()
        hs.recv_auth(_deadline_left(deadline))
        hs.send_auth()
        reg = conn.recv_msg(_deadline_left(deadline), expect=("register",))
        answer = decide(reg) if decide else accept(1000)
        validate(dict(answer))
        conn.send(answer)
        return reg, answer


def worker_handshake(conn, cookie, register, timeout=HANDSHAKE_TIMEOUT, agent=None,
                     worker_nonce=None, private=None):
    """Worker side, on a connected socket. Returns the accept message (both
    directions are sealed after it); a reject raises ProtocolError(code, remote=True).
    The register goes out right after our auth, without waiting (PROTOCOL.md 3.5)."""
    deadline = time.monotonic() + timeout
    hs = WorkerHandshake(conn, cookie, worker_nonce, private, agent or "batch-agent-py 0.1.0")
    with answering_errors(conn):
        hs.send_hello()
        hs.recv_hello(_deadline_left(deadline))
        hs.send_auth()
        try:
            conn.send(register)
        except OSError:
            # The manager refused our proof and closed (a reset) before this went out:
            # its answer is in our socket all the same, and recv_auth reads it.
            pass
        hs.recv_auth(_deadline_left(deadline))
        ans = conn.recv_msg(_deadline_left(deadline), expect=("accept", "reject"))
        if ans["type"] == "reject":
            raise ProtocolError(ans["code"], ans.get("message") or "", remote=True)
        return ans
