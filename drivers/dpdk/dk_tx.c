/* SPDX-License-Identifier: MIT */
/* dpdk driver: building frames (UDP/IPv4 + kvwire header), zero-copy
 * external-buffer payloads, fault injection on the way out, tx bursts. */
#include "dk.h"

#include <string.h>

#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_udp.h>

/* The PMD (or whoever frees the mbuf: the receiver of a net_ring, the
 * fault injector) is done with an external buffer over a request's pages.
 * Runs on the thread driving the port's contexts: plain counters. */
static void dk_ext_free(void *addr, void *opaque)
{
	struct dk_own *o = opaque;
	struct dk_flow *f = o->f;
	(void)addr;
	f->outstanding_ext--;
	o->ext--;
	dk_own_release(f, o);
}

struct dk_l2l4 {
	const struct rte_ether_addr *smac, *dmac; /* dmac NULL: broadcast */
	uint32_t sip, dip;                        /* network order */
	uint16_t sport, dport;                    /* host order */
};

/* eth + ipv4 + udp for a UDP payload of udp_len bytes; returns the header area end. */
static uint8_t *dk_put_hdrs(const struct dk_l2l4 *a, uint8_t *p, uint32_t udp_len)
{
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)p;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(ip + 1);

	if (a->dmac)
		rte_ether_addr_copy(a->dmac, &eh->dst_addr);
	else
		memset(&eh->dst_addr, 0xff, sizeof(eh->dst_addr));
	rte_ether_addr_copy(a->smac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(20 + 8 + udp_len));
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = a->sip;
	ip->dst_addr = a->dip;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	uh->src_port = rte_cpu_to_be_16(a->sport);
	uh->dst_port = rte_cpu_to_be_16(a->dport);
	uh->dgram_len = rte_cpu_to_be_16((uint16_t)(8 + udp_len));
	uh->dgram_cksum = 0;
	return (uint8_t *)(uh + 1);
}

static uint8_t *dk_put_l2l4(struct dk_flow *f, uint8_t *p, uint32_t udp_len)
{
	struct dk_l2l4 a = { .smac = &f->port->mac, .dmac = f->mac_known ? &f->rmac : NULL,
			     .sip = f->lip, .dip = f->rip, .sport = f->lport, .dport = f->rport };
	return dk_put_hdrs(&a, p, udp_len);
}

/* Appends len bytes by copy, chaining pool mbufs as needed. */
static bool dk_append_copy(struct dk_flow *f, struct rte_mbuf *head, const uint8_t *src, uint32_t len)
{
	struct rte_mbuf *last = rte_pktmbuf_lastseg(head);

	while (len) {
		uint16_t room = rte_pktmbuf_tailroom(last);
		if (!room) {
			struct rte_mbuf *s = rte_pktmbuf_alloc(f->port->pool);
			if (!s)
				return false;
			if (rte_pktmbuf_chain(head, s) != 0) {
				rte_pktmbuf_free(s);
				return false;
			}
			last = s;
			continue;
		}
		uint16_t n = len < room ? (uint16_t)len : room;
		uint8_t *dst = (uint8_t *)rte_pktmbuf_append(last, n);
		if (last != head)
			head->pkt_len += n;
		memcpy(dst, src, n);
		src += n;
		len -= n;
	}
	return true;
}

static bool dk_attach_ext(struct dk_flow *f, struct dk_own *o, struct rte_mbuf *head,
			  const uint8_t *src, uint32_t len)
{
	struct rte_mbuf *e = rte_pktmbuf_alloc(f->port->ext_pool);
	if (!e)
		return false;
	struct rte_mbuf_ext_shared_info *sh = rte_mbuf_to_priv(e);
	sh->free_cb = dk_ext_free;
	sh->fcb_opaque = o;
	rte_mbuf_ext_refcnt_set(sh, 1);
	rte_pktmbuf_attach_extbuf(e, (void *)(uintptr_t)src, (rte_iova_t)(uintptr_t)src, (uint16_t)len, sh);
	e->data_len = (uint16_t)len;
	e->pkt_len = len;
	f->outstanding_ext++;
	o->ext++;
	if (rte_pktmbuf_chain(head, e) != 0) {
		rte_pktmbuf_free(e);
		return false;
	}
	return true;
}

static void dk_finish_cksum(struct dk_flow *f, struct rte_mbuf *m)
{
	if (!f->cksum)
		return;
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(ip + 1);
	uh->dgram_cksum = 0;
	uh->dgram_cksum = rte_ipv4_udptcp_cksum_mbuf(m, ip, sizeof(struct rte_ether_hdr) + 20);
}

static bool dk_data_payload(struct dk_flow *f, struct dk_slot *s, struct rte_mbuf *m)
{
	const struct dk_mem *dm = dk_mem_of(kvw_core_ep_drv(f->ep), s->data.mem);
	bool ext = f->port->multiseg && dm && dm->ext && s->len <= UINT16_MAX &&
		   s->data.src >= dm->base && s->data.src + s->len <= dm->base + dm->len;
	if (ext && s->data.own)
		return dk_attach_ext(f, &f->own[s->data.own - 1], m, s->data.src, s->len);
	return dk_append_copy(f, m, s->data.src, s->len);
}

/* The wire header of slot psn. Each side's first frame names ids instead
 * of acking (DK_F_ID): the client's HELLO its own id and the listener's
 * cookie (until it has one, a plain HELLO with psn 0 and no id), the
 * listener's first frame its id. */
static void dk_slot_hdr(const struct dk_flow *f, const struct dk_slot *s, uint32_t psn, uint32_t body,
			struct kvw_wire_hdr *h)
{
	*h = s->h;
	h->psn = psn;
	h->ep_id = f->rcid;
	h->ack = f->rcv_nxt;
	h->flags |= KVW_WF_ACK_VALID | (s->kind == DK_SLOT_VOID ? DK_F_VOID : 0);
	h->len = body;
	if (psn != f->isn || f->first_acked)
		return;
	h->flags = (uint8_t)((h->flags & ~KVW_WF_ACK_VALID) | DK_F_ID | (dk_gcm_here() ? DK_F_AESGCM : 0));
	if (!f->is_client) {
		h->ack = f->lcid;
	} else if (f->cookie_have) {
		h->ep_id = f->lcid;
		h->ack = f->cookie;
	} else {
		h->flags &= (uint8_t)~(DK_F_ID | DK_F_AESGCM);
		h->psn = h->ep_id = h->ack = 0;
	}
}

/* Builds the frame of send slot psn (first send or retransmit). */
void dk_tx_slot(struct dk_flow *f, uint32_t psn, struct rte_mbuf **out, unsigned *n)
{
	struct dk_slot *s = &f->ring[psn & (DK_RING - 1)];
	struct rte_mbuf *m = rte_pktmbuf_alloc(f->port->pool);
	struct kvw_wire_hdr h;
	bool ok = true;

	if (!m)
		return; /* pool empty now: the RTO sends it later */
	if (f->mac_want && !f->mac_on)
		dk_mac_arm(f);
	uint32_t auth = f->mac_on ? DK_AUTH : 0;
	uint32_t body = s->kind == DK_SLOT_VOID ? 0 : s->len + (s->kind == DK_SLOT_DATA ? DK_DATA_HDR : 0);
	uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(DK_HDRS + DK_FRAME_HDR + auth));
	uint8_t *kh = dk_put_l2l4(f, p, DK_FRAME_HDR + auth + body);
	dk_slot_hdr(f, s, psn, body, &h);
	h.flags |= auth ? DK_F_MAC : 0;
	memcpy(kh, &h, sizeof(h));
	if (s->kind == DK_SLOT_DATA) {
		ok = dk_append_copy(f, m, (const uint8_t *)&s->data.d, DK_DATA_HDR) &&
		     dk_data_payload(f, s, m);
	} else if (s->kind == DK_SLOT_CTRL && s->len) {
		ok = dk_append_copy(f, m, s->ctrl.buf, s->len);
	}
	if (!ok) {
		rte_pktmbuf_free(m);
		return;
	}
	if (auth)
		dk_mac_seal(f, m);
	dk_finish_cksum(f, m);
	s->t_sent = dk_now_ns;
	s->ntx++;
	s->fl |= DK_SL_SENT;
	out[(*n)++] = m;
}

static uint32_t dk_sack_ranges(struct dk_flow *f, struct kvw_wire_ack *a)
{
	uint32_t n = 0;
	uint32_t p = f->rcv_nxt;

	while ((int32_t)(f->rcv_high - p) > 0 && n < KVW_WIRE_SACK_MAX) {
		uint32_t i = p & (DK_RWIN - 1);
		if (!(f->rbits[i / 64] & (1ull << (i % 64)))) {
			p++;
			continue;
		}
		a->sack[n][0] = p;
		while ((int32_t)(f->rcv_high - p) > 0) {
			uint32_t j = p & (DK_RWIN - 1);
			if (!(f->rbits[j / 64] & (1ull << (j % 64))))
				break;
			p++;
		}
		a->sack[n][1] = p;
		n++;
	}
	return n;
}

void dk_tx_ack(struct dk_flow *f, struct rte_mbuf **out, unsigned *n)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(f->port->pool);
	struct kvw_wire_ack a;
	struct kvw_wire_hdr h;

	if (!m)
		return;
	if (f->mac_want && !f->mac_on)
		dk_mac_arm(f);
	uint32_t auth = f->mac_on ? DK_AUTH : 0;
	memset(&a, 0, sizeof(a));
	a.cum_ack = f->rcv_nxt;
	a.n_sack = dk_sack_ranges(f, &a);
	a.credits = DK_RWIN - (f->rcv_high - f->rcv_nxt);
	a.echo_t_ns = f->last_rx_psn ? (uint64_t)f->last_rx_psn + 1 : 0; /* psn echo, see dk_ack_rtt */
	a.dsack = f->dsack; /* D-SACK: tells the sender a resend was spurious */
	f->dsack = 0;
	uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(DK_HDRS + DK_FRAME_HDR + auth + sizeof(a)));
	uint8_t *kh = dk_put_l2l4(f, p, DK_FRAME_HDR + auth + sizeof(a));
	kvw_wire_hdr_encode(&h, KVW_T_ACK, KVW_WF_ACK_VALID | (auth ? DK_F_MAC : 0), sizeof(a), f->rcid);
	h.psn = 0;
	h.ack = f->rcv_nxt;
	memcpy(kh, &h, sizeof(h)); /* kh is 2-aligned: no struct access through it */
	memcpy(kh + DK_FRAME_HDR + auth, &a, sizeof(a));
	if (auth)
		dk_mac_seal(f, m);
	dk_finish_cksum(f, m);
	f->ack_pending = 0;
	f->ack_now = false;
	f->ack_due_ns = 0;
	out[(*n)++] = m;
}

/* The listener's answer to a HELLO without a (good) cookie: an ACK-typed
 * frame with DK_F_ID, no body, the cookie in hdr.ack. Smaller than the
 * HELLO it answers; nothing is kept. */
void dk_tx_challenge(struct dk_port *p, const struct dk_listener *dl, const struct rte_ether_addr *dmac,
		     uint32_t dip, uint16_t dport, uint32_t cookie)
{
	struct dk_l2l4 a = { .smac = &p->mac, .dmac = dmac, .sip = dl->lip, .dip = dip,
			     .sport = dl->lport, .dport = dport };
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->pool);
	struct kvw_wire_hdr h;

	if (!m)
		return;
	uint8_t *b = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(DK_HDRS + DK_FRAME_HDR));
	uint8_t *kh = dk_put_hdrs(&a, b, DK_FRAME_HDR);
	kvw_wire_hdr_encode(&h, KVW_T_ACK, DK_F_ID, 0, 0);
	h.ack = cookie;
	memcpy(kh, &h, sizeof(h));
	if (!p->link_up || rte_eth_tx_burst(p->port_id, 0, &m, 1) != 1)
		rte_pktmbuf_free(m);
}

static void dk_corrupt(struct rte_mbuf **pm, const struct kvw_fault_action *a)
{
	/* only the first segment is ours to write (later ones may be user pages) */
	uint8_t *b = rte_pktmbuf_mtod(*pm, uint8_t *);
	b[a->corrupt_off] ^= (uint8_t)(1u << a->corrupt_bit);
}

/* Applies the fault injector; returns how many mbufs go out now (in out[]). */
static unsigned dk_fault_apply(struct dk_flow *f, struct rte_mbuf **pkts, unsigned n,
			       struct rte_mbuf **out, uint64_t now)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++) {
		struct kvw_fault_action a;
		struct rte_mbuf *m = pkts[i];
		kvw_fault_decide(f->fault, m->data_len, sizeof(struct rte_ether_hdr), &a);
		if (a.copies == 0) {
			f->cnt->drops++;
			rte_pktmbuf_free(m);
			continue;
		}
		if (a.corrupt)
			dk_corrupt(&m, &a);
		struct rte_mbuf *dup = a.copies > 1 ? rte_pktmbuf_copy(m, f->port->pool, 0, UINT32_MAX) : NULL;
		if (a.hold_ns && kvw_fault_hold(f->fault, m, now, a.hold_ns))
			m = NULL;
		if (m)
			out[k++] = m;
		if (dup)
			out[k++] = dup;
	}
	return k;
}

static unsigned dk_tx_raw(struct dk_flow *f, struct rte_mbuf **pkts, unsigned n)
{
	uint16_t q = (uint16_t)(f->txq_rr++ % f->port->nq);
	unsigned sent = 0;
	for (int tries = 0; f->port->link_up && sent < n && tries < 4; tries++)
		sent += rte_eth_tx_burst(f->port->port_id, q, pkts + sent, (uint16_t)(n - sent));
	for (unsigned i = sent; i < n; i++)
		rte_pktmbuf_free(pkts[i]);
	return sent;
}

/* Sends n frames (through the fault injector when configured); returns how
 * many the queue took, in order. Refused frames are freed: new ones are
 * rolled back by the caller, retransmissions come again on the timer. */
unsigned dk_tx_burst(struct dk_flow *f, struct rte_mbuf **pkts, unsigned n)
{
	struct rte_mbuf *out[2 * DK_BURST];
	unsigned total = n;

	if (!n)
		return 0;
	if (!f->fault)
		return dk_tx_raw(f, pkts, n);
	while (n) {
		unsigned c = n > DK_BURST ? DK_BURST : n;
		unsigned k = dk_fault_apply(f, pkts, c, out, dk_now_ns);
		dk_tx_raw(f, out, k);
		pkts += c;
		n -= c;
	}
	return total; /* with faults, refused frames count as lost */
}

void dk_tx_fault_due(struct dk_flow *f, uint64_t now)
{
	struct rte_mbuf *out[DK_BURST];
	unsigned k = 0;
	void *m;

	if (!f->fault)
		return;
	while (k < DK_BURST && (m = kvw_fault_due(f->fault, now)))
		out[k++] = m;
	dk_tx_raw(f, out, k);
}

/* One pass asking the PMD to release transmitted buffers (no wait). */
void dk_tx_cleanup(struct dk_flow *f)
{
	for (uint16_t q = 0; q < f->port->nq; q++)
		rte_eth_tx_done_cleanup(f->port->port_id, q, 0);
}

void dk_tx_fault_flush(struct dk_flow *f)
{
	void *m;
	if (f->fault)
		while ((m = kvw_fault_drain(f->fault)))
			rte_pktmbuf_free(m);
}

uint64_t dk_cancel_ns(const struct dk_flow *f)
{
	unsigned ms = kvw_core_cfg(f->ctx)->dpdk_cancel_ms;
	return (uint64_t)(ms ? ms : 200) * 1000000ull;
}

/* Waits (bounded) until the PMD gave back every external buffer of f:
 * after that no device reads the sender's pages for this flow. Never
 * called inside kvw_progress with max_ns > 0 (context close, an
 * application's kvw_ep_close). */
void dk_tx_drain_ext(struct dk_flow *f, uint64_t max_ns)
{
	dk_tx_fault_flush(f);
	uint64_t end = kvw_now_ns() + max_ns;
	while (f->outstanding_ext && kvw_now_ns() < end)
		dk_tx_cleanup(f);
}

/* The same for one request's buffers (o stays valid: a record with
 * buffers out is never freed). */
void dk_tx_drain_own(struct dk_flow *f, struct dk_own *o, uint64_t max_ns)
{
	uint64_t end = kvw_now_ns() + max_ns;
	while (o->ext && kvw_now_ns() < end)
		dk_tx_cleanup(f);
}
