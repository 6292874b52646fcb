/* SPDX-License-Identifier: MIT */
/* Sequences: grants (decode side), sends (prefill side), fragmenting,
 * completion, deadlines and the abort fence. */
#include "kvw_int.h"
#include "cursor.h"
#include "seq.h"
#include "seqmap.h"
#include "token.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------- tokens */
static kvw_status kvw_token_alloc(kvw_ep *ep, kvw_req *r)
{
	return kvw_tokens_alloc(&ep->tokens, r);
}

static kvw_req *kvw_token_req(const kvw_ep *ep, uint32_t token)
{
	return kvw_tokens_get(&ep->tokens, token);
}

static void kvw_token_release(kvw_ep *ep, kvw_req *r)
{
	kvw_tokens_release(&ep->tokens, r);
}

bool kvw_core_token_live(kvw_ep *ep, uint32_t token)
{
	return kvw_token_req(ep, token) != NULL;
}

kvw_mem *kvw_core_grant_mem(kvw_ep *ep, uint32_t token)
{
	kvw_req *r = kvw_token_req(ep, token);

	return r && r->layout ? r->layout->mem : NULL;
}

/* ------------------------------------------------------------ requests */
static kvw_req *kvw_req_new(kvw_ep *ep, enum kvw_req_role role, uint64_t seq_id)
{
	kvw_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->ep = ep;
	r->role = role;
	r->seq_id = seq_id;
	r->status = KVW_INPROGRESS;
	r->t_posted = kvw_now_ns();
	r->next_ep = ep->reqs;
	if (ep->reqs)
		ep->reqs->prev_ep = r;
	ep->reqs = r;
	return r;
}

static void kvw_map_remove(kvw_ep *ep, kvw_req *r)
{
	if (!r->in_map)
		return;
	r->in_map = false;
	if (r->role == KVW_ROLE_RECV) {
		kvw_token_release(ep, r);
		kvw_map_del(&ep->recv_map, r->seq_id);
	} else {
		kvw_map_del(&ep->send_map, r->seq_id);
	}
}

/* Body bytes of a GRANT (with its geometry when flagged GEOM). */
static uint64_t kvw_grant_body_len(uint32_t n_layers, uint32_t n_blocks, uint32_t flags)
{
	return kvw_wire_grant_len(n_layers, n_blocks) +
	       (flags & KVW_GRANT_GEOM ? sizeof(struct kvw_wire_geom) : 0);
}

/* A peer GRANT waiting for kvw_send_seq stops counting against the caps
 * (max_peer_grants, max_peer_grant_bytes) once matched or gone. */
static void kvw_grant_unwait(kvw_ep *ep, kvw_req *r)
{
	if (!ep || r->role != KVW_ROLE_SEND || !r->granted || r->user_owned)
		return;
	ep->peer_grants--;
	ep->peer_grant_bytes -= kvw_grant_body_len(r->pg.n_layers, r->pg.n_blocks, r->pg.flags);
}

static void kvw_req_destroy(kvw_req *r)
{
	kvw_grant_unwait(r->ep, r);
	if (r->ep)
		kvw_map_remove(r->ep, r);
	if (r->ep) {
		if (r->prev_ep)
			r->prev_ep->next_ep = r->next_ep;
		else
			r->ep->reqs = r->next_ep;
		if (r->next_ep)
			r->next_ep->prev_ep = r->prev_ep;
	}
	free(r->blocks);
	free(r->layer_bytes);
	free(r->run_end);
	kvw_cover_free(&r->cover);
	free(r->frag_end);
	free(r->pending);
	free(r->pg.layer_off);
	free(r->pg.blocks);
	free(r);
}

static void kvw_active_del(kvw_ep *ep, kvw_req *r)
{
	if (!r->on_active)
		return;
	if (r->prev_active)
		r->prev_active->next_active = r->next_active;
	else
		ep->active_head = r->next_active;
	if (r->next_active)
		r->next_active->prev_active = r->prev_active;
	r->on_active = false;
	r->next_active = r->prev_active = NULL;
}

static void kvw_active_add(kvw_ep *ep, kvw_req *r)
{
	if (r->on_active || !r->granted || r->status != KVW_INPROGRESS || r->fencing)
		return;
	r->on_active = true;
	r->prev_active = NULL;
	r->next_active = ep->active_head;
	if (ep->active_head)
		ep->active_head->prev_active = r;
	ep->active_head = r;
}

/* A user's send request stays in send_map until kvw_req_free, so later
 * kvw_send_seq calls for its seq_id return it (and its final status). */
static void kvw_req_unmap(kvw_ep *ep, kvw_req *r)
{
	if (!r->in_map || (r->role == KVW_ROLE_SEND && r->user_owned))
		return;
	kvw_map_remove(ep, r);
}

/* Final status: event, counters, memory hold released. */
static void kvw_req_complete(kvw_req *r, kvw_status st)
{
	kvw_ep *ep = r->ep;
	kvw_event ev;

	if (r->status != KVW_INPROGRESS)
		return;
	r->status = st;
	r->t_completed = kvw_now_ns();
	kvw_active_del(ep, r);
	if (r->role == KVW_ROLE_RECV) {
		kvw_token_release(ep, r);
		kvw_cover_free(&r->cover);
		ep->drv->ops->grant_done(ep, r);
	}
	if (r->layout)
		r->layout->mem->users--;
	if (!r->user_owned)
		return;
	if (st == KVW_OK)
		ep->cnt.seqs_ok++;
	else
		ep->cnt.seqs_failed++;
	if (r->group) {
		kvw_group_part_done(r, st);
		return;
	}
	ev = (kvw_event){.type = KVW_EV_SEQ, .status = st, .req = r, .ep = ep,
			 .user_data = r->user_data, .seq_id = r->seq_id, .bytes = r->bytes_done};
	kvw_ev_push(ep->ctx, &ev);
}

/* A peer GRANT that waited for kvw_send_seq ended: remember it (a ring of
 * the last KVW_ENDED_GRANTS), so that send fails at once. */
static void kvw_grant_ended_note(kvw_ep *ep, const kvw_req *r, kvw_status st)
{
	if (r->role != KVW_ROLE_SEND || !r->granted)
		return;
	ep->ended[ep->ended_next % KVW_ENDED_GRANTS] = (struct kvw_ended_grant){r->seq_id, st};
	ep->ended_next++;
}

/* Takes seq_id out of the ring; its status, or KVW_OK if it is not there. */
static kvw_status kvw_grant_ended_take(kvw_ep *ep, uint64_t seq_id)
{
	for (uint32_t i = 0; i < KVW_ENDED_GRANTS; i++) {
		struct kvw_ended_grant *e = &ep->ended[i];
		if (e->st != KVW_OK && e->seq_id == seq_id) {
			kvw_status st = e->st;
			e->st = KVW_OK;
			return st;
		}
	}
	return KVW_OK;
}

static void kvw_send_abort(kvw_ep *ep, const kvw_req *r, kvw_status why, bool to_receiver)
{
	struct kvw_wire_abort a = {.seq_id = r->seq_id, .status = why,
				   .token = r->role == KVW_ROLE_RECV ? r->token : r->pg.token,
				   .flags = to_receiver ? KVW_ABORT_TO_RECEIVER : 0};

	if (ep->state == KVW_EP_READY)
		kvw_ep_send(ep, KVW_T_ABORT, &a, sizeof(a));
}

/* ------------------------------------------------------ the abort fence */
static void kvw_deadline_note(kvw_ep *ep, uint64_t d);

/* One mechanism for both roles. A failed request whose bytes may still move
 * (receiver: the driver's revoke answered INPROGRESS; sender: the peer was
 * told with ABORT and may still be reading our pages) stays INPROGRESS with
 * `fencing` set and its final status in fence_st; nothing waits for the
 * fence. It ends when the fence holds (kvw_core_fence_done / ABORT_ACK), or
 * at deadline_ns, now abort_timeout_ms away (kvw_fence_expired). */
static void kvw_fence_start(kvw_req *r, kvw_status st)
{
	kvw_ep *ep = r->ep;

	r->fencing = true;
	r->fence_st = st;
	r->deadline_ns = kvw_now_ns() + (uint64_t)ep->ctx->cfg.abort_timeout_ms * 1000000ull;
	kvw_deadline_note(ep, r->deadline_ns);
}

/* The fence holds: the request ends with the status it failed with. */
static void kvw_fence_finish(kvw_req *r)
{
	kvw_ep *ep = r->ep;

	r->fencing = false;
	kvw_req_unmap(ep, r);
	kvw_req_complete(r, r->fence_st);
	if (!r->user_owned)
		kvw_req_destroy(r);
}

void kvw_core_fence_done(kvw_ep *ep, kvw_req *r)
{
	if (r && r->ep == ep && r->fencing && r->status == KVW_INPROGRESS)
		kvw_fence_finish(r);
}

/* Starts what stops r's bytes; true when a fence must still be waited for.
 * A send waits for the receiver's ABORT_ACK only when the application
 * aborts it (sender_fence): a deadline or refusal ends it at once, as the
 * peer may never answer (hostile_seq peer_timeout_cut). */
static bool kvw_fence_begin(kvw_req *r, kvw_status st, bool tell_peer, bool sender_fence)
{
	kvw_ep *ep = r->ep;
	bool wait;

	if (r->role == KVW_ROLE_RECV) {
		wait = ep->drv->ops->revoke(ep, r) == KVW_INPROGRESS;
		kvw_token_release(ep, r); /* two-sided drivers: late fragments refused */
		if (tell_peer)
			kvw_send_abort(ep, r, st, false);
		return wait;
	}
	/* the NIC may still read our pages (rdma writes) until cancel_done */
	r->cancel_pending = ep->drv->ops->cancel(ep, r) == KVW_INPROGRESS &&
			    ep->state == KVW_EP_READY;
	kvw_active_del(ep, r);
	r->ack_wait = false;
	if (tell_peer && r->granted) {
		kvw_send_abort(ep, r, st, true);
		/* the receiver may still read our pages (shm) until its ABORT_ACK */
		r->ack_wait = sender_fence && r->user_owned && ep->state == KVW_EP_READY;
	}
	return r->cancel_pending || r->ack_wait;
}

/* Ends a live request with st, tells the peer (unless the peer told us).
 * The final status waits for the fence where one runs (above). */
static void kvw_req_fail_fenced(kvw_req *r, kvw_status st, bool tell_peer, bool sender_fence)
{
	kvw_ep *ep = r->ep;

	if (r->status != KVW_INPROGRESS)
		return;
	if (r->fencing) { /* failed already; an endpoint gone ends its fence */
		if (ep->state != KVW_EP_READY)
			kvw_fence_finish(r);
		return;
	}
	if (kvw_fence_begin(r, st, tell_peer, sender_fence) && ep->state == KVW_EP_READY) {
		kvw_fence_start(r, st);
		return;
	}
	kvw_req_unmap(ep, r);
	kvw_req_complete(r, st);
	if (!r->user_owned) {
		kvw_grant_ended_note(ep, r, st);
		kvw_req_destroy(r);
	}
}

static void kvw_req_fail(kvw_req *r, kvw_status st, bool tell_peer)
{
	kvw_req_fail_fenced(r, st, tell_peer, false);
}

void kvw_req_abort_start(kvw_req *r)
{
	if (r->ep && r->status == KVW_INPROGRESS)
		kvw_req_fail_fenced(r, KVW_ERR_ABORTED, true, true);
}

void kvw_req_release(kvw_req *r)
{
	kvw_req_destroy(r);
}

static bool kvw_blocks_ok(const kvw_layout *l, const uint32_t *blocks, size_t n, size_t *bad)
{
	for (size_t i = 0; i < n; i++) {
		if (blocks[i] >= l->n_blocks) {
			*bad = i;
			return false;
		}
	}
	return true;
}

static kvw_status kvw_seq_args(kvw_ep *ep, const kvw_layout *l, const uint32_t *blocks, size_t n)
{
	size_t bad;
	kvw_status st = kvw_ep_status(ep);

	if (st != KVW_OK)
		return st == KVW_INPROGRESS ? kvw_set_err(ep->ctx, KVW_ERR_INVALID, "endpoint not connected yet")
					    : kvw_set_err(ep->ctx, st, "endpoint unusable: %s", ep->fail_why);
	if (!l || !blocks || n == 0 || n > KVW_MAX_BLOCKS_PER_SEQ)
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "need a layout and 1..%u blocks",
				   KVW_MAX_BLOCKS_PER_SEQ);
	if (!kvw_blocks_ok(l, blocks, n, &bad))
		return kvw_set_err(ep->ctx, KVW_ERR_REJECTED,
				   "block list entry %zu is block %u, outside the layout's %u blocks: "
				   "nothing was sent", bad, blocks[bad], l->n_blocks);
	return KVW_OK;
}

/* common request body: block copy and per-layer counters */
static kvw_status kvw_req_setup(kvw_req *r, const kvw_layout *l, const uint32_t *blocks, size_t n)
{
	r->layout = l;
	r->n_blocks = (uint32_t)n;
	r->n_layers = l->n_layers;
	r->bytes_total = (uint64_t)n * l->block_bytes * l->n_layers;
	r->blocks = malloc(n * sizeof(*r->blocks));
	r->layer_bytes = calloc(l->n_layers, sizeof(*r->layer_bytes));
	if (!r->blocks || !r->layer_bytes)
		return KVW_ERR_NOMEM;
	memcpy(r->blocks, blocks, n * sizeof(*blocks));
	l->mem->users++;
	return KVW_OK;
}

static uint64_t kvw_deadline(const kvw_ep *ep, uint64_t timeout_us)
{
	if (!timeout_us)
		timeout_us = (uint64_t)ep->ctx->cfg.timeout_ms * 1000;
	return kvw_now_ns() + timeout_us * 1000;
}

static void kvw_deadline_note(kvw_ep *ep, uint64_t d)
{
	if (!ep->next_deadline_ns || d < ep->next_deadline_ns)
		ep->next_deadline_ns = d;
}

/* ----------------------------------------------------------- decode side */
/* The GEOM body of a grant: the layout's geometry and what r grants. */
static void kvw_grant_geom_body(const kvw_req *r, uint8_t *out)
{
	const kvw_geom *g = &r->layout->g;
	struct kvw_wire_geom w = {
		.n_layers = g->n_layers, .n_kv = g->n_kv, .n_blocks = g->n_blocks,
		.block_tokens = g->block_tokens, .elem_bytes = g->elem_bytes,
		.head_dim = g->head_dim, .num_heads = g->num_heads, .h0 = g->h0, .h1 = g->h1,
		.gh0 = r->gg.h0, .gh1 = r->gg.h1, .flags = g->kv_offsets ? KVW_WGEOM_KV_OFFSETS : 0,
		.token_stride = g->token_stride, .head_stride = g->head_stride,
		.kv_stride = g->kv_stride, .block_stride = g->block_stride,
		.base_offset = g->base_offset, .layer_stride = g->layer_stride,
		.t0 = r->gg.t0, .t1 = r->gg.t1,
	};
	memcpy(out, &w, sizeof(w));
}

/* Builds the GRANT; the driver keys it (ops->grant_keys: one-sided drivers
 * give the remote key it carries, two-sided ones leave 0) before it leaves. */
static kvw_status kvw_grant_send(kvw_ep *ep, kvw_req *r)
{
	const kvw_layout *l = r->layout;
	uint32_t nl = l->geo ? l->n_regions : l->n_layers;
	size_t base = kvw_wire_grant_len(nl, r->n_blocks);
	size_t len = base + (l->geo ? sizeof(struct kvw_wire_geom) : 0);
	uint8_t *b = malloc(len);
	struct kvw_wire_grant g = {
		.seq_id = r->seq_id, .token = r->token, .n_blocks = r->n_blocks,
		.n_layers = nl, .block_bytes = l->block_bytes, .flags = l->geo ? KVW_GRANT_GEOM : 0,
		.block_stride = l->block_stride,
		.timeout_us = (r->deadline_ns - r->t_posted) / 1000,
		.mem_addr = (uint64_t)(uintptr_t)l->mem->addr, .mem_len = l->mem->len,
	};
	kvw_status st;

	if (!b)
		return KVW_ERR_NOMEM;
	memcpy(b, &g, sizeof(g));
	memcpy(b + sizeof(g), l->layer_off, nl * sizeof(uint64_t));
	memcpy(b + sizeof(g) + nl * sizeof(uint64_t), r->blocks, r->n_blocks * 4u);
	if (l->geo)
		kvw_grant_geom_body(r, b + base);
	st = ep->drv->ops->grant_keys(ep, r, b, len, &g.mem_key);
	if (st == KVW_OK) {
		memcpy(b, &g, sizeof(g));
		st = kvw_ep_send(ep, KVW_T_GRANT, b, len);
	}
	free(b);
	return st;
}

/* run_end[j]: last list index of the contiguous memory run holding j */
static void kvw_runs_compute(uint32_t *run_end, const uint32_t *blocks, uint32_t n, bool packed)
{
	run_end[n - 1] = n - 1;
	for (uint32_t j = n - 1; j-- > 0;)
		run_end[j] = packed && blocks[j + 1] == blocks[j] + 1 ? run_end[j + 1] : j;
}

/* Tokens [t0, t1) and heads [h0, h1) of a range (NULL or zeroes: all). */
static kvw_status kvw_range_get(kvw_ep *ep, const kvw_layout *l, size_t n, const kvw_seq_range *rg,
				struct kvw_geom_grant *gg)
{
	const kvw_geom *g = &l->g;
	uint64_t all = (uint64_t)n * g->block_tokens;

	*gg = (struct kvw_geom_grant){.t0 = 0, .t1 = all, .h0 = g->h0, .h1 = g->h1};
	if (!rg)
		return KVW_OK;
	if (rg->size < sizeof(*rg) || rg->rsvd)
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "kvw_seq_range: set size to "
				   "sizeof(kvw_seq_range) and rsvd to 0");
	if (rg->t1)
		gg->t0 = rg->t0, gg->t1 = rg->t1;
	if (rg->h1)
		gg->h0 = rg->h0, gg->h1 = rg->h1;
	if (gg->t0 >= gg->t1 || gg->t1 > all)
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "kvw_seq_range: tokens [%llu, %llu) must be "
				   "a non-empty range inside the %llu tokens the block table holds",
				   (unsigned long long)gg->t0, (unsigned long long)gg->t1,
				   (unsigned long long)all);
	if (gg->h0 < g->h0 || gg->h0 >= gg->h1 || gg->h1 > g->h1)
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "kvw_seq_range: heads [%u, %u) must be a "
				   "non-empty range inside the layout's heads [%u, %u)", gg->h0, gg->h1,
				   g->h0, g->h1);
	return KVW_OK;
}

/* Granted bytes per layer of a geometry grant. */
static uint64_t kvw_geo_layer_total(const kvw_geom *g, const struct kvw_geom_grant *gg)
{
	return (uint64_t)g->n_kv * (gg->t1 - gg->t0) * (gg->h1 - gg->h0) * g->head_dim * g->elem_bytes;
}

/* A geometry grant's checks before anything is set up. */
static kvw_status kvw_recv_geo_args(kvw_ep *ep, const kvw_layout *l, size_t n,
				    const kvw_seq_range *rg, struct kvw_geom_grant *gg)
{
	uint64_t space;
	kvw_status st;

	if (!l->geo)
		return rg ? kvw_set_err(ep->ctx, KVW_ERR_INVALID, "kvw_recv_seq_range: token and head "
					"ranges need a layout from kvw_layout_create_geom") : KVW_OK;
	if (ep->peer_major == KVW_WIRE_MAJOR && ep->peer_minor < 2)
		return kvw_set_err(ep->ctx, KVW_ERR_UNSUPPORTED, "the peer speaks wire 1.%u, a grant "
				   "with a geometry needs 1.2: upgrade kvwire on the prefill side or grant "
				   "with a kvw_layout_desc layout", ep->peer_minor);
	if ((st = kvw_range_get(ep, l, n, rg, gg)) != KVW_OK)
		return st;
	if (__builtin_mul_overflow((uint64_t)l->n_regions * n, l->block_stride, &space))
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "kvw_recv_seq: the grant spans more than "
				   "64-bit offsets; grant fewer blocks");
	return KVW_OK;
}

kvw_status kvw_recv_seq(kvw_ep *ep, uint64_t seq_id, const kvw_layout *l, const uint32_t *blocks,
			size_t n, uint64_t timeout_us, kvw_req **out)
{
	return kvw_recv_seq_range(ep, seq_id, l, blocks, n, NULL, timeout_us, out);
}

kvw_status kvw_recv_seq_range(kvw_ep *ep, uint64_t seq_id, const kvw_layout *l,
			      const uint32_t *blocks, size_t n, const kvw_seq_range *rg,
			      uint64_t timeout_us, kvw_req **out)
{
	struct kvw_geom_grant gg = {0};
	kvw_req *r;
	kvw_status st;

	if (!ep || !out)
		return kvw_set_err(ep ? ep->ctx : NULL, KVW_ERR_INVALID, "kvw_recv_seq: endpoint and "
				   "output pointer must not be NULL");
	kvw_err_clear(ep->ctx);
	if ((st = kvw_seq_args(ep, l, blocks, n)) != KVW_OK ||
	    (st = kvw_recv_geo_args(ep, l, n, rg, &gg)) != KVW_OK)
		return st;
	if (kvw_map_get(&ep->recv_map, seq_id))
		return kvw_set_err(ep->ctx, KVW_ERR_BUSY, "sequence %llu already has a live grant on "
				   "this endpoint", (unsigned long long)seq_id);
	if (!(r = kvw_req_new(ep, KVW_ROLE_RECV, seq_id)))
		return kvw_set_err(ep->ctx, KVW_ERR_NOMEM, "kvw_recv_seq: out of memory");
	r->user_owned = true;
	st = kvw_req_setup(r, l, blocks, n);
	if (st == KVW_OK && !(r->run_end = malloc(n * sizeof(*r->run_end))))
		st = KVW_ERR_NOMEM;
	if (st == KVW_OK)
		st = kvw_cover_init(&r->cover, 8);
	if (st == KVW_OK)
		st = kvw_token_alloc(ep, r);
	if (st == KVW_OK)
		st = kvw_map_put(&ep->recv_map, seq_id, r);
	if (st != KVW_OK) {
		if (r->layout)
			l->mem->users--;
		kvw_token_release(ep, r);
		kvw_req_destroy(r);
		return kvw_set_err(ep->ctx, st, "recv_seq: out of memory");
	}
	r->in_map = true;
	if (l->geo) {
		r->geo = true;
		r->gg = gg;
		r->gg.side = (struct kvw_geom_side){&l->g, r->blocks, r->n_blocks};
		r->layer_total = kvw_geo_layer_total(&l->g, &gg);
		r->bytes_total = r->layer_total * l->n_layers;
	}
	kvw_runs_compute(r->run_end, r->blocks, r->n_blocks, l->block_stride == l->block_bytes);
	r->deadline_ns = kvw_deadline(ep, timeout_us);
	kvw_deadline_note(ep, r->deadline_ns);
	if ((st = kvw_grant_send(ep, r)) != KVW_OK) {
		kvw_req_fail(r, st, false);
		return st;
	}
	*out = r;
	return KVW_OK;
}

static kvw_status kvw_dst_reject(kvw_ep *ep, kvw_req *r, const char *what)
{
	char why[160];

	ep->cnt.rejected++;
	snprintf(why, sizeof(why), "sequence %llu: peer sent a fragment %s; request rejected, "
		 "nothing written", (unsigned long long)r->seq_id, what);
	kvw_set_err(ep->ctx, KVW_ERR_REJECTED, "%s", why);
	kvw_req_fail(r, KVW_ERR_REJECTED, true);
	return KVW_ERR_REJECTED;
}

void kvw_core_token_reject(kvw_ep *ep, uint32_t token, const char *what)
{
	kvw_req *r = kvw_token_req(ep, token);

	if (r)
		kvw_dst_reject(ep, r, what);
	else
		ep->cnt.rejected++;
}

/* Layer and K/V of a geometry layout's region (the wire's `layer`). */
static void kvw_region_split(const kvw_layout *l, uint32_t reg, uint32_t *layer, uint32_t *kv)
{
	uint32_t per = l->n_regions / l->n_layers;

	*layer = reg / per;
	*kv = reg % per;
}

static kvw_status kvw_dst_geo(kvw_ep *ep, kvw_req *r, const struct kvw_wire_data *d, uint8_t **dst)
{
	const kvw_layout *l = r->layout;
	uint32_t layer, kv;

	if (d->layer >= l->n_regions || d->blk_idx >= r->n_blocks)
		return kvw_dst_reject(ep, r, "naming a layer or block outside its grant");
	kvw_region_split(l, d->layer, &layer, &kv);
	if (!kvw_geom_frag_ok(&r->gg, layer, kv, d->blk_idx, d->blk_off, d->bytes))
		return kvw_dst_reject(ep, r, "outside its granted tokens, heads or blocks");
	if (r->layer_bytes[layer] == r->layer_total) {
		ep->cnt.dups++; /* its LAYER event is out: nothing lands in it any more */
		return KVW_ERR_ABORTED;
	}
	if (!r->t_first_byte)
		r->t_first_byte = kvw_now_ns();
	*dst = kvw_layout_page(l, d->layer, r->blocks[d->blk_idx]) + d->blk_off;
	return KVW_OK;
}

kvw_status kvw_core_dst(kvw_ep *ep, const struct kvw_wire_data *d, uint8_t **dst)
{
	kvw_req *r = kvw_token_req(ep, d->token);
	uint64_t bb, span, layer_total;

	if (!r) {
		ep->cnt.drops++;
		return KVW_ERR_ABORTED; /* unknown or revoked grant: discard */
	}
	if (r->geo)
		return kvw_dst_geo(ep, r, d, dst);
	bb = r->layout->block_bytes;
	if (d->layer >= r->n_layers || d->blk_idx >= r->n_blocks)
		return kvw_dst_reject(ep, r, "naming a layer or block outside its grant");
	if (d->bytes == 0 || d->blk_off >= bb)
		return kvw_dst_reject(ep, r, "with a bad offset or length");
	span = (uint64_t)(r->run_end[d->blk_idx] - d->blk_idx + 1) * bb;
	if (d->bytes > span || d->blk_off > span - d->bytes)
		return kvw_dst_reject(ep, r, "running past the end of its granted blocks");
	layer_total = (uint64_t)r->n_blocks * bb;
	if (r->layer_bytes[d->layer] == layer_total) {
		ep->cnt.dups++; /* its LAYER event is out: nothing lands in it any more */
		return KVW_ERR_ABORTED;
	}
	if (!r->t_first_byte)
		r->t_first_byte = kvw_now_ns();
	*dst = kvw_layout_page(r->layout, d->layer, r->blocks[d->blk_idx]) + d->blk_off;
	return KVW_OK;
}

static void kvw_recv_done(kvw_ep *ep, kvw_req *r)
{
	struct kvw_wire_seq_done sd = {.seq_id = r->seq_id, .bytes = r->bytes_done};

	r->t_last_byte = kvw_now_ns();
	kvw_ep_send(ep, KVW_T_SEQ_DONE, &sd, sizeof(sd));
	kvw_req_unmap(ep, r);
	kvw_req_complete(r, KVW_OK);
}

static void kvw_cover_fail(kvw_ep *ep, kvw_req *r, kvw_status st)
{
	ep->cnt.rejected++;
	if (st == KVW_ERR_BUSY)
		kvw_set_err(ep->ctx, KVW_ERR_REJECTED, "sequence %llu: the peer's fragments left more "
			    "than %u separate holes in the grant (an honest sender fills its runs in "
			    "order); request rejected", (unsigned long long)r->seq_id, KVW_COVER_MAX);
	else
		kvw_set_err(ep->ctx, KVW_ERR_NOMEM, "sequence %llu: out of memory recording which "
			    "granted bytes landed; request failed", (unsigned long long)r->seq_id);
	kvw_req_fail(r, st == KVW_ERR_BUSY ? KVW_ERR_REJECTED : KVW_ERR_NOMEM, true);
}

/* Counts the bytes of d not covered before; true when some were new. */
static bool kvw_landed_cover(kvw_ep *ep, kvw_req *r, const struct kvw_wire_data *d, uint64_t lt)
{
	uint64_t bb = r->layout->block_bytes, pos, added;
	kvw_status st;

	if (d->blk_idx >= r->n_blocks || d->blk_off >= bb ||
	    (uint64_t)d->blk_idx * bb + d->blk_off + d->bytes > lt)
		return false; /* not approved by kvw_core_dst */
	pos = (uint64_t)d->layer * lt + (uint64_t)d->blk_idx * bb + d->blk_off;
	if ((st = kvw_cover_add(&r->cover, pos, pos + d->bytes, &added)) != KVW_OK) {
		kvw_cover_fail(ep, r, st);
		return false;
	}
	if (added < d->bytes)
		ep->cnt.dups++; /* bytes landed before: never counted twice */
	r->layer_bytes[d->layer] += added;
	r->bytes_done += added;
	return added > 0;
}

/* kvw_landed_cover for a geometry grant: the byte space is (region, list
 * index, offset) with offsets normalised to block_stride (a fragment that
 * runs on into the next entry covers that entry's bytes). */
static bool kvw_landed_geo(kvw_ep *ep, kvw_req *r, const struct kvw_wire_data *d, uint32_t *layer)
{
	const kvw_layout *l = r->layout;
	uint64_t pos, added;
	uint32_t kv;
	kvw_status st;

	if (d->layer >= l->n_regions || d->blk_idx >= r->n_blocks)
		return false; /* not approved by kvw_core_dst */
	kvw_region_split(l, d->layer, layer, &kv);
	if (!kvw_geom_frag_ok(&r->gg, *layer, kv, d->blk_idx, d->blk_off, d->bytes))
		return false;
	pos = ((uint64_t)d->layer * r->n_blocks + d->blk_idx) * l->block_stride + d->blk_off;
	if ((st = kvw_cover_add(&r->cover, pos, pos + d->bytes, &added)) != KVW_OK) {
		kvw_cover_fail(ep, r, st);
		return false;
	}
	if (added < d->bytes)
		ep->cnt.dups++;
	r->layer_bytes[*layer] += added;
	r->bytes_done += added;
	return added > 0;
}

void kvw_core_landed(kvw_ep *ep, const struct kvw_wire_data *d)
{
	kvw_req *r = kvw_token_req(ep, d->token);
	uint32_t layer = d->layer;
	uint64_t layer_total;

	ep->cnt.bytes_rx += d->bytes;
	ep->cnt.frags_rx++;
	if (!r || (!r->geo && layer >= r->n_layers))
		return;
	layer_total = r->geo ? r->layer_total : (uint64_t)r->n_blocks * r->layout->block_bytes;
	if (r->geo ? !kvw_landed_geo(ep, r, d, &layer) : !kvw_landed_cover(ep, r, d, layer_total))
		return;
	if (r->layer_bytes[layer] == layer_total) {
		struct kvw_wire_layer_done ld = {.seq_id = r->seq_id, .layer = layer, .bytes = layer_total};
		kvw_event ev = {.type = KVW_EV_LAYER, .status = KVW_OK, .req = r, .ep = ep,
				.user_data = r->user_data, .seq_id = r->seq_id, .layer = layer,
				.bytes = layer_total};
		r->layers_done++;
		if (r->group)
			kvw_group_layer(r, layer);
		else
			kvw_ev_push(ep->ctx, &ev);
		if (r->layers_done == r->n_layers)
			kvw_recv_done(ep, r); /* SEQ_DONE also confirms the last layer */
		else
			kvw_ep_send(ep, KVW_T_LAYER_DONE, &ld, sizeof(ld));
	}
}

/* ---------------------------------------------------------- prefill side */
/* A simple layout (pages) as a geometry: one 1-token block, one head. */
static void kvw_geom_of_pages(uint32_t n_layers, uint32_t n_blocks, uint64_t bb, uint64_t stride,
			      const uint64_t *layer_off, kvw_geom *g)
{
	*g = (kvw_geom){.size = sizeof(*g), .n_layers = n_layers, .n_kv = 1, .n_blocks = n_blocks,
		.block_tokens = 1, .elem_bytes = bb > UINT32_MAX ? 2 : 1, .num_heads = 1, .h1 = 1,
		.token_stride = bb, .head_stride = bb, .block_stride = stride, .kv_offsets = layer_off};
	g->head_dim = (uint32_t)(bb / g->elem_bytes);
}

/* The peer's GEOM grant as a geometry (r->pgeom, r->gg); a sentence in why. */
static bool kvw_peer_geom(kvw_req *r, const struct kvw_wire_geom *w, const uint64_t *regions,
			  char *why, size_t len)
{
	kvw_geom *g = &r->pgeom;
	uint32_t per;

	*g = (kvw_geom){.size = sizeof(*g), .n_layers = w->n_layers, .n_kv = w->n_kv,
		.n_blocks = w->n_blocks, .block_tokens = w->block_tokens, .elem_bytes = w->elem_bytes,
		.head_dim = w->head_dim, .num_heads = w->num_heads, .h0 = w->h0, .h1 = w->h1,
		.token_stride = w->token_stride, .head_stride = w->head_stride,
		.kv_stride = w->kv_stride, .block_stride = w->block_stride,
		.base_offset = w->base_offset, .layer_stride = w->layer_stride,
		.kv_offsets = w->flags & KVW_WGEOM_KV_OFFSETS ? regions : NULL};
	r->gg = (struct kvw_geom_grant){.side = {g, r->pg.blocks, r->pg.n_blocks},
		.t0 = w->t0, .t1 = w->t1, .h0 = w->gh0, .h1 = w->gh1};
	if (w->flags & ~KVW_WGEOM_KV_OFFSETS) {
		snprintf(why, len, "the grant's geometry has unknown flags");
		return false;
	}
	if (kvw_geom_check(g, r->pg.mem_len, why, len) != KVW_OK)
		return false;
	per = kvw_geom_kv_shared(g) ? 1 : g->n_kv;
	if ((uint64_t)g->n_layers * per != r->pg.n_layers || r->pg.block_bytes != g->block_stride ||
	    r->pg.block_stride != g->block_stride || w->gh0 < w->h0 || w->gh0 >= w->gh1 ||
	    w->gh1 > w->h1 || w->t0 >= w->t1) {
		snprintf(why, len, "the grant's regions, block size, heads or tokens disagree with its "
			 "geometry");
		return false;
	}
	return true;
}

static kvw_status kvw_match_refuse(kvw_ep *ep, kvw_req *r, const char *why)
{
	kvw_set_err(ep->ctx, KVW_ERR_REJECTED, "sequence %llu: %s", (unsigned long long)r->seq_id, why);
	return KVW_ERR_REJECTED;
}

/* Source pieces one fragment to this peer may gather: what max_gather and
 * the driver allow, from wire 1.3 on (shm's DESCV). */
static uint32_t kvw_ep_gather(const kvw_ep *ep)
{
	uint64_t g = ep->ctx->cfg.max_gather;

	if (ep->drv->caps.max_gather < g)
		g = ep->drv->caps.max_gather;
	if (ep->peer_major == KVW_WIRE_MAJOR && ep->peer_minor < 3)
		return 1;
	return (uint32_t)g;
}

/* This side holds what the grant asks for: its tokens and heads. */
static bool kvw_match_holds(kvw_req *r, const kvw_geom *sg, char *why, size_t len)
{
	const struct kvw_geom_grant *gg = &r->gg;
	uint64_t st1 = r->st1 ? r->st1 : (uint64_t)r->n_blocks * sg->block_tokens;

	if (gg->t0 < r->st0 || gg->t1 > st1) {
		snprintf(why, len, "the decode side granted tokens [%llu, %llu), this side holds [%llu, "
			 "%llu): send the tokens it grants", (unsigned long long)gg->t0,
			 (unsigned long long)gg->t1, (unsigned long long)r->st0, (unsigned long long)st1);
		return false;
	}
	if (gg->h0 < sg->h0 || gg->h1 > sg->h1) {
		snprintf(why, len, "the decode side granted heads [%u, %u), this side holds [%u, %u): "
			 "with several prefill senders, grant each one only its heads", gg->h0, gg->h1,
			 sg->h0, sg->h1);
		return false;
	}
	return true;
}

/* Matching when either side has a geometry: the plan from ours to theirs. */
static kvw_status kvw_match_geo(kvw_ep *ep, kvw_req *r)
{
	const kvw_layout *l = r->layout;
	struct kvw_geom_side s, d;
	char why[256];

	if (l->geo)
		r->sgeom = l->g;
	else
		kvw_geom_of_pages(l->n_layers, l->n_blocks, l->block_bytes, l->block_stride,
				  l->layer_off, &r->sgeom);
	if (!(r->pg.flags & KVW_GRANT_GEOM)) {
		uint32_t nb = 0;
		for (uint32_t j = 0; j < r->pg.n_blocks; j++)
			nb = r->pg.blocks[j] >= nb ? r->pg.blocks[j] + 1 : nb;
		kvw_geom_of_pages(r->pg.n_layers, nb, r->pg.block_bytes, r->pg.block_stride,
				  r->pg.layer_off, &r->pgeom);
		r->gg = (struct kvw_geom_grant){.side = {&r->pgeom, r->pg.blocks, r->pg.n_blocks},
			.t0 = 0, .t1 = r->pg.n_blocks, .h0 = 0, .h1 = 1};
	} else if (!kvw_peer_geom(r, &r->pgw, r->pg.layer_off, why, sizeof(why))) {
		return kvw_match_refuse(ep, r, why);
	}
	if (!kvw_match_holds(r, &r->sgeom, why, sizeof(why)))
		return kvw_match_refuse(ep, r, why);
	s = (struct kvw_geom_side){&r->sgeom, r->blocks, r->n_blocks};
	d = r->gg.side;
	if (kvw_plan_init_heads(&s, &d, r->gg.t0, r->gg.t1, r->gg.h0, r->gg.h1, why, sizeof(why),
				&r->gc.plan) != KVW_OK)
		return kvw_match_refuse(ep, r, why);
	r->gc.plan.gather = kvw_ep_gather(ep);
	r->geo = true;
	r->layer_total = kvw_geo_layer_total(&r->pgeom, &r->gg);
	r->bytes_total = r->layer_total * r->n_layers;
	r->gc.pend = r->cur.pend;
	r->t_matched = kvw_now_ns();
	kvw_active_add(ep, r);
	return KVW_OK;
}

static kvw_status kvw_send_match(kvw_ep *ep, kvw_req *r)
{
	const kvw_layout *l = r->layout;
	uint32_t n = r->n_blocks;

	if (l->geo || (r->pg.flags & KVW_GRANT_GEOM))
		return kvw_match_geo(ep, r);

	if (r->pg.n_blocks != n || r->pg.block_bytes != l->block_bytes || r->pg.n_layers != l->n_layers) {
		kvw_set_err(ep->ctx, KVW_ERR_REJECTED,
			    "sequence %llu: the decode side granted %u blocks of %llu bytes in %u layers, "
			    "this side sends %u blocks of %llu bytes in %u layers",
			    (unsigned long long)r->seq_id, r->pg.n_blocks,
			    (unsigned long long)r->pg.block_bytes, r->pg.n_layers, n,
			    (unsigned long long)l->block_bytes, l->n_layers);
		return KVW_ERR_REJECTED;
	}
	if (kvw_cur_runs(r) != KVW_OK)
		return KVW_ERR_NOMEM;
	r->t_matched = kvw_now_ns();
	kvw_active_add(ep, r);
	return KVW_OK;
}

/* Copies the peer's grant into r (r->granted set: a failure tells the peer). */
static kvw_status kvw_grant_copy(kvw_req *r, const struct kvw_wire_grant *g, const void *body)
{
	r->granted = true;
	r->pg = (struct kvw_peer_grant){.token = g->token, .n_blocks = g->n_blocks,
		.n_layers = g->n_layers, .block_bytes = g->block_bytes, .block_stride = g->block_stride,
		.mem_addr = g->mem_addr, .mem_len = g->mem_len, .mem_key = g->mem_key,
		.flags = g->flags};
	if (g->flags & KVW_GRANT_GEOM)
		kvw_wire_grant_geom(body, &r->pgw);
	r->pg.layer_off = malloc(g->n_layers * sizeof(uint64_t));
	r->pg.blocks = malloc(g->n_blocks * sizeof(uint32_t));
	if (!r->pg.layer_off || !r->pg.blocks)
		return KVW_ERR_NOMEM;
	for (uint32_t i = 0; i < g->n_layers; i++)
		r->pg.layer_off[i] = kvw_wire_grant_layer_off(body, i);
	memcpy(r->pg.blocks, (const uint8_t *)body + sizeof(*g) + g->n_layers * 8u, g->n_blocks * 4u);
	return KVW_OK;
}

/* Refuses a GRANT to its sender (ABORT addressed to its grant); the
 * endpoint and every other sequence go on. */
static void kvw_grant_refuse(kvw_ep *ep, const struct kvw_wire_grant *g, kvw_status st,
			     const char *why)
{
	struct kvw_wire_abort a = {.seq_id = g->seq_id, .token = g->token, .status = st,
				   .flags = KVW_ABORT_TO_RECEIVER};

	ep->cnt.rejected++;
	kvw_set_err(ep->ctx, st, "endpoint %u: the peer's GRANT for sequence %llu was refused with "
		    "%s: %s", ep->id, (unsigned long long)g->seq_id, kvw_strerror(st), why);
	kvw_log(ep->ctx, 3, "%s", kvw_ctx_last_error(ep->ctx));
	kvw_ep_send(ep, KVW_T_ABORT, &a, sizeof(a));
}

/* Is there room for one more GRANT waiting for kvw_send_seq? */
static bool kvw_grant_room(kvw_ep *ep, const struct kvw_wire_grant *g)
{
	const struct kvw_cfgv *cfg = &ep->ctx->cfg;
	uint64_t len = kvw_grant_body_len(g->n_layers, g->n_blocks, g->flags);
	char why[256];

	if (ep->peer_grants < cfg->max_peer_grants &&
	    ep->peer_grant_bytes + len <= cfg->max_peer_grant_bytes)
		return true;
	snprintf(why, sizeof(why), "%u GRANTs (%llu bytes) already wait for kvw_send_seq here "
		 "(limits max_peer_grants %u, max_peer_grant_bytes %llu); the decode side must grant "
		 "fewer sequences ahead of the sender, or raise the limits on this side",
		 ep->peer_grants, (unsigned long long)ep->peer_grant_bytes, cfg->max_peer_grants,
		 (unsigned long long)cfg->max_peer_grant_bytes);
	kvw_grant_refuse(ep, g, KVW_ERR_BUSY, why);
	return false;
}

/* Deadline of a grant that waits: the peer's timeout, cut to max_peer_timeout_ms. */
static uint64_t kvw_grant_deadline(kvw_ep *ep, const struct kvw_wire_grant *g)
{
	uint64_t cap = (uint64_t)ep->ctx->cfg.max_peer_timeout_ms * 1000, us = g->timeout_us;

	if (!us)
		us = 1000000ull;
	if (us > cap) {
		kvw_log(ep->ctx, 3, "endpoint %u: sequence %llu: the peer's GRANT asked for %llu us, "
			"cut to max_peer_timeout_ms (%llu us)", ep->id, (unsigned long long)g->seq_id,
			(unsigned long long)us, (unsigned long long)cap);
		us = cap;
	}
	return kvw_now_ns() + us * 1000;
}

/* GRANT before kvw_send_seq: kept (within the caps) until the send comes. */
static void kvw_grant_wait(kvw_ep *ep, const struct kvw_wire_grant *g, const void *body)
{
	kvw_req *r;
	kvw_status st;

	if (!kvw_grant_room(ep, g))
		return;
	if (!(r = kvw_req_new(ep, KVW_ROLE_SEND, g->seq_id))) {
		kvw_grant_refuse(ep, g, KVW_ERR_NOMEM, "out of memory on the sending side");
		return;
	}
	if (kvw_map_put(&ep->send_map, g->seq_id, r) != KVW_OK) {
		kvw_req_destroy(r);
		kvw_grant_refuse(ep, g, KVW_ERR_NOMEM, "out of memory on the sending side");
		return;
	}
	r->in_map = true;
	st = kvw_grant_copy(r, g, body);
	ep->peer_grants++; /* uncounted by kvw_req_destroy / kvw_send_first */
	ep->peer_grant_bytes += kvw_grant_body_len(g->n_layers, g->n_blocks, g->flags);
	if (st != KVW_OK) {
		kvw_req_destroy(r);
		kvw_grant_refuse(ep, g, KVW_ERR_NOMEM, "out of memory on the sending side");
		return;
	}
	r->deadline_ns = kvw_grant_deadline(ep, g);
	kvw_deadline_note(ep, r->deadline_ns);
}

static kvw_status kvw_on_grant(kvw_ep *ep, const void *body)
{
	struct kvw_wire_grant g;
	kvw_req *r;
	kvw_status st;

	memcpy(&g, body, sizeof(g));
	r = kvw_map_get(&ep->send_map, g.seq_id);
	if (r && r->granted) {
		kvw_core_bad_frame(ep, "second GRANT for a sequence");
		return KVW_OK;
	}
	if (!r) {
		(void)kvw_grant_ended_take(ep, g.seq_id); /* granted again */
		kvw_grant_wait(ep, &g, body);
		return KVW_OK;
	}
	if (kvw_grant_copy(r, &g, body) != KVW_OK) {
		kvw_core_req_fail(r, KVW_ERR_NOMEM, "out of memory taking the peer's grant");
		return KVW_OK;
	}
	if ((st = kvw_send_match(ep, r)) != KVW_OK)
		kvw_req_fail(r, st, true);
	return KVW_OK;
}

static kvw_status kvw_pending_add(kvw_req *r, uint32_t first, uint32_t end)
{
	if (r->n_pending == r->cap_pending) {
		uint32_t nc = r->cap_pending ? r->cap_pending * 2 : 8;
		struct kvw_range *p = realloc(r->pending, nc * sizeof(*p));
		if (!p)
			return KVW_ERR_NOMEM;
		r->pending = p;
		r->cap_pending = nc;
	}
	if (r->n_pending == r->cur.pend) { /* cursor starts the new range */
		r->cur = (struct kvw_cur){.layer = first, .pend = r->cur.pend};
	}
	r->pending[r->n_pending++] = (struct kvw_range){first, end};
	return KVW_OK;
}

static kvw_status kvw_send_first(kvw_ep *ep, kvw_req *r, const kvw_layout *l, const uint32_t *blocks,
				 size_t n)
{
	kvw_status st;

	kvw_grant_unwait(ep, r);
	r->user_owned = true;
	if ((st = kvw_req_setup(r, l, blocks, n)) != KVW_OK)
		return st;
	if (!r->deadline_ns || !r->granted) {
		r->deadline_ns = kvw_deadline(ep, 0);
		kvw_deadline_note(ep, r->deadline_ns);
	}
	r->t_posted = kvw_now_ns();
	if (r->granted && (st = kvw_send_match(ep, r)) != KVW_OK) {
		kvw_req_fail(r, st, true);
		return st;
	}
	return KVW_OK;
}

kvw_status kvw_send_seq(kvw_ep *ep, uint64_t seq_id, const kvw_layout *l, const uint32_t *blocks,
			size_t n, uint32_t first, uint32_t end, unsigned flags, kvw_req **out)
{
	return kvw_send_seq_range(ep, seq_id, l, blocks, n, NULL, first, end, flags, out);
}

kvw_status kvw_send_seq_range(kvw_ep *ep, uint64_t seq_id, const kvw_layout *l,
			      const uint32_t *blocks, size_t n, const kvw_seq_range *rg,
			      uint32_t first, uint32_t end, unsigned flags, kvw_req **out)
{
	struct kvw_geom_grant held = {0};
	kvw_req *r;
	kvw_status st;

	if (!ep || !out)
		return kvw_set_err(ep ? ep->ctx : NULL, KVW_ERR_INVALID, "kvw_send_seq: endpoint and "
				   "output pointer must not be NULL");
	kvw_err_clear(ep->ctx);
	if (flags & ~KVW_SEND_LAST)
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "kvw_send_seq: unknown flags 0x%x (only "
				   "KVW_SEND_LAST)", flags & ~KVW_SEND_LAST);
	if ((st = kvw_seq_args(ep, l, blocks, n)) != KVW_OK)
		return st;
	if (first >= end || end > l->n_layers)
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "layers [%u, %u) not inside the layout's %u",
				   first, end, l->n_layers);
	if (rg && !l->geo)
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "kvw_send_seq_range: token ranges need a "
				   "layout from kvw_layout_create_geom");
	if (rg && (st = kvw_range_get(ep, l, n, rg, &held)) != KVW_OK)
		return st;
	r = kvw_map_get(&ep->send_map, seq_id);
	if (!r && (st = kvw_grant_ended_take(ep, seq_id)) != KVW_OK)
		return kvw_set_err(ep->ctx, st, "sequence %llu: the receiver's grant ended before this "
				   "send (%s): nothing was sent; the decode side must grant it again",
				   (unsigned long long)seq_id, kvw_strerror(st));
	if (!r) {
		if (!(r = kvw_req_new(ep, KVW_ROLE_SEND, seq_id)))
			return kvw_set_err(ep->ctx, KVW_ERR_NOMEM, "kvw_send_seq: out of memory");
		if (kvw_map_put(&ep->send_map, seq_id, r) != KVW_OK) {
			kvw_req_destroy(r);
			return kvw_set_err(ep->ctx, KVW_ERR_NOMEM, "kvw_send_seq: out of memory");
		}
		r->in_map = true;
	}
	if (!r->user_owned) {
		r->st0 = held.t0, r->st1 = held.t1;
		if ((st = kvw_send_first(ep, r, l, blocks, n)) != KVW_OK)
			return st;
	} else if (r->layout != l || r->n_blocks != n) {
		return kvw_set_err(ep->ctx, KVW_ERR_INVALID, "sequence %llu: later send_seq calls must "
				   "use the first call's layout and block count", (unsigned long long)seq_id);
	}
	if (r->status != KVW_INPROGRESS || r->fencing) /* the caller holds r from its first call */
		return kvw_set_err(ep->ctx, r->fencing ? r->fence_st : r->status, "sequence %llu already "
				   "ended: %s", (unsigned long long)seq_id,
				   kvw_strerror(r->fencing ? r->fence_st : r->status));
	if ((st = kvw_pending_add(r, first, end)) != KVW_OK)
		return kvw_set_err(ep->ctx, st, "kvw_send_seq: out of memory");
	if (flags & KVW_SEND_LAST)
		r->last_seen = true;
	if (r->frag_end || r->geo)
		kvw_active_add(ep, r);
	*out = r;
	return KVW_OK;
}

#define KVW_PUMP_BATCH 32

/* The next plan fragment inside the pending layer ranges; false if none. */
static bool kvw_geo_plan_next(const kvw_req *r, struct kvw_geo_cur *c)
{
	while (c->pend < r->n_pending) {
		struct kvw_plan save;
		if (!c->in) {
			kvw_plan_seek_layer(&c->plan, r->pending[c->pend].first);
			c->in = true;
		}
		save = c->plan;
		if (kvw_plan_next(&c->plan, &c->f) && c->f.layer < r->pending[c->pend].end) {
			c->have = true;
			c->off = 0;
			return true;
		}
		c->plan = save; /* that fragment belongs to a later range */
		c->pend++;
		c->in = false;
	}
	return false;
}

/* kvw_frag_next for a geometry send: the plan's fragments cut at max_frag,
 * named by the receiver's region, list index and offset. A gathered plan
 * fragment is cut at piece boundaries; if it holds more pieces than
 * max_frag it goes out in several, each gathered too. */
static bool kvw_geo_frag_next(kvw_ep *ep, kvw_req *r, struct kvw_geo_cur *c, kvw_frag *f)
{
	const kvw_geom *dg = &r->pgeom;
	bool shared = kvw_geom_kv_shared(dg);
	uint64_t chunk, at, src, pc, bs = dg->block_stride, max = ep->ctx->cfg.max_frag;

	if (!c->have && !kvw_geo_plan_next(r, c))
		return false;
	pc = c->f.piece;
	chunk = c->f.bytes - c->off;
	src = c->f.src_off + c->off;
	if (pc) {
		src = c->f.src_off + c->off / pc * c->f.src_stride;
		if (max >= pc)
			max -= max % pc;
		else
			pc = 0; /* pieces over max_frag: cut each one alone */
		if (!pc) {
			src += c->off % c->f.piece;
			if (chunk > c->f.piece - c->off % c->f.piece)
				chunk = c->f.piece - c->off % c->f.piece;
		}
	}
	if (chunk > max)
		chunk = max;
	if (pc == chunk)
		pc = 0;
	at = c->f.dst_off + (shared ? c->f.kv * dg->kv_stride : 0) + c->off;
	*f = (kvw_frag){
		.token = r->pg.token, .layer = shared ? c->f.layer : c->f.layer * dg->n_kv + c->f.kv,
		.blk_idx = c->f.dst_idx + (uint32_t)(at / bs), .bytes = (uint32_t)chunk,
		.blk_off = at % bs, .piece = (uint32_t)pc, .src_stride = pc ? c->f.src_stride : 0,
		.src = r->layout->mem->addr + src, .src_mem = r->layout->mem, .src_off = src,
		.dst_addr = r->pg.mem_addr + c->f.dst_at + c->off, .rkey = r->pg.mem_key,
		.rail = ep->rail_rr++ % ep->rails, .req = r,
	};
	c->off += chunk;
	if (c->off == c->f.bytes)
		c->have = false;
	return true;
}

static void kvw_pump_count(kvw_ep *ep, kvw_req *r, const kvw_frag *f, size_t took)
{
	if (!r->t_first_byte)
		r->t_first_byte = kvw_now_ns();
	for (size_t i = 0; i < took; i++) {
		r->bytes_posted += f[i].bytes;
		ep->cnt.bytes_tx += f[i].bytes;
		ep->cnt.rail[f[i].rail].bytes_tx += f[i].bytes;
		ep->cnt.rail[f[i].rail].frags_tx++;
	}
	ep->cnt.frags_tx += took;
}

/* kvw_pump_req for a geometry send. */
static bool kvw_pump_geo(kvw_ep *ep, kvw_req *r)
{
	kvw_frag f[KVW_PUMP_BATCH];
	struct kvw_geo_cur cur[KVW_PUMP_BATCH], c = r->gc;
	size_t n = 0, took;

	while (n < KVW_PUMP_BATCH && kvw_geo_frag_next(ep, r, &c, &f[n]))
		cur[n++] = c;
	if (n == 0) {
		r->gc = c;
		kvw_active_del(ep, r);
		return true;
	}
	took = ep->drv->ops->post_frags(ep, f, n);
	ep->pump_blocked = took < n;
	if (took == 0)
		return false;
	kvw_pump_count(ep, r, f, took);
	r->gc = cur[took - 1];
	return took == n;
}

/* Posts one request's fragments; false when the driver is full. */
static bool kvw_pump_req(kvw_ep *ep, kvw_req *r)
{
	kvw_frag f[KVW_PUMP_BATCH];
	struct kvw_cur cur[KVW_PUMP_BATCH], c = r->cur;
	size_t n = 0, took;

	if (r->geo)
		return kvw_pump_geo(ep, r);
	while (n < KVW_PUMP_BATCH && kvw_cur_next(r, ep->ctx->cfg.max_frag, &c, &f[n])) {
		f[n].rail = ep->rail_rr++ % ep->rails;
		cur[n++] = c;
	}
	if (n == 0) {
		r->cur = c;
		kvw_active_del(ep, r);
		return true;
	}
	took = ep->drv->ops->post_frags(ep, f, n);
	ep->pump_blocked = took < n;
	if (took == 0)
		return false;
	kvw_pump_count(ep, r, f, took);
	r->cur = cur[took - 1];
	return took == n;
}

void kvw_seq_pump(kvw_ep *ep)
{
	kvw_req *next;

	for (kvw_req *r = ep->active_head; r; r = next) {
		next = r->next_active;
		if (!kvw_pump_req(ep, r))
			return;
		if (ep->state != KVW_EP_READY)
			return;
	}
}

static void kvw_on_layer_done(kvw_ep *ep, const struct kvw_wire_layer_done *ld)
{
	kvw_req *r = kvw_map_get(&ep->send_map, ld->seq_id);
	kvw_event ev;

	if (r && r->fencing)
		return; /* crossed our ABORT: the request ends with its fence */
	if (!r || !r->user_owned || r->status != KVW_INPROGRESS || ld->layer >= r->n_layers ||
	    r->layer_bytes[ld->layer]) {
		kvw_core_bad_frame(ep, "LAYER_DONE for no live layer");
		return;
	}
	r->layer_bytes[ld->layer] = ld->bytes;
	r->bytes_done += ld->bytes;
	r->layers_done++;
	r->t_last_byte = kvw_now_ns();
	ev = (kvw_event){.type = KVW_EV_LAYER, .status = KVW_OK, .req = r, .ep = ep,
			 .user_data = r->user_data, .seq_id = r->seq_id, .layer = ld->layer,
			 .bytes = ld->bytes};
	kvw_ev_push(ep->ctx, &ev);
}

static void kvw_on_seq_done(kvw_ep *ep, const struct kvw_wire_seq_done *sd)
{
	kvw_req *r = kvw_map_get(&ep->send_map, sd->seq_id);

	if (r && r->fencing)
		return; /* crossed our ABORT: the request ends with its fence */
	if (!r || !r->user_owned || r->status != KVW_INPROGRESS) {
		kvw_core_bad_frame(ep, "SEQ_DONE for no live sequence");
		return;
	}
	if (sd->status == 0) { /* layers not confirmed one by one landed with the sequence */
		uint64_t lb = r->geo ? r->layer_total : (uint64_t)r->n_blocks * r->layout->block_bytes;
		for (uint32_t l = 0; l < r->n_layers; l++) {
			if (r->layer_bytes[l])
				continue;
			r->layer_bytes[l] = lb;
			r->layers_done++;
			kvw_ev_push(ep->ctx, &(kvw_event){.type = KVW_EV_LAYER, .status = KVW_OK, .req = r,
				    .ep = ep, .user_data = r->user_data, .seq_id = r->seq_id,
				    .layer = l, .bytes = lb});
		}
		r->t_last_byte = kvw_now_ns();
	}
	r->bytes_done = sd->bytes;
	kvw_req_unmap(ep, r);
	kvw_req_complete(r, sd->status == 0 ? KVW_OK : KVW_ERR_PROTO);
}

static kvw_status kvw_peer_status(int32_t s)
{
	return s == KVW_ERR_TIMEDOUT || s == KVW_ERR_REJECTED || s == KVW_ERR_BUSY ? (kvw_status)s
										    : KVW_ERR_ABORTED;
}

/* The peer ended our grant; BUSY: it holds too many grants not yet sent to. */
static void kvw_grant_ended(kvw_ep *ep, kvw_req *r, int32_t status)
{
	kvw_status st = kvw_peer_status(status);

	if (st == KVW_ERR_BUSY)
		kvw_set_err(ep->ctx, st, "sequence %llu: the sender refused the grant: too many grants "
			    "wait there for its kvw_send_seq (its max_peer_grants / max_peer_grant_bytes); "
			    "grant again once it has sent, or raise those limits on the sender",
			    (unsigned long long)r->seq_id);
	kvw_req_fail(r, st, false);
}

static void kvw_on_abort(kvw_ep *ep, const struct kvw_wire_abort *a)
{
	struct kvw_wire_abort ack = *a;
	kvw_req *r;

	if (a->flags & KVW_ABORT_TO_RECEIVER) {
		r = kvw_map_get(&ep->recv_map, a->seq_id);
		if (r && (a->token == 0 || a->token == r->token))
			kvw_grant_ended(ep, r, a->status);
		/* the ack follows every fragment already taken from the sender */
		ack.flags = 0;
		kvw_ep_send(ep, KVW_T_ABORT_ACK, &ack, sizeof(ack));
		return;
	}
	r = kvw_map_get(&ep->send_map, a->seq_id);
	if (r && r->granted && r->pg.token == a->token)
		kvw_req_fail(r, kvw_peer_status(a->status), false);
}

static void kvw_on_abort_ack(kvw_ep *ep, const struct kvw_wire_abort *a)
{
	kvw_req *r = kvw_map_get(&ep->send_map, a->seq_id);

	if (!r || r->role != KVW_ROLE_SEND || !r->granted || r->pg.token != a->token)
		return;
	r->abort_acked = true;
	if (r->fencing && r->status == KVW_INPROGRESS && !r->cancel_pending)
		kvw_fence_finish(r); /* every fragment the receiver took is behind it */
}

void kvw_core_cancel_done(kvw_ep *ep, uint64_t seq_id)
{
	kvw_req *r = kvw_map_get(&ep->send_map, seq_id);

	if (!r || r->role != KVW_ROLE_SEND || !r->cancel_pending)
		return;
	r->cancel_pending = false;
	if (r->fencing && r->status == KVW_INPROGRESS && (!r->ack_wait || r->abort_acked))
		kvw_fence_finish(r); /* the driver reads none of its pages any more */
}

kvw_status kvw_seq_on_frame(kvw_ep *ep, const struct kvw_wire_hdr *h, const void *body)
{
	switch (h->type) {
	case KVW_T_GRANT: return kvw_on_grant(ep, body);
	case KVW_T_LAYER_DONE: kvw_on_layer_done(ep, body); return KVW_OK;
	case KVW_T_SEQ_DONE: kvw_on_seq_done(ep, body); return KVW_OK;
	case KVW_T_ABORT: kvw_on_abort(ep, body); return KVW_OK;
	case KVW_T_ABORT_ACK: kvw_on_abort_ack(ep, body); return KVW_OK;
	default:
		kvw_core_bad_frame(ep, "frame type not expected on the control path");
		return KVW_OK;
	}
}

void kvw_core_req_fail(kvw_req *r, kvw_status st, const char *why)
{
	if (r->ep)
		kvw_set_err(r->ep->ctx, st, "sequence %llu: %s", (unsigned long long)r->seq_id, why);
	kvw_req_fail(r, st, true);
}

/* ------------------------------------------------------------- aborts */
/* No answer within abort_timeout_ms. Receiver: grant_done (from the
 * completion) takes the keys now; a late write fails at the sender. Sender:
 * the receiver may still read our pages, so the endpoint is cut. */
static void kvw_fence_expired(kvw_ep *ep, kvw_req *r)
{
	if (r->role == KVW_ROLE_RECV) {
		kvw_set_err(ep->ctx, r->fence_st, "sequence %llu: the driver's abort fence was not "
			    "confirmed within abort_timeout_ms (%u ms; peer unresponsive?): its keys are "
			    "revoked now, so a late write fails at the sender",
			    (unsigned long long)r->seq_id, ep->ctx->cfg.abort_timeout_ms);
		kvw_log(ep->ctx, 2, "%s", kvw_ctx_last_error(ep->ctx));
		kvw_fence_finish(r);
		return;
	}
	kvw_ep_fail(ep, KVW_ERR_PEER_DEAD, "peer did not confirm an abort within abort_timeout_ms; "
		    "endpoint closed so nothing more can move (raise abort_timeout_ms for a slow peer)");
	if (!ep->transport_closed) {
		ep->transport_closed = true;
		ep->drv->ops->ep_close(ep);
	}
}

kvw_status kvw_req_abort(kvw_req *r)
{
	kvw_ctx *ctx;

	if (!r)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_req_abort: request is NULL");
	if (r->parts)
		return kvw_group_abort(r);
	kvw_err_clear(r->ep ? r->ep->ctx : NULL);
	if (!r->ep || r->status != KVW_INPROGRESS)
		return KVW_OK; /* finished: nothing can land any more */
	ctx = r->ep->ctx;
	kvw_req_fail_fenced(r, KVW_ERR_ABORTED, true, true);
	/* synchronous for the caller (kvwire.h): the fence runs in progress,
	 * bounded by abort_timeout_ms; from inside a pass it only starts */
	while (r->status == KVW_INPROGRESS && r->ep && !ctx->in_progress)
		kvw_progress(ctx);
	return KVW_OK;
}

/* ------------------------------------------------------- timers, teardown */
static void kvw_deadlines(kvw_ep *ep, uint64_t now)
{
	struct kvw_seqmap *maps[2] = {&ep->recv_map, &ep->send_map};

	if (!ep->next_deadline_ns || now < ep->next_deadline_ns)
		return;
	ep->next_deadline_ns = 0;
	for (int m = 0; m < 2; m++) {
		for (uint32_t i = 0; i < maps[m]->cap; i++) {
			kvw_req *r = maps[m]->vals[i];
			if (!r || r->status != KVW_INPROGRESS)
				continue;
			if (r->deadline_ns > now) {
				kvw_deadline_note(ep, r->deadline_ns);
				continue;
			}
			if (r->fencing) {
				kvw_fence_expired(ep, r);
				if (ep->state != KVW_EP_READY)
					return; /* cut: every request ended */
				if (maps[m]->vals[i] != r)
					i--;
				continue;
			}
			kvw_set_err(ep->ctx, KVW_ERR_TIMEDOUT, "sequence %llu: deadline passed with %llu of "
				    "%llu bytes moved (peer alive)", (unsigned long long)r->seq_id,
				    (unsigned long long)r->bytes_done, (unsigned long long)r->bytes_total);
			kvw_req_fail(r, KVW_ERR_TIMEDOUT, true);
			if (maps[m]->vals[i] != r)
				i--; /* backward shift moved an entry into slot i */
		}
	}
}

void kvw_ep_timers(kvw_ep *ep, uint64_t now)
{
	kvw_ep_keepalive(ep, now);
	if (ep->state == KVW_EP_READY)
		kvw_deadlines(ep, now);
}

void kvw_seq_fail_all(kvw_ep *ep, kvw_status st)
{
	struct kvw_seqmap *maps[2] = {&ep->recv_map, &ep->send_map};

	for (int m = 0; m < 2; m++) {
		for (uint32_t i = 0; i < maps[m]->cap; i++) {
			kvw_req *r = maps[m]->vals[i];
			if (!r || r->status != KVW_INPROGRESS)
				continue;
			if (r->fencing)
				kvw_fence_finish(r); /* the transport goes: nothing more moves */
			else
				kvw_req_fail(r, st, false);
			if (maps[m]->vals[i] != r)
				i--;
		}
	}
}

void kvw_seq_ep_release(kvw_ep *ep)
{
	kvw_req *next;

	for (kvw_req *r = ep->reqs; r; r = next) {
		next = r->next_ep;
		r->ep = NULL; /* orphaned: kvw_req_free still works */
		r->prev_ep = r->next_ep = NULL;
	}
	ep->reqs = NULL;
	free(ep->recv_map.keys);
	free(ep->recv_map.vals);
	free(ep->send_map.keys);
	free(ep->send_map.vals);
	kvw_tokens_free(&ep->tokens);
}

/* --------------------------------------------------------------- public */
kvw_status kvw_req_status(const kvw_req *r)
{
	return r ? r->status : KVW_ERR_INVALID;
}

kvw_status kvw_req_set_timeout(kvw_req *r, uint64_t timeout_us)
{
	if (r && r->parts)
		return kvw_group_set_timeout(r, timeout_us);
	if (!r || !r->ep || r->status != KVW_INPROGRESS || r->fencing)
		return kvw_set_err(r && r->ep ? r->ep->ctx : NULL, KVW_ERR_INVALID, "kvw_req_set_timeout: "
				   "the request is NULL, orphaned, already finished or being aborted");
	kvw_err_clear(r->ep->ctx);
	r->deadline_ns = kvw_now_ns() + timeout_us * 1000;
	kvw_deadline_note(r->ep, r->deadline_ns);
	return KVW_OK;
}

void kvw_req_set_user_data(kvw_req *r, void *user_data)
{
	if (r)
		r->user_data = user_data;
}

kvw_status kvw_req_free(kvw_req *r)
{
	if (!r)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_req_free: request is NULL");
	if (r->parts)
		return kvw_group_free(r);
	kvw_err_clear(r->ep ? r->ep->ctx : NULL);
	if (r->status == KVW_INPROGRESS)
		return kvw_set_err(r->ep ? r->ep->ctx : NULL, KVW_ERR_BUSY, "request still running: "
				   "abort it or wait for its KVW_EV_SEQ event");
	kvw_req_destroy(r);
	return KVW_OK;
}

kvw_status kvw_req_query(const kvw_req *r, kvw_req_info *info)
{
	if (!r || !info)
		return kvw_set_err(r && r->ep ? r->ep->ctx : NULL, KVW_ERR_INVALID, "kvw_req_query: "
				   "request and info must not be NULL");
	if (r->parts)
		return kvw_group_query(r, info);
	kvw_err_clear(r->ep ? r->ep->ctx : NULL);
	kvw_req_info in = {
		.size = sizeof(in), .seq_id = r->seq_id, .is_send = r->role == KVW_ROLE_SEND, .status = r->status,
		.bytes = r->bytes_done, .bytes_total = r->bytes_total, .n_layers = r->n_layers,
		.layers_done = r->layers_done, .t_posted = r->t_posted, .t_matched = r->t_matched,
		.t_first_byte = r->t_first_byte, .t_last_byte = r->t_last_byte,
		.t_completed = r->t_completed,
	};
	return kvw_struct_out(r->ep ? r->ep->ctx : NULL, "kvw_req_query", info, &in, sizeof(in));
}
