/* SPDX-License-Identifier: MIT */
/* kv with a geometry per side: the arena of each side as a kvw_geom, and the
 * logical-coordinate pattern. Every unit (layer, kv, token, head) holds
 * head_dim * elem_bytes bytes that are a function of (seed, slot, layer, kv,
 * token, head) and of the byte's place in the unit (dim): the sender writes
 * them where its geometry puts them, the receiver checks them where its own
 * geometry puts them, every byte. */
#include "geo.h"

#include <stdlib.h>
#include <string.h>

static kvw_geom_kind geo_kind(const char *name)
{
	if (!strcmp(name, "hnd")) return KVW_GEOM_HND;
	if (!strcmp(name, "kv-interleaved")) return KVW_GEOM_NHD_KV_BLOCK;
	if (!strcmp(name, "hnd-kv-interleaved")) return KVW_GEOM_HND_KV_BLOCK;
	if (!strcmp(name, "mla")) return KVW_GEOM_MLA;
	return KVW_GEOM_NHD; /* nhd, kv-separate */
}

int kvb_geo_make(const kvb_opts *o, bool src, uint32_t n_blocks, kvb_geo *out)
{
	const char *name = src ? o->src_layout : o->dst_layout;
	unsigned h0, h1;
	kvb_geo c;

	memset(&c, 0, sizeof(c));
	kvb_tp_heads(o->kv_heads, src ? o->src_tp : o->dst_tp, src ? o->src_rank : o->dst_rank, &h0, &h1);
	c.g = (kvw_geom){.size = sizeof(kvw_geom), .n_layers = o->layers, .n_blocks = n_blocks,
		.block_tokens = src ? o->src_block_tokens : o->dst_block_tokens,
		.elem_bytes = o->dtype_bytes, .head_dim = o->head_dim, .num_heads = o->kv_heads,
		.h0 = h0, .h1 = h1};
	if (kvw_geom_init(geo_kind(name), &c.g))
		return -1;
	c.arena_bytes = (uint64_t)o->layers * c.g.layer_stride;
	if (!strcmp(name, "kv-separate")) {
		/* SGLang: all layers' K, then all layers' V, each [blocks][tokens][heads][dim] */
		c.kv_offsets = calloc((size_t)o->layers * 2, sizeof(uint64_t));
		if (!c.kv_offsets)
			return -1;
		for (uint32_t l = 0; l < o->layers; l++) {
			c.kv_offsets[l * 2] = l * c.g.kv_stride;
			c.kv_offsets[l * 2 + 1] = (o->layers + l) * c.g.kv_stride;
		}
		c.g.kv_offsets = c.kv_offsets;
		c.arena_bytes = (uint64_t)o->layers * 2 * c.g.kv_stride;
	}
	c.unit = (uint64_t)o->head_dim * o->dtype_bytes;
	*out = c;
	return 0;
}

void kvb_geo_free(kvb_geo *g)
{
	free(g->kv_offsets);
	g->kv_offsets = NULL;
}

uint64_t kvb_geo_off(const kvw_geom *g, const uint32_t *blocks, uint32_t l, uint32_t kv, uint64_t t,
		     uint32_t h)
{
	uint64_t base = g->kv_offsets ? g->kv_offsets[l * g->n_kv + kv] :
		g->base_offset + l * g->layer_stride + kv * g->kv_stride;
	return base + blocks[t / g->block_tokens] * g->block_stride +
	       (t % g->block_tokens) * g->token_stride + (h - g->h0) * g->head_stride;
}

static uint64_t geo_a(uint32_t l, uint32_t kv, uint32_t h)
{
	return ((uint64_t)l << 34) | ((uint64_t)kv << 32) | h;
}

void kvb_geo_fill(const kvb_geo *g, uint8_t *base, const uint32_t *blocks, uint64_t tokens,
		  uint64_t seed, unsigned slot)
{
	for (uint32_t l = 0; l < g->g.n_layers; l++)
		for (uint32_t kv = 0; kv < g->g.n_kv; kv++)
			for (uint64_t t = 0; t < tokens; t++)
				for (uint32_t h = g->g.h0; h < g->g.h1; h++)
					kvb_pattern_fill(base + kvb_geo_off(&g->g, blocks, l, kv, t, h), g->unit,
							 seed, geo_a(l, kv, h), (uint64_t)slot * tokens + t);
}

uint8_t *kvb_geo_stamp_at(const kvb_geo *g, uint8_t *base, const uint32_t *blocks, uint64_t tokens,
			  uint32_t layer, uint32_t h)
{
	return base + kvb_geo_off(&g->g, blocks, layer, g->g.n_kv - 1, tokens - 1, h);
}

uint64_t kvb_geo_check(const kvb_geo *g, const uint8_t *base, const uint32_t *blocks, uint64_t tokens,
		       uint64_t seed, unsigned slot, uint32_t h0, uint32_t h1, uint8_t *scratch,
		       char *first, size_t len)
{
	uint64_t bad = 0;
	size_t skip = kvb_has_stamp(g->unit) ? 8 : 0;

	for (uint32_t l = 0; l < g->g.n_layers; l++)
		for (uint32_t kv = 0; kv < g->g.n_kv; kv++)
			for (uint64_t t = 0; t < tokens; t++)
				for (uint32_t h = h0; h < h1; h++) {
					const uint8_t *u = base + kvb_geo_off(&g->g, blocks, l, kv, t, h);
					/* the last token's V of the first head carries the stamp */
					size_t from = kv + 1 == g->g.n_kv && t + 1 == tokens && h == h0 ? skip : 0;
					kvb_pattern_fill(scratch, g->unit, seed, geo_a(l, kv, h),
							 (uint64_t)slot * tokens + t);
					if (!memcmp(u + from, scratch + from, g->unit - from))
						continue;
					if (!bad++)
						snprintf(first, len, "first at layer %u kv %u token %llu head %u", l,
							 kv, (unsigned long long)t, h);
				}
	return bad;
}
