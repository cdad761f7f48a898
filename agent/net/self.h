/* What this node tells its manager about itself: the address to advertise, and the
 * CPUs and memory the container may use.
 *
 * The address is --advertise-addr, else (under ECS in awsvpc mode) the task's private
 * IPv4 from the task metadata endpoint, else the local address of the connection to
 * the manager (see address_advertised). The limits come from the task metadata when
 * present, else from the cgroup the container runs in. */
#ifndef BATCH_AGENT_SELF_H
#define BATCH_AGENT_SELF_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "status.h"

struct node_self {
	char address[64];
	bool have_address;    /* from the task metadata: the connection need not say */
	double cpus;          /* 0 when unknown */
	int64_t memory_bytes; /* -1 when unlimited or unknown */
};

/* Limits and, from the task metadata (which may take up to 15 s to answer), the
 * address: once, before dialing, so that it never eats into the manager's 10 s
 * handshake deadline nor repeats on each redial. BA_OK, or 128+N when a terminating
 * signal came meanwhile. */
enum ba_status self_describe_node(const struct config *cfg, struct node_self *out);
/* After connecting: the address from --advertise-addr or the connection, unless
 * self_describe_node already chose one. */
enum ba_status self_fill_address(const struct config *cfg, int manager_fd, struct node_self *out);

#endif
