"""The installed tree in foreign roots, under chroot (each with /proc and /dev):

* the issue's "done when": in a Debian bullseye minbase root (glibc 2.31) and in a root
  holding only a static busybox, with nothing added but the installed files;
* name resolution with no NSS module in the root: an /etc/hosts name, and a DNS name
  answered by a responder on a 198.18.x address in a network namespace of our own;
* an image whose nsswitch.conf names a module the root lacks;
* TLS: the AWS helper verifies against AWS_CA_BUNDLE, the image's CA store, or the
  bundle's own;
* a broken AWS helper bundle: exit 70, naming the file and the reason;
* the .deb installed with dpkg into a clean bookworm root, then the programs run.
"""

import os
import shutil
import socket
import struct
import subprocess
import tarfile
import threading

import containertest as ct
import netns
from agenttest import TestFailure, check, check_eq

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "BATCH_AGENT_COOKIE": ct.COOKIE}


def fresh_root(name, tarball=None):
    """roots/NAME: the minbase tarball (or the busybox root) unpacked, plus the
    installed tree. Nothing else is added."""
    root = ct.path("roots", "run-" + name)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    with tarfile.open(tarball or ct.path("roots", "busybox.tar")) as tar:
        tar.extractall(root, numeric_owner=True)
    subprocess.run(["cp", "-a", ct.path("stage") + "/.", root], check=True)
    return root


def in_root(root, argv, timeout=60, netns_name=None, env=None):
    """argv run chrooted in root, in new mount and PID namespaces with /proc and /dev
    mounted (the agent is PID 1 there, as in a container)."""
    script = ('mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && '
              'r=$1 && shift && exec chroot "$r" "$@"')
    cmd = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "/bin/sh", "-c", script, "sh", root, *argv]
    if netns_name:
        cmd = [netns.IP, "netns", "exec", netns_name, *cmd]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env or ENV, timeout=timeout * ct.SCALE)


def expect(root, argv, code, what, **kw):
    r = in_root(root, argv, **kw)
    if r.returncode != code:
        raise TestFailure("%s: exit %d, want %d\nstdout: %s\nstderr: %s" % (what, r.returncode, code, r.stdout, r.stderr))
    return r


def done_when(root):
    expect(root, [ct.AGENT, "--", "/bin/sh", "-c", "exit 3"], 3, "batch-agent -- sh -c 'exit 3'")
    r = expect(root, [ct.AGENT, "--role", "worker", "--manager", "127.0.0.1:9", "--connect-timeout", "1", "--",
                      "/bin/true"], 69, "worker with an unreachable manager")
    check("127.0.0.1:9" in r.stderr, "the 69 names the manager: %s" % r.stderr)
    r = expect(root, [ct.AWS, "--help"], 0, "batch-agent-aws --help")
    check("Usage: batch-agent-aws" in r.stdout, "batch-agent-aws printed its usage: %r" % r.stdout[:200])


def case_done_when_bullseye():
    done_when(fresh_root("bullseye", os.path.join(ct.CACHE, "bullseye-minbase.tar")))


def case_done_when_busybox():
    root = fresh_root("busybox")
    check(not os.path.exists(os.path.join(root, "lib")) and not os.path.exists(os.path.join(root, "etc")),
          "the busybox root has no /lib and no /etc")
    done_when(root)


# -------------------------------------------------------------- name resolution

def dns_answer(query, names):
    """A reply to one DNS query: A records from names, else NXDOMAIN (RFC 1035 §4.1)."""
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    labels, i = [], 12
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode("ascii").lower())
        i += 1 + query[i]
    qtype, = struct.unpack("!H", query[i + 1:i + 3])
    question = query[12:i + 5]
    address = names.get(".".join(labels))
    answers = b""
    rcode = 0 if address else 3
    if address and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode | (flags & 0x0100), 1, 1 if answers else 0, 0, 0)
    return header + question + answers


class Responder:
    """A DNS server on UDP ADDR:53 inside host 1 of net, for names; and a TCP listener
    that records each connection (the agent's dial) on ADDR:PORT."""

    def __init__(self, net, names):
        self.addr = net.addr(1)
        self.udp = net.run_in(1, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.udp.bind((self.addr, 53))
        self.tcp = net.run_in(1, lambda: socket.create_server((self.addr, 0)))
        self.port = self.tcp.getsockname()[1]
        self.names, self.queries, self.dialled = names, [], threading.Event()
        threading.Thread(target=self._serve_dns, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def _serve_dns(self):
        while True:
            try:
                query, peer = self.udp.recvfrom(512)
                self.queries.append(query)
                self.udp.sendto(dns_answer(query, self.names), peer)
            except OSError:
                return

    def _serve_tcp(self):
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            self.dialled.set()
            conn.close()

    def close(self):
        self.udp.close()
        self.tcp.close()


def resolves(root, net, responder, name):
    """The agent, as a worker in host 1's namespace, dials NAME: the listener sees it."""
    r = in_root(root, [ct.AGENT, "--role", "worker", "--manager", "%s:%d" % (name, responder.port),
                       "--connect-timeout", "1", "--", "/bin/true"], netns_name=net.hosts[1])
    if not responder.dialled.is_set():
        raise TestFailure("the agent did not reach %s (%s:%d): exit %d\n%s" % (
            name, responder.addr, responder.port, r.returncode, r.stderr))


def case_resolution_without_nss():
    try:
        net = netns.Network(1)
    except netns.Unavailable as e:
        raise TestFailure("network namespaces are needed here: %s" % e)
    with net:
        root = fresh_root("resolve")
        os.makedirs(os.path.join(root, "etc"))
        with open(os.path.join(root, "etc", "hosts"), "w") as f:
            f.write("%s manager.hosts.test\n" % net.addr(1))
        with open(os.path.join(root, "etc", "resolv.conf"), "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:2\n" % net.addr(1))
        responder = Responder(net, {"manager.dns.test": net.addr(1)})
        try:
            resolves(root, net, responder, "manager.hosts.test")
            check_eq(len(responder.queries), 0, "DNS queries for a name in /etc/hosts")
            responder.dialled.clear()
            resolves(root, net, responder, "manager.dns.test")
            check(responder.queries, "the DNS name was asked of the responder")
            # An image whose nsswitch.conf names modules it does not have (or has for
            # another libc): the agent still uses only files and dns.
            with open(os.path.join(root, "etc", "nsswitch.conf"), "w") as f:
                f.write("hosts: mymachines resolve [!UNAVAIL=return] myhostname files dns\n")
            responder.dialled.clear()
            resolves(root, net, responder, "manager.dns.test")
            r = in_root(root, [ct.AGENT, "--role", "worker", "--manager", "nowhere.dns.test:1",
                               "--connect-timeout", "0.5", "--", "/bin/true"], netns_name=net.hosts[1])
            check_eq(r.returncode, 69, "exit status for a name that does not resolve")
            check("cannot resolve nowhere.dns.test" in r.stderr, "the error names the name: %s" % r.stderr)
        finally:
            responder.close()


# -------------------------------------------------------------- TLS and the CA store

def case_tls_ca_store():
    """The bundle verifies TLS against AWS_CA_BUNDLE, else the image's store at its usual
    places, else its own copy; a fake Batch on 127.0.0.1 with a self-signed certificate."""
    import tempfile
    import fake_aws
    with tempfile.TemporaryDirectory(prefix="ba-tls-") as tmp:
        cert = fake_aws.make_cert(tmp)
        check(cert is not None, "the openssl CLI makes the test certificate (scripts/install-deps.sh installs it)")
        with fake_aws.FakeAWS(tls=cert) as fake:
            job = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f#1"
            env = dict(ENV, AWS_ACCESS_KEY_ID=fake.creds_doc["AccessKeyId"],
                       AWS_SECRET_ACCESS_KEY=fake.creds_doc["SecretAccessKey"],
                       AWS_SESSION_TOKEN=fake.creds_doc["Token"], AWS_REGION="us-east-1", AWS_BATCH_JOB_ID=job)
            argv = [ct.AWS, "job-parameters", "--endpoint-url", fake.url]
            root = fresh_root("tls")
            # No store in the image: the bundle's own (Debian's CAs), which does not
            # trust the test certificate, so verification is on.
            r = expect(root, argv, 69, "no CA store in the image", env=env)
            check("not trusted" in r.stderr, "the error says the certificate is not trusted: %s" % r.stderr)
            with open(cert[0]) as f:
                pem = f.read()
            for store in ("etc/pki/tls/certs/ca-bundle.crt", "etc/ssl/certs/ca-certificates.crt"):
                os.makedirs(os.path.dirname(os.path.join(root, store)), exist_ok=True)
                with open(os.path.join(root, store), "w") as f:
                    f.write(pem)
                r = expect(root, argv, 0, "the image's CA store /" + store, env=env)
                check(job in r.stdout, "the job's parameters came back: %s" % r.stdout)
                os.unlink(os.path.join(root, store))
            with open(os.path.join(root, "test-ca.pem"), "w") as f:
                f.write(pem)
            expect(root, argv, 0, "AWS_CA_BUNDLE", env=dict(env, AWS_CA_BUNDLE="/test-ca.pem"))
            expect(root, argv, 78, "AWS_CA_BUNDLE naming no file", env=dict(env, AWS_CA_BUNDLE="/missing.pem"))


# -------------------------------------------------------------- a broken bundle

def case_broken_bundle_exits_70():
    root = fresh_root("broken")
    lib = os.path.join(root, "usr/local/libexec/batch-agent/aws/lib")
    env = dict(ENV, AWS_BATCH_JOB_ID="0123abcd-0000-4000-8000-000000000000", AWS_REGION="us-east-1")
    argv = [ct.AGENT, "--role", "worker", "--aws-endpoint-url", "http://127.0.0.1:9", "--", "/bin/true"]
    os.unlink(os.path.join(lib, "libcurl.so.4"))
    r = expect(root, argv, 70, "agent with the bundle's libcurl missing", env=env)
    check("libcurl.so.4" in r.stderr and "batch-agent-aws" in r.stderr and "could not be loaded" in r.stderr,
          "the error names the library and the helper: %s" % r.stderr)
    os.unlink(os.path.join(lib, "ld.so"))
    r = expect(root, argv, 70, "agent with the bundle's loader missing", env=env)
    check("aws/lib/ld.so" in r.stderr and "No such file" in r.stderr,
          "the error names the loader and the reason: %s" % r.stderr)
    os.unlink(os.path.join(root, "usr/local/libexec/batch-agent/batch-agent-aws"))
    os.chmod(os.path.join(root, "usr/local/libexec/batch-agent/aws/batch-agent-aws"), 0o644)
    r = expect(root, argv, 70, "agent with batch-agent-aws missing", env=env)
    check("batch-agent-aws is missing" in r.stderr, "the error names the helper: %s" % r.stderr)


# -------------------------------------------------------------- the .deb

def case_deb_installs_on_clean_bookworm():
    debs = [n for n in os.listdir(ct.path("packages")) if n.endswith(".deb")]
    check_eq(len(debs), 1, "one .deb made by CPack")
    root = ct.path("roots", "run-deb")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    with tarfile.open(os.path.join(ct.CACHE, "bookworm-minbase.tar")) as tar:
        tar.extractall(root, numeric_owner=True)
    shutil.copy(ct.path("packages", debs[0]), os.path.join(root, "tmp", debs[0]))
    expect(root, ["dpkg", "--install", "/tmp/" + debs[0]], 0, "dpkg --install on a clean bookworm root")
    depends = expect(root, ["dpkg-query", "-W", "-f", "${Depends}", "batch-agent"], 0, "dpkg-query").stdout
    print("# .deb Depends: %r" % depends)
    done_when(root)


if __name__ == "__main__":
    ct.require_podman()
    ct.run_cases([
        ("done_when[bullseye]", case_done_when_bullseye),
        ("done_when[busybox]", case_done_when_busybox),
        ("resolution_without_nss", case_resolution_without_nss),
        ("tls_ca_store", case_tls_ca_store),
        ("broken_bundle_exits_70", case_broken_bundle_exits_70),
        ("deb_installs_on_clean_bookworm", case_deb_installs_on_clean_bookworm),
    ])
