/* SPDX-License-Identifier: MIT */
/* dpdk driver internals: ports, flows (one per endpoint), the reliable
 * packet layer. See docs/drivers/dpdk.md for the design. */
#ifndef KVW_DK_H
#define KVW_DK_H

/* rte_dev_dma_map, rte_ipv4_udptcp_cksum_mbuf(_verify) are experimental in 22.11 */
#ifndef ALLOW_EXPERIMENTAL_API
#define ALLOW_EXPERIMENTAL_API
#endif

#include "driver.h"
#include "fault.h"

#include <rte_ether.h>
#include <rte_mbuf.h>

#define DK_BURST 32u
#define DK_TX_BURSTS 4u        /* new-frame bursts per flow per progress call */
#define DK_RX_BURSTS 4u        /* rx bursts per queue per progress call */
#define DK_RING 8192u          /* send slots per flow (power of two) */
#define DK_RWIN 8192u          /* receive window in packets (power of two) */
#define DK_MAX_QUEUES 8u
#define DK_MAX_FLOWS 256u
#define DK_MAX_LISTENERS 16u
#define DK_HDRS (sizeof(struct rte_ether_hdr) + 20u + 8u) /* eth + ipv4 + udp */
#define DK_FRAME_HDR ((uint32_t)sizeof(struct kvw_wire_hdr))
#define DK_DATA_HDR ((uint32_t)sizeof(struct kvw_wire_data))
#define DK_ACK_EVERY 16u
#define DK_INFLIGHT 512u       /* default packets in flight (URI inflight=) */
#define DK_ACK_DELAY_NS 20000ull
#define DK_RTO_MIN_NS 5000000ull
#define DK_RTO_MAX_NS 100000000ull
#define DK_RTO_INIT_NS 5000000ull
#define DK_REO_MIN_NS 20000ull /* reordering window floor (RACK: srtt/4 above it) */
#define DK_PACE_BURST_NS 200000ull /* pacing: burst allowance */
#define DK_RTO_BURST 8u        /* oldest unsacked frames resent per timeout */
#define DK_CREDITS_MIN 16u     /* credits are a hint: a frame cannot stop a flow with 0 */
#define DK_HELD_FLOW_MAX (4u << 20)  /* out-of-order control bytes kept per flow */
#define DK_HELD_ALL_MAX (64u << 20)  /* ... and by all flows of the process */
#define DK_COOKIE_BURST 8u     /* HELLOs resent at once for new cookies, per timeout */
#define DK_AUTH 24u            /* authenticator after the header: counter (8), tag (16) */
#define DK_OWNERS 2048u        /* per-request records a flow holds at once (dk_own) */
#define DK_OWN_HASH 4096u      /* their index by request (power of two, > DK_OWNERS) */

/* driver-private header flags (wire hdr.flags bits the core never uses) */
#define DK_F_AESGCM 0x02u      /* with DK_F_ID: the sender can check AES-256-GCM tags */
#define DK_F_MAC 0x08u         /* a DK_AUTH-byte authenticator follows the header */
#define DK_F_SEG 0x10u         /* chunk of a control frame split over packets */
#define DK_F_SEG_END 0x20u     /* last chunk */
#define DK_F_VOID 0x40u        /* psn filler of a cancelled fragment */
#define DK_F_ID 0x80u          /* hdr.ack holds an id, not an ack: a cookie (HELLO, challenge)
				* or the listener's connection id (its first frame) */

enum dk_slot_kind { DK_SLOT_FREE = 0, DK_SLOT_CTRL, DK_SLOT_DATA, DK_SLOT_VOID };
#define DK_SL_SACKED 0x1u
#define DK_SL_SENT 0x2u
#define DK_SL_RETX 0x4u         /* sent again by fast retransmit or timeout */

struct dk_slot {
	uint8_t kind, fl;
	uint16_t ntx;
	uint32_t len;               /* payload bytes after the frame header */
	uint64_t t_sent;
	struct kvw_wire_hdr h;      /* header template (psn/ack filled at tx) */
	union {
		struct {
			struct kvw_wire_data d;
			const uint8_t *src;
			const kvw_mem *mem;
			kvw_req *req;
			uint32_t own;       /* dk_own index + 1 (0: none) */
		} data;
		struct {
			uint8_t *buf;       /* malloc'd body / chunk */
		} ctrl;
	};
};

struct dk_port;

struct dk_drv;

struct dk_flow;

enum dk_own_state { DK_OWN_FREE = 0, DK_OWN_LIVE, DK_OWN_CANCEL, DK_OWN_ORPHAN };

/* What a flow holds of one send request: ring slots naming it and
 * external buffers over its pages that the PMD has not given back. The
 * free callback of those buffers (dk_tx.c) takes its opaque from here, so
 * a cancel waits for its own buffers only. Records are preallocated per
 * flow (dk_flow_init, lazily mapped): the data path allocates nothing.
 * LIVE: indexed by req (own_hash); CANCEL: cancel answered KVW_INPROGRESS,
 * kvw_core_cancel_done follows from progress (dk_rel_cancel_poll); ORPHAN:
 * nobody waits any more, the record goes when its last buffer comes back. */
struct dk_own {
	struct dk_flow *f;
	const kvw_req *req;         /* compared, never read */
	uint64_t seq_id;            /* CANCEL: what kvw_core_cancel_done names */
	uint64_t cancel_end_ns;     /* CANCEL: reported done by then at the latest */
	uint32_t slots;             /* DATA slots of the ring naming it */
	uint32_t ext;               /* external buffers the PMD holds */
	uint32_t next_free;         /* free list (index + 1) */
	uint8_t state;
};

struct dk_mac;                 /* dk_auth.c: the per-frame authenticator's key and state */

struct dk_flow {
	struct dk_port *port;
	kvw_ep *ep;                 /* NULL once closing (the endpoint is freed) */
	kvw_ctx *ctx;
	struct dk_drv *dd;          /* owner: its progress reaps the flow */
	uint32_t id;                /* the endpoint's id, for logs */
	kvw_counters *cnt;          /* the endpoint's counters, or cnt_closed */
	kvw_counters cnt_closed;
	bool closing;               /* ep closed: finishing the exchange of its last frames */
	uint64_t close_end_ns;
	uint32_t lip, rip;          /* network order */
	uint16_t lport, rport;      /* host order */
	struct rte_ether_addr rmac;
	bool mac_known, up_reported, dead, cksum;
	uint32_t mtu_payload;       /* bytes after the frame header (and authenticator) per packet */
	struct kvw_fault *fault;
	/* identity: an off-path host must guess 32 bits of id and where the
	 * psn window lies (docs/drivers/dpdk.md "Frames and addressing") */
	uint32_t lcid, rcid;        /* ids in hdr.ep_id: frames to us carry lcid, ours rcid */
	uint32_t isn, peer_isn;     /* first psns (random): ours, the peer's */
	bool is_client, peer_known; /* client: the listener's first frame (its id, psn) seen */
	bool first_acked;           /* our first frame (it names ids, dk_tx.c) was acknowledged */
	bool cookie_have, peer_gcm;
	uint32_t cookie, ck_sends;  /* client: the listener's cookie, HELLOs sent for new ones */
	/* per-frame authenticator (a secret is set): from READY on */
	bool mac_want, mac_on;
	uint32_t rx_mac_psn;        /* frames from this psn on must carry a valid one */
	uint64_t tx_ctr, rx_ctr;    /* nonce counters: ours, the highest seen from the peer */
	struct dk_mac *mac;
	/* send side: psn una <= nxt <= tail; slot = psn & (DK_RING-1) */
	struct dk_slot *ring;
	uint32_t una, nxt, tail;
	uint32_t peer_credits, max_inflight;
	uint64_t srtt_ns, rttvar_ns, rto_ns, rto_due_ns, last_progress_ns;
	uint32_t sack_high;         /* highest psn the peer sacked (+1) */
	uint64_t rack_t;            /* latest send time of a delivered (acked/sacked) packet */
	uint64_t reo_ns;            /* reordering window learnt from spurious resends */
	uint64_t min_rtt_ns;        /* smallest RTT sample: RACK's base window is a quarter */
	uint64_t retx_check_ns;     /* next timer look at SACK holes */
	uint32_t dsack;             /* receive side: psn + 1 of a duplicate, for the next ACK */
	uint64_t pace_ns_per_byte_x1k, pace_next_ns;
	uint32_t outstanding_ext;   /* extbuf mbufs not yet freed by the PMD */
	struct dk_own *own;         /* DK_OWNERS records, handed out from index 0 up */
	uint16_t *own_hash;         /* DK_OWN_HASH: LIVE record index + 1 by request, 0 empty */
	uint32_t own_hw, own_free;  /* records ever handed out; free list head (index + 1) */
	uint32_t own_last;          /* index + 1 of the record queue_frags used last */
	uint32_t n_cancel;          /* records in DK_OWN_CANCEL */
	uint64_t bury_end_ns;       /* on dk_drv.burying: freed by then at the latest */
	uint32_t txq_rr;
	/* receive side */
	uint32_t rcv_nxt;
	uint64_t *rbits;            /* DK_RWIN bits */
	uint8_t **held;             /* DK_RWIN (allocated at the first): out-of-order control packets */
	size_t held_bytes;
	uint32_t rcv_high;          /* highest psn received + 1 */
	uint32_t last_rx_psn;       /* newest reliable psn received (echoed in ACKs) */
	uint32_t ack_pending;
	uint64_t ack_due_ns;
	bool ack_now;
	uint8_t *reasm;
	size_t reasm_len, reasm_cap;
	uint8_t scratch[2048];
};

struct dk_listener {
	kvw_listener *l;
	uint32_t lip;
	uint16_t lport;
	uint8_t ck_key[16];         /* cookies of HELLOs (SipHash key, random per listener) */
};

struct dk_mem {
	uint8_t *base;              /* page-aligned registration */
	size_t len;
	bool ext;                   /* registered with rte_extmem */
	struct dk_mem *next;        /* dk_drv.mems */
};

struct dk_port {
	uint16_t port_id;
	bool started;
	bool link_up;               /* read once per progress pass */
	uint32_t users;             /* contexts using it */
	uint16_t nq;
	bool multiseg;              /* TX chains accepted */
	bool jumbo_cksum;           /* frames chained over memif buffers: checksum them */
	struct rte_mempool *pool, *ext_pool;
	struct rte_ether_addr mac;
	uint32_t mtu_payload;
	char drv_name[32];
	struct dk_flow *flows[DK_MAX_FLOWS];
	uint32_t n_flows;
	struct dk_listener lis[DK_MAX_LISTENERS];
	uint32_t n_lis;
	uint64_t bad, unmatched, forged, challenges;
	uint16_t next_eport;
};

struct dk_drv {
	kvw_drv *d;
	struct dk_mem *mems;        /* every arena registered with this driver */
	int timer_fd;
	uint64_t timer_cleared_ns;
	struct dk_port *ports[RTE_MAX_ETHPORTS];
	struct dk_flow *zombies[DK_MAX_FLOWS];
	uint32_t n_zombies;
	/* flows of closed endpoints waiting for the PMD to give back their
	 * external buffers (off the port: no frame reaches them) */
	struct dk_flow *burying[DK_MAX_FLOWS];
	uint32_t n_burying;
};

/* CLOCK_MONOTONIC read once per progress call (dpdk.c) */
extern __thread uint64_t dk_now_ns;
/* dk_cfg.c: the driver's options and ops->probe */
extern const struct kvw_cfg_opt dk_cfg_opts[];
kvw_status dk_probe(const struct kvw_cfgv *c, struct kvw_probe_entry *out, size_t cap, size_t *n);

/* dk_eal.c */
kvw_status dk_eal_ensure(kvw_drv *d, const char *eal_args);
bool dk_eal_up(void);
kvw_status dk_port_get(struct dk_drv *dd, const struct kvw_uri *u, bool client, struct dk_port **out);
kvw_status dk_port_get_id(struct dk_drv *dd, unsigned pid, const struct kvw_uri *u, struct dk_port **out);
void dk_port_put_all(struct dk_drv *dd);
kvw_status dk_mem_register(kvw_drv *d, kvw_mem *m);
void dk_mem_unregister(kvw_drv *d, kvw_mem *m);
struct dk_mem *dk_mem_of(const kvw_drv *d, const kvw_mem *m);
/* Late registration once the EAL is up (arenas registered before it). */
void dk_mem_late(kvw_drv *d);

/* dk_tx.c */
void dk_tx_slot(struct dk_flow *f, uint32_t psn, struct rte_mbuf **out, unsigned *n);
void dk_tx_ack(struct dk_flow *f, struct rte_mbuf **out, unsigned *n);
/* Listener, no flow yet: answers a HELLO with a cookie challenge. */
void dk_tx_challenge(struct dk_port *p, const struct dk_listener *dl, const struct rte_ether_addr *dmac,
		     uint32_t dip, uint16_t dport, uint32_t cookie);
unsigned dk_tx_burst(struct dk_flow *f, struct rte_mbuf **pkts, unsigned n);
void dk_tx_fault_due(struct dk_flow *f, uint64_t now);
void dk_tx_drain_ext(struct dk_flow *f, uint64_t max_ns);
/* The same for the buffers of one request record only. */
void dk_tx_drain_own(struct dk_flow *f, struct dk_own *o, uint64_t max_ns);
/* Frees the frames the fault injector holds (no wait). */
void dk_tx_fault_flush(struct dk_flow *f);
void dk_tx_cleanup(struct dk_flow *f);
/* dpdk_cancel_ms in ns: how long a cancel or a closed flow waits for the PMD. */
uint64_t dk_cancel_ns(const struct dk_flow *f);

/* dk_rel.c */
kvw_status dk_flow_init(struct dk_flow *f, kvw_ep *ep);
void dk_flow_fini(struct dk_flow *f);
kvw_status dk_rel_queue_ctrl(struct dk_flow *f, const void *frame, size_t len);
size_t dk_rel_queue_frags(struct dk_flow *f, const kvw_frag *fr, size_t n);
/* Queued and unacked fragments of req (NULL: of every request) turn void. */
void dk_rel_void(struct dk_flow *f, const kvw_req *req);
/* ops->cancel (never waits inside progress): KVW_OK or KVW_INPROGRESS. */
kvw_status dk_rel_cancel(struct dk_flow *f, kvw_req *req);
/* From progress: answers the cancels whose buffers came back (or timed out). */
void dk_rel_cancel_poll(struct dk_flow *f, uint64_t now);
/* Nobody waits for the flow's cancels any more (its endpoint goes). */
void dk_rel_cancel_forget(struct dk_flow *f);
/* A record's slot or buffer count dropped: frees it once nothing holds it. */
void dk_own_release(struct dk_flow *f, struct dk_own *o);
void dk_rel_on_packet(struct dk_flow *f, struct rte_mbuf *m, const struct kvw_wire_hdr *h,
		      uint32_t off);
/* Client: a cookie challenge from the listener (resends the HELLO with it). */
void dk_rel_on_challenge(struct dk_flow *f, uint32_t cookie);
/* A frame that is not the peer's (wrong id, no or a bad authenticator). */
void dk_forged(struct dk_flow *f, const char *what);
void dk_rel_tick(struct dk_flow *f, uint64_t now);
/* Close: every fragment becomes a void filler (no page is read again);
 * returns true when frames (the CLOSE) still wait for the peer's ack. */
bool dk_rel_close(struct dk_flow *f, uint64_t now);
/* A closing flow's timers: true when it is finished (all acked or timed out). */
bool dk_rel_close_tick(struct dk_flow *f, uint64_t now);
/* Sends queued new frames the window allows (end of a progress pass). */
void dk_rel_push(struct dk_flow *f, uint64_t now);
/* Copies len bytes at off of m into dst (walks segments). */
void dk_copy_out(const struct rte_mbuf *m, uint32_t off, uint8_t *dst, uint32_t len);

/* dpdk.c */
/* A HELLO whose cookie checked out: the flow, its peer's id and psn from it. */
struct dk_flow *dk_flow_accept(struct dk_drv *dd, struct dk_port *p, struct dk_listener *dl,
			       const struct rte_ether_addr *smac, uint32_t sip, uint16_t sport,
			       const struct kvw_wire_hdr *hello);

/* dk_auth.c: ids, cookies, the per-frame authenticator */
uint32_t dk_rand32(bool nonzero);
void dk_cookie_key(struct dk_listener *dl);
uint32_t dk_cookie(const struct dk_listener *dl, uint64_t now, int age, uint32_t sip, uint16_t sport,
		   const struct rte_ether_addr *smac);
bool dk_cookie_ok(const struct dk_listener *dl, uint64_t now, uint32_t c, uint32_t sip, uint16_t sport,
		  const struct rte_ether_addr *smac);
bool dk_gcm_here(void);
/* Fetches the session key once the endpoint is READY; true when armed. */
bool dk_mac_arm(struct dk_flow *f);
/* Fills the authenticator of a finished frame (before its UDP checksum). */
void dk_mac_seal(struct dk_flow *f, struct rte_mbuf *m);
/* Checks a received frame's authenticator (udp: UDP payload bytes). */
bool dk_mac_check(struct dk_flow *f, struct rte_mbuf *m, uint32_t udp);
void dk_mac_free(struct dk_flow *f);
uint64_t dk_mac_bytes(const struct dk_flow *f);

/* dk_rx.c */
void dk_rx_port(struct dk_drv *dd, struct dk_port *p);
uint32_t dk_ip_parse(const char *s, bool *ok);

#endif
