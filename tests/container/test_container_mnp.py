"""A 3-node multi-node parallel job in real containers: a podman bridge network in
198.18.0.0/15 with static IPs, the agent as the ENTRYPOINT of every node (the bookworm
and busybox worker images, mixed), the AWS_BATCH_* environment as Batch sets it.
Checks the rendezvous, the node list the main payload gets, that the children are shut
down when the main payload ends, and that every container exits 0."""

import os
import shutil
import tempfile

import containertest as ct
import mnp
import netns
from agenttest import check, check_eq, wait_for

PORT = 49152


def main():
    ct.require_podman()
    b, c = netns.subnet_octets()
    prefix = "198.%d.%d" % (b, c)
    network = "ba-test-mnp-%d" % os.getpid()
    addrs = {i: "%s.%d" % (prefix, 10 + i) for i in range(3)}
    images = {0: ct.image("ba-worker-bookworm"), 1: ct.image("ba-worker-busybox"), 2: ct.image("ba-worker-trixie")}
    names = {i: "%s-node%d" % (network, i) for i in range(3)}
    job = mnp.Job(3)
    shared = tempfile.mkdtemp(prefix="ba-mnp-shared-")
    ct.podman("network", "create", "--subnet", prefix + ".0/24", "--gateway", prefix + ".1", network, timeout=60)
    try:
        # The main payload ends at once, and its end shuts the children down: it first waits
        # (bounded) for each child's payload to have printed, through a directory the three
        # containers share, or a child's SIGTERM could beat its echo on a busy machine.
        main_payload = ('n=0; until [ -e /shared/ready-1 ] && [ -e /shared/ready-2 ]; do'
                        ' n=$((n+1)); [ $n -lt 1200 ] || exit 9; sleep 0.1; done;'
                        ' echo "hostfile:"; cat "$BATCH_AGENT_HOSTFILE"; echo "nodes=$BATCH_AGENT_NODES"')
        child_payload = ('echo "child at $BATCH_AGENT_NODE_ADDR, manager $BATCH_AGENT_MANAGER";'
                         ' : > /shared/ready-$AWS_BATCH_JOB_NODE_INDEX; exec sleep 1000')
        for i in (1, 2, 0):  # children first: they dial the main with backoff until it listens
            env = job.env(i, main_addr=addrs[0])
            # Only what Batch and the job set: the host's own (TMPDIR, PATH...) has no
            # meaning inside the image.
            env_args = [a for k, v in env.items() if k.startswith(("AWS_BATCH_", "BATCH_AGENT_"))
                        for a in ("-e", "%s=%s" % (k, v))]
            ct.podman("run", "-d", "--name", names[i], "--network", network, "--ip", addrs[i], *env_args,
                      "-v", shared + ":/shared",
                      images[i], "--grace", "5", "--wait-timeout", "60", "--connect-timeout", "60", "--",
                      "/bin/sh", "-c", main_payload if i == 0 else child_payload, timeout=120)
        states = {}
        for i in (0, 1, 2):
            wait_for(lambda: (ct.container_state(names[i]) or {}).get("Status") == "exited", 90,
                     "node %d to exit" % i, interval=0.2)
            states[i] = ct.container_state(names[i])
        logs = {i: ct.podman("logs", names[i], check=False, timeout=60) for i in (0, 1, 2)}
        for i in (0, 1, 2):
            print("# node %d: exit %s\n%s%s" % (i, states[i]["ExitCode"], logs[i].stdout, logs[i].stderr))
        out = logs[0].stdout
        check("hostfile:\n%s\n%s\n%s\n" % (addrs[0], addrs[1], addrs[2]) in out,
              "the main payload's hostfile lists the nodes in index order: %r" % out)
        check_eq(out.split("nodes=")[1].strip(), ",".join(addrs[i] for i in range(3)), "BATCH_AGENT_NODES")
        for i in (1, 2):
            check("child at %s, manager %s:%d" % (addrs[i], addrs[0], PORT) in logs[i].stdout,
                  "node %d's payload ran with its address and the manager's" % i)
        for i in (0, 1, 2):
            check_eq(states[i]["ExitCode"], 0, "node %d's exit status" % i)
    finally:
        ct.remove(*names.values())
        ct.podman("network", "rm", "--force", network, check=False, timeout=60)
        shutil.rmtree(shared, ignore_errors=True)


if __name__ == "__main__":
    ct.run_cases([("mnp_3_containers", main)])
