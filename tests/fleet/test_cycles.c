/* SPDX-License-Identifier: MIT */
/* 10,000 connect/close cycles against one listener (issue 16): a fleet's
 * endpoints come and go for days, so what one costs must come back when it
 * closes. Each cycle connects, is accepted, pings every 100th time, and
 * closes both ends (alternately the client or the server first). After a
 * warm-up of 500 cycles the process's open fds and RSS are the baseline;
 * at the end the fds must be back to it (the same count) and RSS within
 * 4 MiB of it, and the listener must still serve an honest transfer. */
#include "kvwt.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

TestSuite(fleet_cycles, .timeout = 600);

#define CYCLES 10000u
#define WARMUP 500u

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;
	cr_assert_not_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own fd */
}

static void one_cycle(kvw_ctx *ctx, kvw_listener *l, uint32_t k)
{
	kvw_ep *c = NULL, *s = NULL;
	kvw_status st = kvw_connect(ctx, kvw_listener_uri(l), 10000, &c);
	cr_assert_eq(st, KVW_OK, "cycle %u: connect: %s: %s", k, kvw_strerror(st), kvw_ctx_last_error(ctx));
	st = kvw_accept(l, 10000, &s);
	cr_assert_eq(st, KVW_OK, "cycle %u: accept: %s: %s", k, kvw_strerror(st), kvw_ctx_last_error(ctx));
	if (k % 100 == 0) {
		uint64_t rtt;
		st = kvw_ep_ping(k % 200 ? c : s, 5000, &rtt);
		cr_assert_eq(st, KVW_OK, "cycle %u: ping: %s", k, kvw_strerror(st));
	}
	kvw_ep_close(k & 1 ? s : c);
	if (k % 7 == 0) /* now and then the survivor sees the CLOSE first */
		for (int i = 0; i < 3; i++)
			kvw_progress(ctx);
	kvw_ep_close(k & 1 ? c : s);
}

static void cycles(const char *uri)
{
	kvw_ctx *ctx = kvwt_ctx(NULL);
	kvw_listener *l;
	cr_assert_eq(kvw_listen(ctx, uri, &l), KVW_OK, "listen %s: %s", uri, kvw_ctx_last_error(ctx));
	uint64_t t0 = kvwt_now_ms();
	for (uint32_t k = 0; k < WARMUP; k++)
		one_cycle(ctx, l, k);
	for (int i = 0; i < 20; i++)
		kvw_progress(ctx);
	int fd0 = open_fds();
	long rss0 = kvwt_rss_kib();
	for (uint32_t k = WARMUP; k < CYCLES; k++)
		one_cycle(ctx, l, k);
	for (int i = 0; i < 20; i++)
		kvw_progress(ctx);
	int fd1 = open_fds();
	long rss1 = kvwt_rss_kib();
	uint64_t ms = kvwt_now_ms() - t0;
	cr_log_info("%s: %u connect/close cycles in %llu ms (%.0f us each); fds %d -> %d, RSS %ld -> "
		    "%ld KiB after the first %u", uri, CYCLES, (unsigned long long)ms,
		    1000.0 * (double)ms / CYCLES, fd0, fd1, rss0, rss1, WARMUP);
	cr_assert_eq(fd1, fd0, "%d fds leaked over %u cycles", fd1 - fd0, CYCLES - WARMUP);
	cr_assert_lt(rss1 - rss0, 4096, "RSS grew %ld KiB over %u cycles", rss1 - rss0, CYCLES - WARMUP);
	/* the listener still serves: one pair moves a sequence */
	kvw_ep *c = NULL, *s = NULL;
	cr_assert_eq(kvw_connect(ctx, kvw_listener_uri(l), 10000, &c), KVW_OK);
	cr_assert_eq(kvw_accept(l, 10000, &s), KVW_OK);
	struct kvwt_pool src, dst;
	uint32_t blk[4] = {3, 1, 2, 0};
	kvwt_pool_make(ctx, &src, 2, 4, 4096, 4096);
	kvwt_pool_make(ctx, &dst, 2, 4, 4096, 4096);
	kvwt_pool_fill(&src, 5);
	kvw_req *rr = NULL, *sr = NULL;
	cr_assert_eq(kvw_recv_seq(s, 1, dst.lay, blk, 4, 0, &rr), KVW_OK);
	cr_assert_geq(kvw_send_seq(c, 1, src.lay, blk, 4, 0, 2, KVW_SEND_LAST, &sr), 0);
	uint64_t end = kvwt_now_ms() + 10000;
	while ((kvw_req_status(rr) == KVW_INPROGRESS || kvw_req_status(sr) == KVW_INPROGRESS) &&
	       kvwt_now_ms() < end)
		kvw_progress(ctx);
	cr_assert_eq(kvw_req_status(rr), KVW_OK, "%s", kvw_strerror(kvw_req_status(rr)));
	cr_assert_eq(kvw_req_status(sr), KVW_OK);
	for (uint32_t b = 0; b < 4; b++)
		for (uint32_t layer = 0; layer < 2; layer++)
			cr_assert_eq(memcmp(dst.base + layer * dst.layer_stride + blk[b] * dst.stride,
					    src.base + layer * src.layer_stride + blk[b] * src.stride, 4096), 0);
	kvw_req_free(rr);
	kvw_req_free(sr);
	kvw_ep_close(c);
	kvw_ep_close(s);
	kvw_listener_close(l);
	kvw_ctx_destroy(ctx);
}

Test(fleet_cycles, tcp_ten_thousand_connect_close)
{
	cycles("tcp://127.0.0.1:0");
}

Test(fleet_cycles, shm_ten_thousand_connect_close)
{
	char uri[128];
	snprintf(uri, sizeof(uri), "shm:///tmp/kvwt-cycles.%ld.sock", (long)getpid());
	cycles(uri);
}
