/* What this node tells its manager about itself: the address to advertise, and the
 * CPUs and memory the container may use.
 *
 * The address is --advertise-addr, else (under ECS in awsvpc mode) the task's private
 * IPv4 from the task metadata endpoint, else the local address of the connection to
 * the manager (see address_advertised). The limits come from the task metadata when
 * present, else from the cgroup the container runs in. */
#ifndef BATCH_AGENT_SELF_H
#define BATCH_AGENT_SELF_H

#include <stdint.h>

#include "config.h"

struct node_self {
	char address[64];
	double cpus;          /* 0 when unknown */
	int64_t memory_bytes; /* -1 when unlimited or unknown */
};

int self_describe(const struct config *cfg, int manager_fd, struct node_self *out);

#endif
