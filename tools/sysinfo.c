/* SPDX-License-Identifier: MIT */
/* kvwire CLI: what this host has -- RDMA devices (sysfs, then libibverbs
 * for what sysfs lacks, such as the active MTU) and DPDK-bound ports. */
#include "cli.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef KVW_CLI_HAVE_VERBS
#include <infiniband/verbs.h>
#endif

#define IB_SYSFS "/sys/class/infiniband"

bool cli_have_verbs(void)
{
#ifdef KVW_CLI_HAVE_VERBS
	return true;
#else
	return false;
#endif
}

/* Basename of the driver a sysfs device is bound to, "" when none. */
static void cli_link_base(const char *path, char *out, size_t len)
{
	char target[PATH_MAX];
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	out[0] = 0;
	if (n <= 0)
		return;
	target[n] = 0;
	const char *b = strrchr(target, '/');
	b = b ? b + 1 : target;
	size_t bl = strlen(b);
	if (bl >= len)
		bl = len - 1;
	memcpy(out, b, bl);
	out[bl] = 0;
}

static void cli_rdma_driver(const char *dev, char *out, size_t len)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), IB_SYSFS "/%s/device/driver", dev);
	cli_link_base(p, out, len);
	if (out[0])
		return;
	if (!strncmp(dev, "rxe", 3))
		snprintf(out, len, "rdma_rxe");
	else if (!strncmp(dev, "siw", 3))
		snprintf(out, len, "siw");
	else
		snprintf(out, len, "unknown");
}

/* sysfs "0000:0000:0000:0000:0000:ffff:0a4e:0001" -> "::ffff:10.78.0.1"; *v4 set
 * for an IPv4-mapped GID. */
static void cli_gid_addr(const char *gid, char *out, size_t len, bool *v4)
{
	unsigned short w[8];
	uint8_t b[16];
	out[0] = 0;
	*v4 = false;
	if (sscanf(gid, "%4hx:%4hx:%4hx:%4hx:%4hx:%4hx:%4hx:%4hx", &w[0], &w[1], &w[2], &w[3],
		   &w[4], &w[5], &w[6], &w[7]) != 8)
		return;
	for (int i = 0; i < 8; i++) {
		b[2 * i] = (uint8_t)(w[i] >> 8);
		b[2 * i + 1] = (uint8_t)w[i];
	}
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	*v4 = !memcmp(b, pfx, sizeof(pfx));
	if (!inet_ntop(AF_INET6, b, out, (socklen_t)len))
		out[0] = 0;
}

static json_t *cli_rdma_gids(const char *dev, const char *port)
{
	json_t *arr = json_array();
	char dir[PATH_MAX], p[PATH_MAX + 64], gid[64], type[32], ndev[32];
	snprintf(dir, sizeof(dir), IB_SYSFS "/%s/ports/%s/gids", dev, port);
	for (int i = 0; i < 256; i++) {
		snprintf(p, sizeof(p), "%s/%d", dir, i);
		if (!cli_read_line(p, gid, sizeof(gid)))
			break;
		if (!strcmp(gid, "0000:0000:0000:0000:0000:0000:0000:0000"))
			continue;
		snprintf(p, sizeof(p), IB_SYSFS "/%s/ports/%s/gid_attrs/types/%d", dev, port, i);
		if (!cli_read_line(p, type, sizeof(type)))
			type[0] = 0;
		snprintf(p, sizeof(p), IB_SYSFS "/%s/ports/%s/gid_attrs/ndevs/%d", dev, port, i);
		if (!cli_read_line(p, ndev, sizeof(ndev)))
			ndev[0] = 0;
		char addr[INET6_ADDRSTRLEN];
		bool v4;
		cli_gid_addr(gid, addr, sizeof(addr), &v4);
		json_array_append_new(arr, json_pack("{s:i,s:s,s:s,s:s,s:s,s:b}", "index", i, "gid",
						     gid, "addr", addr, "type", type, "netdev", ndev,
						     "ipv4", v4));
	}
	return arr;
}

/* "4: ACTIVE" -> "ACTIVE" */
static void cli_sysfs_state(const char *path, char *out, size_t len)
{
	char buf[64];
	if (!cli_read_line(path, buf, sizeof(buf))) {
		snprintf(out, len, "unknown");
		return;
	}
	const char *c = strchr(buf, ':');
	snprintf(out, len, "%s", c ? c + 2 : buf);
}

static json_t *cli_rdma_port(const char *dev, const char *port)
{
	char p[PATH_MAX], state[64], phys[64], ll[32], rate[64];
	snprintf(p, sizeof(p), IB_SYSFS "/%s/ports/%s/state", dev, port);
	cli_sysfs_state(p, state, sizeof(state));
	snprintf(p, sizeof(p), IB_SYSFS "/%s/ports/%s/phys_state", dev, port);
	cli_sysfs_state(p, phys, sizeof(phys));
	snprintf(p, sizeof(p), IB_SYSFS "/%s/ports/%s/link_layer", dev, port);
	if (!cli_read_line(p, ll, sizeof(ll)))
		snprintf(ll, sizeof(ll), "unknown");
	snprintf(p, sizeof(p), IB_SYSFS "/%s/ports/%s/rate", dev, port);
	if (!cli_read_line(p, rate, sizeof(rate)))
		rate[0] = 0;
	json_t *gids = cli_rdma_gids(dev, port);
	const char *ndev = "", *v4addr = "";
	int v4idx = -1;
	json_t *g;
	size_t i;
	json_array_foreach(gids, i, g) {
		if (!*ndev && *cli_jstr(g, "netdev"))
			ndev = cli_jstr(g, "netdev");
		/* the GID the rdma driver picks: the first IPv4-mapped RoCE v2 one */
		if (v4idx < 0 && json_is_true(json_object_get(g, "ipv4")) &&
		    !strcmp(cli_jstr(g, "type"), "RoCE v2") &&
		    !strncmp(cli_jstr(g, "addr"), "::ffff:", strlen("::ffff:"))) {
			v4idx = (int)cli_jint(g, "index");
			v4addr = cli_jstr(g, "addr") + strlen("::ffff:");
		}
	}
	return json_pack("{s:i,s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:s,s:o}", "port", atoi(port), "state",
			 state, "phys_state", phys, "link_layer", ll, "rate", rate, "netdev", ndev,
			 "active_mtu", 0, "ipv4_gid_index", v4idx, "ipv4", v4addr, "gids", gids);
}

#ifdef KVW_CLI_HAVE_VERBS
/* Completes the sysfs view with what only verbs tell: active MTU, and
 * whether a userspace provider for the device is installed at all. */
static void cli_rdma_verbs(json_t *devs)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	for (int i = 0; list && i < n; i++) {
		const char *name = ibv_get_device_name(list[i]);
		json_t *d;
		size_t k;
		json_array_foreach(devs, k, d) {
			if (strcmp(cli_jstr(d, "name"), name))
				continue;
			json_object_set_new(d, "verbs", json_true());
			struct ibv_context *vc = ibv_open_device(list[i]);
			json_t *p;
			size_t j;
			json_array_foreach(json_object_get(d, "ports"), j, p) {
				struct ibv_port_attr pa;
				if (vc && !ibv_query_port(vc, (uint8_t)cli_jint(p, "port"), &pa))
					json_object_set_new(p, "active_mtu",
							    json_integer(128 << pa.active_mtu));
			}
			if (vc)
				ibv_close_device(vc);
		}
	}
	if (list)
		ibv_free_device_list(list);
}
#endif

static json_t *cli_rdma_dev(const char *dev)
{
	char p[PATH_MAX], drv[64], fw[64];
	cli_rdma_driver(dev, drv, sizeof(drv));
	snprintf(p, sizeof(p), IB_SYSFS "/%s/fw_ver", dev);
	if (!cli_read_line(p, fw, sizeof(fw)))
		fw[0] = 0;
	snprintf(p, sizeof(p), IB_SYSFS "/%s/device/numa_node", dev);
	long long numa = cli_read_ll(p, -1);
	json_t *ports = json_array();
	snprintf(p, sizeof(p), IB_SYSFS "/%s/ports", dev);
	DIR *d = opendir(p);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			json_array_append_new(ports, cli_rdma_port(dev, e->d_name));
	if (d)
		closedir(d);
	bool soft = !strcmp(drv, "rdma_rxe") || !strcmp(drv, "siw");
	return json_pack("{s:s,s:s,s:b,s:s,s:I,s:b,s:o}", "name", dev, "driver", drv, "software", soft,
			 "fw_ver", fw, "numa_node", (json_int_t)numa, "verbs", 0, "ports", ports);
}

json_t *cli_rdma_scan(char *why, size_t whylen)
{
	json_t *devs = json_array();
	DIR *d = opendir(IB_SYSFS);
	struct dirent *e;
	why[0] = 0;
	if (!d) {
		snprintf(why, whylen, "no RDMA devices: " IB_SYSFS " does not exist (no RDMA kernel "
			 "driver loaded; for Soft-RoCE: modprobe rdma_rxe && rdma link add rxe0 type "
			 "rxe netdev IFACE)");
		return devs;
	}
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			json_array_append_new(devs, cli_rdma_dev(e->d_name));
	closedir(d);
	if (!json_array_size(devs))
		snprintf(why, whylen, "no RDMA devices: " IB_SYSFS " is empty (for Soft-RoCE: "
			 "rdma link add rxe0 type rxe netdev IFACE)");
#ifdef KVW_CLI_HAVE_VERBS
	cli_rdma_verbs(devs);
#endif
	return devs;
}

static bool cli_is_dpdk_kdrv(const char *drv)
{
	return !strcmp(drv, "vfio-pci") || !strcmp(drv, "uio_pci_generic") || !strcmp(drv, "igb_uio");
}

json_t *cli_dpdk_scan(void)
{
	json_t *arr = json_array();
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char p[PATH_MAX], drv[64], vendor[16], device[16];
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/class", e->d_name);
		if ((cli_read_ll(p, 0) >> 16) != 0x02) /* network controllers only */
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/driver", e->d_name);
		cli_link_base(p, drv, sizeof(drv));
		if (!cli_is_dpdk_kdrv(drv))
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (!cli_read_line(p, vendor, sizeof(vendor)))
			vendor[0] = 0;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", e->d_name);
		if (!cli_read_line(p, device, sizeof(device)))
			device[0] = 0;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/numa_node", e->d_name);
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:I}", "pci", e->d_name,
						     "kernel_driver", drv, "vendor", vendor, "device", device,
						     "numa_node", (json_int_t)cli_read_ll(p, -1)));
	}
	if (d)
		closedir(d);
	return arr;
}
