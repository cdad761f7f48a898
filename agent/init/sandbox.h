/* The payload's sandbox: a Docker-format seccomp profile (--seccomp-profile, parsed with
 * cJSON into a libseccomp filter) and no_new_privs (--no-new-privs), entered in the
 * forked child just before exec.
 *
 * Profile format (Docker/moby's): defaultAction, defaultErrnoRet, architectures,
 * syscalls[] with names (or name), action, errnoRet, args[] {index, value, valueTwo,
 * op}, and includes/excludes {arches, caps, minKernel}, evaluated as Docker does against
 * this machine and the agent's effective capabilities. Every error names the file and
 * the entry, and is BA_EX_CONFIG. */
#ifndef BATCH_AGENT_SANDBOX_H
#define BATCH_AGENT_SANDBOX_H

#include <stdbool.h>

#include "status.h"

struct sandbox;

/* NULL in *out (and BA_OK) when there is nothing to do: no profile, no no_new_privs. */
enum ba_status sandbox_load(const char *profile_path, bool no_new_privs, struct sandbox **out);

/* In the forked child, just before exec; the agent is single-threaded, so the
 * allocation in seccomp_load is safe after fork. 0, or the errno that failed. */
int sandbox_enter(const struct sandbox *sandbox);

void sandbox_free(struct sandbox *sandbox);

#endif
