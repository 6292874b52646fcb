/* SPDX-License-Identifier: MIT */
/* The accessors of driver.h: what a driver may read or change of the
 * core's objects, which it sees only as opaque handles. */
#include "kvw_int.h"

#include <string.h>

bool kvw_core_ep_alive(const kvw_ep *ep)
{
	return ep->state != KVW_EP_FAILED && ep->state != KVW_EP_CLOSED;
}

bool kvw_core_ep_ready(const kvw_ep *ep) { return ep->state == KVW_EP_READY; }
bool kvw_core_ep_failed(const kvw_ep *ep) { return ep->state == KVW_EP_FAILED; }
kvw_ctx *kvw_core_ep_ctx(const kvw_ep *ep) { return ep->ctx; }
kvw_drv *kvw_core_ep_drv(const kvw_ep *ep) { return ep->drv; }
void *kvw_core_ep_priv(const kvw_ep *ep) { return ep->drv_priv; }
void kvw_core_ep_set_priv(kvw_ep *ep, void *priv) { ep->drv_priv = priv; }
uint32_t kvw_core_ep_id(const kvw_ep *ep) { return ep->id; }
uint32_t kvw_core_ep_peer_id(const kvw_ep *ep) { return ep->peer_id; }
uint32_t kvw_core_ep_rails(const kvw_ep *ep) { return ep->rails ? ep->rails : 1; }
bool kvw_core_ep_is_server(const kvw_ep *ep) { return ep->listener != NULL; }
const char *kvw_core_ep_uri(const kvw_ep *ep) { return ep->uri; }
bool kvw_core_ep_has_secret(const kvw_ep *ep) { return ep->secret[0] != 0; }
kvw_counters *kvw_core_ep_counters(kvw_ep *ep) { return &ep->cnt; }

void kvw_core_ep_rail_rx(kvw_ep *ep, uint32_t rail, uint64_t bytes)
{
	if (rail >= KVW_ARRAY_SIZE(ep->cnt.rail))
		return;
	ep->cnt.rail[rail].bytes_rx += bytes;
	ep->cnt.rail[rail].frags_rx++;
}

void kvw_core_ep_heard(kvw_ep *ep) { ep->last_rx_ns = kvw_now_ns(); }

void kvw_core_ep_discard(kvw_ep *ep)
{
	ep->transport_closed = true;
	ep->zombie = true;
}

kvw_ctx *kvw_core_listener_ctx(const kvw_listener *l) { return l->ctx; }
kvw_drv *kvw_core_listener_drv(const kvw_listener *l) { return l->drv; }
void *kvw_core_listener_priv(const kvw_listener *l) { return l->drv_priv; }
void kvw_core_listener_set_priv(kvw_listener *l, void *priv) { l->drv_priv = priv; }

bool kvw_core_listener_set_uri(kvw_listener *l, const char *uri)
{
	size_t n = strlen(uri);

	if (n >= sizeof(l->uri))
		return false;
	memcpy(l->uri, uri, n + 1);
	return true;
}

kvw_ctx *kvw_core_mem_ctx(const kvw_mem *m) { return m->ctx; }
uint32_t kvw_core_mem_id(const kvw_mem *m) { return m->id; }
int kvw_core_mem_fd(const kvw_mem *m) { return m->memfd; }
void *kvw_core_mem_priv(const kvw_mem *m, const kvw_drv *d) { return m->drv_priv[d->idx]; }
void kvw_core_mem_set_priv(kvw_mem *m, const kvw_drv *d, void *priv) { m->drv_priv[d->idx] = priv; }

uint32_t kvw_core_req_token(const kvw_req *r) { return r->token; }
uint64_t kvw_core_req_seq_id(const kvw_req *r) { return r->seq_id; }
uint64_t kvw_core_req_peer_block_bytes(const kvw_req *r) { return r->pg.block_bytes; }

bool kvw_core_req_live(const kvw_ep *ep, const kvw_req *r)
{
	for (const kvw_req *q = ep->reqs; q; q = q->next_ep)
		if (q == r)
			return q->status == KVW_INPROGRESS;
	return false;
}
uint64_t kvw_core_req_bytes_posted(const kvw_req *r) { return r->bytes_posted; }
