/* SPDX-License-Identifier: MIT */
/* The endpoint cache and peer incarnations (epcache.c). */
#ifndef KVW_EPCACHE_H
#define KVW_EPCACHE_H
#include "kvw_int.h"

/* The context's incarnation and hash key (at kvw_ctx_create). */
void kvw_epc_ctx_init(kvw_ctx *ctx);
/* The peer key (the URI before '?') and URI key of an unredacted URI. */
void kvw_epc_keys(const kvw_ctx *ctx, const char *uri, uint8_t peer_key[16], uint8_t uri_key[16]);
/* With ep_cache: a live client endpoint made for exactly this URI (its
 * key), with one more reference taken (it may still be in its handshake);
 * else NULL. */
kvw_ep *kvw_epc_take(kvw_ctx *ctx, const uint8_t uri_key[16]);
/* A new client endpoint joins the cache (ep_cache=1): one reference. */
void kvw_epc_adopt(kvw_ep *ep);
/* kvw_ep_close on ep: true when the endpoint stays (other holders, or
 * parked for ep_idle_close_ms); false: close it now. */
bool kvw_epc_release(kvw_ep *ep);
/* From the keepalive pass: closes a parked endpoint whose idle time is up
 * (true: it is now a zombie for the reap pass). */
bool kvw_epc_expire(kvw_ep *ep, uint64_t now);
/* When kvw_epc_expire is next due for ep (UINT64_MAX: never). */
uint64_t kvw_epc_next_timer(const kvw_ep *ep);
/* ep finished its handshake: its peer's other endpoints that met an earlier
 * incarnation fail PEER_DEAD. */
void kvw_epc_restarted(kvw_ep *ep);
/* What ep holds: the core's tables plus the driver's (ops->ep_resources). */
void kvw_ep_resources(const kvw_ep *ep, struct kvw_ep_res *res);
#endif
