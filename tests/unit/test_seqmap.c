/* SPDX-License-Identifier: MIT */
/* The sequence map (transport/seqmap.c) against a plain array: random
 * puts, gets and deletes with backward-shift deletion across the wrap. */
#include "seqmap.h"

#include <criterion/criterion.h>
#include <stdlib.h>

#define N 4096

static kvw_req *val(uint64_t i) { return (kvw_req *)(uintptr_t)(0x1000 + i * 16); }

Test(seqmap, random_against_reference)
{
	struct kvw_seqmap m = {0};
	static uint64_t keys[N];
	static bool live[N];
	uint64_t x = 88172645463325252ull;
	unsigned n_live = 0;

	for (int i = 0; i < N; i++) /* clustered keys: many collide in the low bits */
		keys[i] = (i % 3 == 0) ? (uint64_t)i << 32 : (uint64_t)i * 1024;
	for (int step = 0; step < 200000; step++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned k = (unsigned)(x % N);
		if (!live[k]) {
			cr_assert_eq(kvw_map_put(&m, keys[k], val(k)), KVW_OK);
			live[k] = true;
			n_live++;
		} else if (x & 0x100) {
			kvw_map_del(&m, keys[k]);
			live[k] = false;
			n_live--;
		}
		if (step % 997 == 0)
			for (int j = 0; j < N; j++)
				cr_assert_eq(kvw_map_get(&m, keys[j]), live[j] ? val(j) : NULL, "key %d at step %d", j, step);
	}
	cr_expect_eq(m.used, n_live);
	cr_expect_leq(m.used * 2, m.cap, "more than half full");
	free(m.keys);
	free(m.vals);
}

Test(seqmap, empty_and_absent)
{
	struct kvw_seqmap m = {0};

	cr_expect_null(kvw_map_get(&m, 42));
	kvw_map_del(&m, 42); /* no crash on an empty map */
	cr_assert_eq(kvw_map_put(&m, 42, val(1)), KVW_OK);
	kvw_map_del(&m, 43);
	cr_expect_eq(kvw_map_get(&m, 42), val(1));
	kvw_map_del(&m, 42);
	cr_expect_null(kvw_map_get(&m, 42));
	free(m.keys);
	free(m.vals);
}
