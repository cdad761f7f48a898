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
	/* A manager to find, by address or through the Batch API, makes a worker. */
	return cfg->manager != NULL || cfg->manager_param_given ? ROLE_WORKER : ROLE_INIT;
}

enum ba_status role_decide(const struct config *cfg, enum role *out)
{
	enum role role = cfg->role == ROLE_AUTO ? role_automatic(cfg) : cfg->role;
	if (role == ROLE_MAIN && cfg->batch.num_nodes < 0) {
		log_error("the main role needs AWS_BATCH_JOB_NUM_NODES (the number of nodes to wait for)");
		return BA_EX_CONFIG;
	}
	/* Conflicts: between flags alone a bad command line, else bad configuration. */
	bool main_flagged = cfg->role == ROLE_MAIN && config_flagged(cfg, "role");
	if (role == ROLE_MAIN && cfg->protocol == PROTOCOL_JULIA) {
		log_error("--role main with --protocol julia: the Julia manager is the main payload; use --role init or auto");
		return main_flagged && config_flagged(cfg, "protocol") ? BA_EX_USAGE : BA_EX_CONFIG;
	}
	if (role == ROLE_MAIN && cfg->exec) {
		log_error("--exec (BATCH_AGENT_EXEC) is not available in the main role%s: the rendezvous keeps the "
			  "children's connections", cfg->role == ROLE_AUTO ? " (this is the MNP main node)" : "");
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
