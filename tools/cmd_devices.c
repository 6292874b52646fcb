/* SPDX-License-Identifier: MIT */
/* kvwire devices: RDMA devices and ports, DPDK ports, usable drivers.
 * Exit 0 even when there is no RDMA device (that is a fact, not a fault);
 * 3 when the listing itself failed. */
#include "cli.h"
#include "kvwire/kvwire.h"
#include "kvw_int.h"

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

/* The driver's own verdict (ops->probe through the library): the first
 * usable device's sentence, else the first device's reason. */
static bool cli_probe_verdict(const char *name, json_t *devices, char *why, size_t len)
{
	struct kvw_probe_entry e[16];
	size_t n = 0;
	bool ok = false;
	if (kvw_driver_probe(name, e, 16, &n) != KVW_OK) {
		snprintf(why, len, "%s", kvw_ctx_last_error(NULL));
		return false;
	}
	why[0] = 0;
	for (size_t i = 0; i < n && i < 16; i++) {
		json_array_append_new(devices, json_pack("{s:s,s:b,s:s,s:s}", "name", e[i].name,
			"usable", e[i].usable, "reason", e[i].reason, "details", e[i].details));
		if (e[i].usable && !ok)
			snprintf(why, len, "%s", e[i].reason);
		else if (!ok && !why[0])
			snprintf(why, len, "%s (see `kvwire doctor`)", e[i].reason);
		ok = ok || e[i].usable;
	}
	return ok;
}

static json_t *cli_driver(const char *name, const json_t *rdma, const char *rdma_why)
{
	char why[512];
	bool ok = false;
	json_t *probed = json_array();
	if (!cli_built(name)) {
		snprintf(why, sizeof(why), "not built into this library (built: %s)", kvw_drivers_built());
	} else if (!strcmp(name, "tcp")) {
		cli_try_listen("tcp://127.0.0.1:0", why, sizeof(why), &ok);
	} else if (!strcmp(name, "loop")) {
		cli_try_listen("loop://kvwire-devices-probe", why, sizeof(why), &ok);
	} else if (!strcmp(name, "shm")) {
		char uri[128];
		snprintf(uri, sizeof(uri), "shm:///tmp/kvwire-devices-probe.%ld.sock", (long)getpid());
		cli_try_listen(uri, why, sizeof(why), &ok);
	} else {
		ok = cli_probe_verdict(name, probed, why, sizeof(why));
		if (!strcmp(name, "rdma") && !json_array_size(probed))
			snprintf(why, sizeof(why), "%s", json_array_size(rdma) ? "libibverbs/rdma_cm sees "
				 "no device although sysfs lists some: check the provider (`kvwire "
				 "doctor`, verbs-provider)" : rdma_why);
	}
	return json_pack("{s:s,s:b,s:b,s:s,s:o}", "name", name, "built", cli_built(name), "usable", ok,
			 "why", why, "devices", probed);
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

/* A driver's line, then the devices its probe listed (each usable one's
 * details, each other one's reason) unless the line says it already. */
static void cli_devices_human_drv(const json_t *x)
{
	const json_t *y;
	size_t j;
	printf("  %-5s %-8s %s\n", cli_jstr(x, "name"),
	       json_is_true(json_object_get(x, "usable")) ? "usable" : "NO", cli_jstr(x, "why"));
	json_array_foreach(json_object_get(x, "devices"), j, y) {
		const char *d = *cli_jstr(y, "details") ? cli_jstr(y, "details") : cli_jstr(y, "reason");
		if (strstr(cli_jstr(x, "why"), d))
			continue;
		printf("        %-14s %-6s %s\n", cli_jstr(y, "name"),
		       json_is_true(json_object_get(y, "usable")) ? "usable" : "NO", d);
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
		cli_devices_human_drv(x);
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
	static const char *names[] = { "tcp", "shm", "rdma", "dpdk", "ofi", "loop" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		json_array_append_new(drivers, cli_driver(names[i], devs, why));
	json_t *doc = json_pack("{s:{s:o,s:s,s:b},s:{s:s,s:o},s:s,s:o}",
		"rdma", "devices", devs, "why", why, "libibverbs", cli_have_verbs(),
		"dpdk", "method", "sysfs scan of PCI NICs bound to DPDK-capable kernel drivers; "
		"EAL not probed", "ports", cli_dpdk_scan(),
		"drivers_built", kvw_drivers_built(), "drivers", drivers);
	return cli_emit(doc, as_json, cli_devices_human, CLI_EXIT_OK);
}
