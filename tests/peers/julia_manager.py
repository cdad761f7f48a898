#!/usr/bin/python3
"""Fake Julia cluster manager: the manager side of AWSClusterManagers.jl's
AWSBatchNodeManager ("batch-node" mode) and AWSBatchManager/DockerManager ("container"
mode), plus Distributed's connect-back handshake. See JULIA_PROTOCOL_NOTES.md.

Reports what happens as JSON lines (one object per event, key "event"). The cookie is
never reported.

As a module:
    m = FakeJuliaManager(host="127.0.0.1", port=0, workers=2, on_event=events.append)
    m.start()            # binds (after listen_delay) and serves in a thread
    m.wait_listening(5)  # -> (host, port)
    m.join(60)           # -> summary dict; m.events holds all events

As a CLI:
    julia_manager.py --host 127.0.0.1 --port 0 --workers 2 [--mode container] ...
"""

import argparse
import ipaddress
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import julia_wire as jw  # noqa: E402

CLOSE_EARLY_POINTS = ("accept", "job_id", "cookie")
# Test traffic stays on loopback or the benchmarking range used inside our own netns.
TEST_NETS = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv4Network("198.18.0.0/15"))


class FakeJuliaManager:
    def __init__(
        self,
        host="0.0.0.0",
        port=jw.AWS_BATCH_JOB_NODE_PORT,
        workers=1,
        mode="batch-node",
        cookie=None,
        worker_timeout=jw.AWS_BATCH_NODE_TIMEOUT_S,
        manager_worker_timeout=jw.DEFAULT_WORKER_TIMEOUT_S,
        launch_timeout=None,
        io_timeout=30.0,
        julia_version=jw.DEFAULT_JULIA_VERSION,
        listen_delay=0.0,
        cookie_line=None,
        timeout_line=None,
        no_timeout_line=False,
        garbage=None,
        close_early=None,
        wrong_cookie=False,
        bad_version=False,
        keep_going=False,
        finish="exit",
        drain=1.0,
        allow_any_addr=False,
        on_event=None,
    ):
        if mode not in ("batch-node", "container"):
            raise ValueError("mode must be batch-node or container")
        if close_early is not None and close_early not in CLOSE_EARLY_POINTS:
            raise ValueError(f"close_early must be one of {CLOSE_EARLY_POINTS}")
        if finish not in ("exit", "close", "hold"):
            raise ValueError("finish must be exit, close or hold")
        self.host = host
        self.port = port
        self.nworkers = workers
        self.mode = mode
        self.cookie = cookie if cookie is not None else jw.random_cookie()
        self.padded_cookie = jw.pad_cookie(self.cookie)
        self.worker_timeout = int(worker_timeout)
        self.manager_worker_timeout = float(manager_worker_timeout)
        self.launch_timeout = float(
            launch_timeout if launch_timeout is not None else self.worker_timeout
        )
        self.io_timeout = float(io_timeout)
        self.julia_version = julia_version
        self.listen_delay = float(listen_delay)
        self.cookie_line = cookie_line
        self.timeout_line = timeout_line
        self.no_timeout_line = no_timeout_line
        self.garbage = garbage
        self.close_early = close_early
        self.wrong_cookie = wrong_cookie
        self.bad_version = bad_version
        self.keep_going = keep_going
        self.finish = finish
        self.drain = float(drain)
        self.allow_any_addr = allow_any_addr
        self.on_event = on_event
        self.events = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._thread = None
        self._server = None
        self.summary = None
        self.bound = None

    # -- reporting -------------------------------------------------------------------
    def emit(self, event, **fields):
        rec = {"event": event}
        rec.update(fields)
        with self._lock:
            self.events.append(rec)
        if self.on_event is not None:
            self.on_event(rec)
        return rec

    @staticmethod
    def _show(line, limit=200):
        """Report a received line without ever echoing a full cookie-like value."""
        if line is None:
            return None
        return line[:limit]

    # -- lifecycle -------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run_safe, daemon=True)
        self._thread.start()
        return self

    def wait_listening(self, timeout=10.0):
        if not self._listening.wait(timeout):
            raise jw.PeerTimeout("manager did not start listening")
        return self.bound

    def join(self, timeout=None):
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop()
            self._thread.join(5)
            raise jw.PeerTimeout("manager did not finish")
        return self.summary

    def stop(self):
        srv = self._server
        if srv is not None:
            try:
                srv.close()
            except OSError:
                pass

    def run(self):
        self._run_safe()
        return self.summary

    def _run_safe(self):
        try:
            self._run()
        except Exception as e:  # report, never hang the caller
            self.emit("error", where="manager", error=f"{type(e).__name__}: {e}")
            self.summary = self.emit("done", workers=0, ok=0, error=str(e))
            self._listening.set()

    # -- main flow -------------------------------------------------------------------
    def _run(self):
        if self.listen_delay > 0:
            self.emit("delay", seconds=self.listen_delay)
            time.sleep(self.listen_delay)
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, self.port))
        srv.listen(64)
        self._server = srv
        self.bound = srv.getsockname()
        self.emit("listening", host=self.bound[0], port=self.bound[1], mode=self.mode)
        self._listening.set()

        results = []
        try:
            if self.mode == "batch-node":
                checked_in = self._accept_batch_nodes(srv)
                srv.close()
                # AWSBatchNodeManager hands the workers to Distributed only now, sorted
                # by node index; only then does Distributed read their julia_worker lines.
                checked_in.sort(key=lambda w: w["node_index"])
                for w in checked_in:
                    results.append(self._connect_back(w))
            else:
                results = self._accept_containers(srv)
        finally:
            srv.close()
        ok = sum(1 for r in results if r.get("cookie_ok"))
        self.summary = self.emit("done", workers=len(results), ok=ok)

    def _accept_one(self, srv, deadline):
        srv.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            conn, peer = srv.accept()
        except socket.timeout:
            return None, None
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.emit("accepted", peer=f"{peer[0]}:{peer[1]}")
        return conn, peer

    def _accept_batch_nodes(self, srv):
        deadline = jw.deadline_in(self.launch_timeout)
        checked_in = []
        connected = 0
        while connected < self.nworkers and time.monotonic() < deadline:
            conn, _peer = self._accept_one(srv, deadline)
            if conn is None:
                break
            connected += 1
            if self.close_early == "accept":
                self.emit("close_early", at="accept")
                conn.close()
                continue
            try:
                line = jw.recv_line(conn, jw.deadline_in(self.io_timeout))
            except (jw.PeerTimeout, ValueError, OSError) as e:
                self.emit("reject", reason="job_id_read", error=str(e))
                conn.close()
                if not self.keep_going:
                    break
                continue
            job_id = jw.parse_job_id(line) if line is not None else None
            if job_id is None:
                # The real manager throws ("Unable to parse job id"), which ends its
                # accept loop; it never answers that connection.
                self.emit("reject", reason="bad_job_id", line=self._show(line))
                conn.close()
                if not self.keep_going:
                    break
                continue
            node_index = jw.node_index_of(job_id)
            self.emit("job_id", job_id=job_id, node_index=node_index)
            if self.close_early == "job_id":
                self.emit("close_early", at="job_id", job_id=job_id)
                conn.close()
                continue
            try:
                self._send_cookie_lines(conn)
            except OSError as e:
                self.emit("error", where="send_cookie", job_id=job_id, error=str(e))
                conn.close()
                continue
            if self.close_early == "cookie":
                conn.close()
                continue
            checked_in.append({"sock": conn, "job_id": job_id, "node_index": node_index})
        if connected < self.nworkers:
            self.emit("launch_incomplete", connected=connected, expected=self.nworkers)
        return checked_in

    def _send_cookie_lines(self, conn):
        if self.garbage is not None:
            conn.sendall(self.garbage)
            self.emit("sent", what="garbage", bytes=len(self.garbage))
            return
        cl = self.cookie_line if self.cookie_line is not None else (
            "julia_cookie:" + self.padded_cookie.decode("ascii"))
        data = (cl + "\n").encode("utf-8", "surrogateescape")
        if self.close_early == "cookie":
            conn.sendall(data)
            self.emit("close_early", at="cookie")
            return
        if not self.no_timeout_line:
            tl = self.timeout_line if self.timeout_line is not None else (
                f"julia_worker_timeout:{self.worker_timeout}")
            data += (tl + "\n").encode("utf-8", "surrogateescape")
        conn.sendall(data)
        self.emit(
            "sent",
            what="cookie_lines",
            custom_cookie_line=self.cookie_line is not None,
            timeout_line=None if self.no_timeout_line else (
                self.timeout_line if self.timeout_line is not None
                else f"julia_worker_timeout:{self.worker_timeout}"),
        )

    def _accept_containers(self, srv):
        # ContainerManager: each accepted socket goes to Distributed at once, which reads
        # its julia_worker line and connects back; no lines are sent to the worker.
        deadline = jw.deadline_in(self.launch_timeout)
        results = []
        while len(results) < self.nworkers and time.monotonic() < deadline:
            conn, _peer = self._accept_one(srv, deadline)
            if conn is None:
                break
            if self.close_early == "accept":
                self.emit("close_early", at="accept")
                conn.close()
                results.append({"cookie_ok": False})
                continue
            results.append(self._connect_back({"sock": conn, "job_id": None,
                                               "node_index": len(results)}))
        if len(results) < self.nworkers:
            self.emit("launch_incomplete", connected=len(results), expected=self.nworkers)
        return results

    # -- Distributed: read host:port, connect, headers -------------------------------------
    def _read_host_port(self, w):
        sock = w["sock"]
        deadline = jw.deadline_in(self.manager_worker_timeout)
        for _ in range(jw.MAX_STARTUP_LINES):
            line = jw.recv_line(sock, deadline)
            if line is None:
                raise jw.PeerClosed(
                    "Unable to read host:port string from worker. "
                    "Launch command exited with error?")
            hp = jw.parse_worker_line(line)
            if hp is not None:
                return hp
            self.emit("startup_line", node_index=w["node_index"], line=self._show(line))
        raise ValueError("Unexpected output from worker launch command. "
                         "Host:port string not found.")

    def _connect_back(self, w):
        base = {"job_id": w["job_id"], "node_index": w["node_index"]}
        sock = w["sock"]
        try:
            try:
                host, port = self._read_host_port(w)
            except jw.PeerTimeout:
                return self.emit("worker", **base, cookie_ok=False,
                                 error="Timed out waiting to read host:port string from worker.")
            except (jw.PeerClosed, ValueError, OSError) as e:
                return self.emit("worker", **base, cookie_ok=False, error=str(e))
            rec = dict(base, addr=host, port=port)
            result = self._handshake(host, port, w["node_index"])
            rec.update(result)
            rec = self.emit("worker", **rec)
            self._drain(sock, w["node_index"])
            return rec
        finally:
            sock.close()

    def _handshake(self, host, port, node_index):
        try:
            addr = str(ipaddress.IPv4Address(host))  # like parse(IPAddr, host)
        except ValueError:
            # Julia would fall back to getaddrinfo (DNS); test peers never do.
            return {"cookie_ok": False, "error": f"not an IPv4 literal: {host!r}"}
        if not self.allow_any_addr and not any(
                ipaddress.IPv4Address(addr) in net for net in TEST_NETS):
            return {"cookie_ok": False,
                    "error": f"refusing to connect outside test networks: {addr}"}
        cookie = self.padded_cookie
        if self.wrong_cookie:
            cookie = jw.pad_cookie(self._other_cookie())
        version = b"not-a-version!!!" if self.bad_version else jw.version_header(
            self.julia_version)
        deadline = jw.deadline_in(self.io_timeout)
        try:
            s = socket.create_connection((addr, port), timeout=jw.remaining(deadline))
        except (OSError, jw.PeerTimeout) as e:
            return {"cookie_ok": False, "error": f"connect: {e}"}
        with s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pid = node_index + 2
            try:
                # create_worker: cookie + version + JoinPGRP, without waiting in between
                s.sendall(cookie + version
                          + jw.frame(jw.MSG_JOIN_PGRP, f"pid={pid}".encode(), notify=(1, pid)))
            except OSError as e:
                return {"cookie_ok": False, "error": f"send: {e}"}
            try:
                reply = jw.recv_exact(s, jw.HDR_VERSION_LEN, deadline)
            except jw.PeerClosed as e:
                # A Julia worker closes the connection on bad credentials, sending nothing.
                return {"cookie_ok": False, "rejected": True, "wrong_cookie_sent":
                        self.wrong_cookie, "reply_bytes": len(e.args[0])}
            except (jw.PeerTimeout, OSError) as e:
                return {"cookie_ok": False, "error": f"reply: {e}"}
            try:
                worker_version = jw.parse_version_header(reply)
                mtype, payload = jw.read_frame(s, deadline)
            except (ValueError, jw.PeerClosed, jw.PeerTimeout, OSError) as e:
                return {"cookie_ok": False, "error": f"bad reply: {e}"}
            if mtype != jw.MSG_JOIN_COMPLETE:
                return {"cookie_ok": False, "error": f"unexpected message type {mtype}"}
            out = {"cookie_ok": True, "version": worker_version,
                   "join_complete": payload.decode("ascii", "replace")}
            try:
                if self.finish == "exit":
                    s.sendall(jw.frame(jw.MSG_REMOTE_DO, b"exit"))
                    # wait for the worker to go away (EOF), bounded
                    s.settimeout(min(5.0, self.io_timeout))
                    try:
                        while s.recv(4096):
                            pass
                    except socket.timeout:
                        out["exit_ack"] = False
                elif self.finish == "hold":
                    time.sleep(self.drain)
            except OSError:
                pass
            return out

    def _other_cookie(self):
        c = jw.random_cookie()
        while c == self.cookie:
            c = jw.random_cookie()
        return c

    def _drain(self, sock, node_index):
        """redirect_worker_output: report what the worker wrote on the check-in socket
        after its julia_worker line, for up to `drain` seconds or EOF."""
        deadline = jw.deadline_in(self.drain)
        while True:
            try:
                line = jw.recv_line(sock, deadline)
            except (jw.PeerTimeout, ValueError, OSError):
                return
            if line is None:
                self.emit("worker_eof", node_index=node_index)
                return
            self.emit("worker_output", node_index=node_index, line=self._show(line, 400))


def _escaped(s):
    return None if s is None else s.encode("utf-8").decode("unicode_escape")


def build_arg_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=jw.AWS_BATCH_JOB_NODE_PORT,
                   help="0 = ephemeral (reported in the 'listening' event)")
    p.add_argument("--workers", type=int, default=1, help="workers to accept")
    p.add_argument("--mode", choices=["batch-node", "container"], default="batch-node")
    p.add_argument("--cookie", help="cluster cookie (default: random, 16 alphanumerics)")
    p.add_argument("--cookie-env", metavar="VAR",
                   help="read the cookie from this environment variable")
    p.add_argument("--worker-timeout", type=int, default=jw.AWS_BATCH_NODE_TIMEOUT_S,
                   help="seconds sent in julia_worker_timeout (default 300)")
    p.add_argument("--manager-worker-timeout", type=float,
                   default=float(os.environ.get("JULIA_WORKER_TIMEOUT",
                                                jw.DEFAULT_WORKER_TIMEOUT_S)),
                   help="manager-side JULIA_WORKER_TIMEOUT for reading julia_worker lines")
    p.add_argument("--launch-timeout", type=float,
                   help="accept phase bound (default = --worker-timeout)")
    p.add_argument("--io-timeout", type=float, default=30.0)
    p.add_argument("--julia-version", default=jw.DEFAULT_JULIA_VERSION)
    p.add_argument("--listen-delay", type=float, default=0.0)
    p.add_argument("--cookie-line", help="send this line instead of julia_cookie:... "
                   "(backslash escapes allowed)")
    p.add_argument("--timeout-line", help="send this instead of julia_worker_timeout:...")
    p.add_argument("--no-timeout-line", action="store_true",
                   help="old AWSClusterManagers: only the cookie line")
    p.add_argument("--garbage", help="send these bytes (escapes allowed) instead of both lines")
    p.add_argument("--close-early", choices=CLOSE_EARLY_POINTS)
    p.add_argument("--wrong-cookie", action="store_true",
                   help="send a different cookie in the 16-byte header at the worker port")
    p.add_argument("--bad-version", action="store_true")
    p.add_argument("--keep-going", action="store_true",
                   help="keep accepting after a bad job_id (the real manager stops)")
    p.add_argument("--finish", choices=["exit", "close", "hold"], default="exit",
                   help="after the handshake: stub remote exit (worker exits 0), close "
                   "(worker exits 1), or hold --drain seconds")
    p.add_argument("--drain", type=float, default=1.0,
                   help="seconds to relay worker output from the check-in socket")
    p.add_argument("--allow-any-addr", action="store_true",
                   help="connect back to addresses outside 127/8 and 198.18/15")
    return p


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    cookie = args.cookie
    if args.cookie_env:
        cookie = os.environ[args.cookie_env]

    def out(rec):
        sys.stdout.write(json.dumps(rec, sort_keys=True) + "\n")
        sys.stdout.flush()

    m = FakeJuliaManager(
        host=args.host, port=args.port, workers=args.workers, mode=args.mode,
        cookie=cookie, worker_timeout=args.worker_timeout,
        manager_worker_timeout=args.manager_worker_timeout,
        launch_timeout=args.launch_timeout, io_timeout=args.io_timeout,
        julia_version=args.julia_version, listen_delay=args.listen_delay,
        cookie_line=_escaped(args.cookie_line), timeout_line=_escaped(args.timeout_line),
        no_timeout_line=args.no_timeout_line,
        garbage=None if args.garbage is None else _escaped(args.garbage).encode(
            "latin-1", "replace"),
        close_early=args.close_early, wrong_cookie=args.wrong_cookie,
        bad_version=args.bad_version, keep_going=args.keep_going, finish=args.finish,
        drain=args.drain, allow_any_addr=args.allow_any_addr, on_event=out)
    summary = m.run()
    ok = summary is not None and summary.get("ok") == args.workers and "error" not in summary
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
