/* SPDX-License-Identifier: MIT */
/* Test helper for `kvwire decode`: writes kvwire frames built with wire.h
 * to stdout, well formed or with one named malformation, as raw bytes or
 * wrapped in a pcap (UDP datagrams, or a TCP stream cut into segments that
 * arrive out of order and with a retransmission).
 *   mkframes good|bad-magic|bad-version|bad-type|bad-flags|short-body|
 *            grant-counts|data-count|truncated|garbage|pcap-udp|pcap-tcp */
#include "kvwire/kvwire.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t out[65536];
static size_t out_len;

static void put(const void *p, size_t n)
{
	if (out_len + n > sizeof(out))
		abort();
	memcpy(out + out_len, p, n);
	out_len += n;
}

static void frame(unsigned type, const void *body, uint32_t len)
{
	uint8_t h[24];
	kvw_wire_hdr_encode(h, type, 0, len, 7);
	put(h, 24);
	put(body, len);
}

static void good_frames(void)
{
	struct kvw_wire_hello he = { .caps = KVW_CAP_MULTI_RAIL, .rails = 2 };
	memcpy(he.driver, "tcp", 4);
	frame(KVW_T_HELLO, &he, sizeof(he));
	struct kvw_wire_ping p = { .t_ns = 123456789, .cookie = 42 };
	frame(KVW_T_PING, &p, sizeof(p));
	uint8_t g[sizeof(struct kvw_wire_grant) + 2 * 8 + 3 * 4];
	struct kvw_wire_grant gr = { .seq_id = 1001, .token = 5, .n_blocks = 3, .n_layers = 2,
				     .block_bytes = 4096, .block_stride = 8192, .timeout_us = 1000000 };
	uint64_t lo[2] = { 0, 1 << 20 };
	uint32_t bl[3] = { 4, 5, 9 };
	memcpy(g, &gr, sizeof(gr));
	memcpy(g + sizeof(gr), lo, sizeof(lo));
	memcpy(g + sizeof(gr) + sizeof(lo), bl, sizeof(bl));
	frame(KVW_T_GRANT, g, sizeof(g));
	uint8_t d[sizeof(struct kvw_wire_data) + 8];
	struct kvw_wire_data da = { .token = 5, .layer = 1, .blk_idx = 2, .bytes = 8 };
	memcpy(d, &da, sizeof(da));
	memcpy(d + sizeof(da), "KVPAGE!!", 8);
	frame(KVW_T_DATA, d, sizeof(d));
	struct kvw_wire_seq_done sd = { .seq_id = 1001, .bytes = 24576, .status = 0 };
	frame(KVW_T_SEQ_DONE, &sd, sizeof(sd));
}

static int bad_frame(const char *mode)
{
	struct kvw_wire_ping p = { .t_ns = 1, .cookie = 2 };
	uint8_t h[24];
	kvw_wire_hdr_encode(h, KVW_T_PING, 0, sizeof(p), 7);
	if (!strcmp(mode, "bad-magic"))
		h[0] = 'X';
	else if (!strcmp(mode, "bad-version"))
		h[4] = 9;
	else if (!strcmp(mode, "bad-type"))
		h[6] = 99;
	else if (!strcmp(mode, "bad-flags"))
		h[7] = 0x80;
	else if (!strcmp(mode, "short-body"))
		h[8] = 8; /* PING with an 8-byte body */
	else if (strcmp(mode, "truncated") && strcmp(mode, "garbage"))
		return -1;
	put(h, 24);
	put(&p, !strcmp(mode, "short-body") ? 8 : !strcmp(mode, "truncated") ? 10 : sizeof(p));
	if (!strcmp(mode, "garbage"))
		put("junkjunk", 8);
	return 0;
}

static void grant_counts(void)
{
	struct kvw_wire_grant gr = { .seq_id = 9, .token = 1, .n_blocks = 1000, .n_layers = 1,
				     .block_bytes = 4096, .block_stride = 4096 };
	uint8_t g[sizeof(gr) + 8 + 4];
	memset(g, 0, sizeof(g));
	memcpy(g, &gr, sizeof(gr));
	frame(KVW_T_GRANT, g, sizeof(g)); /* says 1000 blocks, carries 1 */
}

static void data_count(void)
{
	uint8_t d[sizeof(struct kvw_wire_data) + 8];
	struct kvw_wire_data da = { .token = 5, .bytes = 4096 };
	memset(d, 0, sizeof(d));
	memcpy(d, &da, sizeof(da));
	frame(KVW_T_DATA, d, sizeof(d)); /* says 4096 bytes, carries 8 */
}

/* ------------------------------------------------------------------ pcap */
static void le32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static void pcap_hdr(void)
{
	uint8_t g[24] = { 0 };
	le32(g, 0xa1b2c3d4);
	g[4] = 2; g[6] = 4;          /* version 2.4 */
	le32(g + 16, 65535);         /* snaplen */
	le32(g + 20, 1);             /* LINKTYPE_ETHERNET */
	fwrite(g, 1, 24, stdout);
}

/* Ethernet + IPv4 127.0.0.1 -> 127.0.0.1 + UDP/TCP with payload. */
static void pcap_pkt(int tcp, uint32_t seq, int syn, const uint8_t *pl, size_t n)
{
	static uint8_t pkt[2048];
	size_t l4 = tcp ? 20 : 8, tot = 20 + l4 + n, len = 14 + tot;
	memset(pkt, 0, 14 + 20 + l4);
	pkt[12] = 0x08;                                   /* IPv4 */
	uint8_t *ip = pkt + 14, *t = ip + 20;
	ip[0] = 0x45; ip[2] = (uint8_t)(tot >> 8); ip[3] = (uint8_t)tot; ip[8] = 64;
	ip[9] = tcp ? 6 : 17;
	ip[12] = ip[16] = 127; ip[15] = ip[19] = 1;
	t[0] = 0x9c; t[1] = 0x40;                         /* sport 40000 */
	t[2] = 0x1d; t[3] = 0x2f;                         /* dport 7471 */
	if (tcp) {
		t[4] = (uint8_t)(seq >> 24); t[5] = (uint8_t)(seq >> 16);
		t[6] = (uint8_t)(seq >> 8); t[7] = (uint8_t)seq;
		t[12] = 5 << 4;
		t[13] = syn ? 0x02 : 0x18;
	} else {
		t[4] = (uint8_t)((8 + n) >> 8); t[5] = (uint8_t)(8 + n);
	}
	if (n)
		memcpy(t + l4, pl, n);
	uint8_t ph[16] = { 0 };
	le32(ph + 8, (uint32_t)len);
	le32(ph + 12, (uint32_t)len);
	fwrite(ph, 1, 16, stdout);
	fwrite(pkt, 1, len, stdout);
}

static void pcap_udp(void)
{
	pcap_hdr();
	good_frames();
	size_t off = 0;
	while (off < out_len) {   /* one frame per datagram */
		uint32_t len;
		memcpy(&len, out + off + 8, 4);
		pcap_pkt(0, 0, 0, out + off, 24 + len);
		off += 24 + len;
	}
	pcap_pkt(0, 0, 0, (const uint8_t *)"not kvwire at all", 17);
}

static void pcap_tcp(void)
{
	const uint32_t isn = 1000;
	pcap_hdr();
	good_frames();
	size_t a = 50, b = 120;
	pcap_pkt(1, isn, 1, NULL, 0);
	pcap_pkt(1, isn + 1, 0, out, a);
	pcap_pkt(1, isn + 1 + (uint32_t)b, 0, out + b, out_len - b);     /* out of order */
	pcap_pkt(1, isn + 1 + (uint32_t)a, 0, out + a, b - a);
	pcap_pkt(1, isn + 1 + (uint32_t)a, 0, out + a, b - a);           /* retransmission */
	pcap_pkt(1, isn + 1 + 40, 0, out + 40, 20);                      /* overlapping */
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "good";
	if (!strcmp(mode, "pcap-udp") || !strcmp(mode, "pcap-tcp")) {
		if (mode[5] == 'u')
			pcap_udp();
		else
			pcap_tcp();
		return 0;
	}
	if (!strcmp(mode, "good"))
		good_frames();
	else if (!strcmp(mode, "grant-counts"))
		grant_counts();
	else if (!strcmp(mode, "data-count"))
		data_count();
	else if (bad_frame(mode)) {
		fprintf(stderr, "mkframes: unknown mode %s\n", mode);
		return 2;
	}
	fwrite(out, 1, out_len, stdout);
	return 0;
}
