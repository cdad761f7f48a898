"""Wire-level pieces shared by the fake Julia manager and the fake Julia worker.

See JULIA_PROTOCOL_NOTES.md for where each constant and rule comes from. Standard library
only; every blocking call takes a deadline so that no peer can hang.
"""

import re
import secrets
import socket
import string
import struct
import time

# AWSClusterManagers.jl src/batch_node.jl
AWS_BATCH_JOB_NODE_PORT = 49152
AWS_BATCH_NODE_TIMEOUT_S = 300  # Minute(5)
JOB_ID_RE = re.compile(r"^job_id:([a-z0-9-]{36}#\d+)")
NODE_INDEX_RE = re.compile(r"(?<=#)\d+")
COOKIE_RE = re.compile(r"^julia_cookie:(\w+)")
WORKER_TIMEOUT_RE = re.compile(r"^julia_worker_timeout:(\d+)")

# Distributed src/cluster.jl, messages.jl
HDR_COOKIE_LEN = 16
HDR_VERSION_LEN = 16
WORKER_LINE_RE = re.compile(r"^julia_worker:(\d+)#(.*)")
MAX_STARTUP_LINES = 1000
DEFAULT_WORKER_TIMEOUT_S = 60.0
MSG_BOUNDARY = bytes([0x79, 0x8E, 0x8E, 0xF5, 0x6E, 0x9B, 0x2E, 0x97, 0xD5, 0x7D])
# 1-based indices into Distributed's `msgtypes`
MSG_JOIN_COMPLETE = 4
MSG_JOIN_PGRP = 5
MSG_REMOTE_DO = 6

DEFAULT_JULIA_VERSION = "1.10.4"
MAX_FRAME = 64 * 1024


class PeerTimeout(Exception):
    pass


class PeerClosed(Exception):
    pass


def random_cookie():
    """Like Distributed's randstring(HDR_COOKIE_LEN): 16 ASCII alphanumerics."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(HDR_COOKIE_LEN))


def pad_cookie(cookie):
    """cluster_cookie(cookie): ASCII, at most 16 chars, right-padded with spaces."""
    if not cookie.isascii():
        raise ValueError("AssertionError: isascii(cookie)")
    if len(cookie) > HDR_COOKIE_LEN:
        raise ValueError("AssertionError: length(cookie) <= HDR_COOKIE_LEN")
    return cookie.ljust(HDR_COOKIE_LEN).encode("ascii")


def version_header(version=DEFAULT_JULIA_VERSION):
    """rpad(VERSION_STRING, HDR_VERSION_LEN)[1:HDR_VERSION_LEN]."""
    return version.ljust(HDR_VERSION_LEN)[:HDR_VERSION_LEN].encode("ascii", "replace")


_VERSION_RE = re.compile(r"^v?(\d+)(\.\d+)?(\.\d+)?([-+][0-9A-Za-z.+-]*)?$")


def parse_version_header(raw):
    """VersionNumber(strip(String(version))); returns the string or raises ValueError."""
    text = raw.decode("utf-8", "replace").strip()
    if not _VERSION_RE.match(text):
        raise ValueError(f'ArgumentError: invalid version string: "{text}"')
    return text


def parse_job_id(line):
    m = JOB_ID_RE.match(line)
    return m.group(1) if m else None


def node_index_of(job_id):
    return int(NODE_INDEX_RE.search(job_id).group(0))


def parse_cookie_line(line):
    m = COOKIE_RE.match(line)
    return m.group(1) if m else None


def parse_worker_timeout_line(line):
    m = WORKER_TIMEOUT_RE.match(line)
    return int(m.group(1)) if m else None


def parse_worker_line(line):
    """parse_connection_info: (host, port) or None. Host is the rest of the line."""
    m = WORKER_LINE_RE.match(line)
    if not m:
        return None
    port = int(m.group(1))
    if port > 0xFFFF:
        raise ValueError(f"port {port} does not fit UInt16")
    return m.group(2), port


def deadline_in(seconds):
    return time.monotonic() + seconds


def remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise PeerTimeout("timed out")
    return left


def recv_exact(sock, n, deadline):
    """Read exactly n bytes; PeerClosed carries what was read before EOF."""
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(remaining(deadline))
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout as e:
            raise PeerTimeout("timed out") from e
        except ConnectionResetError:
            # a peer closing with our bytes unread sends RST: same as EOF here
            chunk = b""
        if not chunk:
            raise PeerClosed(bytes(buf))
        buf += chunk
    return bytes(buf)


def recv_line(sock, deadline, limit=64 * 1024):
    """Read one line byte by byte (never past the newline), like Julia's readline:
    returns the text without the trailing "\\n" (and "\\r\\n"); at EOF returns what was
    read, or None if nothing was."""
    buf = bytearray()
    while True:
        sock.settimeout(remaining(deadline))
        try:
            b = sock.recv(1)
        except socket.timeout as e:
            raise PeerTimeout("timed out") from e
        except ConnectionResetError:
            b = b""  # RST (peer closed with our bytes unread): treat as EOF
        if not b:
            return buf.decode("utf-8", "surrogateescape") if buf else None
        if b == b"\n":
            if buf.endswith(b"\r"):
                del buf[-1]
            return buf.decode("utf-8", "surrogateescape")
        buf += b
        if len(buf) > limit:
            raise ValueError("line too long")


def frame(msg_type, payload, response=(0, 0), notify=(0, 0)):
    """Stub Distributed frame: raw MsgHeader (4 x Int64, native = little-endian on the
    platforms Julia supports) + message-type byte + payload + MSG_BOUNDARY. The payload is
    ASCII, not Julia Serialization (see notes)."""
    hdr = struct.pack("<4q", response[0], response[1], notify[0], notify[1])
    return hdr + bytes([msg_type]) + payload + MSG_BOUNDARY


def read_frame(sock, deadline):
    """Returns (msg_type, payload) of a stub frame."""
    recv_exact(sock, 32, deadline)
    body = bytearray()
    while not body.endswith(MSG_BOUNDARY):
        body += recv_exact(sock, 1, deadline)
        if len(body) > MAX_FRAME:
            raise ValueError("frame too long / boundary not found")
    body = bytes(body[: -len(MSG_BOUNDARY)])
    if not body:
        raise ValueError("empty frame")
    return body[0], body[1:]
