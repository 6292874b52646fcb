/* SPDX-License-Identifier: MIT */
/* Open-addressing map seq_id -> request (see seqmap.h). */
#include "seqmap.h"

#include <stdlib.h>

static uint32_t kvw_hash64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return (uint32_t)k;
}

kvw_req *kvw_map_get(const struct kvw_seqmap *m, uint64_t key)
{
	if (!m->cap)
		return NULL;
	for (uint32_t i = kvw_hash64(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (!m->vals[i])
			return NULL;
		if (m->keys[i] == key)
			return m->vals[i];
	}
}

static kvw_status kvw_map_grow(struct kvw_seqmap *m)
{
	struct kvw_seqmap n = {.cap = m->cap ? m->cap * 2 : 64};

	n.keys = calloc(n.cap, sizeof(*n.keys));
	n.vals = calloc(n.cap, sizeof(*n.vals));
	if (!n.keys || !n.vals) {
		free(n.keys);
		free(n.vals);
		return KVW_ERR_NOMEM;
	}
	for (uint32_t i = 0; i < m->cap; i++) {
		if (!m->vals[i])
			continue;
		uint32_t j = kvw_hash64(m->keys[i]) & (n.cap - 1);
		while (n.vals[j])
			j = (j + 1) & (n.cap - 1);
		n.keys[j] = m->keys[i];
		n.vals[j] = m->vals[i];
		n.used++;
	}
	free(m->keys);
	free(m->vals);
	*m = n;
	return KVW_OK;
}

kvw_status kvw_map_put(struct kvw_seqmap *m, uint64_t key, kvw_req *r)
{
	uint32_t i;

	if ((m->used + 1) * 2 > m->cap && kvw_map_grow(m) != KVW_OK)
		return KVW_ERR_NOMEM;
	for (i = kvw_hash64(key) & (m->cap - 1); m->vals[i]; i = (i + 1) & (m->cap - 1))
		;
	m->keys[i] = key;
	m->vals[i] = r;
	m->used++;
	return KVW_OK;
}

/* Deletion with backward shift: no tombstones, vals[i] != NULL = live. */
void kvw_map_del(struct kvw_seqmap *m, uint64_t key)
{
	uint32_t i, j, mask = m->cap - 1;

	if (!m->cap)
		return;
	for (i = kvw_hash64(key) & mask; m->vals[i] && m->keys[i] != key; i = (i + 1) & mask)
		;
	if (!m->vals[i])
		return;
	m->vals[i] = NULL;
	m->used--;
	for (j = (i + 1) & mask; m->vals[j]; j = (j + 1) & mask) {
		uint32_t h = kvw_hash64(m->keys[j]) & mask;
		/* move j back to i when i lies cyclically in [h, j) */
		if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			m->vals[j] = NULL;
			i = j;
		}
	}
}
