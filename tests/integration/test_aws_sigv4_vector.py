"""The fake Batch endpoint's SigV4 verifier against the fixed vector of
../shared/aws-reference/sigv4_vector_output.txt (botocore 1.29.27, part A), and against
tampered copies of it. The C side (libcurl as http.c drives it) is checked against the
same vector by the unit test test_aws_sigv4."""

import hashlib
import sys
import urllib.parse

import fake_aws
from fake_aws import check

cases, case = fake_aws.case_list()
V = fake_aws.parse_vector()


def vector_request():
    url = urllib.parse.urlsplit(V["url"])
    headers = [("Host", url.hostname), ("Content-Length", str(len(V["body"])))]
    headers += V["wire_headers"]
    return url, headers, V["body"].encode()


def keys():
    return {V["access key"]: (V["secret key"], V["session token"])}


@case
def vector_inputs_consistent():
    check(hashlib.sha256(V["body"].encode()).hexdigest() == V["body sha256"], "body sha256")
    check(V["signature"] == "d9be1994f88faba471b91571c15aeefffe280b386be034774399098bc838ac61",
          "vector signature as documented in LIBCURL_SIGV4_NOTES.md")


@case
def verifier_reproduces_canonical_request_and_signature():
    url, headers, body = vector_request()
    ok, reason, d = fake_aws.verify_sigv4(V["method"], url.path, url.query, headers, body, keys(),
                                          region=V["region"], service=V["service"], max_skew=None)
    check(ok, "verifier rejected the vector: %s" % reason)
    check(d["canonical_request"] == V["canonical_request"],
          "canonical request differs:\n%s\n---\n%s" % (d["canonical_request"], V["canonical_request"]))
    check(d["string_to_sign"] == V["string_to_sign"], "string to sign differs")
    check(d["expected"] == V["signature"], "signature differs")


@case
def verifier_rejects_tampered_body():
    url, headers, body = vector_request()
    ok, reason, _ = fake_aws.verify_sigv4(V["method"], url.path, url.query, headers,
                                          body.replace(b"abc", b"abd"), keys(), max_skew=None)
    check(not ok and reason == "signature mismatch", reason)


@case
def verifier_rejects_wrong_secret():
    url, headers, body = vector_request()
    bad = {V["access key"]: ("x" + V["secret key"][1:], V["session token"])}
    ok, reason, _ = fake_aws.verify_sigv4(V["method"], url.path, url.query, headers, body, bad,
                                          max_skew=None)
    check(not ok and reason == "signature mismatch", reason)


@case
def verifier_rejects_wrong_scope_and_token():
    url, headers, body = vector_request()
    ok, reason, _ = fake_aws.verify_sigv4(V["method"], url.path, url.query, headers, body, keys(),
                                          region="eu-west-1", max_skew=None)
    check(not ok and "region" in reason, reason)
    other = {V["access key"]: (V["secret key"], "another-token")}
    ok, reason, _ = fake_aws.verify_sigv4(V["method"], url.path, url.query, headers, body, other,
                                          max_skew=None)
    check(not ok and "Security-Token" in reason, reason)


@case
def verifier_rejects_signed_header_missing_from_request():
    # libcurl 7.88.1 bug: an "Expect:" entry is signed but not sent.
    url, headers, body = vector_request()
    dropped = [h for h in headers if h[0].lower() != "content-type"]
    ok, reason, _ = fake_aws.verify_sigv4(V["method"], url.path, url.query, dropped, body, keys(),
                                          max_skew=None)
    check(not ok and "content-type" in reason, reason)


@case
def verifier_rejects_stale_date():
    url, headers, body = vector_request()
    # The vector is dated 2026-11-21T12:00:00Z; allow 1 s of skew.
    ok, reason, _ = fake_aws.verify_sigv4(V["method"], url.path, url.query, headers, body, keys(),
                                          max_skew=1)
    check(not ok and "too far" in reason, reason)


if __name__ == "__main__":
    sys.exit(fake_aws.main_cases(cases))
