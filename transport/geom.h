/* SPDX-License-Identifier: MIT */
/* The planner: which bytes go where when two sides lay a KV cache out
 * differently (kvw_geom in kvwire.h), and the receiver's check of a
 * fragment against what its geometry grants. Internal to the library. */
#ifndef KVW_GEOM_H
#define KVW_GEOM_H

#include "kvwire/kvwire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One side of a transfer: a geometry, the block table of the sequence
 * (entry j holds tokens [j * block_tokens, (j + 1) * block_tokens)) and
 * the heads of it in play ([h0, h1) inside the geometry's own range). */
struct kvw_geom_side {
	const kvw_geom *g;
	const uint32_t *blocks;
	uint32_t n;
};

/* One fragment: bytes from src_off (source arena offset) to the
 * destination block blocks[dst_idx] at dst_off past that block's start in
 * (layer, kv); dst_at is the same place as a destination arena offset. A
 * fragment may run on into the next blocks when they follow in memory.
 * A gathered fragment (piece > 0, plans with gather > 1) is contiguous at
 * the destination only: its bytes are bytes / piece source pieces of piece
 * bytes each, piece i at src_off + i * src_stride (src_stride > piece). */
struct kvw_plan_frag {
	uint32_t layer, kv, dst_idx;
	uint64_t dst_off, dst_at, src_off, bytes;
	uint64_t piece, src_stride;
};

/* In-block dimensions in address order, outermost first. */
enum { KVW_GD_KV, KVW_GD_TOK, KVW_GD_HEAD };
struct kvw_geom_dims {
	uint32_t n;
	uint8_t dim[3];
	uint64_t stride[3];
	uint32_t count[3];
};

/* The cursor: walks destination units in address order and merges what
 * is contiguous on both sides. No allocation; copyable. */
struct kvw_plan {
	struct kvw_geom_side s, d;
	uint64_t t0, t1, unit;
	uint32_t h0, h1;          /* heads both sides hold */
	bool kv_in_block;         /* destination K/V share a block */
	struct kvw_geom_dims dims;/* destination in-block order */
	uint32_t l, kvo, bi, b_end, at[3];
	bool done, have;
	bool tok_runs;             /* tokens packed on both sides: steps take runs */
	uint32_t gather;           /* source pieces a fragment may gather (<= 1: none);
				    * set after init, before the first kvw_plan_next */
	struct kvw_plan_frag pend;
};

/* A geometry's sanity: shape, nesting of strides, every unit inside an
 * arena of arena_len bytes (0: unchecked). why gets a sentence on failure. */
kvw_status kvw_geom_check(const kvw_geom *g, uint64_t arena_len, char *why, size_t len);
/* Arena offset of (layer, kv, token t via blocks, head h). */
uint64_t kvw_geom_unit_at(const kvw_geom *g, const uint32_t *blocks, uint32_t layer,
			  uint32_t kv, uint64_t t, uint32_t h);

/* Starts a plan of tokens [t0, t1) from s to d. KVW_ERR_INVALID (with a
 * sentence in why) when the shapes differ (layers, K/V, heads, head bytes),
 * a geometry is unsound or a block table is too short for t1. */
kvw_status kvw_plan_init(const struct kvw_geom_side *s, const struct kvw_geom_side *d,
			 uint64_t t0, uint64_t t1, char *why, size_t len, struct kvw_plan *p);
/* The same, moving only heads [h0, h1) (cut to what both sides hold). */
kvw_status kvw_plan_init_heads(const struct kvw_geom_side *s, const struct kvw_geom_side *d,
			       uint64_t t0, uint64_t t1, uint32_t h0, uint32_t h1, char *why,
			       size_t len, struct kvw_plan *p);
/* Puts the cursor at the first unit of layer (the plan goes on from there;
 * done at once past the last layer). */
void kvw_plan_seek_layer(struct kvw_plan *p, uint32_t layer);
/* K and V share a block (no kv_offsets, kv_stride < block_stride). */
bool kvw_geom_kv_shared(const kvw_geom *g);
/* Arena offset of (layer, kv)'s region: kv_offsets or the stride formula. */
uint64_t kvw_geom_base(const kvw_geom *g, uint32_t layer, uint32_t kv);
/* The next fragment in destination order; false when the plan is done. */
bool kvw_plan_next(struct kvw_plan *p, struct kvw_plan_frag *f);
/* Fragments the whole plan makes (walks a copy of the cursor). */
uint64_t kvw_plan_count(const struct kvw_plan *p);

/* What a receive grant allows: its geometry and blocks, tokens [t0, t1),
 * heads [h0, h1) inside the geometry's own. */
struct kvw_geom_grant {
	struct kvw_geom_side side;
	uint64_t t0, t1;
	uint32_t h0, h1;
};
/* The grant's geometry must have passed kvw_geom_check (the receiver's
 * own, checked when it granted). Whether every byte of a fragment (layer, kv, dst_idx, dst_off, bytes)
 * is a granted unit byte: granted blocks (runs across blocks only where
 * they follow in memory), tokens and heads; no padding, no overflow. */
bool kvw_geom_frag_ok(const struct kvw_geom_grant *gr, uint32_t layer, uint32_t kv,
		      uint32_t dst_idx, uint64_t dst_off, uint64_t bytes);

#endif
