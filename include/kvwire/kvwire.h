/* SPDX-License-Identifier: MIT */
/*
 * kvwire -- move paged LLM KV caches from prefill hosts to decode hosts.
 *
 * The whole public API. Plain C ABI; every call that can fail returns a
 * kvw_status (0 ok, 1 in progress, negative errors) and, on failure,
 * leaves a human sentence saying what to do in kvw_ctx_last_error().
 * Output arguments come last and are written only on success.
 *
 * Threading: a context and everything made from it is used from one thread
 * at a time. The library runs no hidden thread: the caller drives it with
 * kvw_progress()/kvw_poll() (or sleeps on kvw_ctx_fd()).
 */
#ifndef KVWIRE_KVWIRE_H
#define KVWIRE_KVWIRE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVW_VERSION_MAJOR 0
#define KVW_VERSION_MINOR 2
#define KVW_VERSION_STRING "0.2.0"

/* The library only exports what this header declares (a version script,
 * symbol version KVWIRE_0.2, everything else hidden). */
#if defined(KVW_BUILDING_LIBRARY) && defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* The version of the library actually loaded ("0.2.0"): bindings compare it
 * with the KVW_VERSION_STRING they were written for. */
const char *kvw_version(void);

/* ---------------------------------------------------------------- status */
typedef enum kvw_status {
	KVW_OK = 0,
	KVW_INPROGRESS = 1,
	KVW_ERR_INVALID = -1,     /* bad argument or state */
	KVW_ERR_NOMEM = -2,       /* out of memory or pool exhausted */
	KVW_ERR_UNSUPPORTED = -3, /* driver or build lacks the feature */
	KVW_ERR_TIMEDOUT = -4,    /* deadline passed, peer alive */
	KVW_ERR_PEER_DEAD = -5,   /* connection lost or keepalive expired */
	KVW_ERR_ABORTED = -6,     /* kvw_req_abort() by this side or the peer */
	KVW_ERR_REJECTED = -7,    /* descriptor outside the grant / registered memory */
	KVW_ERR_PROTO = -8,       /* malformed or unexpected frame */
	KVW_ERR_VERSION = -9,     /* protocol major version mismatch */
	KVW_ERR_AUTH = -10,       /* shared-secret authentication failed */
	KVW_ERR_BUSY = -11,       /* resource in use (seq id, memory in flight) */
	KVW_ERR_MEMLOCK = -12,    /* cannot pin memory: raise `ulimit -l` */
	KVW_ERR_IO = -13,         /* system call failed */
	KVW_ERR_CONNREFUSED = -14,/* nobody listens at the URI */
	KVW_ERR_NOT_FOUND = -15,  /* unknown driver, device or sequence */
	KVW_ERR_CLOSED = -16,     /* endpoint or listener already closed */
} kvw_status;

/* Short name of a status ("KVW_ERR_TIMEDOUT: deadline passed ..."). */
const char *kvw_strerror(kvw_status st);

/* ------------------------------------------------------------ opaque types */
typedef struct kvw_config kvw_config;
typedef struct kvw_ctx kvw_ctx;
typedef struct kvw_mem kvw_mem;
typedef struct kvw_layout kvw_layout;
typedef struct kvw_listener kvw_listener;
typedef struct kvw_ep kvw_ep;
typedef struct kvw_req kvw_req;

/* ----------------------------------------------------------------- config */
/* A table of options: name, default, help. kvw_config_create() starts from
 * the defaults and applies every KVW_<NAME> environment variable (upper
 * case, e.g. KVW_TIMEOUT_MS=5000). */
typedef struct kvw_config_entry {
	const char *name;
	const char *default_value;
	const char *help;
} kvw_config_entry;

/* The table; returns the number of entries. */
size_t kvw_config_table(const kvw_config_entry **table);
kvw_status kvw_config_create(kvw_config **cfg);
kvw_status kvw_config_set(kvw_config *cfg, const char *name, const char *value);
/* Copies the current value (NUL-terminated) into buf. */
kvw_status kvw_config_get(const kvw_config *cfg, const char *name, char *buf, size_t len);
void kvw_config_destroy(kvw_config *cfg);

/* ---------------------------------------------------------------- context */
/* cfg may be NULL (defaults + environment). The config is copied. */
kvw_status kvw_ctx_create(const kvw_config *cfg, kvw_ctx **ctx);
void kvw_ctx_destroy(kvw_ctx *ctx);
/* The sentence explaining the last failure in this context ("" if none);
 * every public call clears it when it starts, so it is always about the
 * latest failing call. ctx NULL: the calling thread's last failure of a
 * call that has no context (kvw_config_*, a failed kvw_ctx_create). */
const char *kvw_ctx_last_error(const kvw_ctx *ctx);
/* Where the library's log lines go: fn(user, level, line) for each line at
 * or below config log_level (1 errors, 2 warnings, 3 info, 4 debug; 0 =
 * none). Without a callback (fn NULL, the default) lines go to stderr. */
typedef void (*kvw_log_fn)(void *user, unsigned level, const char *line);
void kvw_ctx_set_log(kvw_ctx *ctx, kvw_log_fn fn, void *user);
/* An fd that becomes readable when kvw_progress() has work (epoll-able). */
int kvw_ctx_fd(const kvw_ctx *ctx);
/* Drives every driver, endpoint, timer. Never blocks. */
kvw_status kvw_progress(kvw_ctx *ctx);
/* Sleeps up to timeout_ms on the context fd (or until the next timer). */
kvw_status kvw_ctx_wait(kvw_ctx *ctx, int timeout_ms);

/* Names of the drivers built into this library, comma separated. */
const char *kvw_drivers_built(void);

/* ----------------------------------------------------------------- memory */
#define KVW_MEM_NO_PIN 0x1u /* do not mlock (tests; data may page out) */

/* Registers caller memory (pinned with mlock unless KVW_MEM_NO_PIN). */
kvw_status kvw_mem_reg(kvw_ctx *ctx, void *addr, size_t len, unsigned flags, kvw_mem **mem);
/* Allocates shareable (memfd-backed) memory with PROT_NONE guard pages on
 * both sides, and registers it. Needed by the shm driver on the send side. */
kvw_status kvw_mem_alloc(kvw_ctx *ctx, size_t len, unsigned flags, kvw_mem **mem);
/* KVW_ERR_BUSY while a request still uses it. Frees memory from kvw_mem_alloc. */
kvw_status kvw_mem_dereg(kvw_mem *mem);
void *kvw_mem_addr(const kvw_mem *mem);
size_t kvw_mem_len(const kvw_mem *mem);
/* Nanoseconds that registration took (pinning + every driver). */
uint64_t kvw_mem_reg_ns(const kvw_mem *mem);

/* ----------------------------------------------------------------- layout */
/* Page (layer l, block b) lives at
 *     mem + layer_offset(l) + b * block_stride, block_bytes long,
 * where layer_offset(l) = layer_offsets[l] if given, else
 * base_offset + l * layer_stride. K and V may be separate layers. */
typedef struct kvw_layout_desc {
	uint32_t n_layers;
	uint32_t n_blocks;     /* blocks per layer */
	uint64_t block_bytes;
	uint64_t block_stride; /* >= block_bytes */
	uint64_t base_offset;
	uint64_t layer_stride;
	const uint64_t *layer_offsets; /* n_layers entries or NULL */
} kvw_layout_desc;

#define KVW_MAX_LAYERS 1024u
#define KVW_MAX_BLOCKS_PER_SEQ 262144u

/* KVW_ERR_REJECTED when a page would fall outside the registered memory. */
kvw_status kvw_layout_create(kvw_mem *mem, const kvw_layout_desc *desc, kvw_layout **layout);
void kvw_layout_destroy(kvw_layout *layout);
/* Number of contiguous memory runs the block list makes in one layer
 * (what the library moves as single fragments). */
size_t kvw_layout_runs(const kvw_layout *layout, const uint32_t *blocks, size_t n);

/* --------------------------------------------------------------- geometry */
/* Where each element of a KV cache lives: the model both sides describe so
 * that a prefill engine and a decode engine with different layouts (block
 * size, NHD/HND, K/V interleaved or separate, tensor-parallel head split)
 * can exchange pages. The unit is one head of one token of K or V (or of
 * the MLA latent) in one layer: head_dim * elem_bytes contiguous bytes. Its
 * byte offset in the arena, for token t of the sequence (block table entry
 * blocks[t / block_tokens], slot i = t % block_tokens) and head h, is
 *
 *     kv_base(layer, kv) + blocks[t / block_tokens] * block_stride
 *                        + i * token_stride + (h - h0) * head_stride
 *
 *     kv_base(layer, kv) = kv_offsets[layer * n_kv + kv]           if given,
 *                        = base_offset + layer * layer_stride + kv * kv_stride.
 *
 * kv_stride smaller than block_stride puts K and V inside one block
 * (interleaved, FlashInfer); larger puts them in separate regions (vLLM's
 * [2, num_blocks, ...] per layer). This side holds heads [h0, h1) of
 * num_heads (tensor parallelism: TP=4 over 8 KV heads holds 2 per rank).
 * MLA: n_kv 1, num_heads 1, head_dim the latent width. Inside a block the
 * strides must nest without overlap (each dimension fits in the stride of
 * the one above) and layers and separate K/V regions may not overlap
 * (kv_offsets, when given, are trusted not to); docs/ARCHITECTURE.md writes out vLLM, FlashInfer, SGLang
 * and MLA as example geometries. */
typedef struct kvw_geom {
	uint32_t size;          /* sizeof(kvw_geom), set by the caller */
	uint32_t n_layers;
	uint32_t n_kv;          /* 2: K and V; 1: one latent (MLA) */
	uint32_t n_blocks;      /* blocks per layer in the arena */
	uint32_t block_tokens;  /* tokens per block: 16, 32, 64, 128, ... */
	uint32_t elem_bytes;    /* 2 for bf16/fp16, 1 for fp8 */
	uint32_t head_dim;      /* elements per head per token */
	uint32_t num_heads;     /* KV heads of the whole model */
	uint32_t h0, h1;        /* the heads [h0, h1) held here */
	uint64_t token_stride;  /* bytes between tokens of a block */
	uint64_t head_stride;   /* bytes between held heads of a token */
	uint64_t kv_stride;     /* bytes from K to V */
	uint64_t block_stride;  /* bytes between blocks b and b + 1 */
	uint64_t base_offset;   /* arena offset of layer 0's K */
	uint64_t layer_stride;  /* bytes between layers */
	const uint64_t *kv_offsets; /* n_layers * n_kv bases, or NULL */
} kvw_geom;

typedef enum kvw_geom_kind {
	/* per layer [2][n_blocks][block_tokens][heads][head_dim]: vLLM flash-attn */
	KVW_GEOM_NHD = 1,
	/* per layer [2][n_blocks][heads][block_tokens][head_dim]: head-major (NIXL) */
	KVW_GEOM_HND = 2,
	/* per layer [n_blocks][2][block_tokens][heads][head_dim]: FlashInfer */
	KVW_GEOM_NHD_KV_BLOCK = 3,
	/* per layer [n_blocks][2][heads][block_tokens][head_dim] */
	KVW_GEOM_HND_KV_BLOCK = 4,
	/* per layer [n_blocks][block_tokens][head_dim]: one latent, MLA */
	KVW_GEOM_MLA = 5,
} kvw_geom_kind;

/* Fills the strides of g for a common layout from the shape fields the
 * caller set (size, n_layers, n_blocks, block_tokens, elem_bytes, head_dim,
 * num_heads, h0, h1; base_offset is kept; h1 0 means all heads). Layers
 * follow each other packed; set layer_stride or kv_offsets afterwards for
 * anything else. g is left unchanged on failure. */
kvw_status kvw_geom_init(kvw_geom_kind kind, kvw_geom *g);
/* The simple layout as a geometry: one "head" of block_bytes per block and
 * layer, one token per block (what kvw_layout_create describes). */
kvw_status kvw_geom_from_layout(const kvw_layout_desc *d, kvw_geom *g);

/* A layout made from a geometry (checked against the arena with the same
 * rules as above; KVW_ERR_REJECTED when a unit falls outside the registered
 * memory, KVW_ERR_INVALID when the geometry is unsound). It is used like
 * any layout with kvw_recv_seq/kvw_send_seq and their _range variants:
 * blocks are the sequence's block table (entry j holds tokens
 * [j * block_tokens, (j + 1) * block_tokens)). The two sides may use
 * different geometries of the same model (block tokens, NHD/HND, K/V
 * interleaved or separate, held heads); only n_layers, n_kv, num_heads,
 * head_dim and elem_bytes must agree, else the send ends KVW_ERR_REJECTED
 * with the reason. kv_offsets is copied. Needs a peer speaking wire 1.2. */
kvw_status kvw_layout_create_geom(kvw_mem *mem, const kvw_geom *g, kvw_layout **layout);

/* ---------------------------------------------------------------- endpoints */
/* URIs: tcp://HOST:PORT, shm:///path/to/socket, rdma://IP:PORT, dpdk://IP:PORT.
 * Query parameters override config per endpoint: ?rails=4&secret=... */
kvw_status kvw_listen(kvw_ctx *ctx, const char *uri, kvw_listener **l);
/* The bound URI (port 0 resolved to the real port). */
const char *kvw_listener_uri(const kvw_listener *l);
/* Waits up to timeout_ms (0 = do not wait, -1 = forever) for a peer that has
 * completed the handshake. KVW_INPROGRESS when none came in time. */
kvw_status kvw_accept(kvw_listener *l, int timeout_ms, kvw_ep **ep);
void kvw_listener_close(kvw_listener *l);
/* Connects and completes the handshake, driving progress meanwhile
 * (timeout_ms -1 = the config's connect_timeout_ms). */
kvw_status kvw_connect(kvw_ctx *ctx, const char *uri, int timeout_ms, kvw_ep **ep);
/* Non-blocking variant: returns the endpoint at once; kvw_ep_status() says
 * KVW_INPROGRESS until the handshake is done, then KVW_OK or the failure.
 * Use it when both sides share one thread but not one context. */
kvw_status kvw_connect_start(kvw_ctx *ctx, const char *uri, kvw_ep **ep);
/* Fails every outstanding request of the endpoint with ABORTED and closes it.
 * With config ep_cache=1, kvw_connect/kvw_connect_start to a URI that has a
 * live endpoint (READY, or still in its handshake: concurrent first connects
 * share one handshake) return that endpoint with one more reference, and
 * kvw_ep_close drops one: the endpoint closes at the last, or, when it is
 * READY with nothing in flight, waits ep_idle_close_ms for the next
 * kvw_connect to the same URI. A failed endpoint is never handed out again.
 * Endpoints to a peer fail PEER_DEAD as soon as a new endpoint to it meets
 * a new incarnation of the peer (it restarted). */
void kvw_ep_close(kvw_ep *ep);
/* KVW_OK while usable, KVW_INPROGRESS while connecting, else why not
 * (PEER_DEAD, PROTO, AUTH, VERSION, ...). */
kvw_status kvw_ep_status(const kvw_ep *ep);

#define KVW_MAX_RAILS 16u

/* Structs the caller allocates start with `size`: set it to sizeof the
 * struct before the call (e.g. kvw_ep_info in = {.size = sizeof(in)}). The
 * library fills only what fits, so a struct can grow in a later version
 * without breaking programs built against this one; size 0 is refused. */
typedef struct kvw_ep_info {
	uint32_t size;          /* sizeof(kvw_ep_info), set by the caller */
	char driver[16];
	char peer_uri[128];
	uint16_t peer_version_major, peer_version_minor;
	uint32_t caps;          /* KVW_CAP_* negotiated */
	uint32_t rails;
	uint64_t id;            /* local endpoint id */
	int authenticated;
	/* added with wire 1.4 (a caller's older, smaller struct gets none of these) */
	uint32_t refs;          /* callers holding it: >1 when config ep_cache shares it */
	uint64_t peer_incarnation; /* the peer context's random id, new at each of its
	                         * starts (0: a peer older than wire 1.4) */
	/* what the endpoint holds now (as `kvwire stat` "resources"): fds and
	 * QPs (libfabric: RDM endpoints) of the driver, bytes of the core's
	 * tables and the driver's rings, reserved (mapped rings count whole) */
	uint32_t res_fds, res_qps;
	uint64_t res_bytes;
} kvw_ep_info;
kvw_status kvw_ep_query(const kvw_ep *ep, kvw_ep_info *info);

#define KVW_CAP_ZERO_COPY_TX 0x1u /* no CPU copy on the send side */
#define KVW_CAP_ONE_SIDED 0x2u    /* writes land without receiver CPU */
#define KVW_CAP_MULTI_RAIL 0x4u
#define KVW_CAP_RELIABLE_SW 0x8u  /* reliability implemented by kvwire */
#define KVW_CAP_AUTH 0x10u
#define KVW_CAP_SAME_HOST 0x20u

typedef struct kvw_rail_counters {
	uint64_t bytes_tx, bytes_rx, frags_tx, frags_rx, errors;
} kvw_rail_counters;

typedef struct kvw_counters {
	uint32_t size;                   /* sizeof(kvw_counters), set by the caller */
	uint64_t bytes_tx, bytes_rx;     /* payload bytes */
	uint64_t frags_tx, frags_rx;     /* data fragments */
	uint64_t frames_tx, frames_rx;   /* control frames */
	uint64_t seqs_ok, seqs_failed;
	uint64_t rejected;               /* descriptors refused */
	uint64_t bad_frames;             /* malformed frames dropped */
	uint64_t retransmits, drops, dups, out_of_order;
	uint64_t keepalives_tx, keepalives_rx;
	uint64_t rtt_us;                 /* smoothed keepalive / transport RTT */
	uint32_t rails;
	kvw_rail_counters rail[KVW_MAX_RAILS];
	/* remote memory accesses a NIC refused (rdma): writes of ours the
	 * peer's NIC refused, and the peer's accesses our NIC refused */
	uint64_t remote_refused;
} kvw_counters;
kvw_status kvw_ep_counters(const kvw_ep *ep, kvw_counters *out);
/* One keepalive round trip (PING/PONG) through the control path, driving
 * progress while waiting; *rtt_ns is the measured round-trip time. */
kvw_status kvw_ep_ping(kvw_ep *ep, int timeout_ms, uint64_t *rtt_ns);

/* ---------------------------------------------------------------- sequences */
#define KVW_SEND_LAST 0x1u /* this call holds the sequence's last layers */

/* Decode side: allow the peer to write exactly these blocks (all layers of
 * the layout) for seq_id. timeout_us 0 = the config's timeout_ms. */
kvw_status kvw_recv_seq(kvw_ep *ep, uint64_t seq_id, const kvw_layout *layout,
			const uint32_t *blocks, size_t n, uint64_t timeout_us, kvw_req **req);
/* Prefill side: send layers [first_layer, end_layer) of these blocks. Call
 * once per layer or chunk; the first call creates the request, later calls
 * for the same seq_id return the same request. n and the layout's block
 * bytes must match the peer's grant (when either side's layout comes from
 * kvw_layout_create_geom, the two geometries are joined instead: a block
 * table of any length that covers the granted tokens). A first call for a grant that already
 * reached this side and ended there (the receiver aborted it, or it timed
 * out; the last 32 such are remembered per endpoint) fails at once with
 * that status and sends nothing, instead of waiting for a GRANT. */
kvw_status kvw_send_seq(kvw_ep *ep, uint64_t seq_id, const kvw_layout *layout,
			const uint32_t *blocks, size_t n, uint32_t first_layer,
			uint32_t end_layer, unsigned flags, kvw_req **req);
/* Which tokens and heads a sequence covers, for layouts made with
 * kvw_layout_create_geom. Zeroes mean "all": t1 0 = every token the block
 * table holds, h1 0 = every head the layout holds.
 *  - decode side (kvw_recv_seq_range): the grant is tokens [t0, t1) (t0 > 0:
 *    a prefix already cached here; t1 may end mid-block) and heads [h0, h1)
 *    of the ones the layout holds. The sequence completes, and each layer's
 *    KVW_EV_LAYER fires, when every granted byte landed, each counted once.
 *    Tensor parallelism: a decode rank holding a head range grants it (one
 *    prefill sender feeds several decode ranks: fan-out); several prefill
 *    senders fill one decode rank by one grant each, on each sender's
 *    endpoint, narrowed to the heads that sender holds — or by one request
 *    over all of them (kvw_recv_seq_fanin).
 *  - prefill side (kvw_send_seq_range): the tokens [t0, t1) this side holds
 *    in its block table; the grant's tokens and heads must lie inside them
 *    and inside the heads its layout holds, else the send ends
 *    KVW_ERR_REJECTED saying which.
 * Set size to sizeof(kvw_seq_range); NULL = all. */
typedef struct kvw_seq_range {
	uint32_t size;       /* sizeof(kvw_seq_range), set by the caller */
	uint32_t h0, h1;     /* heads [h0, h1) (0, 0: all the layout holds) */
	uint32_t rsvd;       /* 0 */
	uint64_t t0, t1;     /* tokens [t0, t1) (t1 0: all the block table holds) */
} kvw_seq_range;

/* kvw_recv_seq for a token and head range (a layout from
 * kvw_layout_create_geom; KVW_ERR_INVALID for other layouts with a range). */
kvw_status kvw_recv_seq_range(kvw_ep *ep, uint64_t seq_id, const kvw_layout *layout,
			      const uint32_t *blocks, size_t n, const kvw_seq_range *range,
			      uint64_t timeout_us, kvw_req **req);
/* Tensor-parallel fan-in as one request: one decode grant filled by n_eps
 * prefill senders, sender i over eps[i] writing ranges[i] (its heads, or its
 * tokens) of the same blocks. The ranges must not overlap (each granted
 * byte has one writer) and the layout must come from kvw_layout_create_geom.
 * Each endpoint's peer sees an ordinary GRANT narrowed to its range; the
 * returned request stands for all of them: KVW_EV_LAYER fires for a layer
 * once every sender's part of it landed (bytes: the whole layer), KVW_EV_SEQ
 * once all did, or once one failed (its status; the other grants are then
 * aborted and fenced first, so nothing lands after the event). Events of a
 * fan-in request carry ep = NULL. kvw_req_abort, kvw_req_set_timeout,
 * kvw_req_query (bytes summed) and kvw_req_free act on every part. All
 * endpoints must belong to one context; 1..64 of them. */
kvw_status kvw_recv_seq_fanin(kvw_ep *const *eps, size_t n_eps, uint64_t seq_id,
			      const kvw_layout *layout, const uint32_t *blocks, size_t n,
			      const kvw_seq_range *ranges, uint64_t timeout_us, kvw_req **req);
/* kvw_send_seq with the tokens this side holds; later calls for the same
 * seq_id may use kvw_send_seq (the range of the first call stays). */
kvw_status kvw_send_seq_range(kvw_ep *ep, uint64_t seq_id, const kvw_layout *layout,
			      const uint32_t *blocks, size_t n, const kvw_seq_range *range,
			      uint32_t first_layer, uint32_t end_layer, unsigned flags,
			      kvw_req **req);
/* Stops the request. When this returns, no byte of it lands in the receiver's
 * memory any more and this side's pages may be reused at once. */
kvw_status kvw_req_abort(kvw_req *req);
/* KVW_INPROGRESS while running, else the final status. */
kvw_status kvw_req_status(const kvw_req *req);
kvw_status kvw_req_set_timeout(kvw_req *req, uint64_t timeout_us);
void kvw_req_set_user_data(kvw_req *req, void *user_data);
/* Releases a finished request (KVW_ERR_BUSY if still running). */
kvw_status kvw_req_free(kvw_req *req);

typedef struct kvw_req_info {
	uint32_t size;         /* sizeof(kvw_req_info), set by the caller */
	uint64_t seq_id;
	int is_send;
	kvw_status status;
	uint64_t bytes;        /* bytes landed (recv) / confirmed landed (send) */
	uint64_t bytes_total;  /* bytes the sequence holds */
	uint32_t n_layers, layers_done;
	/* timeline, CLOCK_MONOTONIC ns, 0 = not yet */
	uint64_t t_posted, t_matched, t_first_byte, t_last_byte, t_completed;
} kvw_req_info;
kvw_status kvw_req_query(const kvw_req *req, kvw_req_info *info);

/* ------------------------------------------------------------------ events */
typedef enum kvw_event_type {
	KVW_EV_LAYER = 1, /* one layer of a sequence landed */
	KVW_EV_SEQ = 2,   /* the request finished (status says how) */
} kvw_event_type;

typedef struct kvw_event {
	kvw_event_type type;
	kvw_status status;
	kvw_req *req;
	kvw_ep *ep;
	void *user_data;
	uint64_t seq_id;
	uint32_t layer;   /* KVW_EV_LAYER */
	uint64_t bytes;   /* bytes of the layer / the sequence */
} kvw_event;

/* Drives progress, then hands out up to max queued events. Returns the
 * number of events (>= 0) or a negative kvw_status. */
int kvw_poll(kvw_ctx *ctx, kvw_event *events, int max);
/* kvw_poll that, while nothing is ready, spins for the config's spin_us and
 * then sleeps on the context fd, up to timeout_ms in all (-1 = until an
 * event). Returns like kvw_poll (0 = timed out). On a machine with fewer
 * free cores than busy processes, sleeping beats spinning by far. */
int kvw_poll_wait(kvw_ctx *ctx, kvw_event *events, int max, int timeout_ms);

#if defined(KVW_BUILDING_LIBRARY) && defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* KVWIRE_KVWIRE_H */
