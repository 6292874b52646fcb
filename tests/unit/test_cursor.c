/* SPDX-License-Identifier: MIT */
/* The fragment cursor (transport/cursor.c) against a byte-by-byte model:
 * random block lists on both sides, packed and strided layouts, layer
 * ranges asked out of order, any max_frag. Every granted byte is named
 * once, in order, with the right source and destination; fragments stop
 * only at max_frag or where either side's blocks stop being contiguous;
 * resuming from a saved cursor (the driver took fewer) changes nothing. */
#include "cursor.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kvwt.h"

#define MEM_LEN (4u << 20)
#define MAXB 96u
#define MAXL 4u

static kvw_ctx *ctx;
static kvw_mem *mem;

static void setup(void)
{
	cr_assert_eq(kvw_ctx_create(NULL, &ctx), KVW_OK);
	cr_assert_eq(kvw_mem_alloc(ctx, MEM_LEN, KVW_MEM_NO_PIN, &mem), KVW_OK, "%s",
		     kvw_ctx_last_error(ctx));
}

static void teardown(void)
{
	kvw_mem_dereg(mem);
	kvw_ctx_destroy(ctx);
}

TestSuite(cursor, .init = setup, .fini = teardown, .timeout = 60);

static uint64_t rng(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

/* n list entries out of n_total blocks: runs of random length, some gaps */
static void pick(uint64_t *x, uint32_t *b, uint32_t n, uint32_t n_total)
{
	uint32_t at = (uint32_t)(rng(x) % (n_total - n + 1));
	for (uint32_t j = 0; j < n; j++) {
		b[j] = at;
		if (rng(x) % 4 == 0 && at + 2 < n_total - (n - j - 1))
			at += 2; /* a gap: the run breaks */
		else
			at++;
	}
	if (rng(x) % 3 == 0) /* and sometimes a shuffle */
		for (uint32_t j = n; j-- > 1;) {
			uint32_t k = (uint32_t)(rng(x) % (j + 1)), t = b[j];
			b[j] = b[k];
			b[k] = t;
		}
}

struct trial {
	kvw_layout *l;
	kvw_req r;
	uint32_t sblk[MAXB], dblk[MAXB], fe_ref[MAXB];
	uint64_t dlayer_off[MAXL];
	struct kvw_range pend[3];
	uint64_t max_frag;
};

static void trial_make(uint64_t *x, struct trial *t)
{
	uint32_t L = 1 + (uint32_t)(rng(x) % MAXL), n = 1 + (uint32_t)(rng(x) % (MAXB / 2));
	uint64_t bb = 64 * (1 + rng(x) % 32), sstride = bb + (rng(x) % 2 ? 0 : 64 * (rng(x) % 3));
	uint64_t dstride = bb + (rng(x) % 2 ? 0 : 128);
	kvw_layout_desc d = {.n_layers = L, .n_blocks = MAXB, .block_bytes = bb,
			     .block_stride = sstride, .layer_stride = MAXB * sstride};

	memset(t, 0, sizeof(*t));
	cr_assert_eq(kvw_layout_create(mem, &d, &t->l), KVW_OK, "%s", kvw_ctx_last_error(ctx));
	pick(x, t->sblk, n, MAXB);
	pick(x, t->dblk, n, MAXB);
	for (uint32_t i = 0; i < L; i++)
		t->dlayer_off[i] = (uint64_t)(L - 1 - i) * MAXB * dstride; /* layers reversed */
	/* the send calls' layer ranges, in call order: split at two points, shuffled */
	uint32_t a = (uint32_t)(rng(x) % (L + 1)), b = (uint32_t)(rng(x) % (L + 1));
	if (a > b) { uint32_t s = a; a = b; b = s; }
	struct kvw_range all[3] = {{0, a}, {a, b}, {b, L}};
	uint32_t np = 0;
	for (uint32_t k = 0, o = (uint32_t)(rng(x) % 3); k < 3; k++)
		if (all[(k + o) % 3].first < all[(k + o) % 3].end)
			t->pend[np++] = all[(k + o) % 3];
	t->max_frag = rng(x) % 4 ? 64 * (1 + rng(x) % 64) : UINT32_MAX;
	t->r = (kvw_req){.layout = t->l, .n_blocks = n, .n_layers = L, .blocks = t->sblk,
			 .pending = t->pend, .n_pending = np};
	t->r.pg = (struct kvw_peer_grant){.token = 77, .n_blocks = n, .n_layers = L, .block_bytes = bb,
					  .block_stride = dstride, .mem_addr = 0x10000000, .mem_key = 5,
					  .layer_off = t->dlayer_off, .blocks = t->dblk};
	t->r.cur = (struct kvw_cur){.layer = np ? t->pend[0].first : 0};
	cr_assert_eq(kvw_cur_runs(&t->r), KVW_OK);
}

static void trial_free(struct trial *t)
{
	free(t->r.frag_end);
	kvw_layout_destroy(t->l);
}

/* does list entry j continue entry j-1 on both sides? */
static bool joins(const struct trial *t, uint32_t j)
{
	const kvw_layout *l = t->l;
	return l->block_stride == l->block_bytes && t->r.pg.block_stride == t->r.pg.block_bytes &&
	       t->sblk[j] == t->sblk[j - 1] + 1 && t->dblk[j] == t->dblk[j - 1] + 1;
}

/* Walks the model alongside the cursor's fragments. */
static void check_walk(const struct trial *t, const kvw_frag *f, size_t nf)
{
	const kvw_req *r = &t->r;
	uint64_t bb = t->l->block_bytes;
	size_t fi = 0;
	uint64_t min_frags = 0;

	for (uint32_t p = 0; p < r->n_pending; p++)
		for (uint32_t layer = r->pending[p].first; layer < r->pending[p].end; layer++)
			for (uint32_t j = 0; j < r->n_blocks;) {
				uint32_t e = j + 1;
				while (e < r->n_blocks && joins(t, e))
					e++;
				uint64_t run = (e - j) * bb;
				min_frags += (run + t->max_frag - 1) / t->max_frag;
				for (uint64_t off = 0; off < run;) {
					cr_assert_lt(fi, nf, "fragments ran out at layer %u entry %u", layer, j);
					const kvw_frag *g = &f[fi];
					uint32_t idx = j + (uint32_t)(off / bb);
					uint64_t bo = off % bb;
					cr_assert_eq(g->layer, layer);
					cr_assert_eq(g->blk_idx, idx, "fragment %zu: entry %u, expected %u", fi,
						     g->blk_idx, idx);
					cr_assert_eq(g->blk_off, bo);
					cr_assert_eq(g->token, 77);
					cr_assert_eq(g->rkey, 5);
					cr_assert(g->bytes > 0 && g->bytes <= t->max_frag && off + g->bytes <= run,
						  "fragment %zu: %u bytes, run %llu at %llu", fi, g->bytes,
						  (unsigned long long)run, (unsigned long long)off);
					cr_assert_eq(g->src, kvw_layout_page(t->l, layer, t->sblk[idx]) + bo);
					cr_assert_eq(g->src_mem, mem);
					cr_assert_eq(g->src_off, (uint64_t)(g->src - mem->addr));
					cr_assert_eq(g->dst_addr, r->pg.mem_addr + t->dlayer_off[layer] +
								  t->dblk[idx] * r->pg.block_stride + bo);
					cr_assert(g->bytes == t->max_frag || off + g->bytes == run,
						  "fragment %zu stops short inside a run", fi);
					off += g->bytes;
					fi++;
				}
				j = e;
			}
	cr_assert_eq(fi, nf, "%zu fragments past the granted bytes", nf - fi);
	cr_assert_eq(nf, min_frags, "runs were not merged as far as both sides allow");
}

#define MAXF 200000

Test(cursor, random_against_model)
{
	static kvw_frag f[MAXF];
	static struct trial t;
	uint64_t x = 0x9E3779B97F4A7C15ull;

	for (int k = 0; k < 3000; k++) {
		trial_make(&x, &t);
		size_t nf = 0;
		struct kvw_cur c = t.r.cur;
		while (nf < MAXF && kvw_cur_next(&t.r, t.max_frag, &c, &f[nf]))
			nf++;
		cr_assert_lt(nf, MAXF);
		kvw_frag extra;
		cr_assert(!kvw_cur_next(&t.r, t.max_frag, &c, &extra), "a fragment after the end");
		check_walk(&t, f, nf);
		trial_free(&t);
	}
}

/* The pump's way: cut a batch, the driver takes a random part, resume
 * from the copy kept for the last fragment taken. */
Test(cursor, resume_after_partial_take)
{
	static kvw_frag ref[MAXF], got[MAXF];
	static struct trial t;
	uint64_t x = 424242;

	for (int k = 0; k < 1000; k++) {
		trial_make(&x, &t);
		size_t nr = 0, ng = 0;
		struct kvw_cur c = t.r.cur;
		while (nr < MAXF && kvw_cur_next(&t.r, t.max_frag, &c, &ref[nr]))
			nr++;
		struct kvw_cur saved = t.r.cur, copies[8];
		for (;;) {
			kvw_frag batch[8];
			size_t n = 0;
			c = saved;
			while (n < 8 && kvw_cur_next(&t.r, t.max_frag, &c, &batch[n]))
				copies[n++] = c;
			if (n == 0)
				break;
			size_t took = 1 + (size_t)(rng(&x) % n);
			memcpy(&got[ng], batch, took * sizeof(*batch));
			ng += took;
			saved = copies[took - 1];
		}
		cr_assert_eq(ng, nr);
		cr_assert(memcmp(got, ref, nr * sizeof(*ref)) == 0, "resumed walk differs");
		trial_free(&t);
	}
}

/* One run on both sides: a whole layer is one fragment when max_frag allows. */
Test(cursor, contiguous_layer_is_one_fragment)
{
	static struct trial t;
	uint64_t x = 7;

	trial_make(&x, &t);
	trial_free(&t);
	kvw_layout_desc d = {.n_layers = 2, .n_blocks = 16, .block_bytes = 4096, .block_stride = 4096,
			     .layer_stride = 16 * 4096};
	memset(&t, 0, sizeof(t));
	cr_assert_eq(kvw_layout_create(mem, &d, &t.l), KVW_OK);
	for (uint32_t j = 0; j < 8; j++)
		t.sblk[j] = 4 + j, t.dblk[j] = 100 + j;
	t.dlayer_off[1] = 1u << 20;
	t.pend[0] = (struct kvw_range){1, 2};
	t.pend[1] = (struct kvw_range){0, 1};
	t.r = (kvw_req){.layout = t.l, .n_blocks = 8, .n_layers = 2, .blocks = t.sblk,
			.pending = t.pend, .n_pending = 2, .cur = {.layer = 1}};
	t.r.pg = (struct kvw_peer_grant){.n_blocks = 8, .n_layers = 2, .block_bytes = 4096,
					 .block_stride = 4096, .layer_off = t.dlayer_off, .blocks = t.dblk};
	cr_assert_eq(kvw_cur_runs(&t.r), KVW_OK);
	kvw_frag f[3];
	struct kvw_cur c = t.r.cur;
	cr_assert(kvw_cur_next(&t.r, 1u << 20, &c, &f[0]));
	cr_assert(kvw_cur_next(&t.r, 1u << 20, &c, &f[1]));
	cr_assert(!kvw_cur_next(&t.r, 1u << 20, &c, &f[2]));
	cr_assert_eq(f[0].layer, 1);
	cr_assert_eq(f[0].bytes, 8 * 4096);
	cr_assert_eq(f[0].dst_addr, (1u << 20) + 100 * 4096);
	cr_assert_eq(f[1].layer, 0);
	cr_assert_eq(f[1].bytes, 8 * 4096);
	free(t.r.frag_end);
	kvw_layout_destroy(t.l);
}
