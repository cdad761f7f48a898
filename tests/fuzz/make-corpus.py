#!/usr/bin/python3
"""Writes the fuzz targets' seed corpora, corpus/<target>/, from the project's own
references: the test vectors and the example transcript of proto/PROTOCOL.md, the Julia
manager's lines as tests/peers/JULIA_PROTOCOL_NOTES.md quotes AWSClusterManagers.jl,
the job definitions of docker/job-definitions, the AWS samples of ../shared/aws-reference
(BATCH_AGENT_AWS_REFERENCE overrides where they are) and botocore's Batch model there.
Nothing here invents a format: every seed is one of those documents, cut or combined
the way the target's input is (fuzz_<target>.c says how).

Usage: tests/fuzz/make-corpus.py [--check]. --check writes nothing and fails when the
committed corpus differs from what the references give (a reference changed)."""

import datetime
import json
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
AWS_REF = os.environ.get("BATCH_AGENT_AWS_REFERENCE") or os.path.join(ROOT, "..", "shared", "aws-reference")


sys.path.insert(0, os.path.join(ROOT, "tests", "peers"))
import nativeproto  # noqa: E402


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def aws(*parts):
    return read(AWS_REF, *parts)


def protocol():
    text = read(ROOT, "proto", "PROTOCOL.md").decode()
    block = re.search(r"```vectors\n(.*?)```", text, re.S).group(1)
    vectors = dict(line.split(" = ", 1) for line in block.splitlines() if " = " in line)
    # The example transcript's payloads, where the spec writes them out in full
    # (the hellos and proofs are abbreviated there; the vectors hold them whole).
    transcript = re.search(r"### Example transcript\n.*?```\n(.*?)```", text, re.S).group(1)
    messages = []
    for line in transcript.splitlines():
        m = re.match(r"(->|<-) \[[^\]]*\]\s+(\{.*\})$", line)
        if m and "..." not in m.group(2):
            messages.append((m.group(1), m.group(2).encode()))
    return vectors, messages


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def corpora():
    vectors, messages = protocol()
    frames = {k: bytes.fromhex(v) for k, v in vectors.items() if k.startswith(("frame_", "sealed_"))}
    plain = {k: v for k, v in frames.items() if k.startswith("frame_")}
    worker_msgs = [p for d, p in messages if d == "->"]
    out = {}

    # Frames: byte 0 the reader's mode (0: 65536 limit, 1: handshake limit).
    c = out["frame"] = {}
    for name, f in frames.items():
        c[name] = b"\x00" + f
        c[name + "_handshake_limit"] = b"\x01" + f
    c["worker_handshake_stream"] = b"\x01" + plain["frame_hello_worker"] + plain["frame_auth_worker"]
    c["transcript_stream"] = b"\x00" + b"".join(frame(p) for _, p in messages)

    # Messages: one payload each.
    c = out["message"] = {}
    for name, f in plain.items():
        c[name] = f[4:]
    for i, (_, p) in enumerate(messages):
        c["transcript_%02d_%s" % (i, json.loads(p)["type"])] = p
    # Version 3 (PROTOCOL.md 4.1), as the independent Python peer writes them.
    compact = lambda m: json.dumps(m, separators=(",", ":")).encode()
    c["v3_accept_roster"] = compact(nativeproto.accept(1000, roster=True))
    c["v3_roster"] = compact(nativeproto.roster(3, 0, [(0, "198.18.0.1", 4), (1, "198.18.0.2", 2.5),
                                                      (2, "node-2", None)]))
    c["v3_ready"] = compact(nativeproto.ready())

    # Handshake: a stranger replaying the vectors' hello and proof (mode 0), and the
    # cookie-holding worker's registration and what follows it (mode 1, MNP; mode 3,
    # a pool).
    c = out["handshake"] = {}
    c["stranger_hello"] = b"\x00" + plain["frame_hello_worker"]
    c["stranger_replayed_proof"] = b"\x00" + plain["frame_hello_worker"] + plain["frame_auth_worker"]
    c["stranger_manager_hello"] = b"\x00" + plain["frame_hello_manager"]
    after_auth = b"".join(frame(p) for p in worker_msgs)
    c["worker_transcript"] = b"\x01" + after_auth
    c["pool_worker_transcript"] = b"\x03" + after_auth

    # Julia: the manager's two lines as AWSClusterManagers.jl prints them (println:
    # "\n"), a short cookie right-padded to 16, and BN0's cookie line alone.
    notes = read(ROOT, "tests", "peers", "JULIA_PROTOCOL_NOTES.md").decode()
    padded = re.search(r"`(julia_cookie:abc +)\\n`", notes).group(1)
    c = out["julia"] = {}
    c["cookie_and_timeout"] = b"julia_cookie:0123456789abcdef\njulia_worker_timeout:300\n"
    c["padded_cookie_and_timeout"] = padded.encode() + b"\njulia_worker_timeout:300\n"
    c["cookie_and_timeout_then_payload"] = c["cookie_and_timeout"] + b"julia_worker:9009#10.0.0.132\n"
    c["cookie_only"] = b"julia_cookie:0123456789abcdef\n"

    # Batch's job descriptions: the MNP job, a child of it, an array child.
    captured = os.path.join("batch", "parallelcluster_captured")
    mnp = json.loads(aws(captured, "batch_describe-jobs_single_mnp_job.json"))["jobs"][0]
    children = json.loads(aws(captured, "batch_describe-jobs_single_mnp_job_children.json"))["jobs"]
    array_children = json.loads(aws(captured, "batch_describe-jobs_single_array_job_children.json"))["jobs"]

    def batch_environment(job, main=None):
        """AWS_BATCH_* as Batch sets them in the job's container (README, batchenv.h)."""
        env = {"AWS_BATCH_JOB_ID": job["jobId"], "AWS_BATCH_JOB_ATTEMPT": str(len(job.get("attempts", [])) or 1),
               "AWS_BATCH_JQ_NAME": job["jobQueue"].rsplit("/", 1)[-1]}
        if "arrayProperties" in job and "index" in job["arrayProperties"]:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job["arrayProperties"]["index"])
        if "nodeDetails" in job:
            env["AWS_BATCH_JOB_NUM_NODES"] = str(mnp["nodeProperties"]["numNodes"])
            env["AWS_BATCH_JOB_NODE_INDEX"] = str(job["nodeDetails"]["nodeIndex"])
            env["AWS_BATCH_JOB_MAIN_NODE_INDEX"] = str(mnp["nodeProperties"]["mainNode"])
            if main is not None and not job["nodeDetails"]["isMainNode"]:
                env["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"] = main
        return env

    main_ip = next(j["container"]["networkInterfaces"][0]["privateIpv4Address"]
                   for j in children if j["nodeDetails"]["isMainNode"])
    envs = {}
    for j in children:
        envs["mnp_node_%d" % j["nodeDetails"]["nodeIndex"]] = batch_environment(j, main_ip)
    envs["array_child_%d" % array_children[0]["arrayProperties"]["index"]] = batch_environment(array_children[0])

    def block(env):
        return b"\0".join(("%s=%s" % kv).encode() for kv in env.items())

    out["batchenv"] = {name: block(env) for name, env in envs.items()}

    # Configuration: each job definition's command (the flags, "--", the program)
    # in the environment of a matching job; and the twins of the flags as variables.
    c = out["config"] = {}
    jobdefs = os.path.join(ROOT, "docker", "job-definitions")
    for name in sorted(os.listdir(jobdefs)):
        if not name.endswith(".json"):
            continue
        d = json.loads(read(jobdefs, name))
        commands = []
        if "containerProperties" in d:
            commands.append(d["containerProperties"]["command"])
        for group in d.get("nodeProperties", {}).get("nodeRangeProperties", []):
            commands.append(group["container"]["command"])
        env = envs["mnp_node_1"] if "nodeProperties" in d else envs["array_child_0"]
        for i, cmd in enumerate(commands):
            c["%s_%d" % (name[:-5], i)] = block(env) + b"\0" + b"\0".join(a.encode() for a in cmd)

    # Addresses: --manager as job definitions and the README give it, and the
    # addresses the samples and the transcript carry.
    c = out["address"] = {}
    c["ref_manager"] = b"Ref::manager"
    c["main_node_ip_port"] = ("%s:49152" % main_ip).encode()
    c["main_node_ip"] = main_ip.encode()
    register = json.loads(next(p for p in worker_msgs if b'"register"' in p))
    c["transcript_address"] = register["address"].encode()
    c["transcript_hostname"] = register["hostname"].encode()
    c["ipv6_loopback_port"] = b"[::1]:49152"

    # AWS answers, as the endpoints send them.
    out["credentials"] = {n[:-5]: aws("ecs_credentials", n) for n in
                          ("relative_uri_response_realistic.json", "relative_uri_response_docs_placeholders.json",
                           "error_400_no_id.json", "error_503_uninitialized.json")}
    out["describejobs"] = {n[:-5]: aws(captured, n) for n in sorted(os.listdir(os.path.join(AWS_REF, captured)))}
    out["describejobs"]["describejobs_example_response_botocore"] = aws("batch",
                                                                        "describejobs_example_response_botocore.json")
    # SubmitJob: botocore's SubmitJobResponse members, filled with a real job's
    # identity from the captured DescribeJobs answers. They carry no jobArn, and no
    # sample shows a job's ARN, so none is made up: the model's member names are in
    # submitjob.dict for the fuzzer instead.
    model = json.loads(aws("batch", "botocore-1.29.27-batch-2016-08-10-service-2.json"))
    members = model["shapes"]["SubmitJobResponse"]["members"]
    c = out["submitjob"] = {}
    for job in (mnp, array_children[0]):
        name = "submitjob_" + job["jobId"].replace(":", "_").replace("#", "_")
        c[name] = json.dumps({m: job[m] for m in members if m in job}, separators=(",", ":")).encode()
    # TMDS: container answer, NUL, task answer, for each network mode.
    tm = "ecs_tmds_v4"
    out["tmds"] = {
        "awsvpc": aws(tm, "container_awsvpc_ec2_docs.json") + b"\0" + aws(tm, "task_awsvpc_ec2_docs.json"),
        "awsvpc_tags": aws(tm, "container_awsvpc_ec2_docs.json") + b"\0" + aws(tm, "taskWithTags_awsvpc_ec2_docs.json"),
        "bridge": aws(tm, "container_bridge_ec2_DERIVED.json") + b"\0" + aws(tm, "task_bridge_ec2_DERIVED.json"),
        "host": aws(tm, "container_host_ec2_DERIVED.json") + b"\0" + aws(tm, "task_host_ec2_DERIVED.json"),
    }
    # IMDS: byte 0 the path (1: instance-action, 0: rebalance), then the body.
    out["imds"] = {
        "instance_action_terminate": b"\x01" + aws("imds", "spot_instance-action_terminate_docs.json"),
        "instance_action_stop": b"\x01" + aws("imds", "spot_instance-action_stop_docs.json"),
        "rebalance": b"\x00" + aws("imds", "rebalance_recommendation_docs.json"),
        "not_found_html": b"\x01" + aws("imds", "404_not_found_body.html"),
    }
    # STS: botocore's own AssumeRoleWithWebIdentity example output, in the JSON envelope
    # STS answers with for Accept: application/json (agent/aws/sts.c has the evidence),
    # Expiration as the number of seconds STS writes there.
    out["sts"] = sts_answers()
    # Seccomp: the Docker-format profiles the sandbox tests apply.
    out["seccomp"] = seccomp_profiles()
    return out


def sts_answers():
    path = "/usr/lib/python3/dist-packages/botocore/data/sts/2011-06-15/examples-1.json"
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        example = json.load(f)["examples"]["AssumeRoleWithWebIdentity"][0]["output"]
    result = dict(example)
    expiration = datetime.datetime.strptime(result["Credentials"]["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
    seconds = expiration.replace(tzinfo=datetime.timezone.utc).timestamp()
    result["Credentials"] = dict(result["Credentials"], Expiration=seconds)
    doc = {"AssumeRoleWithWebIdentityResponse": {"AssumeRoleWithWebIdentityResult": result,
                                                 "ResponseMetadata": {"RequestId": "c6104cbe-af31-11e0-8154-cbc7ccf896c7"}}}
    text = json.dumps(doc)
    # As envoy#34426 saw STS write it: scientific notation.
    mantissa, exponent = ("%.9E" % seconds).split("E")
    scientific = text.replace(json.dumps(seconds), "%sE%d" % (mantissa, int(exponent)))
    error = {"Error": {"Code": "InvalidIdentityToken", "Message": "Couldn't retrieve verification key from your identity provider",
                       "Type": "Sender"}, "RequestId": "c6104cbe-af31-11e0-8154-cbc7ccf896c7"}
    return {"example_output": text.encode(), "example_output_scientific": scientific.encode(),
            "error_invalid_identity_token": json.dumps(error).encode()}


def seccomp_profiles():
    """Docker's format as containers-common ships it (the profile podman applies),
    when this machine has it, cut to a few entries so that the seed stays small."""
    profiles = {}
    path = "/usr/share/containers/seccomp.json"
    if os.path.exists(path):
        with open(path, "rb") as f:
            full = json.load(f)
        small = dict(full)
        small["syscalls"] = full["syscalls"][:6]
        profiles["containers_common_first_entries"] = json.dumps(small, indent=1).encode()
        names = [e for e in full["syscalls"] if "includes" in e or "excludes" in e][:6]
        small["syscalls"] = names
        profiles["containers_common_conditional_entries"] = json.dumps(small, indent=1).encode()
    return profiles


def main():
    check = "--check" in sys.argv[1:]
    differ = []
    for target, seeds in sorted(corpora().items()):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in sorted(seeds.items()):
            p = os.path.join(d, name)
            old = open(p, "rb").read() if os.path.exists(p) else None
            if old != data:
                differ.append(p)
                if not check:
                    with open(p, "wb") as f:
                        f.write(data)
    if check and differ:
        print("make-corpus: differs from the references:\n  " + "\n  ".join(differ), file=sys.stderr)
        sys.exit(1)
    print("make-corpus: %d seed file(s) %s" % (len(differ), "differ" if check else "written"))


if __name__ == "__main__":
    main()
