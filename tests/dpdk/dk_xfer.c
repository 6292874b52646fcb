/* SPDX-License-Identifier: MIT */
/* dk_xfer: moves sequences over the dpdk driver and verifies every byte.
 *
 *   dk_xfer pair   URI [opts]   one process, one context, both sides
 *   dk_xfer server URI [opts]   receiver (grants), listens on URI
 *   dk_xfer client URI [opts]   sender, connects to URI
 * opts: -L layers -B blocks -b block_bytes -n seqs -f fault -e eal -d peer_dead_ms
 *       -t timeout_ms -w wait_ms_between_seqs (asleep) -W wait_ms_between_seqs (progressing)
 *       -q (same bytes each sequence, checked at the end) -r rounds (server: accept and
 *       serve that many clients in turn) -c (count wrong bytes instead of stopping at them)
 * The receiver grants only the even blocks of a pool twice as large and
 * checks that the odd ones (never granted) keep their background bytes.
 * Prints one line "RESULT ok=1 ..." (exit 0) or "RESULT ok=0 why=..." (exit 1),
 * and a line "STATS maxpoll_us=... rss_start_kb=... rss_max_kb=... cpu_s=..."
 * (the longest kvw_poll call: a frozen progress loop shows there). With -c the
 * receiver also prints "WRITTEN inside=N outside=M": bytes of granted blocks
 * that hold neither what the sender sent nor the background (someone else
 * wrote them), bytes of blocks never granted that were written. */
#include "kvwire/kvwire.h"

#include <getopt.h>
#include <inttypes.h>
#include <sys/resource.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BG 0xA5

struct opt {
	uint32_t L, B, n, dead_ms, wait_ms, idle_ms, rounds;
	bool quick;          /* -q: same bytes every sequence, fill once, check the last */
	bool count;          /* -c: count wrong bytes, do not stop at them */
	uint64_t bb;
	int timeout_ms;
	const char *fault, *eal, *uri, *mode;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* What the attack tests read: the longest kvw_poll call, resident memory. */
static struct {
	uint64_t maxpoll_ns, last_rss_ns;
	long rss_start_kb, rss_max_kb;
	uint64_t wrong_in, wrong_out;
} st_;

static long rss_kb(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int poll_timed(kvw_ctx *ctx, kvw_event *ev, int n)
{
	uint64_t t0 = now_ns();
	int k = kvw_poll(ctx, ev, n);
	uint64_t t1 = now_ns();
	if (t1 - t0 > st_.maxpoll_ns)
		st_.maxpoll_ns = t1 - t0;
	if (t1 - st_.last_rss_ns > 100000000ull) {
		long r = rss_kb();
		st_.last_rss_ns = t1;
		if (r > st_.rss_max_kb)
			st_.rss_max_kb = r;
	}
	return k;
}

static void print_stats(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	long r = rss_kb();
	if (r > st_.rss_max_kb)
		st_.rss_max_kb = r;
	printf("STATS maxpoll_us=%" PRIu64 " rss_start_kb=%ld rss_max_kb=%ld rss_end_kb=%ld cpu_s=%.2f\n",
	       st_.maxpoll_ns / 1000, st_.rss_start_kb, st_.rss_max_kb, r,
	       (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6);
}

static void fill(uint8_t *p, uint64_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (uint64_t i = 0; i < len; i += 8) {
		x += 0x9E3779B97F4A7C15ull;
		uint64_t z = x;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
		z ^= z >> 31;
		memcpy(p + i, &z, len - i < 8 ? len - i : 8);
	}
}

static uint64_t seed_of(uint64_t seq, uint32_t layer, uint32_t blk)
{
	return (seq << 40) ^ ((uint64_t)layer << 20) ^ blk;
}

static int fail(const char *why, kvw_ctx *ctx)
{
	printf("RESULT ok=0 why=\"%s\" err=\"%s\"\n", why, ctx ? kvw_ctx_last_error(ctx) : "");
	fflush(stdout);
	return 1;
}

static kvw_ctx *mk_ctx(const struct opt *o)
{
	kvw_config *cfg;
	kvw_ctx *ctx;
	char v[32];

	if (kvw_config_create(&cfg) != KVW_OK)
		return NULL;
	kvw_config_set(cfg, "driver", "dpdk");
	if (o->eal)
		kvw_config_set(cfg, "dpdk_eal", o->eal);
	if (o->fault)
		kvw_config_set(cfg, "fault", o->fault);
	if (o->dead_ms) {
		snprintf(v, sizeof(v), "%u", o->dead_ms);
		kvw_config_set(cfg, "peer_dead_ms", v);
	}
	if (o->timeout_ms > 0) {
		snprintf(v, sizeof(v), "%d", o->timeout_ms);
		kvw_config_set(cfg, "timeout_ms", v);
	}
	kvw_status st = kvw_ctx_create(cfg, &ctx);
	kvw_config_destroy(cfg);
	return st == KVW_OK ? ctx : NULL;
}

struct pool {
	kvw_mem *mem;
	kvw_layout *lay;
	uint8_t *base;
	uint32_t nb;
};

static int pool_make(kvw_ctx *ctx, const struct opt *o, uint32_t nb, struct pool *p)
{
	uint64_t len = (uint64_t)o->L * nb * o->bb;
	kvw_layout_desc d = { .n_layers = o->L, .n_blocks = nb, .block_bytes = o->bb,
			      .block_stride = o->bb, .layer_stride = nb * o->bb };
	if (kvw_mem_alloc(ctx, len, KVW_MEM_NO_PIN, &p->mem) != KVW_OK)
		return -1;
	p->base = kvw_mem_addr(p->mem);
	p->nb = nb;
	return kvw_layout_create(p->mem, &d, &p->lay) == KVW_OK ? 0 : -1;
}

static uint8_t *page(const struct opt *o, const struct pool *p, uint32_t l, uint32_t b)
{
	return p->base + ((uint64_t)l * p->nb + b) * o->bb;
}

/* Waits for the KVW_EV_SEQ of req; returns its status. */
static kvw_status wait_seq(kvw_ctx *ctx, kvw_req *req, kvw_req *other, kvw_status *other_st,
			   uint64_t limit_ns)
{
	kvw_event ev[64];
	kvw_status st = KVW_INPROGRESS;
	uint64_t end = now_ns() + limit_ns;

	while ((st == KVW_INPROGRESS || (other && *other_st == KVW_INPROGRESS)) && now_ns() < end) {
		int n = poll_timed(ctx, ev, 64);
		for (int i = 0; i < n; i++) {
			if (ev[i].type != KVW_EV_SEQ)
				continue;
			if (ev[i].req == req)
				st = ev[i].status;
			else if (other && ev[i].req == other)
				*other_st = ev[i].status;
		}
	}
	return st;
}

/* Bytes of pg that hold neither want nor the background: written by
 * someone else (bytes that never landed keep the background). */
static uint64_t count_diff(const uint8_t *pg, const uint8_t *want, uint64_t n)
{
	uint64_t d = 0;
	for (uint64_t i = 0; i < n; i++)
		d += pg[i] != want[i] && pg[i] != BG;
	return d;
}

/* -c: counts instead of stopping; the blocks are reset for the next round */
static void count_recv(const struct opt *o, struct pool *rp, uint64_t seq, uint8_t *tmp)
{
	for (uint32_t l = 0; l < o->L; l++)
		for (uint32_t b = 0; b < rp->nb; b++) {
			uint8_t *pg = page(o, rp, l, b);
			if (b % 2 == 0)
				fill(tmp, o->bb, seed_of(seq, l, b / 2));
			else
				memset(tmp, BG, o->bb);
			uint64_t d = count_diff(pg, tmp, o->bb);
			if (b % 2 == 0)
				st_.wrong_in += d;
			else
				st_.wrong_out += d;
			memset(pg, BG, o->bb);
		}
}

static int check_recv(const struct opt *o, struct pool *rp, uint64_t seq, uint8_t *tmp)
{
	if (o->count) {
		count_recv(o, rp, seq, tmp);
		return 0;
	}
	for (uint32_t l = 0; l < o->L; l++)
		for (uint32_t b = 0; b < rp->nb; b++) {
			uint8_t *pg = page(o, rp, l, b);
			if (b % 2 == 0) {
				fill(tmp, o->bb, seed_of(seq, l, b / 2));
				if (memcmp(pg, tmp, o->bb)) {
					fprintf(stderr, "seq %" PRIu64 " layer %u block %u: wrong bytes\n", seq, l, b);
					return -1;
				}
				memset(pg, BG, o->bb);
			} else {
				for (uint64_t i = 0; i < o->bb; i++)
					if (pg[i] != BG) {
						fprintf(stderr, "layer %u block %u (not granted) was written\n", l, b);
						return -2;
					}
			}
		}
	return 0;
}

static void print_counters(const char *who, kvw_ep *ep)
{
	kvw_counters c = {.size = sizeof(c)};
	if (!ep || kvw_ep_counters(ep, &c) != KVW_OK)
		return;
	printf("COUNTERS %s bytes_tx=%" PRIu64 " bytes_rx=%" PRIu64 " retransmits=%" PRIu64
	       " drops=%" PRIu64 " dups=%" PRIu64 " out_of_order=%" PRIu64 " bad_frames=%" PRIu64
	       " rtt_us=%" PRIu64 "\n", who, c.bytes_tx, c.bytes_rx, c.retransmits, c.drops, c.dups,
	       c.out_of_order, c.bad_frames, c.rtt_us);
}

struct run {
	const struct opt *o;
	kvw_ctx *ctx;
	kvw_ep *sep, *rep;   /* sender / receiver endpoints (either may be NULL) */
	struct pool sp, rp;
	uint32_t *sblocks, *rblocks;
	uint8_t *tmp;
};

static int run_seq(struct run *r, uint64_t seq, uint64_t *bytes)
{
	const struct opt *o = r->o;
	kvw_req *rq = NULL, *sq = NULL;
	kvw_status rst = KVW_INPROGRESS, sst = KVW_INPROGRESS;
	uint32_t half = o->B;

	if (r->rep && kvw_recv_seq(r->rep, seq, r->rp.lay, r->rblocks, half, 0, &rq) != KVW_OK)
		return fail("recv_seq", r->ctx);
	uint64_t dseq = o->quick ? 1 : seq;
	bool last = seq == o->n;
	if (r->sep && (!o->quick || seq == 1))
		for (uint32_t l = 0; l < o->L; l++)
			for (uint32_t b = 0; b < half; b++)
				fill(page(o, &r->sp, l, b), o->bb, seed_of(dseq, l, b));
	if (r->sep) {
		for (uint32_t l = 0; l < o->L; l++)
			if (kvw_send_seq(r->sep, seq, r->sp.lay, r->sblocks, half, l, l + 1,
					 l + 1 == o->L ? KVW_SEND_LAST : 0, &sq) != KVW_OK)
				return fail("send_seq", r->ctx);
	}
	uint64_t lim = (uint64_t)(o->timeout_ms > 0 ? o->timeout_ms : 30000) * 1000000ull + 5000000000ull;
	if (rq && sq)
		rst = wait_seq(r->ctx, rq, sq, &sst, lim);
	else if (rq)
		rst = wait_seq(r->ctx, rq, NULL, NULL, lim);
	else
		sst = wait_seq(r->ctx, sq, NULL, NULL, lim);
	if ((rq && rst != KVW_OK) || (sq && sst != KVW_OK)) {
		printf("SEQSTATUS seq=%" PRIu64 " recv=%s send=%s\n", seq,
		       rq ? kvw_strerror(rst) : "-", sq ? kvw_strerror(sst) : "-");
		if (rq && o->count)
			count_recv(o, &r->rp, dseq, r->tmp); /* what landed before it failed */
		return fail("sequence did not complete", r->ctx);
	}
	if (rq && (!o->quick || last) && check_recv(o, &r->rp, dseq, r->tmp))
		return fail("data check failed", r->ctx);
	if (rq)
		kvw_req_free(rq);
	if (sq)
		kvw_req_free(sq);
	*bytes += (uint64_t)o->L * half * o->bb;
	return 0;
}

static int accept_one(struct run *r, kvw_listener *l, kvw_ep **aep)
{
	uint64_t end = now_ns() + 30000000000ull;
	kvw_status st = KVW_INPROGRESS;
	kvw_event ev[8];

	while (st == KVW_INPROGRESS && now_ns() < end) {
		poll_timed(r->ctx, ev, 8);
		st = kvw_accept(l, 0, aep);
	}
	return st == KVW_OK ? 0 : fail("accept", r->ctx);
}

static int setup_eps(struct run *r, kvw_listener **lp)
{
	const struct opt *o = r->o;
	kvw_ep *cep = NULL, *aep = NULL;

	if (strcmp(o->mode, "client") && !*lp) {
		if (kvw_listen(r->ctx, o->uri, lp) != KVW_OK)
			return fail("listen", r->ctx);
		fprintf(stderr, "listening on %s\n", kvw_listener_uri(*lp));
		st_.rss_start_kb = st_.rss_max_kb = rss_kb(); /* EAL and pools are up */
	}
	if (!strcmp(o->mode, "pair")) {
		if (kvw_connect_start(r->ctx, kvw_listener_uri(*lp), &cep) != KVW_OK)
			return fail("connect_start", r->ctx);
	} else if (!strcmp(o->mode, "client")) {
		if (kvw_connect(r->ctx, o->uri, 20000, &cep) != KVW_OK)
			return fail("connect", r->ctx);
	}
	if (*lp && accept_one(r, *lp, &aep))
		return 1;
	if (cep) {
		uint64_t end = now_ns() + 20000000000ull;
		while (kvw_ep_status(cep) == KVW_INPROGRESS && now_ns() < end)
			kvw_progress(r->ctx);
		if (kvw_ep_status(cep) != KVW_OK)
			return fail("client handshake", r->ctx);
	}
	r->rep = aep;
	r->sep = cep;
	return 0;
}

/* -W: an idle gap in which both sides keep running progress (keepalive) */
static void idle(struct run *r, uint32_t ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;
	kvw_event ev[8];

	while (now_ns() < end)
		poll_timed(r->ctx, ev, 8);
}

static void close_eps(struct run *r)
{
	if (r->sep)
		kvw_ep_close(r->sep);
	if (r->rep) {
		/* let the peer see the last acks before closing */
		uint64_t end = now_ns() + 200000000ull;
		while (now_ns() < end)
			kvw_progress(r->ctx);
		kvw_ep_close(r->rep);
	}
	r->sep = r->rep = NULL;
}

static void print_end(struct run *r)
{
	print_counters("sender", r->sep);
	print_counters("receiver", r->rep);
	print_stats();
	if (r->o->count && r->rep)
		printf("WRITTEN inside=%" PRIu64 " outside=%" PRIu64 "\n", st_.wrong_in, st_.wrong_out);
}

/* One client served: n sequences. */
static int serve(struct run *r, uint64_t *bytes)
{
	const struct opt *o = r->o;

	for (uint64_t s = 1; s <= o->n; s++) {
		if (run_seq(r, s, bytes)) {
			print_end(r);
			return 1;
		}
		printf("DONE seq=%" PRIu64 "\n", s);
		if (o->wait_ms)
			usleep(o->wait_ms * 1000u);
		if (o->idle_ms && s < o->n)
			idle(r, o->idle_ms);
	}
	return 0;
}

static int run_all(struct run *r, kvw_listener **l)
{
	const struct opt *o = r->o;
	uint64_t bytes = 0;
	int bad = 0;

	r->sblocks = calloc(o->B, sizeof(uint32_t));
	r->rblocks = calloc(o->B, sizeof(uint32_t));
	r->tmp = malloc(o->bb);
	if (!r->sblocks || !r->rblocks || !r->tmp)
		return fail("out of memory", r->ctx);
	for (uint32_t i = 0; i < o->B; i++) {
		r->sblocks[i] = i;
		r->rblocks[i] = 2 * i;
	}
	if (pool_make(r->ctx, o, o->B, &r->sp) || pool_make(r->ctx, o, 2 * o->B, &r->rp))
		return fail("pool", r->ctx);
	memset(r->rp.base, BG, (uint64_t)o->L * 2 * o->B * o->bb);
	uint64_t t0 = now_ns();
	for (uint32_t round = 0; round < (o->rounds ? o->rounds : 1); round++) {
		if (setup_eps(r, l) || serve(r, &bytes)) {
			bad++;
			if (!o->rounds)
				return 1;
			printf("ROUND %u failed\n", round + 1);
		} else if (o->rounds) {
			printf("ROUND %u ok\n", round + 1);
		}
		if (o->rounds)
			close_eps(r);
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	print_end(r);
	if (bad)
		return fail("rounds failed", r->ctx);
	printf("RESULT ok=1 seqs=%u bytes=%" PRIu64 " secs=%.3f gbps=%.3f\n", o->n, bytes, secs,
	       bytes * 8 / secs / 1e9);
	fflush(stdout);
	close_eps(r);
	return 0;
}

/* Everything freed, so that a sanitized build reports only real leaks. */
static void pool_free(struct pool *p)
{
	if (p->lay)
		kvw_layout_destroy(p->lay);
	if (p->mem)
		kvw_mem_dereg(p->mem);
}

static int run(struct opt *o)
{
	struct run r = { .o = o };
	kvw_listener *l = NULL;

	if (!(r.ctx = mk_ctx(o)))
		return fail("ctx create", NULL);
	int rc = run_all(&r, &l);
	if (r.sep)
		kvw_ep_close(r.sep);
	if (r.rep)
		kvw_ep_close(r.rep);
	if (l)
		kvw_listener_close(l);
	pool_free(&r.sp);
	pool_free(&r.rp);
	kvw_ctx_destroy(r.ctx);
	free(r.sblocks);
	free(r.rblocks);
	free(r.tmp);
	return rc;
}

int main(int argc, char **argv)
{
	struct opt o = { .L = 4, .B = 16, .bb = 16384, .n = 4, .timeout_ms = 20000 };
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt(argc, argv, "L:B:b:n:f:e:d:t:w:W:r:qc")) != -1) {
		switch (c) {
		case 'L': o.L = (uint32_t)atoi(optarg); break;
		case 'B': o.B = (uint32_t)atoi(optarg); break;
		case 'b': o.bb = strtoull(optarg, NULL, 0); break;
		case 'n': o.n = (uint32_t)atoi(optarg); break;
		case 'f': o.fault = optarg; break;
		case 'e': o.eal = optarg; break;
		case 'd': o.dead_ms = (uint32_t)atoi(optarg); break;
		case 't': o.timeout_ms = atoi(optarg); break;
		case 'w': o.wait_ms = (uint32_t)atoi(optarg); break;
		case 'W': o.idle_ms = (uint32_t)atoi(optarg); break;
		case 'r': o.rounds = (uint32_t)atoi(optarg); break;
		case 'q': o.quick = true; break;
		case 'c': o.count = true; break;
		default:
			fprintf(stderr, "usage: dk_xfer pair|server|client URI [-L -B -b -n -f -e -d -t -w -W -r -q -c]\n");
			return 2;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: dk_xfer pair|server|client URI [opts]\n");
		return 2;
	}
	o.mode = argv[optind];
	o.uri = argv[optind + 1];
	return run(&o);
}
