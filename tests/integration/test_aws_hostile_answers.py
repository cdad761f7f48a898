"""batch-agent-aws against endpoints that do not speak HTTP, or send headers no AWS
endpoint sends (issue 13): each is a bad answer, exit 76, at once, with a message that
says what came back, never 78 (bad configuration) or 69 (out of memory)."""

import socket
import sys
import threading

import fake_aws
from fake_aws import check, within

cases, case = fake_aws.case_list()


class RawServer:
    """A loopback TCP server that reads the request, sends `answer` and closes."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def job_parameters(url):
    env = {"AWS_ACCESS_KEY_ID": "AKIDHOSTILE", "AWS_SECRET_ACCESS_KEY": "hostile-secret",
           "AWS_REGION": "us-east-1", "AWS_BATCH_JOB_ID": "3286a19c-68a9-47c9-8000-427d23ffc7ca:1"}
    return fake_aws.run(["job-parameters", "--endpoint-url", url], env)


def expect_bad_answer(answer, words):
    server = RawServer(answer)
    try:
        r = job_parameters(server.url)
        check(r.code == 76, "exit 76", r)
        check(words in r.err and "DescribeJobs" in r.err, "names the request and says %r" % words, r)
        check(server.connections == 1, "not retried (%d connections)" % server.connections, r)
        within(r, 10)
        check("hostile-secret" not in r.err, "no secret in the message", r)
    finally:
        server.close()


@case
def ssh_banner():
    expect_bad_answer(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "not HTTP")


@case
def plain_text():
    expect_bad_answer(b"hello, this is not a web server\n", "not HTTP")


@case
def binary_bytes():
    expect_bad_answer(bytes(range(256)) * 4, "not HTTP")


@case
def one_header_line_over_100_kib():
    expect_bad_answer(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (150 * 1024) + b"\r\n\r\n{}",
                      "headers larger than 64 KiB")


@case
def many_headers_over_64_kib():
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"b" * 200) for i in range(400))
    expect_bad_answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + headers +
                      b"Content-Length: 2\r\n\r\n{}", "headers larger than 64 KiB")


if __name__ == "__main__":
    sys.exit(fake_aws.main_cases(cases))
