/* SPDX-License-Identifier: MIT */
/* Many peers per context (issue 16): config ep_cache (kvw_connect to a URI
 * with a live endpoint returns it, counted; first connects share one
 * handshake), ep_idle_close_ms, and peer incarnations (a restarted peer
 * fails the endpoints to its earlier incarnation PEER_DEAD at once). Two
 * contexts in one process: a client with the cache, a listener without;
 * the driver comes from KVW_TEST_DRIVER (tcp, shm). */
#include "kvwt.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

TestSuite(fleet_epcache, .timeout = 120);

struct side {
	kvw_ctx *c, *s;         /* client (ep_cache per the test), server */
	kvw_listener *l;
	char uri[160];
};

static void side_open(struct side *x, const char *cache, const char *idle_ms)
{
	const char *cfg[] = {"ep_cache", cache, "ep_idle_close_ms", idle_ms, NULL};
	x->c = kvwt_ctx(cfg);
	x->s = kvwt_ctx(NULL);
	kvwt_listen_uri(x->uri, sizeof(x->uri));
	cr_assert_eq(kvw_listen(x->s, x->uri, &x->l), KVW_OK, "%s", kvw_ctx_last_error(x->s));
	snprintf(x->uri, sizeof(x->uri), "%s", kvw_listener_uri(x->l));
}

static void side_close(struct side *x)
{
	kvw_ctx_destroy(x->c);
	if (x->l)
		kvw_listener_close(x->l);
	kvw_ctx_destroy(x->s);
}

/* Another URI of the same peer (HOST:PORT): a query parameter added. */
static void side_other_uri(const struct side *x, char *buf, size_t len)
{
	snprintf(buf, len, "%s%srails=1", x->uri, strchr(x->uri, '?') ? "&" : "?");
}

/* Connects through the client's context while the server's progresses. */
static kvw_ep *side_connect(struct side *x, const char *uri)
{
	kvw_ep *ep = NULL;
	cr_assert_eq(kvw_connect_start(x->c, uri, &ep), KVW_OK, "%s", kvw_ctx_last_error(x->c));
	uint64_t end = kvwt_now_ms() + 10000;
	while (kvw_ep_status(ep) == KVW_INPROGRESS && kvwt_now_ms() < end) {
		kvw_progress(x->c);
		kvw_progress(x->s);
	}
	cr_assert_eq(kvw_ep_status(ep), KVW_OK, "connect %s: %s", uri, kvw_strerror(kvw_ep_status(ep)));
	return ep;
}

/* Endpoints the server accepts within ms (taking each). */
static unsigned side_accept_all(struct side *x, int ms, kvw_ep **last)
{
	unsigned n = 0;
	uint64_t end = kvwt_now_ms() + (uint64_t)ms;
	kvw_ep *s;
	while (kvwt_now_ms() < end) {
		kvw_progress(x->c);
		if (kvw_accept(x->l, 1, &s) == KVW_OK) {
			n++;
			if (last)
				*last = s;
		}
	}
	return n;
}

static kvw_ep_info info_of(const kvw_ep *ep)
{
	kvw_ep_info in = {.size = sizeof(in)};
	cr_assert_eq(kvw_ep_query(ep, &in), KVW_OK);
	return in;
}

/* A 2-layer, 4-block sequence from c (client side) to s, verified. */
static void side_move(struct side *x, kvw_ep *c, kvw_ep *s, uint64_t seq)
{
	struct kvwt_pool src, dst;
	uint32_t blk[4] = {2, 0, 3, 1};
	kvw_req *rr = NULL, *sr = NULL;
	kvwt_pool_make(x->c, &src, 2, 4, 4096, 4096);
	kvwt_pool_make(x->s, &dst, 2, 4, 4096, 4096);
	kvwt_pool_fill(&src, seq);
	cr_assert_eq(kvw_recv_seq(s, seq, dst.lay, blk, 4, 0, &rr), KVW_OK, "%s", kvw_ctx_last_error(x->s));
	cr_assert_geq(kvw_send_seq(c, seq, src.lay, blk, 4, 0, 2, KVW_SEND_LAST, &sr), 0);
	uint64_t end = kvwt_now_ms() + 10000;
	while ((kvw_req_status(rr) == KVW_INPROGRESS || kvw_req_status(sr) == KVW_INPROGRESS) &&
	       kvwt_now_ms() < end) {
		kvw_progress(x->c);
		kvw_progress(x->s);
	}
	cr_assert_eq(kvw_req_status(rr), KVW_OK, "recv: %s", kvw_strerror(kvw_req_status(rr)));
	cr_assert_eq(kvw_req_status(sr), KVW_OK, "send: %s", kvw_strerror(kvw_req_status(sr)));
	for (uint32_t b = 0; b < 4; b++)
		for (uint32_t layer = 0; layer < 2; layer++)
			cr_assert_eq(memcmp(kvwt_page(&dst, layer, blk[b]), kvwt_page(&src, layer, blk[b]), 4096), 0);
	kvw_req_free(rr);
	kvw_req_free(sr);
	kvwt_pool_free(&src);
	kvwt_pool_free(&dst);
}

Test(fleet_epcache, off_by_default_two_connects_two_endpoints)
{
	struct side x;
	side_open(&x, "0", "60000");
	kvw_ep *a = side_connect(&x, x.uri), *b = side_connect(&x, x.uri);
	cr_assert_neq(a, b);
	cr_assert_eq(info_of(a).refs, 1);
	cr_assert_eq(side_accept_all(&x, 200, NULL), 2);
	side_close(&x);
}

Test(fleet_epcache, second_connect_reuses_the_live_endpoint)
{
	struct side x;
	kvw_ep *s = NULL;
	side_open(&x, "1", "60000");
	kvw_ep *a = side_connect(&x, x.uri), *b = side_connect(&x, x.uri);
	cr_assert_eq(a, b, "the cache handed out a second endpoint");
	cr_assert_eq(info_of(a).refs, 2);
	cr_assert_eq(side_accept_all(&x, 200, &s), 1, "one handshake reached the listener");
	kvw_ep_close(b); /* one holder lets go: the other still moves data */
	cr_assert_eq(info_of(a).refs, 1);
	side_move(&x, a, s, 11);
	side_close(&x);
}

Test(fleet_epcache, concurrent_first_connects_share_one_handshake)
{
	struct side x;
	kvw_ep *e[8];
	side_open(&x, "1", "60000");
	for (int i = 0; i < 8; i++)
		cr_assert_eq(kvw_connect_start(x.c, x.uri, &e[i]), KVW_OK);
	for (int i = 1; i < 8; i++)
		cr_assert_eq(e[i], e[0]);
	cr_assert_eq(kvw_ep_status(e[0]), KVW_INPROGRESS, "the handshake cannot be over without progress");
	cr_assert_eq(side_accept_all(&x, 300, NULL), 1);
	cr_assert_eq(kvw_ep_status(e[0]), KVW_OK);
	cr_assert_eq(info_of(e[0]).refs, 8);
	side_close(&x);
}

Test(fleet_epcache, another_uri_of_the_same_peer_is_another_endpoint)
{
	struct side x;
	char other[200];
	side_open(&x, "1", "60000");
	side_other_uri(&x, other, sizeof(other));
	kvw_ep *a = side_connect(&x, x.uri), *b = side_connect(&x, other);
	cr_assert_neq(a, b, "the cache keys on the whole URI");
	cr_assert_eq(side_accept_all(&x, 200, NULL), 2);
	side_close(&x);
}

Test(fleet_epcache, last_close_parks_it_for_the_next_connect)
{
	struct side x;
	side_open(&x, "1", "60000");
	kvw_ep *a = side_connect(&x, x.uri);
	uint64_t id = info_of(a).id;
	cr_assert_eq(side_accept_all(&x, 200, NULL), 1);
	kvw_ep_close(a);
	kvwt_spin((kvw_ctx *[]){x.c, x.s}, 2, 100);
	kvw_ep *b = side_connect(&x, x.uri);
	cr_assert_eq(info_of(b).id, id, "a parked endpoint is handed out again");
	cr_assert_eq(side_accept_all(&x, 200, NULL), 0, "no new handshake");
	side_close(&x);
}

Test(fleet_epcache, idle_endpoint_closed_after_ep_idle_close_ms)
{
	struct side x;
	kvw_ep *s = NULL;
	side_open(&x, "1", "150");
	kvw_ep *a = side_connect(&x, x.uri);
	uint64_t id = info_of(a).id;
	cr_assert_eq(side_accept_all(&x, 200, &s), 1);
	kvw_ep_close(a);
	kvwt_spin((kvw_ctx *[]){x.c, x.s}, 2, 60);
	cr_assert_eq(kvw_ep_status(s), KVW_OK, "closed before ep_idle_close_ms");
	uint64_t end = kvwt_now_ms() + 3000;
	while (kvw_ep_status(s) == KVW_OK && kvwt_now_ms() < end) {
		kvw_progress(x.c);
		kvw_progress(x.s);
	}
	cr_assert_eq(kvw_ep_status(s), KVW_ERR_PEER_DEAD, "the server saw the idle close (CLOSE): %s",
		     kvw_strerror(kvw_ep_status(s)));
	kvw_ep *b = side_connect(&x, x.uri);
	cr_assert_neq(info_of(b).id, id, "a closed endpoint is never handed out again");
	side_close(&x);
}

Test(fleet_epcache, zero_idle_time_closes_at_the_last_close)
{
	struct side x;
	kvw_ep *s = NULL;
	side_open(&x, "1", "0");
	kvw_ep *a = side_connect(&x, x.uri), *b = side_connect(&x, x.uri);
	cr_assert_eq(side_accept_all(&x, 200, &s), 1);
	kvw_ep_close(a);
	kvwt_spin((kvw_ctx *[]){x.c, x.s}, 2, 100);
	cr_assert_eq(kvw_ep_status(s), KVW_OK, "closed while b still held it");
	kvw_ep_close(b);
	kvwt_spin((kvw_ctx *[]){x.c, x.s}, 2, 200);
	cr_assert_eq(kvw_ep_status(s), KVW_ERR_PEER_DEAD);
	side_close(&x);
}

Test(fleet_epcache, failed_endpoint_is_never_handed_out)
{
	struct side x;
	kvw_ep *s = NULL;
	side_open(&x, "1", "60000");
	kvw_ep *a = side_connect(&x, x.uri);
	cr_assert_eq(side_accept_all(&x, 200, &s), 1);
	kvw_ep_close(s); /* the peer closes it */
	kvwt_spin((kvw_ctx *[]){x.c, x.s}, 2, 200);
	cr_assert_eq(kvw_ep_status(a), KVW_ERR_PEER_DEAD);
	kvw_ep *b = side_connect(&x, x.uri);
	cr_assert_neq(a, b);
	cr_assert_eq(side_accept_all(&x, 200, &s), 1);
	side_move(&x, b, s, 12);
	kvw_ep_close(a);
	side_close(&x);
}

/* A listener whose context never progresses: the handshake cannot end. */
Test(fleet_epcache, shared_failed_handshake_reaches_every_caller)
{
	const char *cfg[] = {"ep_cache", "1", "connect_timeout_ms", "400", NULL};
	kvw_ctx *c = kvwt_ctx(cfg), *srv = kvwt_ctx(NULL);
	kvw_listener *l;
	kvw_ep *a = NULL, *b = NULL;
	char uri[160];
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(srv, uri, &l), KVW_OK);
	cr_assert_eq(kvw_connect_start(c, kvw_listener_uri(l), &a), KVW_OK);
	kvw_status st = kvw_connect(c, kvw_listener_uri(l), -1, &b);
	cr_assert_eq(st, KVW_ERR_TIMEDOUT, "connect to a silent listener: %s", kvw_strerror(st));
	for (uint64_t end = kvwt_now_ms() + 200; kvw_ep_status(a) == KVW_INPROGRESS && kvwt_now_ms() < end;)
		kvw_progress(c); /* the same deadline: kvw_connect's own check may come first */
	cr_assert_eq(kvw_ep_status(a), KVW_ERR_TIMEDOUT, "the first caller sees the shared handshake fail "
		     "too: %s", kvw_strerror(kvw_ep_status(a)));
	cr_assert_eq(info_of(a).refs, 1, "the failed kvw_connect let go of its reference");
	kvw_ep_close(a);
	kvw_ctx_destroy(c);
	kvw_listener_close(l);
	kvw_ctx_destroy(srv);
}

/* A peer restarts: the old listener context keeps its accepted endpoint
 * (so the old transport still looks alive), a new context listens on the
 * same address. The first endpoint that meets the new incarnation fails
 * the old one PEER_DEAD at once, with the requests it had in flight. */
Test(fleet_epcache, new_incarnation_fails_the_old_endpoint)
{
	struct side x;
	kvw_ep *s = NULL, *s2 = NULL;
	kvw_listener *l2;
	kvw_req *rr = NULL;
	struct kvwt_pool dst;
	uint32_t blk[2] = {0, 1};
	char other[200];
	side_open(&x, "1", "60000");
	kvw_ep *a = side_connect(&x, x.uri);
	cr_assert_eq(side_accept_all(&x, 200, &s), 1);
	uint64_t inc1 = info_of(a).peer_incarnation;
	cr_assert_neq(inc1, 0, "a 1.4 peer says its incarnation");
	cr_assert_neq(info_of(s).peer_incarnation, 0, "so does the client, in its HELLO");
	cr_assert_neq(info_of(s).peer_incarnation, inc1, "two contexts, two incarnations");
	kvwt_pool_make(x.c, &dst, 2, 2, 4096, 4096);
	cr_assert_eq(kvw_recv_seq(a, 7, dst.lay, blk, 2, 0, &rr), KVW_OK);
	kvw_listener_close(x.l);
	x.l = NULL;
	kvw_ctx *s2ctx = kvwt_ctx(NULL);
	cr_assert_eq(kvw_listen(s2ctx, x.uri, &l2), KVW_OK, "%s", kvw_ctx_last_error(s2ctx));
	/* another URI of the same peer: the cache would rightly hand out a */
	side_other_uri(&x, other, sizeof(other));
	kvw_ep *b = NULL;
	cr_assert_eq(kvw_connect_start(x.c, other, &b), KVW_OK);
	uint64_t end = kvwt_now_ms() + 10000;
	while ((kvw_ep_status(b) == KVW_INPROGRESS || !s2) && kvwt_now_ms() < end) {
		kvw_progress(x.c);
		kvw_progress(x.s);
		if (!s2)
			kvw_accept(l2, 0, &s2);
	}
	cr_assert_eq(kvw_ep_status(b), KVW_OK);
	cr_assert_not_null(strstr(kvw_ctx_last_error(x.c), "restarted"), "%s", kvw_ctx_last_error(x.c));
	cr_assert_neq(info_of(b).peer_incarnation, inc1);
	cr_assert_eq(kvw_ep_status(a), KVW_ERR_PEER_DEAD, "the old endpoint: %s", kvw_strerror(kvw_ep_status(a)));
	cr_assert_eq(kvw_req_status(rr), KVW_ERR_PEER_DEAD, "its grant: %s", kvw_strerror(kvw_req_status(rr)));
	kvw_ep *c = NULL;
	cr_assert_eq(kvw_connect_start(x.c, x.uri, &c), KVW_OK);
	cr_assert_neq(c, a, "the failed endpoint left the cache");
	kvw_req_free(rr);
	kvwt_pool_free(&dst);
	kvw_ep_close(a);
	kvw_listener_close(l2);
	kvw_ctx_destroy(x.c);
	x.c = NULL;
	kvw_ctx_destroy(s2ctx);
	kvw_ctx_destroy(x.s);
}

Test(fleet_epcache, same_incarnation_keeps_both_endpoints)
{
	struct side x;
	char other[200];
	side_open(&x, "1", "60000");
	side_other_uri(&x, other, sizeof(other));
	kvw_ep *a = side_connect(&x, x.uri), *b = side_connect(&x, other);
	cr_assert_eq(info_of(a).peer_incarnation, info_of(b).peer_incarnation);
	cr_assert_eq(kvw_ep_status(a), KVW_OK, "a second endpoint to the same peer is no restart");
	side_close(&x);
}
