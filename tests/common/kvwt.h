/* SPDX-License-Identifier: MIT */
/* Helpers shared by the Criterion suites: driver selection, pools with
 * known contents, endpoint pairs, an event pump. Everything here uses the
 * real library; nothing is mocked. */
#ifndef KVWT_H
#define KVWT_H

#include "kvwire/kvwire.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__SANITIZE_ADDRESS__)
#define KVWT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVWT_ASAN 1
#endif
#endif
#ifndef KVWT_ASAN
#define KVWT_ASAN 0
#endif

/* ------------------------------------------------------------ drivers */
/* A driver under test: its name, how to make a fresh listen URI, extra
 * config (name, value pairs, NULL-terminated) and whether a raw stream
 * socket can speak wire frames to its listener (tcp, shm). */
struct kvwt_drv {
	const char *name;
	void (*listen_uri)(char *buf, size_t len);
	const char *const *cfg;
	bool raw_stream;
};
/* From KVW_TEST_DRIVER (default tcp). Aborts the test when unknown. */
const struct kvwt_drv *kvwt_driver(void);
void kvwt_listen_uri(char *buf, size_t len);

/* --------------------------------------------------------------- ctx */
/* A context with the driver's config plus extra (name, value, ..., NULL).
 * In a process forked by a test, KVW_TEST_CHILD_EAL (when set) becomes
 * config dpdk_eal, %P replaced by the parent's pid: the forked peer takes
 * the other role of a fabric its parent holds (memif client of the
 * parent's socket). A test named in KVW_TEST_SKIP ("suite::test ...") is
 * skipped here, with the reason in KVW_TEST_SKIP_WHY. */
kvw_ctx *kvwt_ctx(const char *const *extra);
uint64_t kvwt_now_ms(void);
/* An upper time bound of a test, stretched by KVW_TEST_TIME_SCALE (an
 * integer 1..20, default 1): the VM suites run under TCG, where a loaded
 * host makes everything several times slower than the bound was made for.
 * Lower bounds and the limits that tell a waiting call from a working one
 * are not stretched. */
uint64_t kvwt_slack_ms(uint64_t ms);
/* Resident set of this process (or pid, 0 = self) in KiB, from /proc; -1 on error. */
long kvwt_rss_kib(void);
long kvwt_rss_kib_of(int pid);

/* -------------------------------------------------------------- pools */
struct kvwt_pool {
	kvw_mem *mem;
	kvw_layout *lay;
	uint8_t *base;
	uint32_t n_layers, n_blocks;
	uint64_t bb, stride, layer_stride;
};
void kvwt_pool_make(kvw_ctx *ctx, struct kvwt_pool *p, uint32_t n_layers, uint32_t n_blocks,
		    uint64_t block_bytes, uint64_t stride);
void kvwt_pool_free(struct kvwt_pool *p);
uint8_t *kvwt_page(const struct kvwt_pool *p, uint32_t layer, uint32_t block);
/* Pseudo-random bytes from seed (splitmix64), and their check. */
void kvwt_fill(void *buf, size_t len, uint64_t seed);
bool kvwt_check(const void *buf, size_t len, uint64_t seed);
uint64_t kvwt_seed(uint64_t tag, uint32_t layer, uint32_t block);
/* Fills every page of the pool (and the gaps) from tag. */
void kvwt_pool_fill(struct kvwt_pool *p, uint64_t tag);
/* n distinct block indices out of [0, range), shuffled by seed. */
void kvwt_pick_blocks(uint32_t *out, uint32_t n, uint32_t range, uint64_t seed);

/* ------------------------------------------------------------ requests */
/* Record kept in a request's user data by kvwt_drive(). */
struct kvwt_rec {
	kvw_status status;      /* INPROGRESS until its SEQ event */
	uint32_t layer_events, seq_events;
	uint64_t seq_bytes, layer_bytes;
	uint64_t t_done_ms;
	uint8_t layer_seen[KVW_MAX_LAYERS];
};
void kvwt_rec_init(struct kvwt_rec *r);
/* Drives every context until pred(arg) holds or timeout_ms passes; routes
 * events into kvwt_rec user data. Returns pred's last verdict. */
typedef bool (*kvwt_pred)(void *arg);
bool kvwt_drive(kvw_ctx *const *ctxs, int n_ctx, int timeout_ms, kvwt_pred pred, void *arg);
bool kvwt_drive1(kvw_ctx *ctx, int timeout_ms, kvwt_pred pred, void *arg);
/* Drives for ms milliseconds whatever happens. */
void kvwt_spin(kvw_ctx *const *ctxs, int n_ctx, int ms);
/* Predicates: every rec in a NULL-terminated array is done. */
bool kvwt_recs_done(void *recs_null_terminated);
bool kvwt_rec_done(void *rec);

/* ------------------------------------------------------------- endpoints */
/* Listener + client + accepted server endpoint, all in one context. */
struct kvwt_pair {
	kvw_ctx *ctx;
	kvw_listener *l;
	kvw_ep *client, *server;
};
void kvwt_pair_open(kvw_ctx *ctx, struct kvwt_pair *p);
/* Connects cctx to a listener of sctx with kvw_connect_start, driving both.
 * Returns the client's final status; *server the accepted ep (or NULL). */
kvw_status kvwt_connect2(kvw_ctx *cctx, const char *uri, kvw_listener *l, int timeout_ms,
			 kvw_ep **client, kvw_ep **server);

#endif
