/* SPDX-License-Identifier: MIT */
/* Sequences (seq.c) as seen by the endpoint code (ep.c) and the context. */
#ifndef KVW_SEQ_H
#define KVW_SEQ_H
#include "kvw_int.h"

/* Posts fragments of active sends to the driver until it is full. */
void kvw_seq_pump(kvw_ep *ep);
/* Keepalive, peer-death and request deadlines of one endpoint. */
void kvw_ep_timers(kvw_ep *ep, uint64_t now);
/* Sequence frames (GRANT, LAYER_DONE, SEQ_DONE, ABORT, ABORT_ACK). */
kvw_status kvw_seq_on_frame(kvw_ep *ep, const struct kvw_wire_hdr *h, const void *body);
/* Fails every live request of the endpoint with st (events queued). */
void kvw_seq_fail_all(kvw_ep *ep, kvw_status st);
/* Frees the endpoint's request tables (requests not yet freed by the user
 * are orphaned: ep pointer cleared, kvw_req_free still works). */
void kvw_seq_ep_release(kvw_ep *ep);
/* ep.c */
/* Sends a control frame built from a body. */
kvw_status kvw_ep_send(kvw_ep *ep, unsigned type, const void *body, size_t len);
void kvw_ep_keepalive(kvw_ep *ep, uint64_t now);
void kvw_ctx_reap(kvw_ctx *ctx);
uint64_t kvw_ep_next_timer(const kvw_ep *ep);
#endif
