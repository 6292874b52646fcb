/* SPDX-License-Identifier: MIT */
/*
 * Peer-death check across two kernels (tests/rdma/pair.sh, VM pair).
 *   rdma_peer recv URI   (VM A) listens, grants one sequence, waits for its
 *                        first bytes, asks the host to kill VM B, and
 *                        checks that the grant ends PEER_DEAD within
 *                        peer_dead_ms + 1.5 s of the kill request.
 *   rdma_peer send URI   (VM B) connects and sends that sequence one layer
 *                        every 200 ms (a prefill that is still running when
 *                        it is killed).
 * Exit 0 on the expected outcome, 1 otherwise, with one line saying why.
 */
#include "kvwire/kvwire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LAYERS 64u
#define BLOCKS 16u
#define BB (64u * 1024u)

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int die(kvw_ctx *c, const char *what, kvw_status st)
{
	printf("rdma_peer: %s: %s: %s\n", what, kvw_strerror(st), c ? kvw_ctx_last_error(c) : "");
	return 1;
}

static int pool(kvw_ctx *c, kvw_mem **m, kvw_layout **l, uint32_t *blk)
{
	kvw_layout_desc d = { .n_layers = LAYERS, .n_blocks = BLOCKS, .block_bytes = BB,
			      .block_stride = BB, .layer_stride = (uint64_t)BLOCKS * BB };
	kvw_status st = kvw_mem_alloc(c, (size_t)LAYERS * BLOCKS * BB, 0, m);
	if (st == KVW_OK)
		st = kvw_layout_create(*m, &d, l);
	for (uint32_t i = 0; i < BLOCKS; i++)
		blk[i] = i;
	return st;
}

static int run_recv(kvw_ctx *c, const char *uri, unsigned peer_dead_ms)
{
	kvw_listener *l;
	kvw_ep *ep;
	kvw_mem *m;
	kvw_layout *lay;
	kvw_req *r;
	kvw_req_info in = {.size = sizeof(in)};
	uint32_t blk[BLOCKS];
	kvw_status st;

	if ((st = kvw_listen(c, uri, &l)) || (st = kvw_accept(l, 60000, &ep)))
		return die(c, "listen/accept", st);
	if ((st = pool(c, &m, &lay, blk)) || (st = kvw_recv_seq(ep, 7, lay, blk, BLOCKS, 120000000, &r)))
		return die(c, "grant", st);
	for (uint64_t end = now_ms() + 30000; kvw_req_query(r, &in) == KVW_OK && in.layers_done < 2;) {
		if (now_ms() > end || in.status != KVW_INPROGRESS)
			return die(c, "no layer landed before the kill", in.status);
		kvw_progress(c);
	}
	printf("rdma_peer: %u layers landed, killing VM B\n", in.layers_done);
	fflush(stdout);
	uint64_t t_kill = now_ms();
	if (system("rxe-kill-peer B") != 0)
		return die(c, "rxe-kill-peer failed", KVW_ERR_IO);
	while (kvw_req_status(r) == KVW_INPROGRESS && now_ms() - t_kill < peer_dead_ms + 20000u)
		kvw_progress(c);
	uint64_t dt = now_ms() - t_kill;
	kvw_req_query(r, &in);
	printf("rdma_peer: grant ended %s after %llu ms (peer_dead_ms %u, %u of %u layers): %s\n",
	       kvw_strerror(in.status), (unsigned long long)dt, peer_dead_ms, in.layers_done, LAYERS,
	       kvw_ctx_last_error(c));
	if (in.status != KVW_ERR_PEER_DEAD || in.layers_done == LAYERS)
		return 1;
	if (dt > peer_dead_ms + 1500u) {
		printf("rdma_peer: too late: the kill takes ~1 s to happen, the verdict must follow "
		       "within peer_dead_ms\n");
		return 1;
	}
	return 0;
}

static int run_send(kvw_ctx *c, const char *uri)
{
	kvw_ep *ep;
	kvw_mem *m;
	kvw_layout *lay;
	kvw_req *r;
	uint32_t blk[BLOCKS];
	kvw_status st;

	for (uint64_t end = now_ms() + 30000; (st = kvw_connect(c, uri, 5000, &ep)) != KVW_OK;)
		if (now_ms() > end)
			return die(c, "connect", st);
	if ((st = pool(c, &m, &lay, blk)))
		return die(c, "pool", st);
	for (uint32_t l = 0; l < LAYERS; l++) {
		st = kvw_send_seq(ep, 7, lay, blk, BLOCKS, l, l + 1, l + 1 == LAYERS ? KVW_SEND_LAST : 0, &r);
		if (st < 0)
			return die(c, "send", st);
		for (uint64_t t = now_ms(); now_ms() - t < 200;)
			kvw_progress(c);
	}
	while (kvw_req_status(r) == KVW_INPROGRESS)
		kvw_progress(c);
	printf("rdma_peer: sender finished %s (expected to be killed first)\n", kvw_strerror(kvw_req_status(r)));
	return 1;
}

int main(int argc, char **argv)
{
	kvw_config *cfg;
	kvw_ctx *c;
	char v[32];

	if (argc != 3 || (strcmp(argv[1], "recv") && strcmp(argv[1], "send"))) {
		fprintf(stderr, "usage: rdma_peer recv|send rdma://IP:PORT\n");
		return 2;
	}
	if (kvw_config_create(&cfg) || kvw_ctx_create(cfg, &c))
		return die(NULL, "context", KVW_ERR_INVALID);
	kvw_config_get(cfg, "peer_dead_ms", v, sizeof(v));
	kvw_config_destroy(cfg);
	return argv[1][0] == 'r' ? run_recv(c, argv[2], (unsigned)atoi(v)) : run_send(c, argv[2]);
}
