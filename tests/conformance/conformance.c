/* SPDX-License-Identifier: MIT */
/*
 * The conformance suite: written once, run once per driver. The driver
 * comes from KVW_TEST_DRIVER (tcp, shm; rdma and dpdk with
 * KVW_TEST_LISTEN_URI). Every case moves real bytes through a real
 * listener and checks every byte that landed -- and every byte that must
 * not have.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvwt.h"
#include "rawpeer.h"

#define KiB 1024ull
#define MiB (1024ull * 1024ull)

/* ------------------------------------------------------------ one sequence */
struct xseq {
	struct kvwt_pool *src, *dst;
	uint32_t *sblk, *dblk;
	uint32_t n;
	uint64_t seq_id;
	kvw_req *sreq, *rreq;
	struct kvwt_rec srec, rrec;
};

static void xseq_init(struct xseq *x, struct kvwt_pool *src, struct kvwt_pool *dst,
		      uint32_t *sblk, uint32_t *dblk, uint32_t n, uint64_t seq_id)
{
	memset(x, 0, sizeof(*x));
	x->src = src;
	x->dst = dst;
	x->sblk = sblk;
	x->dblk = dblk;
	x->n = n;
	x->seq_id = seq_id;
	kvwt_rec_init(&x->srec);
	kvwt_rec_init(&x->rrec);
}

static void xseq_grant(struct xseq *x, kvw_ep *ep, uint64_t timeout_us)
{
	kvw_status st = kvw_recv_seq(ep, x->seq_id, x->dst->lay, x->dblk, x->n, timeout_us, &x->rreq);
	cr_assert_eq(st, KVW_OK, "kvw_recv_seq(seq %llu): %s", (unsigned long long)x->seq_id,
		     kvw_strerror(st));
	kvw_req_set_user_data(x->rreq, &x->rrec);
}

static kvw_status xseq_send(struct xseq *x, kvw_ep *ep, uint32_t first, uint32_t end,
			    unsigned flags)
{
	kvw_req *r = NULL;
	kvw_status st = kvw_send_seq(ep, x->seq_id, x->src->lay, x->sblk, x->n, first, end, flags, &r);
	if (st < 0)
		return st;
	if (!x->sreq) {
		x->sreq = r;
		kvw_req_set_user_data(r, &x->srec);
	} else {
		cr_assert_eq(r, x->sreq, "a later kvw_send_seq call returned another request");
	}
	return st;
}

static uint64_t xseq_bytes(const struct xseq *x)
{
	return (uint64_t)x->src->n_layers * x->n * x->src->bb;
}

/* Every granted page holds its source page; each layer reported once. */
static void xseq_verify(const struct xseq *x)
{
	cr_assert_eq(x->rrec.status, KVW_OK, "receiver seq %llu: %s", (unsigned long long)x->seq_id,
		     kvw_strerror(x->rrec.status));
	cr_assert_eq(x->srec.status, KVW_OK, "sender seq %llu: %s", (unsigned long long)x->seq_id,
		     kvw_strerror(x->srec.status));
	cr_assert_eq(x->rrec.seq_events, 1);
	cr_assert_eq(x->srec.seq_events, 1);
	cr_assert_eq(x->rrec.seq_bytes, xseq_bytes(x));
	for (uint32_t l = 0; l < x->dst->n_layers; l++) {
		cr_assert_eq(x->rrec.layer_seen[l], 1, "receiver: layer %u reported %u times", l,
			     x->rrec.layer_seen[l]);
		cr_assert_eq(x->srec.layer_seen[l], 1, "sender: layer %u reported %u times", l,
			     x->srec.layer_seen[l]);
		for (uint32_t i = 0; i < x->n; i++)
			cr_assert_eq(memcmp(kvwt_page(x->dst, l, x->dblk[i]),
					    kvwt_page(x->src, l, x->sblk[i]), x->src->bb), 0,
				     "seq %llu layer %u block %u (dst %u) differs",
				     (unsigned long long)x->seq_id, l, i, x->dblk[i]);
	}
}

static void xseq_free(struct xseq *x)
{
	if (x->sreq)
		cr_assert_eq(kvw_req_free(x->sreq), KVW_OK);
	if (x->rreq)
		cr_assert_eq(kvw_req_free(x->rreq), KVW_OK);
	x->sreq = x->rreq = NULL;
}

static bool xseq_done(void *arg)
{
	struct xseq *x = arg;
	return x->srec.status != KVW_INPROGRESS && x->rrec.status != KVW_INPROGRESS;
}

static bool rrec_done(void *arg)
{
	return ((struct xseq *)arg)->rrec.status != KVW_INPROGRESS;
}

static bool srec_done(void *arg)
{
	return ((struct xseq *)arg)->srec.status != KVW_INPROGRESS;
}

static bool srec_confirmed(void *arg)
{
	struct xseq *x = arg;
	return x->srec.layer_events > 0 || x->srec.status != KVW_INPROGRESS;
}

static uint64_t req_bytes(kvw_req *r)
{
	kvw_req_info in = {.size = sizeof(in)};
	cr_assert_eq(kvw_req_query(r, &in), KVW_OK);
	return in.bytes;
}

static bool rreq_started(void *arg)
{
	struct xseq *x = arg;
	return req_bytes(x->rreq) > 0 || x->rrec.status != KVW_INPROGRESS;
}

/* Ungranted pages of dst still hold the fill of tag. */
static void check_untouched(const struct kvwt_pool *dst, const uint32_t *granted, uint32_t n,
			    uint64_t tag)
{
	uint8_t *mark = calloc(dst->n_blocks, 1);
	for (uint32_t i = 0; i < n; i++)
		mark[granted[i]] = 1;
	for (uint32_t l = 0; l < dst->n_layers; l++)
		for (uint32_t b = 0; b < dst->n_blocks; b++)
			if (!mark[b])
				cr_assert(kvwt_check(kvwt_page(dst, l, b), dst->bb, kvwt_seed(tag, l, b)),
					  "ungranted page (%u, %u) was written", l, b);
	free(mark);
}

static void seq_ident(uint32_t *b, uint32_t n, uint32_t first)
{
	for (uint32_t i = 0; i < n; i++)
		b[i] = first + i;
}

static void honest_peer_still_served(kvw_ctx *c, kvw_listener *l);
static void after_abort_still_works(void);

/* ------------------------------------------------------------- fixture */
static kvw_ctx *ctx;
static struct kvwt_pair pr;

static void setup_pair(void)
{
	ctx = kvwt_ctx(NULL);
	kvwt_pair_open(ctx, &pr);
}

static void teardown_pair(void)
{
	/* resources are reclaimed by process exit; closing is exercised below */
}

TestSuite(conf, .init = setup_pair, .fini = teardown_pair, .timeout = 60);
TestSuite(conf_raw, .timeout = 60);
/* The forked cases on ofi: a child forked from a test process that already
 * ran libfabric (its providers' threads) failed now and then -- a crash at
 * the start of sender_killed_mid_transfer on tcp;ofi_rxm, KVW_ERR_IO on the
 * first recv on shm -- not explained yet (docs/drivers/ofi.md): skipped
 * there until it is, so peer death on ofi is covered by conf's cases only. */
static void proc_init(void)
{
	if (!strcmp(kvwt_driver()->name, "loop"))
		cr_skip_test("loop: a forked peer is another process, and a loop:// listener is "
			     "reachable only from its own process (peer death on loop is covered by "
			     "conf's cases)");
	if (!strcmp(kvwt_driver()->name, "ofi"))
		cr_skip_test("ofi: forked peers after libfabric started are not reliable yet "
			     "(docs/drivers/ofi.md, open items)");
}

TestSuite(conf_proc, .init = proc_init, .timeout = 60);

/* ----------------------------------------------------------- integrity */
/* Llama-3-8B, 4,096 tokens in 16-token blocks: 32 layers x 256 blocks x
 * 64 KiB = 512 MiB, into scattered blocks of a bigger decode pool, sent
 * layer by layer as prefill would. (ASan builds move 4 layers.) */
Test(conf, llama3_8b_4k_tokens_integrity, .timeout = 240)
{
	const uint32_t layers = KVWT_ASAN ? 4 : 32, nblk = 256, dpool = 320;
	const uint64_t bb = 64 * KiB;
	static struct kvwt_pool src, dst;
	static uint32_t sblk[256], dblk[256];
	struct xseq x;
	kvwt_pool_make(ctx, &src, layers, nblk, bb, bb);
	kvwt_pool_make(ctx, &dst, layers, dpool, bb, bb);
	kvwt_pool_fill(&src, 1);
	kvwt_pool_fill(&dst, 2);
	seq_ident(sblk, nblk, 0);
	kvwt_pick_blocks(dblk, nblk, dpool, 99);
	cr_assert_eq(kvw_layout_runs(src.lay, sblk, nblk), 1);
	xseq_init(&x, &src, &dst, sblk, dblk, nblk, 4096);
	xseq_grant(&x, pr.server, 120000000ull);
	for (uint32_t l = 0; l < layers; l++) {
		kvw_status st = xseq_send(&x, pr.client, l, l + 1, l + 1 == layers ? KVW_SEND_LAST : 0);
		cr_assert_eq(st >= 0, true, "send layer %u: %s", l, kvw_strerror(st));
		/* the sender's deadline as long as its grant's: 512 MiB over two
		 * rails of a loaded TCG VM came near the default 30 s */
		if (l == 0)
			cr_assert_eq(kvw_req_set_timeout(x.sreq, 120000000ull), KVW_OK);
		kvwt_spin(&ctx, 1, 0);
	}
	cr_assert(kvwt_drive1(ctx, 200000, xseq_done, &x), "512 MiB did not finish in 200 s");
	xseq_verify(&x);
	check_untouched(&dst, dblk, nblk, 2);
	cr_assert_eq(x.srec.layer_bytes, xseq_bytes(&x));
	cr_assert_eq(x.rrec.layer_bytes, xseq_bytes(&x));
	kvw_req_info ri = {.size = sizeof(ri)}, si = {.size = sizeof(si)};
	cr_assert_eq(kvw_req_query(x.rreq, &ri), KVW_OK);
	cr_assert_eq(kvw_req_query(x.sreq, &si), KVW_OK);
	cr_assert_eq(ri.seq_id, 4096);
	cr_assert_eq(ri.is_send, 0);
	cr_assert_eq(si.is_send, 1);
	cr_assert_eq(ri.status, KVW_OK);
	cr_assert_eq(ri.bytes, xseq_bytes(&x));
	cr_assert_eq(ri.bytes_total, xseq_bytes(&x));
	cr_assert_eq(si.bytes, xseq_bytes(&x));
	cr_assert_eq(ri.n_layers, layers);
	cr_assert_eq(ri.layers_done, layers);
	cr_assert_eq(si.layers_done, layers);
	cr_assert(ri.t_posted && ri.t_first_byte && ri.t_last_byte && ri.t_completed);
	cr_assert(ri.t_posted <= ri.t_first_byte && ri.t_first_byte <= ri.t_last_byte &&
		  ri.t_last_byte <= ri.t_completed, "receiver timeline out of order");
	cr_assert(si.t_posted && si.t_completed && si.t_posted <= si.t_completed);
	kvw_counters c = {.size = sizeof(c)};
	cr_assert_eq(kvw_ep_counters(pr.server, &c), KVW_OK);
	cr_assert_geq(c.bytes_rx, xseq_bytes(&x));
	cr_assert_eq(c.rejected, 0);
	cr_assert_geq(c.seqs_ok, 1);
	xseq_free(&x);
	kvwt_pool_free(&src);
	kvwt_pool_free(&dst);
}

/* A small model shape for the other cases: 8 layers x 32 blocks x 16 KiB. */
#define SL 8u
#define SN 32u
#define SB (16 * KiB)

struct small {
	struct kvwt_pool src, dst;
	uint32_t sblk[SN], dblk[SN];
	struct xseq x;
};

static void small_make(struct small *s, uint64_t seq_id)
{
	kvwt_pool_make(ctx, &s->src, SL, SN * 2, SB, SB);
	kvwt_pool_make(ctx, &s->dst, SL, SN * 3, SB, SB + 512); /* gaps = canaries */
	kvwt_pool_fill(&s->src, 11);
	kvwt_pool_fill(&s->dst, 12);
	kvwt_pick_blocks(s->sblk, SN, SN * 2, seq_id + 1);
	kvwt_pick_blocks(s->dblk, SN, SN * 3, seq_id + 2);
	xseq_init(&s->x, &s->src, &s->dst, s->sblk, s->dblk, SN, seq_id);
}

Test(conf, layers_out_of_order)
{
	static struct small s;
	small_make(&s, 17);
	xseq_grant(&s.x, pr.server, 0);
	/* single layers and chunks, in no particular order; LAST on the final call */
	static const uint32_t calls[][2] = { { 5, 6 }, { 2, 4 }, { 7, 8 }, { 0, 1 }, { 6, 7 },
					     { 4, 5 }, { 1, 2 } };
	for (size_t i = 0; i < 7; i++) {
		kvw_status st = xseq_send(&s.x, pr.client, calls[i][0], calls[i][1],
					  i == 6 ? KVW_SEND_LAST : 0);
		cr_assert_geq(st, 0, "send [%u,%u): %s", calls[i][0], calls[i][1], kvw_strerror(st));
		kvwt_spin(&ctx, 1, 2);
	}
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &s.x));
	xseq_verify(&s.x);
	check_untouched(&s.dst, s.dblk, SN, 12);
	xseq_free(&s.x);
}

/* Everything `from` sent before returns has been handled by its peer: a
 * PING travels the control path behind it, in order, and its PONG comes
 * back (a fixed spin was not enough under 5 % loss: a segment retransmitted
 * after 200 ms arrived after it). */
static void ctrl_barrier(kvw_ep *from)
{
	uint64_t rtt;
	kvw_status st = kvw_ep_ping(from, 10000, &rtt);
	cr_assert_eq(st, KVW_OK, "control-path barrier: %s: %s", kvw_strerror(st),
		     kvw_ctx_last_error(ctx));
	kvwt_spin(&ctx, 1, 1); /* the events the ping's progress queued */
}

Test(conf, grant_before_send)
{
	static struct small s;
	small_make(&s, 21);
	xseq_grant(&s.x, pr.server, 0);
	ctrl_barrier(pr.server); /* the grant reaches the sender first */
	cr_assert_eq(kvw_req_status(s.x.rreq), KVW_INPROGRESS);
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST), 0);
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &s.x));
	xseq_verify(&s.x);
	check_untouched(&s.dst, s.dblk, SN, 12);
	xseq_free(&s.x);
}

/* The receiver takes its grant back before the sender's kvw_send_seq: the
 * send fails at once (it used to wait for a GRANT until its deadline), and
 * a new grant of the same sequence is honoured. */
Test(conf, grant_aborted_before_send_fails_the_send, .timeout = 30)
{
	static struct small s;
	small_make(&s, 25);
	xseq_grant(&s.x, pr.server, 0);
	ctrl_barrier(pr.server); /* the grant reaches the sender */
	cr_assert_eq(kvw_req_abort(s.x.rreq), KVW_OK);
	ctrl_barrier(pr.server); /* and so does its end */
	cr_assert(kvwt_drive1(ctx, 5000, rrec_done, &s.x), "the aborted grant did not end");
	uint64_t t0 = kvwt_now_ms();
	kvw_status st = xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST);
	cr_assert_eq(st, KVW_ERR_ABORTED, "send after the grant ended: %s", kvw_strerror(st));
	cr_assert_lt(kvwt_now_ms() - t0, kvwt_slack_ms(1000), "the send waited for the ended grant");
	cr_assert_not_null(strstr(kvw_ctx_last_error(ctx), "grant ended"), "%s", kvw_ctx_last_error(ctx));
	check_untouched(&s.dst, NULL, 0, 12);
	cr_assert_eq(kvw_req_free(s.x.rreq), KVW_OK);
	s.x.rreq = NULL;
	kvwt_rec_init(&s.x.rrec);
	xseq_grant(&s.x, pr.server, 0);
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST), 0);
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &s.x));
	xseq_verify(&s.x);
	check_untouched(&s.dst, s.dblk, SN, 12);
	xseq_free(&s.x);
}

Test(conf, send_before_grant)
{
	static struct small s;
	small_make(&s, 22);
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL / 2, 0), 0);
	cr_assert_geq(xseq_send(&s.x, pr.client, SL / 2, SL, KVW_SEND_LAST), 0);
	kvwt_spin(&ctx, 1, 100);
	/* nothing may move without a grant */
	cr_assert_eq(kvw_req_status(s.x.sreq), KVW_INPROGRESS);
	cr_assert_eq(s.x.srec.layer_events, 0);
	check_untouched(&s.dst, NULL, 0, 12);
	xseq_grant(&s.x, pr.server, 0);
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &s.x));
	xseq_verify(&s.x);
	check_untouched(&s.dst, s.dblk, SN, 12);
	xseq_free(&s.x);
}

/* kvw_ep_query says what an endpoint holds (as kvwire stat's "resources"):
 * the driver's share is there on every driver that has one -- a socket per
 * rail on the stream drivers, a QP per rail on rdma, an RDM endpoint on ofi,
 * the reliability rings of a dpdk flow (no fd, no QP). */
static void check_resources(kvw_ep *ep, const char *side)
{
	const char *d = kvwt_driver()->name;
	kvw_ep_info in = {.size = sizeof(in)};
	cr_assert_eq(kvw_ep_query(ep, &in), KVW_OK);
	cr_log_info("%s %s: %u rails, %u fds, %u qps, %llu bytes", d, side, in.rails, in.res_fds,
		    in.res_qps, (unsigned long long)in.res_bytes);
	cr_assert_gt(in.res_bytes, 1024, "%s: %llu bytes is not even the core's tables", side,
		     (unsigned long long)in.res_bytes);
	if (!strcmp(d, "tcp") || !strcmp(d, "shm"))
		cr_assert(in.res_fds >= in.rails && in.res_qps == 0 && in.res_bytes > 8192,
			  "%s: %u fds, %u qps, %llu bytes on %u rails", side, in.res_fds, in.res_qps,
			  (unsigned long long)in.res_bytes, in.rails);
	else if (!strcmp(d, "rdma"))
		cr_assert(in.res_qps == in.rails, "%s: %u QPs on %u rails", side, in.res_qps, in.rails);
	else if (!strcmp(d, "ofi"))
		cr_assert(in.res_qps == 1 && in.res_fds >= 1, "%s: %u RDM endpoints (one, made at "
			  "the first transfer), %u fds", side,
			  in.res_qps, in.res_fds);
	else if (!strcmp(d, "dpdk"))
		cr_assert(in.res_fds == 0 && in.res_qps == 0 && in.res_bytes > (512u << 10),
			  "%s: %u fds, %u qps, %llu bytes (a flow's send ring alone is more)", side,
			  in.res_fds, in.res_qps, (unsigned long long)in.res_bytes);
}

Test(conf, endpoint_reports_its_resources)
{
	static struct small s; /* ofi opens its RDM endpoint at the first transfer */
	small_make(&s, 29);
	xseq_grant(&s.x, pr.server, 0);
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST), 0);
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &s.x));
	xseq_verify(&s.x);
	xseq_free(&s.x);
	check_resources(pr.client, "client");
	check_resources(pr.server, "server");
}

Test(conf, seq_id_in_use_is_busy)
{
	static struct small s;
	small_make(&s, 23);
	xseq_grant(&s.x, pr.server, 0);
	kvw_req *r2 = NULL;
	cr_assert_eq(kvw_recv_seq(pr.server, 23, s.dst.lay, s.dblk, SN, 0, &r2), KVW_ERR_BUSY);
	cr_assert_null(r2);
	cr_assert_eq(kvw_req_free(s.x.rreq), KVW_ERR_BUSY, "a running request was freed");
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST), 0);
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &s.x));
	xseq_verify(&s.x);
	xseq_free(&s.x);
}

/* A send that does not match its grant (block count, block size) is
 * REJECTED on the sender and fails on the receiver; nothing lands. */
Test(conf, send_not_matching_grant_rejected)
{
	static struct small s;
	small_make(&s, 24);
	xseq_grant(&s.x, pr.server, 0);
	s.x.n = SN / 2; /* the sender offers half the blocks the receiver granted */
	kvw_status st = xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST);
	cr_assert(st >= 0 || st == KVW_ERR_REJECTED, "%s", kvw_strerror(st));
	cr_assert(kvwt_drive1(ctx, 5000, xseq_done, &s.x), "mismatch not detected");
	cr_assert_eq(s.x.srec.status, KVW_ERR_REJECTED, "sender: %s", kvw_strerror(s.x.srec.status));
	cr_assert_lt(s.x.rrec.status, 0, "receiver: %s", kvw_strerror(s.x.rrec.status));
	check_untouched(&s.dst, NULL, 0, 12);
	xseq_free(&s.x);

	/* same block count, different block size */
	static struct kvwt_pool big;
	struct xseq y;
	kvwt_pool_make(ctx, &big, SL, SN * 2, SB * 2, SB * 2);
	xseq_init(&y, &big, &s.dst, s.sblk, s.dblk, SN, 25);
	xseq_grant(&y, pr.server, 0);
	st = xseq_send(&y, pr.client, 0, SL, KVW_SEND_LAST);
	cr_assert(st >= 0 || st == KVW_ERR_REJECTED, "%s", kvw_strerror(st));
	cr_assert(kvwt_drive1(ctx, 5000, xseq_done, &y), "block size mismatch not detected");
	cr_assert_eq(y.srec.status, KVW_ERR_REJECTED, "sender: %s", kvw_strerror(y.srec.status));
	cr_assert_lt(y.rrec.status, 0);
	check_untouched(&s.dst, NULL, 0, 12);
	xseq_free(&y);
	after_abort_still_works();
}

/* Closing an endpoint fails its outstanding requests with ABORTED; the
 * peer's side of them ends too (the peer is gone for it). */
Test(conf, ep_close_fails_outstanding_requests)
{
	static struct small s;
	small_make(&s, 26);
	xseq_grant(&s.x, pr.server, 0);
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL / 2, 0), 0);
	cr_assert(kvwt_drive1(ctx, 5000, rreq_started, &s.x));
	kvw_ep_close(pr.client);
	/* at once from CLOSE, or after peer_dead_ms (5 s, or the suite's
	 * KVW_PEER_DEAD_MS) if a packet driver lost it */
	const char *pd = getenv("KVW_PEER_DEAD_MS");
	uint64_t bound = (pd ? strtoull(pd, NULL, 10) : 5000) + kvwt_slack_ms(3000);
	cr_assert(kvwt_drive1(ctx, (int)bound, xseq_done, &s.x), "requests outlived their endpoint "
		  "by %llu ms", (unsigned long long)bound);
	cr_assert_eq(s.x.srec.status, KVW_ERR_ABORTED, "closing side: %s",
		     kvw_strerror(s.x.srec.status));
	cr_assert(s.x.rrec.status == KVW_ERR_PEER_DEAD || s.x.rrec.status == KVW_ERR_ABORTED ||
		  s.x.rrec.status == KVW_ERR_CLOSED, "peer side: %s", kvw_strerror(s.x.rrec.status));
	cr_assert_neq(kvw_ep_status(pr.server), KVW_OK);
	cr_assert_eq(kvw_req_free(s.x.sreq), KVW_OK, "an orphaned request must still be freeable");
	cr_assert_eq(kvw_req_free(s.x.rreq), KVW_OK);
	kvw_ep_close(pr.server);
	/* the listener serves the next peer */
	honest_peer_still_served(ctx, pr.l);
}

/* ------------------------------------------------------------- scale */
#define NSEQ 1000u
#define NSEQ_BLK 4u

Test(conf, thousand_concurrent_sequences, .timeout = 120)
{
	static struct kvwt_pool src, dst;
	static uint32_t sperm[4096], dperm[4096];
	static struct xseq xs[NSEQ];
	static struct kvwt_rec *recs[2 * NSEQ + 1];
	kvwt_pool_make(ctx, &src, 2, 4096, 4 * KiB, 4 * KiB);
	kvwt_pool_make(ctx, &dst, 2, 4096, 4 * KiB, 4 * KiB);
	kvwt_pool_fill(&src, 31);
	kvwt_pool_fill(&dst, 32);
	kvwt_pick_blocks(sperm, 4096, 4096, 5);
	kvwt_pick_blocks(dperm, 4096, 4096, 6);
	for (uint32_t k = 0; k < NSEQ; k++) {
		xseq_init(&xs[k], &src, &dst, sperm + k * NSEQ_BLK, dperm + k * NSEQ_BLK, NSEQ_BLK,
			  1000000 + k * 7919ull);
		recs[2 * k] = &xs[k].srec;
		recs[2 * k + 1] = &xs[k].rrec;
	}
	recs[2 * NSEQ] = NULL;
	/* even sequences granted first, odd ones sent first */
	for (uint32_t k = 0; k < NSEQ; k += 2)
		xseq_grant(&xs[k], pr.server, 60000000);
	for (uint32_t k = 0; k < NSEQ; k++) {
		kvw_status st = xseq_send(&xs[k], pr.client, 0, 2, KVW_SEND_LAST);
		cr_assert_geq(st, 0, "send seq #%u: %s", k, kvw_strerror(st));
	}
	for (uint32_t k = 1; k < NSEQ; k += 2)
		xseq_grant(&xs[k], pr.server, 60000000);
	cr_assert(kvwt_drive1(ctx, 90000, kvwt_recs_done, recs), "1,000 sequences did not finish");
	for (uint32_t k = 0; k < NSEQ; k++) {
		xseq_verify(&xs[k]);
		xseq_free(&xs[k]);
	}
}

#define NEP 16u

static bool all_eps_down(void *arg)
{
	kvw_ep **eps = arg;
	for (uint32_t e = 0; e < NEP; e++)
		if (kvw_ep_status(eps[e]) == KVW_OK)
			return false;
	return true;
}

Test(conf, sixteen_endpoints, .timeout = 120)
{
	static struct kvwt_pool src, dst;
	static kvw_ep *cl[NEP], *sv[NEP];
	static uint32_t sblk[NEP][16], dblk[NEP][16], perm[NEP * 16];
	static struct xseq xs[NEP];
	static struct kvwt_rec *recs[2 * NEP + 1];
	const char *uri = kvw_listener_uri(pr.l);
	for (uint32_t e = 0; e < NEP; e++) {
		kvw_status st = kvw_connect(ctx, uri, 10000, &cl[e]);
		cr_assert_eq(st, KVW_OK, "endpoint %u: %s: %s", e, kvw_strerror(st),
			     kvw_ctx_last_error(ctx));
		cr_assert_eq(kvw_accept(pr.l, 10000, &sv[e]), KVW_OK, "accept %u", e);
	}
	kvwt_pool_make(ctx, &src, 4, NEP * 16, 64 * KiB, 64 * KiB);
	kvwt_pool_make(ctx, &dst, 4, NEP * 16, 64 * KiB, 64 * KiB);
	kvwt_pool_fill(&src, 41);
	kvwt_pool_fill(&dst, 42);
	kvwt_pick_blocks(perm, NEP * 16, NEP * 16, 77);
	for (uint32_t e = 0; e < NEP; e++) {
		seq_ident(sblk[e], 16, e * 16);
		memcpy(dblk[e], perm + e * 16, sizeof(dblk[e]));
		/* the same seq_id on every endpoint: ids are per endpoint */
		xseq_init(&xs[e], &src, &dst, sblk[e], dblk[e], 16, 7);
		recs[2 * e] = &xs[e].srec;
		recs[2 * e + 1] = &xs[e].rrec;
		xseq_grant(&xs[e], sv[e], 0);
	}
	recs[2 * NEP] = NULL;
	for (uint32_t l = 0; l < 4; l++)
		for (uint32_t e = 0; e < NEP; e++)
			cr_assert_geq(xseq_send(&xs[e], cl[e], l, l + 1, l == 3 ? KVW_SEND_LAST : 0), 0);
	cr_assert(kvwt_drive1(ctx, 60000, kvwt_recs_done, recs));
	for (uint32_t e = 0; e < NEP; e++) {
		xseq_verify(&xs[e]);
		xseq_free(&xs[e]);
	}
	for (uint32_t e = 0; e < NEP; e++) {
		kvw_ep_close(cl[e]);
		kvwt_spin(&ctx, 1, 1);
	}
	/* the peers learn of it: from CLOSE at once, or from keepalive at the
	 * latest (a packet driver may lose the CLOSE frame) */
	cr_assert(kvwt_drive1(ctx, 8000, all_eps_down, sv), "server endpoints still up after close");
	for (uint32_t e = 0; e < NEP; e++)
		kvw_ep_close(sv[e]);
}

/* ------------------------------------------------------------- aborts */
/* 16 layers x 256 blocks x 64 KiB = 256 MiB: in flight for long enough. */
#define AL 16u
#define AN 256u
#define AB (64 * KiB)

struct abort_case {
	struct kvwt_pool src, dst;
	uint32_t sblk[AN], dblk[AN];
	struct xseq x;
	uint8_t *snap;
	size_t dlen;
};

static void abort_setup(struct abort_case *a)
{
	kvwt_pool_make(ctx, &a->src, AL, AN, AB, AB);
	kvwt_pool_make(ctx, &a->dst, AL, AN + 32, AB, AB);
	kvwt_pool_fill(&a->src, 51);
	kvwt_pool_fill(&a->dst, 52);
	seq_ident(a->sblk, AN, 0);
	kvwt_pick_blocks(a->dblk, AN, AN + 32, 3);
	xseq_init(&a->x, &a->src, &a->dst, a->sblk, a->dblk, AN, 555);
	a->dlen = a->dst.layer_stride * AL;
	a->snap = malloc(a->dlen);
	cr_assert_not_null(a->snap);
	xseq_grant(&a->x, pr.server, 60000000);
	for (uint32_t l = 0; l < AL / 2; l++)
		cr_assert_geq(xseq_send(&a->x, pr.client, l, l + 1, 0), 0);
	cr_assert(kvwt_drive1(ctx, 20000, rreq_started, &a->x), "no byte landed in 20 s");
	uint64_t got = req_bytes(a->x.rreq);
	cr_assert_lt(got, xseq_bytes(&a->x), "transfer finished before the abort");
	cr_assert_eq(a->x.rrec.status, KVW_INPROGRESS, "receive ended before the abort: %s (%s)",
		     kvw_strerror(a->x.rrec.status), kvw_ctx_last_error(ctx));
}

/* After the abort returned: the pages are the caller's again. Reuse them
 * (a new pattern), snapshot the arena, keep the sender going, compare. */
static void abort_fence_check(struct abort_case *a, bool keep_sending)
{
	for (uint32_t l = 0; l < AL; l++)
		for (uint32_t i = 0; i < AN; i++)
			kvwt_fill(kvwt_page(&a->dst, l, a->dblk[i]), AB, kvwt_seed(59, l, i));
	memcpy(a->snap, a->dst.base, a->dlen);
	kvw_req *other = NULL;
	for (uint32_t l = AL / 2; keep_sending && l < AL; l++) {
		kvw_req *r = NULL;
		kvw_status st = kvw_send_seq(pr.client, a->x.seq_id, a->src.lay, a->sblk, AN, l, l + 1,
					     l + 1 == AL ? KVW_SEND_LAST : 0, &r);
		cr_assert(st >= 0 || st == KVW_ERR_ABORTED, "send after abort: %s", kvw_strerror(st));
		if (st >= 0 && r != a->x.sreq)
			other = r;
		kvwt_spin(&ctx, 1, 1);
	}
	cr_assert(kvwt_drive1(ctx, 10000, xseq_done, &a->x), "abort not seen by both sides");
	kvwt_spin(&ctx, 1, 300);
	cr_assert_eq(memcmp(a->snap, a->dst.base, a->dlen), 0,
		     "bytes landed in the receiver's pages after kvw_req_abort returned");
	cr_assert_null(other, "kvw_send_seq after the abort started a NEW request for the same "
		       "seq_id instead of returning the aborted one (kvwire.h: later calls return "
		       "the same request)");
	cr_assert_eq(a->x.rrec.status, KVW_ERR_ABORTED, "receiver: %s", kvw_strerror(a->x.rrec.status));
	cr_assert_eq(a->x.srec.status, KVW_ERR_ABORTED, "sender: %s", kvw_strerror(a->x.srec.status));
	cr_assert_eq(a->x.rrec.seq_events, 1);
	cr_assert_eq(a->x.srec.seq_events, 1);
	free(a->snap);
}

/* the endpoint is still fine for the next sequence */
static void after_abort_still_works(void)
{
	static struct small s;
	small_make(&s, 9001);
	xseq_grant(&s.x, pr.server, 0);
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST), 0);
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &s.x));
	xseq_verify(&s.x);
	xseq_free(&s.x);
}

Test(conf, abort_by_receiver_mid_transfer, .timeout = 90)
{
	static struct abort_case a;
	abort_setup(&a);
	kvw_status st = kvw_req_abort(a.x.rreq);
	cr_assert_eq(st, KVW_OK, "kvw_req_abort: %s: %s", kvw_strerror(st), kvw_ctx_last_error(ctx));
	cr_assert_eq(kvw_req_status(a.x.rreq), KVW_ERR_ABORTED);
	abort_fence_check(&a, true);
	xseq_free(&a.x);
	after_abort_still_works();
}

Test(conf, abort_by_sender_mid_transfer, .timeout = 90)
{
	static struct abort_case a;
	abort_setup(&a);
	kvw_status st = kvw_req_abort(a.x.sreq);
	cr_assert_eq(st, KVW_OK, "kvw_req_abort: %s: %s", kvw_strerror(st), kvw_ctx_last_error(ctx));
	cr_assert_eq(kvw_req_status(a.x.sreq), KVW_ERR_ABORTED);
	/* the sender's pages may be reused at once, too */
	kvwt_pool_fill(&a.src, 0xee);
	abort_fence_check(&a, false);
	xseq_free(&a.x);
	after_abort_still_works();
}

/* ----------------------------------------------------------- deadlines */
Test(conf, deadline_expires_on_receiver)
{
	static struct small s;
	small_make(&s, 31);
	uint64_t t0 = kvwt_now_ms();
	xseq_grant(&s.x, pr.server, 300000); /* 300 ms, and the sender never sends */
	cr_assert(kvwt_drive1(ctx, 5000, rrec_done, &s.x));
	uint64_t dt = s.x.rrec.t_done_ms - t0;
	cr_assert_eq(s.x.rrec.status, KVW_ERR_TIMEDOUT, "%s", kvw_strerror(s.x.rrec.status));
	cr_assert_geq(dt, 250, "expired after %llu ms, deadline 300 ms", (unsigned long long)dt);
	cr_assert_leq(dt, kvwt_slack_ms(2000), "expired after %llu ms, deadline 300 ms",
		      (unsigned long long)dt);
	check_untouched(&s.dst, NULL, 0, 12);
	cr_assert_eq(kvw_ep_status(pr.server), KVW_OK, "a deadline must not kill the endpoint");
	xseq_free(&s.x);
	after_abort_still_works();
}

Test(conf, deadline_expires_on_sender)
{
	static struct small s;
	small_make(&s, 32);
	uint64_t t0 = kvwt_now_ms();
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL, KVW_SEND_LAST), 0);
	cr_assert_eq(kvw_req_set_timeout(s.x.sreq, 300000), KVW_OK);
	cr_assert(kvwt_drive1(ctx, 5000, srec_done, &s.x));
	uint64_t dt = s.x.srec.t_done_ms - t0;
	cr_assert_eq(s.x.srec.status, KVW_ERR_TIMEDOUT, "%s", kvw_strerror(s.x.srec.status));
	cr_assert_geq(dt, 250);
	cr_assert_leq(dt, kvwt_slack_ms(2000), "expired after %llu ms, deadline 300 ms",
		      (unsigned long long)dt);
	cr_assert_eq(kvw_ep_status(pr.client), KVW_OK);
	xseq_free(&s.x);
	after_abort_still_works();
}

Test(conf, deadline_expires_mid_sequence)
{
	static struct small s;
	/* ofi: tcp;ofi_rxm sets up its connection to a peer at the first write
	 * to it, and on a loaded host that first write was seen to take over a
	 * second (2 runs in 5): the half that "lands within the deadline" then
	 * was still in flight when the grant expired. This case is about the
	 * deadline, not connection set-up: carry one sequence first. */
	if (!strcmp(kvwt_driver()->name, "ofi"))
		after_abort_still_works();
	small_make(&s, 33);
	/* 2 s: under 5 % loss and a loaded host the half took over 500 ms */
	xseq_grant(&s.x, pr.server, 2000000);
	cr_assert_geq(xseq_send(&s.x, pr.client, 0, SL / 2, 0), 0); /* then prefill stalls */
	cr_assert(kvwt_drive1(ctx, 8000, rrec_done, &s.x));
	cr_assert_eq(s.x.rrec.status, KVW_ERR_TIMEDOUT, "%s", kvw_strerror(s.x.rrec.status));
	cr_assert_eq(s.x.rrec.layer_events, SL / 2, "the layers that landed were reported");
	cr_assert(kvwt_drive1(ctx, 5000, srec_done, &s.x));
	cr_assert_lt(s.x.srec.status, 0, "sender of a timed-out sequence: %s",
		     kvw_strerror(s.x.srec.status));
	xseq_free(&s.x);
}

/* ------------------------------------------------------ handshake refusals */
static void honest_peer_still_served(kvw_ctx *c, kvw_listener *l)
{
	kvw_ep *a = NULL, *b = NULL;
	kvw_status st = kvw_connect(c, kvw_listener_uri(l), 10000, &a);
	cr_assert_eq(st, KVW_OK, "honest peer refused after a bad one: %s: %s", kvw_strerror(st),
		     kvw_ctx_last_error(c));
	cr_assert_eq(kvw_accept(l, 10000, &b), KVW_OK);
	uint64_t rtt;
	st = kvw_ep_ping(a, 5000, &rtt);
	cr_assert_eq(st, KVW_OK, "ping from the connecting side: %s: %s", kvw_strerror(st),
		     kvw_ctx_last_error(c));
	st = kvw_ep_ping(b, 5000, &rtt);
	cr_assert_eq(st, KVW_OK, "ping from the accepting side: %s: %s", kvw_strerror(st),
		     kvw_ctx_last_error(c));
	struct kvwt_pool src, dst;
	uint32_t blk[4] = { 3, 1, 2, 0 };
	kvwt_pool_make(c, &src, 2, 4, 4096, 4096);
	kvwt_pool_make(c, &dst, 2, 4, 4096, 4096);
	kvwt_pool_fill(&src, 61);
	struct xseq x;
	xseq_init(&x, &src, &dst, blk, blk, 4, 1);
	xseq_grant(&x, b, 0);
	cr_assert_geq(xseq_send(&x, a, 0, 2, KVW_SEND_LAST), 0);
	cr_assert(kvwt_drive1(c, 10000, xseq_done, &x));
	xseq_verify(&x);
	xseq_free(&x);
	kvw_ep_close(a);
	kvw_ep_close(b);
	kvwt_pool_free(&src);
	kvwt_pool_free(&dst);
}

struct raw_env {
	kvw_ctx *ctx;
	kvw_listener *l;
};

static void raw_env_open(struct raw_env *r, const char *const *cfg)
{
	char uri[256];
	if (!kvwt_driver()->raw_stream)
		cr_skip_test("driver %s has no stream socket to forge frames on", kvwt_driver()->name);
	r->ctx = kvwt_ctx(cfg);
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(r->ctx, uri, &r->l), KVW_OK, "%s", kvw_ctx_last_error(r->ctx));
}

static void no_ep_accepted(struct raw_env *r)
{
	kvw_ep *ep = NULL;
	cr_assert_eq(kvw_accept(r->l, 50, &ep), KVW_INPROGRESS, "a bad peer was accepted");
}

/* Sends bytes as a fresh connection; expects the server to close it. */
static int32_t raw_refused(struct raw_env *r, const void *bytes, size_t len)
{
	int fd = rawp_connect(kvw_listener_uri(r->l));
	cr_assert_geq(fd, 0, "raw connect to %s", kvw_listener_uri(r->l));
	rawp_send(fd, bytes, len);
	int32_t rej;
	int closed = rawp_wait_closed(fd, r->ctx, 10000, &rej);
	close(fd);
	cr_assert_eq(closed, 1, "the listener kept a connection that sent bad bytes");
	no_ep_accepted(r);
	return rej;
}

static size_t hello_frame(uint8_t *buf, uint32_t magic, uint8_t major, uint32_t rails)
{
	struct kvw_wire_hello h = { .rails = rails };
	memset(h.nonce, 1, sizeof(h.nonce));
	snprintf(h.driver, sizeof(h.driver), "%s", kvwt_driver()->name);
	kvw_wire_hdr_encode(buf, KVW_T_HELLO, 0, sizeof(h), 0);
	memcpy(buf, &magic, 4);
	buf[4] = major;
	memcpy(buf + sizeof(struct kvw_wire_hdr), &h, sizeof(h));
	return sizeof(struct kvw_wire_hdr) + sizeof(h);
}

Test(conf_raw, wrong_magic_refused)
{
	struct raw_env r;
	uint8_t f[256];
	raw_env_open(&r, NULL);
	size_t n = hello_frame(f, 0x31575648u, KVW_WIRE_MAJOR, 1);
	int32_t rej = raw_refused(&r, f, n);
	cr_assert_eq(rej, KVW_ERR_PROTO, "REJECT said %s", kvw_strerror(rej));
	honest_peer_still_served(r.ctx, r.l);
}

Test(conf_raw, wrong_version_refused)
{
	struct raw_env r;
	uint8_t f[256];
	raw_env_open(&r, NULL);
	size_t n = hello_frame(f, KVW_WIRE_MAGIC, KVW_WIRE_MAJOR + 1, 1);
	int32_t rej = raw_refused(&r, f, n);
	cr_assert_eq(rej, KVW_ERR_VERSION, "REJECT said %s", kvw_strerror(rej));
	honest_peer_still_served(r.ctx, r.l);
}

Test(conf_raw, bad_hello_body_refused)
{
	struct raw_env r;
	uint8_t f[256];
	raw_env_open(&r, NULL);
	size_t n = hello_frame(f, KVW_WIRE_MAGIC, KVW_WIRE_MAJOR, 0); /* zero rails */
	int32_t rej = raw_refused(&r, f, n);
	cr_assert_eq(rej, KVW_ERR_PROTO, "REJECT said %s", kvw_strerror(rej));
	honest_peer_still_served(r.ctx, r.l);
}

Test(conf_raw, frames_before_handshake_refused)
{
	struct raw_env r;
	uint8_t f[128];
	raw_env_open(&r, NULL);
	struct kvw_wire_data d = { .token = 1, .bytes = 8 };
	kvw_wire_hdr_encode(f, KVW_T_DATA, 0, sizeof(d) + 8, 0);
	memcpy(f + 24, &d, sizeof(d));
	memset(f + 24 + sizeof(d), 0xee, 8);
	int32_t rej = raw_refused(&r, f, 24 + sizeof(d) + 8);
	cr_assert_eq(rej, KVW_ERR_PROTO, "REJECT said %s", kvw_strerror(rej));
	struct kvw_wire_ready rd = { .ep_id = 5 };
	kvw_wire_hdr_encode(f, KVW_T_READY, 0, sizeof(rd), 0);
	memcpy(f + 24, &rd, sizeof(rd));
	cr_assert_eq(raw_refused(&r, f, 24 + sizeof(rd)), KVW_ERR_PROTO, "READY from a client");
	honest_peer_still_served(r.ctx, r.l);
}

Test(conf_raw, truncated_and_garbage_refused)
{
	struct raw_env r;
	uint8_t f[4096];
	raw_env_open(&r, NULL);
	/* half a header, then the write side closed */
	size_t n = hello_frame(f, KVW_WIRE_MAGIC, KVW_WIRE_MAJOR, 1);
	int fd = rawp_connect(kvw_listener_uri(r.l));
	cr_assert_geq(fd, 0);
	rawp_send(fd, f, 10);
	shutdown(fd, SHUT_WR);
	int32_t rej;
	cr_assert_eq(rawp_wait_closed(fd, r.ctx, 10000, &rej), 1);
	close(fd);
	/* a header announcing more body than ever comes, then close */
	fd = rawp_connect(kvw_listener_uri(r.l));
	rawp_send(fd, f, n - 20);
	shutdown(fd, SHUT_WR);
	cr_assert_eq(rawp_wait_closed(fd, r.ctx, 10000, &rej), 1);
	close(fd);
	/* garbage */
	kvwt_fill(f, sizeof(f), 1234);
	cr_assert_eq(raw_refused(&r, f, sizeof(f)), KVW_ERR_PROTO, "garbage");
	/* a header whose length is absurd */
	kvw_wire_hdr_encode(f, KVW_T_HELLO, 0, 0xfffffff0u, 0);
	cr_assert_eq(raw_refused(&r, f, 24), KVW_ERR_PROTO, "absurd length");
	/* a half-sent frame left hanging must not block the next honest peer */
	int hang = rawp_connect(kvw_listener_uri(r.l));
	rawp_send(hang, f, 7);
	no_ep_accepted(&r);
	honest_peer_still_served(r.ctx, r.l);
	close(hang);
}

/* A PONG slower than keepalive_ms still ends the kvw_ep_ping waiting for
 * it: the keepalives sent meanwhile must not replace the ping's cookie (they
 * did, and under 5 % loss honest_peer_still_served's ping then timed out).
 * The peer's context is left unprogressed for 300 ms, then served by a
 * thread. */
struct late_peer {
	kvw_ctx *ctx;
	volatile bool stop;
};

static void *late_peer_run(void *arg)
{
	struct late_peer *p = arg;
	usleep(300 * 1000);
	while (!p->stop)
		kvw_progress(p->ctx);
	return NULL;
}

Test(conf_raw, pong_slower_than_keepalive_ends_the_ping)
{
	static const char *const cfg[] = { "keepalive_ms", "20", "peer_dead_ms", "5000", NULL };
	kvw_ctx *srv = kvwt_ctx(cfg), *cli = kvwt_ctx(cfg);
	kvw_listener *l;
	char uri[256];
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(srv, uri, &l), KVW_OK);
	kvw_ep *c = NULL, *s = NULL;
	kvw_status st = kvwt_connect2(cli, kvw_listener_uri(l), l, 5000, &c, &s);
	cr_assert_eq(st, KVW_OK, "%s: %s", kvw_strerror(st), kvw_ctx_last_error(cli));
	cr_assert_not_null(s);
	struct late_peer p = { .ctx = srv };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, late_peer_run, &p), 0);
	uint64_t rtt = 0;
	st = kvw_ep_ping(c, 3000, &rtt);
	p.stop = true;
	pthread_join(th, NULL);
	cr_assert_eq(st, KVW_OK, "a late PONG was ignored: %s: %s", kvw_strerror(st),
		     kvw_ctx_last_error(cli));
	cr_assert_geq(rtt, 250ull * 1000000, "rtt %llu ns: the PONG of a later PING was taken",
		      (unsigned long long)rtt);
	kvw_counters k = { .size = sizeof(k) };
	cr_assert_eq(kvw_ep_counters(c, &k), KVW_OK);
	cr_assert_gt(k.keepalives_tx, 2, "no keepalive went out while the PONG was late");
	kvw_ep_close(c);
	kvw_ep_close(s);
	kvw_listener_close(l);
	kvw_ctx_destroy(cli);
	kvw_ctx_destroy(srv);
}

Test(conf_raw, secret_mismatch_refused)
{
	static const char *const sa[] = { "secret", "alpha-secret", NULL };
	static const char *const sb[] = { "secret", "bravo-secret", NULL };
	static const char *const ka[] = { "secret", "", NULL };
	kvw_ctx *srv = kvwt_ctx(sa), *bad = kvwt_ctx(sb), *none = kvwt_ctx(ka), *good = kvwt_ctx(sa);
	kvw_listener *l;
	char uri[256];
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(srv, uri, &l), KVW_OK);
	kvw_ep *c = NULL, *s = NULL;
	kvw_status st = kvwt_connect2(bad, kvw_listener_uri(l), l, 5000, &c, &s);
	cr_assert_eq(st, KVW_ERR_AUTH, "different secrets: %s", kvw_strerror(st));
	cr_assert_null(s, "the server accepted a peer with the wrong secret");
	st = kvwt_connect2(none, kvw_listener_uri(l), l, 5000, &c, &s);
	cr_assert_eq(st, KVW_ERR_AUTH, "no secret against a secret: %s", kvw_strerror(st));
	cr_assert_null(s);
	st = kvwt_connect2(good, kvw_listener_uri(l), l, 5000, &c, &s);
	cr_assert_eq(st, KVW_OK, "same secret: %s: %s", kvw_strerror(st), kvw_ctx_last_error(good));
	cr_assert_not_null(s);
	kvw_ep_info ci = {.size = sizeof(ci)}, si = {.size = sizeof(si)};
	cr_assert_eq(kvw_ep_query(c, &ci), KVW_OK);
	cr_assert_eq(kvw_ep_query(s, &si), KVW_OK);
	cr_assert(ci.authenticated && si.authenticated);
	/* a raw peer that cannot prove the secret never gets READY (drivers
	 * with a stream socket to forge it on; elsewhere rawp_connect fails and
	 * the check would pass without testing anything) */
	if (kvwt_driver()->raw_stream) {
		int fd = rawp_connect(kvw_listener_uri(l));
		cr_assert_geq(fd, 0, "raw connect to %s", kvw_listener_uri(l));
		cr_assert_eq(rawp_handshake(fd, srv, kvwt_driver()->name), 0,
			     "a peer with no proof finished the handshake");
		close(fd);
		no_ep_accepted(&(struct raw_env){ srv, l });
	}
	kvw_ctx_destroy(good);
	kvw_ctx_destroy(none);
	kvw_ctx_destroy(bad);
	kvw_ctx_destroy(srv);
}

/* -------------------------------------------------- forged descriptors */
struct forge {
	bool arena_sent;
	struct raw_env r;
	kvw_ep *ep;
	int fd;
	uint32_t srv_id;
	struct kvwt_pool dst;
	uint32_t dblk[4];
	struct xseq x;
	struct kvw_wire_grant g;
	uint8_t *snap;
	size_t dlen;
};

static void forge_open(struct forge *f)
{
	static uint8_t body[KVW_WIRE_MAX_CTRL];
	struct kvw_wire_hdr h;
	raw_env_open(&f->r, NULL);
	f->fd = rawp_connect(kvw_listener_uri(f->r.l));
	cr_assert_geq(f->fd, 0);
	f->srv_id = rawp_handshake(f->fd, f->r.ctx, kvwt_driver()->name);
	cr_assert_neq(f->srv_id, 0, "raw handshake failed: %s", kvw_ctx_last_error(f->r.ctx));
	cr_assert_eq(kvw_accept(f->r.l, 5000, &f->ep), KVW_OK);
	/* 2 layers x 16 blocks of 8 KiB with 4 KiB canary gaps; 4 granted */
	kvwt_pool_make(f->r.ctx, &f->dst, 2, 16, 8192, 12288);
	kvwt_pool_fill(&f->dst, 71);
	f->dblk[0] = 5, f->dblk[1] = 6, f->dblk[2] = 9, f->dblk[3] = 0;
	xseq_init(&f->x, &f->dst, &f->dst, f->dblk, f->dblk, 4, 4242);
	xseq_grant(&f->x, f->ep, 5000000);
	int r;
	do {
		r = rawp_recv(f->fd, f->r.ctx, 5000, &h, body, sizeof(body));
		cr_assert_eq(r, 1, "no GRANT came to the raw peer");
	} while (h.type != KVW_T_GRANT);
	memcpy(&f->g, body, sizeof(f->g));
	cr_assert_eq(f->g.seq_id, 4242);
	cr_assert_eq(f->g.n_blocks, 4);
	cr_assert_eq(f->g.n_layers, 2);
	f->dlen = f->dst.layer_stride * 2;
	f->snap = malloc(f->dlen);
	memcpy(f->snap, f->dst.base, f->dlen);
}

/* shm: the raw peer shares a 64 KiB arena of 0xee (MEM + fd), then names
 * bytes in it by DESC; tcp: the bytes travel inline in DATA. */
#define FORGE_ARENA (64 * 1024)

/* The raw peer's shared arena, announced once per connection as an honest
 * sender does: a sealed memfd (no shrink, grow or writes through new
 * mappings), passed read-only, so the receiver's checks under test are the
 * descriptor's, not the arena's. */
static void forge_share_arena(struct forge *f)
{
	char path[64];
	int mfd, ro;

	if (f->arena_sent)
		return;
	mfd = memfd_create("kvwt-forge", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(mfd, 0);
	cr_assert_eq(ftruncate(mfd, FORGE_ARENA), 0);
	uint8_t *p = mmap(NULL, FORGE_ARENA, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	cr_assert_neq(p, MAP_FAILED);
	memset(p, 0xee, FORGE_ARENA);
	munmap(p, FORGE_ARENA);
	cr_assert_eq(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL), 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(ro, 0);
	close(mfd);
	uint8_t frame[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_mem)];
	struct kvw_wire_mem m = { .mem_id = 1, .len = FORGE_ARENA };
	kvw_wire_hdr_encode(frame, KVW_T_MEM, 0, sizeof(m), f->srv_id);
	memcpy(frame + sizeof(struct kvw_wire_hdr), &m, sizeof(m));
	cr_assert_eq(rawp_send_fd(f->fd, frame, sizeof(frame), ro), 0);
	close(ro);
	f->arena_sent = true;
}

static void forge_frag(struct forge *f, uint32_t token, uint32_t layer, uint32_t idx,
		       uint64_t off, uint32_t bytes, uint64_t src_off)
{
	static uint8_t frame[sizeof(struct kvw_wire_data) + 65536];
	if (!strcmp(kvwt_driver()->name, "shm")) {
		struct kvw_wire_desc d = { .token = token, .layer = layer, .blk_idx = idx,
					   .bytes = bytes, .blk_off = off, .src_off = src_off,
					   .mem_id = 1 };
		forge_share_arena(f);
		cr_assert_eq(rawp_frame(f->fd, KVW_T_DESC, f->srv_id, &d, sizeof(d)), 0);
		return;
	}
	struct kvw_wire_data d = { .token = token, .layer = layer, .blk_idx = idx,
				   .bytes = bytes, .blk_off = off };
	cr_assert_leq(bytes, 65536);
	memcpy(frame, &d, sizeof(d));
	memset(frame + sizeof(d), 0xee, bytes);
	cr_assert_eq(rawp_frame(f->fd, KVW_T_DATA, f->srv_id, frame, sizeof(d) + bytes), 0);
}

static void forge_data(struct forge *f, uint32_t token, uint32_t layer, uint32_t idx,
		       uint64_t off, uint32_t bytes)
{
	forge_frag(f, token, layer, idx, off, bytes, 0);
}

/* The forged fragment fails the request with REJECTED; not one byte of
 * the arena (granted pages, neighbours, canary gaps) changed. */
static void forge_expect_rejected(struct forge *f)
{
	cr_assert(kvwt_drive1(f->r.ctx, 5000, rrec_done, &f->x), "forged descriptor not refused");
	cr_assert_eq(memcmp(f->snap, f->dst.base, f->dlen), 0, "a forged descriptor wrote bytes");
	cr_assert_eq(req_bytes(f->x.rreq), 0);
	cr_assert_eq(f->x.rrec.status, KVW_ERR_REJECTED, "%s", kvw_strerror(f->x.rrec.status));
	kvw_counters c = {.size = sizeof(c)};
	cr_assert_eq(kvw_ep_counters(f->ep, &c), KVW_OK);
	cr_assert_geq(c.rejected, 1);
	close(f->fd);
	free(f->snap);
}

static void forge_only_tcp(void)
{
	const char *d = kvwt_driver()->name;
	if (strcmp(d, "tcp") && strcmp(d, "shm"))
		cr_skip_test("driver %s takes no forged DATA/DESC frames from a stream", d);
}

Test(conf_raw, forged_source_outside_shared_arena)
{
	static struct forge f;
	if (strcmp(kvwt_driver()->name, "shm"))
		cr_skip_test("only shm reads payload from the sender's shared arena");
	forge_open(&f);
	forge_frag(&f, f.g.token, 0, 0, 0, 8192, FORGE_ARENA - 4096); /* half outside */
	forge_expect_rejected(&f);
}

Test(conf_raw, forged_block_index_outside_grant)
{
	static struct forge f;
	forge_only_tcp();
	forge_open(&f);
	forge_data(&f, f.g.token, 0, 4, 0, 8192); /* index 4 of a 4-block grant */
	forge_expect_rejected(&f);
}

Test(conf_raw, forged_layer_outside_grant)
{
	static struct forge f;
	forge_only_tcp();
	forge_open(&f);
	forge_data(&f, f.g.token, 2, 0, 0, 8192);
	forge_expect_rejected(&f);
}

Test(conf_raw, forged_offset_past_block)
{
	static struct forge f;
	forge_only_tcp();
	forge_open(&f);
	forge_data(&f, f.g.token, 1, 1, 8192 - 100, 4096); /* spills into the gap */
	forge_expect_rejected(&f);
}

Test(conf_raw, forged_offset_outside_registered_memory)
{
	static struct forge f;
	forge_only_tcp();
	forge_open(&f);
	forge_data(&f, f.g.token, 0, 0, (1ull << 63) + 8, 4096); /* would wrap the address */
	forge_expect_rejected(&f);
}

Test(conf_raw, forged_token_writes_nothing)
{
	static struct forge f;
	forge_only_tcp();
	forge_open(&f);
	forge_data(&f, f.g.token + 977, 0, 0, 0, 8192);
	kvwt_spin(&f.r.ctx, 1, 200);
	cr_assert_eq(memcmp(f.snap, f.dst.base, f.dlen), 0, "a DATA frame with a foreign token wrote");
	cr_assert_neq(f.x.rrec.status, KVW_OK);
	cr_assert_eq(req_bytes(f.x.rreq), 0);
	close(f.fd);
}

/* ------------------------------------------------------ peer killed */
/* The peer is a forked child with its own context; the parent, with a
 * second (honest) endpoint on the same listener, kills it mid-transfer.
 * The parent's request fails with PEER_DEAD within peer_dead_ms (plus
 * slack), and the parent keeps serving its other endpoint. */
#define KL 8u
#define KN 64u
#define KB (64 * KiB)
#define PEER_DEAD_MS 2000

/* tight enough to see PEER_DEAD quickly, loose enough for a loaded 2-CPU CI box */
static const char *const proc_cfg[] = { "keepalive_ms", "200", "peer_dead_ms", "2000", NULL };

/* Child: connect, then send half the layers (role 's') or grant all of
 * them (role 'r'), tell the parent, and keep driving until killed. */
static void child_peer(int uri_fd, int go_fd, char role)
{
	char uri[256] = { 0 };
	size_t got = 0;
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test process */
	if (getppid() == 1)
		_exit(7);
	while (got < sizeof(uri) - 1) {
		ssize_t n = read(uri_fd, uri + got, sizeof(uri) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(uri, '\n', got))
			break;
	}
	char *nl = strchr(uri, '\n');
	if (nl)
		*nl = 0;
	kvw_ctx *c = kvwt_ctx(proc_cfg);
	kvw_ep *ep;
	if (kvw_connect(c, uri, 10000, &ep) != KVW_OK)
		_exit(3);
	if (role == 'i') { /* driven until the parent accepted (a byte on uri_fd), then silent */
		struct pollfd pf = {.fd = uri_fd, .events = POLLIN};
		if (write(go_fd, "g", 1) != 1)
			_exit(5);
		for (int i = 0; i < 6000 && poll(&pf, 1, 0) == 0; i++)
			kvwt_spin(&c, 1, 10);
		for (int i = 0; i < 60; i++)
			sleep(1);
		_exit(6);
	}
	static struct kvwt_pool pool;
	static uint32_t blk[KN];
	kvwt_pool_make(c, &pool, KL, KN, KB, KB);
	kvwt_pool_fill(&pool, 81);
	seq_ident(blk, KN, 0);
	kvw_req *req;
	if (role == 's') {
		if (kvw_send_seq(ep, 88, pool.lay, blk, KN, 0, KL / 2, 0, &req) < 0)
			_exit(4);
	} else {
		if (kvw_recv_seq(ep, 88, pool.lay, blk, KN, 60000000, &req) < 0)
			_exit(4);
	}
	if (write(go_fd, "g", 1) != 1)
		_exit(5);
	for (int i = 0; i < 60; i++) /* killed long before; never outlives a hung test */
		kvwt_spin(&c, 1, 1000);
	_exit(6);
}

static void peer_killed(char child_role)
{
	int up[2], go[2];
	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(go), 0);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(up[1]);
		close(go[0]);
		child_peer(up[0], go[1], child_role);
		_exit(0);
	}
	close(up[0]);
	close(go[1]);
	kvw_ctx *c = kvwt_ctx(proc_cfg);
	struct kvwt_pair p;
	kvwt_pair_open(c, &p); /* the honest endpoint, kept across the kill */
	char line[300];
	snprintf(line, sizeof(line), "%s\n", kvw_listener_uri(p.l));
	cr_assert_eq(write(up[1], line, strlen(line)), (ssize_t)strlen(line));
	kvw_ep *victim;
	kvw_status st = kvw_accept(p.l, 10000, &victim);
	if (st != KVW_OK) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		cr_assert_fail("the child never connected: %s", kvw_strerror(st));
	}
	static struct kvwt_pool pool;
	static uint32_t blk[KN];
	kvwt_pool_make(c, &pool, KL, KN, KB, KB);
	kvwt_pool_fill(&pool, 82);
	seq_ident(blk, KN, 0);
	struct xseq x;
	xseq_init(&x, &pool, &pool, blk, blk, KN, 88);
	char g;
	cr_assert_eq(read(go[0], &g, 1), 1, "child failed before its first call");
	if (child_role == 's') {
		xseq_grant(&x, victim, 60000000);
		cr_assert(kvwt_drive1(c, 20000, rreq_started, &x), "no byte from the child");
	} else {
		kvw_status s2 = xseq_send(&x, victim, 0, KL / 2, 0);
		cr_assert_geq(s2, 0);
		cr_assert(kvwt_drive1(c, 20000, srec_confirmed, &x), "nothing confirmed by the child");
	}
	kvw_req *mine = child_role == 's' ? x.rreq : x.sreq;
	struct kvwt_rec *rec = child_role == 's' ? &x.rrec : &x.srec;
	cr_assert_eq(rec->status, KVW_INPROGRESS, "finished before the kill: %s",
		     kvw_strerror(rec->status));
	uint64_t t_kill = kvwt_now_ms();
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cr_assert(kvwt_drive1(c, (int)(PEER_DEAD_MS + kvwt_slack_ms(3000)), kvwt_rec_done, rec),
		  "no verdict %d ms after the peer died", (int)(PEER_DEAD_MS + kvwt_slack_ms(3000)));
	cr_assert_eq(rec->status, KVW_ERR_PEER_DEAD, "%s", kvw_strerror(rec->status));
	cr_assert_eq(kvw_req_status(mine), KVW_ERR_PEER_DEAD);
	cr_assert_leq(rec->t_done_ms - t_kill, PEER_DEAD_MS + kvwt_slack_ms(1000), "PEER_DEAD after %llu ms",
		      (unsigned long long)(rec->t_done_ms - t_kill));
	cr_assert_neq(kvw_ep_status(victim), KVW_OK);
	cr_assert_eq(kvw_req_free(mine), KVW_OK);
	kvw_ep_close(victim);
	/* the survivor still serves its other endpoint, and new ones */
	cr_assert_eq(kvw_ep_status(p.client), KVW_OK);
	cr_assert_eq(kvw_ep_status(p.server), KVW_OK);
	ctx = c;
	pr = p;
	after_abort_still_works();
	honest_peer_still_served(c, p.l);
}

Test(conf_proc, sender_killed_mid_transfer)
{
	peer_killed('s');
}

Test(conf_proc, receiver_killed_mid_transfer)
{
	peer_killed('r');
}

/* Silence without a reset (the peer is stopped, not dead: SIGSTOP keeps its
 * sockets open) is found by keepalive: PEER_DEAD after ~peer_dead_ms. */
Test(conf_proc, silent_peer_detected_by_keepalive)
{
	int up[2], go[2];
	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(go), 0);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(up[1]);
		close(go[0]);
		child_peer(up[0], go[1], 's');
		_exit(0);
	}
	close(up[0]);
	close(go[1]);
	kvw_ctx *c = kvwt_ctx(proc_cfg);
	struct kvwt_pair p;
	kvwt_pair_open(c, &p);
	char line[300];
	snprintf(line, sizeof(line), "%s\n", kvw_listener_uri(p.l));
	cr_assert_eq(write(up[1], line, strlen(line)), (ssize_t)strlen(line));
	kvw_ep *victim;
	cr_assert_eq(kvw_accept(p.l, 10000, &victim), KVW_OK);
	char g;
	cr_assert_eq(read(go[0], &g, 1), 1);
	static struct kvwt_pool pool;
	static uint32_t blk[KN];
	kvwt_pool_make(c, &pool, KL, KN, KB, KB);
	seq_ident(blk, KN, 0);
	struct xseq x;
	xseq_init(&x, &pool, &pool, blk, blk, KN, 88);
	xseq_grant(&x, victim, 60000000);
	cr_assert(kvwt_drive1(c, 20000, rreq_started, &x));
	kvwt_spin(&c, 1, 300); /* the child's half has landed; it now idles */
	uint64_t t_stop = kvwt_now_ms();
	kill(pid, SIGSTOP);
	bool done = kvwt_drive1(c, (int)(PEER_DEAD_MS + kvwt_slack_ms(3000)), rrec_done, &x);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cr_assert(done, "a silent peer was never declared dead");
	cr_assert_eq(x.rrec.status, KVW_ERR_PEER_DEAD, "%s", kvw_strerror(x.rrec.status));
	uint64_t dt = x.rrec.t_done_ms - t_stop;
	cr_assert_geq(dt, PEER_DEAD_MS - 400, "declared dead after only %llu ms",
		      (unsigned long long)dt);
	cr_assert_leq(dt, PEER_DEAD_MS + kvwt_slack_ms(1500), "declared dead after %llu ms",
		      (unsigned long long)dt);
	cr_assert_eq(kvw_ep_status(p.server), KVW_OK, "the honest endpoint died too");
}

/* shm: one arena of 0xee, sealed and passed read-only once (mem_id 2), as a
 * kvwire sender shares its own; the fragment names its first 8 KiB by DESC.
 * tcp: the bytes travel in DATA. */
static void dup_frag(struct forge *f, uint32_t layer)
{
	if (strcmp(kvwt_driver()->name, "shm")) {
		forge_data(f, f->g.token, layer, 0, 0, 8192);
		return;
	}
	forge_share_arena(f); /* once per connection: the sealed arena, mem_id 1 */
	struct kvw_wire_desc d = { .token = f->g.token, .layer = layer, .bytes = 8192, .mem_id = 1 };
	cr_assert_eq(rawp_frame(f->fd, KVW_T_DESC, f->srv_id, &d, sizeof(d)), 0);
}

/* A peer that repeats one fragment until the byte count adds up must not
 * complete anything: four copies of (layer L, block 0) in every layer make
 * each layer's byte count, yet 3 of its 4 pages were never written.
 * Completion counts coverage (each granted byte once), so no LAYER and no
 * SEQ event comes, the request stays in progress (until its deadline) and
 * the pages the peer never sent are as they were. */
Test(conf_raw, duplicate_fragments_do_not_complete)
{
	static struct forge f;
	forge_only_tcp();
	forge_open(&f);
	/* 2 layers x 4 blocks x 8 KiB: four copies of block 0 in each layer */
	for (uint32_t l = 0; l < 2; l++)
		for (int i = 0; i < 4; i++)
			dup_frag(&f, l);
	kvwt_spin(&f.r.ctx, 1, 300);
	cr_assert_eq(f.x.rrec.status, KVW_INPROGRESS, "duplicates ended the sequence %s (want it "
		     "still waiting for 6 of its 8 pages): %s", kvw_strerror(f.x.rrec.status),
		     kvw_ctx_last_error(f.r.ctx));
	for (uint32_t l = 0; l < 2; l++) {
		cr_assert_eq(f.x.rrec.layer_seen[l], 0, "layer %u reported landed; 3 of its 4 pages "
			     "were never sent", l);
		uint8_t *pg = kvwt_page(&f.dst, l, f.dblk[0]);
		memcpy(f.snap + (pg - f.dst.base), pg, 8192); /* the one page sent */
	}
	cr_assert_eq(memcmp(f.snap, f.dst.base, f.dlen), 0, "a page the peer never sent changed");
	cr_assert_eq(req_bytes(f.x.rreq), 2 * 8192, "landed bytes counted %llu, 16 KiB distinct",
		     (unsigned long long)req_bytes(f.x.rreq));
	close(f.fd);
	free(f.snap);
}

/* This process, not the peer, went quiet (a long pool fill, a debugger
 * stop): after a stretch without progress longer than peer_dead_ms the
 * endpoints must stay up — the peer gets a full keepalive round to answer. */
Test(conf_proc, own_absence_is_not_peer_death)
{
	kvw_ctx *c = kvwt_ctx(proc_cfg);
	struct kvwt_pair p;
	kvwt_pair_open(c, &p);
	usleep((PEER_DEAD_MS + 1000) * 1000);
	kvwt_spin(&c, 1, 100);
	cr_assert_eq(kvw_ep_status(p.server), KVW_OK, "server endpoint declared dead: %s",
		     kvw_ctx_last_error(c));
	cr_assert_eq(kvw_ep_status(p.client), KVW_OK, "client endpoint declared dead: %s",
		     kvw_ctx_last_error(c));
	uint64_t rtt;
	cr_assert_eq(kvw_ep_ping(p.client, 2000, &rtt), KVW_OK);
}

/* ------------------------------------------- an abort fence waits for nobody */
/* One endpoint's grant expires while its peer (a child that stopped driving
 * its context) answers nothing -- no FENCE_ACK, no ABORT_ACK -- and another
 * endpoint of the same context streams. The expired grant's fence must not
 * stall the stream: the longest gap between the stream's events stays far
 * below abort_timeout_ms (a fence that waited inside kvw_progress, as the
 * rdma revoke once did, stalled every endpoint of the context for it). */
#define FL 8u
#define FN 32u
#define FB (16 * KiB)
#define FENCE_MAX_GAP_MS 200u
#define FENCE_ABORT_MS 2000u

static const char *const fence_cfg[] = { "keepalive_ms", "1000", "peer_dead_ms", "30000",
					 "abort_timeout_ms", "2000", NULL };

struct fence_case {
	struct kvwt_pair p;
	struct kvwt_pool src, dst, vpool;
	uint32_t sblk[FN], dblk[FN];
	struct xseq x;          /* the stream's current sequence */
	uint64_t next_id;
	uint32_t seqs, events;
	uint64_t t_last, max_gap, t_victim_done;
	struct kvwt_rec vrec;   /* the expired grant */
	kvw_req *vreq;
};

static uint32_t stream_events(const struct xseq *x)
{
	return x->srec.layer_events + x->rrec.layer_events + x->srec.seq_events + x->rrec.seq_events;
}

static void fence_stream_start(struct fence_case *f)
{
	xseq_init(&f->x, &f->src, &f->dst, f->sblk, f->dblk, FN, f->next_id++);
	xseq_grant(&f->x, f->p.server, 30000000);
	cr_assert_geq(xseq_send(&f->x, f->p.client, 0, FL, KVW_SEND_LAST), 0);
	f->events = 0;
}

/* After every pump: note the gap since the stream's last event, chain the
 * next sequence when one is done; true 300 ms after the expired grant ended. */
static bool fence_stream_step(void *arg)
{
	struct fence_case *f = arg;
	uint64_t now = kvwt_now_ms();
	uint32_t ev = stream_events(&f->x);

	if (ev != f->events) {
		if (f->t_last && now - f->t_last > f->max_gap)
			f->max_gap = now - f->t_last;
		f->t_last = now;
		f->events = ev;
	}
	if (xseq_done(&f->x)) {
		xseq_verify(&f->x);
		xseq_free(&f->x);
		f->seqs++;
		fence_stream_start(f);
	}
	if (f->vreq && f->vrec.status != KVW_INPROGRESS && !f->t_victim_done)
		f->t_victim_done = now;
	return f->t_victim_done && now >= f->t_victim_done + 300;
}

static bool fence_stream_baseline(void *arg)
{
	fence_stream_step(arg);
	return false;
}

static bool stream_started(void *arg)
{
	return stream_events(&((struct fence_case *)arg)->x) > 0;
}

/* Forked before this process opens any context (a dpdk EAL must not be
 * inherited); the child connects once it reads the listener's URI. */
struct silent_child {
	pid_t pid;
	int up, go;
};

static void silent_child_fork(struct silent_child *sc)
{
	int up[2], go[2];
	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(go), 0);
	fflush(NULL);
	sc->pid = fork();
	cr_assert_geq(sc->pid, 0);
	if (sc->pid == 0) {
		close(up[1]);
		close(go[0]);
		child_peer(up[0], go[1], 'i');
		_exit(0);
	}
	close(up[0]);
	close(go[1]);
	sc->up = up[1];
	sc->go = go[0];
}

static kvw_ep *silent_child_accept(struct silent_child *sc, kvw_listener *l)
{
	char line[300], g;
	kvw_ep *victim = NULL;
	snprintf(line, sizeof(line), "%s\n", kvw_listener_uri(l));
	cr_assert_eq(write(sc->up, line, strlen(line)), (ssize_t)strlen(line));
	kvw_status st = kvw_accept(l, 10000, &victim);
	if (st == KVW_OK && read(sc->go, &g, 1) == 1 && write(sc->up, "q", 1) == 1)
		return victim; /* the child stops driving its context now */
	kill(sc->pid, SIGKILL);
	waitpid(sc->pid, NULL, 0);
	cr_assert_fail("the silent child never connected: %s", kvw_strerror(st));
	return NULL;
}

Test(conf_proc, expired_grant_fence_does_not_stall_other_endpoints, .timeout = 120)
{
	static struct fence_case f;
	static uint32_t vblk[FN];
	struct silent_child sc;
	silent_child_fork(&sc);
	kvw_ctx *c = kvwt_ctx(fence_cfg);
	kvwt_pair_open(c, &f.p);
	kvw_ep *victim = silent_child_accept(&sc, f.p.l);
	kvwt_pool_make(c, &f.src, FL, FN, FB, FB);
	kvwt_pool_make(c, &f.dst, FL, FN, FB, FB);
	kvwt_pool_make(c, &f.vpool, FL, FN, FB, FB);
	kvwt_pool_fill(&f.src, 61);
	kvwt_pool_fill(&f.dst, 62);
	kvwt_pool_fill(&f.vpool, 63);
	seq_ident(f.sblk, FN, 0);
	seq_ident(vblk, FN, 0);
	kvwt_pick_blocks(f.dblk, FN, FN, 5);
	f.next_id = 1000;
	fence_stream_start(&f);
	cr_assert(kvwt_drive1(c, 20000, stream_started, &f), "the stream moved nothing in 20 s");
	f.t_last = kvwt_now_ms();
	kvwt_drive1(c, 1000, fence_stream_baseline, &f); /* the stream's own gaps, for the log */
	uint64_t base_gap = f.max_gap;
	kvwt_rec_init(&f.vrec);
	uint64_t t0 = kvwt_now_ms();
	cr_assert_eq(kvw_recv_seq(victim, 7, f.vpool.lay, vblk, FN, 300000, &f.vreq), KVW_OK,
		     "grant to the silent peer: %s", kvw_ctx_last_error(c));
	kvw_req_set_user_data(f.vreq, &f.vrec);
	f.max_gap = 0;
	bool ended = kvwt_drive1(c, FENCE_ABORT_MS + 8000, fence_stream_step, &f);
	cr_log_info("%s: longest gap between the streaming endpoints' events: %llu ms while the "
		    "expired grant was fenced, %llu ms in the second before (%u sequences of %u KiB "
		    "streamed); the expired grant ended %s after %llu ms",
		    kvwt_driver()->name, (unsigned long long)f.max_gap, (unsigned long long)base_gap, f.seqs,
		    (unsigned)(FL * FN * FB / KiB), kvw_strerror(f.vrec.status),
		    (unsigned long long)(f.t_victim_done - t0));
	cr_assert(ended, "the expired grant did not end within abort_timeout_ms + 8 s: %s",
		  kvw_strerror(f.vrec.status));
	cr_assert_eq(f.vrec.status, KVW_ERR_TIMEDOUT, "expired grant: %s", kvw_strerror(f.vrec.status));
	cr_assert_geq(f.t_victim_done - t0, 250, "expired after %llu ms, deadline 300 ms",
		      (unsigned long long)(f.t_victim_done - t0));
	cr_assert_leq(f.t_victim_done - t0, 300 + FENCE_ABORT_MS + 1500, "the fence outlived "
		      "abort_timeout_ms: ended after %llu ms", (unsigned long long)(f.t_victim_done - t0));
	cr_assert_geq(f.seqs, 1, "the stream finished no sequence while the fence ran");
	/* a loaded box (or a TCG VM) has gaps of its own: 3 times the second
	 * before, but never half of the abort_timeout_ms a waiting fence costs */
	uint64_t limit = 3 * base_gap < FENCE_MAX_GAP_MS ? FENCE_MAX_GAP_MS : 3 * base_gap;
	if (limit > FENCE_ABORT_MS / 2)
		limit = FENCE_ABORT_MS / 2;
	cr_assert_lt(f.max_gap, limit, "the stream stalled %llu ms while another endpoint's "
		     "expired grant was fenced (limit %llu ms): a fence waited inside kvw_progress",
		     (unsigned long long)f.max_gap, (unsigned long long)limit);
	check_untouched(&f.vpool, NULL, 0, 63);
	cr_assert_eq(kvw_req_free(f.vreq), KVW_OK);
	cr_assert(kvwt_drive1(c, 20000, xseq_done, &f.x), "the last streamed sequence did not finish");
	xseq_verify(&f.x);
	xseq_free(&f.x);
	cr_assert_eq(kvw_ep_status(f.p.client), KVW_OK);
	cr_assert_eq(kvw_ep_status(f.p.server), KVW_OK);
	/* last: a memif survivor must not drive its port after a SIGKILLed peer */
	kill(sc.pid, SIGKILL);
	waitpid(sc.pid, NULL, 0);
}

/* The same for a send: one endpoint's send request passes its deadline in
 * the middle of a large transfer while another endpoint of the context
 * streams. The sender's cancel must not wait inside kvw_progress for the
 * transport to give back what it still holds of the request's pages
 * (dpdk over net_ring: zero-copy buffers sit in the ring until the
 * receiving side reads it, on the same thread: a wait there never ends
 * before its bound, 200 ms). Several victims, one after the other. */
#define SDL_VICTIMS 3u
#define SDL_DEADLINE_US 10000u
#define SDL_FLOOR_MS 100u
#define SDL_CAP_MS 150u

Test(conf, send_deadline_does_not_stall_other_endpoints, .timeout = 180)
{
	static struct fence_case f;
	static struct kvwt_pool vsrc, vdst;
	static uint32_t vsblk[AN], vdblk[AN];
	static struct xseq v;
	kvw_ep *vc = NULL, *vs = NULL;

	/* where the transport itself stalls a pass longer than the limit, the
	 * gap measures it, not a wait in kvwire's cancel */
	if (getenv("KVW_TEST_REAL_LOSS"))
		cr_skip_test("real loss (lossy_lo.sh): a TCP retransmission stalls the stream 200 ms+");
	if (!strcmp(kvwt_driver()->name, "ofi"))
		cr_skip_test("ofi: tcp;ofi_rxm moves a cancelled send's queued writes inside fi_cq_read "
			     "(118 ms in one pass seen); ofi's cancel itself answers at once");
	if (!strcmp(kvwt_driver()->name, "rdma"))
		cr_skip_test("rdma: the TCG guest has gaps of its own past the limit; the same property "
			     "is conf_proc::expired_grant_fence_does_not_stall_other_endpoints there");
	if (!strcmp(kvwt_driver()->name, "shm"))
		cr_skip_test("shm: the receiver copies up to 64 MiB in a pass (its read budget), a gap of "
			     "its own (115 ms under ASan with faults); shm's cancel never waited");
	f.p = pr;
	cr_assert_eq(kvw_connect(ctx, kvw_listener_uri(pr.l), 10000, &vc), KVW_OK, "victim connect: %s",
		     kvw_ctx_last_error(ctx));
	cr_assert_eq(kvw_accept(pr.l, 10000, &vs), KVW_OK, "victim accept");
	kvwt_pool_make(ctx, &f.src, FL, FN, FB, FB);
	kvwt_pool_make(ctx, &f.dst, FL, FN, FB, FB);
	kvwt_pool_make(ctx, &vsrc, AL, AN, AB, AB);
	kvwt_pool_make(ctx, &vdst, AL, AN, AB, AB);
	kvwt_pool_fill(&f.src, 71);
	kvwt_pool_fill(&f.dst, 72);
	kvwt_pool_fill(&vsrc, 73);
	seq_ident(f.sblk, FN, 0);
	kvwt_pick_blocks(f.dblk, FN, FN, 7);
	seq_ident(vsblk, AN, 0);
	seq_ident(vdblk, AN, 0);
	f.next_id = 2000;
	fence_stream_start(&f);
	cr_assert(kvwt_drive1(ctx, 20000, stream_started, &f), "the stream moved nothing in 20 s");
	f.t_last = kvwt_now_ms();
	kvwt_drive1(ctx, 1000, fence_stream_baseline, &f); /* the stream's own gaps */
	uint64_t base_gap = f.max_gap, worst = 0;
	uint32_t timed_out = 0;
	for (uint32_t k = 0; k < SDL_VICTIMS; k++) {
		xseq_init(&v, &vsrc, &vdst, vsblk, vdblk, AN, 3000 + k);
		xseq_grant(&v, vs, 60000000);
		cr_assert_geq(xseq_send(&v, vc, 0, AL, KVW_SEND_LAST), 0);
		kvwt_rec_init(&f.vrec);
		kvw_req_set_user_data(v.sreq, &f.vrec);
		f.vreq = v.sreq;
		f.t_victim_done = 0;
		uint64_t t0 = kvwt_now_ms();
		cr_assert_eq(kvw_req_set_timeout(v.sreq, SDL_DEADLINE_US), KVW_OK);
		f.max_gap = 0;
		bool ended = kvwt_drive1(ctx, 20000, fence_stream_step, &f);
		cr_assert(ended, "victim %u: the send did not end in 20 s: %s", k, kvw_strerror(f.vrec.status));
		cr_assert(f.vrec.status == KVW_ERR_TIMEDOUT || f.vrec.status == KVW_OK,
			  "victim %u: %s", k, kvw_strerror(f.vrec.status));
		timed_out += f.vrec.status == KVW_ERR_TIMEDOUT;
		cr_assert(kvwt_drive1(ctx, 10000, rrec_done, &v), "victim %u: the grant outlived its send", k);
		cr_log_info("%s: victim %u ended %s after %llu ms (%llu of %llu bytes landed); longest gap "
			    "between the streaming endpoints' events meanwhile %llu ms, %llu ms in the "
			    "second before", kvwt_driver()->name, k, kvw_strerror(f.vrec.status),
			    (unsigned long long)(f.t_victim_done - t0), (unsigned long long)req_bytes(v.rreq),
			    (unsigned long long)xseq_bytes(&v), (unsigned long long)f.max_gap,
			    (unsigned long long)base_gap);
		if (f.max_gap > worst)
			worst = f.max_gap;
		kvw_req_free(v.sreq);
		kvw_req_free(v.rreq);
		v.sreq = v.rreq = NULL;
	}
	cr_assert(kvwt_drive1(ctx, 20000, xseq_done, &f.x), "the last streamed sequence did not finish");
	xseq_verify(&f.x);
	xseq_free(&f.x);
	cr_assert_geq(f.seqs, 1, "the stream finished no sequence");
	cr_assert_eq(kvw_ep_status(pr.client), KVW_OK);
	cr_assert_eq(kvw_ep_status(vc), KVW_OK, "a deadline must not kill the endpoint");
	/* a loaded box has gaps of its own: 3 times the second before, within
	 * [100, 150] ms (shm: the victim's own copies leave gaps of
	 * 40 ms), below the 200 ms a waiting cancel costs */
	uint64_t limit = 3 * base_gap < SDL_FLOOR_MS ? SDL_FLOOR_MS : 3 * base_gap;
	if (limit > SDL_CAP_MS)
		limit = SDL_CAP_MS;
	cr_log_info("%s: %u of %u victims timed out mid-transfer; worst gap %llu ms (limit %llu ms)",
		    kvwt_driver()->name, timed_out, SDL_VICTIMS, (unsigned long long)worst,
		    (unsigned long long)limit);
	cr_assert_lt(worst, limit, "the stream stalled %llu ms while another endpoint's expired send was "
		     "cancelled (limit %llu ms): a cancel waited inside kvw_progress",
		     (unsigned long long)worst, (unsigned long long)limit);
	kvw_ep_close(vc);
	kvw_ep_close(vs);
}
