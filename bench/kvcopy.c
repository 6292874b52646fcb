/* SPDX-License-Identifier: MIT */
/* compare kv's yardsticks (issue 15): what one thread's memcpy does with the
 * bytes the kv run moves, in this process, with no transport in the way.
 * - flat: the --seqs sequences' bytes (layers x blocks x block bytes) in one
 *   memcpy, the ceiling of a contiguous grant;
 * - scattered: block by block, each layer's blocks into the same seeded
 *   permutation of the pool_factor-larger decode pool as the kv run's
 *   receiver (kvb_scatter_perm), the ceiling of a scattered grant.
 * Both buffers are faulted in before timing (the kv run's pools are reused
 * sequence after sequence, so their pages are warm too); the first pass is
 * checked byte for byte, the median of the timed passes is reported. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

#define KVC_MAX_PASSES 15u
#define KVC_MIN_BYTES (2ull << 30) /* timed passes: at least this much copied, 3 passes at least */

struct kvc {
	uint8_t *src, *dst;
	uint32_t *perm;
	uint64_t bs, n_src, n_dst; /* block bytes; blocks a layer, sender and receiver */
	unsigned layers;
};

static void kvc_pass(const struct kvc *c, bool scattered)
{
	if (!scattered) {
		memcpy(c->dst, c->src, c->layers * c->n_src * c->bs);
		return;
	}
	for (unsigned l = 0; l < c->layers; l++) {
		const uint8_t *s = c->src + l * c->n_src * c->bs;
		uint8_t *d = c->dst + l * c->n_dst * c->bs;
		for (uint64_t i = 0; i < c->n_src; i++)
			memcpy(d + c->perm[i] * c->bs, s + i * c->bs, c->bs);
	}
	__asm__ __volatile__("" ::"r"(c->dst) : "memory");
}

/* Block i of layer l where the pass put it. */
static const uint8_t *kvc_landed(const struct kvc *c, bool scattered, unsigned l, uint64_t i)
{
	if (!scattered)
		return c->dst + (l * c->n_src + i) * c->bs;
	return c->dst + (l * c->n_dst + c->perm[i]) * c->bs;
}

static bool kvc_verify(const struct kvc *c, bool scattered)
{
	for (unsigned l = 0; l < c->layers; l++)
		for (uint64_t i = 0; i < c->n_src; i++)
			if (memcmp(kvc_landed(c, scattered, l, i), c->src + (l * c->n_src + i) * c->bs, c->bs))
				return false;
	return true;
}

static int kvc_alloc(struct kvc *c, const kvb_opts *o, char *err, size_t errlen)
{
	uint64_t nblk = kvb_kv_blocks_per_seq(o);

	c->bs = kvb_kv_block_bytes(o);
	c->layers = o->layers;
	c->n_src = (uint64_t)o->seqs * nblk;
	c->n_dst = (uint64_t)o->pool_factor * c->n_src;
	size_t ls = (c->layers * c->n_src * c->bs + 4095) & ~4095ull;
	size_t ld = (c->layers * c->n_dst * c->bs + 4095) & ~4095ull;
	c->src = aligned_alloc(4096, ls);
	c->dst = aligned_alloc(4096, ld);
	c->perm = malloc(sizeof(uint32_t) * c->n_dst);
	if (!c->src || !c->dst || !c->perm) {
		snprintf(err, errlen, "memcpy yardstick: cannot allocate %zu + %zu bytes; lower --tokens or "
			 "--pool-factor", ls, ld);
		return -1;
	}
	kvb_scatter_perm(o->seed, (uint32_t)c->n_dst, c->perm);
	kvb_pattern_fill(c->src, ls, o->seed, 1, 2);
	memset(c->dst, 0, ld); /* faulted in, and nothing in it matches the source yet */
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

int kvb_kvcopy(const kvb_opts *o, bool scattered, double *gbit, char *err, size_t errlen)
{
	struct kvc c = {0};
	uint64_t t[KVC_MAX_PASSES];
	int rc = -1;

	if (kvc_alloc(&c, o, err, errlen))
		goto out;
	kvc_pass(&c, scattered);
	if (!kvc_verify(&c, scattered)) {
		snprintf(err, errlen, "memcpy yardstick: the copied blocks differ from the source");
		goto out;
	}
	uint64_t bytes = c.layers * c.n_src * c.bs;
	unsigned passes = (unsigned)(KVC_MIN_BYTES / (bytes ? bytes : 1));
	passes = passes < 3 ? 3 : passes > KVC_MAX_PASSES ? KVC_MAX_PASSES : passes;
	for (unsigned k = 0; k < passes; k++) {
		uint64_t t0 = kvb_now_ns();
		kvc_pass(&c, scattered);
		t[k] = kvb_now_ns() - t0;
	}
	qsort(t, passes, sizeof(t[0]), cmp_u64);
	*gbit = (double)bytes * 8 / ((double)(t[passes / 2] ? t[passes / 2] : 1));
	rc = 0;
out:
	free(c.src);
	free(c.dst);
	free(c.perm);
	return rc;
}
