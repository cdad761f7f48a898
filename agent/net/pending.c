/* The handshakes in progress: a chained hash table of source addresses, each with its
 * count and its silent entries, and one list of all silent entries, oldest first. Every
 * operation is O(1) but the lookup of a source (one short chain). */
#include "pending.h"

#include <arpa/inet.h>
#include <stdlib.h>

struct pending_source {
	uint32_t addr; /* network order */
	size_t count;
	struct pending_list silent;
	struct pending_source *next;           /* in the bucket */
};

enum ba_status pending_init(struct pending *pd, size_t max, size_t per_source_max)
{
	size_t buckets = 64;
	while (buckets < max && buckets < ((size_t)1 << 20))
		buckets *= 2;
	*pd = (struct pending){ .buckets = calloc(buckets, sizeof *pd->buckets), .bucket_mask = buckets - 1,
				.max = max, .per_source_max = per_source_max };
	return pd->buckets ? BA_OK : BA_EX_OSERR;
}

void pending_free(struct pending *pd)
{
	for (size_t i = 0; pd->buckets && i <= pd->bucket_mask; i++) {
		while (pd->buckets[i]) {
			struct pending_source *s = pd->buckets[i];
			pd->buckets[i] = s->next;
			free(s);
		}
	}
	free(pd->buckets);
	*pd = (struct pending){ 0 };
}

static struct pending_source **bucket_of(const struct pending *pd, uint32_t addr)
{
	uint32_t h = addr * 2654435761u; /* Knuth's multiplicative hash */
	return &pd->buckets[(h ^ (h >> 16)) & pd->bucket_mask];
}

static struct pending_source *find_source(const struct pending *pd, uint32_t addr)
{
	struct pending_source *s = *bucket_of(pd, addr);
	while (s && s->addr != addr)
		s = s->next;
	return s;
}

/* e's links in one of its two lists: own (its source's) or all. */
static struct pending_link *link_in(struct pending_entry *e, bool own)
{
	return own ? &e->own : &e->all;
}

static void list_push(struct pending_list *l, struct pending_entry *e, bool own)
{
	*link_in(e, own) = (struct pending_link){ .prev = l->newest };
	if (l->newest)
		link_in(l->newest, own)->next = e;
	else
		l->oldest = e;
	l->newest = e;
}

static void list_unlink(struct pending_list *l, struct pending_entry *e, bool own)
{
	struct pending_link *k = link_in(e, own);
	if (k->prev)
		link_in(k->prev, own)->next = k->next;
	else
		l->oldest = k->next;
	if (k->next)
		link_in(k->next, own)->prev = k->prev;
	else
		l->newest = k->prev;
	*k = (struct pending_link){ 0 };
}

static bool is_loopback(uint32_t addr)
{
	return (ntohl(addr) >> 24) == 127;
}

enum pending_verdict pending_verdict(const struct pending *pd, uint32_t addr, struct pending_entry **victim)
{
	const struct pending_source *s = find_source(pd, addr);
	*victim = NULL;
	if (s && !is_loopback(addr) && s->count >= pd->per_source_max)
		*victim = s->silent.oldest;
	else if (pd->count >= pd->max)
		*victim = pd->silent.oldest;
	else
		return PENDING_ADMIT;
	return *victim ? PENDING_EVICT : PENDING_BUSY;
}

enum ba_status pending_add(struct pending *pd, struct pending_entry *e, uint32_t addr)
{
	struct pending_source *s = find_source(pd, addr);
	if (s == NULL) {
		struct pending_source **bucket = bucket_of(pd, addr);
		s = calloc(1, sizeof *s);
		if (s == NULL)
			return BA_EX_OSERR;
		*s = (struct pending_source){ .addr = addr, .next = *bucket };
		*bucket = s;
	}
	*e = (struct pending_entry){ .source = s, .silent = true };
	list_push(&pd->silent, e, false);
	list_push(&s->silent, e, true);
	s->count++;
	pd->count++;
	return BA_OK;
}

void pending_heard(struct pending *pd, struct pending_entry *e)
{
	struct pending_source *s = e->source;
	if (!e->silent)
		return;
	e->silent = false;
	list_unlink(&pd->silent, e, false);
	list_unlink(&s->silent, e, true);
}

void pending_remove(struct pending *pd, struct pending_entry *e)
{
	struct pending_source *s = e->source;
	if (s == NULL)
		return;
	pending_heard(pd, e);
	e->source = NULL;
	pd->count--;
	if (--s->count > 0)
		return;
	struct pending_source **link = bucket_of(pd, s->addr);
	while (*link != s)
		link = &(*link)->next;
	*link = s->next;
	free(s);
}
