/* SPDX-License-Identifier: MIT */
/* Context: drivers, epoll fd, progress loop, event queue. */
#include "kvw_int.h"
#include "stats.h"
#include "seq.h"
#include "epcache.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* A private copy of cfg; with cfg NULL, the defaults + KVW_* environment.
 * A caller's complete config is copied as is: the environment is not read
 * again (it was, when the caller made it). */
static kvw_config *kvw_config_dup(const kvw_config *cfg, kvw_status *st)
{
	kvw_config *c;

	if (!cfg) {
		*st = kvw_config_create(&c);
		return *st == KVW_OK ? c : NULL;
	}
	*st = KVW_ERR_NOMEM;
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	for (size_t i = 0; i < KVW_CFG_MAX; i++) {
		if (cfg->val[i] && !(c->val[i] = strdup(cfg->val[i]))) {
			kvw_config_destroy(c);
			return NULL;
		}
	}
	*st = KVW_OK;
	return c;
}

/* Config secret_file: its first line becomes the secret (never on a
 * command line, so never in /proc/PID/cmdline). */
static kvw_status kvw_ctx_secret_file(struct kvw_cfgv *c, char *err, size_t errlen)
{
	FILE *f;
	char line[sizeof(c->secret) + 2];
	size_t n;

	if (!c->secret_file[0])
		return KVW_OK;
	if (!(f = fopen(c->secret_file, "re"))) {
		snprintf(err, errlen, "config secret_file: cannot read %.256s: %s", c->secret_file, strerror(errno));
		return KVW_ERR_INVALID;
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	n = strcspn(line, "\r\n");
	line[n] = 0;
	if (n == 0 || n >= sizeof(c->secret)) {
		sodium_memzero(line, sizeof(line));
		snprintf(err, errlen, "config secret_file %.256s: the first line must hold the secret "
			 "(1..%zu characters)", c->secret_file, sizeof(c->secret) - 1);
		return KVW_ERR_INVALID;
	}
	memcpy(c->secret, line, n + 1);
	sodium_memzero(line, sizeof(line));
	return KVW_OK;
}

/* Parses the copied config into ctx->cfg (reason into err). */
static kvw_status kvw_ctx_config(kvw_ctx *ctx, char *err, size_t errlen)
{
	kvw_status st = kvw_cfgv_parse(ctx->config, &ctx->cfg, err, errlen);

	if (st == KVW_OK)
		st = kvw_ctx_secret_file(&ctx->cfg, err, errlen);
	if (st == KVW_OK && sodium_init() < 0) {
		snprintf(err, errlen, "libsodium failed to initialise");
		st = KVW_ERR_IO;
	}
	return st;
}

kvw_status kvw_ctx_create(const kvw_config *cfg, kvw_ctx **out)
{
	kvw_ctx *ctx;
	char err[512];
	kvw_status st = KVW_ERR_NOMEM;

	kvw_err_clear(NULL);
	if (!out)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_ctx_create: the output pointer is NULL");
	if (!(ctx = calloc(1, sizeof(*ctx))))
		return kvw_set_err(NULL, KVW_ERR_NOMEM, "kvw_ctx_create: out of memory");
	ctx->epfd = -1;
	if (!(ctx->config = kvw_config_dup(cfg, &st)))
		goto fail; /* kvw_config_create said why */
	if ((st = kvw_ctx_config(ctx, err, sizeof(err))) != KVW_OK) {
		kvw_set_err(NULL, st, "%s", err);
		goto fail;
	}
	ctx->evq_cap = 1024;
	if (!(ctx->evq = calloc(ctx->evq_cap, sizeof(*ctx->evq)))) {
		st = kvw_set_err(NULL, KVW_ERR_NOMEM, "kvw_ctx_create: out of memory");
		goto fail;
	}
	if ((ctx->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		st = kvw_set_err(NULL, KVW_ERR_IO, "kvw_ctx_create: epoll_create1: %s (out of file "
				 "descriptors? raise `ulimit -n`)", strerror(errno));
		goto fail;
	}
	ctx->next_mem_id = 1;
	ctx->next_ep_id = 1;
	kvw_epc_ctx_init(ctx);
	if ((st = kvw_stats_open(ctx)) != KVW_OK) {
		kvw_set_err(NULL, st, "%s", ctx->err[0] ? ctx->err : "kvw_ctx_create: cannot open the stats socket");
		goto fail;
	}
	*out = ctx;
	return KVW_OK;
fail:
	if (ctx->epfd >= 0)
		close(ctx->epfd);
	free(ctx->evq);
	kvw_config_destroy(ctx->config);
	free(ctx);
	if (st == KVW_ERR_NOMEM && !kvw_ctx_last_error(NULL)[0])
		kvw_set_err(NULL, st, "kvw_ctx_create: out of memory");
	return st;
}

void kvw_ctx_destroy(kvw_ctx *ctx)
{
	if (!ctx)
		return;
	while (ctx->eps)
		kvw_ep_free(ctx->eps);
	while (ctx->listeners)
		kvw_listener_close(ctx->listeners);
	while (ctx->mems) {
		kvw_mem *m = ctx->mems;
		m->users = 0;
		kvw_mem_dereg(m);
	}
	for (int i = 0; i < KVW_DRV_MAX; i++)
		if (ctx->drv[i].open)
			ctx->drv[i].ops->close(&ctx->drv[i]);
	kvw_stats_close(ctx);
	close(ctx->epfd);
	free(ctx->evq);
	kvw_config_destroy(ctx->config);
	free(ctx);
}

int kvw_ctx_fd(const kvw_ctx *ctx)
{
	return ctx ? ctx->epfd : -1;
}

const struct kvw_cfgv *kvw_core_cfg(const kvw_ctx *ctx)
{
	return &ctx->cfg;
}

kvw_status kvw_core_watch_fd(kvw_ctx *ctx, int fd, bool want_write)
{
	struct epoll_event ev = {.events = EPOLLIN | (want_write ? EPOLLOUT : 0u), .data.fd = fd};

	if (epoll_ctl(ctx->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
		return KVW_OK;
	if (errno == ENOENT && epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
		return KVW_OK;
	return kvw_set_err(ctx, KVW_ERR_IO, "epoll_ctl(fd %d): %s", fd, strerror(errno));
}

void kvw_core_unwatch_fd(kvw_ctx *ctx, int fd)
{
	epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void kvw_ev_push(kvw_ctx *ctx, const kvw_event *ev)
{
	if (ctx->evq_tail - ctx->evq_head == ctx->evq_cap) {
		/* grow (rare: only when the caller does not poll) */
		uint32_t ncap = ctx->evq_cap * 2;
		kvw_event *n = calloc(ncap, sizeof(*n));
		if (!n) {
			kvw_log(ctx, 1, "event queue full and out of memory: event lost");
			return;
		}
		for (uint32_t i = 0; i < ctx->evq_cap; i++)
			n[i] = ctx->evq[(ctx->evq_head + i) & (ctx->evq_cap - 1)];
		free(ctx->evq);
		ctx->evq = n;
		ctx->evq_head = 0;
		ctx->evq_tail = ctx->evq_cap;
		ctx->evq_cap = ncap;
	}
	ctx->evq[ctx->evq_tail++ & (ctx->evq_cap - 1)] = *ev;
}

kvw_status kvw_progress(kvw_ctx *ctx)
{
	uint64_t now;

	if (!ctx)
		return KVW_ERR_INVALID;
	if (ctx->in_progress) /* called back from inside a pass: nothing to add */
		return KVW_OK;
	ctx->in_progress = true;
	for (int i = 0; i < KVW_DRV_MAX; i++)
		if (ctx->drv[i].open)
			ctx->drv[i].ops->progress(&ctx->drv[i]);
	kvw_ctx_reap(ctx);
	for (kvw_ep *ep = ctx->eps; ep; ep = ep->next)
		if (ep->state == KVW_EP_READY && ep->active_head)
			kvw_seq_pump(ep);
	now = kvw_now_ns();
	if (now >= ctx->next_timer_ns) {
		ctx->next_timer_ns = now + 1000000; /* timers at 1 ms granularity */
		kvw_ep *next;
		for (kvw_ep *ep = ctx->eps; ep; ep = next) {
			next = ep->next;
			kvw_ep_timers(ep, now);
		}
		kvw_stats_progress(ctx);
	}
	ctx->in_progress = false;
	for (int i = 0; i < KVW_DRV_MAX; i++) /* one write per stream for the whole pass */
		if (ctx->drv[i].open)
			ctx->drv[i].ops->flush(&ctx->drv[i]);
	return KVW_OK;
}

bool kvw_core_batching(const kvw_ctx *ctx)
{
	return ctx->in_progress;
}

int kvw_poll(kvw_ctx *ctx, kvw_event *events, int max)
{
	int n = 0;

	if (!ctx || (!events && max > 0) || max < 0)
		return KVW_ERR_INVALID;
	kvw_progress(ctx);
	while (n < max && ctx->evq_head != ctx->evq_tail)
		events[n++] = ctx->evq[ctx->evq_head++ & (ctx->evq_cap - 1)];
	return n;
}

/* The context's next wake-up, in ns from now (UINT64_MAX: none): timers,
 * drivers polled without an fd (dpdk), `kvwire stat` clients. */
static uint64_t kvw_ctx_next_wake_ns(kvw_ctx *ctx, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (kvw_ep *ep = ctx->eps; ep; ep = ep->next) {
		uint64_t e = kvw_ep_next_timer(ep);
		if (e < next)
			next = e;
	}
	for (int i = 0; i < KVW_DRV_MAX; i++)
		if (ctx->drv[i].open && ctx->drv[i].caps.poll_us && now + ctx->drv[i].caps.poll_us * 1000ull < next)
			next = now + ctx->drv[i].caps.poll_us * 1000ull;
	if (ctx->stats && now + 100000000ull < next)
		next = now + 100000000ull; /* `kvwire stat` clients: served within 100 ms */
	return next == UINT64_MAX ? UINT64_MAX : next > now ? next - now : 0;
}

/* epoll with a ns timeout (UINT64_MAX: forever): a 200 us driver poll
 * interval is honoured instead of rounded up to 1 ms. Kernels before 5.11
 * lack epoll_pwait2: then whole milliseconds, rounded up. */
static int kvw_ctx_epoll(kvw_ctx *ctx, uint64_t wait_ns)
{
	struct epoll_event ev[8];
	struct timespec ts = {(time_t)(wait_ns / 1000000000ull), (long)(wait_ns % 1000000000ull)};
	int n;

	if (!ctx->no_pwait2) {
		n = epoll_pwait2(ctx->epfd, ev, 8, wait_ns == UINT64_MAX ? NULL : &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		ctx->no_pwait2 = true;
	}
	uint64_t ms = wait_ns == UINT64_MAX ? 0 : (wait_ns + 999999) / 1000000;
	return epoll_wait(ctx->epfd, ev, 8, wait_ns == UINT64_MAX ? -1 : ms > INT32_MAX ? INT32_MAX : (int)ms);
}

kvw_status kvw_ctx_wait(kvw_ctx *ctx, int timeout_ms)
{
	uint64_t now = kvw_now_ns(), t, next;

	if (!ctx)
		return KVW_ERR_INVALID;
	if (ctx->evq_head != ctx->evq_tail)
		return KVW_OK;
	for (kvw_ep *ep = ctx->eps; ep; ep = ep->next)
		if (ep->state == KVW_EP_READY && ep->active_head && !ep->pump_blocked)
			return KVW_OK; /* fragments to post: no sleeping */
	t = timeout_ms < 0 ? UINT64_MAX : (uint64_t)timeout_ms * 1000000ull;
	next = kvw_ctx_next_wake_ns(ctx, now);
	if (next < t)
		t = next;
	for (int i = 0; i < KVW_DRV_MAX && t != 0; i++)
		if (ctx->drv[i].open && ctx->drv[i].ops->prepare_wait(&ctx->drv[i]))
			t = 0; /* work arrived while arming: no sleep */
	if (kvw_ctx_epoll(ctx, t) < 0 && errno != EINTR)
		return kvw_set_err(ctx, KVW_ERR_IO, "epoll_wait: %s", strerror(errno));
	ctx->next_timer_ns = 0; /* run the timer pass on the next progress */
	return KVW_OK;
}

int kvw_poll_wait(kvw_ctx *ctx, kvw_event *events, int max, int timeout_ms)
{
	uint64_t t0 = kvw_now_ns(), end, spin;
	int n;

	if (!ctx)
		return KVW_ERR_INVALID;
	end = timeout_ms < 0 ? UINT64_MAX : t0 + (uint64_t)timeout_ms * 1000000ull;
	spin = t0 + (uint64_t)ctx->cfg.spin_us * 1000ull;
	for (;;) {
		uint64_t now;
		if ((n = kvw_poll(ctx, events, max)) != 0)
			return n;
		now = kvw_now_ns();
		if (now >= end)
			return 0;
		if (now < spin)
			continue;
		kvw_ctx_wait(ctx, end == UINT64_MAX ? -1 : (int)((end - now + 999999) / 1000000));
	}
}
