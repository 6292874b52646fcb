/* SPDX-License-Identifier: MIT */
/* Model shape presets (from the models' published configs) and kv sizing. */
#include "bench.h"

#include <stdarg.h>
#include <string.h>

static const kvb_model models[] = {
	{"llama3-8b", 32, 8, 128, 2},
	{"llama3-70b", 80, 8, 128, 2},
	{"qwen3-8b", 36, 8, 128, 2},
	{"qwen3-235b", 94, 4, 128, 2},
	/* MLA: one 576-wide latent (512 + 64 rope) per token and layer, no K/V split */
	{"deepseek-v3", 61, 1, 576, 1},
};

const kvb_model *kvb_models(size_t *n)
{
	*n = sizeof(models) / sizeof(models[0]);
	return models;
}

const kvb_model *kvb_model_find(const char *name)
{
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		if (!strcmp(models[i].name, name))
			return &models[i];
	return NULL;
}

static int kv_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static const char *const layout_names[] = {
	"nhd", "hnd", "kv-interleaved", "hnd-kv-interleaved", "kv-separate", "mla",
};

int kvb_layout_name_ok(const char *name)
{
	for (size_t i = 0; i < sizeof(layout_names) / sizeof(layout_names[0]); i++)
		if (!strcmp(layout_names[i], name))
			return 0;
	return -1;
}

void kvb_tp_heads(unsigned heads, unsigned tp, unsigned rank, unsigned *h0, unsigned *h1)
{
	unsigned per = tp > 1 ? heads / tp : heads;
	*h0 = tp > 1 ? rank * per : 0;
	*h1 = *h0 + per;
}

/* The geometry options against the shape: defaults, MLA, TP splits. */
static int kv_geom_resolve(kvb_opts *o, char *err, size_t errlen)
{
	const char *def = o->kv_factor == 1 ? "mla" : "nhd";
	if (!o->src_layout[0]) strcpy(o->src_layout, def);
	if (!o->dst_layout[0]) strcpy(o->dst_layout, def);
	if (!o->src_block_tokens) o->src_block_tokens = o->block_tokens;
	if (!o->dst_block_tokens) o->dst_block_tokens = o->block_tokens;
	if ((o->kv_factor == 1) != !strcmp(o->src_layout, "mla") ||
	    (o->kv_factor == 1) != !strcmp(o->dst_layout, "mla"))
		return kv_fail(err, errlen, "layout mla goes with an MLA model (deepseek-v3), and an MLA "
			       "model only with layout mla");
	if (o->kv_factor == 1 && (o->src_tp > 1 || o->dst_tp > 1))
		return kv_fail(err, errlen, "an MLA latent has one head: no --src-tp/--dst-tp");
	if ((o->src_tp > 1 && o->kv_heads % o->src_tp) || (o->dst_tp > 1 && o->kv_heads % o->dst_tp))
		return kv_fail(err, errlen, "--src-tp/--dst-tp must divide the %u KV heads", o->kv_heads);
	unsigned s0, s1, d0, d1;
	kvb_tp_heads(o->kv_heads, o->src_tp, o->src_rank, &s0, &s1);
	kvb_tp_heads(o->kv_heads, o->dst_tp, o->dst_rank, &d0, &d1);
	if (s1 <= d0 || d1 <= s0)
		return kv_fail(err, errlen, "the sender's heads [%u, %u) and the receiver's [%u, %u) do "
			       "not meet: pick ranks that share heads", s0, s1, d0, d1);
	return 0;
}

int kvb_kv_resolve(kvb_opts *o, char *err, size_t errlen)
{
	const kvb_model *m;

	if (!o->model[0] && !o->layers && !o->kv_heads && !o->head_dim)
		strcpy(o->model, "llama3-8b");
	m = o->model[0] ? kvb_model_find(o->model) : NULL;
	if (m) {
		/* explicit shape options override the preset */
		if (!o->layers) o->layers = m->layers;
		if (!o->kv_heads) o->kv_heads = m->kv_heads;
		if (!o->head_dim) o->head_dim = m->head_dim;
		if (!o->kv_factor) o->kv_factor = m->kv_factor;
	}
	if (!o->dtype_bytes) o->dtype_bytes = 2;
	if (!o->kv_factor) o->kv_factor = 2;
	if (!o->model[0])
		strcpy(o->model, "custom");
	if (!o->layers || !o->kv_heads || !o->head_dim)
		return kv_fail(err, errlen, "kv shape incomplete: give --model or all of --layers, "
			       "--kv-heads and --head-dim");
	if (o->layers > 1024)
		return kv_fail(err, errlen, "--layers %u: at most 1024 layers", o->layers);
	if (kvb_kv_blocks_per_seq(o) > 262144)
		return kv_fail(err, errlen, "--tokens/--block-tokens give over 262144 blocks a sequence");
	if (kvb_kv_block_bytes(o) > (1ull << 30))
		return kv_fail(err, errlen, "a block of %llu bytes is too large: lower --block-tokens",
			       (unsigned long long)kvb_kv_block_bytes(o));
	if (o->geom && kv_geom_resolve(o, err, errlen))
		return -1;
	return 0;
}

uint64_t kvb_kv_bytes_per_token(const kvb_opts *o)
{
	return (uint64_t)o->layers * o->kv_heads * o->head_dim * o->kv_factor * o->dtype_bytes;
}

uint64_t kvb_kv_block_bytes(const kvb_opts *o)
{
	return (uint64_t)o->block_tokens * o->kv_heads * o->head_dim * o->kv_factor * o->dtype_bytes;
}

uint32_t kvb_kv_blocks_per_seq(const kvb_opts *o)
{
	return (uint32_t)(((uint64_t)o->tokens + o->block_tokens - 1) / o->block_tokens);
}
