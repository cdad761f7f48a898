"""batch-agent native wire protocol, version 1, in pure standard-library Python.

An implementation independent of the C codec in proto/, written from PROTOCOL.md, for
the integration tests: a fake manager, a fake worker, and hostile peers (raw frames,
wrong proofs, oversized lengths...). Everything raises ProtocolError (with a protocol
error code) on a protocol violation and TimeoutError when a deadline passes.

    # fake manager
    srv = socket.create_server(("127.0.0.1", 0))
    conn = Conn(srv.accept()[0])
    reg = manager_handshake(conn, cookie, decide=lambda reg: accept(500))
    # fake worker
    conn = Conn(socket.create_connection(addr))
    acc = worker_handshake(conn, cookie, register_msg(job_id="j", hostname="h", ...))
"""

import hashlib
import hmac
import json
import math
import re
import secrets
import socket
import struct
import time

VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_FRAME = 65536
MAX_HANDSHAKE_FRAME = 4096
MAX_DEPTH = 32
MAX_VERSIONS = 32
MAX_STRING = 1024
MAX_CODE = 64
MAX_INT = 2**53 - 1
NONCE_LEN = 32
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
    peer sent, when remote is True)."""

    def __init__(self, code, message="", remote=False):
        super().__init__(f"{'peer sent ' if remote else ''}{code}: {message}")
        self.code = code
        self.message = message
        self.remote = remote


class ConnectionClosed(ProtocolError):
    """The peer closed the stream at a frame boundary."""

    def __init__(self):
        super().__init__("closed", "connection closed by peer")


# ----------------------------------------------------------------------------------
# Framing

def _no_duplicates(pairs):
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
    payload = encode_payload(obj) if not isinstance(obj, (bytes, bytearray)) else bytes(obj)
    if not 1 <= len(payload) <= limit:
        raise ProtocolError(BAD_FRAME, f"payload length {len(payload)} over {limit}")
    return struct.pack(">I", len(payload)) + payload


class Conn:
    """One stream socket speaking frames. recv_limit is the receive limit in force:
    MAX_HANDSHAKE_FRAME until the peer has proven the cookie; the handshake helpers
    raise it. send_raw() and send_frame_bytes() are for hostile tests."""

    def __init__(self, sock, recv_limit=MAX_HANDSHAKE_FRAME):
        self.sock = sock
        self.recv_limit = recv_limit
        self._buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, msg, limit=MAX_FRAME):
        self.sock.sendall(encode_frame(msg, limit))

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame_bytes(self, payload):
        """A frame with an arbitrary payload (no validation)."""
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

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
        """The raw payload bytes of the next frame, length-checked."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fill(4, deadline)
        (n,) = struct.unpack(">I", self._buf[:4])
        if not 1 <= n <= self.recv_limit:
            raise ProtocolError(BAD_FRAME, f"frame length {n}, limit {self.recv_limit}")
        self._fill(4 + n, deadline)
        payload = bytes(self._buf[4:4 + n])
        del self._buf[:4 + n]
        return payload

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

    def send_error(self, code, message=""):
        """Best effort: the peer may already be gone."""
        try:
            self.send(error(code, message))
        except OSError:
            pass


# ----------------------------------------------------------------------------------
# Messages: builders (key order matches the C builders, so the bytes match too)

def hello_worker(nonce, agent="batch-agent-py 0.1.0", versions=(VERSION,)):
    return {"type": "hello", "versions": list(versions), "role": "worker",
            "nonce": nonce.hex(), "agent": agent}


def hello_manager(nonce, proof, version=VERSION):
    return {"type": "hello", "version": version, "role": "manager",
            "nonce": nonce.hex(), "proof": proof.hex()}


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


def accept(heartbeat_interval_ms):
    return {"type": "accept", "heartbeat_interval_ms": heartbeat_interval_ms}


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
    nonce/proof fields also decoded into bytes under "_nonce"/"_proof", and "kind"
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
            _str(m, "agent")
            m["kind"] = "hello_worker"
        elif role == "manager":
            _int(m, "version", 1, 65535)
            m["_nonce"] = _hex(m, "nonce")
            m["_proof"] = _hex(m, "proof")
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
# Authentication

def nonce():
    return secrets.token_bytes(NONCE_LEN)


def _cookie_bytes(cookie):
    key = cookie.encode("utf-8") if isinstance(cookie, str) else bytes(cookie)
    if not key:
        raise ValueError("empty cookie")
    return key


def proof(cookie, prover, worker_nonce, manager_nonce, version=VERSION):
    """HMAC-SHA256 proof that `prover` ("worker" or "manager") knows the cookie."""
    if prover == "manager":
        first, second = worker_nonce, manager_nonce
    elif prover == "worker":
        first, second = manager_nonce, worker_nonce
    else:
        raise ValueError(prover)
    label = f"batch-agent/{version} {prover}\n".encode("ascii")
    return hmac.new(_cookie_bytes(cookie), label + first + second, hashlib.sha256).digest()


def verify(cookie, prover, worker_nonce, manager_nonce, got, version=VERSION):
    if worker_nonce == manager_nonce:
        return False
    return hmac.compare_digest(proof(cookie, prover, worker_nonce, manager_nonce, version), got)


# ----------------------------------------------------------------------------------
# Handshakes

def _deadline_left(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("handshake deadline passed")
    return left


def manager_handshake(conn, cookie, decide=None, timeout=HANDSHAKE_TIMEOUT,
                      manager_nonce=None):
    """Manager side, on an accepted connection: hello, proofs, registration.

    decide(register) returns the answer to send: accept(ms) or reject(code, msg);
    default accept(1000). Returns (register, answer). On a protocol error sends the
    matching error message, and raises ProtocolError; the caller closes."""
    deadline = time.monotonic() + timeout
    try:
        hello = conn.recv_msg(_deadline_left(deadline), expect=("hello",))
        if hello["kind"] != "hello_worker":
            raise ProtocolError(UNEXPECTED, "expected a worker hello")
        common = [v for v in hello["versions"] if v in SUPPORTED_VERSIONS]
        if not common:
            raise ProtocolError(UNSUPPORTED_VERSION,
                                f"manager speaks {list(SUPPORTED_VERSIONS)}")
        version = max(common)
        wn = hello["_nonce"]
        mn = manager_nonce or nonce()
        if mn == wn:
            raise ProtocolError(BAD_MESSAGE, "nonce reflected")
        conn.send(hello_manager(mn, proof(cookie, "manager", wn, mn, version), version))
        msg = conn.recv_msg(_deadline_left(deadline), expect=("auth",))
        if not verify(cookie, "worker", wn, mn, msg["_proof"], version):
            raise ProtocolError(AUTH_FAILED, "worker proof does not match")
        conn.recv_limit = MAX_FRAME
        reg = conn.recv_msg(_deadline_left(deadline), expect=("register",))
        answer = decide(reg) if decide else accept(1000)
        validate(dict(answer))
        conn.send(answer)
        return reg, answer
    except ProtocolError as e:
        if not e.remote and not isinstance(e, ConnectionClosed):
            conn.send_error(e.code, e.message)
        raise
    except TimeoutError:
        conn.send_error(TIMEOUT, "handshake not complete in time")
        raise


def worker_handshake(conn, cookie, register, timeout=HANDSHAKE_TIMEOUT, agent=None,
                     worker_nonce=None):
    """Worker side, on a connected socket. Returns the accept message; a reject
    raises ProtocolError(code, remote=True)."""
    deadline = time.monotonic() + timeout
    try:
        wn = worker_nonce or nonce()
        conn.send(hello_worker(wn, agent or "batch-agent-py 0.1.0"))
        hello = conn.recv_msg(_deadline_left(deadline), expect=("hello",))
        if hello["kind"] != "hello_manager":
            raise ProtocolError(UNEXPECTED, "expected a manager hello")
        version = hello["version"]
        if version not in SUPPORTED_VERSIONS:
            raise ProtocolError(UNSUPPORTED_VERSION, f"worker offered {list(SUPPORTED_VERSIONS)}")
        mn = hello["_nonce"]
        if not verify(cookie, "manager", wn, mn, hello["_proof"], version):
            raise ProtocolError(AUTH_FAILED, "manager proof does not match")
        conn.recv_limit = MAX_FRAME
        conn.send(auth(proof(cookie, "worker", wn, mn, version)))
        conn.send(register)
        ans = conn.recv_msg(_deadline_left(deadline), expect=("accept", "reject"))
        if ans["type"] == "reject":
            raise ProtocolError(ans["code"], ans.get("message") or "", remote=True)
        return ans
    except ProtocolError as e:
        if not e.remote and not isinstance(e, ConnectionClosed):
            conn.send_error(e.code, e.message)
        raise
    except TimeoutError:
        conn.send_error(TIMEOUT, "handshake not complete in time")
        raise
