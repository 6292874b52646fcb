/* SPDX-License-Identifier: MIT */
/* Grant tokens (struct kvw_tokens in kvw_int.h). A token is
 * (random generation << 16) | (slot + 1): the slot finds the grant at once,
 * the 16 random bits make a live token unguessable from the ones seen before
 * (a forged fragment must hit 1 in 65,535), and a stale token of a reused
 * slot is refused because the slot's generation changed. */
#ifndef KVW_TOKEN_H
#define KVW_TOKEN_H
#include "kvw_int.h"

#define KVW_TOKEN_SLOT_BITS 16u
#define KVW_TOKEN_SLOT_MASK ((1u << KVW_TOKEN_SLOT_BITS) - 1)

/* Gives r a token (r->token) in a free slot; KVW_ERR_NOMEM when the table
 * cannot grow (65,534 live grants) or memory runs out (r->token untouched). */
kvw_status kvw_tokens_alloc(struct kvw_tokens *t, kvw_req *r);
/* The live request of this token, NULL for a token that is not (any more). */
kvw_req *kvw_tokens_get(const struct kvw_tokens *t, uint32_t token);
/* Frees r's slot (its token stops being live); nothing if r holds none. */
void kvw_tokens_release(struct kvw_tokens *t, kvw_req *r);
void kvw_tokens_free(struct kvw_tokens *t);
#endif
