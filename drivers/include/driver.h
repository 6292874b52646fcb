/* SPDX-License-Identifier: MIT */
/*
 * The driver interface: one ops table per driver (drivers/<name>/).
 *
 * The core owns the protocol (handshake, grants, completion, deadlines,
 * keepalive, abort) and speaks it in frames (wire.h). A driver owns the
 * transport: it connects, carries control frames reliably and in order,
 * and moves data fragments. Ops a driver leaves NULL are filled at
 * registration (drivers.c), so the core never calls through NULL: listen,
 * connect, join, open_rails and send_ctrl then answer KVW_ERR_UNSUPPORTED
 * with a sentence; close, mem_reg, mem_dereg, progress, listener_close,
 * ep_close, cancel, revoke, grant_keys, grant_done and flush do nothing (and succeed);
 * query_caps reports 1 rail and 1 MiB fragments; prepare_wait says "no
 * work". open, send_ctrl and post_frags are required.
 *
 * Life of a connection
 *   client: core calls ops->connect(); once the transport is up the driver
 *           calls kvw_core_ep_up(ep); the core then sends HELLO.
 *   server: the driver accepts a transport connection and calls
 *           kvw_core_ep_accepted(listener) to get a new ep in HANDSHAKE.
 *   both:   every control frame the driver receives goes to
 *           kvw_core_on_frame(); DATA/DESC payloads are placed by the driver
 *           after kvw_core_dst() approved them, then kvw_core_landed().
 *           A lost transport is reported with kvw_ep_fail(ep, PEER_DEAD, ...).
 */
#ifndef KVW_DRIVER_H
#define KVW_DRIVER_H

#include "kvwire/kvwire.h"
#include "wire.h"
#include "cfgv.h"
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <time.h>

#define KVW_DRV_MAX 8

struct kvw_uri;
struct kvw_wire_hdr;
struct kvw_wire_data;
struct kvw_wire_hello;
struct kvw_cfgv;
struct kvw_cfg_opt;
struct kvw_probe_entry;
struct kvw_ep_res;

typedef struct kvw_drv kvw_drv;

/* One data fragment for ops->post_frags: bytes to move from the sender's
 * pages into the receiver's granted blocks. The receiver-side location is
 * named twice: by (token, layer, blk_idx, blk_off), which two-sided drivers
 * put on the wire and the receiver checks, and by dst_addr/rkey, which
 * one-sided drivers (rdma) write to directly. A gathered fragment
 * (piece > 0; only to drivers whose caps say max_gather > 1, at most that
 * many pieces) is contiguous at the receiver but not at the sender: its
 * bytes are bytes / piece pieces of piece bytes, piece i at
 * src + i * src_stride (src_off likewise). */
typedef struct kvw_frag {
	uint32_t token, layer, blk_idx, bytes;
	uint64_t blk_off;
	uint32_t piece;         /* 0: bytes contiguous at src */
	uint64_t src_stride;
	const uint8_t *src;
	const kvw_mem *src_mem;
	uint64_t src_off;       /* src - src_mem->addr */
	uint64_t dst_addr;      /* receiver's virtual address (one-sided) */
	uint32_t rkey;
	uint32_t rail;          /* the core's striping choice (bytes round robin) */
	kvw_req *req;           /* sender request, for driver bookkeeping */
} kvw_frag;

struct kvw_caps_info {
	uint32_t caps;          /* KVW_CAP_* */
	uint32_t max_rails;
	uint64_t max_frag;      /* largest fragment the driver accepts */
	uint32_t max_gather;    /* source pieces a fragment may gather (0, 1: none) */
	uint32_t poll_us;       /* > 0: no fd wakes this driver (dpdk); kvw_ctx_wait
				 * sleeps at most this long while it is open */
};

struct kvw_driver_ops {
	const char *name;
	/* context-wide */
	kvw_status (*open)(kvw_drv *d);
	void (*close)(kvw_drv *d);
	kvw_status (*query_caps)(kvw_drv *d, struct kvw_caps_info *ci);
	kvw_status (*mem_reg)(kvw_drv *d, kvw_mem *m);
	void (*mem_dereg)(kvw_drv *d, kvw_mem *m);
	kvw_status (*progress)(kvw_drv *d);
	/* connections */
	kvw_status (*listen)(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u);
	void (*listener_close)(kvw_listener *l);
	kvw_status (*connect)(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u);
	/* server side: a HELLO with KVW_HELLO_JOIN arrived on `extra`; move its
	 * transport into `ep` as rail rail_idx. The core frees `extra` after. */
	kvw_status (*join)(kvw_ep *ep, kvw_ep *extra, uint32_t rail_idx);
	/* client side: after READY, open the extra rails (HELLO JOIN each). */
	kvw_status (*open_rails)(kvw_ep *ep);
	void (*ep_close)(kvw_ep *ep);
	/* data path */
	/* Queues one whole frame (header + body); the driver copies it. */
	kvw_status (*send_ctrl)(kvw_ep *ep, const void *frame, size_t len);
	/* Takes up to n fragments; returns how many it took (0 = full now). */
	size_t (*post_frags)(kvw_ep *ep, const kvw_frag *f, size_t n);
	/* Sender abort: forget queued fragments of req. Called inside
	 * kvw_progress too, so it never waits. KVW_OK: the driver reads none of
	 * req's source pages again. KVW_INPROGRESS: work it posted may still
	 * read them (rdma: writes on the NIC); once that completed the driver
	 * calls kvw_core_cancel_done(ep, seq_id of req), and the request's final
	 * event follows only then (the core cuts the endpoint if that takes
	 * longer than abort_timeout_ms). */
	kvw_status (*cancel)(kvw_ep *ep, kvw_req *req);
	/* Receiver fence for one-sided drivers, called inside kvw_progress too
	 * (a deadline), so it never waits: it starts the fence and returns.
	 * KVW_OK: the fence holds already (no write of this grant can land any
	 * more). KVW_INPROGRESS: started; once no write of the grant can land
	 * (rdma: the sender's FENCE_ACK seen, keys invalidated) the driver calls
	 * kvw_core_fence_done(ep, req), and the request's final event follows
	 * only then. A driver that never reports (peer dead) is cut short at
	 * abort_timeout_ms by the core, which then calls grant_done. Two-sided
	 * drivers leave it NULL: the core's token check already refuses late
	 * fragments. */
	kvw_status (*revoke)(kvw_ep *ep, kvw_req *req);
	/* A GRANT for req is about to leave (body: the GRANT body the core
	 * built, len bytes, wire.h): one-sided drivers make its remote keys
	 * (and may queue frames of their own ahead of it) and set *mem_key,
	 * which the GRANT carries. An error fails the grant. Two-sided drivers
	 * leave it NULL (mem_key stays 0). */
	kvw_status (*grant_keys)(kvw_ep *ep, kvw_req *req, const void *body, size_t len,
				 uint32_t *mem_key);
	/* A receive request ended (any status, after revoke when it failed, and
	 * after its fence): per-grant resources (keys, windows) may go; a fence
	 * still pending for req is forgotten (no kvw_core_fence_done after). */
	void (*grant_done)(kvw_ep *ep, kvw_req *req);
	/* End of a kvw_progress pass: push out what the pass queued (drivers
	 * that batch frames; see kvw_core_batching). */
	void (*flush)(kvw_drv *d);
	/* kvw_ctx_wait is about to sleep on the context fd: arm whatever makes
	 * the driver's fds readable on new work (e.g. CQ notification), so busy
	 * passes never pay for it. true = work arrived meanwhile: do not sleep. */
	bool (*prepare_wait)(kvw_drv *d);
	/* What the driver holds for ep, for `kvwire stat` and the bounds on idle
	 * endpoints (issue 16): file descriptors, bytes of its own per-endpoint
	 * state and buffers, queue pairs. Adds to *res (the core's share is
	 * there already). NULL: the driver holds nothing it could count. */
	void (*ep_resources)(const kvw_ep *ep, struct kvw_ep_res *res);
	/* The driver's own config options ({NULL}-terminated, names prefixed by
	 * the driver's name; may be NULL). The config API serves them with the
	 * core's (config.c): set/get by name, KVW_<NAME>, `kvwire config`. */
	const struct kvw_cfg_opt *cfg_opts;
	/* Lists this host's devices of the driver and whether the driver can use
	 * each, by the same rule open() applies (no context needed; cfg: the
	 * options in force). Fills up to cap entries, sets *n to the number
	 * found (may exceed cap). May be NULL: the tools then try a listener. */
	kvw_status (*probe)(const struct kvw_cfgv *cfg, struct kvw_probe_entry *out, size_t cap,
			    size_t *n);
};

/* One config option. The parsed value lands in struct kvw_cfgv at off
 * (size bytes): U64 an unsigned integer in [lo, hi] (field of 4 or 8
 * bytes), INT -1 or [lo, hi] (int), STR a string (char[size]), ENUM the
 * index of the value in names[] (int; the driver's enum names them). */
enum kvw_cfg_kind { KVW_CFG_U64, KVW_CFG_INT, KVW_CFG_STR, KVW_CFG_ENUM };
struct kvw_cfg_opt {
	const char *name, *default_value, *help;
	enum kvw_cfg_kind kind;
	uint64_t lo, hi;
	const char *const *names;       /* ENUM: NULL-terminated */
	size_t off, size;
};

/* Resources held for one endpoint (ops->ep_resources). */
struct kvw_ep_res {
	uint32_t fds, qps;
	uint64_t bytes;
};

/* One device as ops->probe sees it. */
struct kvw_probe_entry {
	char name[64];          /* e.g. "rxe0 port 1" */
	bool usable;
	bool by_config;         /* not usable only because the config leaves it out */
	char reason[256];       /* a sentence: why (not), and what to do */
	char details[256];      /* e.g. "gid 1 10.0.2.15, mtu 1024, keys mr" */
};

struct kvw_drv {
	const struct kvw_driver_ops *ops; /* == &filled once open */
	struct kvw_driver_ops filled;     /* the driver's table, NULLs stubbed */
	kvw_ctx *ctx;
	void *priv;
	int idx;
	bool open;
	struct kvw_caps_info caps;
};

/* Every built driver's ops table (NULL-terminated), from drivers.c. */
extern const struct kvw_driver_ops *const kvw_driver_table[];

/* ----------------------------------------------------- core, for drivers */
/* Drivers see kvw_ctx, kvw_ep, kvw_listener, kvw_mem and kvw_req only as
 * opaque handles (their structs live in transport/kvw_int.h, which no
 * driver can include: drivers are compiled without transport/ on their
 * include path). Everything a driver needs of them is below. */
#define KVW_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t kvw_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}


/* Records the sentence for kvw_ctx_last_error() and returns st (ctx NULL:
 * the calling thread's sentence, kvw_ctx_last_error(NULL)). */
kvw_status kvw_set_err(kvw_ctx *ctx, kvw_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void kvw_log(kvw_ctx *ctx, unsigned level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* URIs */
struct kvw_uri {
	char scheme[16];
	char host[128];         /* host or path (shm) */
	char path[160];
	unsigned port;
	char query[512];        /* raw "a=b&c=d" */
};
kvw_status kvw_uri_parse(const char *s, struct kvw_uri *u);
/* Looks up a query parameter; copies its value; false when absent. */
bool kvw_uri_param(const struct kvw_uri *u, const char *key, char *buf, size_t len);
/* URI with every secret= value replaced by "***" (always terminated). */
void kvw_uri_redact(const char *uri, char *out, size_t len);
/* Fails the endpoint (every request ends with st); why is the sentence. */
void kvw_ep_fail(kvw_ep *ep, kvw_status st, const char *why);

/* With a secret, once READY: the 32-byte session key both ends derived in
 * the handshake (CPace, never sent), for a driver's per-frame MACs. false
 * without a secret or before READY. */
bool kvw_core_ep_session_key(const kvw_ep *ep, uint8_t key[32]);
/* Client transport is up: the core sends HELLO. */
void kvw_core_ep_up(kvw_ep *ep);
/* Server transport accepted: a new endpoint waiting for HELLO. */
kvw_ep *kvw_core_ep_accepted(kvw_listener *l);
/* The same, naming the peer's address (tcp: its IP, shm: "uid:N"; "" if
 * unknown) for the per-address limits and the authentication backoff. */
kvw_ep *kvw_core_ep_accepted_from(kvw_listener *l, const char *peer_addr);
/* Once the transport of an accepted endpoint can send: applies the
 * listener's limits on connections in the handshake (max_handshakes, lowered
 * to a quarter of the fd limit; max_handshakes_per_addr). Over a limit the
 * oldest connection that sent nothing (else the same address's oldest) is
 * dropped with a REJECT, or this one is, when none can go. */
void kvw_core_ep_admit(kvw_ep *ep);
/* A whole control frame arrived (header already checked by the driver with
 * kvw_wire_check_hdr; body is hdr->len bytes). The core checks the body.
 * Returns KVW_OK, or an error after which the endpoint has failed. */
kvw_status kvw_core_on_frame(kvw_ep *ep, const struct kvw_wire_hdr *h, const void *body);
/* Where may `d->bytes` of payload for this fragment go? On KVW_OK *dst is
 * inside the granted blocks. KVW_ERR_ABORTED: the grant is gone (aborted,
 * timed out) or the fragment's layer already completed: read and discard
 * the payload. KVW_ERR_REJECTED: the fragment
 * lies outside its grant; the request has been failed; discard the payload. */
kvw_status kvw_core_dst(kvw_ep *ep, const struct kvw_wire_data *d, uint8_t **dst);
/* Is the grant behind this token still live? A driver that places one
 * fragment's payload over several reads checks before each read and
 * discards the rest once it is not (abort fence). */
bool kvw_core_token_live(kvw_ep *ep, uint32_t token);
/* The arena a live grant's blocks lie in (NULL if the token is not live). */
kvw_mem *kvw_core_grant_mem(kvw_ep *ep, uint32_t token);
/* Fails the request behind token with REJECTED (a descriptor whose source
 * or destination lies outside what was registered/granted). */
void kvw_core_token_reject(kvw_ep *ep, uint32_t token, const char *what);
/* Payload of a fragment approved by kvw_core_dst is in place (d: the same
 * descriptor). Each granted byte counts once: a duplicate completes nothing. */
void kvw_core_landed(kvw_ep *ep, const struct kvw_wire_data *d);
/* Fails one request (tells the peer), e.g. when its memory cannot be used
 * by this driver; why goes to kvw_ctx_last_error. */
void kvw_core_req_fail(kvw_req *r, kvw_status st, const char *why);
/* Bad frame seen on the transport (counted; the driver decides to drop it
 * or to fail the endpoint). */
void kvw_core_bad_frame(kvw_ep *ep, const char *why);
/* A frame that must not be: during the handshake the core answers REJECT
 * (st, why) and fails the endpoint; afterwards it fails the endpoint. */
void kvw_core_reject(kvw_ep *ep, kvw_status st, const char *why);
/* Builds the HELLO frame (header + body) by which an extra rail joins the
 * session of a READY client endpoint; returns its length (<= 96 bytes). */
size_t kvw_core_hello_join(kvw_ep *ep, uint32_t rail_idx, void *buf);
/* Registers an fd with the context's epoll set so kvw_ctx_fd() wakes. */
kvw_status kvw_core_watch_fd(kvw_ctx *ctx, int fd, bool want_write);
void kvw_core_unwatch_fd(kvw_ctx *ctx, int fd);
/* True inside kvw_progress: frames queued now are flushed by ops->flush at
 * the end of the pass, so a driver may batch instead of writing each one. */
bool kvw_core_batching(const kvw_ctx *ctx);
/* ------------------------------------------------------ abort fence (issue 11) */
/* The fence ops->revoke started for req (it answered KVW_INPROGRESS) holds:
 * no write of that grant can land any more. The request then ends with the
 * status it failed with (event, grant_done). Ignored for a request whose
 * fence is not pending; never call it after grant_done(ep, req). */
void kvw_core_fence_done(kvw_ep *ep, kvw_req *req);
/* The work ops->cancel left in flight for the send request seq_id (it
 * answered KVW_INPROGRESS) completed: no source page of it is read any
 * more. Ignored when no such cancel is pending (the request ended
 * meanwhile, e.g. its endpoint failed). */
void kvw_core_cancel_done(kvw_ep *ep, uint64_t seq_id);
/* ------------------------------------------------- end of abort fence block */
/* Config of a context (drivers read their knobs here). */
const struct kvw_cfgv *kvw_core_cfg(const kvw_ctx *ctx);

/* Longest sentence kvw_ctx_last_error keeps (with its terminator). */
#define KVW_CORE_ERR_MAX 512

/* Accessors (no locks, no syscalls: safe on the data path). */
/* The endpoint can still carry frames: neither failed nor closed. */
bool kvw_core_ep_alive(const kvw_ep *ep);
/* The handshake finished (READY): data frames are allowed. */
bool kvw_core_ep_ready(const kvw_ep *ep);
/* Failed (kvw_ep_fail): a closed endpoint is not failed. */
bool kvw_core_ep_failed(const kvw_ep *ep);
kvw_ctx *kvw_core_ep_ctx(const kvw_ep *ep);
kvw_drv *kvw_core_ep_drv(const kvw_ep *ep);
/* The driver's per-endpoint state (NULL until set). */
void *kvw_core_ep_priv(const kvw_ep *ep);
void kvw_core_ep_set_priv(kvw_ep *ep, void *priv);
/* Our endpoint id (salts, logs) and the peer's, which frames carry. */
uint32_t kvw_core_ep_id(const kvw_ep *ep);
uint32_t kvw_core_ep_peer_id(const kvw_ep *ep);
/* Rails of the session (>= 1). */
uint32_t kvw_core_ep_rails(const kvw_ep *ep);
/* Accepted by a listener (server side). */
bool kvw_core_ep_is_server(const kvw_ep *ep);
/* The URI the endpoint was made with (secret redacted), for sentences. */
const char *kvw_core_ep_uri(const kvw_ep *ep);
/* A secret was given: frames are authenticated once READY. */
bool kvw_core_ep_has_secret(const kvw_ep *ep);
/* The endpoint's live counters (kvw_ep_counters reads them). */
kvw_counters *kvw_core_ep_counters(kvw_ep *ep);
/* One data fragment of bytes arrived on rail (rail counters). */
void kvw_core_ep_rail_rx(kvw_ep *ep, uint32_t rail, uint64_t bytes);
/* The peer was heard from now (keepalive: no PING needed yet). */
void kvw_core_ep_heard(kvw_ep *ep);
/* The transport of an endpoint just returned by kvw_core_ep_accepted_from
 * could not be set up (the driver released it): the core frees the
 * endpoint in its reap pass without calling ep_close. */
void kvw_core_ep_discard(kvw_ep *ep);

kvw_ctx *kvw_core_listener_ctx(const kvw_listener *l);
kvw_drv *kvw_core_listener_drv(const kvw_listener *l);
void *kvw_core_listener_priv(const kvw_listener *l);
void kvw_core_listener_set_priv(kvw_listener *l, void *priv);
/* The address the listener really has (a port 0 resolved), which
 * kvw_listener_uri reports; false (unchanged) if it is not shorter than
 * KVW_CORE_URI_MAX. */
#define KVW_CORE_URI_MAX 160
bool kvw_core_listener_set_uri(kvw_listener *l, const char *uri);

/* Arenas: kvw_mem_addr / kvw_mem_len (kvwire.h) give the range. */
kvw_ctx *kvw_core_mem_ctx(const kvw_mem *m);
/* Unique in the context; MEM and DESC frames name arenas by it. */
uint32_t kvw_core_mem_id(const kvw_mem *m);
/* The arena's memfd (kvw_mem_alloc), or -1 (kvw_mem_reg of caller memory). */
int kvw_core_mem_fd(const kvw_mem *m);
/* Driver d's state for the arena (set by its mem_reg; NULL if none). */
void *kvw_core_mem_priv(const kvw_mem *m, const kvw_drv *d);
void kvw_core_mem_set_priv(kvw_mem *m, const kvw_drv *d, void *priv);

/* Requests. */
uint32_t kvw_core_req_token(const kvw_req *r);   /* receive side: its grant's token */
uint64_t kvw_core_req_seq_id(const kvw_req *r);
/* Send side: the block size the peer's GRANT named (0 before it came). */
uint64_t kvw_core_req_peer_block_bytes(const kvw_req *r);
/* r is one of ep's requests not yet freed, still in progress. r is only
 * compared, never read: a driver may ask about a pointer it kept (e.g. of a
 * write in flight) whose request may have been freed since. Walks the
 * endpoint's requests: for error paths, not per fragment. */
bool kvw_core_req_live(const kvw_ep *ep, const kvw_req *r);
/* Send side: bytes of req that post_frags took so far (0: the driver holds
 * nothing of it, so cancel has nothing in flight to wait for). */
uint64_t kvw_core_req_bytes_posted(const kvw_req *r);

#endif
