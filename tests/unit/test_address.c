/* The manager's address as users write it, and the cookie's handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "address.h"
#include "config.h"
#include "cookie.h"
#include "status.h"

static void test_forms(void **state)
{
	(void)state;
	struct manager_address a;
	assert_int_equal(address_parse_manager("198.18.0.1:9000", 49152, "--manager", &a), BA_OK);
	assert_string_equal(a.host, "198.18.0.1");
	assert_string_equal(a.port, "9000");
	assert_string_equal(a.display, "198.18.0.1:9000");
	assert_int_equal(address_parse_manager("198.18.0.1", 49152, "--manager", &a), BA_OK);
	assert_string_equal(a.port, "49152");
	assert_int_equal(address_parse_manager("[2001:db8::1]:7", 49152, "--manager", &a), BA_OK);
	assert_string_equal(a.host, "2001:db8::1");
	assert_string_equal(a.display, "[2001:db8::1]:7");
	assert_int_equal(address_parse_manager("manager.internal:80", 49152, "--manager", &a), BA_OK);
	assert_string_equal(a.host, "manager.internal");
	assert_string_equal(a.source, "--manager");
}

static void test_bad_addresses(void **state)
{
	(void)state;
	struct manager_address a;
	const char *bad[] = { "2001:db8::1", "[2001:db8::1", "[not-v6]:80", "host:0", "host:65536", "host:http",
			      ":80", "bad host:80", "host:80:90", "" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(address_parse_manager(bad[i], 49152, "--manager", &a), BA_EX_CONFIG);
}

static void test_valid_advertised(void **state)
{
	char long_name[300];
	(void)state;
	assert_true(address_valid_advertised("10.0.1.23"));
	assert_true(address_valid_advertised("fd00::1"));
	assert_true(address_valid_advertised("ip-10-0-1-23.ec2.internal"));
	assert_true(address_valid_advertised("node1"));
	assert_true(address_valid_advertised("3com.example"));
	assert_false(address_valid_advertised(NULL));
	assert_false(address_valid_advertised(""));
	assert_false(address_valid_advertised("10.0.0.1\n6.6.6.6 slots=999"));
	assert_false(address_valid_advertised("10.0.0.1:8080"));
	assert_false(address_valid_advertised("[fd00::1]"));
	assert_false(address_valid_advertised("999.1.1.1"));
	assert_false(address_valid_advertised("-node"));
	assert_false(address_valid_advertised("node-"));
	assert_false(address_valid_advertised("a..b"));
	assert_false(address_valid_advertised("a.b."));
	assert_false(address_valid_advertised("under_score"));
	assert_false(address_valid_advertised("host name"));
	/* 63-byte labels are fine, 64 are not; 253 bytes in all are fine, 254 are not. */
	memset(long_name, 'a', 64);
	long_name[64] = '\0';
	assert_false(address_valid_advertised(long_name));
	long_name[63] = '\0';
	assert_true(address_valid_advertised(long_name));
	for (int i = 0; i < 253; i++)
		long_name[i] = i % 2 ? '.' : 'a';
	long_name[253] = '\0';
	assert_true(address_valid_advertised(long_name));
	long_name[253] = 'a';
	long_name[254] = '\0';
	assert_false(address_valid_advertised(long_name));
}

static void test_unsubstituted_ref(void **state)
{
	(void)state;
	struct manager_address a;
	const char *name;
	assert_true(address_is_unsubstituted_ref("Ref::manager", &name));
	assert_string_equal(name, "manager");
	assert_false(address_is_unsubstituted_ref("198.18.0.1:80", &name));
	assert_int_equal(address_parse_manager("Ref::manager", 49152, "--manager", &a), BA_EX_CONFIG);
}

static void test_cookie_file_strips_one_newline(void **state)
{
	(void)state;
	char path[] = "/tmp/cookie-test-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "s3cr3t cookie, 24 bytes\n", 24), 24);
	close(fd);
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.cookie_file = path;
	struct cookie cookie;
	assert_int_equal(cookie_load(&cfg, &cookie), BA_OK);
	assert_int_equal(cookie.length, 23);
	assert_memory_equal(cookie.bytes, "s3cr3t cookie, 24 bytes", 23);
	cookie_wipe(&cookie);
	assert_null(cookie.bytes);
	unlink(path);
}

static void test_cookie_from_environment_is_scrubbed(void **state)
{
	(void)state;
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	struct cookie cookie;
	setenv("BATCH_AGENT_COOKIE", "from-the-environment", 1);
	char *value = getenv("BATCH_AGENT_COOKIE");
	assert_int_equal(cookie_load(&cfg, &cookie), BA_OK);
	assert_memory_equal(cookie.bytes, "from-the-environment", 20);
	assert_null(getenv("BATCH_AGENT_COOKIE"));
	assert_int_equal(value[0], '\0'); /* the bytes themselves are gone */
	cookie_wipe(&cookie);
}

static void test_missing_or_empty_cookie(void **state)
{
	(void)state;
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	struct cookie cookie;
	unsetenv("BATCH_AGENT_COOKIE");
	assert_int_equal(cookie_load(&cfg, &cookie), BA_EX_CONFIG);
	setenv("BATCH_AGENT_COOKIE", "", 1);
	assert_int_equal(cookie_load(&cfg, &cookie), BA_EX_CONFIG);
	cfg.cookie_file = "/nonexistent/cookie";
	assert_int_equal(cookie_load(&cfg, &cookie), BA_EX_CONFIG);
}

/* PROTOCOL.md §7: under 16 bytes is refused (64); 16 loads. */
static void test_short_cookie_is_refused(void **state)
{
	(void)state;
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	struct cookie cookie;
	setenv("BATCH_AGENT_COOKIE", "fifteen bytes!!", 1);
	assert_int_equal(cookie_load(&cfg, &cookie), BA_EX_USAGE);
	assert_null(cookie.bytes);
	setenv("BATCH_AGENT_COOKIE", "sixteen bytes!!!", 1);
	assert_int_equal(cookie_load(&cfg, &cookie), BA_OK);
	assert_int_equal(cookie.length, 16);
	cookie_wipe(&cookie);
}

static bool private_text(const char *text)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &v4->sin_addr) == 1)
		v4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1)
		v6->sin6_family = AF_INET6;
	else
		fail_msg("bad test address %s", text);
	return address_is_private((struct sockaddr *)&ss);
}

/* The Julia dialect's warning: which managers count as on a private network. */
static void test_private_addresses(void **state)
{
	(void)state;
	static const char *const private[] = { "10.0.0.1",    "10.255.255.255", "172.16.0.1",	"172.31.255.254",
					       "192.168.1.1", "100.64.0.1",	"100.127.255.254", "169.254.170.2",
					       "127.0.0.1",   "::1",		"fd00:ec2::23",	   "fc00::1",
					       "fe80::1",     "::ffff:10.1.2.3" };
	static const char *const public[] = { "198.18.0.1", "8.8.8.8",	    "172.32.0.1",      "172.15.255.255",
					      "100.63.255.255", "100.128.0.1", "192.169.0.1", "2001:db8::1",
					      "fe00::1",	"::ffff:198.18.0.1", "11.0.0.1" };
	for (size_t i = 0; i < sizeof private / sizeof private[0]; i++)
		if (!private_text(private[i]))
			fail_msg("%s is private", private[i]);
	for (size_t i = 0; i < sizeof public / sizeof public[0]; i++)
		if (private_text(public[i]))
			fail_msg("%s is not private", public[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_valid_advertised),
		cmocka_unit_test(test_unsubstituted_ref),
		cmocka_unit_test(test_cookie_file_strips_one_newline),
		cmocka_unit_test(test_cookie_from_environment_is_scrubbed),
		cmocka_unit_test(test_missing_or_empty_cookie),
		cmocka_unit_test(test_short_cookie_is_refused),
		cmocka_unit_test(test_private_addresses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
