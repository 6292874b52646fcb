/* SPDX-License-Identifier: MIT */
/* kvwire devices: RDMA devices and ports, DPDK ports, usable drivers.
 * Exit 0 even when there is no RDMA device (that is a fact, not a fault);
 * 3 when the listing itself failed. */
#include "cli.h"
#include "kvwire/kvwire.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bool cli_built(const char *drv)
{
	char list[128];
	snprintf(list, sizeof(list), ",%s,", kvw_drivers_built());
	char key[32];
	snprintf(key, sizeof(key), ",%s,", drv);
	return strstr(list, key) != NULL;
}

/* Usable iff a context opens and a loopback listener comes up. */
static void cli_try_listen(const char *uri, char *why, size_t len, bool *ok)
{
	kvw_ctx *ctx = NULL;
	kvw_listener *l = NULL;
	kvw_status st = kvw_ctx_create(NULL, &ctx);
	if (st != KVW_OK) {
		snprintf(why, len, "kvw_ctx_create failed: %s", kvw_strerror(st));
		*ok = false;
		return;
	}
	st = kvw_listen(ctx, uri, &l);
	*ok = st == KVW_OK;
	if (*ok) {
		snprintf(why, len, "listener came up on %s", kvw_listener_uri(l));
		kvw_listener_close(l);
	} else {
		snprintf(why, len, "listen on %s failed: %s", uri, kvw_ctx_last_error(ctx));
	}
	kvw_ctx_destroy(ctx);
}

/* The rdma driver's own rule: an ACTIVE port with an IPv4 RoCE v2 GID. */
static bool cli_rdma_usable_port(const json_t *devs, char *why, size_t len)
{
	const json_t *d, *p;
	size_t i, j;
	bool active = false;
	json_array_foreach(devs, i, d)
		json_array_foreach(json_object_get(d, "ports"), j, p) {
			if (strcmp(cli_jstr(p, "state"), "ACTIVE"))
				continue;
			active = true;
			if (cli_jint(p, "ipv4_gid_index") < 0)
				continue;
			snprintf(why, len, "%s port %lld is ACTIVE with IPv4 RoCE v2 GID %lld (%s): "
				 "listen on rdma://%s:PORT", cli_jstr(d, "name"), cli_jint(p, "port"),
				 cli_jint(p, "ipv4_gid_index"), cli_jstr(p, "ipv4"), cli_jstr(p, "ipv4"));
			return true;
		}
	snprintf(why, len, "%s (see `kvwire doctor`)", active ? "no ACTIVE RDMA port has an "
		 "IPv4 RoCE v2 GID, which the rdma driver needs" : "no RDMA port is ACTIVE");
	return false;
}

static json_t *cli_driver(const char *name, const json_t *rdma, const char *rdma_why)
{
	char why[512];
	bool ok = false;
	if (!cli_built(name)) {
		snprintf(why, sizeof(why), "not built into this library (built: %s)", kvw_drivers_built());
	} else if (!strcmp(name, "tcp")) {
		cli_try_listen("tcp://127.0.0.1:0", why, sizeof(why), &ok);
	} else if (!strcmp(name, "shm")) {
		char uri[128];
		snprintf(uri, sizeof(uri), "shm:///tmp/kvwire-devices-probe.%ld.sock", (long)getpid());
		cli_try_listen(uri, why, sizeof(why), &ok);
	} else if (!strcmp(name, "rdma")) {
		ok = cli_rdma_usable_port(rdma, why, sizeof(why));
		if (!json_array_size(rdma))
			snprintf(why, sizeof(why), "%s", rdma_why);
	} else {
		ok = true;
		snprintf(why, sizeof(why), "built; usable with EAL arguments in config dpdk_eal "
			 "(vdevs such as net_memif/net_af_packet need no bound port)");
	}
	return json_pack("{s:s,s:b,s:b,s:s}", "name", name, "built", cli_built(name), "usable", ok,
			 "why", why);
}

static void cli_devices_human_rdma(const json_t *devs, const char *why)
{
	const json_t *d, *p, *g;
	size_t i, j, k;
	if (!json_array_size(devs)) {
		printf("RDMA devices: none\n  %s\n", why);
		return;
	}
	printf("RDMA devices:\n");
	json_array_foreach(devs, i, d) {
		printf("  %s  driver %s%s  fw %s  numa %lld%s\n", cli_jstr(d, "name"),
		       cli_jstr(d, "driver"), json_is_true(json_object_get(d, "software")) ?
		       " (software)" : "", cli_jstr(d, "fw_ver"), cli_jint(d, "numa_node"),
		       json_is_true(json_object_get(d, "verbs")) ? "" : "  [not seen by libibverbs]");
		json_array_foreach(json_object_get(d, "ports"), j, p) {
			printf("    port %lld  %s (%s)  %s  mtu %lld  %s  netdev %s\n", cli_jint(p, "port"),
			       cli_jstr(p, "state"), cli_jstr(p, "phys_state"), cli_jstr(p, "link_layer"),
			       cli_jint(p, "active_mtu"), cli_jstr(p, "rate"), cli_jstr(p, "netdev"));
			json_array_foreach(json_object_get(p, "gids"), k, g)
				printf("      gid[%lld] %s  %s  %s\n", cli_jint(g, "index"),
				       *cli_jstr(g, "addr") ? cli_jstr(g, "addr") : cli_jstr(g, "gid"),
				       cli_jstr(g, "type"), cli_jstr(g, "netdev"));
		}
	}
}

static void cli_devices_human(const json_t *doc)
{
	const json_t *rdma = json_object_get(doc, "rdma");
	cli_devices_human_rdma(json_object_get(rdma, "devices"), cli_jstr(rdma, "why"));
	const json_t *dpdk = json_object_get(doc, "dpdk"), *x;
	size_t i;
	printf("\nDPDK ports (%s):\n", cli_jstr(dpdk, "method"));
	if (!json_array_size(json_object_get(dpdk, "ports")))
		printf("  none bound to vfio-pci/uio_pci_generic/igb_uio\n");
	json_array_foreach(json_object_get(dpdk, "ports"), i, x)
		printf("  %s  %s  %s:%s  numa %lld\n", cli_jstr(x, "pci"), cli_jstr(x, "kernel_driver"),
		       cli_jstr(x, "vendor"), cli_jstr(x, "device"), cli_jint(x, "numa_node"));
	printf("\nkvwire drivers (built: %s):\n", cli_jstr(doc, "drivers_built"));
	json_array_foreach(json_object_get(doc, "drivers"), i, x)
		printf("  %-5s %-8s %s\n", cli_jstr(x, "name"),
		       json_is_true(json_object_get(x, "usable")) ? "usable" : "NO", cli_jstr(x, "why"));
}

static int cli_devices_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire devices [--json]\n"
		"Lists RDMA devices and ports, DPDK-bound ports and usable kvwire drivers.\n");
	return rc;
}

int cmd_devices(int argc, char **argv)
{
	bool as_json = false;
	int orc = cli_opts_json_only(argc, argv, &as_json, cli_devices_usage);
	if (orc >= 0)
		return orc;
	if (optind != argc)
		return cli_devices_usage(stderr, CLI_EXIT_USAGE);
	char why[256];
	json_t *devs = cli_rdma_scan(why, sizeof(why));
	if (!cli_have_verbs() && json_array_size(devs))
		snprintf(why, sizeof(why), "built without libibverbs: active MTU unknown");
	json_t *drivers = json_array();
	static const char *names[] = { "tcp", "shm", "rdma", "dpdk" };
	for (size_t i = 0; i < 4; i++)
		json_array_append_new(drivers, cli_driver(names[i], devs, why));
	json_t *doc = json_pack("{s:{s:o,s:s,s:b},s:{s:s,s:o},s:s,s:o}",
		"rdma", "devices", devs, "why", why, "libibverbs", cli_have_verbs(),
		"dpdk", "method", "sysfs scan of PCI NICs bound to DPDK-capable kernel drivers; "
		"EAL not probed", "ports", cli_dpdk_scan(),
		"drivers_built", kvw_drivers_built(), "drivers", drivers);
	return cli_emit(doc, as_json, cli_devices_human, CLI_EXIT_OK);
}
