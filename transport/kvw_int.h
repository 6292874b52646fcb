/* SPDX-License-Identifier: MIT */
/* Internal structures of the kvwire core, shared with the drivers. */
#ifndef KVW_INT_H
#define KVW_INT_H

#include "kvwire/kvwire.h"
#include "wire.h"
#include "driver.h"  /* drivers/include: what drivers see */
#include "cover.h"
#include "geom.h"

#include <stdbool.h>
#include <stdarg.h>
#include <time.h>

#define KVW_CFG_MAX 64
struct kvw_config {
	char *val[KVW_CFG_MAX];
};

kvw_status kvw_cfgv_parse(const kvw_config *cfg, struct kvw_cfgv *out, char *err, size_t errlen);
/* Every option: the core's, then each built driver's (ops->cfg_opts); the
 * index is that of kvw_config_table() and of kvw_config.val. owners[i] is
 * "core" or the driver's name. Either output may be NULL. */
size_t kvw_cfg_all(const struct kvw_cfg_opt *const **opts, const char *const **owners);
/* drivers.c, for the tools: ops->probe of the built driver `name` with the
 * defaults + KVW_* environment; NOT_FOUND if not built, UNSUPPORTED if it
 * has no probe (kvw_ctx_last_error(NULL) says). */
kvw_status kvw_driver_probe(const char *name, struct kvw_probe_entry *out, size_t cap, size_t *n);

/* ------------------------------------------------------------------ memory */
struct kvw_mem {
	kvw_ctx *ctx;
	uint8_t *addr;
	size_t len;
	unsigned flags;
	uint32_t id;            /* unique in the context, sent in MEM/DESC */
	int memfd;              /* -1 unless from kvw_mem_alloc */
	uint8_t *map_base;      /* whole mapping incl. guard pages (alloc) */
	size_t map_len;
	bool pinned;
	uint32_t users;         /* requests and layouts referring to it */
	uint64_t reg_ns;
	void *drv_priv[KVW_DRV_MAX];
	struct kvw_mem *next;
};

struct kvw_layout {
	kvw_mem *mem;
	uint32_t n_layers, n_blocks;
	uint64_t block_bytes, block_stride;
	uint64_t *layer_off;    /* n_layers (geometry: n_regions region bases) */
	/* from kvw_layout_create_geom: the geometry (kv_offsets -> kv_offs, a
	 * copy); regions are (layer, kv), or layers when K and V share a block,
	 * and block_bytes == block_stride */
	bool geo;
	kvw_geom g;
	uint64_t *kv_offs;
	uint32_t n_regions;
};

/* --------------------------------------------------------------- requests */
enum kvw_req_role { KVW_ROLE_RECV = 1, KVW_ROLE_SEND = 2 };

struct kvw_range { uint32_t first, end; };

struct kvw_req {
	kvw_ep *ep;
	enum kvw_req_role role;
	kvw_status status;      /* INPROGRESS until done */
	uint64_t seq_id;
	void *user_data;
	uint64_t deadline_ns;
	uint64_t bytes_done, bytes_total;
	uint32_t n_layers, layers_done;
	uint64_t t_posted, t_matched, t_first_byte, t_last_byte, t_completed;
	bool user_owned;        /* handed to the user (false: a grant waiting for send_seq) */
	bool on_active;         /* in ep->active_head list */
	bool in_map;            /* in recv_map / send_map */
	struct kvw_req *next_ep, *prev_ep; /* ep->reqs: every request not yet freed */

	/* both roles */
	const kvw_layout *layout;
	uint32_t *blocks;       /* copy of the caller's list */
	uint32_t n_blocks;
	uint64_t *layer_bytes;  /* bytes landed (recv) / confirmed (send) per layer */

	/* geometry sequences (both roles) */
	bool geo;
	uint64_t layer_total;   /* granted bytes per layer */
	struct kvw_geom_grant gg; /* recv: what the grant allows; send: the peer's */

	/* recv role */
	uint32_t token;
	uint32_t *run_end;      /* per list index: last index of its contiguous run */
	struct kvw_cover cover;  /* granted bytes landed, each counted once (cover.h) */

	/* send role */
	bool granted;
	bool last_seen;
	bool abort_acked;
	struct kvw_peer_grant {
		uint32_t token, n_blocks, n_layers;
		uint64_t block_bytes, block_stride;
		uint64_t mem_addr, mem_len;
		uint32_t mem_key;
		uint32_t flags;         /* KVW_GRANT_* */
		uint64_t *layer_off;
		uint32_t *blocks;
	} pg;
	uint32_t *frag_end;     /* per list index: end (excl.) of its run on both sides */
	/* geometry sends: the peer's geometry, this side's, the plan cursor */
	kvw_geom pgeom, sgeom;
	struct kvw_wire_geom pgw; /* the GEOM body of the peer's grant */
	uint64_t st0, st1;      /* tokens this side holds (kvw_send_seq_range) */
	struct kvw_geo_cur {
		struct kvw_plan plan;
		struct kvw_plan_frag f; /* plan fragment being cut at max_frag */
		uint64_t off;           /* bytes of f already posted */
		uint32_t pend;          /* index in pending */
		bool have, in;          /* f valid; plan sought to pending[pend].first */
	} gc;
	struct kvw_range *pending; /* layer ranges asked by send calls, in order */
	uint32_t n_pending, cap_pending;
	struct kvw_cur {        /* the fragment cursor (cursor.h) */
		uint32_t layer, idx, pend; /* layer, block-list index, index in pending */
		uint64_t off;              /* bytes of the run at idx already cut */
	} cur;
	uint64_t bytes_posted;
	struct kvw_req *next_active, *prev_active;

	/* abort fence (seq.c, both roles): a failed request whose fence still
	 * runs keeps status INPROGRESS; fence_st is its final status, delivered
	 * when the fence is done (driver's kvw_core_fence_done, or ABORT_ACK)
	 * or when deadline_ns (now start + abort_timeout_ms) passes */
	bool fencing;
	kvw_status fence_st;
	/* send role: the fence waits for the driver's kvw_core_cancel_done
	 * (cancel answered INPROGRESS) and/or the receiver's ABORT_ACK */
	bool cancel_pending, ack_wait;

	/* fan-in (group.c): a part's events go to its group; a group has no
	 * endpoint, it counts its parts' layers and ends */
	struct kvw_req *group;  /* part: the fan-in request it belongs to */
	struct kvw_req **parts; /* group: its parts */
	uint32_t n_parts, parts_done;
	uint32_t *layer_parts;  /* group: parts that completed each layer */
	kvw_ctx *gctx;          /* group: the parts' context */
	kvw_status first_fail;  /* group: status of the first part that failed */
	bool quiet;             /* group: being torn down, no events */
};

/* ----------------------------------------------------------------- endpoint */
enum kvw_ep_state {
	KVW_EP_CONNECTING = 1, /* transport being set up */
	KVW_EP_HANDSHAKE,      /* HELLO/WELCOME/AUTH in flight */
	KVW_EP_READY,
	KVW_EP_FAILED,
	KVW_EP_CLOSED,
};

struct kvw_seqmap {          /* linear probing seq_id -> req; vals[i] != NULL = live */
	uint64_t *keys;
	kvw_req **vals;
	uint32_t cap, used;
};

struct kvw_tokens {          /* grant tokens: slot -> recv req (token.h) */
	kvw_req **slot;
	uint32_t *gen;           /* the slot's last random generation */
	uint32_t cap, hint;
};

#define KVW_ENDED_GRANTS 32

struct kvw_ep {
	kvw_ctx *ctx;
	kvw_drv *drv;
	kvw_listener *listener;   /* server side: who accepted it */
	enum kvw_ep_state state;
	kvw_status fail_status;
	bool is_server;
	bool accepted;            /* handed to the user by kvw_accept */
	bool authenticated;
	bool user_closed;
	uint32_t id, peer_id;
	uint64_t session;
	uint32_t rails;
	uint32_t peer_caps, caps;
	uint16_t peer_major, peer_minor;
	char uri[128];
	char secret[128];
	uint8_t nonce[KVW_WIRE_NONCE], peer_nonce[KVW_WIRE_NONCE]; /* with a secret: CPace shares */
	uint8_t auth_scalar[32];  /* our CPace scalar (wiped once used) */
	uint8_t sess_key[32];     /* CPace session key: key confirmation, rail joins */
	char peer_addr[64];       /* server side: tcp IP / shm uid, for per-address limits */
	uint64_t t_ready;         /* when the handshake finished */
	uint64_t hs_limit_ns;     /* kvw_connect's own handshake limit (0: the config's) */
	uint64_t t_start;
	uint64_t last_rx_ns, last_ping_ns, ping_cookie;
	uint64_t pong_cookie, last_rtt_ns;  /* last PONG seen */
	uint64_t last_check_ns;   /* last keepalive check (our own liveness) */
	bool transport_closed;    /* drv->ep_close done */
	bool zombie;              /* to be freed by the reap pass */
	char fail_why[160];
	kvw_counters cnt;

	struct kvw_seqmap recv_map, send_map;
	struct kvw_tokens tokens; /* live grants by token */
	kvw_req *active_head;     /* sends with bytes to post */
	kvw_req *reqs;            /* every request of this endpoint not yet freed */
	uint64_t next_deadline_ns;
	uint32_t rail_rr;
	bool pump_blocked;        /* the driver refused fragments: wait for its fd */
	uint32_t peer_grants;     /* peer GRANTs waiting for kvw_send_seq (max_peer_grants) */
	uint64_t peer_grant_bytes; /* their body bytes (max_peer_grant_bytes) */
	/* peer GRANTs that ended before kvw_send_seq came (aborted, timed out):
	 * that send fails at once instead of waiting for a GRANT till its deadline */
	struct kvw_ended_grant { uint64_t seq_id; kvw_status st; } ended[KVW_ENDED_GRANTS];
	uint32_t ended_next;

	/* ep_cache (transport/epcache.c): the client side's peer (scheme, host,
	 * port: the URI before '?') and whole URI, hashed with the context's key */
	uint8_t peer_key[16], uri_key[16];
	bool cached;              /* handed out by kvw_connect with ep_cache=1 */
	uint32_t refs;            /* callers holding it (cached: kvw_connect - kvw_ep_close) */
	uint64_t idle_since_ns;   /* cached and held by nobody since (0: held) */
	uint64_t peer_incarnation; /* the peer context's random id (handshake; 0: a 1.3 peer) */

	void *drv_priv;
	struct kvw_ep *next;
};

/* Failed authentications per peer address: the backoff of a listener. */
#define KVW_AUTHFAIL_SLOTS 32
struct kvw_authfail {
	char addr[64];
	uint32_t fails;
	uint64_t last_ns, until_ns;
};

struct kvw_listener {
	struct kvw_authfail authfail[KVW_AUTHFAIL_SLOTS];
	kvw_ctx *ctx;
	kvw_drv *drv;
	char uri[KVW_CORE_URI_MAX];
	char secret[128];
	unsigned rails;
	void *drv_priv;
	bool closed;
	struct kvw_listener *next;
};

/* ----------------------------------------------------------------- context */
struct kvw_ctx {
	struct kvw_cfgv cfg;
	kvw_config *config;      /* copy, for kvw_config_get via the CLI */
	char err[KVW_CORE_ERR_MAX];
	int epfd;
	bool no_pwait2;           /* the kernel lacks epoll_pwait2 (< 5.11) */
	kvw_drv drv[KVW_DRV_MAX];
	uint32_t next_mem_id, next_ep_id;
	uint64_t incarnation;     /* random, never 0: tells peers this context from an earlier one */
	uint8_t hash_key[16];     /* random key of the endpoint cache's URI hashes */
	kvw_mem *mems;
	kvw_ep *eps;
	kvw_listener *listeners;
	kvw_event *evq;
	uint32_t evq_head, evq_tail, evq_cap; /* ring, cap power of two */
	uint64_t next_timer_ns;
	bool in_progress;         /* inside kvw_progress: drivers may batch */
	void *stats;              /* stats endpoint (tools/kvwire stat) */
	kvw_log_fn log_fn;        /* NULL: stderr */
	void *log_user;
};

/* ------------------------------------------------------------ core helpers */
/* At the start of a public call: no stale sentence can be reported. ctx
 * NULL clears only the thread's context-less sentence. */
void kvw_err_clear(kvw_ctx *ctx);


/* driver registry */
kvw_status kvw_ctx_driver(kvw_ctx *ctx, const char *name, kvw_drv **out);

/* events */
void kvw_ev_push(kvw_ctx *ctx, const kvw_event *ev);

/* fan-in requests (group.c) */
/* A part completed layer (its share: bytes); the group's event when all have. */
void kvw_group_layer(kvw_req *part, uint32_t layer);
/* A part ended with st: the group ends when all have (the first failure
 * aborts the others). */
void kvw_group_part_done(kvw_req *part, kvw_status st);
/* Public calls on a group (kvw_req_abort, _set_timeout, _query, _free). */
kvw_status kvw_group_abort(kvw_req *g);
kvw_status kvw_group_set_timeout(kvw_req *g, uint64_t timeout_us);
kvw_status kvw_group_query(const kvw_req *g, kvw_req_info *info);
kvw_status kvw_group_free(kvw_req *g);
/* seq.c for group.c: starts failing a live request (ABORTED, fenced)
 * without waiting; frees a finished request. */
void kvw_req_abort_start(kvw_req *r);
void kvw_req_release(kvw_req *r);

/* endpoints: made by drivers, run by the core */
kvw_ep *kvw_ep_alloc(kvw_ctx *ctx, kvw_drv *drv, const char *uri);
void kvw_ep_free(kvw_ep *ep);

/* layouts */
uint8_t *kvw_layout_page(const kvw_layout *l, uint32_t layer, uint32_t block);

/* Hands a filled public struct (first member: uint32_t size) to a caller
 * whose struct says its own size: fields the caller does not know are left
 * out; fields it has that this version lacks stay as it set them. */
kvw_status kvw_struct_out(kvw_ctx *ctx, const char *fn, void *dst, const void *src, size_t full);


#endif
