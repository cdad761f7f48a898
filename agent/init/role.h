/* Stage 2: the role. auto becomes main on the MNP main node, worker on the other MNP
 * nodes or when a manager address is given, and init otherwise. */
#ifndef BATCH_AGENT_ROLE_H
#define BATCH_AGENT_ROLE_H

#include "config.h"
#include "status.h"

enum ba_status role_decide(const struct config *cfg, enum role *out);

/* Stages 1 and 2, as every program of the agent starts: config_load, then
 * role_decide. BA_OK with cfg->answered (and no role) after --help or --version. */
enum ba_status role_from_command_line(struct config *cfg, enum role *out, int argc, char **argv);

#endif
