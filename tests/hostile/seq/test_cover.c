/* SPDX-License-Identifier: MIT */
/* The coverage structure (transport/cover.c): every byte counts once, in
 * order stays one interval, holes are bounded by KVW_COVER_MAX. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "cover.h"

static uint64_t add(struct kvw_cover *c, uint64_t s, uint64_t e)
{
	uint64_t added = ~0ull;
	cr_assert_eq(kvw_cover_add(c, s, e, &added), KVW_OK, "add [%llu, %llu)",
		     (unsigned long long)s, (unsigned long long)e);
	return added;
}

Test(cover, in_order_is_one_interval)
{
	struct kvw_cover c;
	cr_assert_eq(kvw_cover_init(&c, 1), KVW_OK);
	for (uint64_t i = 0; i < 100000; i++)
		cr_assert_eq(add(&c, i * 4096, (i + 1) * 4096), 4096);
	cr_assert_eq(c.n, 1);
	cr_assert_eq(c.cap, 1, "in-order arrival grew the array");
	cr_assert_eq(c.covered, 100000ull * 4096);
	kvw_cover_free(&c);
}

Test(cover, duplicates_and_overlaps_count_once)
{
	struct kvw_cover c;
	cr_assert_eq(kvw_cover_init(&c, 2), KVW_OK);
	cr_assert_eq(add(&c, 0, 100), 100);
	cr_assert_eq(add(&c, 0, 100), 0);
	cr_assert_eq(add(&c, 10, 20), 0);
	cr_assert_eq(add(&c, 50, 150), 50);
	cr_assert_eq(add(&c, 300, 400), 100);
	cr_assert_eq(c.n, 2);
	cr_assert_eq(add(&c, 200, 250), 50);
	cr_assert_eq(c.n, 3);
	/* one range over all three and both holes */
	cr_assert_eq(add(&c, 0, 500), 500 - 150 - 50 - 100);
	cr_assert_eq(c.n, 1);
	cr_assert(c.iv[0].start == 0 && c.iv[0].end == 500);
	cr_assert_eq(c.covered, 500);
	cr_assert_eq(add(&c, 5, 5), 0, "an empty range covers nothing");
	kvw_cover_free(&c);
}

Test(cover, touching_ranges_merge)
{
	struct kvw_cover c;
	cr_assert_eq(kvw_cover_init(&c, 4), KVW_OK);
	cr_assert_eq(add(&c, 100, 200), 100);
	cr_assert_eq(add(&c, 0, 100), 100);   /* touches from the left */
	cr_assert_eq(add(&c, 300, 400), 100);
	cr_assert_eq(add(&c, 200, 300), 100); /* closes the gap exactly */
	cr_assert_eq(c.n, 1);
	cr_assert(c.iv[0].start == 0 && c.iv[0].end == 400);
	kvw_cover_free(&c);
}

/* Against a byte map: random ranges in random order, then the holes. */
Test(cover, matches_a_byte_map)
{
	enum { SPAN = 1 << 16 };
	static uint8_t map[SPAN];
	struct kvw_cover c;
	uint64_t seen = 0, x = 88172645463325252ull;
	cr_assert_eq(kvw_cover_init(&c, 1), KVW_OK);
	for (int k = 0; k < 4000; k++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t s = x % SPAN, e = s + 1 + (x >> 20) % 512;
		if (e > SPAN)
			e = SPAN;
		uint64_t fresh = 0;
		for (uint64_t b = s; b < e; b++)
			fresh += !map[b], map[b] = 1;
		cr_assert_eq(add(&c, s, e), fresh, "range %d [%llu, %llu)", k, (unsigned long long)s,
			     (unsigned long long)e);
		seen += fresh;
	}
	cr_assert_eq(c.covered, seen);
	for (uint32_t i = 0; i < c.n; i++) {
		cr_assert_lt(c.iv[i].start, c.iv[i].end);
		if (i)
			cr_assert_gt(c.iv[i].start, c.iv[i - 1].end, "intervals %u and %u touch", i - 1, i);
		for (uint64_t b = c.iv[i].start; b < c.iv[i].end; b++)
			cr_assert(map[b]);
	}
	cr_assert_eq(add(&c, 0, SPAN), SPAN - seen);
	cr_assert_eq(c.n, 1);
	kvw_cover_free(&c);
}

/* A peer that scatters fragments gets at most KVW_COVER_MAX holes: the next
 * new hole is refused (BUSY) and changes nothing; filling still works. */
Test(cover, holes_are_bounded)
{
	struct kvw_cover c;
	uint64_t added = 7;
	cr_assert_eq(kvw_cover_init(&c, 8), KVW_OK);
	for (uint64_t i = 0; i < KVW_COVER_MAX; i++)
		cr_assert_eq(add(&c, i * 2, i * 2 + 1), 1);
	cr_assert_eq(c.n, KVW_COVER_MAX);
	cr_assert_eq(c.cap, KVW_COVER_MAX);
	cr_assert_eq(kvw_cover_add(&c, KVW_COVER_MAX * 2ull + 5, KVW_COVER_MAX * 2ull + 6, &added),
		     KVW_ERR_BUSY);
	cr_assert_eq(added, 0);
	cr_assert_eq(c.n, KVW_COVER_MAX);
	cr_assert_eq(c.covered, KVW_COVER_MAX);
	cr_assert_eq(add(&c, 1, 2), 1, "filling a hole must still work at the limit");
	cr_assert_eq(c.n, KVW_COVER_MAX - 1);
	kvw_cover_free(&c);
}
