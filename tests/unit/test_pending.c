/* Admission's bookkeeping (agent/net/pending.c): the per-source cap and the eviction
 * of the oldest silent peer, globally and per source; loopback has no per-source cap. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pending.h"

static uint32_t ip(const char *text)
{
	struct in_addr a;
	assert_int_equal(inet_pton(AF_INET, text, &a), 1);
	return a.s_addr;
}

static void add(struct pending *pd, struct pending_entry *e, const char *addr)
{
	struct pending_entry *victim;
	assert_int_equal(pending_verdict(pd, ip(addr), &victim), PENDING_ADMIT);
	assert_int_equal(pending_add(pd, e, ip(addr)), BA_OK);
}

static void test_per_source_cap_evicts_own_oldest_silent(void **state)
{
	(void)state;
	struct pending pd;
	struct pending_entry a[4], b, *victim;
	assert_int_equal(pending_init(&pd, 100, 3), BA_OK);
	for (int i = 0; i < 3; i++)
		add(&pd, &a[i], "198.18.0.2");
	add(&pd, &b, "198.18.0.3"); /* another source: its own count */
	/* The fourth from .2 evicts .2's oldest silent one, never .3's. */
	assert_int_equal(pending_verdict(&pd, ip("198.18.0.2"), &victim), PENDING_EVICT);
	assert_ptr_equal(victim, &a[0]);
	/* a[0] spoke: the oldest silent one is a[1]. */
	pending_heard(&pd, &a[0]);
	assert_int_equal(pending_verdict(&pd, ip("198.18.0.2"), &victim), PENDING_EVICT);
	assert_ptr_equal(victim, &a[1]);
	pending_remove(&pd, &a[1]);
	assert_int_equal(pending_add(&pd, &a[3], ip("198.18.0.2")), BA_OK);
	/* Everyone from .2 spoke: a newcomer from .2 is busy, one from .3 is admitted. */
	pending_heard(&pd, &a[2]);
	pending_heard(&pd, &a[3]);
	assert_int_equal(pending_verdict(&pd, ip("198.18.0.2"), &victim), PENDING_BUSY);
	assert_null(victim);
	assert_int_equal(pending_verdict(&pd, ip("198.18.0.3"), &victim), PENDING_ADMIT);
	assert_int_equal(pd.count, 4);
	pending_remove(&pd, &a[0]);
	pending_remove(&pd, &a[2]);
	pending_remove(&pd, &a[3]);
	pending_remove(&pd, &b);
	assert_int_equal(pd.count, 0);
	assert_int_equal(pending_verdict(&pd, ip("198.18.0.2"), &victim), PENDING_ADMIT);
	pending_free(&pd);
}

static void test_global_cap_evicts_oldest_silent_of_anyone(void **state)
{
	(void)state;
	struct pending pd;
	struct pending_entry e[4], *victim;
	assert_int_equal(pending_init(&pd, 4, 16), BA_OK);
	add(&pd, &e[0], "198.18.0.5");
	add(&pd, &e[1], "198.18.0.6");
	add(&pd, &e[2], "198.18.0.5");
	add(&pd, &e[3], "198.18.0.7");
	pending_heard(&pd, &e[0]);
	assert_int_equal(pending_verdict(&pd, ip("198.18.0.9"), &victim), PENDING_EVICT);
	assert_ptr_equal(victim, &e[1]);
	pending_heard(&pd, &e[1]);
	pending_heard(&pd, &e[2]);
	pending_heard(&pd, &e[3]);
	assert_int_equal(pending_verdict(&pd, ip("198.18.0.9"), &victim), PENDING_BUSY);
	for (int i = 0; i < 4; i++)
		pending_remove(&pd, &e[i]);
	pending_free(&pd);
}

static void test_loopback_has_no_source_cap(void **state)
{
	(void)state;
	struct pending pd;
	struct pending_entry e[8], *victim;
	assert_int_equal(pending_init(&pd, 8, 2), BA_OK);
	for (int i = 0; i < 8; i++)
		add(&pd, &e[i], "127.0.0.1");
	/* At the global cap now: the oldest silent one goes. */
	assert_int_equal(pending_verdict(&pd, ip("127.0.0.1"), &victim), PENDING_EVICT);
	assert_ptr_equal(victim, &e[0]);
	for (int i = 0; i < 8; i++)
		pending_remove(&pd, &e[i]);
	pending_free(&pd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_per_source_cap_evicts_own_oldest_silent),
		cmocka_unit_test(test_global_cap_evicts_oldest_silent_of_anyone),
		cmocka_unit_test(test_loopback_has_no_source_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
