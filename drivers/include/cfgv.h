/* SPDX-License-Identifier: MIT */
/* The parsed configuration of a context (config.c fills it; drivers read
 * their knobs through kvw_core_cfg(ctx)). */
#ifndef KVW_CFGV_H
#define KVW_CFGV_H

#include <stdint.h>

struct kvw_cfgv {
	char driver[16];
	unsigned rails;
	unsigned timeout_ms;
	unsigned keepalive_ms;
	unsigned peer_dead_ms;
	unsigned connect_timeout_ms;
	unsigned abort_timeout_ms;
	uint64_t max_frag;
	uint64_t max_gather;
	uint64_t window;        /* dpdk send window, bytes in flight per endpoint */
	char secret[128];
	char secret_file[256];
	unsigned handshake_timeout_ms; /* server side: handshake deadline */
	unsigned accept_timeout_ms;    /* READY but not accepted */
	unsigned max_handshakes, max_handshakes_per_addr, max_unaccepted;
	uint64_t max_tx_queue;         /* queued control bytes per peer */
	unsigned max_peer_grants;      /* unsolicited GRANTs held per endpoint */
	uint64_t max_peer_grant_bytes;
	unsigned max_peer_timeout_ms;
	unsigned ep_cache;             /* kvw_connect reuses a live endpoint by URI */
	unsigned ep_idle_close_ms;     /* cached, unheld endpoints close after this */
	char stats_socket[108];
	unsigned log_level;
	unsigned spin_us;
	/* the drivers' options, declared in their folders (ops->cfg_opts) */
	char dpdk_eal[512];     /* drivers/dpdk/dk_cfg.c */
	unsigned dpdk_cancel_ms;
	char rdma_dev[64];      /* drivers/rdma/rdma_cfg.c */
	int rdma_gid;
	unsigned rdma_qp_depth;
	unsigned rdma_retry;
	int rdma_grant_keys;      /* enum rd_grant_keys (drivers/rdma/rdma_int.h) */
	char fault[128];        /* fault-injection spec, "" = off */
};

#endif
