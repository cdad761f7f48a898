/* Web identity credentials (EKS IAM roles for service accounts): the pod's projected
 * token (AWS_WEB_IDENTITY_TOKEN_FILE) traded for temporary keys of AWS_ROLE_ARN through
 * STS AssumeRoleWithWebIdentity, an unsigned call, as botocore's
 * AssumeRoleWithWebIdentityProvider does. The wire format is drawn at the top of sts.c. */
#ifndef BATCH_AGENT_AWS_STS_H
#define BATCH_AGENT_AWS_STS_H

#include <stdbool.h>
#include <stddef.h>

#include "credentials.h"
#include "status.h"

/* *found false (BA_OK, nothing asked) when AWS_WEB_IDENTITY_TOKEN_FILE is unset or
 * empty. Otherwise *found, and BA_OK with the keys in out, or (logged, naming the
 * input): 78 AWS_ROLE_ARN missing or not a role ARN, AWS_ROLE_SESSION_NAME invalid,
 * the token file missing, unreadable, empty or over 20000 bytes, a bad STS endpoint or
 * AWS_STS_REGIONAL_ENDPOINTS value, RegionDisabledException; 77 the token or role
 * refused (InvalidIdentityToken, ExpiredTokenException, IDPRejectedClaim,
 * AccessDenied, any 401/403); 69 STS unreachable or still failing (5xx, throttling,
 * IDPCommunicationError) after retries; 76 any other answer; 71. region is the
 * checked region name. */
enum ba_status sts_web_identity_credentials(const char *region, struct aws_credentials *out,
                                            bool *found);

/* The parser of a 200 answer, on its own for a fuzz target: BA_OK with the keys in
 * out (the caller clears them) and *expiration (seconds since the epoch), BA_EX_PROTOCOL
 * with why (never a secret) when body is not the JSON answer, BA_EX_OSERR. Logs
 * nothing, and wipes every copy of a secret it made. */
enum ba_status sts_parse_credentials(const char *body, size_t len, struct aws_credentials *out,
                                     double *expiration, char *why, size_t why_size);

#endif
