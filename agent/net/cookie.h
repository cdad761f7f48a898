/* The shared cookie: the one secret of the job.
 *
 * Read from --cookie-file or BATCH_AGENT_COOKIE. Once read, the variable is removed
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

/* BA_OK; BA_EX_CONFIG when there is none or it is unusable (the message says why). */
enum ba_status cookie_load(const struct config *cfg, struct cookie *out);

/* Remove BATCH_AGENT_COOKIE from the environment and from /proc/self/environ even when
 * the role does not need it, so no payload ever inherits it. */
void cookie_scrub_environment(void);

void cookie_wipe(struct cookie *cookie);

#endif
