/* The handshakes in progress on the manager, for admission (PROTOCOL.md §3,
 * "Admission"): counted per source address, and the ones whose peer has not sent its
 * first message yet ("silent") kept oldest first, across all sources and per source.
 *
 * The verdict for a newcomer: admit it; or make room by evicting the oldest silent
 * peer (of its own source when that source is at its cap, of anyone when the manager
 * is at its global cap); or, when nobody to evict is silent, answer it busy. So a host
 * that opens idle connections only ever evicts its own, and a peer that speaks at once,
 * as every worker does, is never the one pushed out.
 *
 * Loopback sources (127.0.0.0/8) have no cap of their own: they are processes on this
 * host, which a per-address cap cannot tell apart, and no remote host can send from
 * them. They still count against the global cap. */
#ifndef BATCH_AGENT_PENDING_H
#define BATCH_AGENT_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Handshakes at once from one non-loopback address: a node needs one, two while the
 * close of a connection it redials from is still on its way to us; 16 leaves room for
 * several containers behind one NAT address dialing at the same moment. */
#define PENDING_PER_SOURCE_MAX 16

struct pending_source;

struct pending_entry;
struct pending_link {
	struct pending_entry *prev, *next;
};
struct pending_list {
	struct pending_entry *oldest, *newest;
};

/* Embedded in whatever the caller tracks per handshake. */
struct pending_entry {
	struct pending_source *source;
	bool silent;              /* its first message has not arrived */
	struct pending_link all;  /* among the silent ones of all sources, oldest first */
	struct pending_link own;  /* among the silent ones of its source, oldest first */
};

struct pending {
	struct pending_source **buckets;
	size_t bucket_mask;
	struct pending_list silent; /* all sources */
	size_t count;                          /* handshakes in progress */
	size_t max;                            /* the global cap */
	size_t per_source_max;
};

enum pending_verdict { PENDING_ADMIT, PENDING_EVICT, PENDING_BUSY };

/* BA_OK, or BA_EX_OSERR without memory. */
enum ba_status pending_init(struct pending *pd, size_t max, size_t per_source_max);
void pending_free(struct pending *pd);

/* What to do with a newcomer from addr (IPv4, network order). For PENDING_EVICT,
 * *victim is the silent entry to end (pending_remove it) before adding the newcomer. */
enum pending_verdict pending_verdict(const struct pending *pd, uint32_t addr, struct pending_entry **victim);
/* Count e, silent, for addr. BA_EX_OSERR without memory (e is not counted). */
enum ba_status pending_add(struct pending *pd, struct pending_entry *e, uint32_t addr);
/* e's first message arrived: it is no longer a candidate for eviction. */
void pending_heard(struct pending *pd, struct pending_entry *e);
/* e's handshake is over (registered, refused, gone). */
void pending_remove(struct pending *pd, struct pending_entry *e);

#endif
