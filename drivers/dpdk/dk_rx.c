/* SPDX-License-Identifier: MIT */
/* dpdk driver: receive bursts, parse Ethernet/IPv4/UDP/kvwire headers
 * (trusting no length), demultiplex to flows and listeners. */
#include "dk.h"

#include <arpa/inet.h>
#include <string.h>

#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_udp.h>

uint32_t dk_ip_parse(const char *s, bool *ok)
{
	struct in_addr a;
	*ok = inet_pton(AF_INET, s, &a) == 1;
	return *ok ? a.s_addr : 0;
}

/* A malformed frame: counted on the port, and on every endpoint whose
 * peer has the frame's source address (the test's garbage comes from there). */
static void dk_bad(struct dk_port *p, uint32_t sip, const char *why)
{
	p->bad++;
	for (uint32_t i = 0; i < p->n_flows; i++) {
		struct dk_flow *f = p->flows[i];
		if (f->rip == sip && !f->dead && !f->closing)
			kvw_core_bad_frame(f->ep, why);
	}
}

static struct dk_flow *dk_flow_find(struct dk_port *p, uint16_t lport, uint32_t rip, uint16_t rport)
{
	for (uint32_t i = 0; i < p->n_flows; i++) {
		struct dk_flow *f = p->flows[i];
		if (f->lport == lport && f->rport == rport && f->rip == rip && !f->dead)
			return f;
	}
	return NULL;
}

static struct dk_listener *dk_lis_find(struct dk_port *p, uint16_t lport)
{
	for (uint32_t i = 0; i < p->n_lis; i++)
		if (p->lis[i].lport == lport)
			return &p->lis[i];
	return NULL;
}

/* Checks the kvwire header against the UDP payload length. */
static const char *dk_hdr_check(const struct kvw_wire_hdr *h, uint32_t udp_payload)
{
	uint32_t auth = h->flags & DK_F_MAC ? DK_AUTH : 0;

	if (udp_payload < DK_FRAME_HDR + auth)
		return "UDP payload shorter than a kvwire header";
	if (h->magic != KVW_WIRE_MAGIC)
		return "bad magic";
	if (h->major != KVW_WIRE_MAJOR)
		return "unsupported wire major version";
	if (h->type == 0 || h->type >= KVW_T_MAX_)
		return "unknown frame type";
	if (h->len != udp_payload - DK_FRAME_HDR - auth)
		return "kvwire length does not match the UDP length";
	return NULL;
}

struct dk_pkt {
	const struct rte_ether_hdr *eh;
	const struct rte_ipv4_hdr *ip;
	const struct rte_udp_hdr *uh;
	struct kvw_wire_hdr h;
	uint32_t udp_payload;
};

/* 1 = ours and well formed, 0 = not ours (ignored), -1 = malformed (why). */
static int dk_parse(struct dk_port *p, struct rte_mbuf *m, struct dk_pkt *k, const char **why)
{
	k->eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	k->ip = (const struct rte_ipv4_hdr *)(k->eh + 1);
	if (m->data_len < sizeof(struct rte_ether_hdr) + 20 ||
	    k->eh->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
	    k->ip->next_proto_id != IPPROTO_UDP)
		return 0;
	if (m->data_len < DK_HDRS) {
		*why = "frame shorter than Ethernet+IPv4+UDP headers";
		return -1;
	}
	k->uh = (const struct rte_udp_hdr *)(k->ip + 1);
	if (!dk_lis_find(p, rte_be_to_cpu_16(k->uh->dst_port)) &&
	    !dk_flow_find(p, rte_be_to_cpu_16(k->uh->dst_port), k->ip->src_addr,
			  rte_be_to_cpu_16(k->uh->src_port)))
		return 0;
	uint32_t tot = rte_be_to_cpu_16(k->ip->total_length);
	if (k->ip->version_ihl != RTE_IPV4_VHL_DEF || rte_raw_cksum(k->ip, 20) != 0xffff) {
		*why = "bad IPv4 header (options, version or checksum)";
		return -1;
	}
	if (rte_be_to_cpu_16(k->ip->fragment_offset) & (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) {
		*why = "IPv4 fragment";
		return -1;
	}
	if (tot < 28 || tot + sizeof(struct rte_ether_hdr) > m->pkt_len ||
	    rte_be_to_cpu_16(k->uh->dgram_len) != tot - 20) {
		*why = "truncated frame or inconsistent IPv4/UDP lengths";
		return -1;
	}
	if (k->uh->dgram_cksum && rte_ipv4_udptcp_cksum_mbuf_verify(m, k->ip, sizeof(struct rte_ether_hdr) + 20)) {
		*why = "UDP checksum mismatch";
		return -1;
	}
	k->udp_payload = tot - 28;
	if (k->udp_payload < DK_FRAME_HDR) {
		*why = "UDP payload shorter than a kvwire header";
		return -1;
	}
	const void *hp = rte_pktmbuf_read(m, DK_HDRS, DK_FRAME_HDR, &k->h);
	if (!hp) {
		*why = "truncated kvwire header";
		return -1;
	}
	if (hp != (const void *)&k->h)
		memcpy(&k->h, hp, DK_FRAME_HDR);
	*why = dk_hdr_check(&k->h, k->udp_payload);
	return *why ? -1 : 1;
}

/* No flow for the frame: only a HELLO to a listener's port counts. Without
 * a cookie, or with one that does not check out (stale, forged), it is
 * answered with a challenge and forgotten: nothing is allocated for a
 * source that has not shown it receives what is sent to it. */
static struct dk_flow *dk_lis_hello(struct dk_drv *dd, struct dk_port *p, const struct dk_pkt *k,
				    uint16_t lport, uint16_t rport)
{
	struct dk_listener *dl = dk_lis_find(p, lport);
	const struct rte_ether_addr *smac = &k->eh->src_addr;
	uint32_t sip = k->ip->src_addr;

	if (!dl || k->h.type != KVW_T_HELLO || (k->h.flags & (DK_F_SEG | DK_F_MAC)) ||
	    k->h.len != sizeof(struct kvw_wire_hello)) {
		p->unmatched++;
		return NULL;
	}
	if (!(k->h.flags & DK_F_ID) || !k->h.ep_id || !dk_cookie_ok(dl, dk_now_ns, k->h.ack, sip, rport, smac)) {
		p->forged += (k->h.flags & DK_F_ID) != 0;
		p->challenges++;
		dk_tx_challenge(p, dl, smac, sip, rport, dk_cookie(dl, dk_now_ns, 0, sip, rport, smac));
		return NULL;
	}
	return dk_flow_accept(dd, p, dl, smac, sip, rport, &k->h);
}

/* Client: the listener's first frame names its id and first psn. */
static void dk_peer_learn(struct dk_flow *f, const struct kvw_wire_hdr *h)
{
	f->rcid = h->ack;
	f->peer_isn = h->psn;
	f->rcv_nxt = f->rcv_high = h->psn;
	f->peer_gcm = (h->flags & DK_F_AESGCM) != 0;
	f->peer_known = true;
}

/* With a secret: once READY every frame carries a valid authenticator
 * (a late copy of a handshake frame below rx_mac_psn excepted); before,
 * tags cannot be checked yet and only in-order frames are taken
 * (dk_rel.c holds none), tagged ACKs are left for later. */
static bool dk_auth_ok(struct dk_flow *f, struct rte_mbuf *m, const struct dk_pkt *k)
{
	bool tagged = (k->h.flags & DK_F_MAC) != 0;

	if (f->mac_on) {
		if (tagged && dk_mac_check(f, m, k->udp_payload))
			return true;
		if (!tagged && k->h.type != KVW_T_ACK && (int32_t)(k->h.psn - f->rx_mac_psn) < 0)
			return true;
		dk_forged(f, tagged ? "a frame whose authenticator does not check out"
				    : "a frame without an authenticator (both sides have the secret)");
		return false;
	}
	if (!f->mac_want && tagged) {
		dk_forged(f, "a frame with an authenticator, but this side has no secret");
		return false;
	}
	return !(tagged && k->h.type == KVW_T_ACK);
}

/* The flow's own frames: its connection id, and its authenticator. */
static bool dk_flow_ours(struct dk_flow *f, struct rte_mbuf *m, const struct dk_pkt *k)
{
	const struct kvw_wire_hdr *h = &k->h;
	bool challenge = h->type == KVW_T_ACK && (h->flags & DK_F_ID) && !h->len;

	if (challenge) {
		if (f->is_client && !f->peer_known)
			dk_rel_on_challenge(f, h->ack);
		return false;
	}
	if (!f->is_client && h->type == KVW_T_HELLO && (h->flags & DK_F_ID) && h->ep_id == f->rcid &&
	    h->psn == f->peer_isn) { /* the HELLO again: our ack of it was lost */
		f->cnt->dups++;
		f->ack_now = true;
		return false;
	}
	if (h->ep_id != f->lcid) {
		dk_forged(f, "a frame with a wrong connection id");
		return false;
	}
	if (f->is_client && !f->peer_known && h->type != KVW_T_ACK) {
		if (!(h->flags & DK_F_ID))
			return false; /* not the listener's first frame: it comes again */
		dk_peer_learn(f, h);
	}
	return dk_auth_ok(f, m, k);
}

/* Client: the frame that armed the authenticator was the listener's READY,
 * which came before the key was known: its tag is checked now. */
static void dk_ready_check(struct dk_flow *f, struct rte_mbuf *m, const struct dk_pkt *k)
{
	if ((k->h.flags & DK_F_MAC) && dk_mac_check(f, m, k->udp_payload))
		return;
	if (f->ep)
		kvw_ep_fail(f->ep, KVW_ERR_AUTH, "dpdk: the listener's READY carried no valid frame "
			    "authenticator although both sides have the secret: it was forged by another "
			    "host on the link; the connection is not trusted, connect again");
}

static void dk_rx_one(struct dk_drv *dd, struct dk_port *p, struct rte_mbuf *m)
{
	struct dk_pkt k;
	const char *why = NULL;
	int rc = dk_parse(p, m, &k, &why);

	if (rc == 0)
		return;
	if (rc < 0) {
		dk_bad(p, k.ip->src_addr, why);
		return;
	}
	uint16_t lport = rte_be_to_cpu_16(k.uh->dst_port), rport = rte_be_to_cpu_16(k.uh->src_port);
	struct dk_flow *f = dk_flow_find(p, lport, k.ip->src_addr, rport);
	bool fresh = !f; /* made from this HELLO, its cookie checked */
	if (fresh && !(f = dk_lis_hello(dd, p, &k, lport, rport)))
		return;
	if (!fresh && !dk_flow_ours(f, m, &k))
		return;
	if (!f->mac_known) {
		rte_ether_addr_copy(&k.eh->src_addr, &f->rmac);
		f->mac_known = true;
	}
	bool armed = f->mac_on;
	dk_rel_on_packet(f, m, &k.h, DK_HDRS + DK_FRAME_HDR + (k.h.flags & DK_F_MAC ? DK_AUTH : 0));
	if (!armed && f->mac_on && f->is_client)
		dk_ready_check(f, m, &k);
}

void dk_rx_port(struct dk_drv *dd, struct dk_port *p)
{
	struct rte_mbuf *pkts[DK_BURST];

	for (uint16_t q = 0; q < p->nq; q++)
		for (unsigned b = 0; b < DK_RX_BURSTS; b++) {
			uint16_t n = rte_eth_rx_burst(p->port_id, q, pkts, DK_BURST);
			for (uint16_t i = 0; i < n; i++) {
				if (i + 1 < n)
					rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
				dk_rx_one(dd, p, pkts[i]);
				rte_pktmbuf_free(pkts[i]);
			}
			if (n < DK_BURST)
				break;
		}
}
