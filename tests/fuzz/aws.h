/* An AWS endpoint's answer as batch-agent-aws receives it: the 200 response's body,
 * for the answer parsers the fuzz targets call. */
#ifndef BATCH_AGENT_FUZZ_AWS_H
#define BATCH_AGENT_FUZZ_AWS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "http.h"

/* A response as http_perform leaves it: a NUL-terminated copy of the body. */
static inline struct http_response fuzz_response(const uint8_t *data, size_t size)
{
	struct http_response resp = { .status = 200, .len = size };
	resp.body = malloc(size + 1);
	if (resp.body == NULL)
		abort();
	memcpy(resp.body, data, size);
	resp.body[size] = '\0';
	return resp;
}

/* The body parsed as batch-agent-aws parses a 200 answer: aws_parse_json's object, or
 * NULL (logged). The tree keeps no pointer into the body. */
static inline cJSON *fuzz_parse_answer(const struct http_request *req, const uint8_t *data, size_t size)
{
	struct http_response resp = fuzz_response(data, size);
	cJSON *root = aws_parse_json(req, &resp, cJSON_Object);
	http_response_free(&resp);
	return root;
}

#endif
