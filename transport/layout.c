/* SPDX-License-Identifier: MIT */
/* Layouts: where (layer, block) pages live in a registered arena. */
#include "kvw_int.h"

#include <stdlib.h>
#include <string.h>

static uint64_t kvw_desc_layer_off(const kvw_layout_desc *d, uint32_t l, bool *ovf)
{
	uint64_t off;

	if (d->layer_offsets)
		return d->layer_offsets[l];
	*ovf |= __builtin_mul_overflow((uint64_t)l, d->layer_stride, &off);
	*ovf |= __builtin_add_overflow(off, d->base_offset, &off);
	return off;
}

kvw_status kvw_layout_create(kvw_mem *mem, const kvw_layout_desc *d, kvw_layout **out)
{
	kvw_layout *l;
	uint64_t span;
	bool ovf = false;

	if (!mem || !d || !out)
		return kvw_set_err(mem ? mem->ctx : NULL, KVW_ERR_INVALID, "kvw_layout_create: memory, "
				   "description and output pointer must not be NULL");
	kvw_err_clear(mem->ctx);
	if (!d->n_layers || d->n_layers > KVW_MAX_LAYERS || !d->n_blocks || !d->block_bytes ||
	    d->block_stride < d->block_bytes || d->block_bytes > (1ull << 32))
		return kvw_set_err(mem->ctx, KVW_ERR_INVALID,
				   "layout: need 1..%u layers, >0 blocks, block_bytes in 1..4GiB and "
				   "block_stride >= block_bytes", KVW_MAX_LAYERS);
	/* the last page of any layer ends at off + (n_blocks-1)*stride + bytes */
	ovf |= __builtin_mul_overflow((uint64_t)(d->n_blocks - 1), d->block_stride, &span);
	ovf |= __builtin_add_overflow(span, d->block_bytes, &span);
	l = calloc(1, sizeof(*l));
	if (!l || !(l->layer_off = calloc(d->n_layers, sizeof(uint64_t)))) {
		free(l);
		return kvw_set_err(mem->ctx, KVW_ERR_NOMEM, "kvw_layout_create: out of memory");
	}
	for (uint32_t i = 0; i < d->n_layers; i++) {
		uint64_t off = kvw_desc_layer_off(d, i, &ovf), end;
		ovf |= __builtin_add_overflow(off, span, &end);
		if (ovf || end > mem->len) {
			free(l->layer_off);
			free(l);
			return kvw_set_err(mem->ctx, KVW_ERR_REJECTED,
					   "layout: layer %u ends beyond the registered memory (%zu bytes)",
					   i, mem->len);
		}
		l->layer_off[i] = off;
	}
	l->mem = mem;
	l->n_layers = d->n_layers;
	l->n_blocks = d->n_blocks;
	l->block_bytes = d->block_bytes;
	l->block_stride = d->block_stride;
	mem->users++;
	*out = l;
	return KVW_OK;
}

/* Region bases: (layer, kv), or one per layer when K and V share a block. */
static kvw_status kvw_layout_regions(kvw_layout *l)
{
	const kvw_geom *g = &l->g;
	bool shared = kvw_geom_kv_shared(g);
	uint32_t per = shared ? 1 : g->n_kv;

	l->n_regions = g->n_layers * per;
	if (!(l->layer_off = calloc(l->n_regions, sizeof(uint64_t))))
		return KVW_ERR_NOMEM;
	for (uint32_t r = 0; r < l->n_regions; r++)
		l->layer_off[r] = kvw_geom_base(g, r / per, r % per);
	return KVW_OK;
}

kvw_status kvw_layout_create_geom(kvw_mem *mem, const kvw_geom *g, kvw_layout **out)
{
	char why[200];
	kvw_layout *l;
	size_t nk;

	if (!mem || !g || !out)
		return kvw_set_err(mem ? mem->ctx : NULL, KVW_ERR_INVALID, "kvw_layout_create_geom: "
				   "memory, geometry and output pointer must not be NULL");
	kvw_err_clear(mem->ctx);
	if (kvw_geom_check(g, 0, why, sizeof(why)) != KVW_OK)
		return kvw_set_err(mem->ctx, KVW_ERR_INVALID, "kvw_layout_create_geom: %s", why);
	if (kvw_geom_check(g, mem->len, why, sizeof(why)) != KVW_OK)
		return kvw_set_err(mem->ctx, KVW_ERR_REJECTED, "kvw_layout_create_geom: %s "
				   "(registered memory: %zu bytes)", why, mem->len);
	if (g->block_stride > (1ull << 32))
		return kvw_set_err(mem->ctx, KVW_ERR_INVALID, "kvw_layout_create_geom: block_stride "
				   "above 4 GiB; use smaller blocks");
	nk = (size_t)g->n_layers * g->n_kv;
	if (!(l = calloc(1, sizeof(*l))))
		return kvw_set_err(mem->ctx, KVW_ERR_NOMEM, "kvw_layout_create_geom: out of memory");
	memcpy(&l->g, g, sizeof(*g));
	l->g.size = sizeof(l->g);
	if (g->kv_offsets && (l->kv_offs = malloc(nk * sizeof(uint64_t))))
		memcpy(l->kv_offs, g->kv_offsets, nk * sizeof(uint64_t));
	l->g.kv_offsets = l->kv_offs;
	if ((g->kv_offsets && !l->kv_offs) || kvw_layout_regions(l) != KVW_OK) {
		free(l->kv_offs);
		free(l);
		return kvw_set_err(mem->ctx, KVW_ERR_NOMEM, "kvw_layout_create_geom: out of memory");
	}
	l->geo = true;
	l->mem = mem;
	l->n_layers = g->n_layers;
	l->n_blocks = g->n_blocks;
	l->block_bytes = l->block_stride = g->block_stride;
	mem->users++;
	*out = l;
	return KVW_OK;
}

void kvw_layout_destroy(kvw_layout *l)
{
	if (!l)
		return;
	l->mem->users--;
	free(l->kv_offs);
	free(l->layer_off);
	free(l);
}

uint8_t *kvw_layout_page(const kvw_layout *l, uint32_t layer, uint32_t block)
{
	return l->mem->addr + l->layer_off[layer] + (uint64_t)block * l->block_stride;
}

size_t kvw_layout_runs(const kvw_layout *l, const uint32_t *blocks, size_t n)
{
	size_t runs = 0;

	if (!l || !blocks)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || l->block_stride != l->block_bytes || blocks[i] != blocks[i - 1] + 1)
			runs++;
	return runs;
}
