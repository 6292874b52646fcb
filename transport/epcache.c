/* SPDX-License-Identifier: MIT */
/* Many peers per context: the endpoint cache (config ep_cache: kvw_connect
 * to a URI with a live endpoint returns it, counted), idle endpoints closed
 * after ep_idle_close_ms, and peer incarnations (a peer context that
 * answers a handshake with a new random id has restarted: the endpoints to
 * its earlier incarnation fail PEER_DEAD at once, not peer_dead_ms later). */
#include "kvw_int.h"
#include "epcache.h"
#include "seq.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

void kvw_epc_ctx_init(kvw_ctx *ctx)
{
	do
		randombytes_buf(&ctx->incarnation, sizeof(ctx->incarnation));
	while (ctx->incarnation == 0);
	randombytes_buf(ctx->hash_key, sizeof(ctx->hash_key));
}

/* The URI's peer (what comes before '?') and the whole URI, keyed hashes:
 * the endpoint never keeps a URI that may hold ?secret=. */
void kvw_epc_keys(const kvw_ctx *ctx, const char *uri, uint8_t peer_key[16], uint8_t uri_key[16])
{
	crypto_generichash(peer_key, 16, (const uint8_t *)uri, strcspn(uri, "?"), ctx->hash_key,
			   sizeof(ctx->hash_key));
	crypto_generichash(uri_key, 16, (const uint8_t *)uri, strlen(uri), ctx->hash_key,
			   sizeof(ctx->hash_key));
}

static bool kvw_epc_live(const kvw_ep *ep)
{
	return !ep->zombie && (ep->state == KVW_EP_CONNECTING || ep->state == KVW_EP_HANDSHAKE ||
			       ep->state == KVW_EP_READY);
}

kvw_ep *kvw_epc_take(kvw_ctx *ctx, const uint8_t uri_key[16])
{
	if (!ctx->cfg.ep_cache)
		return NULL;
	for (kvw_ep *ep = ctx->eps; ep; ep = ep->next) {
		if (!ep->cached || ep->is_server || !kvw_epc_live(ep) ||
		    memcmp(ep->uri_key, uri_key, sizeof(ep->uri_key)) != 0)
			continue;
		ep->refs++;
		ep->idle_since_ns = 0;
		return ep;
	}
	return NULL;
}

void kvw_epc_adopt(kvw_ep *ep)
{
	if (!ep->ctx->cfg.ep_cache)
		return;
	ep->cached = true;
	ep->refs = 1;
}

static bool kvw_epc_has_live_reqs(const kvw_ep *ep)
{
	for (const kvw_req *r = ep->reqs; r; r = r->next_ep)
		if (r->status == KVW_INPROGRESS)
			return true;
	return false;
}

bool kvw_epc_release(kvw_ep *ep)
{
	if (!ep->cached || ep->refs == 0)
		return false;
	if (--ep->refs > 0)
		return true;
	/* the last holder: park it for the next kvw_connect, unless it has
	 * requests in flight (kvw_ep_close aborts those: that needs the
	 * transport torn down, which fences one-sided writes) */
	if (ep->state != KVW_EP_READY || ep->ctx->cfg.ep_idle_close_ms == 0 || kvw_epc_has_live_reqs(ep))
		return false;
	ep->idle_since_ns = kvw_now_ns();
	return true;
}

bool kvw_epc_expire(kvw_ep *ep, uint64_t now)
{
	struct kvw_wire_close c = {.status = KVW_ERR_CLOSED};

	if (!ep->cached || ep->refs || !ep->idle_since_ns ||
	    now - ep->idle_since_ns < (uint64_t)ep->ctx->cfg.ep_idle_close_ms * 1000000ull)
		return false;
	kvw_log(ep->ctx, 3, "endpoint %u (%s): closed after %u ms held by nobody (ep_idle_close_ms)", ep->id,
		ep->uri, ep->ctx->cfg.ep_idle_close_ms);
	kvw_ep_send(ep, KVW_T_CLOSE, &c, sizeof(c));
	ep->state = KVW_EP_CLOSED;
	ep->fail_status = KVW_ERR_CLOSED;
	ep->zombie = true;
	return true;
}

uint64_t kvw_epc_next_timer(const kvw_ep *ep)
{
	if (!ep->cached || ep->refs || !ep->idle_since_ns)
		return UINT64_MAX;
	return ep->idle_since_ns + (uint64_t)ep->ctx->cfg.ep_idle_close_ms * 1000000ull;
}

void kvw_ep_resources(const kvw_ep *ep, struct kvw_ep_res *res)
{
	memset(res, 0, sizeof(*res));
	res->bytes = sizeof(*ep) + (uint64_t)ep->recv_map.cap * (sizeof(uint64_t) + sizeof(kvw_req *)) +
		     (uint64_t)ep->send_map.cap * (sizeof(uint64_t) + sizeof(kvw_req *)) +
		     (uint64_t)ep->tokens.cap * (sizeof(kvw_req *) + sizeof(uint32_t));
	if (!ep->transport_closed)
		ep->drv->ops->ep_resources(ep, res);
}

void kvw_epc_restarted(kvw_ep *ep)
{
	char why[160];

	if (ep->is_server || !ep->peer_incarnation)
		return;
	for (kvw_ep *m = ep->ctx->eps; m; m = m->next) {
		if (m == ep || m->is_server || !kvw_epc_live(m) || !m->peer_incarnation ||
		    m->peer_incarnation == ep->peer_incarnation ||
		    memcmp(m->peer_key, ep->peer_key, sizeof(ep->peer_key)) != 0)
			continue;
		snprintf(why, sizeof(why), "the peer restarted (endpoint %u met its new incarnation %016" PRIx64
			 "): what this endpoint had in flight is lost; send it again on a new endpoint", ep->id,
			 ep->peer_incarnation);
		kvw_ep_fail(m, KVW_ERR_PEER_DEAD, why);
	}
}
