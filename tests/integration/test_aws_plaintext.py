"""Credentials never cross a network in clear text: a Batch endpoint over plain http to
anything but a loopback address is refused (78, naming the URL) before any request, by
batch-agent-aws and by batch-agent's --aws-endpoint-url. The endpoint is a listener on
a 198.18.x host in a network namespace of our own, which must see no connection at all;
an https:// URL to the same listener, which does connect, shows the path is open."""

import os
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import fake_aws  # noqa: E402
import netns  # noqa: E402
from fake_aws import check  # noqa: E402

cases, case = fake_aws.case_list()
JOB = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f#0"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"
AGENT = os.environ.get("BATCH_AGENT_BIN")


class Listener:
    """A TCP listener on host 1 that counts connections and keeps what they sent."""

    def __init__(self, net):
        self.srv = net.run_in(1, lambda: socket.create_server((net.addr(1), 0)))
        self.port = self.srv.getsockname()[1]
        self.accepted = 0
        self.received = b""
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            conn.close()
            with self.cond:
                self.accepted += 1
                self.received += data
                self.cond.notify_all()

    def wait_for_connection(self, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: self.accepted > 0, timeout * fake_aws.slowdown())


def env(**extra):
    e = fake_aws.base_env()
    e.update({"AWS_REGION": "us-east-1", "AWS_BATCH_JOB_ID": JOB, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLEPLAIN0001",
              "AWS_SECRET_ACCESS_KEY": "plainSecretExample/0123456789abcdefghijk", "AWS_SESSION_TOKEN": TOKEN})
    e.pop("BATCH_AGENT_AWS_ENDPOINT_URL", None)
    e.update(extra)
    return e


def run_in(net, argv, environment):
    return subprocess.run(net.wrap(2, [*fake_aws.wrapper(), *argv]), env=environment, capture_output=True,
                          text=True, timeout=60 * fake_aws.slowdown())


def network():
    try:
        netns.check_available()
    except netns.Unavailable as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    return netns.Network(2)


@case
def plain_http_endpoint_refused_before_any_request():
    with network() as net:
        lis = Listener(net)
        url = f"http://{net.addr(1)}:{lis.port}"
        tries = [(["--endpoint-url", url], {}, "--endpoint-url"),
                 ([], {"BATCH_AGENT_AWS_ENDPOINT_URL": url}, "BATCH_AGENT_AWS_ENDPOINT_URL"),
                 ([], {"AWS_ENDPOINT_URL_BATCH": url}, "AWS_ENDPOINT_URL_BATCH"),
                 ([], {"AWS_ENDPOINT_URL": url + "/"}, "AWS_ENDPOINT_URL"),
                 # Loopback only as the literal host: not as userinfo, not as a name.
                 (["--endpoint-url", f"http://127.0.0.1@{net.addr(1)}:{lis.port}/"], {}, "--endpoint-url"),
                 (["--endpoint-url", f"http://127.0.0.1.{net.addr(1)}:{lis.port}/"], {}, "--endpoint-url")]
        for args, extra, source in tries:
            p = run_in(net, [fake_aws.binary(), "job-parameters", *args], env(**extra))
            what = f"{source} {args or extra}"
            check(p.returncode == 78, f"{what}: exit {p.returncode}, expected 78; stderr:\n{p.stderr}")
            check(source in p.stderr and "clear text" in p.stderr and str(lis.port) in p.stderr,
                  f"{what}: the error does not name the URL:\n{p.stderr}")
            check(TOKEN not in p.stderr, f"{what}: the session token in the log")
        if AGENT:
            p = run_in(net, [AGENT, "--aws-endpoint-url", url, "--manager", "Ref::manager", "--", "true"], env())
            check(p.returncode == 78, f"batch-agent: exit {p.returncode}, expected 78; stderr:\n{p.stderr}")
            check("--aws-endpoint-url" in p.stderr and url in p.stderr,
                  f"batch-agent: the error does not name the URL:\n{p.stderr}")
            # Named by its host and port only: userinfo, path and query may hold secrets.
            secret_url = f"http://user:s3cr3t-pw@{net.addr(1)}:{lis.port}/p-s3cr3t?X-Amz-Security-Token=s3cr3t#s3cr3t"
            p = run_in(net, [AGENT, "--aws-endpoint-url", secret_url, "--manager", "Ref::manager", "--", "true"], env())
            check(p.returncode == 78, f"batch-agent: exit {p.returncode}, expected 78; stderr:\n{p.stderr}")
            check(url in p.stderr and "s3cr3t" not in p.stderr,
                  f"batch-agent: the error must name {url} and nothing else of the URL:\n{p.stderr}")
        check(lis.accepted == 0, f"the endpoint saw {lis.accepted} connection(s): {lis.received!r}")

        # The control: the same listener over https is reached (and its TLS fails).
        p = run_in(net, [fake_aws.binary(), "--max-attempts", "1", "--timeout", "3", "job-parameters",
                         "--endpoint-url", f"https://{net.addr(1)}:{lis.port}"], env())
        check(lis.wait_for_connection(10), f"https was not tried either (exit {p.returncode}):\n{p.stderr}")
        check(TOKEN.encode() not in lis.received, "the token crossed in clear text over https")
        check(p.returncode != 0, f"a TLS handshake with a plain listener succeeded:\n{p.stderr}")


if __name__ == "__main__":
    sys.exit(fake_aws.main_cases(cases))
