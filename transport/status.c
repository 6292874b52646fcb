/* SPDX-License-Identifier: MIT */
/* Status strings and the per-context error sentence. */
#include "kvw_int.h"

#include <stdio.h>
#include <unistd.h>

const char *kvw_version(void)
{
	return KVW_VERSION_STRING;
}

const char *kvw_strerror(kvw_status st)
{
	switch (st) {
	case KVW_OK: return "KVW_OK: success";
	case KVW_INPROGRESS: return "KVW_INPROGRESS: operation still in progress";
	case KVW_ERR_INVALID: return "KVW_ERR_INVALID: invalid argument or state";
	case KVW_ERR_NOMEM: return "KVW_ERR_NOMEM: out of memory";
	case KVW_ERR_UNSUPPORTED: return "KVW_ERR_UNSUPPORTED: not supported by this driver or build";
	case KVW_ERR_TIMEDOUT: return "KVW_ERR_TIMEDOUT: deadline passed while the peer was alive";
	case KVW_ERR_PEER_DEAD: return "KVW_ERR_PEER_DEAD: connection to the peer lost";
	case KVW_ERR_ABORTED: return "KVW_ERR_ABORTED: request aborted";
	case KVW_ERR_REJECTED: return "KVW_ERR_REJECTED: descriptor outside the grant or registered memory";
	case KVW_ERR_PROTO: return "KVW_ERR_PROTO: malformed or unexpected frame";
	case KVW_ERR_VERSION: return "KVW_ERR_VERSION: protocol version mismatch";
	case KVW_ERR_AUTH: return "KVW_ERR_AUTH: authentication failed";
	case KVW_ERR_BUSY: return "KVW_ERR_BUSY: resource in use";
	case KVW_ERR_MEMLOCK: return "KVW_ERR_MEMLOCK: cannot pin memory (raise `ulimit -l`)";
	case KVW_ERR_IO: return "KVW_ERR_IO: system call failed";
	case KVW_ERR_CONNREFUSED: return "KVW_ERR_CONNREFUSED: nobody listens at that address";
	case KVW_ERR_NOT_FOUND: return "KVW_ERR_NOT_FOUND: no such driver, device or sequence";
	case KVW_ERR_CLOSED: return "KVW_ERR_CLOSED: endpoint or listener closed";
	}
	return "KVW_ERR_?: unknown status";
}

kvw_status kvw_set_err(kvw_ctx *ctx, kvw_status st, const char *fmt, ...)
{
	va_list ap;

	if (!ctx)
		return st;
	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	kvw_log(ctx, 2, "%s", ctx->err);
	return st;
}

void kvw_log(kvw_ctx *ctx, unsigned level, const char *fmt, ...)
{
	va_list ap;

	if (!ctx || ctx->cfg.log_level < level)
		return;
	fprintf(stderr, "kvwire[%d]: ", (int)getpid());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *kvw_ctx_last_error(const kvw_ctx *ctx)
{
	return ctx ? ctx->err : "no context";
}
