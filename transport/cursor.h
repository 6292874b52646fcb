/* SPDX-License-Identifier: MIT */
/* The fragment cursor of a same-shape send: which bytes go next. A request
 * sends, for each layer range its send calls asked for (r->pending, in call
 * order), every granted block of every layer; blocks contiguous on both
 * sides merge into one run, and a run is cut at max_frag. The cursor is a
 * value: the pump keeps a copy per fragment and resumes from the copy of
 * the last fragment the driver took. Geometry sends walk a plan instead
 * (geom.h). */
#ifndef KVW_CURSOR_H
#define KVW_CURSOR_H
#include "kvw_int.h"

/* struct kvw_cur: kvw_int.h (a request holds one) */

/* r->frag_end from r->blocks and the peer's grant (r->pg): frag_end[j] is
 * the end (exclusive) of the run holding list index j on both sides. */
kvw_status kvw_cur_runs(kvw_req *r);
/* The fragment at c (token, layer, list index, offset, source and
 * destination address; rail left 0), then c moves past it; false when the
 * pending ranges are exhausted (c then rests on the end). */
bool kvw_cur_next(const kvw_req *r, uint64_t max_frag, struct kvw_cur *c, kvw_frag *f);
#endif
