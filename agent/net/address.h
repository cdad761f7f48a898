/* Addresses: the manager's as the user wrote it, and ours as the manager should see it. */
#ifndef BATCH_AGENT_ADDRESS_H
#define BATCH_AGENT_ADDRESS_H

#include <netinet/in.h>
#include <stdbool.h>
#include "status.h"

#define ADDRESS_HOST_MAX 256
#define ADDRESS_TEXT_MAX 300

struct manager_address {
	char host[ADDRESS_HOST_MAX]; /* IPv4, IPv6 (no brackets) or DNS name */
	char port[8];
	char source[160];            /* which input named it, for messages */
	char display[ADDRESS_TEXT_MAX]; /* host:port, [v6]:port */
};

/* HOST:PORT, [IPv6]:PORT, or HOST alone with default_port. Errors name `source`.
 * A value that is still the literal Ref::name (Batch leaves a parameter that was not
 * supplied as text in the command) gives BA_EX_CONFIG naming the parameter. */
enum ba_status address_parse_manager(const char *text, long default_port, const char *source, struct manager_address *out);

/* True when text is the literal "Ref::name" that Batch leaves for an unsupplied
 * parameter; *name then points at the parameter's name. */
bool address_is_unsubstituted_ref(const char *text, const char **name);

/* The address this node advertises: `override` when given (it must be an IP literal),
 * else the local address of the connection to the manager (the one the manager can
 * reach), unless that is link-local or loopback while the manager is not, in which
 * case the first usable interface address. Errors list the candidate interfaces. */
/* A private address: RFC 1918, RFC 6598 (100.64/10), link-local, loopback, IPv6 ULA
 * (fc00::/7) and link-local; IPv4-mapped IPv6 by its IPv4 address. */
bool address_is_private(const struct sockaddr *sa);

enum ba_status address_advertised(int connected_fd, const char *override, char *out, size_t size);

/* What the rendezvous takes as a node's advertised address (it becomes a hostfile
 * line): an IPv4 or IPv6 literal (no brackets, no port), or a DNS name as RFC 1123
 * has it: labels of 1..63 letters, digits and hyphens that neither start nor end with
 * a hyphen, 253 bytes at most, the last label not all digits. */
#define ADDRESS_ADVERTISED_MAX 253
bool address_valid_advertised(const char *text);

/* The address of the first interface that is up, not loopback and not link-local. */
enum ba_status address_first_usable(char *out, size_t size);

#endif
