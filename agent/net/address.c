/* Parsing the manager's address and choosing the one to advertise. */
#include "address.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "status.h"
#include "util.h"

bool address_is_unsubstituted_ref(const char *text, const char **name)
{
	if (strncmp(text, "Ref::", 5) != 0)
		return false;
	*name = text + 5;
	return true;
}

static bool valid_dns_name(const char *host)
{
	size_t length = strlen(host), label = 0;
	if (length == 0 || length > 253)
		return false;
	for (const char *p = host; *p; p++) {
		if (*p == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

static bool rfc1123_name(const char *name)
{
	size_t length = strlen(name), label = 0;
	bool all_digits = true;
	if (length == 0 || length > ADDRESS_ADVERTISED_MAX)
		return false;
	for (size_t i = 0; i <= length; i++) {
		char c = name[i];
		if (c == '.' || c == '\0') {
			/* Empty labels, and hyphens at either end of one. */
			if (label == 0 || name[i - 1] == '-')
				return false;
			if (c == '\0')
				break;
			label = 0;
			all_digits = true;
			continue;
		}
		if (!(isalnum((unsigned char)c) || (c == '-' && label > 0)) || ++label > 63)
			return false;
		if (!isdigit((unsigned char)c))
			all_digits = false;
	}
	/* "999.1.1.1" is no IPv4 address, and no top-level domain is all digits. */
	return !all_digits;
}

bool address_valid_advertised(const char *text)
{
	unsigned char binary[sizeof(struct in6_addr)];
	if (text == NULL)
		return false;
	return inet_pton(AF_INET, text, binary) == 1 || inet_pton(AF_INET6, text, binary) == 1 || rfc1123_name(text);
}

enum ba_status address_parse_manager(const char *text, long default_port, const char *source, struct manager_address *out)
{
	const char *ref_name;
	memset(out, 0, sizeof *out);
	snprintf(out->source, sizeof out->source, "%s", source);
	if (address_is_unsubstituted_ref(text, &ref_name)) {
		log_error("%s is the literal text \"%s\": the job was submitted without its parameter \"%s\" "
			  "(Batch leaves an unsupplied Ref:: as is); submit with --parameters %s=HOST:PORT",
			  source, text, ref_name, ref_name);
		return BA_EX_CONFIG;
	}
	const char *host = text, *port = NULL;
	size_t host_length;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			goto bad;
		host = text + 1;
		host_length = (size_t)(close - host);
		port = close[1] == ':' ? close + 2 : NULL;
	} else {
		const char *colon = strchr(text, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			log_error("%s=\"%s\": write an IPv6 address in brackets, as [ADDRESS]:PORT", source, text);
			return BA_EX_CONFIG;
		}
		host_length = colon ? (size_t)(colon - text) : strlen(text);
		port = colon ? colon + 1 : NULL;
	}
	if (host_length == 0 || host_length >= sizeof out->host)
		goto bad;
	memcpy(out->host, host, host_length);
	long port_number = default_port;
	if (port != NULL && !util_parse_long(port, 1, 65535, &port_number)) {
		log_error("%s=\"%s\": the port must be a number from 1 to 65535", source, text);
		return BA_EX_CONFIG;
	}
	snprintf(out->port, sizeof out->port, "%ld", port_number);

	struct in6_addr v6;
	struct in_addr v4;
	bool is_v6 = inet_pton(AF_INET6, out->host, &v6) == 1;
	if (text[0] == '[' && !is_v6)
		goto bad;
	if (!is_v6 && inet_pton(AF_INET, out->host, &v4) != 1 && !valid_dns_name(out->host))
		goto bad;
	snprintf(out->display, sizeof out->display, is_v6 ? "[%s]:%s" : "%s:%s", out->host, out->port);
	return BA_OK;
bad:
	log_error("%s=\"%s\" is not an address: expected IPV4:PORT, [IPV6]:PORT or NAME:PORT", source, text);
	return BA_EX_CONFIG;
}

static bool is_link_local_or_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
		return (a >> 24) == 127 || (a >> 16) == 0xa9fe; /* 127/8, 169.254/16 */
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_LINKLOCAL(a);
	}
	return true;
}

/* An IPv4 address in host order: RFC 1918, RFC 6598 (100.64/10), link-local, loopback. */
static bool private_ipv4(uint32_t a)
{
	return (a >> 24) == 10 || (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 || (a >> 22) == (0x64400000u >> 22) ||
	       (a >> 16) == 0xa9fe || (a >> 24) == 127;
}

bool address_is_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return private_ipv4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
	if (sa->sa_family != AF_INET6)
		return false;
	const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a)) {
		uint32_t v4;
		memcpy(&v4, &a->s6_addr[12], 4);
		return private_ipv4(ntohl(v4));
	}
	/* fc00::/7 (unique local), fe80::/10, ::1 */
	return (a->s6_addr[0] & 0xfe) == 0xfc || IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_LOOPBACK(a);
}

static enum ba_status numeric(const struct sockaddr *sa, char *out, size_t size)
{
	const void *raw = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
						   : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (inet_ntop(sa->sa_family, raw, out, (socklen_t)size) == NULL)
		return BA_EX_OSERR;
	/* A v4-mapped address reads better, and is reachable, as plain IPv4. */
	if (strncmp(out, "::ffff:", 7) == 0 && strchr(out + 7, '.') != NULL)
		memmove(out, out + 7, strlen(out + 7) + 1);
	return BA_OK;
}

enum ba_status address_first_usable(char *out, size_t size)
{
	struct ifaddrs *list = NULL;
	char candidates[1024] = "";
	enum ba_status rc = BA_EX_CONFIG;
	if (getifaddrs(&list) < 0) {
		log_error("getifaddrs: %m");
		return BA_EX_OSERR;
	}
	for (struct ifaddrs *i = list; i; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET)
			continue;
		char text[INET6_ADDRSTRLEN];
		if (numeric(i->ifa_addr, text, sizeof text) != BA_OK)
			continue;
		size_t used = strlen(candidates);
		snprintf(candidates + used, sizeof candidates - used, "%s%s=%s", used ? ", " : "", i->ifa_name, text);
		if ((i->ifa_flags & IFF_UP) && !is_link_local_or_loopback(i->ifa_addr) && rc != BA_OK) {
			snprintf(out, size, "%s", text);
			rc = BA_OK;
		}
	}
	freeifaddrs(list);
	if (rc != BA_OK)
		log_error("no usable address to advertise: no interface is up with an IPv4 address that is neither "
			  "loopback nor link-local (candidates: %s); set --advertise-addr",
			  candidates[0] ? candidates : "none");
	return rc;
}

enum ba_status address_advertised(int connected_fd, const char *override, char *out, size_t size)
{
	if (override != NULL) {
		unsigned char raw[sizeof(struct in6_addr)];
		if (inet_pton(AF_INET, override, raw) != 1 && inet_pton(AF_INET6, override, raw) != 1) {
			log_error("--advertise-addr \"%s\" is not an IP address", override);
			return BA_EX_CONFIG;
		}
		snprintf(out, size, "%s", override);
		return BA_OK;
	}
	struct sockaddr_storage local, peer;
	socklen_t local_length = sizeof local, peer_length = sizeof peer;
	if (getsockname(connected_fd, (struct sockaddr *)&local, &local_length) < 0 ||
	    getpeername(connected_fd, (struct sockaddr *)&peer, &peer_length) < 0) {
		log_error("cannot read the connection's addresses: %m");
		return BA_EX_OSERR;
	}
	/* The route to the manager picked this address, so the manager can reach it.
	 * Only a link-local or loopback source towards a manager that is neither would
	 * be useless to it (e.g. ecs-eth0's 169.254.172.x on an awsvpc task). */
	if (is_link_local_or_loopback((struct sockaddr *)&local) && !is_link_local_or_loopback((struct sockaddr *)&peer))
		return address_first_usable(out, size);
	return numeric((struct sockaddr *)&local, out, size);
}
