/* SPDX-License-Identifier: MIT */
/* Geometries (kvwire.h), the planner and the receiver's fragment check
 * (geom.h). */
#include "geom.h"
#include "kvw_int.h"

#include <stdio.h>
#include <string.h>

#define KVW_GEOM_MIN_SIZE (offsetof(kvw_geom, kv_offsets) + sizeof(const uint64_t *))

static uint64_t kvw_geom_unit(const kvw_geom *g)
{
	return (uint64_t)g->head_dim * g->elem_bytes;
}

static bool kvw_geom_kv_in_block(const kvw_geom *g)
{
	return g->n_kv == 2 && !g->kv_offsets && g->kv_stride < g->block_stride;
}

static uint64_t kvw_geom_kv_base(const kvw_geom *g, uint32_t layer, uint32_t kv)
{
	if (g->kv_offsets)
		return g->kv_offsets[(uint64_t)layer * g->n_kv + kv];
	return g->base_offset + layer * g->layer_stride + kv * g->kv_stride;
}

bool kvw_geom_kv_shared(const kvw_geom *g)
{
	return kvw_geom_kv_in_block(g);
}

uint64_t kvw_geom_base(const kvw_geom *g, uint32_t layer, uint32_t kv)
{
	return kvw_geom_kv_base(g, layer, kv);
}

/* The in-block dimensions with more than one index, outermost first. */
static void kvw_geom_dims_of(const kvw_geom *g, struct kvw_geom_dims *d)
{
	*d = (struct kvw_geom_dims){0};
	if (kvw_geom_kv_in_block(g))
		*d = (struct kvw_geom_dims){1, {KVW_GD_KV}, {g->kv_stride}, {2}};
	if (g->block_tokens > 1) {
		d->dim[d->n] = KVW_GD_TOK, d->stride[d->n] = g->token_stride;
		d->count[d->n++] = g->block_tokens;
	}
	if (g->h1 - g->h0 > 1) {
		d->dim[d->n] = KVW_GD_HEAD, d->stride[d->n] = g->head_stride;
		d->count[d->n++] = g->h1 - g->h0;
	}
	for (uint32_t i = 1; i < d->n; i++) /* insertion sort, stride descending */
		for (uint32_t j = i; j > 0 && d->stride[j] > d->stride[j - 1]; j--) {
			struct kvw_geom_dims t = *d;
			d->dim[j] = t.dim[j - 1], d->stride[j] = t.stride[j - 1], d->count[j] = t.count[j - 1];
			d->dim[j - 1] = t.dim[j], d->stride[j - 1] = t.stride[j], d->count[j - 1] = t.count[j];
		}
}

/* Bytes one block spans (first to last unit byte); false if the strides
 * do not nest (a dimension overlapping the one inside it). */
static bool kvw_geom_block_extent(const kvw_geom *g, const struct kvw_geom_dims *d, uint64_t *ext)
{
	uint64_t e = kvw_geom_unit(g), m;
	bool ovf = false;

	for (uint32_t k = d->n; k-- > 0;) {
		if (d->stride[k] < e)
			return false;
		ovf |= __builtin_mul_overflow((uint64_t)(d->count[k] - 1), d->stride[k], &m);
		ovf |= __builtin_add_overflow(m, e, &e);
	}
	*ext = e;
	return !ovf;
}

static kvw_status kvw_geom_why(char *why, size_t len, const char *s)
{
	snprintf(why, len, "%s", s);
	return KVW_ERR_INVALID;
}

static kvw_status kvw_geom_shape_ok(const kvw_geom *g, char *why, size_t len)
{
	if (g->size < KVW_GEOM_MIN_SIZE)
		return kvw_geom_why(why, len, "geometry: set size to sizeof(kvw_geom)");
	if (!g->n_layers || g->n_layers > KVW_MAX_LAYERS || (g->n_kv != 1 && g->n_kv != 2) ||
	    !g->n_blocks || !g->block_tokens || !g->elem_bytes || !g->head_dim)
		return kvw_geom_why(why, len, "geometry: need 1..1024 layers, n_kv 1 (latent) or 2 "
				    "(K and V), and non-zero blocks, block_tokens, elem_bytes, head_dim");
	if (!g->num_heads || g->h0 >= g->h1 || g->h1 > g->num_heads)
		return kvw_geom_why(why, len, "geometry: the held heads [h0, h1) must be a non-empty "
				    "range inside [0, num_heads)");
	return KVW_OK;
}

/* Bytes of one (layer, kv) region: all its blocks. */
static kvw_status kvw_geom_region(const kvw_geom *g, uint64_t *region, char *why, size_t len)
{
	struct kvw_geom_dims d;
	uint64_t ext, m;
	bool ovf = false;

	kvw_geom_dims_of(g, &d);
	if (!kvw_geom_block_extent(g, &d, &ext))
		return kvw_geom_why(why, len, "geometry: token, head and K/V strides overlap inside "
				    "a block (each must be at least the bytes of what it contains)");
	if (g->block_stride < ext)
		return kvw_geom_why(why, len, "geometry: block_stride is smaller than a block");
	ovf |= __builtin_mul_overflow((uint64_t)(g->n_blocks - 1), g->block_stride, &m);
	ovf |= __builtin_add_overflow(m, ext, region);
	if (ovf)
		return kvw_geom_why(why, len, "geometry: the blocks overflow 64-bit offsets");
	return KVW_OK;
}

kvw_status kvw_geom_check(const kvw_geom *g, uint64_t arena_len, char *why, size_t len)
{
	uint64_t region, layer, end;
	kvw_status st;
	bool ovf = false;

	if (!g)
		return kvw_geom_why(why, len, "geometry: NULL");
	if ((st = kvw_geom_shape_ok(g, why, len)) || (st = kvw_geom_region(g, &region, why, len)))
		return st;
	layer = region;
	if (g->n_kv == 2 && !g->kv_offsets && !kvw_geom_kv_in_block(g)) {
		if (g->kv_stride < region)
			return kvw_geom_why(why, len, "geometry: kv_stride puts V inside K's blocks");
		ovf |= __builtin_add_overflow(g->kv_stride, region, &layer);
	}
	if (!g->kv_offsets && g->n_layers > 1 && g->layer_stride < layer)
		return kvw_geom_why(why, len, "geometry: layer_stride is smaller than a layer");
	for (uint32_t l = 0; l < g->n_layers; l++) /* K/V sharing a block: the region holds both */
		for (uint32_t kv = 0; kv < (kvw_geom_kv_in_block(g) ? 1u : g->n_kv); kv++) {
			uint64_t m = 0, base = g->kv_offsets ? g->kv_offsets[l * g->n_kv + kv] : 0;
			if (!g->kv_offsets) {
				ovf |= __builtin_mul_overflow((uint64_t)l, g->layer_stride, &m);
				ovf |= __builtin_add_overflow(m, g->base_offset, &base);
				ovf |= __builtin_add_overflow(base, kv * g->kv_stride, &base);
			}
			ovf |= __builtin_add_overflow(base, region, &end);
			if (ovf || (arena_len && end > arena_len))
				return kvw_geom_why(why, len, "geometry: a layer ends beyond the arena; "
						    "check base_offset, layer_stride and kv_offsets");
		}
	return KVW_OK;
}

uint64_t kvw_geom_unit_at(const kvw_geom *g, const uint32_t *blocks, uint32_t layer, uint32_t kv,
			  uint64_t t, uint32_t h)
{
	return kvw_geom_kv_base(g, layer, kv) + blocks[t / g->block_tokens] * g->block_stride +
	       (t % g->block_tokens) * g->token_stride + (uint64_t)(h - g->h0) * g->head_stride;
}

/* ------------------------------------------------------- public builders */
static bool kvw_mul3(uint64_t a, uint64_t b, uint64_t c, uint64_t *out)
{
	bool ovf = __builtin_mul_overflow(a, b, out);
	return !(ovf | __builtin_mul_overflow(*out, c, out));
}

/* Strides of a kind; false on overflow. */
static bool kvw_geom_strides(kvw_geom_kind kind, kvw_geom *c)
{
	uint64_t u = kvw_geom_unit(c), H = c->h1 - c->h0, bt = c->block_tokens, blk;
	bool head_major = kind == KVW_GEOM_HND || kind == KVW_GEOM_HND_KV_BLOCK;
	bool ok = kvw_mul3(bt, H, u, &blk);

	c->head_stride = head_major ? bt * u : u;
	c->token_stride = head_major ? u : H * u;
	c->kv_stride = 0;
	c->kv_offsets = NULL;
	if (kind == KVW_GEOM_NHD_KV_BLOCK || kind == KVW_GEOM_HND_KV_BLOCK) {
		c->kv_stride = blk;
		ok &= !__builtin_mul_overflow(blk, 2, &blk);
	}
	c->block_stride = blk;
	ok &= kvw_mul3(c->n_blocks, blk, 1, &c->layer_stride);
	if (kind == KVW_GEOM_NHD || kind == KVW_GEOM_HND) {
		c->kv_stride = c->layer_stride;
		ok &= !__builtin_mul_overflow(c->layer_stride, 2, &c->layer_stride);
	}
	return ok;
}

kvw_status kvw_geom_init(kvw_geom_kind kind, kvw_geom *g)
{
	char why[200];
	kvw_geom c;

	kvw_err_clear(NULL);
	if (!g || g->size < KVW_GEOM_MIN_SIZE)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_geom_init: pass a kvw_geom whose size "
				   "is sizeof(kvw_geom)");
	if (kind < KVW_GEOM_NHD || kind > KVW_GEOM_MLA)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_geom_init: kind %d is none of "
				   "KVW_GEOM_NHD .. KVW_GEOM_MLA", (int)kind);
	memcpy(&c, g, sizeof(c));
	c.size = sizeof(c);
	if (c.h1 == 0)
		c.h1 = c.num_heads;
	if (kind == KVW_GEOM_MLA)
		c.num_heads = 1, c.h0 = 0, c.h1 = 1;
	c.n_kv = kind == KVW_GEOM_MLA ? 1 : 2;
	if (kvw_geom_shape_ok(&c, why, sizeof(why)) != KVW_OK)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_geom_init: %s", why);
	if (!kvw_geom_strides(kind, &c) || kvw_geom_check(&c, 0, why, sizeof(why)) != KVW_OK)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_geom_init: the shape overflows 64-bit "
				   "offsets; use fewer blocks or smaller heads");
	memcpy(g, &c, sizeof(c));
	return KVW_OK;
}

kvw_status kvw_geom_from_layout(const kvw_layout_desc *d, kvw_geom *g)
{
	char why[200];
	kvw_geom c;

	kvw_err_clear(NULL);
	if (!d || !g || g->size < KVW_GEOM_MIN_SIZE)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_geom_from_layout: pass a layout "
				   "description and a kvw_geom whose size is sizeof(kvw_geom)");
	if (!d->block_bytes || d->block_bytes > (1ull << 32) || d->block_stride < d->block_bytes)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_geom_from_layout: need block_bytes in "
				   "1..4GiB and block_stride >= block_bytes");
	c = (kvw_geom){.size = sizeof(c), .n_layers = d->n_layers, .n_kv = 1,
		.n_blocks = d->n_blocks, .block_tokens = 1, .num_heads = 1, .h0 = 0, .h1 = 1,
		.elem_bytes = d->block_bytes > UINT32_MAX ? 2 : 1,
		.token_stride = d->block_bytes, .head_stride = d->block_bytes,
		.block_stride = d->block_stride, .base_offset = d->base_offset,
		.layer_stride = d->layer_stride, .kv_offsets = d->layer_offsets};
	c.head_dim = (uint32_t)(d->block_bytes / c.elem_bytes);
	if (kvw_geom_check(&c, 0, why, sizeof(why)) != KVW_OK)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_geom_from_layout: %s", why);
	memcpy(g, &c, sizeof(c));
	return KVW_OK;
}

/* ---------------------------------------------------------------- planner */
static kvw_status kvw_plan_side_ok(const struct kvw_geom_side *s, uint64_t t0, uint64_t t1,
				   const char *name, char *why, size_t len)
{
	uint64_t bt;

	if (!s->g || !s->blocks)
		return kvw_geom_why(why, len, "plan: each side needs a geometry and a block table");
	if (kvw_geom_check(s->g, 0, why, len) != KVW_OK)
		return KVW_ERR_INVALID;
	bt = s->g->block_tokens;
	if (t1 > (uint64_t)s->n * bt) {
		snprintf(why, len, "plan: the %s block table holds %llu tokens, the range ends at %llu",
			 name, (unsigned long long)((uint64_t)s->n * bt), (unsigned long long)t1);
		return KVW_ERR_INVALID;
	}
	for (uint64_t j = t0 / bt; t1 > t0 && j <= (t1 - 1) / bt; j++)
		if (s->blocks[j] >= s->g->n_blocks) {
			snprintf(why, len, "plan: %s block table entry %llu is block %u, outside the "
				 "geometry's %u blocks", name, (unsigned long long)j, s->blocks[j],
				 s->g->n_blocks);
			return KVW_ERR_INVALID;
		}
	return KVW_OK;
}

static kvw_status kvw_plan_shapes_ok(const kvw_geom *a, const kvw_geom *b, char *why, size_t len)
{
	if (a->n_layers != b->n_layers || a->n_kv != b->n_kv || a->num_heads != b->num_heads ||
	    a->head_dim != b->head_dim || a->elem_bytes != b->elem_bytes)
		return kvw_geom_why(why, len, "plan: the two geometries differ in layers, K/V, "
				    "num_heads, head_dim or elem_bytes (only the layout may differ)");
	return KVW_OK;
}

/* Index bounds [lo, hi) of destination dimension k in block bi. */
static void kvw_plan_bounds(const struct kvw_plan *p, uint32_t k, uint32_t *lo, uint32_t *hi)
{
	const kvw_geom *g = p->d.g;
	uint64_t first = (uint64_t)p->bi * g->block_tokens;

	switch (p->dims.dim[k]) {
	case KVW_GD_KV:
		*lo = 0, *hi = 2;
		break;
	case KVW_GD_TOK:
		*lo = p->t0 > first ? (uint32_t)(p->t0 - first) : 0;
		*hi = p->t1 - first < g->block_tokens ? (uint32_t)(p->t1 - first) : g->block_tokens;
		break;
	default:
		*lo = p->h0 - g->h0, *hi = p->h1 - g->h0;
	}
}

static void kvw_plan_block_start(struct kvw_plan *p)
{
	uint32_t hi;

	for (uint32_t k = 0; k < p->dims.n; k++)
		kvw_plan_bounds(p, k, &p->at[k], &hi);
}

/* Moves the cursor to the next destination unit. */
static void kvw_plan_advance(struct kvw_plan *p)
{
	uint32_t lo, hi;

	for (uint32_t k = p->dims.n; k-- > 0;) {
		kvw_plan_bounds(p, k, &lo, &hi);
		if (++p->at[k] < hi)
			return;
		p->at[k] = lo;
	}
	if (++p->bi < p->b_end) {
		kvw_plan_block_start(p);
		return;
	}
	p->bi = (uint32_t)(p->t0 / p->d.g->block_tokens);
	kvw_plan_block_start(p);
	if (!p->kv_in_block && ++p->kvo < p->d.g->n_kv)
		return;
	p->kvo = 0;
	if (++p->l == p->d.g->n_layers)
		p->done = true;
}

/* Heads packed next to each other on both sides: the unit becomes the row
 * of common heads of a token (8 times fewer steps for NHD with 8 heads). */
static void kvw_plan_rows(struct kvw_plan *p)
{
	struct kvw_geom_dims *d = &p->dims;
	uint32_t n = p->h1 - p->h0;

	if (n < 2 || p->s.g->head_stride != p->unit || !d->n || d->dim[d->n - 1] != KVW_GD_HEAD ||
	    d->stride[d->n - 1] != p->unit)
		return;
	d->n--;
	p->unit *= n;
}

/* Tokens (or rows of them) packed next to each other on both sides: a step
 * takes the tokens up to the end of the destination's range in the block
 * or of the source's block, whichever comes first. */
static void kvw_plan_tok_runs(struct kvw_plan *p)
{
	const struct kvw_geom_dims *d = &p->dims;

	p->tok_runs = d->n && d->dim[d->n - 1] == KVW_GD_TOK && d->stride[d->n - 1] == p->unit &&
		      (p->s.g->token_stride == p->unit || p->s.g->block_tokens == 1);
}

kvw_status kvw_plan_init(const struct kvw_geom_side *s, const struct kvw_geom_side *d,
			 uint64_t t0, uint64_t t1, char *why, size_t len, struct kvw_plan *out)
{
	return kvw_plan_init_heads(s, d, t0, t1, 0, UINT32_MAX, why, len, out);
}

void kvw_plan_seek_layer(struct kvw_plan *p, uint32_t layer)
{
	p->have = false;
	p->kvo = 0;
	p->l = layer;
	p->done = layer >= p->d.g->n_layers || p->t0 == p->t1 || p->h0 >= p->h1;
	if (!p->done) {
		p->bi = (uint32_t)(p->t0 / p->d.g->block_tokens);
		kvw_plan_block_start(p);
	}
}

kvw_status kvw_plan_init_heads(const struct kvw_geom_side *s, const struct kvw_geom_side *d,
			       uint64_t t0, uint64_t t1, uint32_t h0, uint32_t h1, char *why,
			       size_t len, struct kvw_plan *out)
{
	struct kvw_plan p = {0};
	kvw_status st;

	if (!s || !d || !out)
		return kvw_geom_why(why, len, "plan: NULL argument");
	if (t0 > t1)
		return kvw_geom_why(why, len, "plan: the token range ends before it starts");
	if ((st = kvw_plan_side_ok(s, t0, t1, "source", why, len)) ||
	    (st = kvw_plan_side_ok(d, t0, t1, "destination", why, len)) ||
	    (st = kvw_plan_shapes_ok(s->g, d->g, why, len)))
		return st;
	p.s = *s, p.d = *d, p.t0 = t0, p.t1 = t1, p.unit = kvw_geom_unit(d->g);
	p.h0 = s->g->h0 > d->g->h0 ? s->g->h0 : d->g->h0;
	p.h1 = s->g->h1 < d->g->h1 ? s->g->h1 : d->g->h1;
	p.h0 = h0 > p.h0 ? h0 : p.h0;
	p.h1 = h1 < p.h1 ? h1 : p.h1;
	p.kv_in_block = kvw_geom_kv_in_block(d->g);
	kvw_geom_dims_of(d->g, &p.dims);
	kvw_plan_rows(&p);
	kvw_plan_tok_runs(&p);
	p.done = t0 == t1 || p.h0 >= p.h1;
	if (!p.done) {
		p.bi = (uint32_t)(t0 / d->g->block_tokens);
		p.b_end = (uint32_t)((t1 - 1) / d->g->block_tokens + 1);
		kvw_plan_block_start(&p);
	}
	*out = p;
	return KVW_OK;
}

/* The unit at the cursor as a one-unit fragment. */
static void kvw_plan_unit(const struct kvw_plan *p, struct kvw_plan_frag *f)
{
	const kvw_geom *g = p->d.g;
	uint32_t kv = p->kvo, i = 0, hr = p->h0 - g->h0; /* the row's first head when rows */

	for (uint32_t k = 0; k < p->dims.n; k++) {
		if (p->dims.dim[k] == KVW_GD_KV)
			kv = p->at[k];
		else if (p->dims.dim[k] == KVW_GD_TOK)
			i = p->at[k];
		else
			hr = p->at[k];
	}
	f->layer = p->l, f->kv = kv, f->dst_idx = p->bi, f->bytes = p->unit;
	f->piece = f->src_stride = 0;
	f->dst_off = i * g->token_stride + hr * g->head_stride;
	f->dst_at = kvw_geom_kv_base(g, p->l, kv) + p->d.blocks[p->bi] * g->block_stride + f->dst_off;
	f->src_off = kvw_geom_unit_at(p->s.g, p->s.blocks, p->l, kv,
				      (uint64_t)p->bi * g->block_tokens + i, g->h0 + hr);
}

/* Units the step at the cursor takes (1 unless tokens run on both sides). */
static uint32_t kvw_plan_step(const struct kvw_plan *p)
{
	uint32_t k = p->dims.n - 1, lo, hi, left;
	uint64_t t, sbt = p->s.g->block_tokens;

	if (!p->tok_runs)
		return 1;
	kvw_plan_bounds(p, k, &lo, &hi);
	left = hi - p->at[k];
	t = (uint64_t)p->bi * p->d.g->block_tokens + p->at[k];
	if (sbt - t % sbt < left)
		left = (uint32_t)(sbt - t % sbt);
	return left;
}

/* Can unit u join the pending fragment? Both must be contiguous at the
 * destination; at the source u either follows (plain fragments) or is the
 * next piece of a constant stride (gathered fragments, p->gather > 1). */
static bool kvw_plan_join(struct kvw_plan *p, const struct kvw_plan_frag *u)
{
	struct kvw_plan_frag *f = &p->pend;
	uint64_t n;

	if (!p->have || u->layer != f->layer || (!p->kv_in_block && u->kv != f->kv) ||
	    u->dst_at != f->dst_at + f->bytes)
		return false;
	if (!f->piece && u->src_off == f->src_off + f->bytes) {
		f->bytes += u->bytes;
		return true;
	}
	if (p->gather < 2 || u->src_off <= f->src_off)
		return false;
	if (!f->piece) { /* the second piece sets the stride */
		if (u->bytes != f->bytes)
			return false;
		f->piece = f->bytes, f->src_stride = u->src_off - f->src_off;
		f->bytes += u->bytes;
		return true;
	}
	n = f->bytes / f->piece;
	if (u->bytes != f->piece || n >= p->gather || u->src_off != f->src_off + n * f->src_stride)
		return false;
	f->bytes += u->bytes;
	return true;
}

bool kvw_plan_next(struct kvw_plan *p, struct kvw_plan_frag *f)
{
	struct kvw_plan_frag u;

	while (!p->done) {
		uint32_t k = kvw_plan_step(p);
		kvw_plan_unit(p, &u);
		u.bytes *= k;
		p->at[p->dims.n ? p->dims.n - 1 : 0] += k - 1;
		kvw_plan_advance(p);
		if (kvw_plan_join(p, &u))
			continue;
		if (p->have) {
			*f = p->pend;
			p->pend = u;
			return true;
		}
		p->pend = u;
		p->have = true;
	}
	if (!p->have)
		return false;
	*f = p->pend;
	p->have = false;
	return true;
}

uint64_t kvw_plan_count(const struct kvw_plan *p)
{
	struct kvw_plan c = *p;
	struct kvw_plan_frag f;
	uint64_t n = 0;

	while (kvw_plan_next(&c, &f))
		n++;
	return n;
}

/* ------------------------------------------------------- receiver's check */
/* Granted index range [lo, hi) of dimension k of gr's geometry in block slot. */
static void kvw_grant_range(const struct kvw_geom_grant *gr, const struct kvw_geom_dims *d,
			    uint32_t k, uint64_t slot, uint32_t *lo, uint32_t *hi)
{
	const kvw_geom *g = gr->side.g;
	uint64_t first = slot * g->block_tokens;

	if (d->dim[k] == KVW_GD_KV) {
		*lo = 0, *hi = 2;
	} else if (d->dim[k] == KVW_GD_HEAD) {
		*lo = gr->h0 - g->h0, *hi = gr->h1 - g->h0;
	} else {
		*lo = gr->t0 > first ? (uint32_t)(gr->t0 - first) : 0;
		*hi = gr->t1 - first < g->block_tokens ? (uint32_t)(gr->t1 - first) : g->block_tokens;
	}
}

/* Granted bytes that follow the unit byte at c[] (indices), rem (byte in
 * the unit): the rest of the unit, then of every packed dimension from the
 * innermost out, as long as the dimensions inside it are granted whole. */
static uint64_t kvw_grant_run(const struct kvw_geom_grant *gr, const struct kvw_geom_dims *d,
			      uint64_t slot, const uint32_t *c, uint64_t rem)
{
	uint64_t span = kvw_geom_unit(gr->side.g), piece = span - rem;
	uint32_t lo, hi;

	for (uint32_t k = d->n; k-- > 0 && d->stride[k] == span;) {
		kvw_grant_range(gr, d, k, slot, &lo, &hi);
		if (hi > c[k] + 1)
			piece += (uint64_t)(hi - c[k] - 1) * span;
		if (lo != 0 || hi != d->count[k])
			break;
		span *= d->count[k];
	}
	return piece;
}

/* Checks the unit byte at in-block offset `in` of block slot; returns the
 * granted bytes that follow contiguously from it (0: not granted). */
static uint64_t kvw_grant_piece(const struct kvw_geom_grant *gr, const struct kvw_geom_dims *d,
				uint64_t slot, uint64_t in, uint32_t kv)
{
	const kvw_geom *g = gr->side.g;
	uint64_t t = slot * g->block_tokens;
	uint32_t c[3] = {0}, h = g->h0;

	for (uint32_t k = 0; k < d->n; k++) {
		if (in / d->stride[k] >= d->count[k])
			return 0;
		c[k] = (uint32_t)(in / d->stride[k]);
		in %= d->stride[k];
		if (d->dim[k] == KVW_GD_KV)
			kv += c[k];
		else if (d->dim[k] == KVW_GD_TOK)
			t += c[k];
		else
			h += c[k];
	}
	if (in >= kvw_geom_unit(g) || kv >= g->n_kv || t < gr->t0 || t >= gr->t1 || h < gr->h0 ||
	    h >= gr->h1)
		return 0;
	return kvw_grant_run(gr, d, slot, c, in);
}

bool kvw_geom_frag_ok(const struct kvw_geom_grant *gr, uint32_t layer, uint32_t kv,
		      uint32_t dst_idx, uint64_t dst_off, uint64_t bytes)
{
	const kvw_geom *g;
	struct kvw_geom_dims d;
	uint64_t pos = dst_off, end, slot, seen;

	if (!gr || !(g = gr->side.g) || !gr->side.blocks || layer >= g->n_layers ||
	    kv >= g->n_kv || dst_idx >= gr->side.n || !bytes || gr->h0 < g->h0 || gr->h1 > g->h1 ||
	    gr->h0 >= gr->h1 || __builtin_add_overflow(dst_off, bytes, &end))
		return false;
	kvw_geom_dims_of(g, &d);
	if (kvw_geom_kv_in_block(g)) { /* K and V share the block: decode kv from the offset */
		if (__builtin_add_overflow(pos, kv * g->kv_stride, &pos) ||
		    __builtin_add_overflow(end, kv * g->kv_stride, &end))
			return false;
		kv = 0;
	}
	seen = dst_idx;
	while (pos < end) {
		uint64_t piece;
		if (pos / g->block_stride >= gr->side.n - dst_idx) /* no wrap: dst_idx < n */
			return false;
		slot = dst_idx + pos / g->block_stride;
		for (; seen < slot; seen++) /* a run crosses only into the block that follows */
			if (gr->side.blocks[seen + 1] != gr->side.blocks[seen] + 1)
				return false;
		if (gr->side.blocks[slot] >= g->n_blocks ||
		    !(piece = kvw_grant_piece(gr, &d, slot, pos % g->block_stride, kv)))
			return false;
		pos = piece >= end - pos ? end : pos + piece;
	}
	return true;
}
