/* SPDX-License-Identifier: MIT */
/* The fragment cursor of a same-shape send: which bytes go next. A request
 * sends, for each layer range its send calls asked for (r->pending, in call
 * order), every granted block of every layer; blocks contiguous on both
 * sides merge into one run, and a run is cut at max_frag. The cursor is a
 * value: the pump keeps a copy per fragment and resumes from the copy of
 * the last fragment the driver took. Geometry sends walk a plan instead
 * (geom.h). */
#ifndef KVW_CURSOR_H
#define KVW_CURSOR_H
#include "kvw_int.h"

/* struct kvw_cur: kvw_int.h (a request holds one) */

/* r->frag_end from r->blocks and the peer's grant (r->pg): frag_end[j] is
 * the end (exclusive) of the run holding list index j on both sides. */
kvw_status kvw_cur_runs(kvw_req *r);
/* The fragment at c (token, layer, list index, offset, source and
 * destination address; rail left 0), then c moves past it; false when the
 * pending ranges are exhausted (c then rests on the end). Inline, as it was
 * inside seq.c: the pump calls it per fragment. */
/* Past the ranges whose layers are all cut. */
static inline bool kvw_cur_settle(const kvw_req *r, struct kvw_cur *c)
{
	while (c->pend < r->n_pending && c->layer >= r->pending[c->pend].end) {
		if (++c->pend < r->n_pending)
			c->layer = r->pending[c->pend].first;
		c->idx = 0;
		c->off = 0;
	}
	return c->pend < r->n_pending;
}

static inline bool kvw_cur_next(const kvw_req *r, uint64_t max_frag, struct kvw_cur *c,
				kvw_frag *f)
{
	const kvw_layout *l = r->layout;
	uint64_t bb = l->block_bytes, run, chunk;

	if (!kvw_cur_settle(r, c))
		return false;
	run = (uint64_t)(r->frag_end[c->idx] - c->idx) * bb;
	chunk = run - c->off;
	if (chunk > max_frag)
		chunk = max_frag;
	*f = (kvw_frag){
		.token = r->pg.token, .layer = c->layer, .blk_idx = c->idx + (uint32_t)(c->off / bb),
		.bytes = (uint32_t)chunk, .blk_off = c->off % bb,
		.src = kvw_layout_page(l, c->layer, r->blocks[c->idx]) + c->off, .src_mem = l->mem,
		.dst_addr = r->pg.mem_addr + r->pg.layer_off[c->layer] +
			    (uint64_t)r->pg.blocks[c->idx] * r->pg.block_stride + c->off,
		.rkey = r->pg.mem_key, .req = (kvw_req *)r,
	};
	f->src_off = (uint64_t)(f->src - l->mem->addr);
	c->off += chunk;
	if (c->off == run) {
		c->off = 0;
		c->idx = r->frag_end[c->idx];
		if (c->idx >= r->n_blocks) {
			c->idx = 0;
			c->layer++;
		}
	}
	return true;
}
#endif
