/* SPDX-License-Identifier: MIT */
/* Fan-in requests (kvw_recv_seq_fanin, kvwire.h): one decode grant filled
 * by several prefill senders, each over its own endpoint. Every part is an
 * ordinary receive request (its own GRANT, token, coverage, fence); the
 * group only counts: a layer is in once every part completed it, the group
 * ends once every part ended, with the first failure's status (the other
 * parts are aborted, fenced, when one fails). The wire does not change. */
#include "kvw_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KVW_FANIN_MAX 64

static void kvw_group_event(kvw_req *g, kvw_event_type type, kvw_status st, uint32_t layer,
			    uint64_t bytes)
{
	if (g->quiet)
		return;
	kvw_ev_push(g->gctx, &(kvw_event){.type = type, .status = st, .req = g, .ep = NULL,
					   .user_data = g->user_data, .seq_id = g->seq_id,
					   .layer = layer, .bytes = bytes});
}

static uint64_t kvw_group_layer_bytes(const kvw_req *g)
{
	uint64_t b = 0;

	for (uint32_t i = 0; i < g->n_parts; i++)
		b += g->parts[i]->layer_total;
	return b;
}

void kvw_group_layer(kvw_req *part, uint32_t layer)
{
	kvw_req *g = part->group;

	if (layer >= g->n_layers || ++g->layer_parts[layer] != g->n_parts)
		return;
	g->layers_done++;
	kvw_group_event(g, KVW_EV_LAYER, KVW_OK, layer, kvw_group_layer_bytes(g));
}

void kvw_group_part_done(kvw_req *part, kvw_status st)
{
	kvw_req *g = part->group;
	uint64_t bytes = 0;

	g->parts_done++;
	if (st != KVW_OK && g->first_fail == KVW_OK) {
		g->first_fail = st;
		for (uint32_t i = 0; i < g->n_parts; i++) /* may end them at once: re-enters */
			if (g->parts[i] != part)
				kvw_req_abort_start(g->parts[i]);
	}
	if (g->parts_done != g->n_parts || g->status != KVW_INPROGRESS)
		return;
	for (uint32_t i = 0; i < g->n_parts; i++)
		bytes += g->parts[i]->bytes_done;
	g->status = g->first_fail;
	g->bytes_done = bytes;
	g->t_completed = kvw_now_ns();
	kvw_group_event(g, KVW_EV_SEQ, g->status, 0, bytes);
}

/* Pairwise disjoint [h0, h1) x [t0, t1) of the parts' grants. */
static bool kvw_group_disjoint(const kvw_req *g, uint32_t *a, uint32_t *b)
{
	for (uint32_t i = 0; i < g->n_parts; i++)
		for (uint32_t j = i + 1; j < g->n_parts; j++) {
			const struct kvw_geom_grant *x = &g->parts[i]->gg, *y = &g->parts[j]->gg;
			if (x->h0 < y->h1 && y->h0 < x->h1 && x->t0 < y->t1 && y->t0 < x->t1) {
				*a = i, *b = j;
				return false;
			}
		}
	return true;
}

static kvw_status kvw_fanin_args(kvw_ep *const *eps, size_t n_eps, const kvw_layout *l,
				 const kvw_seq_range *ranges, kvw_req **out)
{
	kvw_ctx *ctx = n_eps && eps && eps[0] ? eps[0]->ctx : NULL;

	if (!eps || !out || !l || !ranges || n_eps == 0 || n_eps > KVW_FANIN_MAX)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "kvw_recv_seq_fanin: give 1..%d endpoints, a "
				   "range for each, a layout and an output pointer", KVW_FANIN_MAX);
	kvw_err_clear(ctx);
	for (size_t i = 0; i < n_eps; i++)
		if (!eps[i] || eps[i]->ctx != ctx)
			return kvw_set_err(ctx, KVW_ERR_INVALID, "kvw_recv_seq_fanin: endpoint %zu is %s",
					   i, eps[i] ? "of another context: all must share one"
					   : "NULL");
	if (!l->geo)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "kvw_recv_seq_fanin: the senders' parts are "
				   "told apart by head or token ranges, which need a layout from "
				   "kvw_layout_create_geom");
	return KVW_OK;
}

/* Tears down a group whose setup failed: parts aborted and freed, quietly. */
static void kvw_group_unwind(kvw_req *g)
{
	g->quiet = true;
	for (uint32_t i = 0; i < g->n_parts; i++)
		kvw_req_abort(g->parts[i]);
	for (uint32_t i = 0; i < g->n_parts; i++)
		kvw_req_release(g->parts[i]);
	free(g->parts);
	free(g->layer_parts);
	free(g);
}

static kvw_req *kvw_group_new(kvw_ctx *ctx, uint64_t seq_id, const kvw_layout *l, size_t n_eps)
{
	kvw_req *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->parts = calloc(n_eps, sizeof(*g->parts));
	g->layer_parts = calloc(l->n_layers ? l->n_layers : 1, sizeof(*g->layer_parts));
	if (!g->parts || !g->layer_parts) {
		free(g->parts);
		free(g->layer_parts);
		free(g);
		return NULL;
	}
	g->role = KVW_ROLE_RECV;
	g->status = KVW_INPROGRESS;
	g->seq_id = seq_id;
	g->n_layers = l->n_layers;
	g->user_owned = true;
	g->gctx = ctx;
	g->t_posted = kvw_now_ns();
	return g;
}

kvw_status kvw_recv_seq_fanin(kvw_ep *const *eps, size_t n_eps, uint64_t seq_id,
			      const kvw_layout *l, const uint32_t *blocks, size_t n,
			      const kvw_seq_range *ranges, uint64_t timeout_us, kvw_req **out)
{
	kvw_status st = kvw_fanin_args(eps, n_eps, l, ranges, out);
	uint32_t a, b;
	kvw_req *g;

	if (st != KVW_OK)
		return st;
	if (!(g = kvw_group_new(eps[0]->ctx, seq_id, l, n_eps)))
		return kvw_set_err(eps[0]->ctx, KVW_ERR_NOMEM, "kvw_recv_seq_fanin: out of memory");
	for (size_t i = 0; i < n_eps; i++) {
		kvw_req *p;
		if ((st = kvw_recv_seq_range(eps[i], seq_id, l, blocks, n, &ranges[i], timeout_us, &p))) {
			char why[KVW_CORE_ERR_MAX];
			snprintf(why, sizeof(why), "%s", kvw_ctx_last_error(eps[0]->ctx));
			kvw_group_unwind(g);
			return kvw_set_err(eps[0]->ctx, st, "kvw_recv_seq_fanin: sender %zu: %s", i, why);
		}
		p->group = g;
		g->parts[g->n_parts++] = p;
		g->bytes_total += p->bytes_total;
	}
	if (!kvw_group_disjoint(g, &a, &b)) {
		kvw_group_unwind(g);
		return kvw_set_err(eps[0]->ctx, KVW_ERR_INVALID, "kvw_recv_seq_fanin: the ranges of "
				   "senders %u and %u overlap: each granted byte must have one writer "
				   "(give each sender its own heads or tokens)", a, b);
	}
	*out = g;
	return KVW_OK;
}

kvw_status kvw_group_abort(kvw_req *g)
{
	kvw_err_clear(g->gctx);
	for (uint32_t i = 0; i < g->n_parts; i++)
		if (kvw_req_status(g->parts[i]) == KVW_INPROGRESS)
			kvw_req_abort(g->parts[i]);
	return KVW_OK;
}

kvw_status kvw_group_set_timeout(kvw_req *g, uint64_t timeout_us)
{
	kvw_status st = KVW_OK;

	if (g->status != KVW_INPROGRESS)
		return kvw_set_err(g->gctx, KVW_ERR_INVALID, "kvw_req_set_timeout: the fan-in request "
				   "already finished");
	for (uint32_t i = 0; i < g->n_parts; i++)
		if (kvw_req_status(g->parts[i]) == KVW_INPROGRESS && g->parts[i]->ep)
			st = kvw_req_set_timeout(g->parts[i], timeout_us) ? KVW_ERR_INVALID : st;
	return st;
}

kvw_status kvw_group_query(const kvw_req *g, kvw_req_info *info)
{
	kvw_req_info in = {.size = sizeof(in), .seq_id = g->seq_id, .status = g->status,
			   .bytes_total = g->bytes_total, .n_layers = g->n_layers,
			   .layers_done = g->layers_done, .t_posted = g->t_posted,
			   .t_completed = g->t_completed};

	kvw_err_clear(g->gctx);
	for (uint32_t i = 0; i < g->n_parts; i++) {
		const kvw_req *p = g->parts[i];
		in.bytes += p->bytes_done;
		if (p->t_matched > in.t_matched)
			in.t_matched = p->t_matched;
		if (p->t_first_byte && (!in.t_first_byte || p->t_first_byte < in.t_first_byte))
			in.t_first_byte = p->t_first_byte;
		if (p->t_last_byte > in.t_last_byte)
			in.t_last_byte = p->t_last_byte;
	}
	return kvw_struct_out(g->gctx, "kvw_req_query", info, &in, sizeof(in));
}

kvw_status kvw_group_free(kvw_req *g)
{
	kvw_err_clear(g->gctx);
	if (g->status == KVW_INPROGRESS)
		return kvw_set_err(g->gctx, KVW_ERR_BUSY, "fan-in request still running: abort it or "
				   "wait for its KVW_EV_SEQ event");
	for (uint32_t i = 0; i < g->n_parts; i++)
		kvw_req_release(g->parts[i]);
	free(g->parts);
	free(g->layer_parts);
	free(g);
	return KVW_OK;
}
