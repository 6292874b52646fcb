/* SPDX-License-Identifier: MIT */
/* The fragment cursor of a same-shape send (cursor.h). */
#include "cursor.h"

#include <stdlib.h>

kvw_status kvw_cur_runs(kvw_req *r)
{
	const kvw_layout *l = r->layout;
	bool sp = l->block_stride == l->block_bytes, dp = r->pg.block_stride == r->pg.block_bytes;
	uint32_t n = r->n_blocks;

	if (n == 0 || !(r->frag_end = malloc(n * sizeof(*r->frag_end))))
		return KVW_ERR_NOMEM;
	r->frag_end[n - 1] = n;
	for (uint32_t j = n - 1; j-- > 0;) {
		bool s = sp && r->blocks[j + 1] == r->blocks[j] + 1;
		bool d = dp && r->pg.blocks[j + 1] == r->pg.blocks[j] + 1;
		r->frag_end[j] = s && d ? r->frag_end[j + 1] : j + 1;
	}
	return KVW_OK;
}

/* Past the ranges whose layers are all cut. */
static bool kvw_cur_settle(const kvw_req *r, struct kvw_cur *c)
{
	while (c->pend < r->n_pending && c->layer >= r->pending[c->pend].end) {
		if (++c->pend < r->n_pending)
			c->layer = r->pending[c->pend].first;
		c->idx = 0;
		c->off = 0;
	}
	return c->pend < r->n_pending;
}

bool kvw_cur_next(const kvw_req *r, uint64_t max_frag, struct kvw_cur *c, kvw_frag *f)
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
