/* SPDX-License-Identifier: MIT */
/* kv with a geometry per side: arenas as kvw_geom and the logical-coordinate pattern. */
#ifndef KVB_GEO_H
#define KVB_GEO_H

#include "bench.h"

#include <kvwire/kvwire.h>

typedef struct kvb_geo {
	kvw_geom g;
	uint64_t *kv_offsets;   /* kv-separate only */
	uint64_t arena_bytes;   /* bytes of memory the geometry spans */
	uint64_t unit;          /* bytes of one head of one token */
} kvb_geo;

/* The src (client, sender) or dst (server, receiver) geometry over n_blocks
 * blocks a layer; -1 when kvw_geom_init refuses it (kvw_ctx_last_error(NULL)). */
int kvb_geo_make(const kvb_opts *o, bool src, uint32_t n_blocks, kvb_geo *out);
void kvb_geo_free(kvb_geo *g);
uint64_t kvb_geo_off(const kvw_geom *g, const uint32_t *blocks, uint32_t l, uint32_t kv, uint64_t t,
		     uint32_t h);
/* Sender: every unit of tokens [0, tokens) and the held heads of one slot. */
void kvb_geo_fill(const kvb_geo *g, uint8_t *base, const uint32_t *blocks, uint64_t tokens,
		  uint64_t seed, unsigned slot);
/* Where a layer's 8-byte request stamp goes: the last token's V (or latent), head h. */
uint8_t *kvb_geo_stamp_at(const kvb_geo *g, uint8_t *base, const uint32_t *blocks, uint64_t tokens,
			  uint32_t layer, uint32_t h);
/* Receiver: units of heads [h0, h1) that differ from the pattern (stamps
 * skipped); the first one described in first. */
uint64_t kvb_geo_check(const kvb_geo *g, const uint8_t *base, const uint32_t *blocks, uint64_t tokens,
		       uint64_t seed, unsigned slot, uint32_t h0, uint32_t h1, uint8_t *scratch,
		       char *first, size_t len);

#endif
