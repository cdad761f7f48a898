/* The peer view: what every payload of an MNP job learns about the nodes that run the
 * agent, the same on the main node and on every child (PROTOCOL.md §4.1, README
 * "The peer view"):
 *
 *   BATCH_AGENT_NODES      the nodes' addresses in node-index order, comma-separated
 *   BATCH_AGENT_HOSTFILE   a file of the same, one a line (--hostfile-format)
 *   BATCH_AGENT_NODE_RANK  this node's place in that order, from 0
 *   BATCH_AGENT_NUM_NODES  how many
 *   --env torch            MASTER_ADDR (rank 0's address), MASTER_PORT (29500 unless
 *                          the environment sets it), WORLD_SIZE, NODE_RANK
 */
#ifndef BATCH_AGENT_PEERVIEW_H
#define BATCH_AGENT_PEERVIEW_H

#include <limits.h>
#include <stddef.h>

#include "address.h"
#include "config.h"
#include "launch.h"
#include "status.h"

struct peerview_node {
	long index;          /* AWS_BATCH_JOB_NODE_INDEX */
	const char *address;
	double cpus;         /* 0 when unknown: the hostfile gives no slot count */
};

#define PEERVIEW_ENV_MAX 8
#define PEERVIEW_LINE_MAX (ADDRESS_ADVERTISED_MAX + 32) /* a hostfile line, slots included */

struct peer_view {
	char hostfile[PATH_MAX]; /* "" until written */
	char *nodes;             /* owned */
	char *env[PEERVIEW_ENV_MAX + 1]; /* owned NAME=VALUE strings, NULL-terminated */
};

/* nodes[0..count-1] in node-index order; rank is this node's place. Writes the
 * hostfile (in TMPDIR, else /tmp) and builds the variables. BA_EX_OSERR (logged)
 * when the hostfile cannot be written, BA_EX_CONFIG when MASTER_PORT is not a port. */
enum ba_status peerview_make(struct peer_view *view, const struct config *cfg, const struct peerview_node *nodes,
			     size_t count, size_t rank);
/* One hostfile line in format (at most PEERVIEW_LINE_MAX bytes): Open MPI reads
 * "ADDR slots=N", MPICH's Hydra "ADDR:N", N the whole CPUs, at least 1; no count when
 * cpus is 0 (unknown), and both then give the host one slot. Returns its length. */
size_t peerview_hostfile_line(enum hostfile_format format, const char *address, double cpus, char *out, size_t size);
/* The view as the payload's variables: vars' hostfile, nodes and extra_env. */
void peerview_vars(const struct peer_view *view, struct launch_vars *vars);
/* Removes the hostfile and frees the rest; safe on a zeroed view. */
void peerview_release(struct peer_view *view);

#endif
