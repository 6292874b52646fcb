/* SPDX-License-Identifier: MIT */
/* The rdma driver's rule for a usable device (open() and ops->probe both
 * apply it): an ACTIVE port with an IPv4 RoCE v2 GID (the one config
 * rdma_gid names, if set), on config rdma_dev if set. */
#include "rdma_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* An IPv4-mapped RoCE v2 GID (::ffff:a.b.c.d): its address, else false. */
static bool rd_gid_ipv4(struct ibv_context *v, uint8_t port, int idx, struct in_addr *ip)
{
	struct ibv_gid_entry e;
	static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (ibv_query_gid_ex(v, port, (uint32_t)idx, &e, 0) || e.gid_type != IBV_GID_TYPE_ROCE_V2 ||
	    memcmp(e.gid.raw, pfx, sizeof(pfx)) != 0)
		return false;
	memcpy(&ip->s_addr, e.gid.raw + 12, 4);
	return true;
}

/* How this device keys grants (config rdma_grant_keys). Soft-RoCE (vendor
 * 0xffffff) checks a window's key but not its bounds (its responder tests the
 * underlying MR's range): auto gives it type 2 windows, each over an MR of its
 * run (rdma_keys.c), else an MR per run. *no_mw: windows of the asked type are
 * missing (mw, mw2), or auto found no type 2 windows (keys not per endpoint). */
static enum rd_keys rd_keys_mode(const struct kvw_cfgv *c, const struct ibv_device_attr *da, bool *no_mw,
				 bool *bounds)
{
	bool has_mw = da->device_cap_flags & IBV_DEVICE_MEM_WINDOW;
	bool has_mw2 = has_mw && (da->device_cap_flags & (IBV_DEVICE_MEM_WINDOW_TYPE_2A |
							  IBV_DEVICE_MEM_WINDOW_TYPE_2B));
	bool rxe = da->vendor_id == 0xffffff;

	*no_mw = false;
	*bounds = !rxe;
	switch ((enum rd_grant_keys)c->rdma_grant_keys) {
	case RD_GRANT_KEYS_SPAN:
		return RD_KEYS_SPAN;
	case RD_GRANT_KEYS_MR:
		return RD_KEYS_MR;
	case RD_GRANT_KEYS_AUTO:
		*no_mw = !has_mw2;
		return has_mw2 ? RD_KEYS_MW2 : has_mw && !rxe ? RD_KEYS_MW : RD_KEYS_MR;
	case RD_GRANT_KEYS_MW2:
		*no_mw = !has_mw2;
		return has_mw2 ? RD_KEYS_MW2 : RD_KEYS_MR;
	case RD_GRANT_KEYS_MW:
		break;
	}
	*no_mw = !has_mw;
	return has_mw ? RD_KEYS_MW : RD_KEYS_MR;
}

/* The port's GID by config rdma_gid, else its first IPv4 RoCE v2 GID. */
static int rd_port_gid(const struct kvw_cfgv *c, struct ibv_context *v, uint8_t p,
		       const struct ibv_port_attr *pa, struct in_addr *ip)
{
	if (c->rdma_gid >= 0)
		return c->rdma_gid < pa->gid_tbl_len && rd_gid_ipv4(v, p, c->rdma_gid, ip) ? c->rdma_gid : -1;
	for (int g = 0; g < pa->gid_tbl_len; g++)
		if (rd_gid_ipv4(v, p, g, ip))
			return g;
	return -1;
}

bool rd_dev_pick(const struct kvw_cfgv *c, struct ibv_context *v, struct rd_dev *out, bool *no_mw,
		 char *why, size_t len)
{
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	bool active = false;

	if (ibv_query_device(v, &da)) {
		snprintf(why, len, "ibv_query_device failed: check `ibv_devinfo -d %s`",
			 ibv_get_device_name(v->device));
		return false;
	}
	for (uint8_t p = 1; p <= da.phys_port_cnt; p++) {
		if (ibv_query_port(v, p, &pa) || pa.state != IBV_PORT_ACTIVE)
			continue;
		active = true;
		out->port = p;
		out->active_mtu = pa.active_mtu;
		out->max_sge = da.max_sge < 1 ? 1 : da.max_sge < RD_MAX_SGE ? (uint32_t)da.max_sge
										: RD_MAX_SGE;
		out->keys = rd_keys_mode(c, &da, no_mw, &out->mw_bounds);
		if ((out->gid_idx = rd_port_gid(c, v, p, &pa, &out->ip)) >= 0)
			return true;
	}
	if (!active)
		snprintf(why, len, "no port is ACTIVE: check the link (`rdma link show`)");
	else
		snprintf(why, len, "no ACTIVE port has an IPv4 RoCE v2 GID%s, which the rdma driver "
			 "needs: give the port's netdev an IPv4 address", c->rdma_gid >= 0 ?
			 " at config rdma_gid" : "");
	return false;
}

const char *rd_keys_name(enum rd_keys k)
{
	return k == RD_KEYS_MW2 ? "mw2" : k == RD_KEYS_MW ? "mw" : k == RD_KEYS_SPAN ? "span" : "mr";
}

static void rd_probe_one(const struct kvw_cfgv *c, struct ibv_context *v, struct kvw_probe_entry *e)
{
	const char *name = ibv_get_device_name(v->device);
	struct rd_dev dv = {0};
	char ip[INET_ADDRSTRLEN], why[200];
	bool no_mw;

	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	if (c->rdma_dev[0] && strcmp(c->rdma_dev, name) != 0) {
		snprintf(e->reason, sizeof(e->reason), "%s is not config rdma_dev (\"%s\"): the driver "
			 "leaves it alone; unset rdma_dev to use every device", name, c->rdma_dev);
		e->by_config = true;
		return;
	}
	if (!rd_dev_pick(c, v, &dv, &no_mw, why, sizeof(why))) {
		snprintf(e->reason, sizeof(e->reason), "%s: %s", name, why);
		return;
	}
	inet_ntop(AF_INET, &dv.ip, ip, sizeof(ip));
	e->usable = true;
	snprintf(e->name, sizeof(e->name), "%s port %u", name, dv.port);
	snprintf(e->reason, sizeof(e->reason), "%s port %u is ACTIVE with IPv4 RoCE v2 GID %d (%s): "
		 "listen on rdma://%s:PORT", name, dv.port, dv.gid_idx, ip, ip);
	snprintf(e->details, sizeof(e->details), "port %u, gid %d (%s), active mtu %d, grant keys %s%s",
		 dv.port, dv.gid_idx, ip, 128 << dv.active_mtu, rd_keys_name(dv.keys),
		 !no_mw ? "" : c->rdma_grant_keys == RD_GRANT_KEYS_MW ?
		 " (rdma_grant_keys=mw, but the device has no memory windows)" :
		 " (no type 2 memory windows: keys work from any endpoint on the device)");
}

kvw_status rd_probe(const struct kvw_cfgv *c, struct kvw_probe_entry *out, size_t cap, size_t *n)
{
	int nd = 0;
	struct ibv_context **list = rdma_get_devices(&nd);

	for (int i = 0; list && i < nd; i++)
		if ((size_t)i < cap)
			rd_probe_one(c, list[i], &out[i]);
	if (list)
		rdma_free_devices(list);
	*n = nd > 0 ? (size_t)nd : 0;
	return KVW_OK;
}
