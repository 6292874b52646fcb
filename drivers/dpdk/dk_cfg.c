/* SPDX-License-Identifier: MIT */
/* The dpdk driver's config options (served by the core's config API). */
#include "dk.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

const struct kvw_cfg_opt dk_cfg_opts[] = {
	{"dpdk_eal", "", "EAL arguments for the dpdk driver, e.g. \"--no-huge --no-pci "
	 "--vdev=net_memif0,...\"", KVW_CFG_STR, 0, 0, NULL,
	 offsetof(struct kvw_cfgv, dpdk_eal), sizeof(((struct kvw_cfgv *)0)->dpdk_eal)},
	{"dpdk_cancel_ms", "200", "how long a cancelled send (and a closed endpoint's flow) waits, "
	 "without blocking, for the PMD to give back the buffers over its pages before it is reported "
	 "done anyway (with a log line)", KVW_CFG_U64, 1, 60000, NULL,
	 offsetof(struct kvw_cfgv, dpdk_cancel_ms), sizeof(((struct kvw_cfgv *)0)->dpdk_cancel_ms)},
	{NULL},
};

/* What can be told without starting the EAL (which takes the process's
 * hugepages and ports for good): whether EAL arguments are configured. The
 * bound PCI ports are a sysfs fact the tools list themselves. */
kvw_status dk_probe(const struct kvw_cfgv *c, struct kvw_probe_entry *out, size_t cap, size_t *n)
{
	*n = 1;
	if (cap < 1)
		return KVW_OK;
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "eal");
	out->usable = true;
	if (c->dpdk_eal[0]) {
		snprintf(out->reason, sizeof(out->reason), "built; the EAL starts with config dpdk_eal "
			 "(not started here: it would take the hugepages and ports)");
		snprintf(out->details, sizeof(out->details), "%.200s", c->dpdk_eal);
	} else {
		snprintf(out->reason, sizeof(out->reason), "built; usable with EAL arguments in config "
			 "dpdk_eal (vdevs such as net_memif/net_af_packet need no bound port)");
	}
	return KVW_OK;
}
