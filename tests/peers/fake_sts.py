"""A fake AWS STS on 127.0.0.1 for AssumeRoleWithWebIdentity, built from botocore's sts
model (2011-06-15, Debian python3-botocore) and the rules botocore applies to the call.

Standard library plus Debian's python3-botocore; run with /usr/bin/python3.

What it speaks: POST / (the model's http.requestUri), a query-protocol form body.
Every request, in this order:
  1. must be unsigned, as botocore's AssumeRoleWithWebIdentityCredentialFetcher sends it
     (signature_version=UNSIGNED): no Authorization, X-Amz-Security-Token or X-Amz-Date
     header -> otherwise 400 InvalidParameterValue, kind "signed";
  2. Content-Type application/x-www-form-urlencoded and Accept application/json (STS
     answers XML otherwise; this fake only knows the JSON form) -> 400, kind "format";
  3. the form body, decoded strictly (every name once), must hold
     Action=AssumeRoleWithWebIdentity, Version=2011-06-15, and the rest must pass
     botocore.validate.ParamValidator against the model's input shape
     AssumeRoleWithWebIdentityRequest (required RoleArn, RoleSessionName,
     WebIdentityToken; lengths, DurationSeconds range; ...) and the model's documented
     RoleSessionName pattern -> 400 ValidationError, kind "validation";
  4. may get an injected error (fail_next), kind "injected";
  5. the token: fake.tokens maps each known token to the role ARNs it may assume.
     A token in fake.expired -> 400 ExpiredTokenException; unknown -> 400
     InvalidIdentityToken; known but not for this RoleArn -> 403 AccessDenied.
Errors are answered as STS does in JSON (status from the model's error shape):
  {"Error": {"Type": "Sender", "Code": CODE, "Message": MESSAGE}, "RequestId": UUID}
A success is the model's output shape AssumeRoleWithWebIdentityResponse (checked with
botocore's validator against the model before it is sent), wrapped as the JSON
answer is, with Expiration as seconds since the epoch in Java's scientific notation:
  {"AssumeRoleWithWebIdentityResponse": {"AssumeRoleWithWebIdentityResult": {...},
   "ResponseMetadata": {"RequestId": UUID}}}
(see agent/aws/sts.c for the evidence of that format).

API:
  fake = FakeSTS(tokens=None)         tokens: {token: [role ARN, ...]}
  fake.url, fake.port
  fake.issued                         the credentials every success hands out:
                                      {"AccessKeyId", "SecretAccessKey", "SessionToken"}
  fake.expired                        a set of tokens answered ExpiredTokenException
  fake.mutate = fn(text) -> text      rewrites each success answer (bad-answer tests)
  fake.fail_next(status, code, message, count=1)
  fake.hold = threading.Event()       when set by the test: each request waits, after
                                      it is recorded in fake.arrived, until
                                      fake.release is set (bounded by 30 s * scale)
  fake.requests   [{"params": {...}, "headers": {lower-case: value}, "body": bytes}]
                  (every request that passed steps 1-3)
  fake.errors     [{"kind", "status", "code", "message"}]
  fake.wait_for(predicate, timeout=10)
  fake.stop()  (also on leaving "with FakeSTS(...) as fake:")
"""

import datetime
import http.server
import json
import os
import re
import secrets
import shlex
import string
import sys
import threading
import time
import urllib.parse
import uuid

import botocore.session
import botocore.validate

SCALE = float(os.environ.get("BATCH_AGENT_TIMEOUT_SCALE")
              or (10 if shlex.split(os.environ.get("BATCH_AGENT_WRAPPER", "")) else 1))
ACCOUNT = "123456789012"
FORM = "application/x-www-form-urlencoded"
# roleSessionNameType's pattern, which botocore's validator does not apply.
SESSION_NAME_RE = re.compile(r"^[\w+=,.@-]*$", re.ASCII)


def service_model():
    return botocore.session.get_session().get_service_model("sts")


def java_double(value):
    """How STS (Java) writes a double in JSON: 1.514869445E9."""
    mantissa, exponent = ("%.15E" % value).split("E")
    mantissa = mantissa.rstrip("0")
    if mantissa.endswith("."):
        mantissa += "0"
    return "%sE%d" % (mantissa, int(exponent))


def _random(alphabet, n):
    return "".join(secrets.choice(alphabet) for _ in range(n))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class FakeSTS:
    def __init__(self, tokens=None):
        self.tokens = dict(tokens or {})
        self.expired = set()
        self.mutate = None
        self.requests = []
        self.errors = []
        self.arrived = threading.Event()
        self.hold = threading.Event()
        self.release = threading.Event()
        self._inject = []
        self._cond = threading.Condition()
        self._validator = botocore.validate.ParamValidator()
        model = service_model()
        self._op = model.operation_model("AssumeRoleWithWebIdentity")
        self._error_status = {}
        for shape in self._op.error_shapes:
            err = shape.metadata["error"]
            self._error_status[err["code"]] = err["httpStatusCode"]
        self.issued = {
            "AccessKeyId": "ASIA" + _random(string.ascii_uppercase + string.digits, 16),
            "SecretAccessKey": _random(string.ascii_letters + string.digits + "/+", 40),
            "SessionToken": "IQoJb3JpZ2luX2VjE" + _random(string.ascii_letters + string.digits + "/+", 300),
        }
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, status, code, message, count=1):
        with self._cond:
            self._inject.extend([(status, code, message)] * count)

    def wait_for(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout * SCALE
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("fake STS: condition not met; requests %d, errors %r"
                                       % (len(self.requests), self.errors))
                self._cond.wait(left)

    # -- what it answers

    def _error(self, kind, status, code, message):
        with self._cond:
            self.errors.append({"kind": kind, "status": status, "code": code, "message": message})
            self._cond.notify_all()
        return status, {"Error": {"Type": "Sender", "Code": code, "Message": message},
                        "RequestId": str(uuid.uuid4())}

    def _model_error(self, code, message):
        return self._error("refused", self._error_status.get(code, 400), code, message)

    def _params(self, headers, body):
        """Steps 1-3: the validated parameters, or an error answer."""
        for name in ("authorization", "x-amz-security-token", "x-amz-date"):
            if name in headers:
                return None, self._error("signed", 400, "InvalidParameterValue",
                                         "AssumeRoleWithWebIdentity is sent unsigned; got %s" % name)
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != FORM or headers.get("accept", "").lower() != "application/json":
            return None, self._error("format", 400, "InvalidParameterValue",
                                     "need Content-Type %s and Accept application/json, got %r / %r"
                                     % (FORM, ctype, headers.get("accept")))
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                           strict_parsing=True, errors="strict")
        except (UnicodeDecodeError, ValueError) as e:
            return None, self._error("validation", 400, "ValidationError", "bad form body: %s" % e)
        params = dict(pairs)
        if len(params) != len(pairs):
            return None, self._error("validation", 400, "ValidationError", "a parameter is repeated")
        action, version = params.pop("Action", None), params.pop("Version", None)
        if action != "AssumeRoleWithWebIdentity" or version != self._op.service_model.api_version:
            return None, self._error("validation", 400, "ValidationError",
                                     "Action %r / Version %r" % (action, version))
        if "DurationSeconds" in params and params["DurationSeconds"].isdigit():
            params["DurationSeconds"] = int(params["DurationSeconds"])
        report = self._validator.validate(params, self._op.input_shape)
        if report.has_errors():
            return None, self._error("validation", 400, "ValidationError", report.generate_report())
        if not SESSION_NAME_RE.match(params["RoleSessionName"]):
            return None, self._error("validation", 400, "ValidationError",
                                     "RoleSessionName %r does not match [\\w+=,.@-]*" % params["RoleSessionName"])
        return params, None

    def _result(self, params):
        """The model's output shape, validated, then the JSON answer's text."""
        role = params["RoleArn"]
        name = role.split("/")[-1]
        session = params["RoleSessionName"]
        expires = time.time() + params.get("DurationSeconds", 3600)
        result = {
            "Credentials": dict(self.issued, Expiration=datetime.datetime.fromtimestamp(
                expires, datetime.timezone.utc)),
            "SubjectFromWebIdentityToken": "system:serviceaccount:default:batch-agent",
            "AssumedRoleUser": {"Arn": "arn:aws:sts::%s:assumed-role/%s/%s" % (ACCOUNT, name, session),
                                "AssumedRoleId": "AROA%s:%s" % (_random(string.ascii_uppercase, 17), session)},
            "Provider": "arn:aws:iam::%s:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE" % ACCOUNT,
            "Audience": "sts.amazonaws.com",
        }
        report = self._validator.validate(result, self._op.output_shape)
        if report.has_errors():
            raise AssertionError("fake STS answer does not fit the model: " + report.generate_report())
        result["Credentials"]["Expiration"] = "@EXPIRATION@"
        doc = {"AssumeRoleWithWebIdentityResponse": {"AssumeRoleWithWebIdentityResult": result,
                                                     "ResponseMetadata": {"RequestId": str(uuid.uuid4())}}}
        return json.dumps(doc).replace('"@EXPIRATION@"', java_double(expires))

    def _answer(self, headers, body):
        params, error = self._params(headers, body)
        if error:
            return error
        with self._cond:
            self.requests.append({"params": params, "headers": headers, "body": body})
            self._cond.notify_all()
            injected = self._inject.pop(0) if self._inject else None
        self.arrived.set()
        if self.hold.is_set():
            self.release.wait(30 * SCALE)
        if injected:
            return self._error("injected", *injected)
        token = params["WebIdentityToken"]
        if token in self.expired:
            return self._model_error("ExpiredTokenException",
                                     "Token expired: current date/time %d must be before the "
                                     "expiration date/time %d" % (time.time(), time.time() - 60))
        if token not in self.tokens:
            return self._model_error("InvalidIdentityToken", "Couldn't retrieve verification key "
                                     "from your identity provider,  please reference "
                                     "AssumeRoleWithWebIdentity documentation for requirements")
        if params["RoleArn"] not in self.tokens[token]:
            return self._error("refused", 403, "AccessDenied",
                               "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        text = self._result(params)
        return 200, self.mutate(text) if self.mutate else text

    def _handler_class(fake):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {n.lower(): v for n, v in self.headers.items()}
                if self.path != self._route():
                    status, doc = fake._error("route", 404, "UnknownOperation", "no operation at %s" % self.path)
                else:
                    status, doc = fake._answer(headers, body)
                data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                return fake._op.http["requestUri"]

        return Handler
