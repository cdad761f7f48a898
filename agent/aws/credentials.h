/* AWS credentials, resolved as botocore does inside an AWS Batch / ECS
 * container.
 *
 * Credentials: 1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN, or the
 * legacy AWS_SECURITY_TOKEN); 2. web identity (EKS IRSA): AWS_WEB_IDENTITY_TOKEN_FILE and
 * AWS_ROLE_ARN through STS AssumeRoleWithWebIdentity (sts.h); 3. the container
 * credentials endpoint:
 * AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (on http://169.254.170.2) or, when that is
 * unset, AWS_CONTAINER_CREDENTIALS_FULL_URI (https any host; http only to a loopback
 * address, 169.254.170.2, 169.254.170.23, fd00:ec2::23 or localhost), with an
 * Authorization header from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read for every
 * request) or AWS_CONTAINER_AUTHORIZATION_TOKEN. GET with a 2 s timeout, 3 attempts,
 * 1 s between attempts, retried on any non-200 answer, a non-JSON body or a
 * connection error (botocore's ContainerMetadataFetcher). */
#ifndef BATCH_AGENT_AWS_CREDENTIALS_H
#define BATCH_AGENT_AWS_CREDENTIALS_H

#include "status.h"

#include <cjson/cJSON.h>

/* Every member is a secret except the access key id, and all are wiped by
 * aws_credentials_clear. */
struct aws_credentials {
	char *access_key_id;
	char *secret_access_key;
	char *session_token; /* NULL or "" for long-term keys */
};

void aws_credentials_clear(struct aws_credentials *creds);

/* In that order; region (checked, not empty) chooses the regional STS endpoint. BA_OK,
 * or: 78 nothing configured / bad variable, 69 endpoint unreachable, 77 endpoint or
 * token refused, 76 bad answer. Errors are logged here. */
enum ba_status credentials_resolve(const char *region, struct aws_credentials *out);

/* The container endpoint's answer (root, a JSON object) into out: BA_OK, 76 (logged)
 * on a missing, mistyped or empty key, 71. Declared here for tests/fuzz. */
struct http_request;
enum ba_status credentials_take(const struct http_request *req, const cJSON *root,
                                struct aws_credentials *out);

#endif
