/* batch-agent: the table of contents.
 *
 *   config -> role -> discover -> dial -> handshake -> launch (exec | supervise) -> exit
 *
 * This binary holds the stages every role needs and the whole init role. The worker
 * and main roles continue in batch-agent-net (net/main.c), chain-loaded so that the
 * init role's start-up stays as light as tini's. */
#include <stdio.h>
#include <stdlib.h>

#include "chainload.h"
#include "config.h"
#include "launch.h"
#include "role.h"
#include "status.h"
#include "supervise.h"
#include "util.h"

int main(int argc, char **argv)
{
	struct config cfg;
	struct payload payload;
	enum role role;

	util_ensure_std_fds();
	enum ba_status rc = role_from_command_line(&cfg, &role, argc, argv);
	if (rc != BA_OK || cfg.answered)
		return rc;
	if (cfg.print_config)
		return config_print(&cfg, role, stdout);
	if (role != ROLE_INIT)
		return chainload_network_stages(argv);

	/* The cookie is of no use to an init: its value is zeroed where /proc/<pid>/environ
	 * shows it (the payload's environment never carries it). That block is what the
	 * runtime gave us and cannot shrink without CAP_SYS_RESOURCE (PR_SET_MM), so the
	 * zeros still tell its length: no longer dumpable, the block is closed to the
	 * payload's uid unless it has CAP_SYS_PTRACE. Without a cookie we stay as any init. */
	if (getenv("BATCH_AGENT_COOKIE") != NULL)
		util_protect_process();
	util_scrub_env("BATCH_AGENT_COOKIE");
	rc = launch_prepare(&payload, &cfg, NULL);
	if (rc != BA_OK)
		return rc;
	struct supervise_opts opts = supervise_opts_from_config(&cfg);
	if (cfg.exec)
		rc = launch_exec(&payload);
	else
		rc = supervise_run(&opts, &payload, NULL);
	launch_release(&payload);
	return rc;
}
