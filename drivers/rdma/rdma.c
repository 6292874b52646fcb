/* SPDX-License-Identifier: MIT */
/* RDMA verbs driver: devices, memory registration, progress, ops table. */
#include "rdma_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rd_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int rd_dev_index(struct rd_drv *rd, struct ibv_context *verbs)
{
	for (int i = 0; i < rd->ndev; i++)
		if (rd->dev[i].verbs == verbs)
			return i;
	return -1;
}

/* rdma_probe.c's rule, logging what it chose instead of what was asked. */
static bool rd_dev_probe(struct rd_drv *rd, struct ibv_context *v, struct rd_dev *out)
{
	char why[200];
	bool no_mw;

	if (!rd_dev_pick(kvw_core_cfg(rd->d->ctx), v, out, &no_mw, why, sizeof(why)))
		return false;
	if (no_mw && kvw_core_cfg(rd->d->ctx)->rdma_grant_keys == RD_GRANT_KEYS_MW)
		kvw_log(rd->d->ctx, 2, "rdma: %s has no memory windows (rdma_grant_keys=mw): an MR per "
			"run of granted blocks instead", ibv_get_device_name(v->device));
	else if (no_mw)
		kvw_log(rd->d->ctx, 2, "rdma: %s has no type 2 memory windows: grant keys are %s, usable "
			"by any endpoint's QP on this device, not only the one granted (set a secret= "
			"to limit who can connect)", ibv_get_device_name(v->device), rd_keys_name(out->keys));
	return true;
}

/* Per-rail keys (mw2) need them on every device: a grant keys all devices
 * alike, so one device without type 2 windows puts the others in mr/mw. */
static void rd_keys_same(struct rd_drv *rd)
{
	int n2 = 0;

	for (int i = 0; i < rd->ndev; i++)
		n2 += rd->dev[i].keys == RD_KEYS_MW2;
	if (!n2 || n2 == rd->ndev)
		return;
	for (int i = 0; i < rd->ndev; i++)
		if (rd->dev[i].keys == RD_KEYS_MW2)
			rd->dev[i].keys = rd->dev[i].mw_bounds ? RD_KEYS_MW : RD_KEYS_MR;
	kvw_log(rd->d->ctx, 2, "rdma: not every device has type 2 memory windows: grant keys are "
		"per device (%s), usable by any endpoint's QP on it; set rdma_dev to use only the "
		"devices that have them", rd_keys_name(rd->dev[0].keys));
}

static kvw_status rd_open_devices(struct rd_drv *rd)
{
	const struct kvw_cfgv *c = kvw_core_cfg(rd->d->ctx);
	int n = 0;

	rd->list = rdma_get_devices(&n);
	rd->cfg_dev = -1;
	for (int i = 0; rd->list && i < n && rd->ndev < RD_MAX_DEV; i++) {
		struct rd_dev *dv = &rd->dev[rd->ndev];
		const char *name = ibv_get_device_name(rd->list[i]->device);

		if (c->rdma_dev[0] && strcmp(c->rdma_dev, name) != 0)
			continue;
		if (!rd_dev_probe(rd, rd->list[i], dv))
			continue;
		dv->verbs = rd->list[i];
		snprintf(dv->name, sizeof(dv->name), "%s", name);
		if (!(dv->pd = ibv_alloc_pd(dv->verbs)))
			return kvw_set_err(rd->d->ctx, KVW_ERR_IO, "rdma: ibv_alloc_pd on %s: %s", name,
					   strerror(errno));
		rd_nonblock(dv->verbs->async_fd);
		kvw_core_watch_fd(rd->d->ctx, dv->verbs->async_fd, false);
		if (c->rdma_dev[0])
			rd->cfg_dev = rd->ndev;
		rd->ndev++;
	}
	if (rd->ndev > 0) {
		rd_keys_same(rd);
		return KVW_OK;
	}
	if (c->rdma_dev[0])
		return kvw_set_err(rd->d->ctx, KVW_ERR_NOT_FOUND,
				   "rdma: device \"%s\" (config rdma_dev) not found, no active port, or no "
				   "IPv4 RoCE v2 GID%s: check `ibv_devinfo -v -d %s` (port state, GID table)",
				   c->rdma_dev, c->rdma_gid >= 0 ? " at config rdma_gid" : "", c->rdma_dev);
	return kvw_set_err(rd->d->ctx, KVW_ERR_NOT_FOUND,
			   "rdma: no RDMA device with an active port and an IPv4 RoCE v2 GID%s. Check "
			   "`ibv_devinfo -v`; without a NIC use Soft-RoCE: `modprobe rdma_rxe; rdma link "
			   "add rxe0 type rxe netdev eth0` (tests: tests/vm/run-rxe-vm.sh)",
			   c->rdma_gid >= 0 ? " at config rdma_gid" : "");
}

static void rd_close(kvw_drv *d);

static kvw_status rd_open(kvw_drv *d)
{
	struct rd_drv *rd = calloc(1, sizeof(*rd));
	kvw_status st;

	if (!rd)
		return KVW_ERR_NOMEM;
	rd->d = d;
	d->priv = rd;
	if (!(rd->ech = rdma_create_event_channel())) {
		st = kvw_set_err(d->ctx, KVW_ERR_IO, "rdma: rdma_create_event_channel: %s (is rdma_ucm "
				 "loaded? `modprobe rdma_ucm`)", strerror(errno));
		goto err_close;
	}
	rd_nonblock(rd->ech->fd);
	kvw_core_watch_fd(d->ctx, rd->ech->fd, false);
	if ((st = rd_open_devices(rd)) != KVW_OK)
		goto err_close;
	return KVW_OK;

err_close:
	rd_close(d);
	return st;
}

static void rd_close(kvw_drv *d)
{
	struct rd_drv *rd = rd_of(d);

	if (!rd)
		return;
	while (rd->rails)
		rd_rail_free(rd->rails);
	rd_lingering_progress(rd, true); /* outside any pass: last sends may go */
	for (int i = 0; i < rd->ndev; i++) {
		kvw_core_unwatch_fd(d->ctx, rd->dev[i].verbs->async_fd);
		if (rd->dev[i].pd)
			ibv_dealloc_pd(rd->dev[i].pd);
	}
	if (rd->list)
		rdma_free_devices(rd->list);
	if (rd->ech) {
		kvw_core_unwatch_fd(d->ctx, rd->ech->fd);
		rdma_destroy_event_channel(rd->ech);
	}
	free(rd);
	d->priv = NULL;
}

static kvw_status rd_query_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	memset(ci, 0, sizeof(*ci));
	ci->poll_us = kvw_core_cfg(d->ctx)->fault[0] ? 200 : 0; /* held posts need a timed wake */
	ci->caps = KVW_CAP_ZERO_COPY_TX | KVW_CAP_ONE_SIDED | KVW_CAP_MULTI_RAIL;
	ci->max_rails = KVW_MAX_RAILS;
	ci->max_frag = 1u << 30;
	/* a gathered fragment: an SGE per piece, split over several writes
	 * where a QP takes fewer SGEs (rd_batch_add) */
	ci->max_gather = RD_MAX_SGE;
	return KVW_OK;
}

/* One local-only MR per device: lkeys for sends, and the MR that grant
 * windows bind to. Remote keys are per grant (rdma_keys.c), so no key ever
 * opens the whole arena to the peer. */
static kvw_status rd_mem_reg(kvw_drv *d, kvw_mem *m)
{
	struct rd_drv *rd = rd_of(d);
	struct rd_mem *rm = calloc(1, sizeof(*rm));

	if (!rm)
		return KVW_ERR_NOMEM;
	for (int i = 0; i < rd->ndev; i++) {
		rm->mr[i] = ibv_reg_mr(rd->dev[i].pd, kvw_mem_addr(m), kvw_mem_len(m), IBV_ACCESS_LOCAL_WRITE |
				       (rd->dev[i].keys == RD_KEYS_MW || (rd->dev[i].keys == RD_KEYS_MW2 &&
				       rd->dev[i].mw_bounds) ? IBV_ACCESS_MW_BIND : 0));
		if (!rm->mr[i]) {
			int e = errno;
			const char *dev = rd->dev[i].name; /* the device that refused */
			while (i-- > 0)
				ibv_dereg_mr(rm->mr[i]);
			free(rm);
			if (e == ENOMEM || e == EPERM || e == EAGAIN)
				return kvw_set_err(d->ctx, KVW_ERR_MEMLOCK, "rdma: ibv_reg_mr(%zu bytes) on %s: "
						   "%s: raise the memlock limit (`ulimit -l unlimited`)",
						   kvw_mem_len(m), dev, strerror(e));
			return kvw_set_err(d->ctx, KVW_ERR_IO, "rdma: ibv_reg_mr(%zu bytes) on %s: %s",
					   kvw_mem_len(m), dev, strerror(e));
		}
	}
	kvw_core_mem_set_priv(m, d, rm);
	return KVW_OK;
}

static void rd_mem_dereg(kvw_drv *d, kvw_mem *m)
{
	struct rd_mem *rm = kvw_core_mem_priv(m, d);

	if (!rm)
		return;
	for (int i = 0; i < RD_MAX_DEV; i++)
		if (rm->mr[i])
			ibv_dereg_mr(rm->mr[i]);
	free(rm);
	kvw_core_mem_set_priv(m, d, NULL);
}

/* Marks the rail dead; the endpoint fails with st and why. */
void rd_rail_fail(struct rd_rail *r, kvw_status st, const char *why)
{
	if (r->state == RD_R_DEAD)
		return;
	r->state = RD_R_DEAD;
	if (r->ep)
		kvw_ep_fail(r->ep, st, why);
}

/* Our NIC refused a remote access on r's QP: counted (kvwire stat) and logged. */
static void rd_count_refused(struct rd_drv *rd, struct rd_rail *r)
{
	char ip[INET_ADDRSTRLEN] = "?";
	const struct sockaddr *sa = r->id ? rdma_get_peer_addr(r->id) : NULL;

	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
	if (r->ep)
		kvw_core_ep_counters(r->ep)->remote_refused++;
	kvw_log(rd->d->ctx, 2, "rdma: refused a remote access from %s on rail %u (bad key, address "
		"outside a grant, or no write allowed yet): endpoint closed", ip, r->idx);
}

static void rd_async_events(struct rd_drv *rd, struct rd_dev *dv)
{
	struct ibv_async_event ev;
	char why[160];

	while (ibv_get_async_event(dv->verbs, &ev) == 0) {
		switch (ev.event_type) {
		case IBV_EVENT_QP_FATAL:
		case IBV_EVENT_QP_REQ_ERR:
		case IBV_EVENT_QP_ACCESS_ERR:
			for (struct rd_rail *r = rd->rails; r; r = r->next_all)
				if (r->qp == ev.element.qp) {
					if (ev.event_type == IBV_EVENT_QP_ACCESS_ERR)
						rd_count_refused(rd, r);
					snprintf(why, sizeof(why), "rdma: QP of rail %u on %s went to error (%s)%s",
						 r->idx, dv->name, ibv_event_type_str(ev.event_type),
						 ev.event_type == IBV_EVENT_QP_ACCESS_ERR ?
						 ": the peer wrote with a bad key or outside a grant" : "");
					rd_rail_fail(r, ev.event_type == IBV_EVENT_QP_ACCESS_ERR ?
						     KVW_ERR_REJECTED : KVW_ERR_PEER_DEAD, why);
				}
			break;
		case IBV_EVENT_PORT_ERR:
		case IBV_EVENT_DEVICE_FATAL:
			snprintf(why, sizeof(why), "rdma: %s port %u went down (%s): check the link "
				 "(`ibv_devinfo -d %s`, `rdma link`)", dv->name, dv->port,
				 ibv_event_type_str(ev.event_type), dv->name);
			for (struct rd_rail *r = rd->rails; r; r = r->next_all)
				if (r->dev == dv)
					rd_rail_fail(r, KVW_ERR_PEER_DEAD, why);
			break;
		default:
			break;
		}
		ibv_ack_async_event(&ev);
	}
}

/* rdma_cm and async events are read every 500 us, or every pass while a
 * rail connects: each look is a syscall, too many for every busy pass. */
static bool rd_events_due(struct rd_drv *rd)
{
	uint64_t now = kvw_now_ns();

	for (struct rd_rail *r = rd->rails; r; r = r->next_all)
		if (r->state == RD_R_CONNECTING)
			return true;
	if (now < rd->next_events_ns)
		return false;
	rd->next_events_ns = now + 500000;
	return true;
}

static kvw_status rd_progress(kvw_drv *d)
{
	struct rd_drv *rd = rd_of(d);
	struct rd_rail *r, *next;

	if (rd_events_due(rd)) {
		rd_cm_progress(rd);
		for (int i = 0; i < rd->ndev; i++)
			rd_async_events(rd, &rd->dev[i]);
	}
	if (rd->lingering)
		rd_lingering_progress(rd, false);
	for (r = rd->rails; r; r = next) {
		next = r->next_all;
		if (r->dead_why) {
			const char *why = r->dead_why;
			r->dead_why = NULL;
			r->state = RD_R_DEAD;
			if (r->ep)
				kvw_ep_fail(r->ep, r->dead_st, why);
		}
		if (r->state == RD_R_UP)
			rd_rail_progress(r);
	}
	return KVW_OK;
}

static bool rd_prepare_wait(kvw_drv *d)
{
	for (struct rd_rail *r = rd_of(d)->rails; r; r = r->next_all)
		if (rd_rail_prepare_wait(r))
			return true;
	return false;
}

const struct kvw_driver_ops kvw_rdma_ops = {
	.prepare_wait = rd_prepare_wait,
	.flush = rd_flush_all,
	.name = "rdma",
	.open = rd_open,
	.close = rd_close,
	.query_caps = rd_query_caps,
	.mem_reg = rd_mem_reg,
	.mem_dereg = rd_mem_dereg,
	.progress = rd_progress,
	.listen = rd_listen,
	.listener_close = rd_listener_close,
	.connect = rd_connect,
	.join = rd_join,
	.open_rails = rd_open_rails,
	.ep_close = rd_ep_close,
	.ep_resources = rd_ep_resources,
	.send_ctrl = rd_send_ctrl,
	.post_frags = rd_post_frags,
	.cancel = rd_cancel,
	.revoke = rd_revoke,
	.grant_keys = rd_grant_keys,
	.grant_done = rd_grant_done,
	.cfg_opts = rd_cfg_opts,
	.probe = rd_probe,
};
