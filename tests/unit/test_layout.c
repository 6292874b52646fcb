/* SPDX-License-Identifier: MIT */
/* Layout bounds against the registered memory, and run merging. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "kvwt.h"

static kvw_ctx *ctx;
static kvw_mem *mem;
#define MEM_LEN (1u << 20)

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

TestSuite(layout, .init = setup, .fini = teardown, .timeout = 30);

static kvw_status make(kvw_layout_desc d, kvw_layout **out)
{
	kvw_layout *l = (kvw_layout *)(uintptr_t)0x1;
	kvw_status st = kvw_layout_create(mem, &d, &l);
	if (st != KVW_OK)
		cr_assert_eq(l, (kvw_layout *)(uintptr_t)0x1, "output written on failure");
	*out = st == KVW_OK ? l : NULL;
	return st;
}

Test(layout, fits_exactly)
{
	kvw_layout *l;
	/* 4 layers x 64 blocks x 4 KiB = 1 MiB exactly */
	kvw_layout_desc d = { .n_layers = 4, .n_blocks = 64, .block_bytes = 4096,
			      .block_stride = 4096, .layer_stride = 64 * 4096 };
	cr_assert_eq(make(d, &l), KVW_OK, "%s", kvw_ctx_last_error(ctx));
	kvw_layout_destroy(l);
	/* stride gap after the last block need not be inside */
	d = (kvw_layout_desc){ .n_layers = 1, .n_blocks = 2, .block_bytes = 4096,
			       .block_stride = MEM_LEN - 4096 };
	cr_assert_eq(make(d, &l), KVW_OK, "%s", kvw_ctx_last_error(ctx));
	kvw_layout_destroy(l);
}

Test(layout, one_byte_past_end_rejected)
{
	kvw_layout *l;
	kvw_layout_desc d = { .n_layers = 4, .n_blocks = 64, .block_bytes = 4096,
			      .block_stride = 4096, .layer_stride = 64 * 4096, .base_offset = 1 };
	cr_assert_eq(make(d, &l), KVW_ERR_REJECTED);
	cr_assert(strlen(kvw_ctx_last_error(ctx)) > 0);
	d.base_offset = 0;
	d.n_blocks = 65;
	cr_assert_eq(make(d, &l), KVW_ERR_REJECTED);
	d.n_blocks = 64;
	d.n_layers = 5;
	cr_assert_eq(make(d, &l), KVW_ERR_REJECTED);
	d.n_layers = 4;
	d.block_bytes = 4097;
	d.block_stride = 4097;
	cr_assert_eq(make(d, &l), KVW_ERR_REJECTED);
}

Test(layout, layer_offsets_outside_rejected)
{
	kvw_layout *l;
	uint64_t offs[3] = { 0, 8192, MEM_LEN - 4096 };
	kvw_layout_desc d = { .n_layers = 3, .n_blocks = 1, .block_bytes = 4096,
			      .block_stride = 4096, .layer_offsets = offs };
	cr_assert_eq(make(d, &l), KVW_OK, "%s", kvw_ctx_last_error(ctx));
	kvw_layout_destroy(l);
	offs[2] = MEM_LEN - 4095;
	cr_assert_eq(make(d, &l), KVW_ERR_REJECTED);
	offs[2] = MEM_LEN;
	cr_assert_eq(make(d, &l), KVW_ERR_REJECTED);
	offs[2] = ~0ull - 100; /* would wrap around */
	cr_assert_eq(make(d, &l), KVW_ERR_REJECTED);
}

Test(layout, overflowing_geometry_rejected)
{
	kvw_layout *l;
	kvw_layout_desc d = { .n_layers = 2, .n_blocks = 0xffffffffu, .block_bytes = 4096,
			      .block_stride = 1ull << 40, .layer_stride = 4096 };
	cr_assert_lt(make(d, &l), 0);
	d = (kvw_layout_desc){ .n_layers = 1024, .n_blocks = 1, .block_bytes = 4096,
			       .block_stride = 4096, .layer_stride = ~0ull / 512 };
	cr_assert_lt(make(d, &l), 0);
	d = (kvw_layout_desc){ .n_layers = 1, .n_blocks = 1, .block_bytes = ~0ull,
			       .block_stride = ~0ull };
	cr_assert_lt(make(d, &l), 0);
}

Test(layout, invalid_descriptions)
{
	kvw_layout *l;
	kvw_layout_desc ok = { .n_layers = 2, .n_blocks = 4, .block_bytes = 4096,
			       .block_stride = 4096, .layer_stride = 16384 };
	kvw_layout_desc d = ok;
	d.n_layers = 0;
	cr_assert_eq(make(d, &l), KVW_ERR_INVALID);
	d = ok;
	d.n_blocks = 0;
	cr_assert_eq(make(d, &l), KVW_ERR_INVALID);
	d = ok;
	d.block_bytes = 0;
	cr_assert_eq(make(d, &l), KVW_ERR_INVALID);
	d = ok;
	d.block_stride = 2048; /* < block_bytes */
	cr_assert_eq(make(d, &l), KVW_ERR_INVALID);
	d = ok;
	d.n_layers = KVW_MAX_LAYERS + 1;
	cr_assert_eq(make(d, &l), KVW_ERR_INVALID);
	cr_assert_eq(kvw_layout_create(NULL, &ok, &l), KVW_ERR_INVALID);
	cr_assert_eq(kvw_layout_create(mem, NULL, &l), KVW_ERR_INVALID);
}

Test(layout, runs_merge_contiguous_blocks)
{
	kvw_layout *l;
	kvw_layout_desc d = { .n_layers = 2, .n_blocks = 64, .block_bytes = 4096,
			      .block_stride = 4096, .layer_stride = 64 * 4096 };
	cr_assert_eq(make(d, &l), KVW_OK);
	uint32_t a[] = { 0, 1, 2, 5, 6, 9 };
	cr_assert_eq(kvw_layout_runs(l, a, 6), 3);
	uint32_t b[] = { 3, 2, 1, 0 }; /* descending: every block its own run */
	cr_assert_eq(kvw_layout_runs(l, b, 4), 4);
	uint32_t c[64];
	for (uint32_t i = 0; i < 64; i++)
		c[i] = i;
	cr_assert_eq(kvw_layout_runs(l, c, 64), 1);
	cr_assert_eq(kvw_layout_runs(l, c, 1), 1);
	cr_assert_eq(kvw_layout_runs(l, c, 0), 0);
	uint32_t e[] = { 7, 7 }; /* the same block twice is not contiguous */
	cr_assert_eq(kvw_layout_runs(l, e, 2), 2);
	uint32_t f[] = { 10, 11, 12, 40, 41, 0, 63 };
	cr_assert_eq(kvw_layout_runs(l, f, 7), 4);
	kvw_layout_destroy(l);
}

Test(layout, runs_with_stride_gap_never_merge)
{
	kvw_layout *l;
	kvw_layout_desc d = { .n_layers = 2, .n_blocks = 64, .block_bytes = 2048,
			      .block_stride = 4096, .layer_stride = 64 * 4096 };
	cr_assert_eq(make(d, &l), KVW_OK);
	uint32_t a[] = { 0, 1, 2, 3 };
	cr_assert_eq(kvw_layout_runs(l, a, 4), 4);
	kvw_layout_destroy(l);
}

Test(layout, mem_alloc_has_guard_pages)
{
	uint8_t *p = kvw_mem_addr(mem);
	size_t len = kvw_mem_len(mem);
	cr_assert_geq(len, MEM_LEN);
	p[0] = 1;
	p[len - 1] = 2;
	/* mincore-free check: mprotect state via /proc/self/maps */
	FILE *f = fopen("/proc/self/maps", "r");
	cr_assert_not_null(f);
	char line[512];
	bool below = false, above = false;
	uintptr_t lo = (uintptr_t)p, hi = (uintptr_t)p + len;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char perm[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perm) != 3)
			continue;
		if (!strncmp(perm, "---", 3) && e == lo)
			below = true;
		if (!strncmp(perm, "---", 3) && s == hi)
			above = true;
	}
	fclose(f);
	cr_assert(below, "no PROT_NONE guard page right below kvw_mem_alloc memory");
	cr_assert(above, "no PROT_NONE guard page right above kvw_mem_alloc memory");
}

Test(layout, mem_in_use_by_layout_is_busy)
{
	kvw_layout *l;
	kvw_mem *m2;
	cr_assert_eq(kvw_mem_alloc(ctx, 65536, KVW_MEM_NO_PIN, &m2), KVW_OK);
	kvw_layout_desc d = { .n_layers = 1, .n_blocks = 16, .block_bytes = 4096,
			      .block_stride = 4096 };
	cr_assert_eq(kvw_layout_create(m2, &d, &l), KVW_OK);
	cr_assert_eq(kvw_mem_dereg(m2), KVW_ERR_BUSY);
	kvw_layout_destroy(l);
	cr_assert_eq(kvw_mem_dereg(m2), KVW_OK);
}
