/* Addresses: --manager (and BATCH_AGENT_MANAGER, a job parameter's value) as
 * address_parse_manager reads it, and a node's advertised address as the manager's
 * admit_register judges it (address_valid_advertised), on the same text.
 *
 * Input: the text (cut at a NUL, as a C string from argv or the environment is).
 *
 * Checked beyond "no crash":
 *   - an accepted --manager has a host, a port in 1..65535, and its display form
 *     (host:port, [v6]:port) parses again to the same host and port;
 *   - an accepted advertised address is at most 253 bytes of letters, digits, '.',
 *     '-' and ':' only: nothing that could add or split a hostfile line or a
 *     BATCH_AGENT_NODES entry. */
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup("fuzz_address", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return 0;
}

static void check_manager(const char *text)
{
	struct manager_address a, again;
	enum ba_status rc = address_parse_manager(text, 49152, "--manager", &a);
	FUZZ_CHECK(rc == BA_OK || rc == BA_EX_CONFIG);
	if (rc != BA_OK)
		return;
	FUZZ_CHECK(a.host[0] != '\0');
	char *end = NULL;
	long port = strtol(a.port, &end, 10);
	FUZZ_CHECK(*end == '\0' && port >= 1 && port <= 65535);
	/* A different default, so that a port lost from the display would show. */
	FUZZ_CHECK(address_parse_manager(a.display, 1, "display", &again) == BA_OK);
	FUZZ_CHECK(strcmp(a.host, again.host) == 0 && strcmp(a.port, again.port) == 0 &&
		   strcmp(a.display, again.display) == 0);
}

static void check_advertised(const char *text)
{
	if (!address_valid_advertised(text))
		return;
	FUZZ_CHECK(fuzz_hostfile_safe(text, ADDRESS_ADVERTISED_MAX));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	FUZZ_CHECK(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	check_manager(text);
	check_advertised(text);
	free(text);
	return 0;
}
