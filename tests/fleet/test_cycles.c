/* SPDX-License-Identifier: MIT */
/* Connect/close cycles against one listener (issue 16): a fleet's endpoints
 * come and go for days, so what one costs must come back when it closes.
 * Each cycle connects, is accepted, pings every 100th time, and closes both
 * ends (alternately the client or the server first). After a warm-up the
 * process's open fds and RSS are the baseline; at the end the fds must be
 * back to it (the same count) and RSS within 4 MiB of it, and the listener
 * must still serve an honest transfer. Every 500th cycle `kvwire stat`'s
 * JSON (config stats_socket) must show each live endpoint holding what its
 * rails need (ops->ep_resources: one fd per rail, and on rdma one QP per
 * rail).
 *
 * tcp, shm: 10,000 cycles after 500 of warm-up, with and without the
 * endpoint cache (ep_cache=1, ep_idle_close_ms=0: every close really
 * closes). rdma (only inside the Soft-RoCE VM, KVW_TEST_DRIVER=rdma, meson
 * test fleet-rdma): 1,000 cycles after 100, not 10,000, because one cycle
 * costs 40-78 ms there against ~1.2 ms on tcp (rxe under TCG: the rdma_cm
 * exchange, QP/CQ/MR creation, registering and pinning ~4.75 MB of rings
 * per endpoint and the teardown, all in an emulated kernel), so 1,000 keep
 * the case near 1 minute of a VM test that should stay under a few; on top
 * of fds and RSS, the device's own counts (`rdma resource show`: pd, cq,
 * qp, cm_id, mr) must be back to the baseline, and every 25th cycle, with
 * a pair live, the device must hold per rail 2 QPs, 4 CQs, 4 MRs and 2
 * cm_ids more. Then 400 cycles (after 100) of 2-rail endpoints over rxe0
 * and rxe1 (RXE_VM_RAILS=2): 2 QPs and 2 fds on each endpoint.
 *
 * The parked cases (ep_cache=1, ep_idle_close_ms 1 s; tcp, shm, rdma):
 * closing and reconnecting the same URI 1,000 times hands out the one
 * endpoint again (refs 1 -> 0 -> 1, the same pointer and id, no new accept
 * on the listener), and after the idle time (not before half of it) it is
 * closed: the server end sees the CLOSE, the fds (and on rdma the device's
 * counts) come back to the baseline; three such rounds after a warm-up
 * one, RSS within 4 MiB. What the parked endpoint holds (fds, QPs, bytes:
 * kvwire stat's resources) is logged. */
#include "kvwt.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

TestSuite(fleet_cycles, .timeout = 600);

#define CYCLES 10000u
#define WARMUP 500u
#define RDMA_CYCLES 1000u
#define RDMA_WARMUP 100u
#define CHECK_EVERY 500u
#define RDMA_CHECK_EVERY 25u
#define RDMA2_CYCLES 400u /* two rails: the same ~60 ms a cycle */
#define RDMA2_WARMUP 100u /* 20 left RSS +4 MiB twice in three runs: the heap still grew */
#define PARKED_IDLE_MS 1000
#define PARKED_REUSES 1000u
#define PARKED_ROUNDS 3

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

/* RSS after glibc gave its free heap back: rdma's rings (~4.7 MB a rail)
 * come from the heap once glibc's mmap threshold has grown, and what is
 * freed stays resident until trimmed. Untrimmed, 300 2-rail cycles once
 * grew RSS by 5.6 MiB (the 4 MiB bound failed); trimmed, the same cases
 * grow 16-80 KiB, so a leak shows instead of the allocator's slack. */
static long rss_trimmed(void)
{
	malloc_trim(0);
	return kvwt_rss_kib();
}

/* ------------------------------------------------- kvwire stat's JSON */
static void stat_path(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/kvwt-cycles.%ld.stat", (long)getpid());
}

/* One snapshot from the stats socket of ctx, read the way `kvwire stat`
 * does while this process progresses the context (it serves the socket). */
static void stat_read(kvw_ctx *ctx, char *buf, size_t cap)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t len = 0;
	bool eof = false;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	stat_path(a.sun_path, sizeof(a.sun_path));
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s: %s", a.sun_path, strerror(errno));
	for (uint64_t end = kvwt_now_ms() + 5000; !eof && kvwt_now_ms() < end;) {
		kvw_progress(ctx);
		ssize_t n = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
		if (n > 0)
			len += (size_t)n;
		eof = n == 0;
		cr_assert(n >= 0 || errno == EAGAIN, "stats socket: %s", strerror(errno));
		cr_assert_lt(len, cap - 1, "stats snapshot larger than %zu bytes", cap);
	}
	close(fd);
	cr_assert(eof, "the stats socket sent no whole snapshot within 5 s");
	buf[len] = 0;
}

struct ep_snap {
	unsigned id, rails, refs, fds, qps;
	bool server, cached;
	unsigned long bytes;
	char state[16];
};

static unsigned long json_num(const char *from, const char *key)
{
	const char *p = strstr(from, key);
	cr_assert_not_null(p, "no %s in the stats snapshot", key);
	return strtoul(p + strlen(key), NULL, 10);
}

static bool json_true(const char *from, const char *key)
{
	const char *p = strstr(from, key);
	cr_assert_not_null(p, "no %s in the stats snapshot", key);
	return !strncmp(p + strlen(key), "true", 4);
}

/* The endpoints of a snapshot (keys in the order stats.c writes them). */
static unsigned stat_eps(const char *json, struct ep_snap *out, unsigned max)
{
	const char *p = strstr(json, "\"endpoints\":[");
	unsigned n = 0;
	cr_assert_not_null(p, "no endpoints in the stats snapshot");
	while ((p = strstr(p, "{\"id\":")) && n < max) {
		struct ep_snap *e = &out[n++];
		e->id = (unsigned)json_num(p, "{\"id\":");
		e->server = json_true(p, "\"server\":");
		const char *st = strstr(p, "\"state\":\"");
		cr_assert_not_null(st);
		snprintf(e->state, sizeof(e->state), "%.*s", (int)strcspn(st + 9, "\""), st + 9);
		e->rails = (unsigned)json_num(p, "\"rails\":");
		e->cached = json_true(p, "\"cached\":");
		e->refs = (unsigned)json_num(p, "\"refs\":");
		const char *r = strstr(p, "\"resources\":{");
		cr_assert_not_null(r);
		e->fds = (unsigned)json_num(r, "\"fds\":");
		e->qps = (unsigned)json_num(r, "\"qps\":");
		e->bytes = json_num(r, "\"bytes\":");
		p++;
	}
	return n;
}

/* The pair's two endpoints (ids[]) each hold one fd per rail (rdma: its
 * completion channel; tcp, shm: its stream) and, on rdma, one QP per rail;
 * none on the others. Within 2 s: a client's extra rails join after READY.
 * Other endpoints in the snapshot are the server's sides of joins still
 * in their handshake (of a pair closed while its rail joined: dropped
 * after handshake_timeout_ms); the fds and device counts at the end
 * cover those. */
static bool stat_rails_ok(const struct ep_snap *e, unsigned n, bool rdma, const unsigned ids[2], char *why,
			  size_t len)
{
	unsigned found = 0;
	for (unsigned i = 0; i < n; i++) {
		if (e[i].id != ids[0] && e[i].id != ids[1])
			continue;
		found++;
		if (e[i].qps != (rdma ? e[i].rails : 0) || e[i].fds != e[i].rails) {
			snprintf(why, len, "endpoint %u (%s, %s) holds %u QPs and %u fds for %u rails", e[i].id,
				 e[i].server ? "server" : "client", e[i].state, e[i].qps, e[i].fds, e[i].rails);
			return false;
		}
	}
	if (found != 2)
		snprintf(why, len, "the snapshot lists %u of the pair's 2 endpoints", found);
	return found == 2;
}

static void stat_check_rails(kvw_ctx *ctx, bool rdma, uint32_t k, const unsigned ids[2])
{
	static char js[65536];
	struct ep_snap e[16];
	char why[200];
	uint64_t end = kvwt_now_ms() + 2000;
	for (;;) {
		stat_read(ctx, js, sizeof(js));
		unsigned n = stat_eps(js, e, 16);
		if (stat_rails_ok(e, n, rdma, ids, why, sizeof(why))) {
			for (unsigned i = 0; i < n; i++)
				if (e[i].id != ids[0] && e[i].id != ids[1])
					cr_log_info("cycle %u: also endpoint %u (%s, %s, %u QPs)", k, e[i].id,
						    e[i].server ? "server" : "client", e[i].state, e[i].qps);
			return;
		}
		cr_assert_lt(kvwt_now_ms(), end, "cycle %u: %s", k, why);
		kvwt_spin(&ctx, 1, 20);
	}
}

/* ------------------------------------------- the device's own counts */
struct dev_res {
	long pd, cq, qp, cm_id, mr;
	int devs; /* devices listed (not compared) */
};

/* Sums `rdma resource show` over the devices ("0: rxe0: pd 1 cq 2 qp 1
 * cm_id 0 mr 0 ctx 0 srq 0"): the kernel's count, not the library's. */
static struct dev_res dev_res_now(void)
{
	struct dev_res r = {0};
	char line[512];
	int devs = 0;
	FILE *f = popen("rdma resource show 2>&1", "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *key = strtok_r(line, " \t\n", &save), *val;
		if (!key || !strchr(key, ':') || !strtok_r(NULL, " \t\n", &save))
			continue; /* "0:" then "rxe0:" */
		devs++;
		while ((key = strtok_r(NULL, " \t\n", &save)) && (val = strtok_r(NULL, " \t\n", &save))) {
			long v = strtol(val, NULL, 10);
			r.pd += !strcmp(key, "pd") ? v : 0;
			r.cq += !strcmp(key, "cq") ? v : 0;
			r.qp += !strcmp(key, "qp") ? v : 0;
			r.cm_id += !strcmp(key, "cm_id") ? v : 0;
			r.mr += !strcmp(key, "mr") ? v : 0;
		}
	}
	cr_assert_eq(pclose(f), 0, "`rdma resource show` failed (iproute2 needed)");
	cr_assert_gt(devs, 0, "`rdma resource show` lists no RDMA device");
	r.devs = devs;
	return r;
}

static bool dev_res_eq(struct dev_res a, struct dev_res b)
{
	return a.pd == b.pd && a.cq == b.cq && a.qp == b.qp && a.cm_id == b.cm_id && a.mr == b.mr;
}

/* Progress until the device's counts are want (a closed rail lingers
 * until its last sends completed), at most 10 s. */
static struct dev_res dev_res_settle(kvw_ctx *const *ctxs, int n_ctx, struct dev_res want)
{
	struct dev_res now = dev_res_now();
	for (uint64_t end = kvwt_now_ms() + 10000; !dev_res_eq(now, want) && kvwt_now_ms() < end;) {
		kvwt_spin(ctxs, n_ctx, 20);
		now = dev_res_now();
	}
	return now;
}

/* ------------------------------------------------------------- cycles */
struct cyc {
	const char *what; /* for the log: the config's point */
	const char *uri;
	const char *const *cfg; /* extra config, NULL-terminated */
	uint32_t cycles, warmup, check_every;
	bool rdma;
};

struct run {
	const struct cyc *cy;
	kvw_ctx *ctx;
	kvw_listener *l;
	uint64_t last_id;
	bool have_base;
	struct dev_res base; /* the device after the warm-up (rdma) */
};

/* While the pair is live: what each endpoint holds, and on rdma what the
 * device holds: client and server on the same device, so per rail 2 QPs,
 * 4 CQs (send, recv), 4 MRs (ring buffers) and 2 cm_ids more than after
 * the warm-up, once the rails of the last cycle that linger for their last
 * sends (up to 50 ms, rdma_conn.c) are gone. */
static void live_check(struct run *r, kvw_ep *c, kvw_ep *s, uint32_t k)
{
	kvw_ep_info in = {.size = sizeof(in)}, sin = {.size = sizeof(sin)};
	cr_assert_eq(kvw_ep_query(c, &in), KVW_OK);
	cr_assert_eq(kvw_ep_query(s, &sin), KVW_OK);
	stat_check_rails(r->ctx, r->cy->rdma, k, (unsigned[]){(unsigned)in.id, (unsigned)sin.id});
	if (!r->cy->rdma || !r->have_base)
		return;
	long n = in.rails;
	struct dev_res want = {r->base.pd, r->base.cq + 4 * n, r->base.qp + 2 * n, r->base.cm_id + 2 * n,
			       r->base.mr + 4 * n, 0};
	struct dev_res now = dev_res_settle(&r->ctx, 1, want);
	cr_assert(dev_res_eq(now, want), "cycle %u: with one pair of %ld rails live the device holds pd %ld "
		  "cq %ld qp %ld cm_id %ld mr %ld, want %ld %ld %ld %ld %ld", k, n, now.pd, now.cq, now.qp,
		  now.cm_id, now.mr, want.pd, want.cq, want.qp, want.cm_id, want.mr);
}

static void one_cycle(struct run *r, uint32_t k)
{
	kvw_ctx *ctx = r->ctx;
	kvw_ep *c = NULL, *s = NULL;
	kvw_status st = kvw_connect(ctx, kvw_listener_uri(r->l), 10000, &c);
	cr_assert_eq(st, KVW_OK, "cycle %u: connect: %s: %s", k, kvw_strerror(st), kvw_ctx_last_error(ctx));
	st = kvw_accept(r->l, 10000, &s);
	cr_assert_eq(st, KVW_OK, "cycle %u: accept: %s: %s", k, kvw_strerror(st), kvw_ctx_last_error(ctx));
	kvw_ep_info in = {.size = sizeof(in)};
	cr_assert_eq(kvw_ep_query(c, &in), KVW_OK);
	cr_assert(in.id != r->last_id && in.refs == 1, "cycle %u: a closed endpoint came back (id %llu, "
		  "refs %u)", k, (unsigned long long)in.id, in.refs);
	r->last_id = in.id;
	if (k % 100 == 0) {
		uint64_t rtt;
		st = kvw_ep_ping(k % 200 ? c : s, 5000, &rtt);
		cr_assert_eq(st, KVW_OK, "cycle %u: ping: %s", k, kvw_strerror(st));
	}
	if (k % r->cy->check_every == 0)
		live_check(r, c, s, k);
	kvw_ep_close(k & 1 ? s : c);
	if (k % 7 == 0) /* now and then the survivor sees the CLOSE first */
		for (int i = 0; i < 3; i++)
			kvw_progress(ctx);
	kvw_ep_close(k & 1 ? c : s);
}

/* The listener still serves: one pair moves a verified sequence. */
static void one_transfer(kvw_ctx *ctx, kvw_listener *l)
{
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
			cr_assert_eq(memcmp(kvwt_page(&dst, layer, blk[b]), kvwt_page(&src, layer, blk[b]), 4096), 0);
	kvw_req_free(rr);
	kvw_req_free(sr);
	kvwt_pool_free(&src);
	kvwt_pool_free(&dst);
	kvw_ep_close(c);
	kvw_ep_close(s);
}

static void cfg_with_stats(const char *const *extra, const char *out[16], char *path, size_t len)
{
	int n = 0;
	stat_path(path, len);
	out[n++] = "stats_socket";
	out[n++] = path;
	for (; extra && extra[0] && n < 14; extra += 2) {
		out[n++] = extra[0];
		out[n++] = extra[1];
	}
	out[n] = NULL;
}

static void cycles(const struct cyc *cy)
{
	const char *cfg[16];
	char path[108];
	struct dev_res d0 = {0}, d1 = {0};
	cfg_with_stats(cy->cfg, cfg, path, sizeof(path));
	kvw_ctx *ctx = kvwt_ctx(cfg);
	kvw_listener *l;
	cr_assert_eq(kvw_listen(ctx, cy->uri, &l), KVW_OK, "listen %s: %s", cy->uri, kvw_ctx_last_error(ctx));
	struct run r = {.cy = cy, .ctx = ctx, .l = l, .last_id = UINT64_MAX};
	uint64_t t0 = kvwt_now_ms();
	for (uint32_t k = 0; k < cy->warmup; k++)
		one_cycle(&r, k);
	/* rdma: the last cycle's rails linger up to 50 ms with their rings */
	kvwt_spin(&ctx, 1, cy->rdma ? 300 : 50);
	if (cy->rdma) {
		d0 = r.base = dev_res_now();
		r.have_base = true;
	}
	int fd0 = open_fds();
	long rss0 = rss_trimmed();
	uint64_t t1 = kvwt_now_ms();
	for (uint32_t k = cy->warmup; k < cy->cycles; k++)
		one_cycle(&r, k);
	uint64_t t2 = kvwt_now_ms();
	kvwt_spin(&ctx, 1, cy->rdma ? 300 : 50);
	if (cy->rdma)
		d1 = dev_res_settle(&ctx, 1, d0);
	int fd1 = open_fds();
	long rss1 = rss_trimmed();
	uint64_t per = cy->cycles - cy->warmup;
	cr_log_info("%s%s: %u connect/close cycles in %llu ms (%.0f us each after the warm-up); fds %d -> "
		    "%d, RSS %ld -> %ld KiB after the first %u", cy->uri, cy->what,
		    cy->cycles, (unsigned long long)(t2 - t0), 1000.0 * (double)(t2 - t1) / (double)per, fd0,
		    fd1, rss0, rss1, cy->warmup);
	if (cy->rdma)
		cr_log_info("device (rdma resource show): pd %ld -> %ld, cq %ld -> %ld, qp %ld -> %ld, cm_id "
			    "%ld -> %ld, mr %ld -> %ld", d0.pd, d1.pd, d0.cq, d1.cq, d0.qp, d1.qp, d0.cm_id,
			    d1.cm_id, d0.mr, d1.mr);
	cr_assert_eq(fd1, fd0, "%d fds leaked over %llu cycles", fd1 - fd0, (unsigned long long)per);
	cr_assert_lt(rss1 - rss0, 4096, "RSS grew %ld KiB over %llu cycles", rss1 - rss0,
		     (unsigned long long)per);
	cr_assert(dev_res_eq(d1, d0), "the device holds %ld QPs, %ld CQs, %ld MRs, %ld cm_ids more than "
		  "after the warm-up", d1.qp - d0.qp, d1.cq - d0.cq, d1.mr - d0.mr, d1.cm_id - d0.cm_id);
	one_transfer(ctx, l);
	kvw_listener_close(l);
	kvw_ctx_destroy(ctx);
}

/* ------------------------------------------------- parked endpoints */
struct park {
	kvw_ctx *c, *s; /* client (ep_cache=1, stats socket), listener */
	kvw_listener *l;
	const char *uri;
	bool rdma;
	struct ep_snap idle; /* the parked endpoint, from the stats socket */
	int fds_parked;
	struct dev_res dev_parked; /* rdma: the device while it is parked */
};

static kvw_ep *park_connect(struct park *p)
{
	kvw_ep *ep = NULL;
	cr_assert_eq(kvw_connect_start(p->c, p->uri, &ep), KVW_OK, "%s", kvw_ctx_last_error(p->c));
	for (uint64_t end = kvwt_now_ms() + 10000; kvw_ep_status(ep) == KVW_INPROGRESS && kvwt_now_ms() < end;) {
		kvw_progress(p->c);
		kvw_progress(p->s);
	}
	cr_assert_eq(kvw_ep_status(ep), KVW_OK, "connect %s: %s", p->uri, kvw_strerror(kvw_ep_status(ep)));
	return ep;
}

static kvw_ep *park_accept(struct park *p)
{
	kvw_ep *s = NULL;
	for (uint64_t end = kvwt_now_ms() + 10000; !s && kvwt_now_ms() < end;) {
		kvw_progress(p->c);
		if (kvw_accept(p->l, 1, &s) != KVW_OK)
			s = NULL;
	}
	cr_assert_not_null(s, "the listener accepted nothing within 10 s");
	return s;
}

/* The one endpoint, parked (refs 0): what it holds, by the stats socket. */
static void park_snap(struct park *p, uint64_t id, uint32_t i)
{
	static char js[65536];
	struct ep_snap e[4];
	stat_read(p->c, js, sizeof(js));
	cr_assert_eq(stat_eps(js, e, 4), 1, "reuse %u: the client holds more than its one endpoint", i);
	cr_assert(e[0].cached && e[0].refs == 0 && e[0].id == id, "reuse %u: endpoint %u cached %d refs %u, "
		  "want %llu parked with refs 0", i, e[0].id, e[0].cached, e[0].refs, (unsigned long long)id);
	cr_assert_eq(e[0].qps, p->rdma ? e[0].rails : 0, "a parked endpoint holds %u QPs", e[0].qps);
	p->idle = e[0];
	p->fds_parked = open_fds();
	if (p->rdma)
		p->dev_parked = dev_res_now();
}

/* Connect, then close and reconnect the same URI `reuses` times: the one
 * endpoint every time, no new handshake; then idle: closed after
 * PARKED_IDLE_MS (not before half of it), the server sees its CLOSE. */
static void park_round(struct park *p, uint32_t reuses)
{
	kvw_ep *a = park_connect(p), *s = park_accept(p), *x = NULL;
	kvw_ep_info in = {.size = sizeof(in)};
	cr_assert_eq(kvw_ep_query(a, &in), KVW_OK);
	uint64_t id = in.id;
	cr_assert_eq(in.refs, 1);
	for (uint32_t i = 0; i < reuses; i++) {
		kvw_ep_close(a);
		if (i % 100 == 0)
			park_snap(p, id, i);
		kvw_ep *b = NULL;
		cr_assert_eq(kvw_connect(p->c, p->uri, 1000, &b), KVW_OK, "reuse %u: %s", i, kvw_ctx_last_error(p->c));
		kvw_ep_info bi = {.size = sizeof(bi)};
		cr_assert_eq(kvw_ep_query(b, &bi), KVW_OK);
		cr_assert(b == a && bi.id == id && bi.refs == 1, "reuse %u: got endpoint %llu refs %u, want the "
			  "parked %llu with refs 1", i, (unsigned long long)bi.id, bi.refs, (unsigned long long)id);
		cr_assert_neq(kvw_accept(p->l, 0, &x), KVW_OK, "reuse %u: a second handshake reached the listener", i);
	}
	kvw_ep_close(a);
	uint64_t t0 = kvwt_now_ms();
	kvwt_spin((kvw_ctx *[]){p->c, p->s}, 2, PARKED_IDLE_MS / 2);
	cr_assert_eq(kvw_ep_status(s), KVW_OK, "closed before half of ep_idle_close_ms");
	for (uint64_t end = t0 + PARKED_IDLE_MS + 10000; kvw_ep_status(s) == KVW_OK && kvwt_now_ms() < end;) {
		kvw_progress(p->c);
		kvw_progress(p->s);
	}
	uint64_t ms = kvwt_now_ms() - t0;
	cr_assert_eq(kvw_ep_status(s), KVW_ERR_PEER_DEAD, "the parked endpoint was not closed %llu ms after "
		     "its last close: %s", (unsigned long long)ms, kvw_strerror(kvw_ep_status(s)));
	cr_log_info("%s: parked endpoint %llu closed %llu ms after its last close (ep_idle_close_ms %d)",
		    p->uri, (unsigned long long)id, (unsigned long long)ms, PARKED_IDLE_MS);
	kvw_ep_close(s);
	kvwt_spin((kvw_ctx *[]){p->c, p->s}, 2, 100);
}

static void parked(const char *uri, bool rdma)
{
	const char *cfg[16];
	char path[108], idle[16];
	struct park p = {.uri = NULL, .rdma = rdma};
	struct dev_res d0 = {0}, d1 = {0};
	snprintf(idle, sizeof(idle), "%d", PARKED_IDLE_MS);
	cfg_with_stats((const char *const[]){"ep_cache", "1", "ep_idle_close_ms", idle, NULL}, cfg, path,
		       sizeof(path));
	p.c = kvwt_ctx(cfg);
	p.s = kvwt_ctx(NULL);
	cr_assert_eq(kvw_listen(p.s, uri, &p.l), KVW_OK, "listen %s: %s", uri, kvw_ctx_last_error(p.s));
	p.uri = kvw_listener_uri(p.l);
	park_round(&p, 10); /* warm-up: what the first endpoint allocates once */
	int fd0 = open_fds();
	long rss0 = rss_trimmed();
	if (rdma)
		d0 = dev_res_now();
	for (int round = 0; round < PARKED_ROUNDS; round++) {
		park_round(&p, PARKED_REUSES);
		if (rdma)
			d1 = dev_res_settle((kvw_ctx *[]){p.c, p.s}, 2, d0);
		int fds = open_fds();
		cr_assert_eq(fds, fd0, "round %d: %d fds left after the parked endpoint closed", round, fds - fd0);
		cr_assert(dev_res_eq(d1, d0), "round %d: the device holds %ld QPs, %ld CQs, %ld MRs more after "
			  "the parked endpoint closed", round, d1.qp - d0.qp, d1.cq - d0.cq, d1.mr - d0.mr);
	}
	int fd1 = open_fds();
	long rss1 = rss_trimmed();
	cr_log_info("%s: one idle (parked) endpoint holds %u fds, %u QPs, %lu bytes (kvwire stat "
		    "resources); process fds %d with it and its server end, %d -> %d after it closed; RSS %ld "
		    "-> %ld KiB over %d rounds of %u reuses", p.uri, p.idle.fds, p.idle.qps, p.idle.bytes,
		    p.fds_parked, fd0, fd1, rss0, rss1, PARKED_ROUNDS, PARKED_REUSES);
	if (rdma)
		cr_log_info("device (rdma resource show): qp %ld -> %ld with it parked (and its server end) -> %ld "
			    "after it closed; cq %ld -> %ld -> %ld, mr %ld -> %ld -> %ld, cm_id %ld -> %ld -> %ld",
			    d0.qp, p.dev_parked.qp, d1.qp, d0.cq, p.dev_parked.cq, d1.cq, d0.mr, p.dev_parked.mr,
			    d1.mr, d0.cm_id, p.dev_parked.cm_id, d1.cm_id);
	cr_assert(!rdma || p.dev_parked.qp - d0.qp == 2 * (long)p.idle.rails, "the device held %ld QPs "
		  "more with one endpoint of %u rails parked (and its server end)", p.dev_parked.qp - d0.qp,
		  p.idle.rails);
	cr_assert_lt(rss1 - rss0, 4096, "RSS grew %ld KiB", rss1 - rss0);
	kvw_listener_close(p.l);
	kvw_ctx_destroy(p.c);
	kvw_ctx_destroy(p.s);
}

static const char *rdma_uri_or_skip(void)
{
	const char *d = getenv("KVW_TEST_DRIVER"), *u = getenv("KVW_TEST_LISTEN_URI");
	if (!d || strcmp(d, "rdma") || !u || strncmp(u, "rdma://", 7))
		cr_skip_test("rdma runs only inside the Soft-RoCE VM (meson test fleet-rdma: "
			     "KVW_TEST_DRIVER=rdma, KVW_TEST_LISTEN_URI=rdma://IP:0)");
	if (system("rdma resource show >/dev/null 2>&1") != 0)
		cr_skip_test("no RDMA device here (`rdma resource show` fails): run it in tests/vm/run-rxe-vm.sh");
	return u;
}

static void shm_uri(char *buf, size_t len)
{
	snprintf(buf, len, "shm:///tmp/kvwt-cycles.%ld.sock", (long)getpid());
}

static const char *const cache_idle0[] = {"ep_cache", "1", "ep_idle_close_ms", "0", NULL};

Test(fleet_cycles, tcp_ten_thousand_connect_close)
{
	cycles(&(struct cyc){"", "tcp://127.0.0.1:0", NULL, CYCLES, WARMUP, CHECK_EVERY, false});
}

Test(fleet_cycles, shm_ten_thousand_connect_close)
{
	char uri[128];
	shm_uri(uri, sizeof(uri));
	cycles(&(struct cyc){"", uri, NULL, CYCLES, WARMUP, CHECK_EVERY, false});
}

Test(fleet_cycles, tcp_cache_idle0_ten_thousand_connect_close)
{
	cycles(&(struct cyc){" (ep_cache=1, idle 0)", "tcp://127.0.0.1:0", cache_idle0, CYCLES, WARMUP, CHECK_EVERY, false});
}

Test(fleet_cycles, shm_cache_idle0_ten_thousand_connect_close)
{
	char uri[128];
	shm_uri(uri, sizeof(uri));
	cycles(&(struct cyc){" (ep_cache=1, idle 0)", uri, cache_idle0, CYCLES, WARMUP, CHECK_EVERY, false});
}

Test(fleet_cycles, rdma_connect_close, .timeout = 300)
{
	const char *uri = rdma_uri_or_skip();
	cycles(&(struct cyc){"", uri, NULL, RDMA_CYCLES, RDMA_WARMUP, RDMA_CHECK_EVERY, true});
}

Test(fleet_cycles, tcp_cache_parked_reuse_then_idle_close)
{
	parked("tcp://127.0.0.1:0", false);
}

Test(fleet_cycles, shm_cache_parked_reuse_then_idle_close)
{
	char uri[128];
	shm_uri(uri, sizeof(uri));
	parked(uri, false);
}

Test(fleet_cycles, rdma_cache_parked_reuse_then_idle_close, .timeout = 120)
{
	parked(rdma_uri_or_skip(), true);
}

/* Two rails on two devices (rxe0, rxe1: RXE_VM_RAILS=2): each endpoint
 * holds two QPs and two fds, the device twice the per-rail counts. */
Test(fleet_cycles, rdma_two_rails_connect_close, .timeout = 300)
{
	const char *uri = rdma_uri_or_skip();
	if (dev_res_now().devs < 2)
		cr_skip_test("two rails need two RDMA devices (tests/vm/run-rxe-vm.sh with RXE_VM_RAILS=2)");
	static const char *const two[] = {"rails", "2", NULL};
	cycles(&(struct cyc){" (rails=2)", uri, two, RDMA2_CYCLES, RDMA2_WARMUP, RDMA_CHECK_EVERY, true});
}
