#!/usr/bin/python3
"""The example job definitions in docker/job-definitions/*.json (issue 12, items 9 and 6).

Each file is a RegisterJobDefinition input (what `aws batch register-job-definition
--cli-input-json file://...` sends). Checked here:
  * botocore's ParamValidator against the RegisterJobDefinition input shape of the batch
    2016-08-10 model that python3-botocore ships: zero errors; plus the enums, which the
    validator does not check, and type container/multinode matching the properties given;
  * the cookie is only ever a Batch secret (never in environment or command), and is given
    exactly to the containers whose agent needs one (worker and main roles; README: "do not
    set the cookie for jobs that do not need it");
  * retryStrategy: attempts 1..10, at most 5 evaluateOnExit entries, patterns in the
    syntax the model documents (EvaluateOnExit: onExitCode digits with an optional trailing
    '*'; onStatusReason/onReason letters, numbers, '.', ':', white space, optional trailing
    '*'; at most 512 characters), and the decisions they make for each agent exit status
    (a first-match evaluation, as the Batch User Guide's own example implies);
  * MNP node ranges cover 0..numNodes-1 exactly once, mainNode inside;
  * each container's command is accepted by the real agent: `batch-agent --print-config`
    with the AWS_BATCH_* environment Batch gives that job type exits 0, prints the
    expected role, and the payload after "--" unchanged.
Standard library and botocore only. Prints `ok|FAIL name` lines and `N passed, N failed`;
exits 1 on a failure."""

import glob
import json
import os
import re
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("BATCH_AGENT_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "lib"))
from agenttest import SCALE, WRAPPER, binary, clean_env  # noqa: E402

import botocore  # noqa: E402
import botocore.model  # noqa: E402
import botocore.validate  # noqa: E402

EXAMPLES = os.path.join(SOURCE, "docker", "job-definitions")
EXPECTED_FILES = {"single-job.json", "array-job.json", "mnp-two-groups.json",
                  "pool-manager.json", "pool-worker.json"}
MODEL = os.path.join(os.path.dirname(botocore.__file__), "data", "batch", "2016-08-10",
                     "service-2.json")
COOKIE_NAME = "BATCH_AGENT_COOKIE"
# A test cookie of 40 bytes: the agent refuses one under 16 and warns under 32.
TEST_COOKIE = "t" * 40
JOB_UUID = "6abf3ecd-07a8-4faa-8a65-79e7404eb50f"   # the MNP job id of aws-reference's capture
MAIN_ADDR = "198.18.0.10"
MANAGER_ADDR = "198.18.0.7:49152"


def load_examples():
    paths = sorted(glob.glob(os.path.join(EXAMPLES, "*.json")))
    assert paths, "no docker/job-definitions/*.json under %s" % EXAMPLES
    out = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            try:
                out[os.path.basename(p)] = json.load(f)
            except ValueError as e:
                raise AssertionError("%s is not JSON: %s" % (p, e))
    return out


def input_shape():
    with open(MODEL, encoding="utf-8") as f:
        model = botocore.model.ServiceModel(json.load(f), service_name="batch")
    return model.operation_model("RegisterJobDefinition").input_shape


def containers(doc):
    """(where, ContainerProperties, node indexes or None) of every container in doc."""
    if "containerProperties" in doc:
        yield "containerProperties", doc["containerProperties"], None
    for i, r in enumerate(doc.get("nodeProperties", {}).get("nodeRangeProperties", [])):
        yield "nodeRangeProperties[%d] (%s)" % (i, r.get("targetNodes")), r["container"], \
            node_range(r["targetNodes"], doc["nodeProperties"]["numNodes"])


def node_range(text, num_nodes):
    """NodeRangeProperty.targetNodes: "a:b" inclusive; ":n" starts at 0, "n:" ends at the
    highest index (the model's documentation); a bare "n" is node n."""
    m = re.fullmatch(r"(\d*)(?::(\d*))?", text)
    assert m and text, "targetNodes %r is not N, N:M, :M or N:" % text
    if m.group(2) is None and ":" not in text:
        lo = hi = int(m.group(1))
    else:
        lo = int(m.group(1)) if m.group(1) else 0
        hi = int(m.group(2)) if m.group(2) else num_nodes - 1
    assert 0 <= lo <= hi < num_nodes, "targetNodes %r outside 0..%d" % (text, num_nodes - 1)
    return range(lo, hi + 1)


# ---- the model ----

def case_expected_examples_present():
    got = set(load_examples())
    missing = EXPECTED_FILES - got
    assert not missing, "docker/job-definitions/ lacks %s" % sorted(missing)


def case_validates_against_register_job_definition():
    shape = input_shape()
    validator = botocore.validate.ParamValidator()
    bad = []
    for name, doc in load_examples().items():
        report = validator.validate(doc, shape)
        if report.has_errors():
            bad.append("%s:\n%s" % (name, report.generate_report()))
    assert not bad, "\n".join(bad)


def enum_errors(value, shape, path):
    """What ParamValidator leaves out: string enums (RetryAction, ResourceType, ...)."""
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                errors += enum_errors(v, shape.members[k], "%s.%s" % (path, k))
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            errors += enum_errors(v, shape.member, "%s[%d]" % (path, i))
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            errors += enum_errors(v, shape.value, "%s[%r]" % (path, k))
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errors.append("%s: %r is not one of %s" % (path, value, shape.enum))
    return errors


def case_enums_types_and_names():
    shape = input_shape()
    bad = []
    for name, doc in load_examples().items():
        bad += ["%s %s" % (name, e) for e in enum_errors(doc, shape, "")]
        stem = name[:-len(".json")]
        # RegisterJobDefinition's documentation: up to 128 letters, numbers, '-', '_'.
        if doc.get("jobDefinitionName") != stem or not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", stem):
            bad.append("%s: jobDefinitionName %r should be the file's name" % (name, doc.get("jobDefinitionName")))
        want = "multinode" if "nodeProperties" in doc else "container"
        if doc.get("type") != want or ("nodeProperties" in doc) == ("containerProperties" in doc):
            bad.append("%s: type %r with %s" % (name, doc.get("type"), sorted(
                k for k in ("containerProperties", "nodeProperties") if k in doc)))
    assert not bad, "\n".join(bad)


def case_resources_and_roles():
    bad = []
    for name, doc in load_examples().items():
        for where, c, _ in containers(doc):
            req = {r["type"]: r["value"] for r in c.get("resourceRequirements", [])}
            if not req.get("VCPU", "").isdigit() or int(req["VCPU"]) < 1:
                bad.append("%s %s: no VCPU resourceRequirement" % (name, where))
            # ResourceRequirement's documentation: MEMORY in MiB, at least 4.
            if not req.get("MEMORY", "").isdigit() or int(req["MEMORY"]) < 4:
                bad.append("%s %s: no MEMORY resourceRequirement of 4 MiB or more" % (name, where))
            if not c.get("image"):
                bad.append("%s %s: no image" % (name, where))
            if c.get("secrets") and not c.get("executionRoleArn", "").startswith("arn:aws:iam::"):
                bad.append("%s %s: secrets need an executionRoleArn" % (name, where))
            for e in c.get("environment", []):
                if e["name"].startswith("AWS_BATCH"):   # reserved (ContainerProperties docs)
                    bad.append("%s %s: environment %s is reserved" % (name, where, e["name"]))
    assert not bad, "\n".join(bad)


# ---- the cookie ----

SECRET_ARN = re.compile(r"arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+"
                        r"|ssm:[a-z0-9-]+:\d{12}:parameter/[A-Za-z0-9/_.-]+)")


def case_cookie_only_as_a_secret():
    bad = []
    for name, doc in load_examples().items():
        for where, c, _ in containers(doc):
            words = c.get("command", [])
            if any("cookie" in w.lower() for w in words):
                bad.append("%s %s: the command mentions a cookie: %s" % (name, where, words))
            for e in c.get("environment", []):
                if "COOKIE" in e["name"].upper() or "cookie" in e.get("value", "").lower():
                    bad.append("%s %s: environment %s carries a cookie" % (name, where, e["name"]))
            cookies = [s for s in c.get("secrets", []) if s["name"] == COOKIE_NAME]
            if len(cookies) > 1:
                bad.append("%s %s: %s twice in secrets" % (name, where, COOKIE_NAME))
            for s in cookies:
                if not SECRET_ARN.fullmatch(s["valueFrom"]):
                    bad.append("%s %s: %s valueFrom %r is not a Secrets Manager or SSM ARN"
                               % (name, where, COOKIE_NAME, s["valueFrom"]))
        # Nothing but a secret's name may say BATCH_AGENT_COOKIE, anywhere in the file.
        text = json.dumps(doc)
        names = sum(1 for _, c, _ in containers(doc) for s in c.get("secrets", [])
                    if s["name"] == COOKIE_NAME)
        if text.count(COOKIE_NAME) != names:
            bad.append("%s: %s appears outside secrets[].name" % (name, COOKIE_NAME))
        if "parameters" in doc and "cookie" in json.dumps(doc["parameters"]).lower():
            bad.append("%s: a parameter carries a cookie (DescribeJobs shows parameters)" % name)
    assert not bad, "\n".join(bad)


# ---- the retry strategy ----

EXIT_CODE_PATTERN = re.compile(r"[0-9]*\*?")
REASON_PATTERN = re.compile(r"[A-Za-z0-9.: \t]*\*?")


def matches(pattern, value):
    """EvaluateOnExit glob: exact, or a prefix when it ends with '*'. An absent value is
    matched as "" (the User Guide's catch-all, onReason "*", exits 'for any reason')."""
    value = "" if value is None else str(value)
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def decide(strategy, exit_code=None, status_reason=None, reason=None):
    for e in strategy.get("evaluateOnExit", []):
        if "onExitCode" in e and not matches(e["onExitCode"], exit_code):
            continue
        if "onStatusReason" in e and not matches(e["onStatusReason"], status_reason):
            continue
        if "onReason" in e and not matches(e["onReason"], reason):
            continue
        return e["action"].upper()
    return "RETRY"   # EvaluateOnExit's documentation: no entry matches -> retried


def case_retry_strategy_syntax():
    bad = []
    for name, doc in load_examples().items():
        rs = doc.get("retryStrategy")
        if not rs:
            bad.append("%s: no retryStrategy" % name)
            continue
        entries = rs.get("evaluateOnExit", [])
        if not entries or len(entries) > 5:
            bad.append("%s: %d evaluateOnExit entries (1 to 5)" % (name, len(entries)))
        if not isinstance(rs.get("attempts"), int) or not 1 <= rs["attempts"] <= 10:
            bad.append("%s: attempts %r (evaluateOnExit needs attempts, 1 to 10)" % (name, rs.get("attempts")))
        for i, e in enumerate(entries):
            conds = [k for k in ("onExitCode", "onStatusReason", "onReason") if k in e]
            if not conds:
                bad.append("%s evaluateOnExit[%d]: no condition" % (name, i))
            if str(e.get("action", "")).upper() not in ("RETRY", "EXIT"):
                bad.append("%s evaluateOnExit[%d]: action %r" % (name, i, e.get("action")))
            for k in conds:
                v = e[k]
                pat = EXIT_CODE_PATTERN if k == "onExitCode" else REASON_PATTERN
                if not v or len(v) > 512 or not pat.fullmatch(v):
                    bad.append("%s evaluateOnExit[%d].%s %r: not the documented glob" % (name, i, k, v))
    assert not bad, "\n".join(bad)


# Status reasons as Batch reports them: a Spot reclaim or lost host ("Host EC2 (instance
# i-...) terminated", quoted in calypr/funnel issue 973), and a container that exited
# (aws-reference's parallelcluster captures).
HOST_GONE = "Host EC2 (instance i-0e234208f6fc9291f) terminated."
EXITED = "Essential container in task exited"
DECISIONS = [
    # (exit code, statusReason, expected action, why)
    (None, HOST_GONE, "RETRY", "Spot reclaim / host lost"),
    (137, HOST_GONE, "RETRY", "host lost while the container was being killed"),
    (69, EXITED, "RETRY", "manager unreachable or lost, nodes or workers missing"),
    (143, EXITED, "RETRY", "payload ended by the agent's --spot-signal (TERM) on a Spot notice"),
    (0, EXITED, None, "success is never evaluated"),
    (1, EXITED, "EXIT", "the payload's own failure"),
    (64, EXITED, "EXIT", "bad command line"),
    (70, EXITED, "EXIT", "internal error"),
    (71, EXITED, "EXIT", "system call failed / out of memory"),
    (76, EXITED, "EXIT", "protocol broken or frame forged"),
    (77, EXITED, "EXIT", "authentication or registration refused"),
    (78, EXITED, "EXIT", "bad configuration"),
    (126, EXITED, "EXIT", "payload not executable"),
    (127, EXITED, "EXIT", "payload not found"),
    (137, EXITED, "EXIT", "SIGKILL: the memory limit, or Batch's kill"),
    (None, None, "EXIT", "no exit code, no reason that a rule names"),
]


def case_retry_decisions_for_agent_exit_codes():
    bad = []
    for name, doc in load_examples().items():
        rs = doc.get("retryStrategy", {})
        for code, status, want, why in DECISIONS:
            if want is None:
                continue
            got = decide(rs, exit_code=code, status_reason=status)
            if got != want:
                bad.append("%s: exit %s, %r -> %s, want %s (%s)" % (name, code, status, got, want, why))
    assert not bad, "\n".join(bad)


def case_retry_decider_self_check():
    # The decider itself, on the User Guide's example (job_retries.html) and the defaults.
    guide = {"attempts": 3, "evaluateOnExit": [
        {"action": "RETRY", "onReason": "AGENT"},
        {"action": "RETRY", "onStatusReason": "Task failed to start"},
        {"action": "EXIT", "onReason": "*"}]}
    assert decide(guide, reason="AGENT") == "RETRY"
    assert decide(guide, status_reason="Task failed to start") == "RETRY"
    assert decide(guide, exit_code=1, status_reason=EXITED) == "EXIT"
    assert decide({"attempts": 2}, exit_code=1) == "RETRY"
    assert decide({"evaluateOnExit": [{"onExitCode": "7*", "action": "exit"}]}, exit_code=76) == "EXIT"
    assert decide({"evaluateOnExit": [{"onExitCode": "7", "action": "EXIT"}]}, exit_code=76) == "RETRY"


# ---- MNP ----

def case_mnp_node_ranges_cover_every_node_once():
    bad = []
    seen_mnp = False
    for name, doc in load_examples().items():
        np_ = doc.get("nodeProperties")
        if not np_:
            continue
        seen_mnp = True
        n = np_["numNodes"]
        if not 0 <= np_["mainNode"] < n:
            bad.append("%s: mainNode %d outside 0..%d" % (name, np_["mainNode"], n - 1))
        owner = {}
        for i, r in enumerate(np_["nodeRangeProperties"]):
            try:
                nodes = node_range(r["targetNodes"], n)
            except AssertionError as e:
                bad.append("%s nodeRangeProperties[%d]: %s" % (name, i, e))
                continue
            for node in nodes:
                if node in owner:
                    bad.append("%s: node %d in ranges %d and %d" % (name, node, owner[node], i))
                owner[node] = i
        missing = sorted(set(range(n)) - set(owner))
        if missing:
            bad.append("%s: nodes %s in no range" % (name, missing))
    assert seen_mnp, "no multinode example"
    assert not bad, "\n".join(bad)


# ---- the agent accepts each command ----

def batch_env(doc, node=None, array_index=2):
    """The AWS_BATCH_* environment Batch gives a container of this job definition (AWS
    Batch User Guide, job_env_vars; MNP children alone get the main's address)."""
    env = {"AWS_BATCH_JOB_ATTEMPT": "1", "AWS_BATCH_JQ_NAME": "example-queue",
           "AWS_BATCH_CE_NAME": "example-ce", "AWS_BATCH_JOB_ID": JOB_UUID}
    if node is not None:
        np_ = doc["nodeProperties"]
        env.update({"AWS_BATCH_JOB_ID": "%s#%d" % (JOB_UUID, node),
                    "AWS_BATCH_JOB_NUM_NODES": str(np_["numNodes"]),
                    "AWS_BATCH_JOB_NODE_INDEX": str(node),
                    "AWS_BATCH_JOB_MAIN_NODE_INDEX": str(np_["mainNode"])})
        if node != np_["mainNode"]:
            env["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"] = MAIN_ADDR
    elif array_index is not None:
        env.update({"AWS_BATCH_JOB_ID": "%s:%d" % (JOB_UUID, array_index),
                    "AWS_BATCH_JOB_ARRAY_INDEX": str(array_index)})
    return env


def substitute(command, params):
    """Batch's Ref::NAME substitution of whole command words."""
    return [params.get(w[5:], w) if w.startswith("Ref::") else w for w in command]


def print_config(command, env, cookie=True):
    full = clean_env(**env)
    if cookie:
        full[COOKIE_NAME] = TEST_COOKIE
    # Should --print-config ever reach for the Batch API, it gets a closed loopback port,
    # never AWS.
    full["BATCH_AGENT_AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    argv = WRAPPER + [binary("BATCH_AGENT_BIN"), "--print-config"] + list(command)
    p = subprocess.run(argv, env=full, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=30 * SCALE)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0, "batch-agent --print-config %s exited %d:\n%s" % (
        " ".join(command), p.returncode, err)
    return json.loads(out)


def check_agent_config(label, command, env, want_role, cookie, want_manager=None):
    """The agent's view of one container: Batch sets BATCH_AGENT_COOKIE from the secret
    when the definition has one (cookie)."""
    cfg = print_config(command, env, cookie=cookie)
    assert cfg["role"] == want_role, "%s: role %r, want %r" % (label, cfg["role"], want_role)
    if "--" in command:
        payload = command[command.index("--") + 1:]
        assert payload, "%s: nothing after --" % label
    else:   # a pure agent invocation (no payload) is the only form allowed without --
        payload = []
    assert cfg["payload"] == payload, "%s: payload %r, want %r" % (label, cfg["payload"], payload)
    assert cfg["cookie_source"] == ("environment" if cookie else None), \
        "%s: cookie_source %r" % (label, cfg["cookie_source"])
    if want_manager is not None:
        assert cfg["manager"] == want_manager, "%s: manager %r" % (label, cfg["manager"])
    return cfg


def job_cookie(c):
    return any(s["name"] == COOKIE_NAME for s in c.get("secrets", []))


def role_for(doc, c, node):
    """The role each example means its agent to take (the brief of issue 12)."""
    cmd = c["command"]
    if node is not None:
        return "main" if node == doc["nodeProperties"]["mainNode"] else "worker"
    if "--workers" in cmd:
        return "main"
    if "--manager" in cmd:
        return "worker"
    return "init"


def case_every_command_has_double_dash_before_the_program():
    bad = []
    for name, doc in load_examples().items():
        for where, c, _ in containers(doc):
            cmd = c.get("command")
            if not cmd:
                bad.append("%s %s: no command (the image's CMD would be the payload)" % (name, where))
            elif "--" not in cmd and not all(w.startswith("-") for w in cmd):
                bad.append("%s %s: %s has no -- before the program" % (name, where, cmd))
    assert not bad, "\n".join(bad)


def case_agent_accepts_every_command():
    checked = 0
    for name, doc in load_examples().items():
        for where, c, nodes in containers(doc):
            cmd = c["command"]
            env_c = {e["name"]: e["value"] for e in c.get("environment", [])}
            for node in (nodes if nodes is not None else [None]):
                role = role_for(doc, c, node)
                env = dict(batch_env(doc, node=node), **env_c)
                label = "%s %s%s" % (name, where, "" if node is None else " node %d" % node)
                # The cookie goes exactly where the role needs it.
                assert job_cookie(c) == (role in ("worker", "main")), \
                    "%s: role %s, cookie secret %s" % (label, role, job_cookie(c))
                params = dict(doc.get("parameters", {}))
                if "Ref::manager" in cmd:
                    # As Batch substitutes the pool's parameter, and as the literal text a
                    # job submitted without it keeps (the agent then reads DescribeJobs at
                    # run time; --print-config stops before any request).
                    check_agent_config(label + " (Ref::manager literal)", cmd, env, role,
                                       job_cookie(c), want_manager="Ref::manager")
                    params["manager"] = MANAGER_ADDR
                    check_agent_config(label + " (manager=%s)" % MANAGER_ADDR, substitute(cmd, params),
                                       env, role, job_cookie(c), want_manager=MANAGER_ADDR)
                else:
                    check_agent_config(label, substitute(cmd, params), env, role, job_cookie(c))
                checked += 1
    assert checked >= 8, "only %d containers checked" % checked


def case_each_expected_role_is_exercised():
    roles = {}
    for name, doc in load_examples().items():
        for _, c, nodes in containers(doc):
            for node in (nodes if nodes is not None else [None]):
                roles.setdefault(name, set()).add(role_for(doc, c, node))
    want = {"single-job.json": {"init"}, "array-job.json": {"init"},
            "mnp-two-groups.json": {"main", "worker"}, "pool-manager.json": {"main"},
            "pool-worker.json": {"worker"}}
    for name, r in want.items():
        assert roles.get(name) == r, "%s: roles %s, want %s" % (name, roles.get(name), r)
    mgr = load_examples()["pool-manager.json"]["containerProperties"]["command"]
    cfg = print_config(mgr, batch_env({}, array_index=None))
    assert cfg["workers"] == 4 and cfg["submit_workers"] is True, cfg
    assert cfg["worker_job_definition"] == "pool-worker", cfg


def case_agent_refuses_a_broken_command():
    # The acceptance check can fail: an unknown option is 64, as --help documents.
    argv = WRAPPER + [binary("BATCH_AGENT_BIN"), "--print-config", "--no-such-option", "--", "true"]
    p = subprocess.run(argv, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=30 * SCALE)
    assert p.returncode == 64, (p.returncode, p.stderr)


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


def main():
    passed = failed = 0
    for case in CASES:
        t0 = time.monotonic()
        try:
            case()
        except Exception:
            failed += 1
            print("FAIL %s (%.1fs)" % (case.__name__, time.monotonic() - t0))
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (case.__name__, time.monotonic() - t0))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
