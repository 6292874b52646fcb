/* SPDX-License-Identifier: MIT */
/* One test session: memory, layout, endpoint and flows of one side. */
#ifndef KVB_SESSION_H
#define KVB_SESSION_H

#include "flow.h"

#include <sys/resource.h>

#define KVB_BASE_CS 1ull          /* seq ids client -> server */
#define KVB_BASE_SC (1ull << 40)  /* seq ids server -> client */
#define KVB_TICK_NS 10000000ull   /* 10 ms */

typedef struct kvb_sess {
	kvb_opts o;
	bool is_client;
	kvw_ctx *ctx;
	kvw_mem *mem;
	kvw_layout *layout;
	kvw_ep *ep;
	kvb_ctl *ctl;
	/* The server's other work (its other control clients), run from
	 * kvb_sess_ctl_poll at most every KVB_TICK_NS; NULL on the client. */
	void (*tick)(void *arg);
	void *tick_arg;
	uint64_t tick_last;
	uint32_t n_layers, nblk;
	uint64_t block_bytes;
	unsigned slots;
	uint32_t send_pool, recv_pool;
	uint32_t *send_blocks, *recv_blocks;
	bool has_send, has_recv, pinned;
	kvb_flow send, recv;
	uint64_t runs_per_layer;
	bool has_geo;                 /* o.geom: this side's arena as a geometry */
	kvb_geo geo;
	uint32_t vh0, vh1;            /* heads both sides hold */
	uint64_t peer_done;           /* count from the peer's "done" (UINT64_MAX unknown) */
	bool peer_failed;
	bool done_sent;
	bool progress_shown;
	/* the server's "result" (or "error") when it came while this side still
	 * ran (the server finished first): kept for client_wait_result */
	json_t *early_result;
	/* results of this side */
	struct rusage ru0;
	uint64_t t0, t1;
	double cpu_pct;
	bool verified;
	char note[200];
	kvb_samples lat_us;
	uint64_t lat_count;
	char err[256];
} kvb_sess;

uint64_t kvb_seed_dir(const kvb_opts *o, bool client_to_server);
int kvb_sess_setup(kvb_sess *s, kvw_ctx *ctx, const kvb_opts *o, bool is_client);
void kvb_sess_flows(kvb_sess *s);     /* after the endpoint exists */
int kvb_sess_run(kvb_sess *s);        /* bw and kv */
int kvb_sess_lat(kvb_sess *s);        /* lat, both roles */
void kvb_sess_cpu_start(kvb_sess *s);
void kvb_sess_cpu_stop(kvb_sess *s);
void kvb_sess_free(kvb_sess *s);
/* Reads one control message if any (non-blocking); handles done/error.
 * Runs the tick when one is due. */
int kvb_sess_ctl_poll(kvb_sess *s, int timeout_ms);
int kvb_sess_fail(kvb_sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A context with the options' driver, rails (0 = default), secret, fault, rdma_dev/gid. */
kvw_status kvb_ctx_open(const kvb_opts *o, unsigned rails, kvw_ctx **ctx, char *err, size_t errlen);
kvw_status kvb_mem_get(kvw_ctx *ctx, size_t len, bool no_pin, kvw_mem **mem, bool *pinned);

#endif
