/* SPDX-License-Identifier: MIT */
/*
 * Coverage of a receive request: which of its granted bytes have landed.
 *
 * A sorted array of disjoint, non-touching [start, end) intervals over the
 * request's own byte space (layer * layer_bytes + block index * block_bytes
 * + offset). Adding a range returns how many of its bytes were not covered
 * before, so a duplicate or overlapping fragment is never counted twice and
 * a layer is complete only when all of its bytes are covered.
 *
 * In-order arrival (the usual case) extends the last interval: O(1). Any
 * other range is placed by binary search and merged with its neighbours;
 * the array grows by doubling only when fragments leave a new hole, up to
 * KVW_COVER_MAX intervals (1 MiB), so a peer that scatters fragments
 * cannot make it grow without limit.
 */
#ifndef KVW_COVER_H
#define KVW_COVER_H

#include "kvwire/kvwire.h"
#include <stdint.h>

/* Honest transfers leave few holes: one per rail lagging behind another,
 * at most DK_RWIN (8,192) packets out of order on dpdk. */
#define KVW_COVER_MAX 65536u

struct kvw_cover_iv {
	uint64_t start, end;
};

struct kvw_cover {
	struct kvw_cover_iv *iv;
	uint32_t n, cap;
	uint64_t covered;       /* bytes covered in all */
};

/* Empty coverage with room for cap0 (>= 1) intervals. KVW_ERR_NOMEM. */
kvw_status kvw_cover_init(struct kvw_cover *c, uint32_t cap0);
void kvw_cover_free(struct kvw_cover *c);
/* Covers [start, end) (start < end); *added = bytes of it not covered
 * before. KVW_ERR_BUSY: it would leave more than KVW_COVER_MAX separate
 * intervals; KVW_ERR_NOMEM: no memory to grow. On error nothing changed. */
kvw_status kvw_cover_add(struct kvw_cover *c, uint64_t start, uint64_t end, uint64_t *added);
#endif
