/* SPDX-License-Identifier: MIT */
#include "kvwt.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ drivers */
static unsigned kvwt_uri_counter;

static void kvwt_uri_tcp(char *buf, size_t len)
{
	snprintf(buf, len, "tcp://127.0.0.1:0");
}

static void kvwt_uri_shm(char *buf, size_t len)
{
	snprintf(buf, len, "shm:///tmp/kvwt-%d-%u-%ld.sock", (int)getpid(), kvwt_uri_counter++,
		 (long)(kvwt_now_ms() % 100000));
}

/* loop: a name unique in the process (the registry is process-wide) */
static void kvwt_uri_loop(char *buf, size_t len)
{
	snprintf(buf, len, "loop://kvwt-%d-%u", (int)getpid(), kvwt_uri_counter++);
}

/* rdma, dpdk: the fabric owner names the listen address through
 * KVW_TEST_LISTEN_URI, e.g. rdma://10.10.0.1:0 (port 0 = pick one). */
static void kvwt_uri_env(char *buf, size_t len)
{
	const char *u = getenv("KVW_TEST_LISTEN_URI");
	cr_assert(u && *u, "driver %s needs KVW_TEST_LISTEN_URI (e.g. rdma://IP:0)",
		  getenv("KVW_TEST_DRIVER"));
	snprintf(buf, len, "%s", u);
}

static const char *const kvwt_no_cfg[] = { NULL };

static const struct kvwt_drv kvwt_drivers[] = {
	{ "tcp", kvwt_uri_tcp, kvwt_no_cfg, true },
	{ "shm", kvwt_uri_shm, kvwt_no_cfg, true },
	{ "loop", kvwt_uri_loop, kvwt_no_cfg, false },
	{ "rdma", kvwt_uri_env, kvwt_no_cfg, false },
	{ "dpdk", kvwt_uri_env, kvwt_no_cfg, false },
	{ "ofi", kvwt_uri_env, kvwt_no_cfg, false },
};

const struct kvwt_drv *kvwt_driver(void)
{
	const char *name = getenv("KVW_TEST_DRIVER");
	if (!name || !*name)
		name = "tcp";
	for (size_t i = 0; i < sizeof(kvwt_drivers) / sizeof(kvwt_drivers[0]); i++)
		if (!strcmp(kvwt_drivers[i].name, name))
			return &kvwt_drivers[i];
	cr_assert_fail("KVW_TEST_DRIVER=%s: unknown driver (tcp, shm, loop, rdma, dpdk, ofi)", name);
	return NULL;
}

void kvwt_listen_uri(char *buf, size_t len)
{
	const char *u = getenv("KVW_TEST_LISTEN_URI");
	if (u && *u) {
		snprintf(buf, len, "%s", u);
		return;
	}
	kvwt_driver()->listen_uri(buf, len);
}

uint64_t kvwt_slack_ms(uint64_t ms)
{
	const char *e = getenv("KVW_TEST_TIME_SCALE");
	long k = e ? strtol(e, NULL, 10) : 1;
	return ms * (uint64_t)(k >= 1 && k <= 20 ? k : 1);
}

/* --------------------------------------------------------------- ctx */
uint64_t kvwt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void kvwt_cfg_apply(kvw_config *cfg, const char *const *kv)
{
	for (size_t i = 0; kv && kv[i]; i += 2) {
		kvw_status st = kvw_config_set(cfg, kv[i], kv[i + 1]);
		cr_assert_eq(st, KVW_OK, "config %s=%s: %s", kv[i], kv[i + 1], kvw_strerror(st));
	}
}

/* Set in a process forked by a test (Criterion execs its workers, so a
 * worker itself never has it). */
static bool kvwt_forked;

static void kvwt_on_fork_child(void)
{
	kvwt_forked = true;
}

__attribute__((constructor)) static void kvwt_fork_watch(void)
{
	pthread_atfork(NULL, NULL, kvwt_on_fork_child);
}

/* A forked peer takes the other end of a fabric that its parent holds:
 * KVW_TEST_CHILD_EAL becomes its dpdk_eal, with %P = the parent's pid
 * (what %p was in the parent), e.g. the client role of the parent's memif
 * socket. Unset: nothing changes. */
static void kvwt_child_eal(kvw_config *cfg)
{
	const char *e = getenv("KVW_TEST_CHILD_EAL");
	char buf[1024], pp[16];
	size_t o = 0;

	if (!kvwt_forked || !e || !*e)
		return;
	snprintf(pp, sizeof(pp), "%d", (int)getppid());
	for (; *e && o + sizeof(pp) < sizeof(buf); e++) {
		if (e[0] == '%' && e[1] == 'P') {
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s", pp);
			e++;
		} else {
			buf[o++] = *e;
		}
	}
	buf[o] = 0;
	kvw_status st = kvw_config_set(cfg, "dpdk_eal", buf);
	cr_assert_eq(st, KVW_OK, "KVW_TEST_CHILD_EAL=%s: %s", buf, kvw_strerror(st));
}

/* KVW_TEST_SKIP="suite::test ..." skips those tests, with the sentence in
 * KVW_TEST_SKIP_WHY, when they open their first context: a fabric can
 * leave out a case it cannot run for a known reason, the case keeps
 * running everywhere else. */
static void kvwt_skip_listed(void)
{
	const char *list = getenv("KVW_TEST_SKIP"), *why = getenv("KVW_TEST_SKIP_WHY");
	char name[256];

	if (kvwt_forked || !list || !*list || !criterion_current_test)
		return;
	snprintf(name, sizeof(name), "%s::%s", criterion_current_test->category,
		 criterion_current_test->name);
	size_t n = strlen(name);
	for (const char *p = strstr(list, name); p; p = strstr(p + 1, name))
		if ((p == list || p[-1] == ' ' || p[-1] == ',') && (p[n] == 0 || p[n] == ' ' || p[n] == ','))
			cr_skip_test("%s", why && *why ? why : "listed in KVW_TEST_SKIP");
}

kvw_ctx *kvwt_ctx(const char *const *extra)
{
	kvw_config *cfg = NULL;
	kvw_ctx *ctx = NULL;
	kvwt_skip_listed();
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	kvwt_cfg_apply(cfg, kvwt_driver()->cfg);
	kvwt_child_eal(cfg);
	kvwt_cfg_apply(cfg, extra);
	kvw_status st = kvw_ctx_create(cfg, &ctx);
	kvw_config_destroy(cfg);
	cr_assert_eq(st, KVW_OK, "kvw_ctx_create: %s", kvw_strerror(st));
	return ctx;
}

/* -------------------------------------------------------------- pools */
void kvwt_pool_make(kvw_ctx *ctx, struct kvwt_pool *p, uint32_t n_layers, uint32_t n_blocks,
		    uint64_t block_bytes, uint64_t stride)
{
	memset(p, 0, sizeof(*p));
	p->n_layers = n_layers;
	p->n_blocks = n_blocks;
	p->bb = block_bytes;
	p->stride = stride;
	p->layer_stride = stride * n_blocks;
	size_t len = p->layer_stride * n_layers;
	kvw_status st = kvw_mem_alloc(ctx, len, KVW_MEM_NO_PIN, &p->mem);
	cr_assert_eq(st, KVW_OK, "kvw_mem_alloc(%zu): %s: %s", len, kvw_strerror(st),
		     kvw_ctx_last_error(ctx));
	p->base = kvw_mem_addr(p->mem);
	cr_assert_not_null(p->base);
	cr_assert_geq(kvw_mem_len(p->mem), len);
	kvw_layout_desc d = {
		.n_layers = n_layers, .n_blocks = n_blocks, .block_bytes = block_bytes,
		.block_stride = stride, .base_offset = 0, .layer_stride = p->layer_stride,
	};
	st = kvw_layout_create(p->mem, &d, &p->lay);
	cr_assert_eq(st, KVW_OK, "kvw_layout_create: %s: %s", kvw_strerror(st),
		     kvw_ctx_last_error(ctx));
}

void kvwt_pool_free(struct kvwt_pool *p)
{
	if (p->lay)
		kvw_layout_destroy(p->lay);
	if (p->mem)
		kvw_mem_dereg(p->mem);
	memset(p, 0, sizeof(*p));
}

uint8_t *kvwt_page(const struct kvwt_pool *p, uint32_t layer, uint32_t block)
{
	return p->base + (uint64_t)layer * p->layer_stride + (uint64_t)block * p->stride;
}

static inline uint64_t kvwt_mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void kvwt_fill(void *buf, size_t len, uint64_t seed)
{
	uint8_t *b = buf;
	uint64_t s = seed, w;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		w = kvwt_mix(&s);
		memcpy(b + i, &w, 8);
	}
	w = kvwt_mix(&s);
	memcpy(b + i, &w, len - i);
}

bool kvwt_check(const void *buf, size_t len, uint64_t seed)
{
	const uint8_t *b = buf;
	uint64_t s = seed, w;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		w = kvwt_mix(&s);
		if (memcmp(b + i, &w, 8))
			return false;
	}
	w = kvwt_mix(&s);
	return !memcmp(b + i, &w, len - i);
}

uint64_t kvwt_seed(uint64_t tag, uint32_t layer, uint32_t block)
{
	uint64_t s = tag * 0x100000001b3ull ^ ((uint64_t)layer << 32 | block);
	return kvwt_mix(&s);
}

void kvwt_pool_fill(struct kvwt_pool *p, uint64_t tag)
{
	kvwt_fill(p->base, p->layer_stride * p->n_layers, kvwt_seed(tag, 0xffffffffu, 0));
	for (uint32_t l = 0; l < p->n_layers; l++)
		for (uint32_t b = 0; b < p->n_blocks; b++)
			kvwt_fill(kvwt_page(p, l, b), p->bb, kvwt_seed(tag, l, b));
}

void kvwt_pick_blocks(uint32_t *out, uint32_t n, uint32_t range, uint64_t seed)
{
	uint32_t *all = malloc(sizeof(*all) * range);
	cr_assert_not_null(all);
	for (uint32_t i = 0; i < range; i++)
		all[i] = i;
	uint64_t s = seed;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t j = i + (uint32_t)(kvwt_mix(&s) % (range - i));
		uint32_t t = all[i];
		all[i] = all[j];
		all[j] = t;
		out[i] = all[i];
	}
	free(all);
}

/* ------------------------------------------------------------ requests */
void kvwt_rec_init(struct kvwt_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->status = KVW_INPROGRESS;
}

static void kvwt_on_event(const kvw_event *ev)
{
	struct kvwt_rec *r = ev->user_data;
	if (!r)
		return;
	if (ev->type == KVW_EV_LAYER) {
		r->layer_events++;
		r->layer_bytes += ev->bytes;
		if (ev->layer < KVW_MAX_LAYERS)
			r->layer_seen[ev->layer]++;
	} else if (ev->type == KVW_EV_SEQ) {
		r->seq_events++;
		r->status = ev->status;
		r->seq_bytes = ev->bytes;
		r->t_done_ms = kvwt_now_ms();
	}
}

static int kvwt_pump(kvw_ctx *ctx)
{
	kvw_event evs[64];
	int n = kvw_poll(ctx, evs, 64);
	cr_assert_geq(n, 0, "kvw_poll: %s", kvw_strerror((kvw_status)n));
	for (int i = 0; i < n; i++)
		kvwt_on_event(&evs[i]);
	return n;
}

bool kvwt_drive(kvw_ctx *const *ctxs, int n_ctx, int timeout_ms, kvwt_pred pred, void *arg)
{
	uint64_t end = kvwt_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		int got = 0;
		for (int i = 0; i < n_ctx; i++)
			got += kvwt_pump(ctxs[i]);
		if (pred && pred(arg))
			return true;
		if (kvwt_now_ms() >= end)
			return pred ? pred(arg) : true;
		if (!got && n_ctx == 1)
			kvw_ctx_wait(ctxs[0], 1);
	}
}

bool kvwt_drive1(kvw_ctx *ctx, int timeout_ms, kvwt_pred pred, void *arg)
{
	return kvwt_drive(&ctx, 1, timeout_ms, pred, arg);
}

void kvwt_spin(kvw_ctx *const *ctxs, int n_ctx, int ms)
{
	kvwt_drive(ctxs, n_ctx, ms, NULL, NULL);
}

bool kvwt_rec_done(void *rec)
{
	return ((struct kvwt_rec *)rec)->status != KVW_INPROGRESS;
}

bool kvwt_recs_done(void *recs)
{
	struct kvwt_rec **r = recs;
	for (; *r; r++)
		if ((*r)->status == KVW_INPROGRESS)
			return false;
	return true;
}

/* ------------------------------------------------------------- endpoints */
void kvwt_pair_open(kvw_ctx *ctx, struct kvwt_pair *p)
{
	char uri[256];
	memset(p, 0, sizeof(*p));
	p->ctx = ctx;
	kvwt_listen_uri(uri, sizeof(uri));
	kvw_status st = kvw_listen(ctx, uri, &p->l);
	cr_assert_eq(st, KVW_OK, "kvw_listen(%s): %s: %s", uri, kvw_strerror(st),
		     kvw_ctx_last_error(ctx));
	const char *bound = kvw_listener_uri(p->l);
	cr_assert_not_null(bound);
	st = kvw_connect(ctx, bound, 10000, &p->client);
	cr_assert_eq(st, KVW_OK, "kvw_connect(%s): %s: %s", bound, kvw_strerror(st),
		     kvw_ctx_last_error(ctx));
	st = kvw_accept(p->l, 10000, &p->server);
	cr_assert_eq(st, KVW_OK, "kvw_accept: %s: %s", kvw_strerror(st), kvw_ctx_last_error(ctx));
	cr_assert_eq(kvw_ep_status(p->client), KVW_OK);
	cr_assert_eq(kvw_ep_status(p->server), KVW_OK);
}

kvw_status kvwt_connect2(kvw_ctx *cctx, const char *uri, kvw_listener *l, int timeout_ms,
			 kvw_ep **client, kvw_ep **server)
{
	kvw_ep *c = NULL, *s = NULL;
	kvw_status st = kvw_connect_start(cctx, uri, &c);
	if (st < 0)
		return st;
	uint64_t end = kvwt_now_ms() + (uint64_t)timeout_ms;
	while (kvwt_now_ms() < end) {
		kvw_ep *extra = NULL;
		kvw_progress(cctx);
		if (!s && kvw_accept(l, 1, &s) < 0)
			s = NULL;
		else if (s && kvw_accept(l, 0, &extra) == KVW_OK) /* the server's context goes on: */
			cr_assert_fail("a second endpoint was accepted"); /* its READY may be held (fault) */
		st = kvw_ep_status(c);
		if (st != KVW_INPROGRESS && (st < 0 || s))
			break;
	}
	*client = c;
	*server = s;
	return st;
}

long kvwt_rss_kib_of(int pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), pid ? "/proc/%d/status" : "/proc/self/status", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

long kvwt_rss_kib(void)
{
	return kvwt_rss_kib_of(0);
}
