/* SPDX-License-Identifier: MIT */
/* Test parameters as JSON for the control link. */
#include "bench.h"

#include <string.h>

json_t *kvb_params_json(const kvb_opts *o)
{
	json_t *j = json_object();
	json_object_set_new(j, "type", json_string("start"));
	json_object_set_new(j, "test", json_string(kvb_test_name(o->test)));
	json_object_set_new(j, "size", json_integer((json_int_t)o->size));
	json_object_set_new(j, "iters", json_integer((json_int_t)o->iters));
	json_object_set_new(j, "duration", json_real(o->duration));
	json_object_set_new(j, "rails", json_integer(o->rails));
	json_object_set_new(j, "bidir", json_boolean(o->bidir));
	json_object_set_new(j, "tx_depth", json_integer(o->tx_depth));
	json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
	json_object_set_new(j, "timeout_ms", json_integer(o->timeout_ms));
	json_object_set_new(j, "no_pin", json_boolean(o->no_pin));
	if (o->test == KVB_T_KV) {
		json_object_set_new(j, "model", json_string(o->model));
		json_object_set_new(j, "layers", json_integer(o->layers));
		json_object_set_new(j, "kv_heads", json_integer(o->kv_heads));
		json_object_set_new(j, "head_dim", json_integer(o->head_dim));
		json_object_set_new(j, "dtype_bytes", json_integer(o->dtype_bytes));
		json_object_set_new(j, "kv_factor", json_integer(o->kv_factor));
		json_object_set_new(j, "tokens", json_integer(o->tokens));
		json_object_set_new(j, "block_tokens", json_integer(o->block_tokens));
		json_object_set_new(j, "seqs", json_integer(o->seqs));
		json_object_set_new(j, "pool_factor", json_integer(o->pool_factor));
		json_object_set_new(j, "contiguous", json_boolean(o->contiguous));
		json_object_set_new(j, "rate", json_real(o->rate));
		json_object_set_new(j, "layer_interval_us", json_integer((json_int_t)o->layer_interval_us));
		if (o->geom) {
			json_object_set_new(j, "src_layout", json_string(o->src_layout));
			json_object_set_new(j, "dst_layout", json_string(o->dst_layout));
			json_object_set_new(j, "src_block_tokens", json_integer(o->src_block_tokens));
			json_object_set_new(j, "dst_block_tokens", json_integer(o->dst_block_tokens));
			json_object_set_new(j, "src_tp", json_integer(o->src_tp));
			json_object_set_new(j, "src_rank", json_integer(o->src_rank));
			json_object_set_new(j, "dst_tp", json_integer(o->dst_tp));
			json_object_set_new(j, "dst_rank", json_integer(o->dst_rank));
		}
	}
	return j;
}

static int get_u(const json_t *j, const char *k, uint64_t max, uint64_t *out)
{
	json_t *v = json_object_get(j, k);
	if (!v)
		return 0; /* keep the default */
	if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_d(const json_t *j, const char *k, double *out)
{
	json_t *v = json_object_get(j, k);
	if (!v)
		return 0;
	if (!json_is_number(v) || json_number_value(v) < 0)
		return -1;
	*out = json_number_value(v);
	return 0;
}

static int get_b(const json_t *j, const char *k, bool *out)
{
	json_t *v = json_object_get(j, k);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return -1;
	*out = json_is_true(v);
	return 0;
}

#define U32(key, field, max) do { \
		uint64_t t_ = o->field; \
		if (get_u(j, key, max, &t_)) \
			goto bad; \
		o->field = (unsigned)t_; \
	} while (0)

int kvb_params_parse(const json_t *j, kvb_opts *o, char *err, size_t errlen)
{
	const char *test = json_string_value(json_object_get(j, "test"));
	uint64_t seed = 0;

	kvb_opts_init(o);
	if (!test || (strcmp(test, "bw") && strcmp(test, "lat") && strcmp(test, "kv"))) {
		snprintf(err, errlen, "unknown test in start message");
		return -1;
	}
	o->test = !strcmp(test, "bw") ? KVB_T_BW : !strcmp(test, "lat") ? KVB_T_LAT : KVB_T_KV;
	if (get_u(j, "size", 1ull << 30, &o->size) || get_u(j, "iters", 1ull << 40, &o->iters) ||
	    get_d(j, "duration", &o->duration) || get_b(j, "bidir", &o->bidir) ||
	    get_b(j, "no_pin", &o->no_pin) || get_b(j, "contiguous", &o->contiguous) ||
	    get_d(j, "rate", &o->rate) || get_u(j, "seed", UINT64_MAX, &seed) ||
	    get_u(j, "layer_interval_us", 60000000, &o->layer_interval_us))
		goto bad;
	if (json_object_get(j, "seed"))
		o->seed = seed;
	U32("rails", rails, 16);
	U32("tx_depth", tx_depth, 4096);
	U32("timeout_ms", timeout_ms, 3600000);
	U32("layers", layers, 1024);
	U32("kv_heads", kv_heads, 1u << 16);
	U32("head_dim", head_dim, 1u << 16);
	U32("dtype_bytes", dtype_bytes, 8);
	U32("kv_factor", kv_factor, 2);
	U32("tokens", tokens, 1u << 24);
	U32("block_tokens", block_tokens, 1u << 16);
	U32("seqs", seqs, 4096);
	U32("pool_factor", pool_factor, 64);
	U32("src_block_tokens", src_block_tokens, 1u << 16);
	U32("dst_block_tokens", dst_block_tokens, 1u << 16);
	U32("src_tp", src_tp, 1024);
	U32("src_rank", src_rank, 1023);
	U32("dst_tp", dst_tp, 1024);
	U32("dst_rank", dst_rank, 1023);
	const char *sl = json_string_value(json_object_get(j, "src_layout"));
	const char *dl = json_string_value(json_object_get(j, "dst_layout"));
	if (sl || dl) {
		if (!sl || !dl || kvb_layout_name_ok(sl) || kvb_layout_name_ok(dl))
			goto bad;
		snprintf(o->src_layout, sizeof(o->src_layout), "%s", sl);
		snprintf(o->dst_layout, sizeof(o->dst_layout), "%s", dl);
		o->geom = true;
	}
	if ((o->src_tp && o->src_rank >= o->src_tp) || (o->dst_tp && o->dst_rank >= o->dst_tp))
		goto bad;
	const char *model = json_string_value(json_object_get(j, "model"));
	if (model)
		snprintf(o->model, sizeof(o->model), "%s", model);
	if (!o->size || !o->rails || !o->tx_depth || !o->seqs || !o->pool_factor || !o->block_tokens ||
	    !o->tokens)
		goto bad;
	if (o->test == KVB_T_KV && kvb_kv_resolve(o, err, errlen))
		return -1;
	return 0;
bad:
	snprintf(err, errlen, "malformed start message (a field is missing, negative or too large)");
	return -1;
}

uint64_t kvb_default_iters(const kvb_opts *o)
{
	if (o->iters)
		return o->iters;
	switch (o->test) {
	case KVB_T_LAT:
		return 1000;
	case KVB_T_KV:
		return o->rate > 0 ? 100 : 5;
	default: {
		uint64_t n = (1ull << 30) / (o->size ? o->size : 1);
		return n < 100 ? 100 : n > 5000 ? 5000 : n;
	}
	}
}
