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
 * ep_close, cancel, revoke, grant_done and flush do nothing (and succeed);
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
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#define KVW_DRV_MAX 8

struct kvw_uri;
struct kvw_wire_hdr;
struct kvw_wire_data;
struct kvw_wire_hello;

typedef struct kvw_drv kvw_drv;

/* One data fragment for ops->post_frags: bytes to move from the sender's
 * pages into the receiver's granted blocks. The receiver-side location is
 * named twice: by (token, layer, blk_idx, blk_off), which two-sided drivers
 * put on the wire and the receiver checks, and by dst_addr/rkey, which
 * one-sided drivers (rdma) write to directly. */
typedef struct kvw_frag {
	uint32_t token, layer, blk_idx, bytes;
	uint64_t blk_off;
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
	uint32_t inline_size;
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
	/* Sender abort: forget queued fragments of req; after it returns the
	 * driver reads none of req's source pages again. */
	void (*cancel)(kvw_ep *ep, kvw_req *req);
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
/* ------------------------------------------------- end of abort fence block */
/* Config of a context (drivers read their knobs here). */
const struct kvw_cfgv *kvw_core_cfg(const kvw_ctx *ctx);

#endif
