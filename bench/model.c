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
