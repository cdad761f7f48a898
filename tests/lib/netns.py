"""Throw-away test networks built from Linux network namespaces (standard library only).

    with netns.Network(3) as net:          # a switch and hosts 1..3
        net.addr(1)                          # "198.18.K.1"
        p = net.popen(1, ["batch-agent", ...], stdout=..., env=...)
        s = net.connect(2, (net.addr(1), 49152))   # a socket opened inside host 2
        net.partition(2); net.heal(2)        # host 2's link down, then up again

Layout: one "switch" namespace holding a Linux bridge, and N host namespaces, each
with lo up and one veth ("eth0") whose peer is a port of the bridge; host i has
198.18.K.i/24. Names are unique per process and network: "ba<pid>x<n>s" for the
switch, "ba<pid>x<n>h<i>" for host i, so concurrent test runs never collide; K comes
from the pid too (198.18.0.0/15, the benchmarking range, only).

Cleanup is guaranteed as far as a process can guarantee anything: close() (also from
__exit__, atexit and SIGTERM/SIGHUP) kills every process left in the namespaces
(`ip netns pids`) and deletes them. Creating a namespace that is not permitted raises
Unavailable, which callers turn into a skip (exit 77).
"""

import atexit
import ctypes
import itertools
import os
import signal
import socket
import subprocess
import threading
import time

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
CLONE_NEWNET = 0x40000000

_counter = itertools.count()
_live = []  # networks not yet closed, for atexit / signals
_handlers_installed = False


class Unavailable(Exception):
    """Network namespaces cannot be used here (no privilege, no iproute2...)."""


def _ip(*args, check=True):
    r = subprocess.run([IP, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _cleanup_all():
    for net in list(_live):
        net.close()


def _on_signal(signum, frame):
    _cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_cleanup_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


def subnet_octets(pid=None):
    """(second, third) octets of this process's /24 inside 198.18.0.0/15."""
    k = (os.getpid() if pid is None else pid) % 512
    return 18 + k // 256, k % 256


def check_available():
    """Raises Unavailable with the reason when `ip netns add` is not permitted."""
    name = f"ba{os.getpid()}probe"
    try:
        r = _ip("netns", "add", name, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"cannot run ip: {e}") from None
    if r.returncode != 0:
        raise Unavailable(f"`ip netns add` is not permitted here: {r.stderr.strip()}")
    _ip("netns", "del", name, check=False)


class Network:
    def __init__(self, hosts):
        _install_handlers()
        n = next(_counter)
        self.prefix = f"ba{os.getpid()}x{n}"
        self.switch = self.prefix + "s"
        self.hosts = {i: f"{self.prefix}h{i}" for i in range(1, hosts + 1)}
        b, c = subnet_octets()
        self.subnet = f"198.{b}.{c}"
        self._created = []
        self._procs = []
        self.closed = False
        _live.append(self)
        try:
            self._build()
        except Exception:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------------

    def _add_ns(self, name):
        r = _ip("netns", "add", name, check=False)
        if r.returncode != 0:
            raise Unavailable(f"`ip netns add {name}` failed: {r.stderr.strip()}")
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self):
        self._add_ns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, name in self.hosts.items():
            self._add_ns(name)
            port = f"p{i}"
            _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", name, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
        # Wait until host 1 can reach every other host over TCP (bridge ports up).
        for i in self.hosts:
            if i != 1:
                self._probe(i)

    def _probe(self, i):
        srv = self.run_in(i, lambda: socket.create_server((self.addr(i), 0)))
        try:
            port = srv.getsockname()[1]
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.connect(1, (self.addr(i), port), timeout=1).close()
                    return
                except OSError as e:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"test network: host 1 cannot reach {self.addr(i)}: {e}") from None
                    time.sleep(0.05)
        finally:
            srv.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- use ----------------------------------------------------------------------

    def addr(self, i):
        return f"{self.subnet}.{i}"

    def wrap(self, i, argv):
        """argv run inside host i (ip netns exec execs it: same pid)."""
        return [IP, "netns", "exec", self.hosts[i], *argv]

    def popen(self, i, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(self.wrap(i, argv), **kw)
        self._procs.append(p)
        return p

    def run_in(self, i, fn):
        """fn() called on a thread that has entered host i's network namespace;
        sockets it creates stay in that namespace. Returns fn's result."""
        box = {}

        def body():
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.hosts[i]}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as e:  # handed to the caller
                box["error"] = e

        t = threading.Thread(target=body, daemon=True)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def connect(self, i, address, timeout=5.0):
        """A TCP socket connected to address from inside host i."""
        return self.run_in(i, lambda: socket.create_connection(address, timeout=timeout))

    def partition(self, i):
        """Cut host i off the switch (its bridge port down): its packets and those sent to
        it are dropped, as on a failed link, while both ends keep their sockets."""
        _ip("-n", self.switch, "link", "set", f"p{i}", "down")

    def heal(self, i):
        """Undo partition(i); returns once host 1 reaches host i again (for i != 1)."""
        _ip("-n", self.switch, "link", "set", f"p{i}", "up")
        if i != 1:
            self._probe(i)

    # -- tear-down ------------------------------------------------------------------

    def close(self):
        if self.closed:
            return
        self.closed = True
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for name in reversed(self._created):
            for _ in range(3):
                r = _ip("netns", "pids", name, check=False)
                pids = [int(x) for x in r.stdout.split() if x.isdigit()]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
            _ip("netns", "del", name, check=False)
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self in _live:
            _live.remove(self)
