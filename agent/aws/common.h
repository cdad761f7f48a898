/* Settings and helpers shared by the endpoint modules of batch-agent-aws. */
#ifndef BATCH_AGENT_AWS_COMMON_H
#define BATCH_AGENT_AWS_COMMON_H

#include "http.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include "status.h"

/* Per-attempt timeouts and attempts from the command line; 0 = the endpoint's default. */
struct aws_settings {
	long connect_timeout_ms;
	long timeout_ms;
	int max_attempts;
};
extern struct aws_settings aws_settings;

/* Applies aws_settings over an endpoint's defaults. */
void aws_apply_settings(struct http_request *req);

/* getenv() that treats "" as unset. */
const char *env_nonempty(const char *name);


/* Performs req and parses a 200 answer as a JSON object into *root (caller deletes):
 * BA_OK, or the status of aws_fail_status / BA_EX_PROTOCOL / http_perform's, each
 * logged naming the endpoint. The response body is wiped and freed either way. */
enum ba_status aws_request_object(const struct http_request *req, cJSON **root);

/* aws_request_object, telling a caller that reports failures item by item what went
 * wrong: *status the final HTTP status (0 when no answer arrived, or on success) and
 * message the line logged ("" on success). */
enum ba_status aws_request_object_detailed(const struct http_request *req, cJSON **root,
                                           long *status, char *message, size_t size);

/* Parses resp's body as JSON; NULL (with an error logged naming the endpoint) when it
 * is not JSON or not of the expected kind (cJSON_Object or cJSON_Array, 0 = any). */
cJSON *aws_parse_json(const struct http_request *req, const struct http_response *resp,
                      int kind);

/* Field checks: on a wrong type log "<what> (<url>): field PATH: expected T" and return
 * false. A missing optional field gives *out = NULL and true. */
bool aws_field_string(const struct http_request *req, const cJSON *obj, const char *name,
                      const char *path, bool required, const char **out);
bool aws_field_number(const struct http_request *req, const cJSON *obj, const char *name,
                      const char *path, bool required, double *out, bool *present);
bool aws_field_kind(const struct http_request *req, const cJSON *obj, const char *name,
                    const char *path, bool required, int kind, const cJSON **out);
void aws_field_error(const struct http_request *req, const char *path, const char *expected);

/* Whether an endpoint URL that source (a variable or option) names must be refused
 * (logged as 78): not http(s), or http:// to anything but a loopback address, which
 * would carry what_travels ("the credentials") across a network in clear text. */
bool aws_endpoint_refused(const char *source, const char *url, const char *what_travels);

/* Reads the secret file that variable names (path), of at most max bytes, into *out
 * (NUL-terminated, *len bytes; the caller wipes and frees it): BA_OK, or 78 (logged,
 * naming variable and path) when it cannot be opened or read or is longer, 71. */
enum ba_status aws_read_secret_file(const char *variable, const char *path, size_t max,
                                    char **out, size_t *len);

/* Prints a JSON document and a newline on stdout and flushes; BA_OK or 71. Frees doc. */
enum ba_status aws_print_json(cJSON *doc);

#endif
