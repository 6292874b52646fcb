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
