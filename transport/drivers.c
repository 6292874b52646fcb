/* SPDX-License-Identifier: MIT */
/* The built drivers, and stubs so that no op is ever NULL. */
#include "kvw_int.h"
#include "kvw_config.h"

#include <string.h>

#ifdef KVW_HAVE_DRIVER_SHM
extern const struct kvw_driver_ops kvw_shm_ops;
#endif
#ifdef KVW_HAVE_DRIVER_TCP
extern const struct kvw_driver_ops kvw_tcp_ops;
#endif
#ifdef KVW_HAVE_DRIVER_LOOP
extern const struct kvw_driver_ops kvw_loop_ops;
#endif
#ifdef KVW_HAVE_DRIVER_RDMA
extern const struct kvw_driver_ops kvw_rdma_ops;
#endif
#ifdef KVW_HAVE_DRIVER_DPDK
extern const struct kvw_driver_ops kvw_dpdk_ops;
#endif
#ifdef KVW_HAVE_DRIVER_OFI
extern const struct kvw_driver_ops kvw_ofi_ops;
#endif

const struct kvw_driver_ops *const kvw_driver_table[] = {
#ifdef KVW_HAVE_DRIVER_SHM
	&kvw_shm_ops,
#endif
#ifdef KVW_HAVE_DRIVER_TCP
	&kvw_tcp_ops,
#endif
#ifdef KVW_HAVE_DRIVER_LOOP
	&kvw_loop_ops,
#endif
#ifdef KVW_HAVE_DRIVER_RDMA
	&kvw_rdma_ops,
#endif
#ifdef KVW_HAVE_DRIVER_DPDK
	&kvw_dpdk_ops,
#endif
#ifdef KVW_HAVE_DRIVER_OFI
	&kvw_ofi_ops,
#endif
	NULL,
};
_Static_assert(KVW_ARRAY_SIZE(kvw_driver_table) <= KVW_DRV_MAX + 1, "too many drivers");

const char *kvw_drivers_built(void)
{
	static char names[64];

	if (!names[0]) {
		for (int i = 0; kvw_driver_table[i]; i++) {
			if (i)
				strcat(names, ",");
			strcat(names, kvw_driver_table[i]->name);
		}
	}
	return names;
}

/* ---- stubs: no op is ever NULL. Ops without which nothing can happen
 * (listen, connect, join, open_rails, send_ctrl) answer UNSUPPORTED with a
 * sentence; the rest are the no-ops a driver that needs nothing there wants
 * (mem_reg: nothing to register, progress: nothing to poll, revoke: the
 * core's token check is the fence of a two-sided driver, ...). driver.h
 * lists the default of each op. */
static void st_close(kvw_drv *d) { (void)d; }
static kvw_status st_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	(void)d;
	memset(ci, 0, sizeof(*ci));
	ci->max_rails = 1;
	ci->max_frag = 1u << 20;
	return KVW_OK;
}
static kvw_status st_mem_reg(kvw_drv *d, kvw_mem *m) { (void)d; (void)m; return KVW_OK; }
static void st_mem_dereg(kvw_drv *d, kvw_mem *m) { (void)d; (void)m; }
static kvw_status st_progress(kvw_drv *d) { (void)d; return KVW_OK; }
static kvw_status st_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u)
{ (void)l; (void)u; return kvw_set_err(d->ctx, KVW_ERR_UNSUPPORTED, "driver %s cannot listen", d->ops->name); }
static void st_lclose(kvw_listener *l) { (void)l; }
static kvw_status st_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u)
{ (void)ep; (void)u; return kvw_set_err(d->ctx, KVW_ERR_UNSUPPORTED, "driver %s cannot connect", d->ops->name); }
static kvw_status st_join(kvw_ep *ep, kvw_ep *x, uint32_t r) { (void)ep; (void)x; (void)r; return KVW_ERR_UNSUPPORTED; }
static kvw_status st_open_rails(kvw_ep *ep)
{ return kvw_set_err(ep->ctx, KVW_ERR_UNSUPPORTED, "driver %s cannot open extra rails", ep->drv->ops->name); }
static void st_ep_close(kvw_ep *ep) { (void)ep; }
static kvw_status st_send_ctrl(kvw_ep *ep, const void *f, size_t n) { (void)ep; (void)f; (void)n; return KVW_ERR_UNSUPPORTED; }
static size_t st_post(kvw_ep *ep, const kvw_frag *f, size_t n) { (void)ep; (void)f; (void)n; return 0; }
static kvw_status st_cancel(kvw_ep *ep, kvw_req *r) { (void)ep; (void)r; return KVW_OK; }
static kvw_status st_revoke(kvw_ep *ep, kvw_req *r) { (void)ep; (void)r; return KVW_OK; }
static kvw_status st_grant_keys(kvw_ep *ep, kvw_req *r, const void *b, size_t n, uint32_t *key)
{ (void)ep; (void)r; (void)b; (void)n; (void)key; return KVW_OK; }
static void st_grant_done(kvw_ep *ep, kvw_req *r) { (void)ep; (void)r; }
static void st_flush(kvw_drv *d) { (void)d; }
static bool st_prepare_wait(kvw_drv *d) { (void)d; return false; }
static void st_ep_resources(const kvw_ep *ep, struct kvw_ep_res *r) { (void)ep; (void)r; }

#define FILL(op, stub) do { if (!o->op) o->op = stub; } while (0)
static void kvw_ops_fill(struct kvw_driver_ops *o)
{
	FILL(close, st_close); FILL(query_caps, st_caps); FILL(mem_reg, st_mem_reg);
	FILL(mem_dereg, st_mem_dereg); FILL(progress, st_progress); FILL(listen, st_listen);
	FILL(listener_close, st_lclose); FILL(connect, st_connect); FILL(join, st_join);
	FILL(open_rails, st_open_rails); FILL(ep_close, st_ep_close);
	FILL(send_ctrl, st_send_ctrl); FILL(post_frags, st_post); FILL(cancel, st_cancel);
	FILL(revoke, st_revoke); FILL(grant_keys, st_grant_keys); FILL(grant_done, st_grant_done);
	FILL(flush, st_flush); FILL(prepare_wait, st_prepare_wait); FILL(ep_resources, st_ep_resources);
}

kvw_status kvw_ctx_driver(kvw_ctx *ctx, const char *name, kvw_drv **out)
{
	kvw_status st;

	for (int i = 0; kvw_driver_table[i]; i++) {
		kvw_drv *d = &ctx->drv[i];
		const struct kvw_driver_ops *src = kvw_driver_table[i];

		if (strcmp(src->name, name) != 0)
			continue;
		if (d->open) {
			*out = d;
			return KVW_OK;
		}
		if (!src->open || !src->send_ctrl || !src->post_frags)
			return kvw_set_err(ctx, KVW_ERR_UNSUPPORTED,
					   "driver %s lacks a required op (open/send_ctrl/post_frags)", name);
		d->filled = *src;
		kvw_ops_fill(&d->filled);
		d->ops = &d->filled;
		d->ctx = ctx;
		d->idx = i;
		st = d->ops->open(d);
		if (st != KVW_OK)
			return st; /* the driver said why */
		d->ops->query_caps(d, &d->caps);
		d->open = true;
		for (kvw_mem *m = ctx->mems; m; m = m->next) {
			st = d->ops->mem_reg(d, m);
			if (st != KVW_OK) {
				d->ops->close(d);
				d->open = false;
				return st;
			}
		}
		*out = d;
		return KVW_OK;
	}
	return kvw_set_err(ctx, KVW_ERR_NOT_FOUND,
			   "driver \"%s\" is not built into this library (built: %s); "
			   "see `kvwire devices` for why", name, kvw_drivers_built());
}

/* For the tools (kvwire devices, doctor): a built driver's ops->probe with
 * the options in force (defaults + KVW_* environment). Not exported. */
kvw_status kvw_driver_probe(const char *name, struct kvw_probe_entry *out, size_t cap, size_t *n)
{
	struct kvw_cfgv v;
	kvw_config *cfg = NULL;
	char err[200];
	kvw_status st;

	for (int i = 0; kvw_driver_table[i]; i++) {
		const struct kvw_driver_ops *o = kvw_driver_table[i];
		if (strcmp(o->name, name) != 0)
			continue;
		if (!o->probe)
			return kvw_set_err(NULL, KVW_ERR_UNSUPPORTED, "driver %s has no probe: try a "
					   "listener (kvwire ping)", name);
		if ((st = kvw_config_create(&cfg)) != KVW_OK)
			return st;
		st = kvw_cfgv_parse(cfg, &v, err, sizeof(err));
		kvw_config_destroy(cfg);
		if (st != KVW_OK)
			return kvw_set_err(NULL, st, "%s", err);
		return o->probe(&v, out, cap, n);
	}
	return kvw_set_err(NULL, KVW_ERR_NOT_FOUND, "driver %s is not built into this library "
			   "(built: %s)", name, kvw_drivers_built());
}
