/* SPDX-License-Identifier: MIT */
/* RDMA verbs driver, internals shared by rdma.c (devices, memory, ops),
 * rdma_conn.c (rdma_cm, QP state machine) and rdma_data.c (messages,
 * credits, data path, fences). See docs/drivers/rdma.md. */
#ifndef KVW_RDMA_INT_H
#define KVW_RDMA_INT_H

#include "driver.h"

#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>

#define RD_MAX_DEV 8
#define RD_RECV_DEPTH 64        /* pre-posted receives per QP = peer's credits */
#define RD_BUF 8192             /* one message buffer (receive and send slot) */
#define RD_SIG_EVERY 16         /* at least one signalled WR in this many */
#define RD_MAGIC 0x4b565244u    /* "DRVK" in rdma_cm private data */
#define RD_ACK_TIMEOUT 16       /* 4.096 us * 2^16 = 268 ms per try (TCG-slow rxe) */
#define RD_MIN_RNR_TIMER 12     /* 0.64 ms */
#define RD_RNR_RETRY 6          /* 7 = forever: never; credits make RNR rare */
#define RD_BATCH_MAX 64        /* writes per rail per doorbell */
#define RD_MAX_SGE 16          /* source pieces one write gathers (caps.max_gather) */
#define RD_CHAIN_MAX 32        /* queued messages per rail per doorbell */
#define RD_HS_SLOTS 8           /* send slots until READY (rd_sbuf_grow) */

enum rd_kind {
	RD_CTRL = 1,    /* a piece of the kvwire control-frame byte stream */
	RD_LANDED = 2,  /* kvw_wire_data[]: names the writes-with-immediate placed
	                 * before it, one entry each, in order; the receiver
	                 * accepts an entry only against its own NIC's completion
	                 * of that write (token in imm_data, byte_len) */
	RD_KEYMAP = 3,  /* struct rd_keymap: per-grant rkeys, per device */
	RD_KEYDROP = 4, /* u32 token: grant key gone */
	RD_FENCE = 5,   /* u32 token: stop writing this grant, answer FENCE_ACK */
	RD_FENCE_ACK = 6,
	RD_CREDIT = 7,  /* credits only */
	RD_JOINED = 8,  /* server -> client on an extra rail: the join was authenticated and
	                 * this rail's QP takes writes now; the client writes on it from here */
};
#define RD_F_STARVED 0x1u       /* sender spent its last credit: return some */
#define RD_F_LAZY 0x2u          /* queued record that waits for company (rd_flush_all) */

struct rd_hdr {
	uint8_t kind, flags;
	uint16_t credits;       /* receive buffers reposted since the last message */
	uint32_t len;           /* payload bytes after this header */
};
_Static_assert(sizeof(struct rd_hdr) == 8, "rd_hdr");
#define RD_PAYLOAD (RD_BUF - sizeof(struct rd_hdr))

/* RD_KEYMAP: the keys of one grant, in one or more messages (n_here runs
 * each, starting at run `first`). n_runs == 0: one key per device over the
 * grant's whole span (devices without memory windows); else one memory
 * window per contiguous run of granted blocks per device, so the HCA itself
 * refuses any byte outside the granted blocks. */
#define RD_KM_RAILS 0x8000u    /* n_dev flag: key slots are rails, not devices (mw2) */
struct rd_keymap {
	uint32_t token;
	uint16_t n_dev, n_here; /* n_dev: slots used, | RD_KM_RAILS when per rail */
	uint32_t n_runs, first;
	uint32_t rkey[RD_MAX_DEV];      /* span keys (n_runs == 0) */
};
struct rd_krun {
	uint64_t addr, len;
	uint32_t rkey[RD_MAX_DEV];
};
_Static_assert(sizeof(struct rd_keymap) == 48 && sizeof(struct rd_krun) == 48, "rd_keymap");

/* rdma_cm private data: client -> server and server -> client */
#define RD_CM_F_WIMM 0x1u       /* writes go WITH_IMM, landing counted from the NIC (issue 17) */
#define RD_CM_F_NEED RD_CM_F_WIMM /* what both sides must set: older peers are refused */
struct rd_cm_priv {
	uint32_t magic;
	uint8_t dev_idx;        /* sender's device index (keymap slot) */
	uint8_t n_ip;
	uint16_t flags;         /* RD_CM_F_* (0 in drivers before issue 17) */
	uint32_t ip[RD_MAX_DEV]; /* server: addresses it listens on, rail 0's first */
};

struct rd_dev {
	struct ibv_context *verbs;
	struct ibv_pd *pd;
	char name[64];
	uint8_t port;
	int gid_idx;
	struct in_addr ip;
	enum ibv_mtu active_mtu;
	uint32_t max_sge;       /* SGEs per write we ask for: the device's, at most RD_MAX_SGE */
	enum rd_keys { RD_KEYS_MW = 1, RD_KEYS_MR, RD_KEYS_SPAN, RD_KEYS_MW2 } keys; /* how grants are keyed */
	bool mw_bounds;         /* the NIC bounds a window to its range (not rxe: rd_keys_mode) */
};

/* config rdma_grant_keys, in the order of its names (rdma_cfg.c) */
enum rd_grant_keys { RD_GRANT_KEYS_AUTO, RD_GRANT_KEYS_MW, RD_GRANT_KEYS_MR, RD_GRANT_KEYS_SPAN,
		     RD_GRANT_KEYS_MW2 };
extern const struct kvw_cfg_opt rd_cfg_opts[];
/* rdma_probe.c: the rule for a usable device (open and probe) */
bool rd_dev_pick(const struct kvw_cfgv *c, struct ibv_context *v, struct rd_dev *out, bool *no_mw,
		 char *why, size_t len);
const char *rd_keys_name(enum rd_keys k);
kvw_status rd_probe(const struct kvw_cfgv *c, struct kvw_probe_entry *out, size_t cap, size_t *n);

struct rd_drv;
struct rd_ep;

enum rd_rail_state { RD_R_CONNECTING = 1, RD_R_UP, RD_R_DEAD };

/* One doorbell's writes on a rail (rd_post_frags): the WRITE_WITH_IMMs,
 * an SGE per source piece (a gathered fragment), and the LANDED entries
 * the SEND after them carries, one per write. */
struct rd_batch {
	struct ibv_send_wr wr[RD_BATCH_MAX + 1];
	struct ibv_sge sge[RD_BATCH_MAX * RD_MAX_SGE];
	struct kvw_wire_data land[RD_BATCH_MAX];
	uint32_t n, n_sge;
	uint64_t bytes;
};

struct rd_rail {
	struct rd_drv *rd;
	kvw_ep *ep;
	struct rd_ep *rep;
	uint32_t idx;
	enum rd_rail_state state;
	struct rdma_cm_id *id;
	struct rd_dev *dev;
	int dev_idx;
	uint32_t peer_dev;
	struct ibv_cq *scq, *rcq;
	struct ibv_comp_channel *cc; /* wakes kvw_ctx_fd() on completions */
	bool armed;
	struct ibv_qp *qp;
	uint8_t *rbuf, *sbuf;
	struct ibv_mr *rmr, *smr;
	uint32_t sq_depth, max_inline;
	uint32_t max_sge;       /* SGEs per write this QP takes (>= 1) */
	struct rd_batch batch;  /* writes gathered in this progress pass */
	uint32_t n_slots;       /* send slots in sbuf: RD_HS_SLOTS, sq_depth once READY */
	uint64_t wr_posted, wr_done, last_sig;
	/* write bytes in flight (window): bytes posted up to WR seq, per SQ slot */
	uint64_t *cum_bytes, bytes_posted, bytes_acked, window;
	int credits, to_return;
	bool peer_starved;
	bool cm_established;
	bool writes_open;       /* QP takes RDMA WRITEs: only once its endpoint is READY */
	bool peer_open;         /* the peer's QP takes our writes (client's extra rails: RD_JOINED) */
	bool heard;             /* a message arrived since the last progress pass */
	uint64_t bind_wait_ns;  /* rail 0: messages wait for window binds, and no WR completed, since */
	uint64_t bind_wait_done; /* wr_done then */
	/* fault layer (config `fault`): a lossy link below RC (rdma_data.c) */
	struct kvw_fault *fault;
	uint64_t fault_tail;    /* latest time a unit of this rail was let go at (ns) */
	uint64_t hold_until;    /* the next write batch not before this (ns) */
	bool batch_fated;       /* the next write batch's fate is decided (hold_until) */
	const char *dead_why;   /* set where failing the ep must wait */
	kvw_status dead_st;
	/* messages waiting for credits or SQ room: [struct rd_hdr][payload]... */
	uint8_t *txq;
	size_t txq_len, txq_cap;
	/* fault layer: when each queued record may go (ns), in txq order */
	uint64_t *txq_due;
	size_t txq_n, txq_due_cap;
	/* control-frame reassembly */
	uint8_t *rx;
	size_t rx_len, rx_cap;
	/* receive completions seen by rd_rail_prepare_wait's look at the CQ,
	 * handled by the next pass (a ring: never more than RD_RECV_DEPTH, one
	 * per posted receive) */
	struct ibv_wc stash[RD_RECV_DEPTH];
	uint32_t stash_head, n_stash;
	/* receiver: writes our NIC completed (IBV_WC_RECV_RDMA_WITH_IMM) that
	 * no LANDED entry named yet, in arrival order (rd_on_landed) */
	struct rd_wimm { uint32_t token, bytes; } wimm[RD_RECV_DEPTH];
	uint32_t wimm_head, n_wimm;
	struct rd_rail *next_all;
	bool lingering;         /* closed, last sends in flight (rd_rail_linger) */
	uint64_t linger_until;
};

struct rd_keyent {
	uint32_t token, n;
	bool used, fenced;
	bool per_rail;                  /* slots are rails (mw2: a key works on its rail only) */
	uint32_t rkey[RD_MAX_DEV];      /* span keys */
	struct rd_krun *run;            /* n_runs, sorted by addr once n_got == n_runs */
	uint32_t n_runs, n_got;
};

struct rd_grant {               /* receiver side */
	uint32_t token;
	struct ibv_mr **mr;             /* per run per device (mr), per device (span) */
	struct ibv_mw **mw;             /* per run per device (mw) */
	uint32_t n_mr, n_mw;
	struct rd_grant *next;
	/* abort fence: FENCE sent, FENCE_ACK not seen yet (rd_revoke) */
	kvw_req *fence_req;
	uint64_t fence_t0;
};

/* Sender side: an answer that waits until every work request posted so far
 * on each rail completed (rd_waits_poll, from progress): FENCE_ACK for a
 * fenced token, or kvw_core_cancel_done for a cancelled send. */
enum rd_wait_kind { RD_W_FENCE = 1, RD_W_CANCEL };
struct rd_wait {
	uint64_t upto[KVW_MAX_RAILS];   /* each rail's wr_posted when it began */
	uint64_t seq_id;                /* RD_W_CANCEL */
	uint32_t token;                 /* RD_W_FENCE */
	enum rd_wait_kind kind;
};
#define RD_WAITS_MAX 65536      /* a peer's FENCEs beyond this are refused */

struct rd_ep {
	struct rd_rail *rail[KVW_MAX_RAILS];
	struct rd_wait *waits;
	uint32_t n_waits, cap_waits;
	/* receiver side: rail 0's messages wait until each rail's send queue
	 * completed WR bind_upto[i] - 1 (memory-window binds, rdma_keys.c) */
	uint64_t bind_upto[KVW_MAX_RAILS];
	struct sockaddr_in peer;
	uint32_t peer_ip[RD_MAX_DEV];
	uint32_t n_peer_ip;
	/* sender side: keys of the peer's grants (open addressing by token) */
	struct rd_keyent *keys;
	uint32_t keys_cap, keys_used;
	/* receiver side */
	struct rd_grant *grants;
};

struct rd_lst {
	struct rdma_cm_id *id[RD_MAX_DEV + 1];
	int n_id;
	uint32_t ip[RD_MAX_DEV];
	int n_ip;
	kvw_listener *l;
};

struct rd_drv {
	kvw_drv *d;
	struct rdma_event_channel *ech;
	struct ibv_context **list;
	struct rd_dev dev[RD_MAX_DEV];
	int ndev;
	int cfg_dev;            /* index of rdma_dev in dev[], or -1 */
	struct rd_rail *rails;  /* every rail of this driver */
	struct rd_rail *lingering; /* closed rails whose last sends still go */
	uint64_t next_events_ns; /* next look at rdma_cm and async events */
	uint8_t rnd[256];       /* key bytes of type 2 windows (getrandom, refilled when spent) */
	uint32_t rnd_left;      /* unused bytes at the end of rnd */
};

struct rd_mem {
	struct ibv_mr *mr[RD_MAX_DEV];
};

static inline struct rd_drv *rd_of(kvw_drv *d) { return d->priv; }
static inline struct rd_ep *rd_ep_of(const kvw_ep *ep) { return kvw_core_ep_priv(ep); }

/* rdma.c */
int rd_dev_index(struct rd_drv *rd, struct ibv_context *verbs);
void rd_rail_fail(struct rd_rail *r, kvw_status st, const char *why);

/* rdma_conn.c */
kvw_status rd_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u);
void rd_listener_close(kvw_listener *l);
kvw_status rd_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u);
kvw_status rd_open_rails(kvw_ep *ep);
kvw_status rd_join(kvw_ep *ep, kvw_ep *extra, uint32_t rail_idx);
void rd_ep_close(kvw_ep *ep);
void rd_ep_resources(const kvw_ep *ep, struct kvw_ep_res *res);
void rd_cm_progress(struct rd_drv *rd);
void rd_rail_free(struct rd_rail *r);
void rd_lingering_progress(struct rd_drv *rd, bool wait);
kvw_status rd_rail_open_writes(struct rd_rail *r);

/* rdma_data.c */
kvw_status rd_rail_bufs(struct rd_rail *r);
void rd_sbuf_grow(struct rd_rail *r);
kvw_status rd_send_ctrl(kvw_ep *ep, const void *frame, size_t len);
size_t rd_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n);
kvw_status rd_cancel(kvw_ep *ep, kvw_req *req);
void rd_waits_poll(kvw_ep *ep);
kvw_status rd_revoke(kvw_ep *ep, kvw_req *req);
void rd_rail_progress(struct rd_rail *r);
bool rd_rail_prepare_wait(struct rd_rail *r);
kvw_status rd_msg(struct rd_rail *r, unsigned kind, const void *p, size_t len);
kvw_status rd_queue(struct rd_rail *r, unsigned kind, const void *p, size_t len);
void rd_queue_lazy(struct rd_rail *r, unsigned kind, const void *p, size_t len);
void rd_flush_all(kvw_drv *d);
void rd_drain_sends(struct rd_rail *r, uint64_t timeout_ns);
int rd_poll_sends(struct rd_rail *r);

/* rdma_keys.c */
kvw_status rd_grant_keys(kvw_ep *ep, kvw_req *req, const void *body, size_t len, uint32_t *mem_key);
void rd_grant_done(kvw_ep *ep, kvw_req *req);
void rd_grant_drop(kvw_ep *ep, uint32_t token);
bool rd_grant_live(kvw_ep *ep, uint32_t token);
struct rd_grant *rd_grant_find(kvw_ep *ep, uint32_t token);
void rd_ep_data_free(kvw_ep *ep);
void rd_ep_grants_free(kvw_ep *ep);
struct rd_keyent *rd_key_find(struct rd_ep *e, uint32_t token);
void rd_key_del(struct rd_ep *e, uint32_t token);
void rd_on_keymap(struct rd_rail *r, const uint8_t *p, size_t len);
bool rd_binds_done(struct rd_ep *e);
uint32_t rd_key_rkey(const struct rd_keyent *k, uint64_t addr, uint64_t len, uint32_t dev);
uint32_t rd_key_slot_of(const struct rd_keyent *k, const struct rd_rail *r);

#endif
