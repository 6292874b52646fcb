/* SPDX-License-Identifier: MIT */
/* Grant tokens: see token.h. */
#include "token.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static kvw_status kvw_tokens_grow(struct kvw_tokens *t)
{
	uint32_t ncap = t->cap ? t->cap * 2 : 256;
	kvw_req **slot;
	uint32_t *gen;

	if (t->cap >= KVW_TOKEN_SLOT_MASK - 1)
		return KVW_ERR_NOMEM;
	if (ncap > KVW_TOKEN_SLOT_MASK - 1)
		ncap = KVW_TOKEN_SLOT_MASK - 1;
	if (!(slot = realloc(t->slot, ncap * sizeof(*slot))))
		return KVW_ERR_NOMEM;
	t->slot = slot;
	if (!(gen = realloc(t->gen, ncap * sizeof(*gen))))
		return KVW_ERR_NOMEM;
	t->gen = gen;
	memset(slot + t->cap, 0, (ncap - t->cap) * sizeof(*slot));
	memset(gen + t->cap, 0, (ncap - t->cap) * sizeof(*gen));
	t->cap = ncap;
	return KVW_OK;
}

kvw_status kvw_tokens_alloc(struct kvw_tokens *t, kvw_req *r)
{
	uint32_t s, g, k;
	kvw_status st;

	for (s = 0; s < t->cap; s++) {
		k = (t->hint + s) % t->cap;
		if (!t->slot[k])
			break;
	}
	if (s < t->cap) {
		s = k;
	} else {
		s = t->cap;
		if ((st = kvw_tokens_grow(t)) != KVW_OK)
			return st;
	}
	do
		g = randombytes_uniform(0xffffu) + 1; /* 1..65535, not the slot's last */
	while (g == t->gen[s]);
	t->gen[s] = g;
	t->slot[s] = r;
	t->hint = s + 1;
	r->token = (g << KVW_TOKEN_SLOT_BITS) | (s + 1);
	return KVW_OK;
}

kvw_req *kvw_tokens_get(const struct kvw_tokens *t, uint32_t token)
{
	uint32_t s = (token & KVW_TOKEN_SLOT_MASK) - 1;

	if ((token & KVW_TOKEN_SLOT_MASK) == 0 || s >= t->cap || !t->slot[s] ||
	    t->slot[s]->token != token)
		return NULL;
	return t->slot[s];
}

void kvw_tokens_release(struct kvw_tokens *t, kvw_req *r)
{
	uint32_t s = (r->token & KVW_TOKEN_SLOT_MASK) - 1;

	if (r->token && s < t->cap && t->slot[s] == r)
		t->slot[s] = NULL;
}

void kvw_tokens_free(struct kvw_tokens *t)
{
	free(t->slot);
	free(t->gen);
	*t = (struct kvw_tokens){0};
}
