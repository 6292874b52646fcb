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
