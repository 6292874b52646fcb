/* SPDX-License-Identifier: MIT */
/* lat: ping-pong of one block. Block 0 of each side is what it sends,
 * block 1 where the peer's message lands. Latency = round trip / 2. */
#include "session.h"

#include <stdlib.h>
#include <string.h>

typedef struct lat_wait {
	kvw_req *req;
	kvw_status st;
	bool done;
} lat_wait;

static void lat_stamp(kvb_sess *s, uint32_t block, bool cs, uint64_t k)
{
	if (!kvb_has_stamp(s->block_bytes))
		return;
	uint64_t v = kvb_stamp(kvb_seed_dir(&s->o, cs), k, 0);
	memcpy(kvb_flow_page(&s->send, 0, block), &v, 8);
}

static bool lat_stamp_ok(kvb_sess *s, bool cs, uint64_t k)
{
	uint64_t want = kvb_stamp(kvb_seed_dir(&s->o, cs), k, 0), got;
	if (!kvb_has_stamp(s->block_bytes))
		return true;
	memcpy(&got, kvb_flow_page(&s->send, 0, 1), 8);
	return got == want;
}

/* Polls until waiter `need` is done; events of the other waiters are kept.
 * The server also watches the control link (stop). */
static int lat_wait_for(kvb_sess *s, lat_wait *w, size_t n, size_t need, bool *stop)
{
	uint64_t last = kvb_now_ns();
	unsigned turn = 0;
	for (;;) {
		if (w[need].done || !w[need].req)
			return 0;
		kvw_event evs[16];
		int m = kvw_poll_wait(s->ctx, evs, 16, 1);
		if (m < 0)
			return kvb_sess_fail(s, "kvw_poll: %s", kvw_strerror(m));
		uint64_t now = kvb_now_ns();
		for (int e = 0; e < m; e++) {
			last = now;
			for (size_t i = 0; i < n; i++)
				if (evs[e].type == KVW_EV_SEQ && evs[e].req == w[i].req) {
					w[i].done = true;
					w[i].st = evs[e].status;
				}
		}
		if (stop && (++turn & 255) == 0) {
			if (kvb_sess_ctl_poll(s, 0))
				return -1;
			if (s->peer_done != UINT64_MAX) {
				*stop = true;
				return 0;
			}
		}
		if (now - last > (uint64_t)s->o.timeout_ms * 1000000ull)
			return kvb_sess_fail(s, "no progress for %u ms (--timeout-ms)", s->o.timeout_ms);
	}
}

static int lat_free(kvb_sess *s, lat_wait *w, const char *what)
{
	kvw_status st = w->st;
	if (w->req)
		kvw_req_free(w->req);
	w->req = NULL;
	if (st != KVW_OK)
		return kvb_sess_fail(s, "%s: %s", what, kvw_strerror(st));
	return 0;
}

static int lat_client_one(kvb_sess *s, uint64_t k, uint64_t *rtt_ns)
{
	static const uint32_t b0 = 0, b1 = 1;
	lat_wait w[2] = {{0}};
	kvw_status st = kvw_recv_seq(s->ep, KVB_BASE_SC + k, s->layout, &b1, 1, 0, &w[0].req);
	if (st)
		return kvb_sess_fail(s, "kvw_recv_seq: %s", kvw_strerror(st));
	lat_stamp(s, 0, true, k);
	uint64_t t0 = kvb_now_ns();
	st = kvw_send_seq(s->ep, KVB_BASE_CS + k, s->layout, &b0, 1, 0, 1, KVW_SEND_LAST, &w[1].req);
	if (st) {
		kvw_req_abort(w[0].req);
		kvw_req_free(w[0].req);
		return kvb_sess_fail(s, "kvw_send_seq: %s", kvw_strerror(st));
	}
	if (lat_wait_for(s, w, 2, 0, NULL))
		return -1;
	*rtt_ns = kvb_now_ns() - t0;
	if (!lat_stamp_ok(s, false, k))
		s->recv.stamp_bad++;
	if (lat_free(s, &w[0], "pong") || lat_wait_for(s, w, 2, 1, NULL) || lat_free(s, &w[1], "ping"))
		return -1;
	return 0;
}

static int lat_client(kvb_sess *s)
{
	uint64_t limit = s->o.duration > 0 ? UINT64_MAX : kvb_default_iters(&s->o);
	uint64_t warm = limit == UINT64_MAX ? 100 : limit / 10 < 100 ? limit / 10 : 100, k;
	uint64_t end = s->t0 + (uint64_t)(s->o.duration * 1e9);

	for (k = 0; k < limit; k++) {
		uint64_t rtt = 0;
		if (s->o.duration > 0 && kvb_now_ns() >= end)
			break;
		if (lat_client_one(s, k, &rtt))
			break;
		if (k >= warm)
			kvb_samples_add(&s->lat_us, (double)rtt / 2e3);
	}
	s->lat_count = k;
	json_t *m = json_object();
	json_object_set_new(m, "type", json_string("done"));
	json_object_set_new(m, "count", json_integer((json_int_t)k));
	json_object_set_new(m, "failed", json_boolean(s->err[0] != 0));
	kvb_ctl_send(s->ctl, m);
	return s->err[0] ? -1 : 0;
}

static int lat_server(kvb_sess *s)
{
	static const uint32_t b0 = 0, b1 = 1;
	uint64_t limit = s->o.duration > 0 ? UINT64_MAX : kvb_default_iters(&s->o), k;
	lat_wait w[2] = {{0}}; /* 0: grant for the ping, 1: the pong sent */
	bool stop = false;

	if (kvw_recv_seq(s->ep, KVB_BASE_CS, s->layout, &b1, 1, 0, &w[0].req))
		return kvb_sess_fail(s, "kvw_recv_seq failed: %s", kvw_ctx_last_error(s->ctx));
	for (k = 0; k < limit; k++) {
		if (lat_wait_for(s, w, 2, 0, stop ? NULL : &stop))
			break;
		if (!w[0].done && k >= s->peer_done)
			break; /* the client stopped (-D): ping k never comes */
		if (!w[0].done && lat_wait_for(s, w, 2, 0, NULL))
			break;
		if (!lat_stamp_ok(s, true, k))
			s->recv.stamp_bad++;
		if (lat_free(s, &w[0], "ping"))
			break;
		lat_stamp(s, 0, false, k);
		w[1] = (lat_wait){0};
		kvw_status st = kvw_send_seq(s->ep, KVB_BASE_SC + k, s->layout, &b0, 1, 0, 1,
					     KVW_SEND_LAST, &w[1].req);
		if (st)
			return kvb_sess_fail(s, "kvw_send_seq: %s", kvw_strerror(st));
		w[0] = (lat_wait){0};
		if (k + 1 < limit && kvw_recv_seq(s->ep, KVB_BASE_CS + k + 1, s->layout, &b1, 1, 0, &w[0].req))
			return kvb_sess_fail(s, "kvw_recv_seq failed: %s", kvw_ctx_last_error(s->ctx));
		if (lat_wait_for(s, w, 2, 1, NULL) || lat_free(s, &w[1], "pong"))
			break;
	}
	if (w[0].req && !w[0].done)
		kvw_req_abort(w[0].req);
	if (w[0].req)
		kvw_req_free(w[0].req);
	s->lat_count = k;
	if (!s->err[0] && !stop && s->o.duration > 0)
		kvb_sess_ctl_poll(s, 1000);
	return s->err[0] ? -1 : 0;
}

int kvb_sess_lat(kvb_sess *s)
{
	/* reuse the send flow only as a page-address helper */
	s->send.base = kvw_mem_addr(s->mem);
	s->send.layer_stride = 2 * s->block_bytes;
	s->send.block_bytes = s->block_bytes;
	kvb_pattern_fill(kvb_flow_page(&s->send, 0, 0), s->block_bytes, kvb_seed_dir(&s->o, s->is_client),
			 0, 0);
	kvb_sess_cpu_start(s);
	int rc = s->is_client ? lat_client(s) : lat_server(s);
	kvb_sess_cpu_stop(s);
	/* full check of the last message that landed in block 1 */
	uint8_t *scratch = malloc(s->block_bytes);
	bool hash_ok = scratch && s->lat_count &&
		kvb_page_hash(kvb_flow_page(&s->send, 0, 1), s->block_bytes) ==
		kvb_pattern_hash(s->block_bytes, kvb_seed_dir(&s->o, !s->is_client), 0, 0, scratch);
	free(scratch);
	s->verified = !rc && hash_ok && !s->recv.stamp_bad;
	snprintf(s->note, sizeof(s->note), "%llu messages, %llu stale stamps, last page %s",
		 (unsigned long long)s->lat_count, (unsigned long long)s->recv.stamp_bad,
		 hash_ok ? "matches" : "differs");
	return rc;
}
