/* SPDX-License-Identifier: MIT */
/* A data flow: one direction of requests over one endpoint, send or receive role. */
#ifndef KVB_FLOW_H
#define KVB_FLOW_H

#include "geo.h"
#include "run.h"

enum kvb_arrival { KVB_ARR_SATURATE, KVB_ARR_BATCH, KVB_ARR_POISSON };

struct kvb_flow;

typedef struct kvb_slot {
	struct kvb_flow *flow;
	unsigned idx;
	bool busy;
	uint64_t k;           /* request number in this slot */
	int64_t last_k;       /* last request that landed here (recv), -1 none */
	kvw_req *req;
	uint32_t next_layer;
	uint64_t t_arrival, t_start, t_last_layer;
} kvb_slot;

typedef struct kvb_flow {
	bool is_send;
	kvw_ep *ep;
	kvw_layout *layout;
	uint8_t *base;
	uint64_t layer_stride, block_bytes;
	uint32_t n_layers, nblk, n_slots;
	const uint32_t *blocks;   /* n_slots * nblk, this side's block ids */
	uint64_t id_base, seed;
	uint64_t timeout_us;
	/* sender */
	enum kvb_arrival arrival;
	double rate;
	uint64_t layer_interval_ns;
	uint64_t next_arrival;
	uint64_t rng;
	/* both */
	uint64_t limit;           /* requests to move; UINT64_MAX = until told */
	uint64_t next_k, done, active;
	uint64_t bytes;
	uint64_t t_first, t_last;
	uint64_t layer_events;
	kvb_slot *slot;
	kvb_samples lat_us, ttll_us;
	bool failed;
	char err[200];
	uint64_t stamp_bad;
	bool corrupt_once;        /* sender: flip one payload bit of the first page */
	/* a geometry per side (NULL: pages, hashed): this side's arena, the
	 * tokens of a sequence and the heads both sides hold (sent, checked) */
	const kvb_geo *geo;
	uint64_t tokens, seq_bytes;
	uint32_t vh0, vh1;
} kvb_flow;

int kvb_flow_init(kvb_flow *f, unsigned n_slots);
void kvb_flow_fill(kvb_flow *f);              /* sender: patterns into every page */
int kvb_flow_step(kvb_flow *f, uint64_t now); /* posts what it can; -1 on failure */
void kvb_flow_event(const kvw_event *ev);     /* dispatches by user_data */
bool kvb_flow_finished(const kvb_flow *f);
void kvb_flow_cancel_rest(kvb_flow *f);       /* receiver: aborts grants past the limit */
/* receiver: full check of every slot's last landed request; false + note on mismatch */
bool kvb_flow_verify(kvb_flow *f, char *note, size_t len);
void kvb_flow_free(kvb_flow *f);
uint8_t *kvb_flow_page(const kvb_flow *f, uint32_t layer, uint32_t block);

#endif
