/* SPDX-License-Identifier: MIT */
/* dpdk driver: EAL (once per process), ports and queues, memory registration. */
#include "dk.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_memory.h>
#include <rte_dev.h>

static pthread_mutex_t dk_eal_lock = PTHREAD_MUTEX_INITIALIZER;
static int dk_eal_state;         /* 0 not yet, 1 up, -1 failed */
static char dk_eal_err[256];
/* Ports are process-wide: set up once, shared by every context of the
 * process (contexts sharing a port must be driven from one thread), and
 * kept started until exit (a closed vdev cannot be probed again). */
static struct dk_port *dk_gports[RTE_MAX_ETHPORTS];

bool dk_eal_up(void)
{
	return __atomic_load_n(&dk_eal_state, __ATOMIC_ACQUIRE) == 1;
}

/* "--no-huge+--vdev=a%2Cb" -> argv; '+' and %20 are spaces, %XX decoded. */
static int dk_eal_split(const char *s, char *buf, size_t len, char **argv, int max)
{
	size_t o = 0;
	for (size_t i = 0; s[i] && o + 1 < len; i++) {
		if (s[i] == '%' && isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2])) {
			char hx[3] = { s[i + 1], s[i + 2], 0 };
			buf[o++] = (char)strtol(hx, NULL, 16);
			i += 2;
		} else if (s[i] == '%' && s[i + 1] == 'p') { /* %p: this process id */
			int n = snprintf(buf + o, len - o, "%d", (int)getpid());
			o = n > 0 && (size_t)n < len - o ? o + (size_t)n : o;
			i++;
		} else {
			buf[o++] = s[i] == '+' ? ' ' : s[i];
		}
	}
	buf[o] = 0;
	int argc = 0;
	argv[argc++] = "kvwire";
	for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t && argc < max - 1;
	     t = strtok_r(NULL, " \t", &save))
		argv[argc++] = t;
	argv[argc] = NULL;
	return argc;
}

kvw_status dk_eal_ensure(kvw_drv *d, const char *eal_args)
{
	static char buf[1024];
	char *argv[64];
	kvw_status st = KVW_OK;

	pthread_mutex_lock(&dk_eal_lock);
	if (dk_eal_state == 1)
		goto out_unlock;
	if (dk_eal_state == -1) {
		st = kvw_set_err(d->ctx, KVW_ERR_IO, "%s", dk_eal_err);
		goto out_unlock;
	}
	if (!eal_args || !*eal_args) {
		st = kvw_set_err(d->ctx, KVW_ERR_INVALID,
				 "dpdk: no EAL arguments; set config dpdk_eal (KVW_DPDK_EAL) or the URI "
				 "query eal=, e.g. \"--no-huge --no-pci -m 512 --vdev=net_memif0,role=server,"
				 "socket=/run/kvwire/memif.sock\"");
		goto out_unlock;
	}
	int argc = dk_eal_split(eal_args, buf, sizeof(buf), argv, 64);
	optind = 1;
	if (rte_eal_init(argc, argv) < 0) {
		snprintf(dk_eal_err, sizeof(dk_eal_err),
			 "dpdk: rte_eal_init(\"%s\") failed: %s; check the EAL arguments, run as root "
			 "(or with hugepage/vfio rights), and that no other process uses the same "
			 "--file-prefix", eal_args, rte_strerror(rte_errno));
		dk_eal_state = -1;
		st = kvw_set_err(d->ctx, KVW_ERR_IO, "%s", dk_eal_err);
		goto out_unlock;
	}
	__atomic_store_n(&dk_eal_state, 1, __ATOMIC_RELEASE);
out_unlock:
	pthread_mutex_unlock(&dk_eal_lock);
	return st;
}

static kvw_status dk_port_pools(kvw_drv *d, struct dk_port *p)
{
	char name[RTE_MEMPOOL_NAMESIZE];
	unsigned socket = rte_socket_id();

	snprintf(name, sizeof(name), "kvw_p%u_%d", p->port_id, (int)getpid() % 100000);
	p->pool = rte_pktmbuf_pool_create(name, 16383, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, (int)socket);
	snprintf(name, sizeof(name), "kvw_x%u_%d", p->port_id, (int)getpid() % 100000);
	uint16_t priv = RTE_ALIGN(sizeof(struct rte_mbuf_ext_shared_info), RTE_MBUF_PRIV_ALIGN);
	p->ext_pool = rte_pktmbuf_pool_create(name, 16383, 256, priv, 0, (int)socket);
	if (!p->pool || !p->ext_pool)
		return kvw_set_err(d->ctx, KVW_ERR_NOMEM,
				   "dpdk: cannot create mbuf pools for port %u: %s; give EAL more memory "
				   "(-m 512) or hugepages", p->port_id, rte_strerror(rte_errno));
	return KVW_OK;
}

static kvw_status dk_port_setup(kvw_drv *d, struct dk_port *p, uint16_t nq, uint32_t mtu)
{
	struct rte_eth_dev_info di;
	struct rte_eth_conf conf;
	int rc;

	if ((rc = rte_eth_dev_info_get(p->port_id, &di)) != 0)
		return kvw_set_err(d->ctx, KVW_ERR_IO, "dpdk: port %u info: %s", p->port_id, rte_strerror(-rc));
	snprintf(p->drv_name, sizeof(p->drv_name), "%s", di.driver_name ? di.driver_name : "?");
	memset(&conf, 0, sizeof(conf));
	p->multiseg = (di.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) != 0;
	if (p->multiseg)
		conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
	if (di.rx_offload_capa & RTE_ETH_RX_OFFLOAD_SCATTER)
		conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;
	p->nq = nq > di.max_tx_queues ? di.max_tx_queues : nq;
	if (p->nq > di.max_rx_queues)
		p->nq = di.max_rx_queues;
	if (p->nq == 0)
		p->nq = 1;
	/* memif: one 2048-byte memif buffer per frame by default; chained jumbo
	 * frames (?mtu=8192) showed mixed-up payloads under ring pressure in
	 * DPDK 22.11, so they get UDP checksums (see docs/drivers/dpdk.md) */
	if (!mtu)
		mtu = strstr(p->drv_name, "memif") ? 2048 - sizeof(struct rte_ether_hdr) : 1500;
	p->jumbo_cksum = strstr(p->drv_name, "memif") && mtu > 2048 - sizeof(struct rte_ether_hdr);
	if (!p->multiseg && mtu > 1500)
		mtu = 1500;
	p->mtu_payload = mtu - 20 - 8 - DK_FRAME_HDR;
	if ((rc = rte_eth_dev_configure(p->port_id, p->nq, p->nq, &conf)) != 0)
		return kvw_set_err(d->ctx, KVW_ERR_IO, "dpdk: configure port %u (%s): %s",
				   p->port_id, p->drv_name, rte_strerror(-rc));
	for (uint16_t q = 0; q < p->nq; q++) {
		rc = rte_eth_rx_queue_setup(p->port_id, q, 1024, rte_eth_dev_socket_id(p->port_id),
					    NULL, p->pool);
		if (rc == 0)
			rc = rte_eth_tx_queue_setup(p->port_id, q, 1024, rte_eth_dev_socket_id(p->port_id), NULL);
		if (rc != 0)
			return kvw_set_err(d->ctx, KVW_ERR_IO, "dpdk: queue %u setup on port %u: %s",
					   q, p->port_id, rte_strerror(-rc));
	}
	if ((rc = rte_eth_dev_start(p->port_id)) != 0)
		return kvw_set_err(d->ctx, KVW_ERR_IO, "dpdk: start port %u: %s", p->port_id, rte_strerror(-rc));
	rte_eth_promiscuous_enable(p->port_id);
	rte_eth_macaddr_get(p->port_id, &p->mac);
	p->started = true;
	return KVW_OK;
}

static unsigned dk_uri_uint(const struct kvw_uri *u, const char *key, unsigned def)
{
	char v[32];
	if (!kvw_uri_param(u, key, v, sizeof(v)))
		return def;
	return (unsigned)strtoul(v, NULL, 0);
}

kvw_status dk_port_get(struct dk_drv *dd, const struct kvw_uri *u, bool client, struct dk_port **out)
{
	unsigned pid = dk_uri_uint(u, "port", 0); /* a list "0,2": its first port */

	if (client) /* one process, two ports: the listener's URI may name both */
		pid = dk_uri_uint(u, "cport", pid);
	return dk_port_get_id(dd, pid, u, out);
}

kvw_status dk_port_get_id(struct dk_drv *dd, unsigned pid, const struct kvw_uri *u, struct dk_port **out)
{
	kvw_drv *d = dd->d;
	kvw_status st = KVW_OK;

	if (pid >= RTE_MAX_ETHPORTS || !rte_eth_dev_is_valid_port((uint16_t)pid))
		return kvw_set_err(d->ctx, KVW_ERR_NOT_FOUND,
				   "dpdk: no ethdev port %u (%u ports probed); add a --vdev= or a PCI device "
				   "to the EAL arguments, or pick ?port=N", pid, rte_eth_dev_count_avail());
	if (dd->ports[pid]) {
		*out = dd->ports[pid];
		return KVW_OK;
	}
	pthread_mutex_lock(&dk_eal_lock);
	struct dk_port *p = dk_gports[pid];
	if (p)
		goto out_share;
	if (!(p = calloc(1, sizeof(*p)))) {
		st = kvw_set_err(d->ctx, KVW_ERR_NOMEM, "dpdk: out of memory");
		goto out_unlock;
	}
	p->port_id = (uint16_t)pid;
	p->next_eport = (uint16_t)(49152 + (getpid() * 7919) % 8192);
	unsigned nq = dk_uri_uint(u, "queues", 1);
	if ((st = dk_port_pools(d, p)) != KVW_OK ||
	    (st = dk_port_setup(d, p, (uint16_t)(nq ? (nq > DK_MAX_QUEUES ? DK_MAX_QUEUES : nq) : 1),
				dk_uri_uint(u, "mtu", 0))) != KVW_OK) {
		rte_mempool_free(p->pool);
		rte_mempool_free(p->ext_pool);
		free(p);
		goto out_unlock;
	}
	kvw_log(d->ctx, 2, "dpdk: port %u (%s) up: %u queue(s), %u payload bytes per packet, tx chains %s",
		pid, p->drv_name, p->nq, p->mtu_payload, p->multiseg ? "yes" : "no");
	dk_gports[pid] = p;
out_share:
	p->users++;
	dd->ports[pid] = p;
	*out = p;
out_unlock:
	pthread_mutex_unlock(&dk_eal_lock);
	return st;
}

void dk_port_put_all(struct dk_drv *dd)
{
	pthread_mutex_lock(&dk_eal_lock);
	for (unsigned i = 0; i < RTE_MAX_ETHPORTS; i++)
		if (dd->ports[i]) {
			dd->ports[i]->users--;
			dd->ports[i] = NULL;
		}
	pthread_mutex_unlock(&dk_eal_lock);
}

/* ------------------------------------------------------------------ memory */
struct dk_mem *dk_mem_of(const kvw_drv *d, const kvw_mem *m)
{
	return m ? (struct dk_mem *)kvw_core_mem_priv(m, d) : NULL;
}

static void dk_mem_dma(kvw_drv *d, struct dk_mem *dm, bool map)
{
	uint16_t pid;
	RTE_ETH_FOREACH_DEV(pid) {
		struct rte_eth_dev_info di;
		if (rte_eth_dev_info_get(pid, &di) != 0 || !di.device)
			continue;
		int rc = map ? rte_dev_dma_map(di.device, dm->base, (uint64_t)(uintptr_t)dm->base, dm->len)
			     : rte_dev_dma_unmap(di.device, dm->base, (uint64_t)(uintptr_t)dm->base, dm->len);
		if (rc != 0 && rte_errno != ENOTSUP)
			kvw_log(d->ctx, 2, "dpdk: dma %smap on port %u: %s", map ? "" : "un", pid,
				rte_strerror(rte_errno));
	}
}

/* Registers the page-aligned cover of m with rte_extmem (IOVA = VA) and
 * maps it for DMA. Failure is not fatal: TX then copies from it. */
static void dk_mem_extmem(kvw_drv *d, struct dk_mem *dm)
{
	if (!dk_eal_up() || dm->ext)
		return;
	if (rte_eal_iova_mode() != RTE_IOVA_VA) {
		kvw_log(d->ctx, 2, "dpdk: IOVA mode is PA; TX copies instead of zero-copy "
			"(use --iova-mode=va with vfio for zero-copy)");
		return;
	}
	if (rte_extmem_register(dm->base, dm->len, NULL, 0, (size_t)sysconf(_SC_PAGESIZE)) != 0) {
		kvw_log(d->ctx, 2, "dpdk: rte_extmem_register(%p, %zu): %s; TX copies from this memory",
			(void *)dm->base, dm->len, rte_strerror(rte_errno));
		return;
	}
	dk_mem_dma(d, dm, true);
	dm->ext = true;
}

kvw_status dk_mem_register(kvw_drv *d, kvw_mem *m)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	struct dk_mem *dm = calloc(1, sizeof(*dm));

	if (!dm)
		return kvw_set_err(d->ctx, KVW_ERR_NOMEM, "dpdk: out of memory");
	struct dk_drv *dd = d->priv;
	uintptr_t b = (uintptr_t)kvw_mem_addr(m) & ~(uintptr_t)(pg - 1);
	uintptr_t e = ((uintptr_t)kvw_mem_addr(m) + kvw_mem_len(m) + pg - 1) & ~(uintptr_t)(pg - 1);
	dm->base = (uint8_t *)b;
	dm->len = e - b;
	dm->next = dd->mems;
	dd->mems = dm;
	kvw_core_mem_set_priv(m, d, dm);
	dk_mem_extmem(d, dm);
	return KVW_OK;
}

void dk_mem_unregister(kvw_drv *d, kvw_mem *m)
{
	struct dk_mem *dm = dk_mem_of(d, m);
	struct dk_drv *dd = d->priv;
	if (!dm)
		return;
	for (struct dk_mem **pp = &dd->mems; *pp; pp = &(*pp)->next)
		if (*pp == dm) {
			*pp = dm->next;
			break;
		}
	if (dm->ext) {
		dk_mem_dma(d, dm, false);
		rte_extmem_unregister(dm->base, dm->len);
	}
	free(dm);
	kvw_core_mem_set_priv(m, d, NULL);
}

void dk_mem_late(kvw_drv *d)
{
	struct dk_drv *dd = d->priv;

	for (struct dk_mem *dm = dd->mems; dm; dm = dm->next)
		dk_mem_extmem(d, dm);
}
