/* SPDX-License-Identifier: MIT */
/* The loop driver's own cases (docs/drivers/loop.md): naming, contexts on
 * two threads, a send aborted while the other thread copies from its
 * pages, control frames past the ring's capacity (the overflow list), and
 * the peer's close. The shared suite runs as conformance-loop. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvwt.h"

#define KiB 1024ull

static void loop_uri(char *buf, size_t len, const char *tag)
{
	static unsigned n;
	snprintf(buf, len, "loop://t-%s-%d-%u", tag, (int)getpid(), n++);
}

Test(loop, name_in_use_is_busy)
{
	kvw_ctx *a = kvwt_ctx(NULL), *b = kvwt_ctx(NULL);
	kvw_listener *l1 = NULL, *l2 = NULL;
	char uri[128];
	loop_uri(uri, sizeof(uri), "busy");
	cr_assert_eq(kvw_listen(a, uri, &l1), KVW_OK, "%s", kvw_ctx_last_error(a));
	cr_assert_eq(kvw_listen(b, uri, &l2), KVW_ERR_BUSY, "a second listener of one name");
	cr_assert(strstr(kvw_ctx_last_error(b), "in use"), "sentence: %s", kvw_ctx_last_error(b));
	kvw_listener_close(l1);
	/* the name is free again once its listener closed */
	cr_assert_eq(kvw_listen(b, uri, &l2), KVW_OK, "%s", kvw_ctx_last_error(b));
	kvw_listener_close(l2);
	kvw_ctx_destroy(a);
	kvw_ctx_destroy(b);
}

Test(loop, unknown_name_refused)
{
	kvw_ctx *c = kvwt_ctx(NULL);
	kvw_ep *ep = NULL;
	kvw_status st = kvw_connect(c, "loop://nobody-listens-here", 1000, &ep);
	cr_assert_eq(st, KVW_ERR_CONNREFUSED, "%s", kvw_strerror(st));
	cr_assert(strstr(kvw_ctx_last_error(c), "nobody listens at loop://nobody-listens-here"),
		  "sentence: %s", kvw_ctx_last_error(c));
	cr_assert_eq(kvw_connect(c, "loop://name:5", 1000, &ep), KVW_ERR_INVALID, "a port in a loop URI");
	kvw_ctx_destroy(c);
}

/* The listener closes before its context ever took the connection: the
 * client is refused, not left waiting for the handshake deadline. */
Test(loop, listener_closed_before_accept_refuses)
{
	kvw_ctx *s = kvwt_ctx(NULL), *c = kvwt_ctx(NULL);
	kvw_listener *l = NULL;
	kvw_ep *ep = NULL;
	char uri[128];
	loop_uri(uri, sizeof(uri), "gone");
	cr_assert_eq(kvw_listen(s, uri, &l), KVW_OK);
	cr_assert_geq(kvw_connect_start(c, uri, &ep), 0, "%s", kvw_ctx_last_error(c));
	kvw_listener_close(l);
	uint64_t end = kvwt_now_ms() + 5000;
	while (kvw_ep_status(ep) == KVW_INPROGRESS && kvwt_now_ms() < end)
		kvw_progress(c);
	cr_assert_eq(kvw_ep_status(ep), KVW_ERR_CONNREFUSED, "%s", kvw_strerror(kvw_ep_status(ep)));
	kvw_ep_close(ep);
	kvw_ctx_destroy(c);
	kvw_ctx_destroy(s);
}

/* ------------------------------------------------ two contexts, two threads */
struct side {
	kvw_ctx *ctx;
	kvw_listener *l;
	kvw_ep *ep;
	struct kvwt_pool pool;
	uint32_t blk[64];
	uint32_t n;
	uint64_t seq;
	_Atomic int stop;
	_Atomic int status;            /* the receive request's final status */
	_Atomic int ready;             /* the grant went out */
};

static void *server_run(void *arg)
{
	struct side *s = arg;
	kvw_req *r = NULL;
	kvw_event ev[32];

	if (kvw_accept(s->l, 10000, &s->ep) != KVW_OK)
		return NULL;
	if (kvw_recv_seq(s->ep, s->seq, s->pool.lay, s->blk, s->n, 30000000, &r) != KVW_OK)
		return NULL;
	atomic_store(&s->ready, 1);
	while (!atomic_load(&s->stop)) {
		int n = kvw_poll(s->ctx, ev, 32);
		for (int i = 0; i < n; i++)
			if (ev[i].type == KVW_EV_SEQ)
				atomic_store(&s->status, ev[i].status);
		if (n == 0)
			kvw_ctx_wait(s->ctx, 1);
	}
	if (kvw_req_status(r) != KVW_INPROGRESS)
		kvw_req_free(r);
	return NULL;
}

struct pair2 {
	struct side srv;
	kvw_ctx *cctx;
	kvw_ep *c;
	struct kvwt_pool src;
	pthread_t th;
};

static void pair2_open(struct pair2 *p, uint32_t layers, uint32_t blocks, uint64_t bb)
{
	char uri[128];
	memset(p, 0, sizeof(*p));
	p->srv.ctx = kvwt_ctx(NULL);
	p->cctx = kvwt_ctx(NULL);
	kvwt_pool_make(p->srv.ctx, &p->srv.pool, layers, blocks * 2, bb, bb);
	kvwt_pool_make(p->cctx, &p->src, layers, blocks, bb, bb);
	kvwt_pool_fill(&p->src, 71);
	kvwt_pool_fill(&p->srv.pool, 72);
	p->srv.n = blocks;
	p->srv.seq = 4242;
	p->srv.status = KVW_INPROGRESS;
	kvwt_pick_blocks(p->srv.blk, blocks, blocks * 2, 9);
	loop_uri(uri, sizeof(uri), "thr");
	cr_assert_eq(kvw_listen(p->srv.ctx, uri, &p->srv.l), KVW_OK);
	cr_assert_eq(pthread_create(&p->th, NULL, server_run, &p->srv), 0);
	cr_assert_eq(kvw_connect(p->cctx, uri, 10000, &p->c), KVW_OK, "%s", kvw_ctx_last_error(p->cctx));
	uint64_t end = kvwt_now_ms() + 10000;
	while (!atomic_load(&p->srv.ready) && kvwt_now_ms() < end)
		kvw_progress(p->cctx);
	cr_assert(atomic_load(&p->srv.ready), "the server thread never granted");
}

static void pair2_close(struct pair2 *p)
{
	atomic_store(&p->srv.stop, 1);
	pthread_join(p->th, NULL);
	kvw_ep_close(p->c);
	kvw_ep_close(p->srv.ep);
	kvw_listener_close(p->srv.l);
	kvwt_pool_free(&p->srv.pool);
	kvw_ctx_destroy(p->cctx);
	kvw_ctx_destroy(p->srv.ctx);
}

static kvw_status drive_req(kvw_ctx *ctx, kvw_req *r, int ms)
{
	uint64_t end = kvwt_now_ms() + (uint64_t)ms;
	kvw_event ev[32];
	while (kvw_req_status(r) == KVW_INPROGRESS && kvwt_now_ms() < end)
		if (kvw_poll(ctx, ev, 32) == 0)
			kvw_ctx_wait(ctx, 1);
	return kvw_req_status(r);
}

Test(loop, transfer_between_threads, .timeout = 60)
{
	static struct pair2 p;
	const uint32_t layers = 4, blocks = 32;
	kvw_req *r = NULL;
	static uint32_t sblk[32];
	pair2_open(&p, layers, blocks, 64 * KiB);
	for (uint32_t i = 0; i < blocks; i++)
		sblk[i] = i;
	cr_assert_geq(kvw_send_seq(p.c, p.srv.seq, p.src.lay, sblk, blocks, 0, layers, KVW_SEND_LAST, &r), 0);
	cr_assert_eq(drive_req(p.cctx, r, 20000), KVW_OK, "send: %s", kvw_strerror(kvw_req_status(r)));
	uint64_t end = kvwt_now_ms() + 10000;
	while (atomic_load(&p.srv.status) == KVW_INPROGRESS && kvwt_now_ms() < end)
		usleep(1000);
	cr_assert_eq(atomic_load(&p.srv.status), KVW_OK, "recv: %s", kvw_strerror(atomic_load(&p.srv.status)));
	for (uint32_t l = 0; l < layers; l++)
		for (uint32_t i = 0; i < blocks; i++)
			cr_assert_eq(memcmp(kvwt_page(&p.srv.pool, l, p.srv.blk[i]), kvwt_page(&p.src, l, i),
					    64 * KiB), 0, "layer %u block %u differs", l, i);
	cr_assert_eq(kvw_req_free(r), KVW_OK);
	uint64_t rtt;
	cr_assert_eq(kvw_ep_ping(p.c, 5000, &rtt), KVW_OK, "%s", kvw_ctx_last_error(p.cctx));
	kvwt_pool_free(&p.src);
	pair2_close(&p);
}

/* The other thread copies from the sender's pages while the sender aborts:
 * once kvw_req_abort returned, the pages may go at once (here: unmapped, so
 * a late read would crash). */
Test(loop, abort_while_other_thread_copies, .timeout = 90)
{
	static struct pair2 p;
	const uint32_t layers = KVWT_ASAN ? 4 : 16, blocks = 32;
	kvw_req *r = NULL;
	static uint32_t sblk[32];
	pair2_open(&p, layers, blocks, 256 * KiB);
	for (uint32_t i = 0; i < blocks; i++)
		sblk[i] = i;
	cr_assert_geq(kvw_send_seq(p.c, p.srv.seq, p.src.lay, sblk, blocks, 0, layers, KVW_SEND_LAST, &r), 0);
	for (int i = 0; i < 3; i++)
		kvw_progress(p.cctx); /* the ring takes the fragments: the server thread copies */
	kvw_status st = kvw_req_abort(r);
	cr_assert(st == KVW_OK || st == KVW_ERR_INVALID || st == KVW_ERR_BUSY, "kvw_req_abort: %s",
		  kvw_strerror(st));
	st = kvw_req_status(r);
	cr_assert(st == KVW_ERR_ABORTED || st == KVW_OK, "sender: %s", kvw_strerror(st));
	cr_assert_eq(kvw_req_free(r), KVW_OK);
	kvw_layout_destroy(p.src.lay);
	p.src.lay = NULL;
	cr_assert_eq(kvw_mem_dereg(p.src.mem), KVW_OK, "%s", kvw_ctx_last_error(p.cctx));
	uint64_t end = kvwt_now_ms() + 10000;
	while (atomic_load(&p.srv.status) == KVW_INPROGRESS && kvwt_now_ms() < end)
		kvw_progress(p.cctx);
	st = atomic_load(&p.srv.status);
	cr_assert(st == KVW_ERR_ABORTED || st == KVW_OK, "receiver: %s", kvw_strerror(st));
	uint64_t rtt;
	cr_assert_eq(kvw_ep_ping(p.c, 5000, &rtt), KVW_OK, "the endpoint after the abort: %s",
		     kvw_ctx_last_error(p.cctx));
	pair2_close(&p);
}

/* ------------------------------------------- past the ring (1024 entries) */
static void log_ring_full(void *user, unsigned level, const char *line)
{
	(void)level;
	if (strstr(line, "loop ring to") && strstr(line, "is full"))
		*(bool *)user = true;
}

/* 1,500 GRANTs queued in one go, no progress between: the ring takes 1,024
 * and the rest wait in the ordered overflow list; every sequence still
 * completes, each into its own block. */
Test(loop, grants_past_the_ring_keep_order, .timeout = 120)
{
	enum { N = 1500 };
	static const char *const cfg[] = { "max_peer_grants", "4096", "log_level", "4", NULL };
	static bool full;
	static struct kvwt_pool src, dst;
	static kvw_req *rr[N], *sr[N];
	static uint32_t idx[N];
	kvw_ctx *ctx = kvwt_ctx(cfg);
	struct kvwt_pair pr;
	kvw_ctx_set_log(ctx, log_ring_full, &full);
	kvwt_pair_open(ctx, &pr);
	kvwt_pool_make(ctx, &src, 1, N, 4 * KiB, 4 * KiB);
	kvwt_pool_make(ctx, &dst, 1, N, 4 * KiB, 4 * KiB);
	kvwt_pool_fill(&src, 81);
	kvwt_pool_fill(&dst, 82);
	for (uint32_t k = 0; k < N; k++) {
		idx[k] = k;
		cr_assert_eq(kvw_recv_seq(pr.server, 1000 + k, dst.lay, &idx[k], 1, 60000000, &rr[k]), KVW_OK,
			     "grant %u: %s", k, kvw_ctx_last_error(ctx));
	}
	cr_assert(full, "1,500 GRANTs fit in the ring: the overflow list was not exercised");
	for (uint32_t k = 0; k < N; k++)
		cr_assert_geq(kvw_send_seq(pr.client, 1000 + k, src.lay, &idx[k], 1, 0, 1, KVW_SEND_LAST, &sr[k]), 0,
			      "send %u: %s", k, kvw_ctx_last_error(ctx));
	uint64_t end = kvwt_now_ms() + 60000;
	uint32_t done = 0;
	while (done < 2 * N && kvwt_now_ms() < end) {
		kvw_event ev[64];
		int n = kvw_poll(ctx, ev, 64);
		for (int i = 0; i < n; i++)
			if (ev[i].type == KVW_EV_SEQ) {
				cr_assert_eq(ev[i].status, KVW_OK, "a sequence ended %s: %s", kvw_strerror(ev[i].status),
					     kvw_ctx_last_error(ctx));
				done++;
			}
	}
	cr_assert_eq(done, 2 * N, "%u of %u sequence ends", done, 2 * N);
	cr_assert_eq(memcmp(dst.base, src.base, (size_t)N * 4 * KiB), 0, "a block landed in the wrong place");
	for (uint32_t k = 0; k < N; k++) {
		kvw_req_free(rr[k]);
		kvw_req_free(sr[k]);
	}
	kvw_ep_close(pr.client);
	kvw_ep_close(pr.server);
	kvw_listener_close(pr.l);
	kvwt_pool_free(&src);
	kvwt_pool_free(&dst);
	kvw_ctx_destroy(ctx);
}

/* The peer closes: the CLOSE it sent first arrives (the core ends the
 * survivor with "peer closed the endpoint"), rather than the driver's own
 * "went away without a CLOSE frame". */
static void log_keep(void *user, unsigned level, const char *line)
{
	(void)level;
	char *buf = user;
	size_t n = strlen(buf);
	snprintf(buf + n, 4096 - n, "%s\n", line);
}

Test(loop, peer_close_delivers_its_close)
{
	static const char *const cfg[] = { "log_level", "3", NULL };
	static char logs[4096];
	kvw_ctx *ctx = kvwt_ctx(cfg);
	struct kvwt_pair pr;
	kvw_ctx_set_log(ctx, log_keep, logs);
	kvwt_pair_open(ctx, &pr);
	kvw_ep_close(pr.client);
	uint64_t end = kvwt_now_ms() + 5000;
	while (kvw_ep_status(pr.server) == KVW_OK && kvwt_now_ms() < end)
		kvw_progress(ctx);
	cr_assert_eq(kvw_ep_status(pr.server), KVW_ERR_PEER_DEAD, "survivor: %s",
		     kvw_strerror(kvw_ep_status(pr.server)));
	cr_assert(strstr(logs, "peer closed the endpoint"), "the CLOSE did not arrive: %s", logs);
	cr_assert(!strstr(logs, "without a CLOSE frame"), "the CLOSE did not arrive first: %s", logs);
	kvw_ep_close(pr.server);
	kvw_listener_close(pr.l);
	kvw_ctx_destroy(ctx);
}
