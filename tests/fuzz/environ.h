/* The fuzz input as an environment block: NUL-separated NAME=VALUE entries, as
 * /proc/PID/environ holds them. For the targets that read the environment. */
#ifndef BATCH_AGENT_FUZZ_ENVIRON_H
#define BATCH_AGENT_FUZZ_ENVIRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Calls each(entry, ctx) for every entry of data (a NUL-terminated copy, cut at
 * NULs); false when an allocation failed. */
typedef void (*environ_entry_fn)(char *entry, void *ctx);
bool environ_each(const uint8_t *data, size_t size, environ_entry_fn each, void *ctx);

/* Sets "NAME=VALUE" in the (cleared) environment; entries without '=' or with an
 * empty name are skipped. */
void environ_set(const char *entry);

#endif
