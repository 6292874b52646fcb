/* SPDX-License-Identifier: MIT */
/* Coverage of a receive request's granted bytes (see cover.h). */
#include "cover.h"

#include <stdlib.h>
#include <string.h>

kvw_status kvw_cover_init(struct kvw_cover *c, uint32_t cap0)
{
	*c = (struct kvw_cover){0};
	if (cap0 == 0)
		cap0 = 1;
	if (cap0 > KVW_COVER_MAX)
		cap0 = KVW_COVER_MAX;
	c->iv = malloc(cap0 * sizeof(*c->iv));
	if (!c->iv)
		return KVW_ERR_NOMEM;
	c->cap = cap0;
	return KVW_OK;
}

void kvw_cover_free(struct kvw_cover *c)
{
	free(c->iv);
	*c = (struct kvw_cover){0};
}

/* First interval that ends at or after x (touching x counts), or n. */
static uint32_t kvw_cover_find(const struct kvw_cover *c, uint64_t x)
{
	uint32_t lo = 0, hi = c->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (c->iv[mid].end < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A new hole-separated interval at position i: the only way n grows. */
static kvw_status kvw_cover_insert(struct kvw_cover *c, uint32_t i, uint64_t start, uint64_t end)
{
	if (c->n == c->cap) {
		uint32_t ncap = c->cap >= KVW_COVER_MAX / 2 ? KVW_COVER_MAX : c->cap * 2;
		struct kvw_cover_iv *iv;
		if (c->cap >= KVW_COVER_MAX)
			return KVW_ERR_BUSY;
		if (!(iv = realloc(c->iv, ncap * sizeof(*iv))))
			return KVW_ERR_NOMEM;
		c->iv = iv;
		c->cap = ncap;
	}
	memmove(&c->iv[i + 1], &c->iv[i], (c->n - i) * sizeof(*c->iv));
	c->iv[i] = (struct kvw_cover_iv){start, end};
	c->n++;
	return KVW_OK;
}

/* Merges [start, end) with intervals i.. that it overlaps or touches;
 * returns the bytes of [start, end) they covered already. */
static uint64_t kvw_cover_merge(struct kvw_cover *c, uint32_t i, uint64_t start, uint64_t end)
{
	uint64_t had = 0;
	uint32_t j;

	for (j = i; j < c->n && c->iv[j].start <= end; j++) {
		uint64_t lo = c->iv[j].start > start ? c->iv[j].start : start;
		uint64_t hi = c->iv[j].end < end ? c->iv[j].end : end;
		if (hi > lo)
			had += hi - lo;
	}
	if (c->iv[i].start > start)
		c->iv[i].start = start;
	c->iv[i].end = c->iv[j - 1].end > end ? c->iv[j - 1].end : end;
	memmove(&c->iv[i + 1], &c->iv[j], (c->n - j) * sizeof(*c->iv));
	c->n -= j - i - 1;
	return had;
}

kvw_status kvw_cover_add(struct kvw_cover *c, uint64_t start, uint64_t end, uint64_t *added)
{
	uint32_t i;
	uint64_t had = 0;
	kvw_status st;

	*added = 0;
	if (start >= end)
		return KVW_OK;
	if (c->n && c->iv[c->n - 1].end == start) { /* in order: extend the last interval */
		c->iv[c->n - 1].end = end;
	} else {
		i = c->n && start > c->iv[c->n - 1].end ? c->n : kvw_cover_find(c, start);
		if (i == c->n || c->iv[i].start > end) {
			if ((st = kvw_cover_insert(c, i, start, end)) != KVW_OK)
				return st;
		} else {
			had = kvw_cover_merge(c, i, start, end);
		}
	}
	*added = end - start - had;
	c->covered += *added;
	return KVW_OK;
}
