"""Issue 10, findings 1 and 3, against protocol v2: an attacker on the path between the
main and a child, and a stranger at the main's port.

Finding 1: in protocol v1 everything after the handshake was plain JSON, so an attacker
between the nodes could rewrite a child's `register` address (putting its own address
in the main payload's hostfile), forge a `shutdown` (grace_ms 2000) that made the child
stop its payload and exit 0, forge heartbeats to the main, and drop a child's real
`payload_exited {"signal": 9}` for a forged `payload_exited {"exit_code": 0}`. In v2
every frame after each side's `auth` is sealed (proto/PROTOCOL.md 1.1: ChaCha20-Poly1305,
implicit sequence numbers, the length as additional data), so each of these must be
detected and nothing of the frame acted on: the side that reads it ends the connection
as a protocol error.

Finding 3: a stranger who connects and says hello must get nothing that depends on the
cookie, so that it has nothing to test cookie guesses against (PROTOCOL.md 3, 7).

Layout: network namespaces (tests/lib/netns.py, 198.18.0.0/15): host 1 the main, host 2
the child (node 1), host 3 the attacker. The child's manager address is the attacker's,
whose Relay forwards whole frames to the main and back, and alters, injects, replays or
drops them as each case says. The attacker takes no part in the handshake (it does not
know the cookie). The stranger case uses a main on loopback.
"""

import os
import signal
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import mnp  # noqa: E402
import nativeproto as npr  # noqa: E402
import netns  # noqa: E402
from mnp import Agent, Job, check, expect_exit, read, wait_for_file  # noqa: E402

PORT = 49152
PLAIN = 2  # hello and auth: each direction's frames before these are plain
HEARTBEAT_FRAME_LEN = 4 + len(npr.encode_payload(npr.heartbeat())) + npr.TAG_LEN  # sealed hides content, not length
FORGED = "a sealed frame failed authentication"  # proto_strerror(PROTO_ERR_FORGED)
runner = mnp.Runner()


class Relay:
    """The attacker on host 3: accepts the child's one connection, connects to the main
    and copies whole frames both ways ("up": child to main, "down": main to child).

    mutate(direction, n, frame) gives the bytes to send on for the n-th frame (from 0)
    of that direction, as received; at_close(direction, n) the bytes to send before
    the sender's close is passed on, n frames having come before it.
    inject(direction, data) writes forged bytes between two frames. Every frame
    received is kept in frames[direction]; closed[direction] once its sender closed."""

    def __init__(self, net, main_addr, mutate=None, at_close=None):
        self.net, self.main_addr = net, main_addr
        self.mutate = mutate or (lambda direction, n, frame: frame)
        self.at_close = at_close or (lambda direction, n: b"")
        self.srv = net.run_in(3, lambda: socket.create_server(("0.0.0.0", PORT)))
        self.frames = {"up": [], "down": []}
        self.closed = {"up": False, "down": False}
        self.socks = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.srv.settimeout(30 * mnp.SLOW)
        try:
            child = self.srv.accept()[0]
        except OSError:
            return
        main = self.net.connect(3, (self.main_addr, PORT))
        with self.cond:
            self.socks = {"up": main, "down": child}
        threading.Thread(target=self._pump, args=(child, "up"), daemon=True).start()
        threading.Thread(target=self._pump, args=(main, "down"), daemon=True).start()

    @staticmethod
    def _read(sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _pump(self, src, direction):
        dst = self.socks[direction]
        try:
            while True:
                head = self._read(src, 4)
                frame = head + self._read(src, struct.unpack(">I", head)[0])
                with self.cond:
                    n = len(self.frames[direction])
                    self.frames[direction].append(frame)
                    dst.sendall(self.mutate(direction, n, frame))
                    self.cond.notify_all()
        except (EOFError, OSError):
            pass
        with self.cond:
            try:
                dst.sendall(self.at_close(direction, len(self.frames[direction])))
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.closed[direction] = True
            self.cond.notify_all()

    def wait(self, predicate, timeout, what):
        """Until predicate(relay) holds (checked whenever a frame passes), or Failure."""
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout * mnp.SLOW):
                raise mnp.Failure(f"relay: {what} within {timeout * mnp.SLOW:.0f} s "
                                  f"({len(self.frames['up'])} frames up, {len(self.frames['down'])} down)")

    def inject(self, direction, data):
        with self.cond:
            self.socks[direction].sendall(data)

    def close(self):
        self.srv.close()
        with self.cond:
            for s in self.socks.values():
                s.close()


def heartbeats(relay, direction):
    return sum(len(f) == HEARTBEAT_FRAME_LEN for f in relay.frames[direction][PLAIN:])


class Attack:
    """The job (main and child, 2 nodes) through a Relay on host 3, inside a network
    that is torn down on exit. steady_state() waits until the child's payload runs and
    heartbeats pass both ways. hostfile_lines() is what the main payload got, or None
    when it never ran."""

    def __init__(self, workdir, mutate=None, at_close=None, main_args=()):
        mnp.need_netns()
        self.workdir, self.mutate, self.at_close, self.main_args = workdir, mutate, at_close, main_args
        self.out = os.path.join(workdir, "out")
        os.mkdir(self.out)
        self.job = Job(2)

    def __enter__(self):
        self.net = netns.Network(3)
        try:
            # The main goes on without a dropped node, so that each case can check what it logged.
            self.main = Agent("main", ["--heartbeat", "0.5", "--grace", "2", "--on-node-loss", "continue",
                                       *self.main_args, "--",
                                       *mnp.main_payload(self.out, wait_children=(1,), gate=True, wait_s=60)],
                              self.job.env(0), self.workdir, net=self.net, host=1)
            self.main.wait_for_log("rendezvous listening", 10)
            self.relay = Relay(self.net, self.net.addr(1), self.mutate, self.at_close)
            # The child's manager is the attacker's address.
            self.child = Agent("child1", ["--heartbeat", "0.5", "--grace", "2", "--connect-timeout", "10", "--",
                                          *mnp.child_payload(self.out)],
                               self.job.env(1, main_addr=self.net.addr(3)), self.workdir, net=self.net, host=2)
        except BaseException:
            self.net.close()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.relay.close()
        finally:
            self.net.close()

    def steady_state(self):
        wait_for_file(os.path.join(self.out, "child-1"), 20)
        self.relay.wait(lambda r: heartbeats(r, "up") >= 1 and heartbeats(r, "down") >= 1, 10,
                        "no heartbeat passed both ways")

    def release_main(self):
        open(os.path.join(self.out, "go"), "w").close()

    def hostfile_lines(self):
        path = os.path.join(self.out, "hostfile")
        return read(path).splitlines() if os.path.exists(path) else None

    def main_ends_without_the_child(self, what):
        """After the node was dropped: no exit report was recorded for it, the main
        payload ends (released), the main exits 0, and the hostfile is the true one."""
        check_no_exit_report(self.main, what)
        self.release_main()
        expect_exit(self.main, 0, 20)
        self.check_hostfile()

    def check_hostfile(self):
        """The main payload's hostfile holds the main and the child's own address, never
        the attacker's."""
        lines = self.hostfile_lines()
        check(lines == [self.net.addr(1), self.net.addr(2)], f"hostfile: {lines}")
        nodes = read(os.path.join(self.out, "nodes"))
        check(self.net.addr(3) not in nodes, f"BATCH_AGENT_NODES holds the attacker's address: {nodes!r}")


def forge_sealed(msg, seq):
    """msg sealed as an attacker who does not know the session keys can: under a key of
    its own, at the sequence number the receiver expects next."""
    return npr.seal(os.urandom(npr.KEY_LEN), seq, npr.encode_payload(msg))


def check_no_exit_report(main, what):
    err = main.stderr()
    check("node 1's payload" not in err, f"the main recorded a payload exit {what}:\n{err}")


@runner.case
def rewritten_register_address_is_refused(workdir):
    """Issue 10's rewrite of the child's address: the child's first sealed frame is its
    register; ChaCha20 is a stream cipher, so one bit flipped at the address's place
    would turn 198.18.K.2 into the attacker's 198.18.K.3 in the plaintext, but the tag
    no longer verifies. The main refuses the connection and warns why (a forged frame
    from a peer that proved the cookie is tampering, not noise); its bad_frame error reaches the
    child, which exits 76. Node 1 never registers, the main times out (69) without
    starting its payload, so no hostfile lists anyone."""
    state = {}

    def mutate(direction, n, frame):
        if direction != "up" or n != PLAIN:
            return frame
        # Where the address is, by the register's key order (nativeproto's builder
        # matches the C one); should the guess be off, the flip breaks the tag anyway.
        prefix = npr.encode_payload(npr.register_msg(
            job_id=f"{state['job'].uuid}#1", hostname=socket.gethostname(), address=state["child"], attempt=1,
            node_index=1, num_nodes=2, queue="mnp-queue", compute_environment="mnp-ce"))
        at = 4 + prefix.index(b'"address":"') + len(b'"address":"')
        delta = bytes(a ^ b for a, b in zip(state["child"].encode(), state["attacker"].encode()))
        state["rewritten"] = at + len(delta) <= len(frame) - npr.TAG_LEN
        forged = bytearray(frame)
        for i, d in enumerate(delta):
            forged[at + i] ^= d
        return bytes(forged)

    with Attack(workdir, mutate, main_args=("--wait-timeout", mnp.wait_s(3))) as a:
        state.update(job=a.job, child=a.net.addr(2), attacker=a.net.addr(3))
        expect_exit(a.child, mnp.EX_PROTOCOL, 20)
        check(state.get("rewritten"), f"the relay never saw a register long enough to rewrite: {state}")
        check(f"refused us to our registration: bad_frame: {FORGED}" in a.child.stderr(),
              f"the child does not say its registration arrived forged:\n{a.child.stderr()}")
        a.main.wait_for_log(f"refused peer {a.net.addr(3)}:", 10)
        expect_exit(a.main, mnp.EX_UNAVAILABLE, 20)
        err = a.main.stderr()
        check(f"refused peer {a.net.addr(3)}:" in err and FORGED in err,
              f"the main does not say the registration failed authentication:\n{err}")
        check("node 1 registered" not in err, f"the altered registration was taken:\n{err}")
        check("node 1 did not register within" in err, f"the main does not name the missing node:\n{err}")
        check(a.hostfile_lines() is None, f"the main payload ran with hostfile {a.hostfile_lines()}")


def forged_shutdown_case(workdir, forge):
    """Issue 10's forged shutdown (grace 2000), injected toward the child between two of
    the main's frames: forge(relay) gives its bytes. The child must not obey it (v1
    stopped its payload and exited 0): the frame fails its tag, the child says so,
    tells the main (bad_frame, sealed) and exits 76. The main drops the node and logs
    why; its payload gets the real hostfile."""
    with Attack(workdir, main_args=("--wait-timeout", "60")) as a:
        a.steady_state()
        a.relay.inject("down", forge(a.relay))
        expect_exit(a.child, mnp.EX_PROTOCOL, 20)
        err = a.child.stderr()
        check(f"the manager at {a.net.addr(3)}:{PORT} broke the protocol: {FORGED}" in err,
              f"the child does not say the frame failed authentication:\n{err}")
        check("asks us to shut down" not in err, f"the child obeyed the forged shutdown:\n{err}")
        check("(--on-manager-loss exit)" in err, f"the child did not apply --on-manager-loss:\n{err}")
        a.main.wait_for_log(f"node 1 reports an error: bad_frame {FORGED}", 10)
        a.main.wait_for_log("node 1 (", 10)
        check(f"node 1 ({a.net.addr(2)}) lost: it reported an error" in a.main.stderr(),
              f"the main does not drop node 1:\n{a.main.stderr()}")
        a.main_ends_without_the_child("for a child that never sent one")


@runner.case
def forged_plain_shutdown_is_not_obeyed(workdir):
    """The forged shutdown in plaintext, as issue 10's attacker sent it."""
    forged_shutdown_case(workdir, lambda relay: npr.encode_frame(npr.shutdown(2000, "forged")))


@runner.case
def forged_sealed_shutdown_is_not_obeyed(workdir):
    """The forged shutdown sealed as well as an attacker can: under its own key, at the
    very sequence number the child expects next."""
    forged_shutdown_case(workdir, lambda relay: forge_sealed(npr.shutdown(2000, "forged"),
                                                             len(relay.frames["down"]) - PLAIN))


@runner.case
def replayed_heartbeat_to_the_main_drops_the_node(workdir):
    """Issue 10's forged heartbeats to the main, done with real ones: the relay sends
    the child's first sealed heartbeat (recognised by its length) again, after a later
    frame. It carries an earlier sequence number, so it fails its tag: the main drops
    node 1, naming the failed frame, and records no payload exit the child did not send.
    Its sealed bad_frame error reaches the child, which stops its payload and exits
    76 (its frames were altered on the way: a protocol error, --on-manager-loss exit)."""
    state = {"replay": None}

    def mutate(direction, n, frame):
        if direction == "up" and state["replay"] is not None:
            replay, state["replay"] = state["replay"], None
            return frame + replay
        return frame

    with Attack(workdir, mutate, main_args=("--wait-timeout", "60")) as a:
        a.steady_state()
        with a.relay.cond:
            state["replay"] = next(f for f in a.relay.frames["up"][PLAIN:] if len(f) == HEARTBEAT_FRAME_LEN)
        a.main.wait_for_log("node 1 (", 20)
        err = a.main.stderr()
        check(f"node 1 ({a.net.addr(2)}) lost: {FORGED}" in err,
              f"the main does not say a sealed frame failed authentication:\n{err}")
        check(state["replay"] is None, "the relay never replayed the heartbeat")
        expect_exit(a.child, mnp.EX_PROTOCOL, 20)
        cerr = a.child.stderr()
        check(f"the manager reports an error: bad_frame: {FORGED}" in cerr,
              f"the child did not hear why it was dropped:\n{cerr}")
        check("(--on-manager-loss exit)" in cerr, f"the child did not apply --on-manager-loss:\n{cerr}")
        a.main_ends_without_the_child("for a child that never sent one")


@runner.case
def dropped_exit_report_is_not_replaced_by_a_forged_one(workdir):
    """Issue 10's swap of a child's exit report: the child's payload is killed (signal
    9); the relay drops everything the child sends from then on, its real
    payload_exited {"signal": 9} included, and when the child closes it sends the main
    a forged payload_exited {"exit_code": 0} (sealed under the attacker's key, at the
    sequence number the main expects next) before the close. The main must not record an exit 0: it
    drops node 1 as a frame that failed authentication, and logs no exit report."""
    state = {"dropping": False, "dropped": 0}

    def mutate(direction, n, frame):
        if direction == "up" and state["dropping"]:
            state["dropped"] += 1
            return b""
        return frame

    def at_close(direction, n):
        if direction != "up" or not state["dropping"]:
            return b""
        state["forged"] = True
        return forge_sealed(npr.payload_exited(exit_code=0), state["next_seq"])

    with Attack(workdir, mutate, at_close, main_args=("--wait-timeout", "60")) as a:
        a.steady_state()
        with a.relay.cond:
            state["dropping"] = True
            state["next_seq"] = len(a.relay.frames["up"]) - PLAIN  # the number the main expects next
        os.kill(int(read(os.path.join(a.out, "child-1.pid"))), signal.SIGKILL)
        expect_exit(a.child, 128 + signal.SIGKILL, 20)
        a.relay.wait(lambda r: r.closed["up"], 10, "the child's close did not reach the relay")
        check(state["dropped"] >= 1 and state.get("forged"), f"the relay dropped or forged nothing: {state}")
        a.main.wait_for_log("node 1 (", 20)
        err = a.main.stderr()
        check(f"node 1 ({a.net.addr(2)}) lost: {FORGED}" in err,
              f"the main does not say a sealed frame failed authentication:\n{err}")
        check_no_exit_report(a.main, "that the child did not send")
        a.release_main()
        expect_exit(a.main, 0, 20)
        check_no_exit_report(a.main, "that the child did not send")
        a.check_hostfile()


def stranger_hello(port):
    """A stranger's hello and a wrong proof: returns the manager's hello (validated) and
    the error that answers the proof, and checks that nothing else comes and that the
    main then closes."""
    conn = npr.Conn(socket.create_connection(("127.0.0.1", port), timeout=5 * mnp.SLOW))
    try:
        wn = npr.nonce()
        conn.send(npr.hello_worker(wn, key=npr.public_key(npr.private_key())))
        hello = conn.recv(timeout=5 * mnp.SLOW)
        npr.validate(dict(hello))
        check(hello.get("type") == "hello" and hello.get("role") == "manager",
              f"the stranger's hello got {hello}")
        check(set(hello) == {"type", "version", "role", "nonce", "key"},
              f"the manager's hello to a stranger has members {sorted(hello)} (no proof may be there)")
        check(hello["nonce"] != wn.hex(), "the manager reflected the stranger's nonce")
        conn.send(npr.auth(os.urandom(32)))
        answer = conn.recv_msg(timeout=5 * mnp.SLOW, expect=("error",))
        check(answer["code"] == npr.AUTH_FAILED, f"a wrong proof got {answer}, expected error auth_failed")
        try:
            extra = conn.recv_payload(timeout=5 * mnp.SLOW)
            raise mnp.Failure(f"the main kept talking to the stranger: {extra!r}")
        except (npr.ConnectionClosed, ConnectionResetError):
            pass
        return hello
    finally:
        conn.close()


@runner.case
def stranger_gets_nothing_to_guess_against(workdir):
    """Finding 3: a stranger's hello (it knows no cookie) is answered with the manager's
    hello only, nonce and key, no proof: the manager proves the cookie only after the
    worker has. A wrong proof then gets error auth_failed and the close, nothing more.
    Two strangers get different nonces. A worker with the cookie, driven the same
    way, does get the manager's proof (so the check can tell the two apart)."""
    port, job = mnp.free_port(), Job(2)
    main = Agent("main", ["--port", str(port), "--wait-timeout", "60", "--", "true"], job.env(0), workdir)
    try:
        main.wait_for_log("rendezvous listening", 10)
        first, second = stranger_hello(port), stranger_hello(port)
        check(first["nonce"] != second["nonce"], f"two strangers got the same nonce {first['nonce']}")
        with npr.Conn(socket.create_connection(("127.0.0.1", port), timeout=5 * mnp.SLOW)) as conn:
            hs = npr.WorkerHandshake(conn, job.cookie)
            hs.send_hello()
            hs.recv_hello(5 * mnp.SLOW)
            hs.send_auth()
            hs.recv_auth(5 * mnp.SLOW)  # raises unless the manager's proof matches
        check(main.running(), f"the main exited: {main.proc.returncode}\n{main.stderr()}")
    finally:
        main.kill()


if __name__ == "__main__":
    runner.run()
