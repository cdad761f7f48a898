/* Error descriptions for enum proto_err. */
#include "proto.h"

const char *proto_strerror(enum proto_err err)
{
	switch (err) {
	case PROTO_OK: return "success";
	case PROTO_AGAIN: return "operation would block";
	case PROTO_CLOSED: return "connection closed by peer";
	case PROTO_ERR_TOO_LARGE: return "frame length zero or over the limit";
	case PROTO_ERR_BAD_JSON: return "frame is not a valid UTF-8 JSON object";
	case PROTO_ERR_BAD_MESSAGE: return "invalid protocol message";
	case PROTO_ERR_IO: return "I/O error";
	case PROTO_ERR_TIMEOUT: return "timed out";
	case PROTO_ERR_AUTH: return "authentication failed";
	case PROTO_ERR_TRUNCATED: return "connection closed in the middle of a frame";
	case PROTO_ERR_NOMEM: return "out of memory";
	case PROTO_ERR_INVALID: return "invalid argument";
	case PROTO_ERR_CRYPTO: return "cryptographic library failure";
	case PROTO_ERR_OVERFLOW: return "send queue full";
	case PROTO_ERR_INTERRUPTED: return "interrupted while waiting";
	case PROTO_ERR_FORGED: return "a sealed frame failed authentication (forged, altered, replayed or reordered)";
	}
	return "unknown protocol error";
}

const char *proto_err_code(enum proto_err err)
{
	switch (err) {
	case PROTO_ERR_TOO_LARGE:
	case PROTO_ERR_BAD_JSON:
	/* The peer stopped writing mid-frame but may still read: tell it its frame was cut. */
	case PROTO_ERR_TRUNCATED:
	/* Sealed, so only the real peer can read it: it learns its frames do not arrive intact. */
	case PROTO_ERR_FORGED:
		return PROTO_CODE_BAD_FRAME;
	case PROTO_ERR_BAD_MESSAGE:
		return PROTO_CODE_BAD_MESSAGE;
	case PROTO_ERR_AUTH:
		return PROTO_CODE_AUTH_FAILED;
	case PROTO_ERR_TIMEOUT:
		return PROTO_CODE_TIMEOUT;
	case PROTO_ERR_NOMEM:
	case PROTO_ERR_INVALID:
	case PROTO_ERR_CRYPTO:
		return PROTO_CODE_INTERNAL;
	case PROTO_OK:
	case PROTO_AGAIN:
	case PROTO_CLOSED:
	case PROTO_ERR_IO:
	case PROTO_ERR_OVERFLOW:
	case PROTO_ERR_INTERRUPTED:
		return NULL;
	}
	return NULL;
}
