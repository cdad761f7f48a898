/* EC2 instance metadata service (IMDSv2): Spot interruption and rebalance notices. */
#ifndef BATCH_AGENT_AWS_IMDS_H
#define BATCH_AGENT_AWS_IMDS_H

#include <stdbool.h>
#include <stdint.h>
#include "http.h"
#include "log.h"
#include "status.h"

/* imds-probe: BA_OK when the token endpoint answers, BA_EX_UNAVAILABLE otherwise. */
enum ba_status imds_probe_command(void);

/* spot-watch: prints one JSON line per new notice until a watched signal (the caller
 * blocks SIGTERM/SIGINT and calls http_watch_signals) stops it with BA_OK. */
enum ba_status imds_spot_watch_command(int64_t interval_ms, long token_ttl_s, bool optional);

/* What spot-watch keeps between polls. */
struct imds {
	char base[512];
	long ttl_s;
	char *token;
	struct curl_slist *token_headers; /* "X-aws-ec2-metadata-token: ..." */
	int64_t refresh_at_ms;
	char *last_action; /* "action time" of the last instance-action printed */
	char *last_rebalance;
	/* The last 200 answer of each path that was not a notice we can read, as logged. */
	char *bad_action;
	char *bad_rebalance;
	bool failing; /* the last poll failed (log only the first of a run) */
	/* How to report an IMDS that is unavailable at start: an error, or (spot-watch
	 * --optional, the agent's auto mode) a debug line, since most places have none. */
	enum log_level unavailable_level;
};

/* A 200 answer of the instance-action path (is_action) or the rebalance path: prints
 * the notice unless it is the last one printed again; BA_OK or an exit status (76 for
 * a bad answer, logged). Declared here for tests/fuzz. */
enum ba_status imds_handle_notice(struct imds *m, const struct http_request *req,
                                  const struct http_response *resp, bool is_action);

#endif
