/* SPDX-License-Identifier: MIT */
/* Percentiles on known data, data patterns, model sizes. */
#include <criterion/criterion.h>
#include <string.h>

#include "bench.h"

Test(stats, percentiles_of_1_to_100)
{
	kvb_samples s = {0};
	kvb_stats st;
	for (int i = 100; i >= 1; i--) /* unsorted on purpose */
		kvb_samples_add(&s, i);
	kvb_stats_compute(&s, &st);
	cr_assert_eq(st.n, 100);
	cr_assert_float_eq(st.min, 1, 1e-12);
	cr_assert_float_eq(st.max, 100, 1e-12);
	cr_assert_float_eq(st.avg, 50.5, 1e-12);
	cr_assert_float_eq(st.p50, 50, 1e-12);
	cr_assert_float_eq(st.p99, 99, 1e-12);
	cr_assert_float_eq(st.p999, 100, 1e-12);
	kvb_samples_free(&s);
}

Test(stats, percentiles_of_1_to_2000)
{
	kvb_samples s = {0};
	kvb_stats st;
	for (int i = 1; i <= 2000; i++)
		kvb_samples_add(&s, (i * 7919) % 2000 + 1); /* a permutation of 1..2000 */
	kvb_stats_compute(&s, &st);
	cr_assert_float_eq(st.p50, 1000, 1e-12);
	cr_assert_float_eq(st.p99, 1980, 1e-12);
	cr_assert_float_eq(st.p999, 1998, 1e-12);
	kvb_samples_free(&s);
}

Test(stats, empty_and_single)
{
	kvb_samples s = {0};
	kvb_stats st;
	kvb_stats_compute(&s, &st);
	cr_assert_eq(st.n, 0);
	cr_assert_float_eq(st.p99, 0, 1e-12);
	kvb_samples_add(&s, 3.5);
	kvb_stats_compute(&s, &st);
	cr_assert_float_eq(st.p50, 3.5, 1e-12);
	cr_assert_float_eq(st.p999, 3.5, 1e-12);
	cr_assert_float_eq(st.avg, 3.5, 1e-12);
	kvb_samples_free(&s);
}

Test(stats, tail_outlier_shows_in_p999_only)
{
	kvb_samples s = {0};
	kvb_stats st;
	for (int i = 0; i < 999; i++)
		kvb_samples_add(&s, 10);
	kvb_samples_add(&s, 5000);
	kvb_stats_compute(&s, &st);
	cr_assert_float_eq(st.p99, 10, 1e-12);
	cr_assert_float_eq(st.p999, 10, 1e-12, "nearest rank: 999 of 1000 are <= 10");
	cr_assert_float_eq(st.max, 5000, 1e-12);
	kvb_samples_free(&s);
}

Test(pattern, deterministic_and_seeded)
{
	uint8_t a[1000], b[1000], c[1000];
	kvb_pattern_fill(a, sizeof(a), 1, 2, 3);
	kvb_pattern_fill(b, sizeof(b), 1, 2, 3);
	kvb_pattern_fill(c, sizeof(c), 1, 2, 4);
	cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
	cr_assert_neq(memcmp(a, c, sizeof(a)), 0);
	uint8_t scratch[1000];
	cr_assert_eq(kvb_page_hash(a, sizeof(a)), kvb_pattern_hash(sizeof(a), 1, 2, 3, scratch));
}

Test(pattern, hash_skips_stamp_but_sees_payload)
{
	uint8_t a[64], scratch[64];
	kvb_pattern_fill(a, sizeof(a), 9, 0, 0);
	uint64_t h = kvb_pattern_hash(sizeof(a), 9, 0, 0, scratch);
	uint64_t st = kvb_stamp(9, 5, 0);
	memcpy(a, &st, 8);
	cr_assert_eq(kvb_page_hash(a, sizeof(a)), h, "the stamp does not change the payload hash");
	a[40] ^= 1;
	cr_assert_neq(kvb_page_hash(a, sizeof(a)), h, "one flipped bit is caught");
	cr_assert_neq(kvb_stamp(9, 5, 0), kvb_stamp(9, 6, 0));
	cr_assert(!kvb_has_stamp(8));
	cr_assert(kvb_has_stamp(16));
}

Test(model, published_shapes)
{
	struct { const char *m; uint64_t per_token; } want[] = {
		{"llama3-8b", 131072}, {"llama3-70b", 327680}, {"qwen3-8b", 147456},
		{"qwen3-235b", 192512}, {"deepseek-v3", 70272},
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		kvb_opts o;
		char err[128];
		kvb_opts_init(&o);
		strcpy(o.model, want[i].m);
		cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), 0, "%s", err);
		cr_assert_eq(kvb_kv_bytes_per_token(&o), want[i].per_token, "%s", want[i].m);
	}
	kvb_opts o;
	char err[128];
	kvb_opts_init(&o);
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), 0);
	cr_assert_str_eq(o.model, "llama3-8b", "the default model");
	cr_assert_eq(kvb_kv_bytes_per_token(&o) * o.tokens, 512ull << 20, "4096 tokens = 512 MiB");
	cr_assert_eq(kvb_kv_block_bytes(&o), 65536);
}
