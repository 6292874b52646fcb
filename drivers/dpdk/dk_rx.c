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
	if (udp_payload < DK_FRAME_HDR)
		return "UDP payload shorter than a kvwire header";
	if (h->magic != KVW_WIRE_MAGIC)
		return "bad magic";
	if (h->major != KVW_WIRE_MAJOR)
		return "unsupported wire major version";
	if (h->type == 0 || h->type >= KVW_T_MAX_)
		return "unknown frame type";
	if (h->len != udp_payload - DK_FRAME_HDR)
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
	if (!f) {
		struct dk_listener *dl = dk_lis_find(p, lport);
		if (!dl || k.h.type != KVW_T_HELLO || k.h.psn != 1 || (k.h.flags & DK_F_SEG)) {
			p->unmatched++;
			return;
		}
		f = dk_flow_accept(dd, p, dl, &k.eh->src_addr, k.ip->src_addr, rport);
		if (!f)
			return;
	}
	if (!f->mac_known) {
		rte_ether_addr_copy(&k.eh->src_addr, &f->rmac);
		f->mac_known = true;
	}
	dk_rel_on_packet(f, m, &k.h, DK_HDRS + DK_FRAME_HDR);
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
