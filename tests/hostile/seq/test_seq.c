/* SPDX-License-Identifier: MIT */
/*
 * Hostile peers against sequences (issue 10, findings 4 and 5), on tcp and
 * shm (KVW_TEST_DRIVER):
 *  - GRANTs nobody asked for are held only within max_peer_grants and
 *    max_peer_grant_bytes; the rest is refused to the peer (ABORT, BUSY)
 *    with a sentence here, and the victim's memory stays bounded;
 *  - the deadline a peer's GRANT asks for is cut to max_peer_timeout_ms;
 *  - completion counts coverage: duplicate fragments (DATA on tcp, DESC on
 *    shm) complete no layer and no sequence, overlapping ones count once.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kvwt.h"
#include "rawpeer.h"
#include "rp.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

/* ------------------------------------------------------------- helpers */
/* One honest 2-layer sequence between two fresh endpoints of ctx. */
static void honest_seq_completes(kvw_ctx *ctx)
{
	struct kvwt_pair p;
	struct kvwt_pool src, dst;
	uint32_t blk[4] = { 3, 1, 2, 0 };
	struct kvwt_rec rr, sr;
	kvw_req *rq, *sq;
	kvwt_pair_open(ctx, &p);
	kvwt_pool_make(ctx, &src, 2, 4, 4096, 4096);
	kvwt_pool_make(ctx, &dst, 2, 4, 4096, 4096);
	kvwt_pool_fill(&src, 5);
	kvwt_rec_init(&rr);
	kvwt_rec_init(&sr);
	cr_assert_eq(kvw_recv_seq(p.server, 7, dst.lay, blk, 4, 0, &rq), KVW_OK);
	kvw_req_set_user_data(rq, &rr);
	cr_assert_geq(kvw_send_seq(p.client, 7, src.lay, blk, 4, 0, 2, KVW_SEND_LAST, &sq), 0);
	kvw_req_set_user_data(sq, &sr);
	struct kvwt_rec *both[] = { &rr, &sr, NULL };
	cr_assert(kvwt_drive1(ctx, 10000, kvwt_recs_done, both),
		  "an honest sequence on another endpoint did not finish within 10 s");
	cr_assert_eq(rr.status, KVW_OK, "honest receiver: %s", kvw_strerror(rr.status));
	cr_assert_eq(sr.status, KVW_OK, "honest sender: %s", kvw_strerror(sr.status));
	for (uint32_t l = 0; l < 2; l++)
		for (uint32_t i = 0; i < 4; i++)
			cr_assert_eq(memcmp(kvwt_page(&src, l, blk[i]), kvwt_page(&dst, l, blk[i]), 4096), 0);
	cr_assert_eq(kvw_req_free(rq), KVW_OK);
	cr_assert_eq(kvw_req_free(sq), KVW_OK);
	kvwt_pool_free(&src);
	kvwt_pool_free(&dst);
	kvw_ep_close(p.client);
	kvw_ep_close(p.server);
}

struct want { uint32_t busy, timedout; };

static bool aborts_seen(struct rp *p, void *arg)
{
	const struct want *w = arg;
	return p->n_abort_busy >= w->busy && p->n_abort_timedout >= w->timedout;
}

static bool rec_done(struct rp *p, void *arg)
{
	(void)p;
	return ((struct kvwt_rec *)arg)->status != KVW_INPROGRESS;
}

/* ------------------------------------------------------- finding 4 */
#define BIG_L 1024u              /* the largest GRANT the wire allows */
#define BIG_N 262144u
#define FLOOD 200u
#define HUGE_TIMEOUT_US 10000000000000ull /* 10^13 us: 115 days */

/* 200 GRANTs of 1,024 layers x 262,144 blocks (1 MiB of body each, 200 MiB
 * in all) against max_peer_grant_bytes = 16 MiB: 15 are held, 185 are
 * refused with BUSY; the victim's resident set grows by at most the cap
 * plus 24 MiB (receive buffers); an honest sequence still completes. */
Test(hostile_seq, grant_flood_bytes_capped, .timeout = 120)
{
	static const char *const cfg[] = { "max_peer_grant_bytes", "16777216", NULL };
	static struct rp p;
	rp_open(&p, cfg);
	uint64_t len = kvw_wire_grant_len(BIG_L, BIG_N);
	uint32_t held = (uint32_t)(16 * MiB / len);
	rp_grant(&p, 1, 1, BIG_L, BIG_N, 4096, HUGE_TIMEOUT_US); /* warms the receive buffer */
	rp_drive(&p, 50, NULL, NULL);
	kvw_counters c0 = {.size = sizeof(c0)}, c = {.size = sizeof(c)};
	cr_assert_eq(kvw_ep_counters(p.ep, &c0), KVW_OK);
	long base = rp_rss_mark();
	for (uint32_t s = 2; s <= FLOOD; s++)
		rp_grant(&p, s, s, BIG_L, BIG_N, 4096, HUGE_TIMEOUT_US);
	struct want w = { .busy = FLOOD - held };
	bool ok = rp_drive(&p, 10000, aborts_seen, &w);
	long grew = rp_rss_peak_kib() - base;
	cr_log_info("grant flood: %u GRANTs of %llu bytes, peak RSS grew %ld KiB, %u refused",
		    FLOOD, (unsigned long long)len, grew, p.n_abort_busy);
	cr_assert_leq(grew, (long)((16 + 24) * MiB / KiB), "victim's peak RSS grew %ld KiB under "
		      "the flood (bound: 16 MiB cap + 24 MiB)", grew);
	cr_assert(ok, "%u of %u excess GRANTs refused: %s", p.n_abort_busy, FLOOD - held,
		  kvw_ctx_last_error(p.ctx));
	for (uint32_t s = 1; s <= FLOOD; s++)
		cr_assert_eq(p.abort_status[s], s <= held ? 0 : KVW_ERR_BUSY, "seq %u", s);
	cr_assert(strstr(kvw_ctx_last_error(p.ctx), "max_peer_grant_bytes"), "no reason given: %s",
		  kvw_ctx_last_error(p.ctx));
	cr_assert_eq(kvw_ep_counters(p.ep, &c), KVW_OK);
	cr_assert_eq(c.rejected - c0.rejected, FLOOD - held, "%llu refusals counted, %u made",
		     (unsigned long long)(c.rejected - c0.rejected), FLOOD - held);
	/* small grants still fit under the byte cap */
	rp_grant(&p, FLOOD + 1, FLOOD + 1, 1, 1, 4096, 0);
	rp_drive(&p, 200, NULL, NULL);
	cr_assert_eq(p.abort_status[FLOOD + 1], 0, "a small GRANT was refused under the byte cap");
	cr_assert_eq(kvw_ep_status(p.ep), KVW_OK, "the flood cost the endpoint: %s",
		     kvw_ctx_last_error(p.ctx));
	honest_seq_completes(p.ctx);
	rp_close(&p);
}

/* 1,000 small GRANTs against max_peer_grants = 64: 936 refused with BUSY;
 * once the peer takes one of its grants back there is room for one more. */
Test(hostile_seq, grant_flood_count_capped, .timeout = 120)
{
	static const char *const cfg[] = { "max_peer_grants", "64", NULL };
	static struct rp p;
	rp_open(&p, cfg);
	for (uint32_t s = 1; s <= 1000; s++)
		rp_grant(&p, s, s, 2, 4, 4096, HUGE_TIMEOUT_US);
	struct want w = { .busy = 1000 - 64 };
	cr_assert(rp_drive(&p, 20000, aborts_seen, &w), "%u of 936 excess GRANTs refused",
		  p.n_abort_busy);
	for (uint32_t s = 1; s <= 1000; s++)
		cr_assert_eq(p.abort_status[s], s <= 64 ? 0 : KVW_ERR_BUSY, "seq %u", s);
	cr_assert(strstr(kvw_ctx_last_error(p.ctx), "max_peer_grants"), "no reason given: %s",
		  kvw_ctx_last_error(p.ctx));
	/* the grantor withdraws grant 1: one slot frees, the next GRANT fits */
	struct kvw_wire_abort a = { .seq_id = 1, .token = 1, .status = KVW_ERR_ABORTED };
	rp_frame(&p, KVW_T_ABORT, &a, sizeof(a));
	rp_grant(&p, 2000, 2000, 1, 1, 4096, 0);
	rp_grant(&p, 2001, 2001, 1, 1, 4096, 0);
	w.busy++;
	cr_assert(rp_drive(&p, 5000, aborts_seen, &w));
	rp_drive(&p, 100, NULL, NULL);
	cr_assert_eq(p.abort_status[2000], 0, "a GRANT was refused although a slot had freed");
	cr_assert_eq(p.abort_status[2001], KVW_ERR_BUSY);
	cr_assert_eq(kvw_ep_status(p.ep), KVW_OK);
	honest_seq_completes(p.ctx);
	rp_close(&p);
}

/* A GRANT asking for 10^13 us waits at most max_peer_timeout_ms (300 ms
 * here), whether it waits for kvw_send_seq (seq 1) or a send took it up
 * (seq 2): both end TIMEDOUT, told to the peer. */
Test(hostile_seq, peer_timeout_cut, .timeout = 60)
{
	static const char *const cfg[] = { "max_peer_timeout_ms", "300", NULL };
	static struct rp p;
	struct kvwt_pool src;
	struct kvwt_rec sr;
	uint32_t blk = 0;
	kvw_req *sq;
	rp_open(&p, cfg);
	kvwt_pool_make(p.ctx, &src, 1, 1, 4096, 4096);
	kvwt_rec_init(&sr);
	uint64_t t0 = kvwt_now_ms();
	rp_grant(&p, 1, 11, 1, 1, 4096, HUGE_TIMEOUT_US);
	rp_grant(&p, 2, 12, 1, 1, 4096, HUGE_TIMEOUT_US);
	rp_drive(&p, 20, NULL, NULL);
	cr_assert_geq(kvw_send_seq(p.ep, 2, src.lay, &blk, 1, 0, 1, KVW_SEND_LAST, &sq), 0);
	kvw_req_set_user_data(sq, &sr);
	struct want w = { .timedout = 2 };
	bool ok = rp_drive(&p, 3000, aborts_seen, &w) && rp_drive(&p, 1000, rec_done, &sr);
	uint64_t dt = kvwt_now_ms() - t0;
	cr_assert(ok, "a GRANT asking for 10^13 us still waits after %llu ms (max_peer_timeout_ms "
		  "300)", (unsigned long long)dt);
	cr_assert_eq(p.abort_status[1], KVW_ERR_TIMEDOUT);
	cr_assert_eq(p.abort_status[2], KVW_ERR_TIMEDOUT);
	cr_assert_eq(sr.status, KVW_ERR_TIMEDOUT, "%s", kvw_strerror(sr.status));
	cr_assert_geq(sr.t_done_ms - t0, 250, "timed out after only %llu ms",
		      (unsigned long long)(sr.t_done_ms - t0));
	cr_assert_eq(kvw_req_free(sq), KVW_OK);
	kvwt_pool_free(&src);
	rp_close(&p);
}

/* ------------------------------------------------------- finding 5 */
/* The receiver's grant: 2 layers x 4 blocks {5, 6, 9, 0} of 8 KiB, with
 * 4 KiB canary gaps (no two blocks form a run). */
struct dupx {
	struct rp p;
	struct kvwt_pool dst;
	uint32_t blk[4];
	kvw_req *rq;
	struct kvwt_rec rr;
	uint32_t token;
	uint8_t *snap;
	size_t len;
};

static void dupx_open(struct dupx *x, uint32_t n_blocks_pool, uint64_t stride, const uint32_t *blk,
		      uint64_t timeout_us)
{
	static uint8_t body[KVW_WIRE_MAX_CTRL];
	struct kvw_wire_hdr h;
	rp_open(&x->p, NULL);
	kvwt_pool_make(x->p.ctx, &x->dst, 2, n_blocks_pool, 8192, stride);
	kvwt_pool_fill(&x->dst, 71);
	memcpy(x->blk, blk, sizeof(x->blk));
	kvwt_rec_init(&x->rr);
	cr_assert_eq(kvw_recv_seq(x->p.ep, 4242, x->dst.lay, x->blk, 4, timeout_us, &x->rq), KVW_OK);
	kvw_req_set_user_data(x->rq, &x->rr);
	do { /* the raw peer reads its GRANT itself (rp_drain would swallow it) */
		cr_assert_eq(rawp_recv(x->p.fd, x->p.ctx, 5000, &h, body, sizeof(body)), 1);
	} while (h.type != KVW_T_GRANT);
	struct kvw_wire_grant g;
	memcpy(&g, body, sizeof(g));
	x->token = g.token;
	x->len = x->dst.layer_stride * 2;
	x->snap = malloc(x->len);
	memcpy(x->snap, x->dst.base, x->len);
}

static void dupx_close(struct dupx *x)
{
	cr_assert_eq(kvw_req_free(x->rq), KVW_OK);
	kvwt_pool_free(&x->dst);
	free(x->snap);
	rp_close(&x->p);
}

/* Four copies of (layer L, block 0) in every layer: 32 KiB a layer, the
 * layer's byte count, yet 3 of its 4 pages never written. No LAYER, no
 * SEQ OK; the request times out; the unwritten pages are as they were. */
Test(hostile_seq, duplicates_in_every_layer_never_complete, .timeout = 60)
{
	static struct dupx x;
	static uint8_t pay[8192];
	uint32_t blk[4] = { 5, 6, 9, 0 };
	dupx_open(&x, 16, 12288, blk, 1000000);
	memset(pay, 0xee, sizeof(pay));
	for (uint32_t l = 0; l < 2; l++)
		for (int c = 0; c < 4; c++)
			rp_frag(&x.p, x.token, l, 0, 0, pay, sizeof(pay));
	rp_drive(&x.p, 300, NULL, NULL);
	cr_assert_eq(x.rr.layer_events, 0, "a LAYER completed from duplicates alone");
	cr_assert_eq(x.rr.status, KVW_INPROGRESS, "the sequence ended %s from duplicates alone",
		     kvw_strerror(x.rr.status));
	cr_assert_eq(x.p.n_layer_done + x.p.n_seq_done, 0, "the peer was told a layer landed");
	cr_assert(rp_drive(&x.p, 5000, rec_done, &x.rr));
	cr_assert_eq(x.rr.status, KVW_ERR_TIMEDOUT, "%s", kvw_strerror(x.rr.status));
	cr_assert_eq(x.rr.layer_events, 0);
	kvw_req_info info = {.size = sizeof(info)};
	cr_assert_eq(kvw_req_query(x.rq, &info), KVW_OK);
	cr_assert_eq(info.bytes, 2 * 8192, "bytes landed counted %llu, 16 KiB were distinct",
		     (unsigned long long)info.bytes);
	for (uint32_t l = 0; l < 2; l++) {
		cr_assert_eq(memcmp(kvwt_page(&x.dst, l, 5), pay, 8192), 0);
		memcpy(x.snap + (kvwt_page(&x.dst, l, 5) - x.dst.base), pay, 8192);
	}
	cr_assert_eq(memcmp(x.snap, x.dst.base, x.len), 0, "a page the peer never sent changed");
	kvw_counters c = {.size = sizeof(c)};
	cr_assert_eq(kvw_ep_counters(x.p.ep, &c), KVW_OK);
	cr_assert_geq(c.dups, 6, "%llu duplicate fragments counted, 6 sent",
		      (unsigned long long)c.dups);
	dupx_close(&x);
}

/* Payload byte at position q of layer l's granted range. */
static uint8_t pat(uint32_t l, uint64_t q)
{
	return (uint8_t)((q * 131 + l * 7 + 1) % 251);
}

static void frag_pat(struct dupx *x, uint32_t l, uint32_t idx, uint64_t off, uint32_t bytes)
{
	static uint8_t pay[65536];
	for (uint32_t i = 0; i < bytes; i++)
		pay[i] = pat(l, (uint64_t)idx * 8192 + off + i);
	rp_frag(&x->p, x->token, l, idx, off, pay, bytes);
}

static bool layer0_seen(struct rp *p, void *arg)
{
	(void)p;
	return ((struct kvwt_rec *)arg)->layer_seen[0] > 0;
}

/* Overlapping, out-of-order and late fragments: every granted byte counts
 * once, a layer completes when its last hole fills (not before), a copy
 * into a finished layer writes nothing, and the sequence ends OK with
 * exactly the granted byte count. Grant {2, 3, 4, 7}: runs [2..4] and [7]. */
Test(hostile_seq, overlaps_count_once, .timeout = 60)
{
	static struct dupx x;
	static uint8_t other[8192];
	uint32_t blk[4] = { 2, 3, 4, 7 };
	dupx_open(&x, 16, 8192, blk, 10000000);
	frag_pat(&x, 0, 0, 0, 16384);      /* [0, 16K) */
	frag_pat(&x, 0, 0, 4096, 8192);    /* [4K, 12K): all seen */
	frag_pat(&x, 0, 1, 4096, 12288);   /* [12K, 24K): half seen */
	rp_drive(&x.p, 200, NULL, NULL);
	cr_assert_eq(x.rr.status, KVW_INPROGRESS, "%s: %s", kvw_strerror(x.rr.status),
		     kvw_ctx_last_error(x.p.ctx));
	cr_assert_eq(x.rr.layer_events, 0, "layer 0 completed with 8 of its 32 KiB missing");
	frag_pat(&x, 0, 3, 0, 8192);       /* [24K, 32K): layer 0 whole */
	cr_assert(rp_drive(&x.p, 5000, layer0_seen, &x.rr), "layer 0 never completed: %s",
		  kvw_ctx_last_error(x.p.ctx));
	memset(other, 0x11, sizeof(other));
	rp_frag(&x.p, x.token, 0, 2, 0, other, sizeof(other)); /* late copy: dropped */
	frag_pat(&x, 1, 3, 0, 8192);
	frag_pat(&x, 1, 2, 0, 8192);
	frag_pat(&x, 1, 1, 0, 8192);
	frag_pat(&x, 1, 2, 0, 8192);       /* duplicate */
	frag_pat(&x, 1, 0, 0, 4096);
	frag_pat(&x, 1, 0, 2048, 6144);    /* overlaps, fills the last hole */
	cr_assert(rp_drive(&x.p, 5000, rec_done, &x.rr));
	cr_assert_eq(x.rr.status, KVW_OK, "%s: %s", kvw_strerror(x.rr.status),
		     kvw_ctx_last_error(x.p.ctx));
	cr_assert_eq(x.rr.seq_bytes, 2 * 4 * 8192);
	cr_assert(x.rr.layer_seen[0] == 1 && x.rr.layer_seen[1] == 1, "layers reported %u, %u times",
		  x.rr.layer_seen[0], x.rr.layer_seen[1]);
	for (uint32_t l = 0; l < 2; l++)
		for (uint32_t i = 0; i < 4; i++) {
			uint8_t *pg = kvwt_page(&x.dst, l, blk[i]);
			for (uint32_t b = 0; b < 8192; b++)
				cr_assert_eq(pg[b], pat(l, (uint64_t)i * 8192 + b), "layer %u block %u "
					     "byte %u", l, blk[i], b);
			memcpy(x.snap + (pg - x.dst.base), pg, 8192);
		}
	cr_assert_eq(memcmp(x.snap, x.dst.base, x.len), 0, "a block outside the grant changed");
	kvw_counters c = {.size = sizeof(c)};
	cr_assert_eq(kvw_ep_counters(x.p.ep, &c), KVW_OK);
	cr_assert_eq(c.dups, 5, "%llu fragments counted as duplicates, 5 were",
		     (unsigned long long)c.dups);
	dupx_close(&x);
}
