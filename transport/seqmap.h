/* SPDX-License-Identifier: MIT */
/* The map from sequence id to request (struct kvw_seqmap in kvw_int.h):
 * linear probing, capacity a power of two kept at most half full, deletion
 * by backward shift (no tombstones: vals[i] != NULL means live). */
#ifndef KVW_SEQMAP_H
#define KVW_SEQMAP_H
#include "kvw_int.h"

kvw_req *kvw_map_get(const struct kvw_seqmap *m, uint64_t key);
/* KVW_ERR_NOMEM when it cannot grow; the key must not be present. */
kvw_status kvw_map_put(struct kvw_seqmap *m, uint64_t key, kvw_req *r);
void kvw_map_del(struct kvw_seqmap *m, uint64_t key);
#endif
