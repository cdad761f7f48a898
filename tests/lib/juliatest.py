"""Helpers for the Julia-dialect integration tests (tests/integration/test_julia_*.py).

Self-contained on purpose (agenttest.py / netns.py are written elsewhere in parallel):

  * Results          - named cases, `N passed, N failed[, N skipped]`, exit status
  * require_netns()  - exit 77, saying why, when network namespaces cannot be made
  * Lab              - network namespaces named after os.getpid(), a "switch" namespace
                       with a bridge, awsvpc-like nodes (ecs-eth0 link-local first, then
                       eth0 in 198.18.0.0/15); every namespace, and every process left in
                       one, is removed at exit (atexit, SIGTERM, SIGINT, SIGHUP)
  * Proc             - a process started in a namespace, output to files, bounded waits
  * agent_argv()     - BATCH_AGENT_WRAPPER + batch-agent + options + -- + payload
  * worker_payload() - julia_dump_exec.py (environ/cmdline dump) + fake_julia_worker.py
  * start_manager()  - julia_manager.py CLI in a namespace, JSON events parsed

Standard library only; run with /usr/bin/python3. Test traffic is only ever addressed
to 198.18.0.0/15 or loopback; the 169.254.172.0/22 ecs-eth0 interfaces exist to set the
trap a naive "first non-loopback address" falls into, and nothing is sent to them.
"""

import atexit
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("BATCH_AGENT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
PEERS = os.path.join(SOURCE_DIR, "tests", "peers")
PY = "/usr/bin/python3"
MANAGER_PY = os.path.join(PEERS, "julia_manager.py")
WORKER_PY = os.path.join(PEERS, "fake_julia_worker.py")
DUMP_PY = os.path.join(HERE, "julia_dump_exec.py")

JOB_UUID = "0f3c1a52-6d1e-4b8e-9a7f-1c2d3e4f5a6b"

EX_UNAVAILABLE = 69
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78


def log(msg):
    sys.stderr.write(f"# {msg}\n")
    sys.stderr.flush()


def agent_bin():
    b = os.environ.get("BATCH_AGENT_BIN")
    if not b:
        guess = os.path.join(SOURCE_DIR, "build", "release", "agent", "batch-agent")
        if os.path.exists(guess):
            return guess
        print("BATCH_AGENT_BIN is not set and no build/release/agent/batch-agent exists")
        sys.exit(2)
    return b


def wrapper():
    w = os.environ.get("BATCH_AGENT_WRAPPER", "").strip()
    return shlex.split(w) if w else []


def slow_factor():
    """Generous bounds under valgrind, or as the run says (BATCH_AGENT_TIMEOUT_SCALE)."""
    return float(os.environ.get("BATCH_AGENT_TIMEOUT_SCALE") or (4.0 if wrapper() else 1.0))


# -- results ----------------------------------------------------------------------------
class Skip(Exception):
    pass


class Results:
    def __init__(self, name):
        self.name = name
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def case(self, name, fn, *args, **kwargs):
        t0 = time.monotonic()
        try:
            fn(*args, **kwargs)
        except Skip as e:
            self.skipped += 1
            print(f"SKIP {name}: {e}", flush=True)
            return
        except Exception as e:  # AssertionError and anything unexpected
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
            return
        self.passed += 1
        print(f"ok   {name} ({time.monotonic() - t0:.1f} s)", flush=True)

    def finish(self):
        line = f"{self.passed} passed, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped"
        print(line, flush=True)
        return 1 if self.failed else 0


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# -- namespaces -------------------------------------------------------------------------
def run(argv, check_rc=True, timeout=15):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({p.returncode}): "
                           f"{p.stderr.decode(errors='replace').strip()}")
    return p.stdout.decode(errors="replace")


def require_netns():
    """Exit 77 (ctest skip) with the reason when namespaces/veth/bridge are unavailable."""
    if os.geteuid() != 0:
        print("SKIP: network namespaces need root (euid is not 0)")
        print("0 passed, 0 failed, 1 skipped")
        sys.exit(77)
    probe = f"jt{os.getpid()}-probe"
    try:
        why = None
        try:
            run(["ip", "netns", "add", probe])
        except (RuntimeError, OSError) as e:
            why = f"`ip netns add` is not permitted or not available: {e}"
        if why is None:
            try:
                run(["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
                run(["ip", "-n", probe, "link", "add", "b0", "type", "bridge"])
            except (RuntimeError, OSError) as e:
                why = f"veth/bridge devices cannot be created in a namespace: {e}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if why:
        print(f"SKIP: {why}")
        print("0 passed, 0 failed, 1 skipped")
        sys.exit(77)


class Node:
    def __init__(self, lab, name, ns, eth0=None, ecs=None):
        self.lab, self.name, self.ns, self.eth0, self.ecs = lab, name, ns, eth0, ecs

    def ip(self, *args, **kw):
        return run(["ip", "-n", self.ns, *args], **kw)

    def exec_argv(self, argv):
        return ["ip", "netns", "exec", self.ns, *argv]

    def tx_packets(self, dev):
        data = json.loads(self.ip("-s", "-j", "link", "show", "dev", dev))
        return int(data[0]["stats64"]["tx"]["packets"])

    def naive_first_address(self):
        """What Distributed/libuv would pick without --bind-to (the fake worker's rule)."""
        code = ("import sys; sys.path.insert(0, %r); import fake_julia_worker as w; "
                "print(w.pick_bind_addr(w.system_interfaces()))" % PEERS)
        return run(self.exec_argv([PY, "-c", code])).strip()


class Lab:
    """Namespaces of one test script. Names: jt<pid>-<tag>; all removed at exit."""

    _instances = []
    _handlers_installed = False

    def __init__(self):
        self.prefix = f"jt{os.getpid()}"
        self.namespaces = []
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix=self.prefix + "-")
        Lab._instances.append(self)
        Lab._install_handlers()

    # cleanup ---------------------------------------------------------------------------
    @classmethod
    def _install_handlers(cls):
        if cls._handlers_installed:
            return
        cls._handlers_installed = True
        atexit.register(cls.cleanup_all)

        def on_signal(signum, _frame):
            cls.cleanup_all()
            os._exit(128 + signum)

        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, on_signal)

    @classmethod
    def cleanup_all(cls):
        for lab in list(cls._instances):
            lab.cleanup()
        cls._instances.clear()

    def cleanup(self):
        for p in self.procs:
            p.kill()
        for ns in reversed(self.namespaces):
            self._kill_ns_pids(ns)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.namespaces = []
        subprocess.run(["rm", "-rf", "--", self.tmp])

    @staticmethod
    def _kill_ns_pids(ns):
        """Every process still in one of our namespaces was started by this script."""
        for _ in range(3):
            p = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
            pids = [int(x) for x in p.stdout.split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def kill_leftovers(self):
        """Between cases: no process of a previous case may linger."""
        for ns in self.namespaces:
            self._kill_ns_pids(ns)

    # building ---------------------------------------------------------------------------
    def netns(self, tag):
        name = f"{self.prefix}-{tag}"
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        # No IPv6: nothing here needs it, and it would put ND/MLD packets on ecs-eth0.
        for key in ("all", "default"):
            run(["ip", "netns", "exec", name, "sysctl", "-q", "-w",
                 f"net.ipv6.conf.{key}.disable_ipv6=1"], check_rc=False)
        return name

    def switch(self, tag="sw"):
        ns = self.netns(tag)
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", ns, "link", "set", "br0", "up"])
        self._switch = ns
        self._ports = 0
        return ns

    def _veth_to_switch(self, ns, dev, bridged):
        self._ports += 1
        peer = f"p{self._ports}"
        run(["ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer,
             "netns", self._switch])
        if bridged:
            run(["ip", "-n", self._switch, "link", "set", peer, "master", "br0"])
        run(["ip", "-n", self._switch, "link", "set", peer, "up"])
        run(["ip", "-n", ns, "link", "set", dev, "up"])

    def link(self, ns_a, dev_a, ns_b, dev_b):
        """A veth pair from ns_a (dev_a) straight to ns_b (dev_b), both up."""
        run(["ip", "-n", ns_a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b,
             "netns", ns_b])
        run(["ip", "-n", ns_a, "link", "set", dev_a, "up"])
        run(["ip", "-n", ns_b, "link", "set", dev_b, "up"])

    def awsvpc_node(self, tag, eth0, ecs, extra_eth0=()):
        """A node like an awsvpc task: ecs-eth0 (link-local, created first so it comes
        first in interface order) and eth0 on the switch's bridge. The ecs-eth0 peer is
        up but connected to nothing."""
        ns = self.netns(tag)
        if ecs:
            self._veth_to_switch(ns, "ecs-eth0", bridged=False)
            run(["ip", "-n", ns, "addr", "add", ecs, "dev", "ecs-eth0"])
        if eth0:
            self._veth_to_switch(ns, "eth0", bridged=True)
            run(["ip", "-n", ns, "addr", "add", eth0, "dev", "eth0"])
            for a in extra_eth0:
                run(["ip", "-n", ns, "addr", "add", a, "dev", "eth0"])
        return Node(self, tag, ns, eth0=eth0 and eth0.split("/")[0],
                    ecs=ecs and ecs.split("/")[0])

    def cluster(self, subnet, children, tag="n"):
        """switch + main node (index 0) + `children` nodes; eth0 = 198.18.<subnet>.<i+1>,
        ecs-eth0 = 169.254.172.<i+2>. Returns [main, child1, ...]."""
        check(0 <= subnet <= 255, "subnet")
        self.switch()
        nodes = []
        for i in range(children + 1):
            nodes.append(self.awsvpc_node(f"{tag}{i}", f"198.18.{subnet}.{i + 1}/24",
                                          f"169.254.172.{i + 2}/22"))
        # wait for the bridge ports to forward (no STP: immediate, but be safe)
        main = nodes[0]
        for n in nodes[1:]:
            ping_ok = False
            for _ in range(20):
                p = subprocess.run(n.exec_argv(["ping", "-c1", "-W1", main.eth0]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if p.returncode == 0:
                    ping_ok = True
                    break
                time.sleep(0.1)
            if not ping_ok and not _have("ping"):
                break  # no ping binary: the tests' own retries cover it
            check(ping_ok, f"{n.ns} cannot reach {main.eth0}")
        return nodes

    # processes --------------------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, node, argv, env=None, name="proc", stdin=subprocess.DEVNULL):
        p = Proc(self, node, argv, env, name, stdin)
        self.procs.append(p)
        return p


def _have(program):
    return any(os.access(os.path.join(d, program), os.X_OK)
               for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"))


class Proc:
    def __init__(self, lab, node, argv, env, name, stdin):
        self.name = name
        self.argv = argv
        self.out_path = lab.path(f"{name}.{id(self)}.out")
        self.err_path = lab.path(f"{name}.{id(self)}.err")
        # The run's environment minus anything that would steer the agent (its own
        # settings, the host's AWS/ECS): each test says what the agent gets.
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("BATCH_AGENT_", "AWS_", "ECS_")) or k == "BATCH_AGENT_WRAPPER"}
        full_env.update(env or {})
        for k, v in list(full_env.items()):
            if v is None:
                del full_env[k]
        cmd = node.exec_argv(argv) if node is not None else argv
        with open(self.out_path, "wb") as o, open(self.err_path, "wb") as e:
            self.p = subprocess.Popen(cmd, stdin=stdin, stdout=o, stderr=e, env=full_env,
                                      start_new_session=True)
        self.rc = None

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout):
        try:
            self.rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f} s; "
                                 f"stderr: {self.stderr()[-2000:]}")
        return self.rc

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)  # our own session, by its id
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")


# -- the agent, the fake peers --------------------------------------------------------------
def agent_argv(options, payload):
    return [*wrapper(), agent_bin(), *options, "--", *payload]


def mnp_env(index, num_nodes, main_addr=None, main_index=0):
    env = {
        "AWS_BATCH_JOB_ID": f"{JOB_UUID}#{index}" if num_nodes > 1 else JOB_UUID,
        "AWS_BATCH_JOB_NODE_INDEX": str(index),
        "AWS_BATCH_JOB_MAIN_NODE_INDEX": str(main_index),
        "AWS_BATCH_JOB_NUM_NODES": str(num_nodes),
        "AWS_BATCH_JOB_ATTEMPT": "1",
    }
    if main_addr is not None and index != main_index:
        env["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"] = main_addr
    # Nothing from the harness's own environment may leak in and change the agent.
    for k in list(os.environ):
        if (k.startswith("BATCH_AGENT_") and k not in ("BATCH_AGENT_BIN", "BATCH_AGENT_NET_BIN",
                                                       "BATCH_AGENT_AWS_BIN",
                                                       "BATCH_AGENT_SOURCE_DIR",
                                                       "BATCH_AGENT_WRAPPER")) \
                or k.startswith("AWS_BATCH_") or k in ("JULIA_WORKER_TIMEOUT",):
            env.setdefault(k, None)
    return env


def worker_payload(dump_path, bind="{{NODE_ADDR}}", extra=()):
    argv = [PY, DUMP_PY, dump_path, PY, WORKER_PY, "--worker"]
    if bind is not None:
        argv += ["--bind-to", bind]
    return argv + list(extra)


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_json_lines(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def env_of(dump):
    """environ list -> dict, and the list of names (to see duplicates)."""
    d, names = {}, []
    for entry in dump["environ"]:
        k, _, v = entry.partition("=")
        names.append(k)
        d.setdefault(k, v)
    return d, names


class Manager:
    """julia_manager.py run as a CLI in a namespace (optionally under the agent)."""

    def __init__(self, proc):
        self.proc = proc

    def events(self):
        out = []
        for line in self.proc.stdout().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def find(self, event):
        return [e for e in self.events() if e.get("event") == event]

    def wait_event(self, event, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(event)
            if found:
                return found[0]
            if not self.proc.alive():
                found = self.find(event)
                if found:
                    return found[0]
                raise AssertionError(f"manager exited ({self.proc.p.returncode}) before "
                                     f"'{event}': {self.proc.stdout()[-1500:]} "
                                     f"{self.proc.stderr()[-1500:]}")
            time.sleep(0.05)
        raise AssertionError(f"no '{event}' event from the manager within {timeout} s")

    def workers(self):
        return self.find("worker")

    def done(self):
        d = self.find("done")
        return d[0] if d else None


def manager_argv(host="0.0.0.0", port=49152, workers=1, worker_timeout=20, extra=()):
    return [PY, MANAGER_PY, "--host", host, "--port", str(port), "--workers", str(workers),
            "--worker-timeout", str(worker_timeout), "--launch-timeout",
            str(worker_timeout), "--io-timeout", "10", *extra]


def start_manager(lab, node, name="manager", under_agent=None, env=None, **kw):
    argv = manager_argv(**kw)
    if under_agent is not None:
        argv = agent_argv(under_agent, argv)
    return Manager(lab.start(node, argv, env=env, name=name))


def no_cookie_in(text, cookie):
    return cookie not in text and cookie.strip() not in text


def run_script(name, topology, cases):
    """The whole of a test script: require network namespaces, build the topology
    (topology(lab) returns what every case gets), run cases [(title, fn)] as
    fn(lab, topo) with leftovers killed after each, clean up, and return the exit status."""
    require_netns()
    res = Results(name)
    lab = Lab()
    try:
        topo = topology(lab)
    except Exception as e:
        print(f"FAIL topology: {e}")
        res.failed += 1
        lab.cleanup()
        return res.finish()
    try:
        for title, fn in cases:
            res.case(title, fn, lab, topo)
            lab.kill_leftovers()
    finally:
        lab.cleanup()
    return res.finish()
