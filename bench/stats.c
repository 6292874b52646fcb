/* SPDX-License-Identifier: MIT */
/* Percentiles, data patterns and checksums. */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

uint64_t kvb_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int kvb_samples_add(kvb_samples *s, double v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		double *nv = realloc(s->v, cap * sizeof(*nv));
		if (!nv)
			return -1;
		s->v = nv;
		s->cap = cap;
	}
	s->v[s->n++] = v;
	return 0;
}

void kvb_samples_free(kvb_samples *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest rank: the smallest value with at least p% of the samples <= it. */
double kvb_percentile_sorted(const double *v, size_t n, double p)
{
	if (!n)
		return 0;
	double rank = ceil(p / 100.0 * (double)n - 1e-9); /* 99.9% of 1000 is 999, not 999.0000001 */
	size_t i = rank < 1 ? 0 : (size_t)rank - 1;
	return v[i < n ? i : n - 1];
}

void kvb_stats_compute(kvb_samples *s, kvb_stats *out)
{
	double sum = 0;

	memset(out, 0, sizeof(*out));
	if (!s->n)
		return;
	qsort(s->v, s->n, sizeof(double), cmp_double);
	for (size_t i = 0; i < s->n; i++)
		sum += s->v[i];
	out->n = s->n;
	out->min = s->v[0];
	out->max = s->v[s->n - 1];
	out->avg = sum / (double)s->n;
	out->p50 = kvb_percentile_sorted(s->v, s->n, 50);
	out->p99 = kvb_percentile_sorted(s->v, s->n, 99);
	out->p999 = kvb_percentile_sorted(s->v, s->n, 99.9);
}

static inline uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void kvb_pattern_fill(void *buf, size_t len, uint64_t seed, uint64_t a, uint64_t b)
{
	uint64_t key[3] = {seed, a, b};
	uint64_t st = XXH3_64bits(key, sizeof(key));
	uint8_t *p = buf;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t v = splitmix64(&st);
		memcpy(p + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = splitmix64(&st);
		memcpy(p + i, &v, len - i);
	}
}

bool kvb_has_stamp(size_t len)
{
	return len >= 16;
}

uint64_t kvb_page_hash(const void *page, size_t len)
{
	if (!kvb_has_stamp(len))
		return XXH3_64bits(page, len);
	return XXH3_64bits((const uint8_t *)page + 8, len - 8);
}

uint64_t kvb_pattern_hash(size_t len, uint64_t seed, uint64_t a, uint64_t b, void *scratch)
{
	kvb_pattern_fill(scratch, len, seed, a, b);
	return kvb_page_hash(scratch, len);
}

uint64_t kvb_stamp(uint64_t seed, uint64_t k, uint64_t page)
{
	uint64_t key[3] = {seed ^ 0x5354414d50ull, k, page};
	return XXH3_64bits(key, sizeof(key));
}
