/* SPDX-License-Identifier: MIT */
/* Test helper for `kvwire stat`: one process that moves sequences to
 * itself without pause over URI (tcp or shm) for SECONDS, with the stats
 * socket on, so a test can watch the counters move from outside.
 *   stat_load URI SECONDS   (set KVW_STATS_SOCKET; prints "ready" once the
 *   first sequence landed, "done N" at the end with N sequences moved) */
#include "kvwire/kvwire.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define L_LAYERS 4u
#define L_BLOCKS 16u
#define L_BLOCK 65536u

struct load {
	kvw_ctx *ctx;
	kvw_ep *tx, *rx;
	kvw_layout *ltx, *lrx;
	uint32_t blocks[L_BLOCKS];
	uint64_t seq, done;
};

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static int die(kvw_ctx *ctx, const char *what, kvw_status st)
{
	fprintf(stderr, "stat_load: %s: %s (%s)\n", what, kvw_strerror(st),
		ctx ? kvw_ctx_last_error(ctx) : "");
	return 1;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static kvw_status load_layout(kvw_ctx *ctx, kvw_layout **out)
{
	kvw_mem *m;
	kvw_status st = kvw_mem_alloc(ctx, (size_t)L_LAYERS * L_BLOCKS * L_BLOCK, KVW_MEM_NO_PIN, &m);
	if (st != KVW_OK)
		return st;
	memset(kvw_mem_addr(m), 0x5a, kvw_mem_len(m));
	kvw_layout_desc d = { .n_layers = L_LAYERS, .n_blocks = L_BLOCKS, .block_bytes = L_BLOCK,
			      .block_stride = L_BLOCK, .layer_stride = (uint64_t)L_BLOCKS * L_BLOCK };
	return kvw_layout_create(m, &d, out);
}

/* Posts one sequence on both sides (the grant first, then every layer). */
static kvw_status load_post(struct load *l)
{
	kvw_req *r, *s;
	uint64_t id = ++l->seq;
	kvw_status st = kvw_recv_seq(l->rx, id, l->lrx, l->blocks, L_BLOCKS, 0, &r);
	if (st == KVW_OK)
		st = kvw_send_seq(l->tx, id, l->ltx, l->blocks, L_BLOCKS, 0, L_LAYERS, KVW_SEND_LAST, &s);
	return st;
}

static kvw_status load_setup(struct load *l, const char *uri)
{
	kvw_listener *lis;
	kvw_status st = kvw_ctx_create(NULL, &l->ctx);
	if (st == KVW_OK)
		st = kvw_listen(l->ctx, uri, &lis);
	if (st == KVW_OK)
		st = kvw_connect(l->ctx, kvw_listener_uri(lis), -1, &l->tx);
	if (st == KVW_OK)
		st = kvw_accept(lis, 5000, &l->rx);
	if (st == KVW_OK)
		st = load_layout(l->ctx, &l->ltx);
	if (st == KVW_OK)
		st = load_layout(l->ctx, &l->lrx);
	for (uint32_t i = 0; i < L_BLOCKS; i++)
		l->blocks[i] = (i * 7) % L_BLOCKS; /* scattered */
	return st;
}

int main(int argc, char **argv)
{
	static struct load l;
	if (argc != 3) {
		fprintf(stderr, "usage: stat_load URI SECONDS\n");
		return 2;
	}
	double end = now_s() + atof(argv[2]);
	kvw_status st = load_setup(&l, argv[1]);
	if (st != KVW_OK)
		return die(l.ctx, "setup", st);
	if ((st = load_post(&l)) != KVW_OK)
		return die(l.ctx, "post", st);
	bool said = false;
	signal(SIGTERM, on_term); /* exit through kvw_ctx_destroy: the stats socket goes */
	while (!stop && now_s() < end) {
		kvw_event ev[32];
		int n = kvw_poll(l.ctx, ev, 32);
		if (n < 0)
			return die(l.ctx, "poll", (kvw_status)n);
		for (int i = 0; i < n; i++) {
			if (ev[i].type != KVW_EV_SEQ)
				continue;
			if (ev[i].status != KVW_OK)
				return die(l.ctx, "sequence", ev[i].status);
			kvw_req_free(ev[i].req);
			if (ev[i].ep == l.rx && ++l.done && !said) {
				printf("ready\n");
				fflush(stdout);
				said = true;
			}
			if (ev[i].ep == l.rx && (st = load_post(&l)) != KVW_OK)
				return die(l.ctx, "post", st);
		}
	}
	printf("done %lu\n", (unsigned long)l.done);
	kvw_ctx_destroy(l.ctx);
	return 0;
}
