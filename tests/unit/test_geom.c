/* SPDX-License-Identifier: MIT */
/* Geometries and the planner: every plan is applied byte by byte between
 * two arenas and checked element by element against a naive reference
 * (every granted (layer, kv, token, head, byte) written exactly once, with
 * the right value, nothing else touched); the receiver's check accepts
 * every planned fragment and refuses forged ones. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "transport/geom.h"

#define LAYERS 2u
#define HEADS 8u
#define DIM 8u   /* elements per head */
#define ELEM 2u  /* bf16 */
#define CANARY 0xC3u

TestSuite(geom, .timeout = 120);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

/* What an element byte holds, a function of where it sits in the model. */
static uint8_t val(uint32_t l, uint32_t kv, uint64_t t, uint32_t h, uint32_t b)
{
	uint64_t x = ((((uint64_t)l * 3 + kv) * 100003 + t) * 31 + h) * 131 + b;
	x ^= x >> 29, x *= 0xBF58476D1CE4E5B9ull, x ^= x >> 32;
	return (uint8_t)x;
}

/* A side as the test sees it: geometry, block table, arena, write counts. */
struct side {
	kvw_geom g;
	uint64_t offs[2 * LAYERS];
	uint32_t blocks[512];
	uint32_t n;
	uint8_t *buf, *cnt;
	size_t len;
};

enum { SEPARATE = 100 }; /* K and V in their own places, as kv_offsets (SGLang) */
struct spec { int kind; uint32_t bt, h0, h1; };

/* The documented address formula, written out independently. */
static uint64_t ref_at(const kvw_geom *g, const uint32_t *blocks, uint32_t l, uint32_t kv,
		       uint64_t t, uint32_t h)
{
	uint64_t base = g->kv_offsets ? g->kv_offsets[l * g->n_kv + kv]
				      : g->base_offset + l * g->layer_stride + kv * g->kv_stride;
	return base + blocks[t / g->block_tokens] * g->block_stride +
	       (t % g->block_tokens) * g->token_stride + (h - g->h0) * g->head_stride;
}

/* Block table: chunks of 1..4 consecutive blocks in shuffled order. */
static void table(struct side *s)
{
	uint32_t starts[512], lens[512], nc = 0, k = 0;

	for (uint32_t b = 0; b < s->g.n_blocks; nc++) {
		lens[nc] = 1 + rnd(4);
		if (b + lens[nc] > s->g.n_blocks)
			lens[nc] = s->g.n_blocks - b;
		starts[nc] = b;
		b += lens[nc];
	}
	for (uint32_t i = nc; i > 1; i--) {
		uint32_t j = rnd(i), ts = starts[i - 1], tl = lens[i - 1];
		starts[i - 1] = starts[j], lens[i - 1] = lens[j], starts[j] = ts, lens[j] = tl;
	}
	for (uint32_t c = 0; c < nc; c++)
		for (uint32_t i = 0; i < lens[c] && k < s->n; i++)
			s->blocks[k++] = starts[c] + i;
}

static void make(struct side *s, struct spec sp, uint32_t num_heads, uint32_t dim, uint64_t tokens)
{
	*s = (struct side){0};
	s->g = (kvw_geom){.size = sizeof(kvw_geom), .n_layers = LAYERS, .block_tokens = sp.bt,
		.elem_bytes = ELEM, .head_dim = dim, .num_heads = num_heads, .h0 = sp.h0, .h1 = sp.h1};
	s->n = (uint32_t)((tokens + sp.bt - 1) / sp.bt);
	s->g.n_blocks = s->n + 3;
	cr_assert_leq(s->g.n_blocks, 512);
	cr_assert_eq(kvw_geom_init(sp.kind == SEPARATE ? KVW_GEOM_NHD : (kvw_geom_kind)sp.kind, &s->g),
		     KVW_OK, "%s", kvw_ctx_last_error(NULL));
	s->len = s->g.layer_stride * LAYERS;
	if (sp.kind == SEPARATE) { /* V first, then K, a gap between every region */
		uint64_t region = s->g.kv_stride, at = 64;
		for (uint32_t i = 2 * LAYERS; i-- > 0; at += region + 64)
			s->offs[i] = at;
		s->g.kv_offsets = s->offs;
		s->len = at;
	}
	table(s);
	s->buf = malloc(s->len);
	s->cnt = calloc(s->len, 1);
	cr_assert(s->buf && s->cnt);
}

static void drop(struct side *s)
{
	free(s->buf);
	free(s->cnt);
}

static void fill_src(struct side *s, uint64_t tokens)
{
	uint32_t ub = s->g.head_dim * s->g.elem_bytes;

	memset(s->buf, 0x5A, s->len);
	for (uint32_t l = 0; l < LAYERS; l++)
		for (uint32_t kv = 0; kv < s->g.n_kv; kv++)
			for (uint64_t t = 0; t < tokens; t++)
				for (uint32_t h = s->g.h0; h < s->g.h1; h++)
					for (uint32_t b = 0; b < ub; b++)
						s->buf[ref_at(&s->g, s->blocks, l, kv, t, h) + b] =
							val(l, kv, t, h, b);
}

/* Source pieces a planned fragment may gather (kvw_plan.gather; 0: none). */
static uint32_t g_gather;

/* Copies fragment f (plain or gathered) from s to d, counting each byte. */
static void copy_frag(struct side *s, struct side *d, const struct kvw_plan_frag *f)
{
	uint64_t piece = f->piece ? f->piece : f->bytes, n = f->bytes / piece;

	cr_assert_eq(n * piece, f->bytes, "a gathered fragment of %llu bytes in %llu-byte pieces",
		     (unsigned long long)f->bytes, (unsigned long long)piece);
	cr_assert(!f->piece || (g_gather > 1 && n <= g_gather && f->src_stride > piece),
		  "a gathered fragment from a plan that gathers %u pieces: %llu of %llu at stride %llu",
		  g_gather, (unsigned long long)n, (unsigned long long)piece,
		  (unsigned long long)f->src_stride);
	for (uint64_t k = 0; k < n; k++) {
		uint64_t so = f->src_off + k * f->src_stride, dt = f->dst_at + k * piece;
		cr_assert(so + piece <= s->len && dt + piece <= d->len);
		memcpy(d->buf + dt, s->buf + so, piece);
		for (uint64_t i = 0; i < piece; i++)
			d->cnt[dt + i]++;
	}
}

/* Plans s -> d, applies it, checks each fragment's naming and the
 * receiver's acceptance; returns the fragment count. */
static uint64_t apply(struct side *s, struct side *d, uint64_t t0, uint64_t t1)
{
	struct kvw_geom_side ss = {&s->g, s->blocks, s->n}, ds = {&d->g, d->blocks, d->n};
	struct kvw_geom_grant gr = {ds, t0, t1, d->g.h0, d->g.h1};
	struct kvw_plan p;
	struct kvw_plan_frag f;
	char why[200];
	uint64_t n = 0, cnt;

	cr_assert_eq(kvw_plan_init(&ss, &ds, t0, t1, why, sizeof(why), &p), KVW_OK, "%s", why);
	p.gather = g_gather;
	cnt = kvw_plan_count(&p);
	while (kvw_plan_next(&p, &f)) {
		uint64_t at = (d->g.kv_offsets ? d->g.kv_offsets[f.layer * d->g.n_kv + f.kv]
			       : f.layer * d->g.layer_stride + f.kv * d->g.kv_stride) +
			      d->blocks[f.dst_idx] * d->g.block_stride + f.dst_off;
		cr_assert_eq(at, f.dst_at, "fragment %llu names another place than dst_at",
			     (unsigned long long)n);
		cr_assert(kvw_geom_frag_ok(&gr, f.layer, f.kv, f.dst_idx, f.dst_off, f.bytes),
			  "the receiver refuses planned fragment %llu", (unsigned long long)n);
		copy_frag(s, d, &f);
		n++;
	}
	cr_assert_eq(n, cnt, "count %llu, cursor %llu", (unsigned long long)cnt, (unsigned long long)n);
	return n;
}

/* Every destination element byte: written once with its value iff its
 * token is in [t0, t1) and some source holds its head; nothing else. */
static void verify(struct side *d, uint64_t tokens, uint64_t t0, uint64_t t1, const struct spec *src,
		   uint32_t ns)
{
	uint32_t ub = d->g.head_dim * d->g.elem_bytes;
	uint64_t want = 0, got = 0;

	for (uint32_t l = 0; l < LAYERS; l++)
		for (uint32_t kv = 0; kv < d->g.n_kv; kv++)
			for (uint64_t t = 0; t < tokens; t++)
				for (uint32_t h = d->g.h0; h < d->g.h1; h++) {
					bool in = t >= t0 && t < t1, held = false;
					uint64_t at = ref_at(&d->g, d->blocks, l, kv, t, h);
					for (uint32_t i = 0; i < ns; i++)
						held |= h >= src[i].h0 && h < src[i].h1;
					for (uint32_t b = 0; b < ub && in && held; b++) {
						cr_assert_eq(d->cnt[at + b], 1, "l%u kv%u t%llu h%u b%u written %u times",
							     l, kv, (unsigned long long)t, h, b, d->cnt[at + b]);
						cr_assert_eq(d->buf[at + b], val(l, kv, t, h, b));
					}
					want += in && held ? ub : 0;
				}
	for (size_t i = 0; i < d->len; i++) {
		got += d->cnt[i];
		if (!d->cnt[i])
			cr_assert_eq(d->buf[i], CANARY, "byte %zu outside the plan was written", i);
	}
	cr_assert_eq(got, want, "%llu bytes written, %llu granted", (unsigned long long)got,
		     (unsigned long long)want);
}

/* Sources src[] (fan-in) into destinations dst[] (fan-out), tokens
 * [t0, t1) of a sequence of `tokens`. Returns the fragments of all pairs. */
static uint64_t run_case(const struct spec *src, uint32_t ns, const struct spec *dst, uint32_t nd,
			 uint32_t heads, uint32_t dim, uint64_t tokens, uint64_t t0, uint64_t t1)
{
	struct side *s = calloc(ns, sizeof(*s)), *d = calloc(nd, sizeof(*d));
	uint64_t frags = 0;

	for (uint32_t i = 0; i < ns; i++) {
		make(&s[i], src[i], heads, dim, tokens);
		fill_src(&s[i], tokens);
	}
	for (uint32_t j = 0; j < nd; j++) {
		make(&d[j], dst[j], heads, dim, tokens);
		memset(d[j].buf, CANARY, d[j].len);
		for (uint32_t i = 0; i < ns; i++)
			frags += apply(&s[i], &d[j], t0, t1);
		verify(&d[j], tokens, t0, t1, src, ns);
	}
	for (uint32_t i = 0; i < ns; i++)
		drop(&s[i]);
	for (uint32_t j = 0; j < nd; j++)
		drop(&d[j]);
	free(s);
	free(d);
	return frags;
}

static void matrix(void)
{
	static const uint32_t bts[] = {16, 32, 64, 128};
	static const int kinds[][2] = {
		{KVW_GEOM_NHD, KVW_GEOM_NHD}, {KVW_GEOM_NHD, KVW_GEOM_HND},
		{KVW_GEOM_HND, KVW_GEOM_NHD_KV_BLOCK}, {KVW_GEOM_NHD_KV_BLOCK, SEPARATE},
		{SEPARATE, KVW_GEOM_HND_KV_BLOCK}, {KVW_GEOM_HND_KV_BLOCK, KVW_GEOM_HND},
	};
	/* whole, after a cached prefix of 48 tokens, starting and ending mid-block */
	static const uint64_t ranges[][2] = {{0, 300}, {48, 300}, {37, 211}};

	for (uint32_t a = 0; a < 4; a++)
		for (uint32_t b = 0; b < 4; b++)
			for (uint32_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
				for (uint32_t r = 0; r < 3; r++) {
					struct spec s = {kinds[k][0], bts[a], 0, HEADS};
					struct spec d = {kinds[k][1], bts[b], 0, HEADS};
					run_case(&s, 1, &d, 1, HEADS, DIM, 300, ranges[r][0], ranges[r][1]);
				}
}

Test(geom, matrix_block_tokens_layouts_ranges)
{
	matrix();
}

static void tensor_parallel(void);
Test(geom, tensor_parallel_fan_in_fan_out)
{
	tensor_parallel();
}

/* Gathered fragments (contiguous at the destination, a constant stride at
 * the source): the same matrix and TP cases, each element once, in place;
 * 3 pieces at most, then 64 (the limit cuts fragments short). */
Test(geom, gathered_matrix_and_tensor_parallel)
{
	for (uint32_t g = 3; g <= 64; g += 61) {
		g_gather = g;
		matrix();
		tensor_parallel();
	}
}

static void tensor_parallel(void)
{
	struct spec tp1[] = {{KVW_GEOM_NHD, 16, 0, 8}};
	struct spec tp2[] = {{KVW_GEOM_HND, 32, 0, 4}, {KVW_GEOM_HND, 32, 4, 8}};
	struct spec tp4[] = {{KVW_GEOM_NHD_KV_BLOCK, 64, 0, 2}, {KVW_GEOM_NHD_KV_BLOCK, 64, 2, 4},
			     {KVW_GEOM_NHD_KV_BLOCK, 64, 4, 6}, {KVW_GEOM_NHD_KV_BLOCK, 64, 6, 8}};

	run_case(tp1, 1, tp2, 2, HEADS, DIM, 300, 0, 300);   /* 1 -> 2: fan-out */
	run_case(tp2, 2, tp1, 1, HEADS, DIM, 300, 0, 300);   /* 2 -> 1: fan-in */
	run_case(tp4, 4, tp2, 2, HEADS, DIM, 300, 20, 290);  /* 4 -> 2: prefill TP4, decode TP2 */
	run_case(tp2, 2, tp4, 4, HEADS, DIM, 300, 100, 257); /* 2 -> 4 */
	/* a destination rank holding heads no source has: only the held ones land */
	struct spec part[] = {{KVW_GEOM_NHD, 16, 2, 6}};
	run_case(part, 1, tp2, 2, HEADS, DIM, 300, 0, 300);
	/* heads packed on both sides (rows of common heads move whole) */
	struct spec n2[] = {{KVW_GEOM_NHD, 32, 0, 4}, {KVW_GEOM_NHD_KV_BLOCK, 16, 4, 8}};
	struct spec n3[] = {{KVW_GEOM_NHD, 64, 0, 3}, {KVW_GEOM_NHD, 16, 3, 6}, {SEPARATE, 32, 6, 8}};
	run_case(n2, 2, n3, 3, HEADS, DIM, 300, 5, 299);
	run_case(n3, 3, n2, 2, HEADS, DIM, 300, 0, 300);
	run_case(part, 1, n3, 3, HEADS, DIM, 300, 17, 18);
}

Test(geom, mla_latent)
{
	struct spec a = {KVW_GEOM_MLA, 64, 0, 1}, b = {KVW_GEOM_MLA, 16, 0, 1};
	/* one latent per token (36 bf16 here; DeepSeek's is 576), no K/V, no heads */
	uint64_t n = run_case(&a, 1, &b, 1, 1, 36, 300, 48, 300);
	cr_assert_gt(n, 0);
	run_case(&b, 1, &a, 1, 1, 36, 300, 0, 131);
}

/* Today's plan for a simple layout (seq.c's frag_end): one fragment per run
 * contiguous on both sides, per layer. */
static uint64_t today_frags(const kvw_layout_desc *s, const uint32_t *sb, const kvw_layout_desc *d,
			    const uint32_t *db, uint32_t n)
{
	bool sp = s->block_stride == s->block_bytes, dp = d->block_stride == d->block_bytes;
	uint64_t runs = 1;

	for (uint32_t j = 0; j + 1 < n; j++)
		runs += !(sp && sb[j + 1] == sb[j] + 1 && dp && db[j + 1] == db[j] + 1);
	return runs * s->n_layers;
}

Test(geom, simple_layout_plan_equals_today)
{
	for (int round = 0; round < 50; round++) {
		kvw_layout_desc sd = {.n_layers = 3, .n_blocks = 40, .block_bytes = 4096,
				      .block_stride = round % 3 ? 4096 : 8192};
		kvw_layout_desc dd = {.n_layers = 3, .n_blocks = 40, .block_bytes = 4096,
				      .block_stride = round % 5 ? 4096 : 4096 + 64, .base_offset = 128};
		kvw_geom sg = {.size = sizeof(sg)}, dg = {.size = sizeof(dg)};
		struct side s = {.n = 30}, d = {.n = 30};
		struct kvw_plan p;
		struct kvw_plan_frag f;
		char why[200];
		uint64_t want, n = 0;
		sd.layer_stride = sd.n_blocks * sd.block_stride;
		dd.layer_stride = dd.n_blocks * dd.block_stride;
		cr_assert_eq(kvw_geom_from_layout(&sd, &sg), KVW_OK, "%s", kvw_ctx_last_error(NULL));
		cr_assert_eq(kvw_geom_from_layout(&dd, &dg), KVW_OK, "%s", kvw_ctx_last_error(NULL));
		s.g = sg, d.g = dg;
		table(&s);
		table(&d);
		struct kvw_geom_side ss = {&s.g, s.blocks, s.n}, ds = {&d.g, d.blocks, d.n};
		cr_assert_eq(kvw_plan_init(&ss, &ds, 0, s.n, why, sizeof(why), &p), KVW_OK, "%s", why);
		want = today_frags(&sd, s.blocks, &dd, d.blocks, s.n);
		/* fragment by fragment: whole runs from block starts, as seq.c cuts them */
		uint32_t idx = 0, layer = 0;
		while (kvw_plan_next(&p, &f)) {
			uint32_t end = idx + (uint32_t)(f.bytes / 4096);
			cr_assert_eq(f.layer, layer);
			cr_assert_eq(f.dst_idx, idx);
			cr_assert_eq(f.dst_off, 0);
			cr_assert_eq(f.bytes % 4096, 0);
			cr_assert_eq(f.src_off, layer * sd.layer_stride + s.blocks[idx] * sd.block_stride);
			idx = end;
			if (idx == s.n)
				idx = 0, layer++;
			n++;
		}
		cr_assert_eq(layer, 3);
		cr_assert_eq(n, want, "round %d: %llu fragments, today's plan has %llu", round,
			     (unsigned long long)n, (unsigned long long)want);
	}
}

/* Llama-3-8B: 32 layers, 8 KV heads of 128 bf16, 2048 tokens. Only the
 * plan is walked (no arenas): offsets are all the planner computes. */
static uint64_t llama_count(int sk, uint32_t sbt, bool s_scatter, int dk, uint32_t dbt, bool d_scatter)
{
	static uint32_t sb[2048], db[2048];
	const uint32_t tokens = 2048;
	kvw_geom s = {.size = sizeof(s), .n_layers = 32, .block_tokens = sbt, .elem_bytes = 2,
		      .head_dim = 128, .num_heads = 8, .n_blocks = 2 * tokens / sbt};
	kvw_geom d = s;
	struct kvw_plan p;
	char why[200];

	d.block_tokens = dbt, d.n_blocks = 2 * tokens / dbt;
	cr_assert_eq(kvw_geom_init(sk, &s), KVW_OK, "%s", kvw_ctx_last_error(NULL));
	cr_assert_eq(kvw_geom_init(dk, &d), KVW_OK, "%s", kvw_ctx_last_error(NULL));
	for (uint32_t j = 0; j < tokens / sbt; j++)
		sb[j] = s_scatter ? 2 * j : j;
	for (uint32_t j = 0; j < tokens / dbt; j++)
		db[j] = d_scatter ? 2 * j : j;
	struct kvw_geom_side ss = {&s, sb, tokens / sbt}, ds = {&d, db, tokens / dbt};
	cr_assert_eq(kvw_plan_init(&ss, &ds, 0, tokens, why, sizeof(why), &p), KVW_OK, "%s", why);
	p.gather = g_gather;
	return kvw_plan_count(&p);
}

Test(geom, llama3_8b_fragment_counts)
{
	struct { const char *what; int sk; uint32_t sbt; bool ss; int dk; uint32_t dbt; bool ds;
		 uint64_t want, want_g; } c[] = {
		/* one per (layer, K/V, run): the whole layer half when both tables are one run;
		 * gathered, source blocks evenly spaced (every other one) join into one fragment */
		{"same geometry, contiguous tables", KVW_GEOM_NHD, 16, false, KVW_GEOM_NHD, 16, false, 64, 64},
		{"same geometry, scattered blocks", KVW_GEOM_NHD, 16, true, KVW_GEOM_NHD, 16, true, 64 * 128, 64 * 128},
		{"16 -> 64 block tokens, scattered", KVW_GEOM_NHD, 16, true, KVW_GEOM_NHD, 64, true, 64 * 128, 64 * 32},
		{"16 contiguous -> 64 scattered", KVW_GEOM_NHD, 16, false, KVW_GEOM_NHD, 64, true, 64 * 32, 64 * 32},
		/* every (token, head) moves alone: 256-byte fragments; gathered,
		 * one per (block, head): 16 pieces at the source's token stride */
		{"NHD -> HND", KVW_GEOM_NHD, 16, true, KVW_GEOM_HND, 16, true, 64ull * 2048 * 8, 64 * 128 * 8},
		{"NHD 16 -> HND 64", KVW_GEOM_NHD, 16, true, KVW_GEOM_HND, 64, true, 64ull * 2048 * 8,
		 64 * 128 * 8},
		{"FlashInfer -> vLLM NHD", KVW_GEOM_NHD_KV_BLOCK, 16, false, KVW_GEOM_NHD, 16, false, 64 * 128, 64 * 2},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		uint64_t n = llama_count(c[i].sk, c[i].sbt, c[i].ss, c[i].dk, c[i].dbt, c[i].ds);
		g_gather = 64;
		uint64_t ng = llama_count(c[i].sk, c[i].sbt, c[i].ss, c[i].dk, c[i].dbt, c[i].ds);
		g_gather = 0;
		cr_log_info("  gathering up to 64 source pieces: %llu fragments", (unsigned long long)ng);
		cr_expect_eq(ng, c[i].want_g, "%s, gathered: %llu fragments, expected %llu", c[i].what,
			     (unsigned long long)ng, (unsigned long long)c[i].want_g);
		cr_log_info("Llama-3-8B, 2048 tokens, %s: %llu fragments (%.1f KiB average)", c[i].what,
			    (unsigned long long)n, 32.0 * 2 * 2048 * 8 * 256 / n / 1024);
		cr_expect_eq(n, c[i].want, "%s: %llu fragments, expected %llu", c[i].what,
			     (unsigned long long)n, (unsigned long long)c[i].want);
	}
}

/* The receiver's grant for the forged-fragment cases: NHD, 16 tokens a
 * block, heads [0, 4) of 8 held, tokens [16, 100) granted of 8 blocks. */
static kvw_geom fg;
static const uint32_t fblocks[8] = {5, 6, 7, 1, 2, 9, 10, 3};

static struct kvw_geom_grant forge_grant(uint32_t h0, uint32_t h1)
{
	fg = (kvw_geom){.size = sizeof(fg), .n_layers = 2, .block_tokens = 16, .elem_bytes = 2,
			.head_dim = 64, .num_heads = 8, .h0 = 0, .h1 = 4, .n_blocks = 12};
	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &fg), KVW_OK);
	return (struct kvw_geom_grant){{&fg, fblocks, 8}, 16, 100, h0, h1};
}

Test(geom, receiver_refuses_forged_fragments)
{
	struct kvw_geom_grant gr = forge_grant(0, 4);
	const uint64_t u = 128, tok = 4 * u, blk = 16 * tok; /* unit, token row, block */

	/* honest: a head, a token row, blocks 1..2 (5, 6, 7 follow in memory), V */
	cr_assert(kvw_geom_frag_ok(&gr, 0, 0, 1, 0, u));
	cr_assert(kvw_geom_frag_ok(&gr, 1, 1, 1, 3 * tok, tok));
	cr_assert(kvw_geom_frag_ok(&gr, 0, 0, 1, 0, 2 * blk));
	/* outside the grant: the cached prefix (tokens < 16), tokens >= 100, past the list */
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 0, 15 * tok, tok));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 1, 0, 3 * blk)); /* into block 1 (index 3) */
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 6, 3 * tok, 2 * tok)); /* token 99 ok, 100 not */
	cr_assert(kvw_geom_frag_ok(&gr, 0, 0, 6, 3 * tok, tok));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 8, 0, u));
	cr_assert_not(kvw_geom_frag_ok(&gr, 2, 0, 1, 0, u));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 2, 1, 0, u));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 1, 0, 0));
	/* offsets that overflow or run off the block list */
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 1, UINT64_MAX - 10, 100));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 1, 1ull << 62, u));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 1, 0, UINT64_MAX));
	/* a foreign head range: this rank granted heads [0, 2) only (fan-in) */
	gr = forge_grant(0, 2);
	cr_assert(kvw_geom_frag_ok(&gr, 0, 0, 2, 0, 2 * u));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 2, 0, 3 * u));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 2, 2 * u, u));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 2, 0, tok)); /* a whole row is 4 heads */
	/* a grant claiming heads this geometry does not hold */
	gr = forge_grant(2, 6);
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 2, 2 * u, u));
	cr_assert_not(kvw_geom_frag_ok(NULL, 0, 0, 2, 0, u));
}

Test(geom, receiver_refuses_padding)
{
	kvw_geom g = {.size = sizeof(g), .n_layers = 1, .block_tokens = 16, .elem_bytes = 2,
		      .head_dim = 64, .num_heads = 2, .h1 = 2, .n_blocks = 4};
	const uint32_t blocks[4] = {0, 1, 2, 3};

	cr_assert_eq(kvw_geom_init(KVW_GEOM_HND, &g), KVW_OK);
	g.token_stride = 256, g.head_stride = 16 * 256, g.block_stride = 3 * 16 * 256;
	g.kv_stride = 4 * g.block_stride;
	g.layer_stride = 2 * g.kv_stride;
	struct kvw_geom_grant gr = {{&g, blocks, 4}, 0, 64, 0, 2};
	char why[200];
	cr_assert_eq(kvw_geom_check(&g, 0, why, sizeof(why)), KVW_OK, "%s", why);
	cr_assert(kvw_geom_frag_ok(&gr, 0, 0, 0, 0, 128));      /* token 0 of head 0 */
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 0, 128, 8));  /* the gap after an element */
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 0, 2 * 16 * 256, 8)); /* the block's tail */
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 0, 0, 256));  /* runs into the gap */
}

Test(geom, bad_geometries_and_plans_refused)
{
	kvw_geom g = {.size = sizeof(g), .n_layers = 2, .block_tokens = 16, .elem_bytes = 2,
		      .head_dim = 64, .num_heads = 8, .n_blocks = 4}, keep, h;
	uint32_t blocks[4] = {0, 1, 2, 3};
	struct kvw_plan p;
	char why[200];

	keep = g;
	cr_assert_eq(kvw_geom_init(0, &g), KVW_ERR_INVALID);
	cr_assert(strlen(kvw_ctx_last_error(NULL)) > 0);
	g.h0 = 5, g.h1 = 3;
	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &g), KVW_ERR_INVALID);
	cr_assert_eq(memcmp(&g.token_stride, &keep.token_stride, 8), 0, "written on failure");
	g = keep, g.size = 0;
	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &g), KVW_ERR_INVALID);
	g = keep;
	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &g), KVW_OK);
	cr_assert_eq(g.h1, 8, "h1 0 means all heads");
	/* strides that overlap: tokens closer than a row of 8 heads */
	h = g, h.token_stride = 4 * 128;
	cr_assert_eq(kvw_geom_check(&h, 0, why, sizeof(why)), KVW_ERR_INVALID);
	h = g, h.layer_stride = h.kv_stride;  /* layer 1's K on layer 0's V */
	cr_assert_eq(kvw_geom_check(&h, 0, why, sizeof(why)), KVW_ERR_INVALID);
	cr_assert_eq(kvw_geom_check(&g, g.layer_stride * 2 - 1, why, sizeof(why)), KVW_ERR_INVALID);
	cr_assert_eq(kvw_geom_check(&g, g.layer_stride * 2, why, sizeof(why)), KVW_OK, "%s", why);
	/* K and V in one block: the last layer fits an arena that ends with it */
	h = keep;
	cr_assert_eq(kvw_geom_init(KVW_GEOM_HND_KV_BLOCK, &h), KVW_OK);
	cr_assert_eq(kvw_geom_check(&h, h.layer_stride * 2, why, sizeof(why)), KVW_OK, "%s", why);
	cr_assert_eq(kvw_geom_check(&h, h.layer_stride * 2 - 1, why, sizeof(why)), KVW_ERR_INVALID);
	/* plans: another head size, a table too short for the range, a block outside */
	h = keep, h.head_dim = 128;
	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &h), KVW_OK);
	struct kvw_geom_side a = {&g, blocks, 4}, b = {&h, blocks, 4};
	cr_assert_eq(kvw_plan_init(&a, &b, 0, 64, why, sizeof(why), &p), KVW_ERR_INVALID);
	b.g = &g;
	cr_assert_eq(kvw_plan_init(&a, &b, 0, 65, why, sizeof(why), &p), KVW_ERR_INVALID);
	cr_assert(strstr(why, "64 tokens"), "%s", why);
	cr_assert_eq(kvw_plan_init(&a, &b, 10, 5, why, sizeof(why), &p), KVW_ERR_INVALID);
	blocks[2] = 4;
	cr_assert_eq(kvw_plan_init(&a, &b, 0, 64, why, sizeof(why), &p), KVW_ERR_INVALID);
	cr_assert_eq(kvw_plan_init(&a, &b, 0, 32, why, sizeof(why), &p), KVW_OK, "%s", why);
	/* disjoint head ranges: nothing to move, not an error */
	h = keep, h.h0 = 0, h.h1 = 4;
	kvw_geom h2 = keep;
	h2.h0 = 4, h2.h1 = 8;
	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &h), KVW_OK);
	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &h2), KVW_OK);
	a.g = &h, b.g = &h2;
	cr_assert_eq(kvw_plan_init(&a, &b, 0, 32, why, sizeof(why), &p), KVW_OK, "%s", why);
	cr_assert_eq(kvw_plan_count(&p), 0);
}

/* Narrowed heads and a cursor put back at a layer (what a send uses). */
Test(geom, plan_heads_and_seek_layer)
{
	kvw_geom g = {.size = sizeof(g), .n_layers = 3, .block_tokens = 16, .elem_bytes = 2,
		      .head_dim = 64, .num_heads = 8, .n_blocks = 4}, h = g;
	uint32_t blocks[4] = {0, 1, 2, 3};
	struct kvw_plan p, q;
	struct kvw_plan_frag f;
	char why[200];
	uint64_t bytes = 0, n;

	cr_assert_eq(kvw_geom_init(KVW_GEOM_NHD, &g), KVW_OK);
	cr_assert_eq(kvw_geom_init(KVW_GEOM_HND, &h), KVW_OK);
	struct kvw_geom_side a = {&g, blocks, 4}, b = {&h, blocks, 4};
	cr_assert_eq(kvw_plan_init_heads(&a, &b, 0, 64, 2, 5, why, sizeof(why), &p), KVW_OK, "%s", why);
	q = p;
	while (kvw_plan_next(&q, &f)) {
		uint64_t hd = (f.dst_off / h.head_stride) + h.h0;
		cr_assert(hd >= 2 && hd < 5, "head %llu outside [2, 5)", (unsigned long long)hd);
		bytes += f.bytes;
	}
	cr_assert_eq(bytes, 3ull * 2 * 64 * 3 * 128);
	n = kvw_plan_count(&p);
	kvw_plan_seek_layer(&p, 2);
	cr_assert_eq(kvw_plan_count(&p), n / 3);
	cr_assert(kvw_plan_next(&p, &f));
	cr_assert_eq(f.layer, 2);
	kvw_plan_seek_layer(&p, 3);
	cr_assert_not(kvw_plan_next(&p, &f));
}

Test(geom, receiver_refuses_wrapping_offsets)
{
	/* one-byte units, one-byte blocks: an offset of 2^64 - 3 blocks must not wrap
	 * back onto a granted block */
	kvw_geom g = {.size = sizeof(g), .n_layers = 1, .block_tokens = 1, .elem_bytes = 1,
		      .head_dim = 1, .num_heads = 1, .h1 = 1, .n_blocks = 8};
	const uint32_t blocks[8] = {0, 1, 2, 3, 4, 5, 6, 7};
	char why[200];

	cr_assert_eq(kvw_geom_init(KVW_GEOM_MLA, &g), KVW_OK);
	struct kvw_geom_grant gr = {{&g, blocks, 8}, 0, 8, 0, 1};
	cr_assert(kvw_geom_frag_ok(&gr, 0, 0, 0, 0, 8));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 0, 0, 9));
	cr_assert_not(kvw_geom_frag_ok(&gr, 0, 0, 5, UINT64_MAX - 2, 1));
	/* a zero block stride (division by it) is no geometry */
	g.n_blocks = 1, g.block_stride = 0;
	cr_assert_eq(kvw_geom_check(&g, 0, why, sizeof(why)), KVW_ERR_INVALID);
}

/* The receiver's check against a naive one: a byte map of every granted
 * unit byte, and "list entry idx + q holds block blocks[idx] + q" for each
 * block a fragment reaches. Random fragments, many of them unit-aligned. */
static bool naive_ok(const struct side *d, const uint8_t *map, uint32_t l, uint32_t kv,
		     uint32_t idx, uint64_t off, uint64_t bytes)
{
	const kvw_geom *g = &d->g;
	uint64_t base;

	if (l >= g->n_layers || kv >= g->n_kv || idx >= d->n || !bytes)
		return false;
	base = g->kv_offsets ? g->kv_offsets[l * g->n_kv + kv] : l * g->layer_stride + kv * g->kv_stride;
	/* V of an interleaved block starts mid-block: count block ends from the block's start */
	uint64_t in0 = !g->kv_offsets && g->kv_stride < g->block_stride ? kv * g->kv_stride : 0;
	for (uint64_t p = off; p < off + bytes; p++) {
		uint64_t q = (p + in0) / g->block_stride;
		uint64_t at = base + (uint64_t)d->blocks[idx] * g->block_stride + p;
		if (idx + q >= d->n || d->blocks[idx + q] != d->blocks[idx] + q || at >= d->len ||
		    !map[at])
			return false;
	}
	return true;
}

Test(geom, receiver_check_against_naive)
{
	static const int kinds[] = {KVW_GEOM_NHD, KVW_GEOM_HND, KVW_GEOM_NHD_KV_BLOCK,
				    KVW_GEOM_HND_KV_BLOCK, SEPARATE, KVW_GEOM_MLA};
	uint64_t agree_ok = 0, agree_no = 0;

	for (uint32_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		for (uint32_t round = 0; round < 4; round++) {
			bool mla = kinds[k] == KVW_GEOM_MLA;
			struct spec sp = {kinds[k], round % 2 ? 16 : 4, mla ? 0 : 2, mla ? 1 : 6};
			struct side d;
			make(&d, sp, mla ? 1 : 8, 4, 60);
			uint32_t gh0 = round < 2 ? d.g.h0 : d.g.h0 + 1, gh1 = d.g.h1;
			uint64_t t0 = round * 3, t1 = 60 - round * 5, u = d.g.head_dim * d.g.elem_bytes;
			struct kvw_geom_grant gr = {{&d.g, d.blocks, d.n}, t0, t1, mla ? 0 : gh0, gh1};
			memset(d.cnt, 0, d.len);
			for (uint32_t l = 0; l < LAYERS; l++)
				for (uint32_t kv = 0; kv < d.g.n_kv; kv++)
					for (uint64_t t = t0; t < t1; t++)
						for (uint32_t h = gr.h0; h < gr.h1; h++)
							memset(d.cnt + ref_at(&d.g, d.blocks, l, kv, t, h), 1, u);
			for (uint32_t i = 0; i < 20000; i++) {
				bool aligned = rnd(2);
				uint32_t l = rnd(LAYERS + 1), kv = rnd(d.g.n_kv + 1), idx = rnd(d.n + 1);
				uint64_t span = 3 * d.g.block_stride;
				uint64_t off = aligned ? rnd((uint32_t)(span / u)) * u : rnd((uint32_t)span);
				uint64_t bytes = aligned ? (1 + rnd(3 * d.g.block_tokens)) * u
							 : 1 + rnd((uint32_t)span);
				bool want = naive_ok(&d, d.cnt, l, kv, idx, off, bytes);
				bool got = kvw_geom_frag_ok(&gr, l, kv, idx, off, bytes);
				cr_assert_eq(got, want, "kind %d round %u: l%u kv%u idx %u off %llu bytes %llu: "
					     "check says %d, naive %d", kinds[k], round, l, kv, idx,
					     (unsigned long long)off, (unsigned long long)bytes, got, want);
				agree_ok += want, agree_no += !want;
			}
			drop(&d);
		}
	cr_log_info("receiver check agrees with the naive one: %llu accepted, %llu refused",
		    (unsigned long long)agree_ok, (unsigned long long)agree_no);
	cr_assert_gt(agree_ok, 1000, "too few honest fragments drawn to mean anything");
}

static void random_pairs(void);
/* Random pairs: kinds, block tokens, TP degree on each side, token range. */
Test(geom, random_pairs_and_splits)
{
	random_pairs();
}

Test(geom, gathered_random_pairs)
{
	g_gather = 16;
	random_pairs();
}

static void random_pairs(void)
{
	static const int kinds[] = {KVW_GEOM_NHD, KVW_GEOM_HND, KVW_GEOM_NHD_KV_BLOCK,
				    KVW_GEOM_HND_KV_BLOCK, SEPARATE};
	static const uint32_t bts[] = {1, 16, 32, 64, 128}, tps[] = {1, 2, 4, 8};

	for (int round = 0; round < 40; round++) {
		struct spec s[8], d[8];
		uint32_t ns = tps[rnd(4)], nd = tps[rnd(4)];
		uint64_t t0 = rnd(300), t1 = t0 + 1 + rnd((uint32_t)(300 - t0));
		for (uint32_t i = 0; i < ns; i++)
			s[i] = (struct spec){kinds[rnd(5)], bts[rnd(5)], i * HEADS / ns, (i + 1) * HEADS / ns};
		for (uint32_t j = 0; j < nd; j++)
			d[j] = (struct spec){kinds[rnd(5)], bts[rnd(5)], j * HEADS / nd, (j + 1) * HEADS / nd};
		run_case(s, ns, d, nd, HEADS, DIM, 300, t0, t1);
	}
}
