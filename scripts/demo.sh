#!/usr/bin/env bash
# The demo: a multi-node parallel (MNP) job on this machine. One main node and three
# children, each in its own network namespace with its own address, as Batch runs them
# on four instances. The children start first (as they often do); the main node's
# agent is the rendezvous that waits for them, then starts the main payload with the
# hostfile. When the main payload ends, every child is shut down.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build/release >/dev/null
agent=$PWD/build/release/agent/batch-agent

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it creates network namespaces)" >&2
  exit 1
fi

tag=bademo$$
subnet=198.18.200
nodes=4
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for i in $(seq 0 $((nodes - 1))); do
    ip netns pids "${tag}n$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "${tag}n$i" 2>/dev/null || true
  done
  ip netns del "${tag}sw" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A switch (a bridge in a namespace of its own) and one namespace per node.
ip netns add "${tag}sw"
ip -n "${tag}sw" link add br0 type bridge
ip -n "${tag}sw" link set br0 up
for i in $(seq 0 $((nodes - 1))); do
  ns=${tag}n$i
  ip netns add "$ns"
  ip link add "eth0" netns "$ns" type veth peer name "p$i" netns "${tag}sw"
  ip -n "${tag}sw" link set "p$i" master br0 up
  ip -n "$ns" addr add "$subnet.$((i + 10))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

job=$(cat /proc/sys/kernel/random/uuid)
# The shared cookie: in Batch, a secret injected as BATCH_AGENT_COOKIE.
export BATCH_AGENT_COOKIE=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
export AWS_BATCH_JOB_NUM_NODES=$nodes AWS_BATCH_JOB_MAIN_NODE_INDEX=0 AWS_BATCH_JOB_ATTEMPT=1
export AWS_BATCH_JQ_NAME=demo-queue AWS_BATCH_CE_NAME=demo-ce

# What each child runs: say who it is and where its manager is, then work until the
# main node's agent tells it to stop.
child_payload='echo "payload on node $AWS_BATCH_JOB_NODE_INDEX: I am {{NODE_ADDR}}, my manager is $BATCH_AGENT_MANAGER"
trap "echo \"payload on node $AWS_BATCH_JOB_NODE_INDEX: asked to stop, bye\"; exit 0" TERM
while :; do sleep 0.2; done'

# What the main node runs: show the hostfile it was given, as an MPI launcher would read it.
main_payload='echo "main payload: BATCH_AGENT_NODES=$BATCH_AGENT_NODES"
echo "main payload: hostfile $BATCH_AGENT_HOSTFILE:"; sed "s/^/    /" "$BATCH_AGENT_HOSTFILE"
echo "main payload: working for 2 s"; sleep 2; echo "main payload: done"'

prefix() { sed -u "s/^/[node $1] /"; }

echo "== $nodes-node MNP job $job on $subnet.0/24: starting the children first"
for i in $(seq 1 $((nodes - 1))); do
  AWS_BATCH_JOB_ID="$job#$i" AWS_BATCH_JOB_NODE_INDEX=$i \
  AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS=$subnet.10 \
    ip netns exec "${tag}n$i" "$agent" --grace 3 -- sh -c "$child_payload" 2>&1 | prefix "$i" &
  pids+=($!)
done
sleep 1
echo "== starting the main node"
set +e
AWS_BATCH_JOB_ID="$job#0" AWS_BATCH_JOB_NODE_INDEX=0 \
  ip netns exec "${tag}n0" "$agent" --grace 3 -- sh -c "$main_payload" 2>&1 | prefix 0
status=${PIPESTATUS[0]}
wait "${pids[@]}"
set -e
echo "== the main node's agent exited with status $status; every child has been shut down"
exit "$status"
