/* EC2 instance metadata service (IMDSv2): Spot interruption and rebalance notices. */
#ifndef BATCH_AGENT_AWS_IMDS_H
#define BATCH_AGENT_AWS_IMDS_H

#include <stdbool.h>
#include <stdint.h>
#include "status.h"

/* imds-probe: BA_OK when the token endpoint answers, BA_EX_UNAVAILABLE otherwise. */
enum ba_status imds_probe_command(void);

/* spot-watch: prints one JSON line per new notice until a watched signal (the caller
 * blocks SIGTERM/SIGINT and calls http_watch_signals) stops it with BA_OK. */
enum ba_status imds_spot_watch_command(int64_t interval_ms, long token_ttl_s, bool optional);

#endif
