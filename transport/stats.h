/* SPDX-License-Identifier: MIT */
/* Stats endpoint: live counters of this process for `kvwire stat`.
 * Off unless the config's stats_socket names a unix socket path. */
#ifndef KVW_STATS_H
#define KVW_STATS_H
#include "kvw_int.h"
/* Called by kvw_ctx_create; does nothing when stats_socket is "". */
kvw_status kvw_stats_open(kvw_ctx *ctx);
/* Called from kvw_progress: serves waiting clients without blocking. */
void kvw_stats_progress(kvw_ctx *ctx);
/* Called by kvw_ctx_destroy. */
void kvw_stats_close(kvw_ctx *ctx);
#endif
