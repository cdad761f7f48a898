/* The shared cookie: the one secret of the job.
 *
 * Read from --cookie-file or BATCH_AGENT_COOKIE (handed over by batch-agent in a
 * descriptor, see cookie_claim_handover). Once read, the variable is removed
 * from the environment (so the payload never inherits it) and its bytes are zeroed
 * where the kernel shows them in /proc/<pid>/environ. The agent's copy is wiped by
 * cookie_wipe as soon as authentication is over. It never reaches argv or logs. */
#ifndef BATCH_AGENT_COOKIE_H
#define BATCH_AGENT_COOKIE_H

#include <stddef.h>

#include "config.h"
#include "status.h"

#define COOKIE_MAX 4096

struct cookie {
	unsigned char *bytes;
	size_t length;
};

/* batch-agent hands BATCH_AGENT_COOKIE over in a sealed memfd whose number is in
 * BATCH_AGENT_COOKIE_FD (init/chainload.c), so that it is in no environment block of
 * ours. Called first thing: marks that descriptor close-on-exec (no helper program or
 * payload inherits it) and drops the variable; cookie_load reads it, then closes it.
 * BA_EX_SOFTWARE when the variable names no open descriptor. */
enum ba_status cookie_claim_handover(void);

/* An empty cookie in memory of its own (util_secret_alloc) with room for COOKIE_MAX
 * bytes, for every cookie cookie_wipe frees. BA_OK or BA_EX_OSERR. */
enum ba_status cookie_alloc(struct cookie *out);

/* BA_OK; BA_EX_CONFIG when there is none or it is unusable (the message says why). */
enum ba_status cookie_load(const struct config *cfg, struct cookie *out);

/* Remove BATCH_AGENT_COOKIE from the environment and from /proc/self/environ even when
 * the role does not need it, so no payload ever inherits it. */
void cookie_scrub_environment(void);

void cookie_wipe(struct cookie *cookie);

#endif
