/* SPDX-License-Identifier: MIT */
/* Status strings and the per-context error sentence. */
#include "kvw_int.h"

#include <stdio.h>
#include <string.h>
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

/* Errors of calls that have no context yet (kvw_config_*, kvw_ctx_create):
 * per thread, read with kvw_ctx_last_error(NULL). */
static __thread char kvw_tls_err[512];

kvw_status kvw_set_err(kvw_ctx *ctx, kvw_status st, const char *fmt, ...)
{
	va_list ap;
	char *dst = ctx ? ctx->err : kvw_tls_err;
	size_t cap = ctx ? sizeof(ctx->err) : sizeof(kvw_tls_err);

	va_start(ap, fmt);
	vsnprintf(dst, cap, fmt, ap);
	va_end(ap);
	if (ctx)
		kvw_log(ctx, 2, "%s", ctx->err);
	return st;
}

void kvw_err_clear(kvw_ctx *ctx)
{
	if (ctx)
		ctx->err[0] = 0;
	kvw_tls_err[0] = 0;
}

void kvw_log(kvw_ctx *ctx, unsigned level, const char *fmt, ...)
{
	va_list ap;
	char line[640];

	if (!ctx || ctx->cfg.log_level < level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (ctx->log_fn) {
		ctx->log_fn(ctx->log_user, level, line);
		return;
	}
	fprintf(stderr, "kvwire[%d]: %s\n", (int)getpid(), line);
}

void kvw_ctx_set_log(kvw_ctx *ctx, kvw_log_fn fn, void *user)
{
	if (!ctx)
		return;
	ctx->log_fn = fn;
	ctx->log_user = user;
}

const char *kvw_ctx_last_error(const kvw_ctx *ctx)
{
	return ctx ? ctx->err : kvw_tls_err;
}

kvw_status kvw_struct_out(kvw_ctx *ctx, const char *fn, void *dst, const void *src, size_t full)
{
	uint32_t size;

	memcpy(&size, dst, sizeof(size));
	if (size < 8)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "%s: set the struct's .size to its sizeof before "
				   "the call (the struct grows between versions)", fn);
	if (size > full)
		size = (uint32_t)full;
	memcpy((uint8_t *)dst + sizeof(size), (const uint8_t *)src + sizeof(size), size - sizeof(size));
	return KVW_OK;
}
