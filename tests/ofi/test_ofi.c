/* SPDX-License-Identifier: MIT */
/*
 * ofi driver cases the one-process conformance suite cannot reach: the
 * receiver's abort fence between two contexts (two libfabric domains), the
 * sender driven by its own thread as another process would be. The fence
 * must be answered by the sender's marker (well before abort_timeout_ms),
 * and no byte may land in the receiver's pages after kvw_req_abort returned.
 * Provider from KVW_TEST_LISTEN_URI (ofi://127.0.0.1:0?provider=NAME).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kvwt.h"

#define KiB 1024ull
#define FL 8u
#define FN 256u
#define FB (64 * KiB)

static atomic_bool stop;

static bool stopped(void *arg)
{
	(void)arg;
	return atomic_load(&stop);
}

static void *sender_loop(void *arg)
{
	kvwt_drive1(arg, 60000, stopped, NULL);
	return NULL;
}

static bool landed_some(void *arg)
{
	kvw_req_info in = {.size = sizeof(in)};
	return kvw_req_query(arg, &in) == KVW_OK && in.bytes > 0;
}

static bool rec_done(void *arg)
{
	return ((struct kvwt_rec *)arg)->status != KVW_INPROGRESS;
}

Test(ofi, fence_between_two_domains, .timeout = 120)
{
	kvw_ctx *rc = kvwt_ctx(NULL), *sc = kvwt_ctx(NULL);
	kvw_listener *l;
	kvw_ep *cl = NULL, *sv = NULL;
	char uri[256];
	static struct kvwt_pool src, dst;
	static uint32_t blk[FN];
	struct kvwt_rec srec, rrec;
	kvw_req *rreq = NULL, *sreq = NULL;
	pthread_t th;

	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(rc, uri, &l), KVW_OK, "%s", kvw_ctx_last_error(rc));
	cr_assert_eq(kvwt_connect2(sc, kvw_listener_uri(l), l, 10000, &cl, &sv), KVW_OK,
		     "%s", kvw_ctx_last_error(sc));
	kvwt_pool_make(sc, &src, FL, FN, FB, FB);
	kvwt_pool_make(rc, &dst, FL, FN, FB, FB);
	kvwt_pool_fill(&src, 71);
	kvwt_pool_fill(&dst, 72);
	for (uint32_t i = 0; i < FN; i++)
		blk[i] = i;
	kvwt_rec_init(&srec);
	kvwt_rec_init(&rrec);
	cr_assert_eq(kvw_recv_seq(sv, 7, dst.lay, blk, FN, 60000000, &rreq), KVW_OK);
	kvw_req_set_user_data(rreq, &rrec);
	/* half the layers only: the sequence cannot finish before the abort */
	cr_assert_geq(kvw_send_seq(cl, 7, src.lay, blk, FN, 0, FL / 2, 0, &sreq), 0);
	kvw_req_set_user_data(sreq, &srec);
	atomic_store(&stop, false);
	cr_assert_eq(pthread_create(&th, NULL, sender_loop, sc), 0);
	cr_assert(kvwt_drive1(rc, 20000, landed_some, rreq), "no byte landed in 20 s");
	uint64_t t0 = kvwt_now_ms();
	cr_assert_eq(kvw_req_abort(rreq), KVW_OK, "%s", kvw_ctx_last_error(rc));
	uint64_t took = kvwt_now_ms() - t0;
	size_t len = dst.layer_stride * FL;
	uint8_t *snap = malloc(len);
	cr_assert_not_null(snap);
	memset(dst.base, 0x5a, len); /* the pages are ours again */
	memcpy(snap, dst.base, len);
	kvwt_spin(&rc, 1, 500);
	bool same = memcmp(snap, dst.base, len) == 0;
	cr_assert(kvwt_drive1(rc, 5000, rec_done, &rrec));
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	cr_assert(kvwt_drive1(sc, 10000, rec_done, &srec), "the sender never learnt of the abort");
	cr_assert(same, "bytes landed in the receiver's pages after kvw_req_abort returned");
	cr_assert_lt(took, 1000, "the fence took %llu ms: the sender's marker never came (abort_timeout_ms)",
		     (unsigned long long)took);
	cr_assert_eq(rrec.status, KVW_ERR_ABORTED, "%s", kvw_strerror(rrec.status));
	cr_assert_eq(srec.status, KVW_ERR_ABORTED, "sender: %s", kvw_strerror(srec.status));
	free(snap);
	kvw_req_free(sreq);
	kvw_req_free(rreq);
	kvw_ep_close(cl);
	kvw_ep_close(sv);
	kvw_listener_close(l);
	kvwt_pool_free(&src);
	kvwt_pool_free(&dst);
	kvw_ctx_destroy(sc);
	kvw_ctx_destroy(rc);
}

/*
 * Many small writes, the shape of nixl#1862 (a notification count that
 * stalled under thousands of small batched writes): three sequences at
 * once between two domains, each 16 layers x 1,024 blocks of 256 B,
 * 1,000 B and 4 KiB (a 64-byte hole after every block, so no two blocks
 * merge into one write: 49,152 writes), the blocks shuffled differently on
 * each side, sent a layer per call. Every receiver count must reach its
 * total before the sequences' deadline (a lost completion in the count
 * ends as TIMEDOUT, not a hang); then every byte is checked, the holes too.
 */
#define SL 16u
#define SN 1024u
#define SGAP 64u
#define SDEADLINE_US 60000000ull
static const uint64_t small_bb[] = {256, 1000, 4096};
#define NS (sizeof(small_bb) / sizeof(small_bb[0]))

static bool recs_done(void *arg)
{
	struct kvwt_rec *r = arg;
	for (size_t i = 0; i < NS; i++)
		if (r[i].status == KVW_INPROGRESS)
			return false;
	return true;
}

static void small_check(const struct kvwt_pool *d, const uint32_t *dblk, const uint32_t *sblk,
			uint64_t stag, const uint8_t *dfill)
{
	for (uint32_t l = 0; l < SL; l++)
		for (uint32_t i = 0; i < SN; i++) {
			const uint8_t *pg = kvwt_page(d, l, dblk[i]);
			cr_assert(kvwt_check(pg, d->bb, kvwt_seed(stag, l, sblk[i])),
				  "%llu-byte blocks: layer %u block %u differs", (unsigned long long)d->bb,
				  l, dblk[i]);
			uint64_t off = (uint64_t)(pg - d->base) + d->bb;
			cr_assert(memcmp(d->base + off, dfill + off, SGAP) == 0,
				  "%llu-byte blocks: the hole after layer %u block %u was written",
				  (unsigned long long)d->bb, l, dblk[i]);
		}
}

Test(ofi, many_small_writes, .timeout = 240)
{
	kvw_ctx *rc = kvwt_ctx(NULL), *sc = kvwt_ctx(NULL);
	kvw_listener *l;
	kvw_ep *cl = NULL, *sv = NULL;
	char uri[256];
	static struct kvwt_pool src[NS], dst[NS];
	static uint32_t sblk[NS][SN], dblk[NS][SN];
	static struct kvwt_rec srec[NS], rrec[NS];
	kvw_req *rreq[NS] = {0}, *sreq[NS] = {0};
	pthread_t th;

	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(rc, uri, &l), KVW_OK, "%s", kvw_ctx_last_error(rc));
	cr_assert_eq(kvwt_connect2(sc, kvw_listener_uri(l), l, 10000, &cl, &sv), KVW_OK,
		     "%s", kvw_ctx_last_error(sc));
	for (size_t s = 0; s < NS; s++) {
		kvwt_pool_make(sc, &src[s], SL, SN, small_bb[s], small_bb[s] + SGAP);
		kvwt_pool_make(rc, &dst[s], SL, SN, small_bb[s], small_bb[s] + SGAP);
		kvwt_pool_fill(&src[s], 100 + s);
		kvwt_pool_fill(&dst[s], 200 + s);
		kvwt_pick_blocks(sblk[s], SN, SN, 300 + s);
		kvwt_pick_blocks(dblk[s], SN, SN, 400 + s);
		kvwt_rec_init(&srec[s]);
		kvwt_rec_init(&rrec[s]);
		cr_assert_eq(kvw_recv_seq(sv, 50 + s, dst[s].lay, dblk[s], SN, SDEADLINE_US, &rreq[s]),
			     KVW_OK, "%s", kvw_ctx_last_error(rc));
		kvw_req_set_user_data(rreq[s], &rrec[s]);
	}
	/* a layer per call, the three sequences interleaved */
	for (uint32_t ly = 0; ly < SL; ly++)
		for (size_t s = 0; s < NS; s++) {
			cr_assert_geq(kvw_send_seq(cl, 50 + s, src[s].lay, sblk[s], SN, ly, ly + 1, 0,
						   &sreq[s]), 0, "%s", kvw_ctx_last_error(sc));
			kvw_req_set_user_data(sreq[s], &srec[s]);
		}
	atomic_store(&stop, false);
	uint64_t t0 = kvwt_now_ms();
	cr_assert_eq(pthread_create(&th, NULL, sender_loop, sc), 0);
	bool done = kvwt_drive1(rc, (int)(SDEADLINE_US / 1000) + 10000, recs_done, rrec);
	uint64_t took = kvwt_now_ms() - t0;
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	cr_assert(done, "the receiver never finished (no deadline event either)");
	for (size_t s = 0; s < NS; s++) {
		kvw_req_info in = {.size = sizeof(in)};
		cr_assert_eq(kvw_req_query(rreq[s], &in), KVW_OK);
		cr_assert_eq(rrec[s].status, KVW_OK,
			     "%llu-byte blocks: %s after %llu ms, %llu of %llu bytes landed: the count stalled",
			     (unsigned long long)small_bb[s], kvw_strerror(rrec[s].status),
			     (unsigned long long)took, (unsigned long long)in.bytes,
			     (unsigned long long)(small_bb[s] * SL * SN));
	}
	cr_assert(kvwt_drive1(sc, 10000, recs_done, srec), "a sender never finished");
	for (size_t s = 0; s < NS; s++) {
		cr_assert_eq(srec[s].status, KVW_OK, "sender: %s", kvw_strerror(srec[s].status));
		size_t len = dst[s].layer_stride * SL;
		uint8_t *fill = malloc(len);
		cr_assert_not_null(fill);
		kvwt_fill(fill, len, kvwt_seed(200 + s, 0xffffffffu, 0));
		small_check(&dst[s], dblk[s], sblk[s], 100 + s, fill);
		free(fill);
		kvw_req_free(sreq[s]);
		kvw_req_free(rreq[s]);
	}
	cr_log_info("49,152 writes of 256 B..4 KiB in %llu ms", (unsigned long long)took);
	kvw_ep_close(cl);
	kvw_ep_close(sv);
	kvw_listener_close(l);
	for (size_t s = 0; s < NS; s++) {
		kvwt_pool_free(&src[s]);
		kvwt_pool_free(&dst[s]);
	}
	kvw_ctx_destroy(sc);
	kvw_ctx_destroy(rc);
}
