/* batch-agent-net: the worker and main roles, chain-loaded by batch-agent.
 *
 *   config -> role -> discover -> dial -> handshake -> launch (exec | supervise) -> exit
 *
 *   worker.c      the worker: discover, dial, handshake, then session.c beside the payload
 *   rendezvous.c  the main role of an MNP job: listener.c admits the children (admit.c
 *                 checks them), then the main payload starts with the node list
 *   pool.c        the main role of a worker pool: the same listener; members.c keeps
 *                 the membership, pooljobs.c submits and stops the workers' jobs
 *   manager.c     what both main roles share: the loop, the cookie, the phases, the end
 *   conn.c        a protocol connection in the event loop, for every role */
#include <openssl/crypto.h>

#include "config.h"
#include "cookie.h"
#include "pool.h"
#include "rendezvous.h"
#include "role.h"
#include "signals.h"
#include "status.h"
#include "util.h"
#include "worker.h"

int main(int argc, char **argv)
{
	struct config cfg;
	enum role role;

	/* This process holds the cookie: no core dump, no /proc/<pid>/mem for the payload
	 * (the execve that started us reset batch-agent's setting); and the descriptor it
	 * came in must reach no helper program or payload. */
	util_protect_process();
	enum ba_status rc = cookie_claim_handover();
	if (rc != BA_OK)
		return rc;
	rc = role_from_command_line(&cfg, &role, argc, argv);
	if (rc != BA_OK || cfg.answered)
		return rc;
	/* Before anything that can wait: a SIGTERM while we dial or rendezvous must end
	 * the agent promptly, even as PID 1 where the default action is nothing. */
	rc = signals_take_over();
	if (rc != BA_OK)
		return rc;
	/* We use fixed algorithms of the default provider (X25519, SHA-256, HKDF,
	 * ChaCha20-Poly1305; randomness from getrandom): the system's openssl.cnf has
	 * nothing to add, and reading it costs every worker a file parse. */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
	if (role == ROLE_MAIN && cfg.workers > 0)
		return pool_run(&cfg);
	if (role == ROLE_MAIN)
		return rendezvous_run(&cfg);
	return worker_run(&cfg);
}
