/* SPDX-License-Identifier: MIT */
/* Grant tokens (transport/token.c): a live token finds its request, a
 * released or reused slot's old token finds nothing, forged tokens find
 * nothing, and the table stops at 65,534 live grants with a valid token
 * for every one of them. */
#include "token.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>

#define FULL (KVW_TOKEN_SLOT_MASK - 1)

static kvw_req *reqs(size_t n)
{
	kvw_req *r = calloc(n, sizeof(*r));
	cr_assert_not_null(r);
	return r;
}

Test(token, live_released_and_reused)
{
	struct kvw_tokens t = {0};
	kvw_req *r = reqs(600);

	cr_assert_geq(sodium_init(), 0);
	for (int i = 0; i < 600; i++) {
		cr_assert_eq(kvw_tokens_alloc(&t, &r[i]), KVW_OK);
		cr_assert_eq(r[i].token & KVW_TOKEN_SLOT_MASK, (uint32_t)i + 1, "slots fill in order");
		cr_assert_neq(r[i].token >> KVW_TOKEN_SLOT_BITS, 0, "generation 0 is never given");
	}
	for (int i = 0; i < 600; i++)
		cr_assert_eq(kvw_tokens_get(&t, r[i].token), &r[i]);
	uint32_t old = r[7].token;
	kvw_tokens_release(&t, &r[7]);
	cr_assert_null(kvw_tokens_get(&t, old), "a released token is still live");
	kvw_tokens_release(&t, &r[7]); /* twice: nothing */
	kvw_req again = {0};
	t.hint = 7; /* the freed slot is taken next */
	cr_assert_eq(kvw_tokens_alloc(&t, &again), KVW_OK);
	cr_assert_eq(again.token & KVW_TOKEN_SLOT_MASK, 8u);
	cr_assert_neq(again.token, old, "a reused slot gave the same token");
	cr_assert_null(kvw_tokens_get(&t, old), "the old token of a reused slot reaches the new grant");
	cr_assert_eq(kvw_tokens_get(&t, again.token), &again);
	kvw_tokens_free(&t);
	free(r);
}

Test(token, forged_tokens_find_nothing)
{
	struct kvw_tokens t = {0};
	kvw_req *r = reqs(4);

	cr_assert_geq(sodium_init(), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(kvw_tokens_alloc(&t, &r[i]), KVW_OK);
	uint32_t tok = r[2].token, slot = tok & KVW_TOKEN_SLOT_MASK, gen = tok >> KVW_TOKEN_SLOT_BITS;
	cr_assert_null(kvw_tokens_get(&t, 0));
	cr_assert_null(kvw_tokens_get(&t, tok & ~KVW_TOKEN_SLOT_MASK), "slot bits 0");
	cr_assert_null(kvw_tokens_get(&t, (gen << KVW_TOKEN_SLOT_BITS) | (t.cap + 1)), "slot past the table");
	cr_assert_null(kvw_tokens_get(&t, (gen << KVW_TOKEN_SLOT_BITS) | 100), "a slot never used");
	cr_assert_null(kvw_tokens_get(&t, (((gen % 0xffffu) + 1) << KVW_TOKEN_SLOT_BITS) | slot),
		       "the right slot with another generation");
	cr_assert_null(kvw_tokens_get(&t, 0xffffffffu));
	kvw_tokens_free(&t);
	free(r);
}

/* The generations of one slot: random (a forger cannot count them on). */
Test(token, generations_do_not_repeat_or_count)
{
	struct kvw_tokens t = {0};
	kvw_req r = {0};
	static bool seen[0x10000];
	unsigned distinct = 0, steps = 0;
	uint32_t last = 0;

	cr_assert_geq(sodium_init(), 0);
	for (int i = 0; i < 2000; i++) {
		cr_assert_eq(kvw_tokens_alloc(&t, &r), KVW_OK);
		uint32_t g = r.token >> KVW_TOKEN_SLOT_BITS;
		cr_assert_neq(g, last, "a slot's generation repeated at once");
		if (g == last + 1)
			steps++;
		if (!seen[g])
			seen[g] = true, distinct++;
		last = g;
		kvw_tokens_release(&t, &r);
		t.hint = 0;
	}
	cr_log_info("2000 reuses of one slot: %u distinct generations, %u counted up by one", distinct, steps);
	cr_assert_gt(distinct, 1900, "generations cluster: %u distinct of 2000", distinct);
	cr_assert_lt(steps, 20, "generations count up: %u of 2000", steps);
	kvw_tokens_free(&t);
}

Test(token, table_full_at_65534_with_valid_tokens, .timeout = 60)
{
	struct kvw_tokens t = {0};
	kvw_req *r = reqs(FULL + 1);

	cr_assert_geq(sodium_init(), 0);
	for (uint32_t i = 0; i < FULL; i++) {
		cr_assert_eq(kvw_tokens_alloc(&t, &r[i]), KVW_OK, "grant %u refused", i);
		cr_assert_neq(r[i].token & KVW_TOKEN_SLOT_MASK, 0, "grant %u got slot bits 0", i);
	}
	for (uint32_t i = 0; i < FULL; i += 997)
		cr_assert_eq(kvw_tokens_get(&t, r[i].token), &r[i]);
	r[FULL].token = 12345;
	cr_assert_eq(kvw_tokens_alloc(&t, &r[FULL]), KVW_ERR_NOMEM);
	cr_assert_eq(r[FULL].token, 12345u, "a refused request's token was written");
	kvw_tokens_release(&t, &r[40000]);
	cr_assert_eq(kvw_tokens_alloc(&t, &r[FULL]), KVW_OK, "a freed slot of a full table");
	cr_assert_eq(r[FULL].token & KVW_TOKEN_SLOT_MASK, 40001u);
	kvw_tokens_free(&t);
	free(r);
}
