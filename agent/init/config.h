/* Stage 1: configuration. Flags, their BATCH_AGENT_* environment twins (the flag wins)
 * and the AWS_BATCH_* variables Batch sets, parsed strictly into one struct that the
 * later stages only read. A bad input is logged with its name and gives BA_EX_USAGE
 * (flags) or BA_EX_CONFIG (environment).
 *
 * The cookie is deliberately not here: only its file's path is. The cookie is read by
 * the stage that uses it, so that no copy lives longer than needed. */
#ifndef BATCH_AGENT_CONFIG_H
#define BATCH_AGENT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "batchenv.h"
#include "log.h"
#include "status.h"

enum role { ROLE_AUTO, ROLE_INIT, ROLE_WORKER, ROLE_MAIN };
enum protocol { PROTOCOL_NATIVE, PROTOCOL_JULIA };
enum manager_loss { MANAGER_LOSS_EXIT, MANAGER_LOSS_CONTINUE };
enum spot_watch { SPOT_WATCH_AUTO, SPOT_WATCH_ON, SPOT_WATCH_OFF };
enum node_loss { NODE_LOSS_FAIL, NODE_LOSS_CONTINUE };
enum hostfile_format { HOSTFILE_PLAIN, HOSTFILE_OPENMPI, HOSTFILE_MPICH };
enum payload_start { PAYLOAD_START_ROSTER, PAYLOAD_START_REGISTERED };

#define CONFIG_NODE_RANGES_MAX 16

/* --nodes: node index ranges in Batch's syntax ("0:3", "4:", ":2", "5"); hi -1: open. */
struct node_range {
	long lo, hi;
};

#define CONFIG_DEFAULT_PORT 49152 /* the port AWSClusterManagers.jl uses */

/* --spot-hold: after a Spot interruption notice, the container stays up once the
 * payload has ended, until the host goes or the notice's time plus this margin has
 * passed. The margin covers the host's own shutdown, which starts at that time. */
#define CONFIG_SPOT_HOLD_DEFAULT_MS ((int64_t)30 * 1000)
#define CONFIG_SPOT_HOLD_OFF ((int64_t)-1)

/* --remap-exit and --rewrite-signal: FROM:TO pairs, each FROM at most once. A fixed
 * table: a job needs a handful, and a 17th pair is refused rather than allocated. */
#define CONFIG_PAIRS_MAX 16
struct config_pair {
	int from, to;
};
struct config_pairs {
	struct config_pair pair[CONFIG_PAIRS_MAX];
	size_t count;
};

/* TO for FROM, or FROM itself when no pair starts with it (one lookup, no chaining). */
int config_pairs_map(const struct config_pairs *pairs, int from);

struct config {
	/* init and launch (issue: foundation) */
	enum role role;
	bool exec;              /* --exec: replace the agent with the payload */
	bool group;             /* -g: signal the payload's process group */
	int64_t grace_ms;       /* --grace */
	enum log_level log_level;
	enum log_format log_format;
	bool print_config;
	bool answered;          /* --help or --version printed: nothing more to do */
	const char *seccomp_profile; /* --seccomp-profile: the payload's, Docker format */
	bool no_new_privs;           /* --no-new-privs: for the payload */
	struct config_pairs remap_exit;     /* --remap-exit: the payload's status -> the agent's */
	struct config_pairs rewrite_signal; /* --rewrite-signal: received -> forwarded; TO 0 drops */

	/* connect-back (native protocol, worker and main roles) */
	const char *manager;     /* --manager HOST:PORT as given, or NULL */
	long port;               /* --port */
	const char *cookie_file; /* --cookie-file, or NULL: then BATCH_AGENT_COOKIE */
	int64_t connect_timeout_ms;
	int64_t wait_timeout_ms;
	long min_nodes;          /* --min-nodes; -1 means all nodes */
	const char *nodes_text;  /* --nodes as given, or NULL: every node runs the agent */
	struct node_range node_ranges[CONFIG_NODE_RANGES_MAX];
	size_t node_range_count;
	enum node_loss on_node_loss; /* --on-node-loss */
	enum payload_start payload_start;     /* --payload-start: a child's payload waits for the roster */
	long ready_port;                      /* --ready-port: a child is ready when it accepts; 0: started */
	enum hostfile_format hostfile_format; /* --hostfile-format */
	bool env_torch;                       /* --env torch: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, NODE_RANK */
	enum manager_loss on_manager_loss;
	int64_t heartbeat_ms;    /* --heartbeat: interval; loss after 3 intervals of silence */
	enum protocol protocol;
	const char *advertise_addr;

	/* worker pools (the main role outside MNP) */
	long workers;                      /* --workers N: a pool of N; 0 when not a pool */
	long min_workers;                  /* --min-workers; -1 means all */
	int notify_signal;                 /* --notify: sent to PROGRAM on each membership change; 0 none */
	bool submit_workers;               /* --submit-workers: SubmitJob the pool ourselves */
	const char *worker_job_definition; /* default: the manager's own */
	const char *worker_job_queue;      /* default: AWS_BATCH_JQ_NAME */
	bool replace_drained;              /* --replace-drained: submit a replacement per drained worker */

	/* AWS endpoints */
	const char *manager_param;   /* --manager-param, default "manager" */
	bool manager_param_given;    /* set by flag or environment: this node is a worker */
	const char *aws_endpoint_url;
	enum spot_watch spot_watch;
	int spot_signal;
	int64_t spot_hold_ms;        /* --spot-hold: the margin past the notice's time, or OFF */

	struct batch_env batch;

	/* The payload: PROGRAM [ARG...], pointing into the process's argv. */
	int payload_argc;
	char **payload_argv;
	/* Settings the command line gave (bit i: the i-th of config.c's table): a conflict
	 * among flags alone is a bad command line (64), one that involves the environment
	 * is bad configuration (78). */
	uint64_t flagged;
};

/* Whether the command line gave --NAME (rather than the environment or a default). */
bool config_flagged(const struct config *cfg, const char *name);

/* Parse argv and the environment. On BA_OK the struct is complete, or, after a help
 * or version request, cfg->answered is set: it printed the answer, and the program
 * exits 0. */
enum ba_status config_load(struct config *cfg, int argc, char **argv);

/* --print-config: the resolved configuration as one JSON object (cJSON), with the
 * role the agent would take. */
enum ba_status config_print(const struct config *cfg, enum role resolved_role, FILE *out);


/* The usage text, for --help and for usage errors. */
void config_usage(FILE *out);

#endif
