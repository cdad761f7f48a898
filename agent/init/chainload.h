/* The network roles live in batch-agent-net, so that the init role never loads
 * OpenSSL (it would double the agent's start-up time and memory). batch-agent
 * chain-loads it with execve: same PID (PID 1 stays PID 1), same arguments, same
 * environment, same inherited signal state. */
#ifndef BATCH_AGENT_CHAINLOAD_H
#define BATCH_AGENT_CHAINLOAD_H

#include "status.h"

/* Returns only on failure, with the exit status. */
enum ba_status chainload_network_stages(char **argv);

/* Path of a helper program installed with the agent: next to the running binary
 * (build tree, flat install), then in the libexec directory. BA_OK or BA_EX_SOFTWARE. */
enum ba_status chainload_find_helper(const char *name, char *path, unsigned long size);

#endif
