/* sts_parse_credentials, the parser of STS AssumeRoleWithWebIdentity's JSON answer (the
 * function a fuzz target would call), and http_form_encode, which builds the request's
 * form body. The answer's shape and Expiration's notation are those evidenced at the top
 * of agent/aws/sts.c; every value here is made up. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "credentials.h"
#include "http.h"
#include "status.h"
#include "sts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRAP(creds) \
	"{\"AssumeRoleWithWebIdentityResponse\":{\"AssumeRoleWithWebIdentityResult\":{" \
	"\"Credentials\":" creds ",\"Audience\":\"sts.amazonaws.com\"}," \
	"\"ResponseMetadata\":{\"RequestId\":\"c6104cbe-af31-11e0-8154-cbc7ccf896c7\"}}}"
#define CREDS(expiration) \
	"{\"AccessKeyId\":\"ASIAEXAMPLE0000KEY01\",\"SecretAccessKey\":\"secret/example+key\"," \
	"\"SessionToken\":\"session-token-example\",\"Expiration\":" expiration "}"

static enum ba_status parse(const char *body, struct aws_credentials *creds, double *expiration, char *why)
{
	why[0] = '\0';
	return sts_parse_credentials(body, strlen(body), creds, expiration, why, 256);
}

static void scientific_notation_expiration(void **state)
{
	(void)state;
	struct aws_credentials creds;
	double expiration;
	char why[256];
	assert_int_equal(parse(WRAP(CREDS("1.796155045E9")), &creds, &expiration, why), BA_OK);
	assert_string_equal(creds.access_key_id, "ASIAEXAMPLE0000KEY01");
	assert_string_equal(creds.secret_access_key, "secret/example+key");
	assert_string_equal(creds.session_token, "session-token-example");
	assert_true(expiration == 1796155045.0);
	aws_credentials_clear(&creds);
	assert_null(creds.secret_access_key);
	assert_int_equal(parse(WRAP(CREDS("1796155045")), &creds, &expiration, why), BA_OK);
	assert_true(expiration == 1796155045.0);
	aws_credentials_clear(&creds);
}

static void bad_answers_name_the_field(void **state)
{
	(void)state;
	static const struct {
		const char *body, *why;
	} cases[] = {
		{ "<AssumeRoleWithWebIdentityResponse/>", "not JSON" },
		{ "[]", "field AssumeRoleWithWebIdentityResponse: missing" },
		{ "{\"AssumeRoleWithWebIdentityResponse\":[]}",
		  "field AssumeRoleWithWebIdentityResponse: expected an object" },
		{ "{\"AssumeRoleWithWebIdentityResponse\":{}}",
		  "field AssumeRoleWithWebIdentityResponse.AssumeRoleWithWebIdentityResult: missing" },
		{ WRAP("\"x\""), "Credentials: expected an object" },
		{ WRAP(CREDS("\"2026-12-01T20:00:00Z\"")), "Credentials.Expiration: expected a number" },
		{ WRAP(CREDS("-1")), "Credentials.Expiration: expected a number" },
		{ WRAP("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"SessionToken\":\"T\"}"),
		  "Credentials.Expiration: missing" },
		{ WRAP("{\"AccessKeyId\":\"\",\"SecretAccessKey\":\"S\",\"SessionToken\":\"T\",\"Expiration\":1}"),
		  "Credentials.AccessKeyId: empty" },
		{ WRAP("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":5,\"SessionToken\":\"T\",\"Expiration\":1}"),
		  "Credentials.SecretAccessKey: expected a string" },
		{ WRAP("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Expiration\":1}"),
		  "Credentials.SessionToken: missing" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct aws_credentials creds;
		double expiration;
		char why[256];
		assert_int_equal(parse(cases[i].body, &creds, &expiration, why), BA_EX_PROTOCOL);
		if (strstr(why, cases[i].why) == NULL)
			fail_msg("case %zu: why \"%s\" lacks \"%s\"", i, why, cases[i].why);
		/* Nothing half-filled is left for the caller. */
		assert_null(creds.access_key_id);
		assert_null(creds.secret_access_key);
		assert_null(creds.session_token);
	}
}

static void form_body_is_percent_encoded(void **state)
{
	(void)state;
	const char *const pairs[][2] = { { "Action", "AssumeRoleWithWebIdentity" },
		                         { "WebIdentityToken", "a+b/c=d&e%f g~h.i_j-k" } };
	size_t len = 0;
	char *body = http_form_encode(pairs, 2, &len);
	assert_non_null(body);
	assert_string_equal(body, "Action=AssumeRoleWithWebIdentity&"
	                          "WebIdentityToken=a%2Bb%2Fc%3Dd%26e%25f%20g~h.i_j-k");
	assert_int_equal(len, strlen(body));
	free(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(scientific_notation_expiration),
		cmocka_unit_test(bad_answers_name_the_field),
		cmocka_unit_test(form_body_is_percent_encoded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
