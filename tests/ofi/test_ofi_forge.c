/* SPDX-License-Identifier: MIT */
/*
 * Scoped grants on ofi (issue 14): what the receiver's provider itself must
 * refuse. The "attacker" is the real sender whose driver state (its copy of
 * the receiver's per-run keys, ofi_ep.keys) or core state (the peer's grant
 * it addresses from) is tampered with between the grant and the writes, so
 * the forged fi_writemsg calls reach the fabric: a key never issued, the
 * stale key of a finished grant, addresses just past the last and just
 * before the first granted block, and a hole between two granted blocks
 * (an MR per run). Each time: every byte of the receiver's arena outside
 * what was honestly written is unchanged, the sender's request ends
 * REJECTED with the provider's words and remote_refused counted, the
 * receiver's request ends (never hangs), and an honest sequence on a new
 * endpoint between the same two domains still lands. And requested grant
 * keys are random, not a counter a peer could guess.
 * Two contexts (two libfabric domains, as two processes), one thread
 * driving both. Provider from KVW_TEST_LISTEN_URI.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvwt.h"
#include "kvw_int.h" /* a test: the core's structs too */
#include "ofi_int.h"

#define L 4u
#define N 32u
#define BB (64u * 1024u)
#define G 8u /* granted blocks: N/4 .. N/4+G-1 (or every other one) */
#define RECV_US 4000000ull

static const char *const cfg[] = {"keepalive_ms", "200", "peer_dead_ms", "4000", NULL};

struct fx {
	kvw_ctx *c[2]; /* receiver, sender */
	kvw_listener *l;
	kvw_ep *cl, *sv;
	struct kvwt_pool src, dst;
	uint8_t *snap;  /* the receiver's arena before the writes */
	uint32_t blk[G];
	kvw_req *sreq, *rreq;
	struct kvwt_rec srec, rrec;
};

static void fx_connect(struct fx *f, kvw_ep **cl, kvw_ep **sv)
{
	cr_assert_eq(kvwt_connect2(f->c[1], kvw_listener_uri(f->l), f->l, 10000, cl, sv), KVW_OK,
		     "%s", kvw_ctx_last_error(f->c[1]));
	cr_assert(*sv, "the listener did not accept");
	kvwt_spin(f->c, 2, 50);
}

static void fx_open(struct fx *f, bool holes)
{
	char uri[256];
	kvw_ep_info in = {.size = sizeof(in)};

	memset(f, 0, sizeof(*f));
	f->c[0] = kvwt_ctx(cfg);
	f->c[1] = kvwt_ctx(cfg);
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(f->c[0], uri, &f->l), KVW_OK, "%s", kvw_ctx_last_error(f->c[0]));
	fx_connect(f, &f->cl, &f->sv);
	cr_assert_eq(kvw_ep_query(f->cl, &in), KVW_OK);
	cr_assert_str_eq(in.driver, "ofi", "KVW_TEST_DRIVER must be ofi for these cases");
	kvwt_pool_make(f->c[1], &f->src, L, N, BB, BB);
	kvwt_pool_make(f->c[0], &f->dst, L, N, BB, BB);
	kvwt_pool_fill(&f->src, 1);
	kvwt_pool_fill(&f->dst, 2);
	for (uint32_t i = 0; i < G; i++)
		f->blk[i] = N / 4 + (holes ? 2 * i : i);
	kvwt_rec_init(&f->srec);
	kvwt_rec_init(&f->rrec);
}

static void fx_close(struct fx *f)
{
	if (f->sreq)
		kvw_req_free(f->sreq);
	if (f->rreq)
		kvw_req_free(f->rreq);
	kvw_ep_close(f->cl);
	kvw_ep_close(f->sv);
	kvw_listener_close(f->l);
	kvwt_pool_free(&f->src);
	kvwt_pool_free(&f->dst);
	kvw_ctx_destroy(f->c[1]);
	kvw_ctx_destroy(f->c[0]);
	free(f->snap);
}

static const char *fx_prov(struct fx *f)
{
	return ofi_of_ep(f->cl)->prov;
}

/* The receiver's GRANT and KEY records reach the sender. */
static void fx_grant(struct fx *f, uint64_t seq)
{
	cr_assert_eq(kvw_recv_seq(f->sv, seq, f->dst.lay, f->blk, G, RECV_US, &f->rreq), KVW_OK,
		     "%s", kvw_ctx_last_error(f->c[0]));
	kvw_req_set_user_data(f->rreq, &f->rrec);
	kvwt_spin(f->c, 2, 150);
}

static void fx_send(struct fx *f, uint64_t seq, uint32_t first, uint32_t end, unsigned flags)
{
	kvw_req *r = NULL;
	cr_assert_geq(kvw_send_seq(f->cl, seq, f->src.lay, f->blk, G, first, end, flags, &r), 0,
		      "%s", kvw_ctx_last_error(f->c[1]));
	if (!f->sreq) {
		f->sreq = r;
		kvw_req_set_user_data(r, &f->srec);
	}
}

static bool both_done(void *arg)
{
	struct fx *f = arg;
	return f->srec.status != KVW_INPROGRESS && f->rrec.status != KVW_INPROGRESS;
}

/* The sender's copy of the receiver's keys of a grant, a key per run. */
static struct ofi_ent *sender_keys(struct fx *f, uint32_t token)
{
	struct ofi_ent *k = ofi_tab_find(&ofi_ep_of(f->cl)->keys, token, false);

	cr_assert(k && k->n_got == k->n_runs, "the sender never learnt the keys of grant %08x", token);
	return k;
}

static void snap_take(struct fx *f)
{
	size_t len = f->dst.layer_stride * L;

	f->snap = malloc(len);
	cr_assert_not_null(f->snap);
	memcpy(f->snap, f->dst.base, len);
}

static bool granted(const struct fx *f, uint32_t b)
{
	for (uint32_t i = 0; i < G; i++)
		if (f->blk[i] == b)
			return true;
	return false;
}

/* Every page of the receiver's arena is as in the snapshot, but for granted
 * pages that hold exactly what the honest write of that block carries
 * (honest: true where honest writes were in the sequence). */
static void dst_untouched(struct fx *f, bool honest)
{
	for (uint32_t l = 0; l < L; l++)
		for (uint32_t b = 0; b < N; b++) {
			const uint8_t *pg = kvwt_page(&f->dst, l, b);
			size_t off = (size_t)(pg - f->dst.base);
			if (!memcmp(pg, f->snap + off, BB))
				continue;
			cr_assert(honest && granted(f, b) && !memcmp(pg, kvwt_page(&f->src, l, b), BB),
				  "page (%u, %u) of the receiver was written (%s)", l, b,
				  !granted(f, b) ? "outside the grant" :
				  honest ? "a granted block, not with its honest bytes" :
					   "a granted block, by a write the provider should have refused");
		}
	/* the gaps between layers (if any) and after the last page */
	for (size_t o = f->dst.bb * N; o < f->dst.layer_stride; o++)
		cr_assert_eq(f->dst.base[o], f->snap[o], "the gap after layer 0 was written");
}

/* Does the provider tell the sender of a write its target refused?
 * libfabric 1.17: tcp;ofi_rxm answers it with an error completion
 * (FI_ECANCELED); shm ("error processing command") and udp;ofi_rxd drop it
 * at the target and never complete it, so nobody is told and the
 * receiver's deadline ends both requests. */
static bool prov_reports(struct fx *f)
{
	return strncmp(fx_prov(f), "shm", 3) && !strstr(fx_prov(f), "ofi_rxd");
}

/* The provider refused the forged writes (nothing of them landed); where it
 * tells the sender, its request ends REJECTED with the provider's words
 * and remote_refused counts it; elsewhere both ends at the receiver's
 * deadline, never a hang. */
static void refused_and_reported(struct fx *f, bool honest)
{
	kvw_counters cs = {.size = sizeof(cs)};
	char why[256];

	cr_assert(kvwt_drive(f->c, 2, 15000, both_done, f), "no verdict within 15 s (sender %s, receiver %s)",
		  kvw_strerror(f->srec.status), kvw_strerror(f->rrec.status));
	snprintf(why, sizeof(why), "%s", kvw_ctx_last_error(f->c[1])); /* later calls reset it */
	cr_log_info("%s: sender %s (%s), receiver %s", fx_prov(f), kvw_strerror(f->srec.status), why,
		    kvw_strerror(f->rrec.status));
	dst_untouched(f, honest);
	cr_assert_lt(f->rrec.status, 0, "receiver: %s", kvw_strerror(f->rrec.status));
	cr_assert_eq(kvw_ep_counters(f->cl, &cs), KVW_OK);
	if (!prov_reports(f)) {
		/* silent refusal: the writes never complete, the grant's deadline ends it */
		cr_assert_eq(f->rrec.status, KVW_ERR_TIMEDOUT, "receiver: %s", kvw_strerror(f->rrec.status));
		cr_assert_lt(f->srec.status, 0, "sender: %s", kvw_strerror(f->srec.status));
		cr_assert_eq(cs.remote_refused, 0, "%s told of a refusal: update prov_reports", fx_prov(f));
		return;
	}
	cr_assert_eq(f->srec.status, KVW_ERR_REJECTED, "sender: %s (%s)", kvw_strerror(f->srec.status), why);
	cr_assert(strstr(why, "refused a write") && strstr(why, fx_prov(f)), "reason: %s", why);
	cr_assert_geq(cs.remote_refused, 1, "the sender's refused write was not counted");
}

/* A new endpoint between the same two domains moves an honest sequence. */
static void honest_after(struct fx *f)
{
	kvw_ep *cl = NULL, *sv = NULL;
	kvw_req *rr = NULL, *sr = NULL;
	struct kvwt_rec rrec, srec;
	struct kvwt_rec *recs[] = {&rrec, &srec, NULL};
	uint32_t blk[G];

	fx_connect(f, &cl, &sv);
	for (uint32_t i = 0; i < G; i++)
		blk[i] = N / 2 + i;
	kvwt_rec_init(&rrec);
	kvwt_rec_init(&srec);
	cr_assert_eq(kvw_recv_seq(sv, 99, f->dst.lay, blk, G, RECV_US, &rr), KVW_OK);
	kvw_req_set_user_data(rr, &rrec);
	cr_assert_geq(kvw_send_seq(cl, 99, f->src.lay, blk, G, 0, L, KVW_SEND_LAST, &sr), 0);
	kvw_req_set_user_data(sr, &srec);
	cr_assert(kvwt_drive(f->c, 2, 15000, kvwt_recs_done, recs), "the honest sequence did not finish");
	cr_assert_eq(rrec.status, KVW_OK, "honest receiver: %s", kvw_strerror(rrec.status));
	cr_assert_eq(srec.status, KVW_OK, "honest sender: %s", kvw_strerror(srec.status));
	for (uint32_t l = 0; l < L; l++)
		for (uint32_t i = 0; i < G; i++)
			cr_assert_eq(memcmp(kvwt_page(&f->dst, l, blk[i]), kvwt_page(&f->src, l, blk[i]), BB), 0,
				     "honest layer %u block %u differs", l, blk[i]);
	kvw_req_free(sr);
	kvw_req_free(rr);
	kvw_ep_close(cl);
	kvw_ep_close(sv);
}

TestSuite(ofi_forge, .timeout = 90);

/* (a) A key never issued: each run's key with bits flipped. */
Test(ofi_forge, forged_key_refused_by_the_provider)
{
	static struct fx f;
	fx_open(&f, false);
	fx_grant(&f, 1);
	struct ofi_ent *k = sender_keys(&f, f.rreq->token);
	for (uint32_t i = 0; i < k->n_runs; i++)
		k->run[i].key ^= 0x5a5a00u;
	snap_take(&f);
	fx_send(&f, 1, 0, L, KVW_SEND_LAST);
	refused_and_reported(&f, false);
	honest_after(&f);
	fx_close(&f);
}

/* (b) The keys of grant 1, which ended (its MRs closed), used for grant 2
 * over the same blocks. */
Test(ofi_forge, stale_key_of_a_finished_grant_refused)
{
	static struct fx f;
	static struct ofi_run old[64];
	fx_open(&f, false);
	fx_grant(&f, 1);
	struct ofi_ent *k = sender_keys(&f, f.rreq->token);
	uint32_t n = k->n_runs;
	cr_assert_leq(n, 64);
	memcpy(old, k->run, n * sizeof(*old));
	fx_send(&f, 1, 0, L, KVW_SEND_LAST);
	cr_assert(kvwt_drive(f.c, 2, 10000, both_done, &f));
	cr_assert_eq(f.rrec.status, KVW_OK, "honest grant 1: %s", kvw_strerror(f.rrec.status));
	cr_assert_eq(kvw_req_free(f.sreq), KVW_OK);
	cr_assert_eq(kvw_req_free(f.rreq), KVW_OK);
	kvwt_pool_fill(&f.dst, 2);
	f.sreq = f.rreq = NULL;
	kvwt_rec_init(&f.srec);
	kvwt_rec_init(&f.rrec);
	fx_grant(&f, 2);
	k = sender_keys(&f, f.rreq->token); /* same blocks: same runs */
	cr_assert_eq(k->n_runs, n);
	for (uint32_t i = 0; i < n; i++) {
		cr_assert_eq(k->run[i].addr, old[i].addr);
		cr_assert_neq(k->run[i].key, old[i].key, "grant 2 got grant 1's key again");
		k->run[i].key = old[i].key;
	}
	snap_take(&f);
	fx_send(&f, 2, 0, L, KVW_SEND_LAST);
	refused_and_reported(&f, false);
	honest_after(&f);
	fx_close(&f);
}

/* (c) Addresses outside the grant: the peer's grant the sender addresses
 * from is moved by shift bytes before the first write is built, so every
 * fragment fits no run and goes with the first run's key (ofi_run_of):
 * layer 0's writes then reach the provider as a real key of layer 0's run
 * with an address just outside its MR, which only the provider's bounds
 * check refuses. */
static void outside(int64_t shift)
{
	static struct fx f;
	fx_open(&f, false);
	fx_grant(&f, 1);
	snap_take(&f);
	fx_send(&f, 1, 0, 1, 0);
	f.sreq->pg.mem_addr += (uint64_t)shift;
	fx_send(&f, 1, 1, L, KVW_SEND_LAST);
	refused_and_reported(&f, false);
	honest_after(&f);
	fx_close(&f);
}

/* layer 0's writes into blocks N/4+G .. N/4+2G-1: the first right after the
 * last granted block */
Test(ofi_forge, address_past_the_last_granted_block_refused)
{
	outside((int64_t)G * BB);
}

/* layer 0's writes into blocks N/4-G .. N/4-1: the last right before the
 * first granted block */
Test(ofi_forge, address_before_the_first_granted_block_refused)
{
	outside(-(int64_t)G * BB);
}

/* (d) A hole between two granted blocks: every other block granted, so an
 * MR per block; the first block of the list is aimed at the hole right
 * after it (inside the grant's span). */
Test(ofi_forge, address_between_granted_blocks_refused)
{
	static struct fx f;
	fx_open(&f, true);
	fx_grant(&f, 1);
	cr_assert_eq(sender_keys(&f, f.rreq->token)->n_runs, L * G, "not a run per granted block");
	snap_take(&f);
	fx_send(&f, 1, 0, 1, 0);
	cr_assert_eq(f.sreq->pg.blocks[0], N / 4);
	f.sreq->pg.blocks[0] = N / 4 + 1;
	fx_send(&f, 1, 1, L, KVW_SEND_LAST);
	refused_and_reported(&f, true);
	honest_after(&f);
	fx_close(&f);
}

/* Requested keys (no FI_MR_PROV_KEY) are not a counter: keys are per
 * domain, shared by every endpoint of a context, so a counter would let a
 * peer guess the live keys of another endpoint's grants. 32 grants of one
 * block each (a run per layer: 128 keys in the order they were made): at
 * most a few consecutive keys lie within 2^20 of each other (random 64-bit
 * keys: ~0; a counter: every one) and none repeats. */
Test(ofi_forge, requested_keys_not_a_counter)
{
	static struct fx f;
	static kvw_req *rr[N];
	static struct kvwt_rec rec[N];
	static struct kvwt_rec *recs[N + 1];
	static uint64_t key[N * L];
	uint32_t n = 0, near = 0, same = 0;

	fx_open(&f, false);
	if (ofi_of_ep(f.sv)->prov_key)
		cr_skip_test("%s picks its own keys (FI_MR_PROV_KEY)", fx_prov(&f));
	for (uint32_t i = 0; i < N; i++) {
		kvwt_rec_init(&rec[i]);
		recs[i] = &rec[i];
		cr_assert_eq(kvw_recv_seq(f.sv, 200 + i, f.dst.lay, &i, 1, 500000, &rr[i]), KVW_OK,
			     "%s", kvw_ctx_last_error(f.c[0]));
		kvw_req_set_user_data(rr[i], &rec[i]);
	}
	kvwt_spin(f.c, 2, 150);
	for (uint32_t i = 0; i < N; i++) {
		struct ofi_ent *k = sender_keys(&f, rr[i]->token);
		cr_assert_eq(k->n_runs, L);
		for (uint32_t j = 0; j < L; j++)
			key[n++] = k->run[j].key;
	}
	for (uint32_t i = 1; i < n; i++) {
		uint64_t d = key[i] > key[i - 1] ? key[i] - key[i - 1] : key[i - 1] - key[i];
		near += d < (1u << 20);
		for (uint32_t j = 0; j < i; j++)
			same += key[i] == key[j];
	}
	cr_log_info("%s: keys %llx %llx %llx ...: %u of %u steps under 2^20, %u repeats", fx_prov(&f),
		    (unsigned long long)key[0], (unsigned long long)key[1], (unsigned long long)key[2],
		    near, n - 1, same);
	cr_assert_leq(near, 8, "%u of %u consecutive grant keys lie within 2^20: a counter", near, n - 1);
	cr_assert_eq(same, 0, "%u grant keys repeat", same);
	recs[N] = NULL;
	cr_assert(kvwt_drive(f.c, 2, 15000, kvwt_recs_done, recs), "the grants did not expire");
	for (uint32_t i = 0; i < N; i++)
		kvw_req_free(rr[i]);
	fx_close(&f);
}
