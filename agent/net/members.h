/* A worker pool's membership: who registered, in which state, and the files PROGRAM
 * reads it from.
 *
 * Order, everywhere (hostfile, BATCH_AGENT_NODES, the membership file): array children
 * by array index, then separate jobs in the order they first registered.
 *
 * The membership file (BATCH_AGENT_MEMBERS) is JSON, rewritten atomically (a new file
 * renamed over the old) on each change, so that a reader sees one whole version:
 *   {"generation": G, "workers_wanted": N, "joined": J, "members": [
 *      {"job_id": "...", "array_index": I|null, "address": "...", "hostname": "...",
 *       "cpus": C|null, "memory_limit_bytes": M|null, "state": "joined|draining|lost|exited",
 *       "exit_code": E|null, "exit_signal": S|null, "drain_reason": "..."|null}, ...]} */
#ifndef BATCH_AGENT_MEMBERS_H
#define BATCH_AGENT_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "address.h"
#include "config.h"
#include "status.h"

#define MEMBERS_JOB_ID_MAX 128
#define MEMBERS_ARRAY_MAX 10000 /* children of one Batch array job */

enum member_state { MEMBER_JOINED, MEMBER_DRAINING, MEMBER_LOST, MEMBER_EXITED, MEMBER_STATE_COUNT };

struct peer;

struct member {
	char job_id[MEMBERS_JOB_ID_MAX + 1];
	long array_index; /* -1: a separate job */
	long arrival;     /* order of its first registration */
	char address[ADDRESS_ADVERTISED_MAX + 1];
	char hostname[256];
	double cpus;          /* 0: unknown */
	int64_t memory_bytes; /* -1: unknown */
	long attempt;         /* AWS_BATCH_JOB_ATTEMPT as registered; 0: unknown */
	enum member_state state;
	struct peer *peer; /* while connected */
	bool exit_reported;
	bool stopped_by_us; /* its payload's end was reported after our shutdown */
	bool signaled;
	int exit_value; /* the payload's exit code, or its signal */
	char drain_reason[96];
	char *json; /* this member's entry of the membership file, until it changes */
	size_t json_length;
};

struct members {
	struct member **all;
	size_t count, capacity;
	struct member **by_index; /* array children, MEMBERS_ARRAY_MAX slots */
	long joined;              /* in state MEMBER_JOINED */
	long generation;
	char dir[256];            /* ours, with the hostfile and the membership file */
	char path[300];           /* the membership file */
	char hostfile[300];
};

/* BA_OK, or BA_EX_OSERR (logged) when memory or the directory (in TMPDIR) fails. */
enum ba_status members_init(struct members *ms);
/* Remove the files and the directory, free everything. */
void members_free(struct members *ms);

/* The member with this identity (the array index where there is one, else the job id). */
struct member *members_find(const struct members *ms, const char *job_id, long array_index);
/* A new member, in state MEMBER_LOST until members_set_state. */
enum ba_status members_add(struct members *ms, const char *job_id, long array_index, struct member **out);
void members_set_state(struct members *ms, struct member *m, enum member_state state);
/* m changed otherwise (its fields were written): its entry is rendered again. */
void members_touch(struct member *m);
const char *members_state_name(enum member_state state);

/* The joined members' addresses, in order, comma-separated (BATCH_AGENT_NODES), and
 * in *lines their hostfile, one a line in format; *count of them. NULL (and *lines
 * NULL) without memory. */
char *members_addresses(const struct members *ms, long *count, enum hostfile_format format, char **lines);
/* The hostfile (members_addresses' lines), with one write(2). */
enum ba_status members_write_hostfile(const struct members *ms, const char *lines);
/* The membership file, generation incremented, atomically. */
enum ba_status members_write_file(struct members *ms, long wanted);

#endif
