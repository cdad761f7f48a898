#!/usr/bin/python3
"""The address a --protocol julia worker advertises (the julia_worker line and
BATCH_AGENT_NODE_ADDR / {{NODE_ADDR}}).

Rule: the local address of the connection to the manager; when that is link-local or
loopback while the manager's is not, the first interface address that is up and neither;
--advertise-addr overrides; with nothing usable the agent exits 78 listing the candidate
interfaces.

To make the connection's own address link-local honestly, the only route from a node to
its manager (198.18.4.1, on the manager's loopback) goes through the node's link-local
ecs-eth0 (169.254.172.2/22) and a gateway 169.254.172.1 on the manager's side:

    [m<k>: lo 198.18.4.1/32, ll0 169.254.172.1/22 (, e0 198.18.6.1/24)]
        |  veth                                 | veth (optional)
    [n<k>: ecs-eth0 169.254.172.2/22 (first), (eth0 198.18.6.2/24)]

The manager never connects back to a 169.254 address (it refuses to, and the cases check
it did not try). Prints `N passed, N failed`."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import juliatest as jt  # noqa: E402
from juliatest import check  # noqa: E402

MANAGER_ADDR = "198.18.4.1"
COOKIE = "AddressCookie123"


def link_local_pair(lab, tag, with_eth0, node_extra_lo=None):
    m = lab.netns(f"m{tag}")
    n = lab.netns(f"n{tag}")
    lab.link(n, "ecs-eth0", m, "ll0")  # created first: first in the node's interface order
    jt.run(["ip", "-n", n, "addr", "add", "169.254.172.2/22", "dev", "ecs-eth0"])
    jt.run(["ip", "-n", m, "addr", "add", "169.254.172.1/22", "dev", "ll0"])
    jt.run(["ip", "-n", m, "addr", "add", f"{MANAGER_ADDR}/32", "dev", "lo"])
    jt.run(["ip", "-n", n, "route", "add", f"{MANAGER_ADDR}/32", "via", "169.254.172.1",
            "dev", "ecs-eth0"])
    if with_eth0:
        lab.link(n, "eth0", m, "e0")
        jt.run(["ip", "-n", n, "addr", "add", "198.18.6.2/24", "dev", "eth0"])
        jt.run(["ip", "-n", m, "addr", "add", "198.18.6.1/24", "dev", "e0"])
    if node_extra_lo:
        # an address only the operator knows to be routable: on the node's loopback,
        # routed to by the manager's side
        jt.run(["ip", "-n", n, "addr", "add", f"{node_extra_lo}/32", "dev", "lo"])
        jt.run(["ip", "-n", m, "route", "add", f"{node_extra_lo}/32", "via", "169.254.172.2",
                "dev", "ll0"])
    return (jt.Node(lab, f"m{tag}", m, eth0=MANAGER_ADDR),
            jt.Node(lab, f"n{tag}", n, eth0="198.18.6.2" if with_eth0 else None,
                    ecs="169.254.172.2"))


def mnp_run(lab, mgr_node, node, name, agent_opts=()):
    mgr = jt.start_manager(lab, mgr_node, name=f"{name}-mgr", workers=1, worker_timeout=10,
                           extra=["--cookie", COOKIE])
    mgr.wait_event("listening", 10 * jt.slow_factor())
    env = jt.mnp_env(1, 2, main_addr=MANAGER_ADDR)
    status = lab.path(f"{name}.status")
    env["FAKE_JULIA_STATUS"] = status
    dump = lab.path(f"{name}.dump.json")
    agent = lab.start(node, jt.agent_argv(["--protocol", "julia", "--connect-timeout", "10",
                                           *agent_opts], jt.worker_payload(dump)),
                      env=env, name=f"{name}-agent")
    rc = agent.wait(30 * jt.slow_factor())
    mgr.proc.wait(20 * jt.slow_factor())
    return mgr, agent, rc, dump, status


def no_link_local_connect_back(mgr):
    for w in mgr.workers():
        check(not str(w.get("addr", "")).startswith("169.254."),
              f"manager was told to connect to {w.get('addr')}")


def case_nothing_usable(lab, pairs):
    mgr_node, node = pairs["bare"]
    check(node.naive_first_address() == "169.254.172.2", "trap not armed")
    mgr, agent, rc, dump, _ = mnp_run(lab, mgr_node, node, "bare")
    err = agent.stderr()
    check(rc == jt.EX_CONFIG, f"agent exited {rc}, expected 78: {err}")
    for word in ("ecs-eth0", "169.254.172.2", "lo", "127.0.0.1", "--advertise-addr"):
        check(word in err, f"the message does not list {word!r}: {err}")
    check(jt.read_json(dump) is None, "payload started with nothing to advertise")
    check(not mgr.find("job_id"), "the agent checked in before knowing what to advertise")
    no_link_local_connect_back(mgr)
    check(COOKIE not in err, "cookie in stderr")


def case_fallback_to_eth0(lab, pairs):
    """The connection's own address is link-local: the agent advertises eth0 instead."""
    mgr_node, node = pairs["eth"]
    mgr, agent, rc, dump, status = mnp_run(lab, mgr_node, node, "eth")
    check(rc == 0, f"agent exited {rc}: {agent.stderr()}")
    ws = mgr.workers()
    check(len(ws) == 1 and ws[0].get("addr") == "198.18.6.2" and ws[0].get("cookie_ok"),
          f"manager events {mgr.events()}")
    accepted = mgr.find("accepted")
    check(accepted and accepted[0]["peer"].startswith("169.254.172.2:"),
          f"the check-in did not come from ecs-eth0 (test topology broken): {accepted}")
    env, _ = jt.env_of(jt.read_json(dump))
    check(env.get("BATCH_AGENT_NODE_ADDR") == "198.18.6.2",
          f"BATCH_AGENT_NODE_ADDR={env.get('BATCH_AGENT_NODE_ADDR')}")


def case_override_rescues(lab, pairs):
    """--advertise-addr: the operator's routable address is used as is."""
    mgr_node, node = pairs["ovr"]
    mgr, agent, rc, dump, status = mnp_run(lab, mgr_node, node, "ovr",
                                           ["--advertise-addr", "198.18.7.9"])
    check(rc == 0, f"agent exited {rc}: {agent.stderr()}")
    ws = mgr.workers()
    check(len(ws) == 1 and ws[0].get("addr") == "198.18.7.9" and ws[0].get("cookie_ok"),
          f"manager events {mgr.events()}")
    env, _ = jt.env_of(jt.read_json(dump))
    check(env.get("BATCH_AGENT_NODE_ADDR") == "198.18.7.9",
          f"BATCH_AGENT_NODE_ADDR={env.get('BATCH_AGENT_NODE_ADDR')}")
    started = [s for s in jt.read_json_lines(status) if s["event"] == "started"]
    check(started and started[0]["bind_addr"] == "198.18.7.9", f"worker status {started}")


def case_override_over_good_address(lab, pairs):
    """--advertise-addr wins even when the connection's address would do (a secondary
    address on eth0 of an ordinary cluster node)."""
    main, child = pairs["cluster"]
    mgr = jt.start_manager(lab, main, name="sec-mgr", workers=1, worker_timeout=10,
                           extra=["--cookie", COOKIE])
    mgr.wait_event("listening", 10 * jt.slow_factor())
    env = jt.mnp_env(1, 2, main_addr=main.eth0)
    dump = lab.path("sec.dump.json")
    agent = lab.start(child, jt.agent_argv(
        ["--protocol", "julia", "--connect-timeout", "10", "--advertise-addr", "198.18.5.102"],
        jt.worker_payload(dump)), env=env, name="sec-agent")
    rc = agent.wait(30 * jt.slow_factor())
    mgr.proc.wait(20 * jt.slow_factor())
    check(rc == 0, f"agent exited {rc}: {agent.stderr()}")
    ws = mgr.workers()
    check(len(ws) == 1 and ws[0].get("addr") == "198.18.5.102" and ws[0].get("cookie_ok"),
          f"manager events {mgr.events()}")
    accepted = mgr.find("accepted")
    check(accepted and accepted[0]["peer"].startswith(child.eth0 + ":"), f"{accepted}")


def case_override_invalid(lab, pairs):
    """A malformed --advertise-addr is a usage error found before the manager is ever
    contacted: a connection that closes without a job_id line ends the real
    AWSBatchNodeManager's (serial) registration for the whole cluster."""
    main, child = pairs["cluster"]
    mgr = jt.start_manager(lab, main, name="inv-mgr", workers=1, worker_timeout=10,
                           extra=["--cookie", COOKIE])
    mgr.wait_event("listening", 10 * jt.slow_factor())
    for how, opts, extra_env, want in (
            ("flag", ["--advertise-addr", "eth0"], {}, 64),
            ("environment", [], {"BATCH_AGENT_ADVERTISE_ADDR": "198.18.5.300"}, jt.EX_CONFIG)):
        env = jt.mnp_env(1, 2, main_addr=main.eth0)
        env.update(extra_env)
        dump = lab.path(f"inv-{how}.dump.json")
        agent = lab.start(child, jt.agent_argv(
            ["--protocol", "julia", "--connect-timeout", "5", *opts],
            jt.worker_payload(dump)), env=env, name=f"inv-{how}-agent")
        rc = agent.wait(15 * jt.slow_factor())
        err = agent.stderr()
        check(rc == want, f"{how}: agent exited {rc}, expected {want}: {err}")
        check("advertise" in err.lower(), f"{how}: stderr: {err}")
        check(jt.read_json(dump) is None, f"{how}: payload started")
    check(not mgr.find("accepted"), f"the agent contacted the manager: {mgr.events()}")
    mgr.proc.kill()


def main():
    def topology(lab):
        pairs = {
            "bare": link_local_pair(lab, "bare", with_eth0=False),
            "eth": link_local_pair(lab, "eth", with_eth0=True),
            "ovr": link_local_pair(lab, "ovr", with_eth0=False, node_extra_lo="198.18.7.9"),
        }
        main_node, child = lab.cluster(5, 1)
        child.ip("addr", "add", "198.18.5.102/24", "dev", "eth0")
        pairs["cluster"] = (main_node, child)
        return pairs

    return jt.run_script("julia_address", topology, [
        ("only lo and a link-local route to the manager => 78 listing interfaces",
         case_nothing_usable),
        ("link-local connection, eth0 present => eth0 advertised", case_fallback_to_eth0),
        ("--advertise-addr rescues the link-local-only node", case_override_rescues),
        ("--advertise-addr wins over the connection's address", case_override_over_good_address),
        ("--advertise-addr not an IP => 64/78 before contacting the manager",
         case_override_invalid),
    ])


if __name__ == "__main__":
    sys.exit(main())
