/* SPDX-License-Identifier: MIT */
/* The rdma driver's config options (served by the core's config API). */
#include "rdma_int.h"

#include <stddef.h>

#define F(field) offsetof(struct kvw_cfgv, field), sizeof(((struct kvw_cfgv *)0)->field)

/* In the order of enum rd_grant_keys. */
static const char *const rd_grant_keys_names[] = {"auto", "mw", "mr", "span", "mw2", NULL};
_Static_assert(RD_GRANT_KEYS_MW2 == 4, "rd_grant_keys_names follows enum rd_grant_keys");

const struct kvw_cfg_opt rd_cfg_opts[] = {
	{"rdma_dev", "", "RDMA device (default: first with an active port)", KVW_CFG_STR, 0, 0,
	 NULL, F(rdma_dev)},
	{"rdma_gid", "-1", "GID index (default: the port's IPv4 RoCE v2 GID)", KVW_CFG_INT, 0, 255,
	 NULL, F(rdma_gid)},
	{"rdma_qp_depth", "512", "send queue depth per QP (at least 32: a gathered fragment may "
	 "take 16 writes)", KVW_CFG_U64, 32, 32768, NULL, F(rdma_qp_depth)},
	{"rdma_retry", "6", "RC retry count (7 means forever on rxe: kept below)", KVW_CFG_U64, 0, 7,
	 NULL, F(rdma_retry)},
	{"rdma_grant_keys", "auto", "remote keys of a grant: mw2 = a type 2 memory window per run "
	 "of granted blocks and per rail, bound to that rail's QP (only the endpoint it was granted "
	 "to can use it; library-chosen random key byte), mw = a type 1 window per run, mr = an MR "
	 "per run (the NIC refuses any byte outside the granted blocks in all three; mw and mr keys "
	 "work from any QP of the device), span = one MR over the grant's span (fastest; holes "
	 "between blocks unprotected), auto = mw2 where the device has type 2 windows, else mw "
	 "where it enforces window bounds, else mr", KVW_CFG_ENUM, 0, 0, rd_grant_keys_names,
	 F(rdma_grant_keys)},
	{NULL},
};
