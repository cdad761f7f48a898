"""Fake AWS endpoints for batch-agent-aws tests, on 127.0.0.1 only.

Every answer is built from the samples in ../shared/aws-reference (see SOURCES.txt
there): ECS task metadata v4 (awsvpc, host, bridge), the container credentials endpoint,
Batch DescribeJobs (captured MNP and array responses) and IMDSv2 (token, Spot
instance-action, rebalance, 404 page).

One FakeAWS serves every route on one port:
  GET  /v4/<id>, /v4/<id>/task               ECS task metadata (fake.tmds_mode)
  GET  /v2/credentials/<id>                  container credentials (fake.creds_auth)
  POST /v1/describejobs                      Batch, SigV4 verified by recomputing it here
  PUT  /latest/api/token, GET /latest/meta-data/...   IMDSv2

Misbehaviours per route: fake.plan[route] is a list consumed one per request (then
normal answers); fake.always[route] applies to every request. A behaviour is one of
  "ok", "slow" (sleep fake.slow_seconds, then answer), "hang" (never answer),
  "truncated" (Content-Length larger than the body, then close), "huge" (2 MiB body
  with Content-Length), "huge-chunked" (2 MiB chunked, no length), "nonjson", "trailing" (the normal JSON
  answer with more after it),
  "wrongtypes" (fake.wrongtypes[route](doc) mutates the normal JSON answer),
  "throttle" (400 + x-amzn-ErrorType ThrottlingException), "throttle429",
  ("status", code[, body[, headers]]).
Routes: describejobs, tmds-container, tmds-task, creds, imds-token, imds-action,
imds-rebalance.

The module also has the small harness the test_aws_*.py scripts share: run the binary
(BATCH_AGENT_AWS_BIN, optional BATCH_AGENT_WRAPPER prefix) with a clean environment in
which every default AWS address is replaced by a dead loopback port, and a case runner
that ends with "N passed, N failed".
"""

import copy
import datetime
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse


# ---- reference samples ------------------------------------------------------------

def reference_dir():
    cand = os.environ.get("BATCH_AGENT_AWS_REFERENCE")
    if not cand:
        src = os.environ.get("BATCH_AGENT_SOURCE_DIR") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..")
        cand = os.path.join(src, "..", "shared", "aws-reference")
    cand = os.path.abspath(cand)
    if not os.path.isfile(os.path.join(cand, "SOURCES.txt")):
        raise RuntimeError("aws-reference samples not found at %s "
                           "(set BATCH_AGENT_AWS_REFERENCE)" % cand)
    return cand


def sample_text(rel):
    with open(os.path.join(reference_dir(), rel), encoding="utf-8") as f:
        return f.read()


def sample(rel):
    return json.loads(sample_text(rel))


# ---- SigV4, recomputed independently of libcurl -------------------------------------

def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def _uri_encode(s, keep_slash):
    safe = "-_.~" + ("/" if keep_slash else "")
    return urllib.parse.quote(s, safe=safe)


def canonical_request(method, path, query, headers, signed, body):
    """headers: list of (name, value) as received; repeated names are joined with ','."""
    merged = {}
    for name, value in headers:
        merged.setdefault(name.lower(), []).append(" ".join(value.strip().split()))
    lines = []
    for name in signed:
        if name not in merged:
            raise ValueError("signed header %s is not in the request" % name)
        lines.append("%s:%s\n" % (name, ",".join(merged[name])))
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    cquery = "&".join("%s=%s" % (_uri_encode(k, False), _uri_encode(v, False))
                      for k, v in sorted(params))
    return "\n".join([method, _uri_encode(urllib.parse.unquote(path), True) or "/", cquery,
                      "".join(lines), ";".join(signed), hashlib.sha256(body).hexdigest()])


_AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                      r"\s*SignedHeaders=([a-z0-9;\-]+),\s*Signature=([0-9a-f]{64})$")


def verify_sigv4(method, path, query, headers, body, secrets_by_key, region=None,
                 service=None, max_skew=900):
    """Checks a request's Authorization header. secrets_by_key: access key id ->
    (secret, session token or None). Returns (ok, reason, details)."""
    details = {}
    auth = [v for n, v in headers if n.lower() == "authorization"]
    if len(auth) != 1:
        return False, "expected one Authorization header, got %d" % len(auth), details
    m = _AUTH_RE.match(auth[0])
    if not m:
        return False, "malformed Authorization header", details
    akid, date, sregion, sservice, signed, signature = m.groups()
    signed = signed.split(";")
    details.update(access_key=akid, region=sregion, service=sservice, signed_headers=signed)
    if akid not in secrets_by_key:
        return False, "unknown access key %s" % akid, details
    secret, token = secrets_by_key[akid]
    if region is not None and sregion != region:
        return False, "credential scope region %s, expected %s" % (sregion, region), details
    if service is not None and sservice != service:
        return False, "credential scope service %s, expected %s" % (sservice, service), details
    if signed != sorted(signed):
        return False, "SignedHeaders not sorted", details
    for must in ("host", "x-amz-date"):
        if must not in signed:
            return False, "%s not signed" % must, details
    got = {n.lower(): v for n, v in headers}
    amz_date = got.get("x-amz-date", "")
    if not amz_date.startswith(date):
        return False, "x-amz-date %s does not match scope date %s" % (amz_date, date), details
    if max_skew is not None:
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            return False, "bad x-amz-date %r" % amz_date, details
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > max_skew:
            return False, "x-amz-date %s too far from now" % amz_date, details
    if token:
        if got.get("x-amz-security-token") != token:
            return False, "X-Amz-Security-Token missing or wrong", details
        if "x-amz-security-token" not in signed:
            return False, "x-amz-security-token not signed", details
    try:
        creq = canonical_request(method, path, query, headers, signed, body)
    except ValueError as e:
        return False, str(e), details
    scope = "%s/%s/%s/aws4_request" % (date, sregion, sservice)
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode("utf-8")).hexdigest()])
    expect = hmac.new(signing_key(secret, date, sregion, sservice), sts.encode("utf-8"),
                      hashlib.sha256).hexdigest()
    details.update(canonical_request=creq, string_to_sign=sts, expected=expect,
                   signature=signature)
    if not hmac.compare_digest(expect, signature):
        return False, "signature mismatch", details
    return True, "ok", details


def parse_vector(text=None):
    """Part A of sigv4_vector_output.txt: inputs, canonical request, string to sign,
    signature and the headers on the wire."""
    if text is None:
        text = sample_text("sigv4_vector_output.txt")
    part = text.split("B. What a real botocore client")[0]
    v = {}
    for key in ("method", "url", "body", "access key", "secret key", "session token",
                "x-amz-date", "region/service", "body sha256"):
        m = re.search(r"^\s+%s\s+= (.*)$" % re.escape(key), part, re.M)
        v[key] = m.group(1)
    v["region"], v["service"] = [s.strip() for s in v["region/service"].split("/")]
    v["canonical_request"] = re.search(
        r"--- canonical request \(between the markers; no trailing newline\) ---\n(.*?)\n"
        r"--- end canonical request ---", part, re.S).group(1)
    v["string_to_sign"] = re.search(r"--- string to sign ---\n(.*?)\n--- end string to sign ---",
                                    part, re.S).group(1)
    v["signature"] = re.search(r"^signature = ([0-9a-f]{64})$", part, re.M).group(1)
    wire = re.search(r"--- headers on the wire \(besides Host and Content-Length\) ---\n(.*?)\n"
                     r"independent", part, re.S).group(1)
    v["wire_headers"] = [tuple(s.strip() for s in line.split(":", 1))
                         for line in wire.strip().split("\n")]
    return v


# ---- the server ----------------------------------------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, ssl.SSLError, socket.timeout, OSError)):
            return
        super().handle_error(request, client_address)


class FakeAWS:
    IMDS_TOKEN_PREFIX = "AQAEA"

    def __init__(self, tls=None):
        """tls: (certfile, keyfile) to serve https."""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.requests = []
        self.plan = {}
        self.always = {}
        self.wrongtypes = {}
        self.slow_seconds = 5.0
        # ECS task metadata
        self.tmds_prefix = "/v4/0123456789abcdef-1234567890"
        self.tmds_mode = "awsvpc"
        self.tmds_task_limits = None
        self.tmds_container_without_networks = False
        self.tmds_pause_ip = None
        # container credentials
        self.creds_path = "/v2/credentials/1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"
        self.creds_auth = None
        self.creds_doc = sample("ecs_credentials/relative_uri_response_realistic.json")
        # Batch
        self.batch_region = "us-east-1"
        self.batch_keys = {}
        self.add_key(self.creds_doc["AccessKeyId"], self.creds_doc["SecretAccessKey"],
                     self.creds_doc["Token"])
        self.batch_parameters = None
        self.batch_jobs = {}
        for f in ("single_mnp_job", "single_mnp_job_children", "single_array_job",
                  "single_array_job_children"):
            for job in sample("batch/parallelcluster_captured/batch_describe-jobs_%s.json" % f)["jobs"]:
                self.batch_jobs[job["jobId"]] = job
        self.sigv4_results = []
        # IMDS
        self.imds_tokens = {}
        self.imds_action_after = None   # polls answered 404 before the notice appears
        self.imds_action_doc = sample("imds/spot_instance-action_terminate_docs.json")
        self.imds_rebalance_after = None
        self.imds_rebalance_doc = sample("imds/rebalance_recommendation_docs.json")
        self.imds_polls = {"imds-action": 0, "imds-rebalance": 0}
        self.imds_unauthorized = 0  # 401s answered for a missing or expired token

        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    # -- setup helpers
    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    @property
    def tmds_url(self):
        return self.url + self.tmds_prefix

    @property
    def creds_url(self):
        return self.url + self.creds_path

    def add_key(self, akid, secret, token=None):
        self.batch_keys[akid] = (secret, token)

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def count(self, route):
        with self.lock:
            return sum(1 for r in self.requests if r["route"] == route)

    def routed(self, route):
        with self.lock:
            return [r for r in self.requests if r["route"] == route]

    def _behaviour(self, route):
        with self.lock:
            queue = self.plan.get(route)
            if queue:
                return queue.pop(0)
            return self.always.get(route, "ok")

    # -- documents
    def tmds_task_doc(self):
        name = {"awsvpc": "task_awsvpc_ec2_docs.json", "host": "task_host_ec2_DERIVED.json",
                "bridge": "task_bridge_ec2_DERIVED.json"}[self.tmds_mode]
        doc = sample("ecs_tmds_v4/" + name)
        if self.tmds_task_limits is not None:
            doc["Limits"] = self.tmds_task_limits
        if self.tmds_pause_ip is not None:
            for c in doc["Containers"]:
                if c.get("Type") == "CNI_PAUSE":
                    c["Networks"][0]["IPv4Addresses"] = [self.tmds_pause_ip]
        return doc

    def tmds_container_doc(self):
        # The container endpoint answers with this container's entry of /task.
        doc = next(c for c in self.tmds_task_doc()["Containers"] if c.get("Type") == "NORMAL")
        if self.tmds_container_without_networks:
            del doc["Networks"]
        return doc

    def describejobs_doc(self, ids):
        jobs = []
        for jid in ids:
            job = self.batch_jobs.get(jid)
            if job is None and ("#" in jid or ":" in jid):
                sep = "#" if "#" in jid else ":"
                suffix = jid.rsplit(sep, 1)[1]
                same = [j for j in self.batch_jobs.values() if sep in j["jobId"]]
                same.sort(key=lambda j: j["jobId"].rsplit(sep, 1)[1] != suffix)
                job = same[0] if same else None
            if job is None:
                continue
            job = copy.deepcopy(job)
            job["jobId"] = jid
            if self.batch_parameters is not None:
                job["parameters"] = self.batch_parameters
            jobs.append(job)
        return {"jobs": jobs}

    # -- the handler
    def _handler_class(fake):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "FakeAWS"

            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", headers=(), ctype="application/json"):
                if isinstance(body, str):
                    body = body.encode("utf-8")
                self.send_response(code)
                if ctype:
                    self.send_header("Content-Type", ctype)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code, doc, headers=()):
                self._send(code, json.dumps(doc), headers)

            def do_GET(self):
                self._dispatch("GET")

            def do_PUT(self):
                self._dispatch("PUT")

            def do_POST(self):
                self._dispatch("POST")

            def _dispatch(self, method):
                parsed = urllib.parse.urlsplit(self.path)
                path = parsed.path
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                route = None
                if method == "POST" and path == "/v1/describejobs":
                    route = "describejobs"
                elif method == "GET" and path == fake.tmds_prefix:
                    route = "tmds-container"
                elif method == "GET" and path == fake.tmds_prefix + "/task":
                    route = "tmds-task"
                elif method == "GET" and path.startswith("/v2/credentials"):
                    route = "creds"
                elif method == "PUT" and path == "/latest/api/token":
                    route = "imds-token"
                elif method == "GET" and path == "/latest/meta-data/spot/instance-action":
                    route = "imds-action"
                elif method == "GET" and path == "/latest/meta-data/events/recommendations/rebalance":
                    route = "imds-rebalance"
                record = {"method": method, "path": path, "query": parsed.query,
                          "headers": list(self.headers.items()), "body": body,
                          "route": route, "time": time.monotonic()}
                with fake.lock:
                    fake.requests.append(record)
                if route is None:
                    self._send(404, sample_text("imds/404_not_found_body.html"), ctype="text/html")
                    return
                behaviour = fake._behaviour(route)
                if self._misbehave(route, behaviour, method, parsed, body, record):
                    return
                getattr(self, "_route_" + route.replace("-", "_"))(method, parsed, body, record)

            def _normal_doc(self, route, method, parsed, body, record):
                if route == "describejobs":
                    return fake.describejobs_doc(json.loads(body or b"{}").get("jobs", []))
                if route == "tmds-task":
                    return fake.tmds_task_doc()
                if route == "tmds-container":
                    return fake.tmds_container_doc()
                if route == "creds":
                    return copy.deepcopy(fake.creds_doc)
                if route == "imds-action":
                    return fake.imds_action_doc
                if route == "imds-rebalance":
                    return fake.imds_rebalance_doc
                return {"token": "x"}

            def _misbehave(self, route, b, method, parsed, body, record):
                if b == "ok":
                    return False
                if b == "slow":
                    fake.stop.wait(fake.slow_seconds)
                    return False
                if b == "hang":
                    fake.stop.wait(60)
                    self.close_connection = True
                    return True
                if b == "truncated":
                    data = json.dumps(self._normal_doc(route, method, parsed, body, record)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data) + 100))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return True
                if b in ("huge", "huge-chunked"):
                    data = json.dumps({"jobs": [], "padding": "x" * (2 << 20)}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    if b == "huge":
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        try:
                            self.wfile.write(data)
                        except OSError:
                            pass
                    else:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        try:
                            for i in range(0, len(data), 65536):
                                chunk = data[i:i + 65536]
                                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.write(b"0\r\n\r\n")
                        except OSError:
                            pass
                    self.close_connection = True
                    return True
                if b == "nonjson":
                    self._send(200, "<html><body>Service Unavailable</body></html>", ctype="text/html")
                    return True
                if b == "trailing":
                    doc = self._normal_doc(route, method, parsed, body, record)
                    self._send(200, json.dumps(doc) + ' {"more": 1}')
                    return True
                if b == "wrongtypes":
                    doc = self._normal_doc(route, method, parsed, body, record)
                    # The function edits the copy in place or returns a new document.
                    doc = copy.deepcopy(doc)
                    mutated = fake.wrongtypes[route](doc)
                    doc = doc if mutated is None else mutated
                    self._json(200, doc)
                    return True
                if b == "throttle":
                    self._json(400, {"message": "Rate exceeded"},
                               [("x-amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/")])
                    return True
                if b == "throttle429":
                    self._json(429, {"__type": "TooManyRequestsException", "message": "Too Many Requests"})
                    return True
                if isinstance(b, tuple) and b[0] == "status":
                    code = b[1]
                    payload = b[2] if len(b) > 2 else ""
                    headers = b[3] if len(b) > 3 else ()
                    if isinstance(payload, (dict, list)):
                        payload = json.dumps(payload)
                    self._send(code, payload, headers)
                    return True
                raise ValueError("unknown behaviour %r" % (b,))

            def _route_describejobs(self, method, parsed, body, record):
                ok, reason, details = verify_sigv4(method, parsed.path, parsed.query,
                                                   record["headers"], body, fake.batch_keys,
                                                   region=fake.batch_region, service="batch")
                with fake.lock:
                    fake.sigv4_results.append((ok, reason, details))
                if not ok:
                    self._json(403, {"message": "The request signature we calculated does not "
                                                "match the signature you provided. (%s)" % reason},
                               [("x-amzn-ErrorType", "InvalidSignatureException")])
                    return
                ctype = self.headers.get("Content-Type", "")
                if ctype != "application/json":
                    self._json(400, {"message": "bad Content-Type %s" % ctype},
                               [("x-amzn-ErrorType", "ClientException")])
                    return
                self._json(200, self._normal_doc("describejobs", method, parsed, body, record))

            def _route_tmds_task(self, method, parsed, body, record):
                self._json(200, fake.tmds_task_doc())

            def _route_tmds_container(self, method, parsed, body, record):
                self._json(200, fake.tmds_container_doc())

            def _route_creds(self, method, parsed, body, record):
                if parsed.path != fake.creds_path:
                    self._send(400, sample_text("ecs_credentials/error_400_not_found.json"))
                    return
                if fake.creds_auth is not None and self.headers.get("Authorization") != fake.creds_auth:
                    self._send(401, "", ctype=None)
                    return
                self._json(200, fake.creds_doc)

            def _route_imds_token(self, method, parsed, body, record):
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= 21600 \
                        or self.headers.get("X-Forwarded-For"):
                    self._send(400, sample_text("imds/400_bad_request_body_aemm.html"), ctype="text/html")
                    return
                token = fake.IMDS_TOKEN_PREFIX + secrets.token_urlsafe(40)
                with fake.lock:
                    fake.imds_tokens[token] = time.monotonic() + int(ttl)
                self._send(200, token, [("X-aws-ec2-metadata-token-ttl-seconds", ttl)], ctype="text/plain")

            def _imds_authorized(self):
                token = self.headers.get("X-aws-ec2-metadata-token")
                with fake.lock:
                    expiry = fake.imds_tokens.get(token)
                if expiry is None or expiry < time.monotonic():
                    with fake.lock:
                        fake.imds_unauthorized += 1
                    self._send(401, sample_text("imds/401_unauthorized_body_aemm.html"), ctype="text/html")
                    return False
                return True

            def _imds_notice(self, route, after, doc):
                if not self._imds_authorized():
                    return
                with fake.lock:
                    fake.imds_polls[route] += 1
                    polls = fake.imds_polls[route]
                if after is None or polls <= after:
                    self._send(404, sample_text("imds/404_not_found_body.html"), ctype="text/html")
                    return
                self._send(200, json.dumps(doc), ctype="text/plain")

            def _route_imds_action(self, method, parsed, body, record):
                self._imds_notice("imds-action", fake.imds_action_after, fake.imds_action_doc)

            def _route_imds_rebalance(self, method, parsed, body, record):
                self._imds_notice("imds-rebalance", fake.imds_rebalance_after, fake.imds_rebalance_doc)

        return Handler


def make_cert(directory):
    """A throwaway self-signed certificate for 127.0.0.1 (openssl CLI); (cert, key) or
    None when openssl is absent."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    except (FileNotFoundError, subprocess.CalledProcessError):
        return None
    return cert, key


# ---- test harness ---------------------------------------------------------------------

def dead_port():
    """A loopback port with nothing listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wrapper():
    return shlex.split(os.environ.get("BATCH_AGENT_WRAPPER", ""))


def slowdown():
    """Time limits are multiplied by this under a wrapper (valgrind)."""
    return float(os.environ.get("BATCH_AGENT_TIMEOUT_SCALE") or (6.0 if wrapper() else 1.0))


def base_env():
    """No AWS settings from the caller, no proxies, and every default address moved to a
    dead loopback port (Batch, STS, IMDS), so nothing can reach 169.254.x.x or AWS."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}
    for k in ("BATCH_AGENT_WRAPPER", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TMPDIR"):
        if k in os.environ:
            env[k] = os.environ[k]
    dead = "http://127.0.0.1:%d" % dead_port()
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = dead
    env["BATCH_AGENT_AWS_ENDPOINT_URL"] = dead
    env["AWS_ENDPOINT_URL_STS"] = dead
    return env


class Result:
    def __init__(self, code, out, err, elapsed):
        self.code, self.out, self.err, self.elapsed = code, out, err, elapsed

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "exit %s after %.2fs\nstdout: %s\nstderr: %s" % (self.code, self.elapsed,
                                                               self.out, self.err)


def binary():
    b = os.environ.get("BATCH_AGENT_AWS_BIN")
    if not b:
        raise RuntimeError("BATCH_AGENT_AWS_BIN is not set")
    return b


def run(args, env=None, timeout=60, unset=()):
    e = base_env()
    e.update(env or {})
    for k in unset:
        e.pop(k, None)
    start = time.monotonic()
    p = subprocess.run(wrapper() + [binary()] + list(args), env=e, capture_output=True,
                       text=True, timeout=timeout * slowdown())
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - start)


def start(args, env=None):
    e = base_env()
    e.update(env or {})
    return subprocess.Popen(wrapper() + [binary()] + list(args), env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class LineReader:
    """Collects a process's stdout lines in a thread."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + timeout * slowdown()
        with self.cond:
            while len(self.lines) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


def check(cond, message, result=None):
    if not cond:
        raise AssertionError(message + ("\n" + repr(result) if result is not None else ""))


def within(result, seconds):
    """The run ended in time; under a wrapper, slower and with valgrind's start-up cost."""
    limit = seconds * slowdown() + (15.0 if wrapper() else 0.0)
    check(result.elapsed <= limit, "took %.2fs, limit %.2fs" % (result.elapsed, limit), result)


def main_cases(cases):
    """Runs cases [(name, fn)], prints one line per case and the summary; exit status."""
    passed = failed = 0
    only = os.environ.get("AWS_TEST_ONLY")
    for name, fn in cases:
        if only and only not in name:
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception:
            failed += 1
            print("FAIL %s (%.1fs)" % (name, time.monotonic() - t0))
            print("    " + traceback.format_exc().replace("\n", "\n    "))
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (name, time.monotonic() - t0))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def case_list():
    """A decorator that records test functions in order: cases, case = case_list()."""
    cases = []

    def case(fn):
        cases.append((fn.__name__, fn))
        return fn
    return cases, case


if __name__ == "__main__":
    # Manual use: serve the fakes until interrupted.
    f = FakeAWS()
    print("fake AWS at %s (tmds %s, creds %s)" % (f.url, f.tmds_url, f.creds_url), flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    f.close()
