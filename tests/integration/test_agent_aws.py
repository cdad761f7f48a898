"""batch-agent with the AWS endpoints, end to end on 127.0.0.1: finding the manager
through Batch DescribeJobs (an unsubstituted Ref::NAME, or --manager-param), its
failures, what task metadata puts in the register message, and which libraries the
agent process maps (libcurl only ever in batch-agent-aws).

The fakes: tests/peers/fake_aws.py (DescribeJobs with a SigV4 verifier, answers built
from the captured samples with only the parameters changed; ECS task metadata), and a
native manager (tests/peers/nativeproto.py). Helpers: tests/lib/agentaws.py."""

import os
import signal
import time

import agentaws
import fake_aws
from agentaws import SCALE, Agent, FakeManager, agent_env, check, check_eq, wait_for

cases, case = agentaws.case_list()


def discovered_worker(args, param, extra_env=None, code=7):
    """A worker whose manager address comes from DescribeJobs parameter `param`;
    returns (agent, fake manager, register message, payload info, exit status, fake)."""
    with fake_aws.FakeAWS() as fake, FakeManager() as mgr:
        fake.batch_parameters = {param: mgr.addr, "unrelated": "value"}
        agent = Agent(args, agent_env(fake, **(extra_env or {})), code=code)
        reg = mgr.wait_register()
        info = agent.info()
        rc = agent.wait()
        exited = mgr.wait_msg("payload_exited")
        check(fake.count("describejobs") == 1, "one DescribeJobs request, got %d" % fake.count("describejobs"))
        ok, reason, _ = fake.sigv4_results[-1]
        check(ok, "the fake verified the SigV4 signature: %s" % reason)
        return agent, mgr, reg, info, rc, exited


@case
def ref_manager_resolved_through_describejobs():
    agent, mgr, reg, info, rc, exited = discovered_worker(["--manager", "Ref::manager"], "manager")
    check_eq(reg["job_id"], agentaws.ARRAY_JOB, "register job_id")
    check_eq(reg["array_index"], 1, "register array_index")
    check_eq(reg["attempt"], 1, "register attempt")
    check_eq(info["manager"], mgr.addr, "BATCH_AGENT_MANAGER of the payload")
    check_eq(exited.get("exit_code"), 7, "payload_exited")
    check_eq(rc, 7, "agent exit status (the payload's)\n" + agent.describe())
    check_eq(info["cookie"], None, "BATCH_AGENT_COOKIE in the payload's environment")
    err = agent.stderr
    check("Ref::manager" in err and "DescribeJobs" in err, "stderr says where the address came from:\n" + err)
    check(agentaws.COOKIE not in err, "the cookie was logged")


@case
def ref_other_name_uses_that_parameter():
    agent, mgr, reg, info, rc, _ = discovered_worker(["--manager", "Ref::head"], "head", code=0)
    check_eq(info["manager"], mgr.addr, "BATCH_AGENT_MANAGER")
    check_eq(rc, 0, "exit status\n" + agent.describe())


@case
def ref_manager_with_container_credentials():
    # How Batch hands out the job role: the ECS container credentials endpoint (its
    # full-URI form on loopback for the test: the relative one is always 169.254.170.2).
    with fake_aws.FakeAWS() as fake, FakeManager() as mgr:
        fake.batch_parameters = {"manager": mgr.addr}
        env = agent_env(fake, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SESSION_TOKEN=None,
                        AWS_CONTAINER_CREDENTIALS_FULL_URI=fake.creds_url)
        agent = Agent(["--manager", "Ref::manager"], env, code=0)
        mgr.wait_register()
        check_eq(agent.info()["manager"], mgr.addr, "BATCH_AGENT_MANAGER")
        check_eq(agent.wait(), 0, "exit status\n" + agent.describe())
        check(fake.count("creds") >= 1, "credentials fetched from the container endpoint")
        ok, reason, details = fake.sigv4_results[-1]
        check(ok, "signature verified: " + reason)
        check_eq(details["access_key"], fake.creds_doc["AccessKeyId"], "access key used")
        check(fake.creds_doc["SecretAccessKey"] not in agent.stderr, "a secret was logged")


@case
def ref_from_env_with_manager_param_and_bare_host():
    # BATCH_AGENT_MANAGER=Ref::manager, --manager-param renames the parameter, whose
    # value is a bare host that takes --port.
    with fake_aws.FakeAWS() as fake, FakeManager() as mgr:
        fake.batch_parameters = {"manager": "127.0.0.1:1", "head": "127.0.0.1"}
        env = agent_env(fake, BATCH_AGENT_MANAGER="Ref::manager")
        agent = Agent(["--manager-param", "head", "--port", str(mgr.port)], env, code=0)
        mgr.wait_register()
        check_eq(agent.info()["manager"], mgr.addr, "BATCH_AGENT_MANAGER of the payload")
        check_eq(agent.wait(), 0, "exit status\n" + agent.describe())
        check("BATCH_AGENT_MANAGER is the literal text" in agent.stderr, "source named:\n" + agent.stderr)
        check('"head"' in agent.stderr, "parameter named:\n" + agent.stderr)


@case
def manager_param_env_makes_auto_worker():
    agent, mgr, reg, info, rc, _ = discovered_worker([], "mgr", {"BATCH_AGENT_MANAGER_PARAM": "mgr"}, code=3)
    check_eq(reg["job_id"], agentaws.ARRAY_JOB, "register job_id")
    check_eq(info["manager"], mgr.addr, "BATCH_AGENT_MANAGER")
    check_eq(rc, 3, "exit status\n" + agent.describe())
    check('"mgr"' in agent.stderr, "stderr names the parameter mgr:\n" + agent.stderr)


def failing_worker(fake, args, env, timeout=30):
    agent = Agent(args, env)
    rc = agent.wait(timeout)
    check(not os.path.exists(agent.path("info.json")), "the payload must not start\n" + agent.describe())
    return agent, rc


@case
def missing_parameter_is_78_naming_it():
    with fake_aws.FakeAWS() as fake:
        fake.batch_parameters = {"other": "127.0.0.1:1"}
        agent, rc = failing_worker(fake, ["--manager", "Ref::manager"], agent_env(fake))
        check_eq(rc, 78, "exit status\n" + agent.describe())
        check('no parameter "manager"' in agent.stderr, "stderr names the parameter\n" + agent.stderr)
        agent, rc = failing_worker(fake, [], agent_env(fake, BATCH_AGENT_MANAGER_PARAM="mgr"))
        check_eq(rc, 78, "exit status\n" + agent.describe())
        check('no parameter "mgr"' in agent.stderr, "stderr names the parameter\n" + agent.stderr)


@case
def describejobs_refused_is_77():
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = ("status", 403, {"message": "User is not authorized to perform: batch:DescribeJobs"},
                                       [("x-amzn-ErrorType", "AccessDeniedException")])
        agent, rc = failing_worker(fake, ["--manager", "Ref::manager"], agent_env(fake))
        check_eq(rc, 77, "exit status\n" + agent.describe())
        check_eq(fake.count("describejobs"), 1, "403 is not retried")


@case
def bad_signature_is_77():
    with fake_aws.FakeAWS() as fake:
        agent, rc = failing_worker(fake, ["--manager", "Ref::manager"],
                                   agent_env(fake, AWS_SECRET_ACCESS_KEY="not-the-secret-the-fake-knows"))
        check_eq(rc, 77, "exit status\n" + agent.describe())
        check(not fake.sigv4_results[-1][0], "the fake refused the signature")
        check("not-the-secret" not in agent.stderr, "the secret must not be logged")


@case
def endpoint_unreachable_is_69_in_bounded_time():
    # agent_env without a fake: BATCH_AGENT_AWS_ENDPOINT_URL is a dead loopback port.
    env = agent_env(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret")
    check(env["BATCH_AGENT_AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:"), "dead loopback endpoint")
    agent, rc = failing_worker(None, ["--manager", "Ref::manager"], env, timeout=60)
    check_eq(rc, 69, "exit status\n" + agent.describe())
    limit = 30 * SCALE
    check(agent.elapsed <= limit, "took %.1fs, limit %.1fs" % (agent.elapsed, limit))


@case
def sigterm_during_the_batch_api_query_ends_the_agent_at_once():
    # Batch may stop a job whose agent is still asking DescribeJobs (an endpoint that
    # never answers): the agent must exit 128+15 now, not after its query timeouts.
    with fake_aws.FakeAWS() as fake:
        fake.always["describejobs"] = "hang"
        agent = Agent(["--manager", "Ref::manager"], agent_env(fake))
        wait_for(lambda: fake.count("describejobs") >= 1, 20, "the DescribeJobs request")
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        rc = agent.wait(20)
        check_eq(rc, 128 + signal.SIGTERM, "exit status\n" + agent.describe())
        check(time.monotonic() - t0 < 3 * SCALE, "SIGTERM took %.1fs to end the agent" % (time.monotonic() - t0))
        check(not os.path.exists(agent.path("info.json")), "the payload started")


@case
def no_credentials_is_78():
    with fake_aws.FakeAWS() as fake:
        env = agent_env(fake, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SESSION_TOKEN=None)
        agent, rc = failing_worker(fake, ["--manager", "Ref::manager"], env)
        check_eq(rc, 78, "exit status\n" + agent.describe())
        check_eq(fake.count("describejobs"), 0, "no unsigned request")
        check("credentials" in agent.stderr.lower(), "stderr says why\n" + agent.stderr)


# ---- task metadata in the register message

def worker_with_tmds(fake, args=()):
    with FakeManager() as mgr:
        env = agent_env(fake, ECS_CONTAINER_METADATA_URI_V4=fake.tmds_url, BATCH_AGENT_SPOT_WATCH="off")
        agent = Agent(["--manager", mgr.addr] + list(args), env)
        reg = mgr.wait_register()
        info = agent.info()
        rc = agent.wait()
        check_eq(rc, 0, "exit status\n" + agent.describe())
        check(fake.count("tmds-task") >= 1, "task metadata was read")
        return reg, info


@case
def awsvpc_task_address_and_limits():
    with fake_aws.FakeAWS() as fake:
        reg, info = worker_with_tmds(fake)
        check_eq(reg["address"], agentaws.AWSVPC_IPV4, "register address (the task's IPv4)")
        check_eq(info["node_addr"], agentaws.AWSVPC_IPV4, "BATCH_AGENT_NODE_ADDR")
        check_eq(reg["cpus"], agentaws.SAMPLE_CPUS, "register cpus (sample limits)")
        check_eq(reg["memory_limit_bytes"], agentaws.SAMPLE_MEMORY, "register memory_limit_bytes")


@case
def awsvpc_task_level_limits():
    with fake_aws.FakeAWS() as fake:
        fake.tmds_task_limits = {"CPU": 2, "Memory": 4096}
        reg, _ = worker_with_tmds(fake)
        check_eq(reg["cpus"], 2, "register cpus (task limits)")
        check_eq(reg["memory_limit_bytes"], 4096 << 20, "register memory_limit_bytes (task limits)")


@case
def advertise_addr_wins_over_task_metadata():
    with fake_aws.FakeAWS() as fake:
        reg, info = worker_with_tmds(fake, ["--advertise-addr", "127.0.0.9"])
        check_eq(reg["address"], "127.0.0.9", "register address")
        check_eq(info["node_addr"], "127.0.0.9", "BATCH_AGENT_NODE_ADDR")
        check_eq(reg["cpus"], agentaws.SAMPLE_CPUS, "limits still from task metadata")


@case
def host_mode_advertises_the_local_address():
    with fake_aws.FakeAWS() as fake:
        fake.tmds_mode = "host"
        reg, info = worker_with_tmds(fake)
        check_eq(reg["address"], "127.0.0.1", "register address (the connection's local address)")
        check_eq(reg["memory_limit_bytes"], agentaws.SAMPLE_MEMORY, "register memory_limit_bytes")


# ---- what the agent process maps

def stop_and_reap(agent):
    agent.stop_payload()
    rc = agent.wait()
    check_eq(rc, 0, "exit status\n" + agent.describe())


@case
def init_role_maps_neither_libcurl_nor_libcrypto():
    agent = Agent(["--role", "init"], agent_env(), linger=30)
    info = agent.info()
    pid = info["ppid"]
    check_eq(pid, agent.proc.pid, "the payload's parent is the agent")
    libs = agentaws.mapped_libraries(pid)
    if not agentaws.WRAPPER:
        check_eq(agentaws.exe_name(pid), "batch-agent", "the init role stays in batch-agent")
    check(not any(l.startswith("libcurl") for l in libs), "libcurl mapped: %s" % sorted(libs))
    check(not any(l.startswith("libcrypto") for l in libs), "libcrypto mapped: %s" % sorted(libs))
    stop_and_reap(agent)


@case
def worker_does_not_map_libcurl():
    # libcurl stays in the batch-agent-aws helper even after the worker used the Batch
    # API. (libcrypto is linked into batch-agent-net statically where Debian's
    # libcrypto.a exists, so it need not show up as a mapped library.)
    with fake_aws.FakeAWS() as fake, FakeManager() as mgr:
        fake.batch_parameters = {"manager": mgr.addr}
        agent = Agent(["--manager", "Ref::manager"], agent_env(fake), linger=30)
        mgr.wait_register()
        info = agent.info()
        check_eq(fake.count("describejobs"), 1, "the worker used the Batch API")
        pid = info["ppid"]
        if not agentaws.WRAPPER:
            check_eq(agentaws.exe_name(pid), "batch-agent-net", "the agent chain-loaded batch-agent-net")
        libs = agentaws.mapped_libraries(pid)
        check(not any(l.startswith("libcurl") for l in libs), "libcurl mapped: %s" % sorted(libs))
        stop_and_reap(agent)


if __name__ == "__main__":
    agentaws.run_cases(cases)
