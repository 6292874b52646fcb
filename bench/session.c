/* SPDX-License-Identifier: MIT */
/* Session setup and the bw/kv loop, shared by client and server. */
#include "session.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int kvb_sess_fail(kvb_sess *s, const char *fmt, ...)
{
	va_list ap;
	if (s->err[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return -1;
}

uint64_t kvb_seed_dir(const kvb_opts *o, bool client_to_server)
{
	return o->seed * 2 + (client_to_server ? 0 : 1);
}

static void sess_geometry(kvb_sess *s)
{
	const kvb_opts *o = &s->o;
	switch (o->test) {
	case KVB_T_KV:
		s->n_layers = o->layers;
		s->nblk = kvb_kv_blocks_per_seq(o);
		s->block_bytes = kvb_kv_block_bytes(o);
		if (o->geom) {
			/* this side's own block size and heads */
			unsigned bt = s->is_client ? o->src_block_tokens : o->dst_block_tokens, h0, h1;
			kvb_tp_heads(o->kv_heads, s->is_client ? o->src_tp : o->dst_tp,
				     s->is_client ? o->src_rank : o->dst_rank, &h0, &h1);
			s->nblk = (uint32_t)(((uint64_t)o->tokens + bt - 1) / bt);
			s->block_bytes = (uint64_t)bt * (h1 - h0) * o->head_dim * o->kv_factor * o->dtype_bytes;
		}
		s->slots = o->seqs;
		s->has_send = s->is_client;
		s->has_recv = !s->is_client;
		s->send_pool = s->slots * s->nblk;
		s->recv_pool = o->pool_factor * s->slots * s->nblk;
		break;
	case KVB_T_LAT:
		s->n_layers = s->nblk = s->slots = 1;
		s->block_bytes = o->size;
		s->has_send = s->has_recv = true;
		s->send_pool = s->recv_pool = 1;
		break;
	default: {
		uint64_t w = (256ull << 20) / o->size;
		s->n_layers = s->nblk = 1;
		s->block_bytes = o->size;
		s->slots = (unsigned)(w < 2 ? 2 : w < o->tx_depth ? w : o->tx_depth);
		s->has_send = s->is_client || o->bidir;
		s->has_recv = !s->is_client || o->bidir;
		s->send_pool = s->recv_pool = s->slots;
	}
	}
}

kvw_status kvb_mem_get(kvw_ctx *ctx, size_t len, bool no_pin, kvw_mem **mem, bool *pinned)
{
	kvw_status st = kvw_mem_alloc(ctx, len, no_pin ? KVW_MEM_NO_PIN : 0, mem);
	*pinned = !no_pin;
	if (st == KVW_ERR_MEMLOCK && !no_pin) {
		fprintf(stderr, "kvwire-bench: cannot pin %zu bytes (raise `ulimit -l`); "
			"running unpinned\n", len);
		st = kvw_mem_alloc(ctx, len, KVW_MEM_NO_PIN, mem);
		*pinned = false;
	}
	return st;
}

void kvb_scatter_perm(uint64_t seed, uint32_t n, uint32_t *perm)
{
	uint64_t x = seed ^ 0x7065726dull;

	for (uint32_t i = 0; i < n; i++)
		perm[i] = i;
	for (uint32_t i = n ? n - 1 : 0; i > 0; i--) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		uint32_t j = (uint32_t)((x >> 33) % (i + 1));
		uint32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
}

static void sess_blocks(kvb_sess *s)
{
	uint32_t off = s->has_send ? s->send_pool : 0, nrecv = s->slots * s->nblk;
	for (uint32_t i = 0; s->has_send && i < s->send_pool; i++)
		s->send_blocks[i] = i;
	if (!s->has_recv)
		return;
	if (s->o.test != KVB_T_KV || s->o.contiguous) {
		for (uint32_t i = 0; i < nrecv; i++)
			s->recv_blocks[i] = off + i;
		return;
	}
	/* scattered: a seeded random permutation inside the larger decode pool */
	uint32_t *perm = malloc(sizeof(uint32_t) * s->recv_pool);
	kvb_scatter_perm(s->o.seed, s->recv_pool, perm);
	for (uint32_t i = 0; i < nrecv; i++)
		s->recv_blocks[i] = off + perm[i];
	free(perm);
}

/* o.geom: this side's geometry over total blocks, the arena's bytes, the shared heads. */
static int sess_geo(kvb_sess *s, uint32_t total, uint64_t *bytes)
{
	const kvb_opts *o = &s->o;
	unsigned s0, s1, d0, d1;

	if (kvb_geo_make(o, s->is_client, total, &s->geo))
		return kvb_sess_fail(s, "the %s geometry: %s", s->is_client ? "--src" : "--dst",
				     kvw_ctx_last_error(NULL));
	s->has_geo = true;
	*bytes = s->geo.arena_bytes;
	kvb_tp_heads(o->kv_heads, o->src_tp, o->src_rank, &s0, &s1);
	kvb_tp_heads(o->kv_heads, o->dst_tp, o->dst_rank, &d0, &d1);
	if (o->kv_factor == 1)
		s0 = d0 = 0, s1 = d1 = 1;
	s->vh0 = s0 > d0 ? s0 : d0;
	s->vh1 = s1 < d1 ? s1 : d1;
	return 0;
}

int kvb_sess_setup(kvb_sess *s, kvw_ctx *ctx, const kvb_opts *o, bool is_client)
{
	memset(s, 0, sizeof(*s));
	s->o = *o;
	s->ctx = ctx;
	s->is_client = is_client;
	s->peer_done = UINT64_MAX;
	if (o->test == KVB_T_KV &&
	    (uint64_t)o->pool_factor * o->seqs * kvb_kv_blocks_per_seq(o) > (1u << 28))
		return kvb_sess_fail(s, "--seqs x --pool-factor x blocks a sequence is over 2^28 blocks; "
				     "lower one of them");
	sess_geometry(s);
	uint64_t total = (uint64_t)(s->has_send ? s->send_pool : 0) + (s->has_recv ? s->recv_pool : 0);
	uint64_t bytes = total * s->n_layers * s->block_bytes;
	if (o->geom && sess_geo(s, (uint32_t)total, &bytes))
		return -1;
	if (total > (1u << 30) || bytes > (64ull << 30))
		return kvb_sess_fail(s, "the test needs %llu MiB on this side; lower --tokens, --seqs or "
				     "--pool-factor", (unsigned long long)(bytes >> 20));
	s->send_blocks = calloc(s->send_pool ? s->send_pool : 1, sizeof(uint32_t));
	s->recv_blocks = calloc(s->recv_pool ? s->recv_pool : 1, sizeof(uint32_t));
	if (!s->send_blocks || !s->recv_blocks)
		return kvb_sess_fail(s, "out of memory for block lists");
	kvw_status st = kvb_mem_get(ctx, bytes, o->no_pin, &s->mem, &s->pinned);
	if (st)
		return kvb_sess_fail(s, "kvw_mem_alloc(%llu bytes): %s %s", (unsigned long long)bytes,
				     kvw_strerror(st), kvw_ctx_last_error(ctx));
	kvw_layout_desc d = {
		.n_layers = s->n_layers, .n_blocks = (uint32_t)total, .block_bytes = s->block_bytes,
		.block_stride = s->block_bytes, .base_offset = 0, .layer_stride = total * s->block_bytes,
	};
	st = s->has_geo ? kvw_layout_create_geom(s->mem, &s->geo.g, &s->layout) :
			  kvw_layout_create(s->mem, &d, &s->layout);
	if (st)
		return kvb_sess_fail(s, "kvw_layout_create: %s %s", kvw_strerror(st), kvw_ctx_last_error(ctx));
	sess_blocks(s);
	if (s->has_recv && !s->has_geo)
		s->runs_per_layer = kvw_layout_runs(s->layout, s->recv_blocks, s->nblk);
	return 0;
}

static void flow_common(kvb_sess *s, kvb_flow *f, bool cs)
{
	f->ep = s->ep;
	f->layout = s->layout;
	f->base = kvw_mem_addr(s->mem);
	f->layer_stride = (uint64_t)((s->has_send ? s->send_pool : 0) + (s->has_recv ? s->recv_pool : 0)) *
			  s->block_bytes;
	f->block_bytes = s->block_bytes;
	f->n_layers = s->n_layers;
	f->nblk = s->nblk;
	f->id_base = cs ? KVB_BASE_CS : KVB_BASE_SC;
	if (s->has_geo) {
		f->geo = &s->geo;
		f->tokens = s->o.tokens;
		f->vh0 = s->vh0;
		f->vh1 = s->vh1;
		f->seq_bytes = (uint64_t)s->n_layers * s->geo.g.n_kv * f->tokens * (f->vh1 - f->vh0) *
			       s->geo.unit;
	}
	f->seed = kvb_seed_dir(&s->o, cs);
	f->timeout_us = ((uint64_t)s->o.timeout_ms + (uint64_t)(s->o.duration * 1000)) * 1000;
	uint64_t n = kvb_default_iters(&s->o);
	if (s->o.test == KVB_T_KV && s->o.rate <= 0)
		n *= s->o.seqs;
	f->limit = s->o.duration > 0 ? UINT64_MAX : n;
	kvb_flow_init(f, s->slots);
}

void kvb_sess_flows(kvb_sess *s)
{
	if (s->has_send) {
		kvb_flow *f = &s->send;
		f->is_send = true;
		flow_common(s, f, s->is_client);
		f->blocks = s->send_blocks;
		f->arrival = s->o.test != KVB_T_KV ? KVB_ARR_SATURATE :
			     s->o.rate > 0 ? KVB_ARR_POISSON : KVB_ARR_BATCH;
		f->rate = s->o.rate;
		f->layer_interval_ns = s->o.layer_interval_us * 1000;
		kvb_flow_fill(f);
		f->corrupt_once = s->o.inject_corruption;
	}
	if (s->has_recv) {
		flow_common(s, &s->recv, !s->is_client);
		s->recv.blocks = s->recv_blocks;
	}
}

void kvb_sess_cpu_start(kvb_sess *s)
{
	getrusage(RUSAGE_SELF, &s->ru0);
	s->t0 = kvb_now_ns();
}

static double tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

void kvb_sess_cpu_stop(kvb_sess *s)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	s->t1 = kvb_now_ns();
	double cpu = tv_s(ru.ru_utime) - tv_s(s->ru0.ru_utime) + tv_s(ru.ru_stime) - tv_s(s->ru0.ru_stime);
	double wall = (double)(s->t1 - s->t0) / 1e9;
	s->cpu_pct = wall > 0 ? cpu / wall * 100 : 0;
}

static void sess_tick(kvb_sess *s)
{
	uint64_t now;
	if (!s->tick || (now = kvb_now_ns()) - s->tick_last < KVB_TICK_NS)
		return;
	s->tick_last = now;
	s->tick(s->tick_arg);
}

int kvb_sess_ctl_poll(kvb_sess *s, int timeout_ms)
{
	json_t *m;
	uint64_t end = kvb_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
	int r;
	/* wait in 1 ms slices: kvwire progress (keepalive, other peers) goes on */
	for (;;) {
		sess_tick(s);
		r = kvb_ctl_recv(s->ctl, timeout_ms > 0 ? 1 : 0, &m);
		if (r != 1 || kvb_now_ns() >= end)
			break;
		kvw_progress(s->ctx);
	}
	if (r == 1)
		return 0;
	if (r < 0)
		return kvb_sess_fail(s, "the peer closed the control connection");
	const char *type = json_string_value(json_object_get(m, "type"));
	if (type && !strcmp(type, "done")) {
		json_t *c = json_object_get(m, "count");
		s->peer_done = json_is_integer(c) ? (uint64_t)json_integer_value(c) : 0;
		s->peer_failed = json_is_true(json_object_get(m, "failed"));
		if (s->has_recv && s->recv.limit == UINT64_MAX)
			s->recv.limit = s->peer_done;
	} else if (type && !strcmp(type, "error")) {
		const char *msg = json_string_value(json_object_get(m, "msg"));
		kvb_sess_fail(s, "peer: %s", msg ? msg : "failed");
	} else if (type && !strcmp(type, "result") && s->is_client && !s->early_result) {
		s->early_result = m; /* dropping it left the client waiting for it in vain */
		return 0;
	}
	json_decref(m);
	return s->err[0] ? -1 : 0;
}

static void send_done(kvb_sess *s, uint64_t count, bool failed)
{
	json_t *m = json_object();
	json_object_set_new(m, "type", json_string("done"));
	json_object_set_new(m, "count", json_integer((json_int_t)count));
	json_object_set_new(m, "failed", json_boolean(failed));
	kvb_ctl_send(s->ctl, m);
	s->done_sent = true;
}

static void show_progress(kvb_sess *s, uint64_t now, uint64_t *next_show)
{
	if (!s->is_client || s->o.json || s->o.csv || s->o.quiet || now < *next_show || !isatty(1))
		return;
	*next_show = now + 500000000ull;
	if (now - s->t0 < 2000000000ull)
		return;
	double sec = (double)(now - s->t0) / 1e9;
	uint64_t bytes = s->send.bytes + s->recv.bytes;
	printf("\r  %6.1f s  %10.2f Gb/s  %llu requests done", sec, (double)bytes * 8 / sec / 1e9,
	       (unsigned long long)(s->send.done + s->recv.done));
	fflush(stdout);
	s->progress_shown = true;
}

static bool sess_finished(kvb_sess *s)
{
	if (s->has_send && !kvb_flow_finished(&s->send))
		return false;
	if (s->has_recv && !kvb_flow_finished(&s->recv))
		return false;
	return true;
}

/* One turn of the loop: events, posting, time limit. */
static int sess_turn(kvb_sess *s, uint64_t now, uint64_t *last_event)
{
	kvw_event evs[64];
	int n = kvw_poll_wait(s->ctx, evs, 64, 1);
	if (n < 0)
		return kvb_sess_fail(s, "kvw_poll: %s %s", kvw_strerror(n), kvw_ctx_last_error(s->ctx));
	for (int i = 0; i < n; i++)
		kvb_flow_event(&evs[i]);
	if (n > 0)
		*last_event = now;
	if (s->has_send) {
		if (s->o.duration > 0 && s->send.limit == UINT64_MAX &&
		    now - s->t0 >= (uint64_t)(s->o.duration * 1e9))
			s->send.limit = s->send.next_k;
		kvb_flow_step(&s->send, now);
		if (kvb_flow_finished(&s->send) && !s->done_sent)
			send_done(s, s->send.next_k, s->send.failed);
	}
	if (s->has_recv) {
		kvb_flow_step(&s->recv, now);
		if (s->peer_failed)
			return kvb_sess_fail(s, "the peer's sender failed");
	}
	if (now - *last_event > (uint64_t)s->o.timeout_ms * 1000000ull)
		return kvb_sess_fail(s, "no progress for %u ms (--timeout-ms)", s->o.timeout_ms);
	return 0;
}

int kvb_sess_run(kvb_sess *s)
{
	uint64_t last_event = kvb_now_ns(), next_show = 0;
	unsigned turn = 0;

	kvb_sess_cpu_start(s);
	for (;;) {
		uint64_t now = kvb_now_ns();
		if (sess_turn(s, now, &last_event))
			break;
		if ((s->has_send && s->send.failed) || (s->has_recv && s->recv.failed))
			break;
		if (sess_finished(s))
			break;
		if ((++turn & 127) == 0 && kvb_sess_ctl_poll(s, 0))
			break;
		show_progress(s, now, &next_show);
	}
	kvb_sess_cpu_stop(s);
	if (s->progress_shown)
		printf("\r\033[K");
	if (s->has_send && !s->done_sent)
		send_done(s, s->send.next_k, true);
	if (s->has_send && s->send.failed)
		kvb_sess_fail(s, "%s", s->send.err);
	if (s->has_recv) {
		kvb_flow_cancel_rest(&s->recv);
		s->verified = kvb_flow_verify(&s->recv, s->note, sizeof(s->note));
		if (s->recv.failed)
			kvb_sess_fail(s, "%s", s->recv.err);
	} else {
		s->verified = !s->err[0];
	}
	return s->err[0] ? -1 : 0;
}

void kvb_sess_free(kvb_sess *s)
{
	json_decref(s->early_result);
	s->early_result = NULL;
	if (s->has_send)
		kvb_flow_free(&s->send);
	if (s->has_recv)
		kvb_flow_free(&s->recv);
	kvb_samples_free(&s->lat_us);
	if (s->ep)
		kvw_ep_close(s->ep);
	s->ep = NULL;
	if (s->layout)
		kvw_layout_destroy(s->layout);
	if (s->has_geo)
		kvb_geo_free(&s->geo);
	if (s->mem)
		kvw_mem_dereg(s->mem);
	free(s->send_blocks);
	free(s->recv_blocks);
	s->layout = NULL;
	s->mem = NULL;
	s->send_blocks = s->recv_blocks = NULL;
}
