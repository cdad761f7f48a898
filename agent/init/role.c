/* Stage 2: which role this node plays. */
#include "role.h"

#include "batchenv.h"
#include "status.h"

static enum role role_automatic(const struct config *cfg)
{
	if (batchenv_is_mnp(&cfg->batch)) {
		if (cfg->batch.node_index != cfg->batch.main_node_index)
			return ROLE_WORKER;
		/* With the Julia dialect the manager is the main payload itself (it listens
		 * on the port): the agent is its init and nothing more. */
		return cfg->protocol == PROTOCOL_JULIA ? ROLE_INIT : ROLE_MAIN;
	}
	/* A pool to manage makes the main role; a manager to find, by address or through
	 * the Batch API, makes a worker. */
	if (cfg->workers > 0)
		return ROLE_MAIN;
	return cfg->manager != NULL || cfg->manager_param_given ? ROLE_WORKER : ROLE_INIT;
}

/* A conflict among flags alone is a bad command line; one the environment is part of
 * is bad configuration. */
static enum ba_status conflict(const struct config *cfg, const char *a, const char *b)
{
	return config_flagged(cfg, a) && (b == NULL || config_flagged(cfg, b)) ? BA_EX_USAGE : BA_EX_CONFIG;
}

/* The pool's settings need a pool, and some need --submit-workers. */
static enum ba_status check_pool(const struct config *cfg, enum role role)
{
	static const char *const needs_pool[] = { "min-workers", "notify", "submit-workers", NULL };
	static const char *const needs_submit[] = { "worker-job-definition", "worker-job-queue", "replace-drained", NULL };
	bool set[] = { cfg->min_workers > 0, cfg->notify_signal != 0, cfg->submit_workers };
	bool set_submit[] = { cfg->worker_job_definition != NULL, cfg->worker_job_queue != NULL, cfg->replace_drained };
	if (cfg->workers > 0 && batchenv_is_mnp(&cfg->batch)) {
		log_error("--workers (BATCH_AGENT_WORKERS) on a multi-node parallel job: its nodes are the MNP "
			  "rendezvous's; a worker pool runs in a single-node job");
		return BA_EX_CONFIG;
	}
	if (cfg->workers > 0 && role != ROLE_MAIN) {
		log_error("--workers (BATCH_AGENT_WORKERS) makes the main role, not %s", role == ROLE_WORKER ? "worker" : "init");
		return conflict(cfg, "workers", "role");
	}
	if (cfg->workers > 0 && cfg->manager != NULL) {
		log_error("--manager (BATCH_AGENT_MANAGER) with --workers: a pool's manager is dialed, it dials nobody");
		return conflict(cfg, "manager", "workers");
	}
	if (cfg->workers > 0 && cfg->min_nodes > 0) {
		log_error("--min-nodes (BATCH_AGENT_MIN_NODES) is for MNP jobs: a pool takes --min-workers");
		return conflict(cfg, "min-nodes", "workers");
	}
	for (size_t i = 0; needs_pool[i]; i++)
		if (set[i] && cfg->workers == 0) {
			log_error("--%s needs a worker pool (--workers N)", needs_pool[i]);
			return conflict(cfg, needs_pool[i], NULL);
		}
	for (size_t i = 0; needs_submit[i]; i++)
		if (set_submit[i] && !cfg->submit_workers) {
			log_error("--%s needs --submit-workers", needs_submit[i]);
			return conflict(cfg, needs_submit[i], NULL);
		}
	if (cfg->min_workers > cfg->workers) {
		log_error("--min-workers %ld is more than --workers %ld", cfg->min_workers, cfg->workers);
		return conflict(cfg, "min-workers", "workers");
	}
	return BA_OK;
}

enum ba_status role_decide(const struct config *cfg, enum role *out)
{
	enum role role = cfg->role == ROLE_AUTO ? role_automatic(cfg) : cfg->role;
	if (role == ROLE_MAIN && cfg->batch.num_nodes < 0 && cfg->workers == 0) {
		log_error("the main role needs AWS_BATCH_JOB_NUM_NODES (an MNP job: the nodes to wait for) or "
			  "--workers N (a worker pool)");
		return BA_EX_CONFIG;
	}
	enum ba_status rc = check_pool(cfg, role);
	if (rc != BA_OK)
		return rc;
	/* Conflicts: between flags alone a bad command line, else bad configuration. */
	bool main_flagged = cfg->role == ROLE_MAIN && config_flagged(cfg, "role");
	if (role == ROLE_MAIN && cfg->protocol == PROTOCOL_JULIA) {
		log_error("--role main with --protocol julia: the Julia manager is the main payload; use --role init or auto");
		return main_flagged && config_flagged(cfg, "protocol") ? BA_EX_USAGE : BA_EX_CONFIG;
	}
	if (role == ROLE_MAIN && cfg->exec) {
		log_error("--exec (BATCH_AGENT_EXEC) is not available in the main role%s: the manager keeps the "
			  "%s connections", cfg->role == ROLE_AUTO && cfg->workers == 0 ? " (this is the MNP main node)" : "",
			  cfg->workers > 0 ? "workers'" : "children's");
		return main_flagged && config_flagged(cfg, "exec") ? BA_EX_USAGE : BA_EX_CONFIG;
	}
	*out = role;
	return BA_OK;
}

enum ba_status role_from_command_line(struct config *cfg, enum role *out, int argc, char **argv)
{
	enum ba_status rc = config_load(cfg, argc, argv);
	if (rc != BA_OK || cfg->answered)
		return rc;
	return role_decide(cfg, out);
}
