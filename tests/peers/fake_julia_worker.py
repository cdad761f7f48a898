#!/usr/bin/python3
"""Stand-in for `julia --worker[=COOKIE] [--bind-to IP[:PORT]]` (Distributed's
start_worker), see JULIA_PROTOCOL_NOTES.md.

Behaviour, as Julia's:
  * cookie = --worker=COOKIE, else the first line of stdin (EOF -> empty cookie); it must
    be ASCII and at most 16 chars, and is right-padded with spaces to 16;
  * bind address = --bind-to, else the first IPv4 of an up+running non-loopback interface,
    else 127.0.0.1 (silently, as Distributed does); listens only on that address, on the
    first free port from 9000 + pid % 1000 (or the --bind-to port);
  * writes `julia_worker:<port>#<addr>\\n` to stdout, then stdin is closed and stderr is
    redirected to stdout (start_worker's defaults);
  * waits JULIA_WORKER_TIMEOUT seconds (default 60) for the manager; otherwise prints
    "Master process (id 1) could not connect within T seconds.\\nexiting." and exits 1;
  * on each connection: 16-byte cookie header (bad => the Julia error text, connection
    closed, keeps waiting), 16-byte version header, then a stub JoinPGRP frame; replies
    with its own 16-byte version and a stub JoinComplete frame;
  * then serves: a stub RemoteDo "exit" frame => exit 0; EOF from the manager => exit 1.

Test knobs (environment):
  FAKE_JULIA_STATUS          append JSON status lines to this file (default: the original
                             stderr, before Julia's redirect)
  FAKE_JULIA_VERSION         version sent in the reply header (default 1.10.4)
  FAKE_JULIA_PORT_HINT       first port to try; 0 = kernel ephemeral
  FAKE_JULIA_INTERFACES      simulate interfaces for the address rule, e.g.
                             "lo=127.0.0.1:loopback,ecs-eth0=169.254.172.2,eth0=198.18.0.3:down"
  FAKE_JULIA_STDIN_TIMEOUT   bound on reading the cookie line (default 30 s)
  FAKE_JULIA_HOLD_TIMEOUT    bound on serving after the join (default 600 s; then exit 124)
  FAKE_JULIA_STDERR_TO_STDOUT=0  keep stderr separate
  --aws-batch-node           also apply start_batch_node_worker's link-local abort

The cookie is never printed or recorded.
"""

import argparse
import ctypes
import ctypes.util
import ipaddress
import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import julia_wire as jw  # noqa: E402

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40


class _Status:
    def __init__(self):
        self.path = os.environ.get("FAKE_JULIA_STATUS")
        self.fd = os.dup(2)  # the real stderr, kept across the redirect

    def __call__(self, event, **fields):
        rec = {"event": event, "pid": os.getpid()}
        rec.update(fields)
        data = (json.dumps(rec, sort_keys=True) + "\n").encode()
        if self.path:
            with open(self.path, "ab") as f:
                f.write(data)
        else:
            try:
                os.write(self.fd, data)
            except OSError:
                pass


STATUS = None


def finish(code, reason, **fields):
    STATUS("exit", code=code, reason=reason, **fields)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def err(text):
    """What Julia prints on (redirected) stderr."""
    try:
        os.write(2, (text if text.endswith("\n") else text + "\n").encode())
    except OSError:
        pass


# -- interfaces and the address rule ------------------------------------------------------
class _SockaddrIn(ctypes.Structure):
    _fields_ = [("sin_family", ctypes.c_ushort), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_uint8 * 4)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [("ifa_next", ctypes.POINTER(_Ifaddrs)), ("ifa_name", ctypes.c_char_p),
                     ("ifa_flags", ctypes.c_uint), ("ifa_addr", ctypes.c_void_p),
                     ("ifa_netmask", ctypes.c_void_p), ("ifa_ifu", ctypes.c_void_p),
                     ("ifa_data", ctypes.c_void_p)]


def system_interfaces():
    """[(name, flags, ipv4)] for AF_INET entries, in getifaddrs order (what libuv sees)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return []
    out = []
    try:
        p = head
        while p:
            ifa = p.contents
            if ifa.ifa_addr:
                sa = ctypes.cast(ifa.ifa_addr, ctypes.POINTER(_SockaddrIn)).contents
                if sa.sin_family == socket.AF_INET:
                    out.append((ifa.ifa_name.decode(errors="replace"), ifa.ifa_flags,
                                ".".join(str(b) for b in sa.sin_addr)))
            p = ifa.ifa_next
    finally:
        libc.freeifaddrs(head)
    return out


def simulated_interfaces(spec):
    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, rest = item.partition("=")
        addr, *opts = rest.split(":")
        flags = IFF_UP | IFF_RUNNING
        if "loopback" in opts:
            flags |= IFF_LOOPBACK
        if "down" in opts:
            flags &= ~(IFF_UP | IFF_RUNNING)
        out.append((name, flags, addr))
    return out


def interfaces():
    spec = os.environ.get("FAKE_JULIA_INTERFACES")
    return simulated_interfaces(spec) if spec is not None else system_interfaces()


def usable(flags):
    # libuv uv_interface_addresses: skip !(IFF_UP && IFF_RUNNING); is_internal = IFF_LOOPBACK
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def pick_bind_addr(ifaces):
    """Distributed init_bind_addr without --bind-to: string(getipaddr()), i.e. the first
    IPv4 of a non-internal interface; if there is none getipaddr throws and Distributed
    silently uses 127.0.0.1."""
    for _name, flags, addr in ifaces:
        if usable(flags) and not flags & IFF_LOOPBACK:
            return addr
    return "127.0.0.1"


def available_ipv4_msg(ifaces):
    """AWSClusterManagers start_batch_node_worker's listing."""
    text = "Available IPv4 interfaces are:"
    for name, flags, addr in ifaces:
        if usable(flags) and not flags & IFF_LOOPBACK:
            text += f"\n  {name}: inet {addr}"
    return text


def parse_bind_to(value):
    """init_bind_addr with --bind-to: split on ':'; the address must parse as an IP."""
    parts = value.split(":")
    try:
        addr = str(ipaddress.ip_address(parts[0]))
    except ValueError:
        raise ValueError(f'ArgumentError: invalid IP address: "{parts[0]}"') from None
    port = int(parts[1]) if len(parts) > 1 else 0
    return addr, port


# -- stdin cookie ---------------------------------------------------------------------------
def read_cookie_line(timeout):
    """readline(stdin): bytes up to the first newline (stripped); EOF gives ''."""
    deadline = jw.deadline_in(timeout)
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise jw.PeerTimeout("timed out reading the cookie from stdin")
        r, _, _ = select.select([0], [], [], left)
        if not r:
            continue
        b = os.read(0, 1)
        if not b or b == b"\n":
            break
        buf += b
        if len(buf) > 4096:
            break
    if buf.endswith(b"\r"):
        del buf[-1]
    return buf.decode("utf-8", "surrogateescape")


# -- listening ------------------------------------------------------------------------------
def listen_on(addr, port):
    def try_bind(p):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((addr, p))
            s.listen(64)
            return s
        except OSError:
            s.close()
            raise

    if port:
        return try_bind(port)
    hint = os.environ.get("FAKE_JULIA_PORT_HINT")
    hint = int(hint) if hint is not None else 9000 + os.getpid() % 1000
    if hint == 0:
        return try_bind(0)
    last = None
    for p in range(hint, min(hint + 1000, 65536)):  # listenany: consecutive ports
        try:
            return try_bind(p)
        except OSError as e:
            last = e
            if e.errno not in (98,):  # EADDRINUSE: try the next port
                raise
    raise last or OSError("no ports available")


# -- the connection from the manager ---------------------------------------------------------
def handshake(conn, padded_cookie, my_version, deadline):
    """process_hdr(s, true) then the stub JoinPGRP; returns (manager_version, self_pid)."""
    try:
        got = jw.recv_exact(conn, jw.HDR_COOKIE_LEN, deadline)
    except jw.PeerClosed:
        raise ValueError("Cookie read failed. Connection closed by peer.") from None
    for i in range(jw.HDR_COOKIE_LEN):
        if padded_cookie[i] != got[i]:
            raise PermissionError(
                "Process(1) - Invalid connection credentials sent by remote.")
    try:
        raw = jw.recv_exact(conn, jw.HDR_VERSION_LEN, deadline)
    except jw.PeerClosed:
        raise ValueError("Version read failed. Connection closed by peer.") from None
    manager_version = jw.parse_version_header(raw)
    mtype, payload = jw.read_frame(conn, deadline)
    if mtype != jw.MSG_JOIN_PGRP:
        raise ValueError(f"expected JoinPGRPMsg, got message type {mtype}")
    pid = 2
    text = payload.decode("ascii", "replace")
    if text.startswith("pid="):
        try:
            pid = int(text[4:])
        except ValueError:
            pass
    # handle_msg(::JoinPGRPMsg): send_connection_hdr(controller, false) + JoinCompleteMsg
    conn.sendall(jw.version_header(my_version) + jw.frame(
        jw.MSG_JOIN_COMPLETE, f"cpu_threads={os.cpu_count() or 1};ospid={os.getpid()}".encode(),
        notify=(1, pid)))
    return manager_version, pid


def serve(conn, hold_timeout):
    deadline = jw.deadline_in(hold_timeout)
    while True:
        try:
            mtype, payload = jw.read_frame(conn, deadline)
        except jw.PeerTimeout:
            finish(124, "hold_timeout")
        except (jw.PeerClosed, OSError, ValueError):
            # connection to pid 1 failed: Distributed exits 1
            finish(1, "manager_closed")
        if mtype == jw.MSG_REMOTE_DO and payload == b"exit":
            conn.close()
            finish(0, "remote_exit")


def main(argv=None):
    global STATUS
    STATUS = _Status()
    p = argparse.ArgumentParser(description="fake `julia --worker`")
    p.add_argument("--worker", nargs="?", const=None, default=False, metavar="COOKIE")
    p.add_argument("--bind-to", metavar="IP[:PORT]")
    p.add_argument("--aws-batch-node", action="store_true",
                   help="apply start_batch_node_worker's link-local check")
    args, ignored = p.parse_known_args(argv)
    if args.worker is False:
        err("fake_julia_worker: only worker mode is implemented (pass --worker)")
        finish(2, "not_worker")

    # init_multi -> init_bind_addr
    ifaces = interfaces()
    try:
        if args.bind_to:
            bind_addr, bind_port = parse_bind_to(args.bind_to)
        else:
            bind_addr, bind_port = pick_bind_addr(ifaces), 0
    except ValueError as e:
        err(f"ERROR: {e}")
        finish(1, "bad_bind_to")

    if args.aws_batch_node:
        ip = ipaddress.ip_address(bind_addr)
        if ip.is_link_local:
            err("Aborting due to use of link-local address (%s) on worker which will be "
                "unreachable by the manager. Be sure to specify a `--bind-to` address when "
                "starting Julia. %s" % (bind_addr, available_ipv4_msg(ifaces)))
            finish(1, "link_local")

    # start_worker(out=stdout, cookie=readline(stdin))
    if args.worker is not None:
        cookie, source = args.worker, "argv"
    else:
        try:
            cookie = read_cookie_line(float(os.environ.get("FAKE_JULIA_STDIN_TIMEOUT", "30")))
        except jw.PeerTimeout as e:
            err(f"fake_julia_worker: {e}")
            finish(1, "stdin_timeout")
        source = "stdin"
    # close_stdin=true, stderr_to_stdout=true
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if os.environ.get("FAKE_JULIA_STDERR_TO_STDOUT", "1") != "0":
        os.dup2(1, 2)

    try:
        padded = jw.pad_cookie(cookie)  # init_worker -> cluster_cookie(cookie)
    except ValueError as e:
        err(f"ERROR: {e}")
        finish(1, "bad_cookie_arg", cookie_source=source)
    del cookie

    try:
        timeout = float(os.environ.get("JULIA_WORKER_TIMEOUT", "60.0"))
    except ValueError:
        err('ERROR: ArgumentError: cannot parse JULIA_WORKER_TIMEOUT as Float64')
        finish(1, "bad_timeout")

    try:
        ipaddress.IPv4Address(bind_addr)  # interface = IPv4(LPROC.bind_addr)
        srv = listen_on(bind_addr, bind_port)
    except (ValueError, OSError) as e:
        err(f"ERROR: IOError: listen: {e}")
        finish(1, "listen_failed", bind_addr=bind_addr)
    port = srv.getsockname()[1]
    line = f"julia_worker:{port}#{bind_addr}\n"
    os.write(1, line.encode())
    STATUS("started", bind_addr=bind_addr, port=port, cookie_source=source,
           worker_timeout=timeout, ignored_args=ignored)

    my_version = os.environ.get("FAKE_JULIA_VERSION", jw.DEFAULT_JULIA_VERSION)
    hold = float(os.environ.get("FAKE_JULIA_HOLD_TIMEOUT", "600"))
    master_deadline = jw.deadline_in(timeout)
    while True:
        left = master_deadline - time.monotonic()
        if left <= 0:
            # check_master_connect
            err(f"Master process (id 1) could not connect within {timeout} seconds.\nexiting.")
            finish(1, "master_timeout")
        srv.settimeout(left)
        try:
            conn, peer = srv.accept()
        except socket.timeout:
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            manager_version, self_pid = handshake(conn, padded, my_version, master_deadline)
        except PermissionError as e:
            err(f'ErrorException("{e}")')
            err("Process(1) - Unknown remote, closing connection.")
            STATUS("rejected_connection", reason="bad_cookie", peer=peer[0])
            conn.close()
            continue
        except (ValueError, jw.PeerTimeout, jw.PeerClosed, OSError) as e:
            err(f'ErrorException("{e}")')
            err("Process(1) - Unknown remote, closing connection.")
            STATUS("rejected_connection", reason=str(e)[:200], peer=peer[0])
            conn.close()
            continue
        STATUS("joined", manager_version=manager_version, self_pid=self_pid,
               peer=peer[0], bind_addr=bind_addr, port=port)
        serve(conn, hold)


if __name__ == "__main__":
    main()
