/* SPDX-License-Identifier: MIT */
/* dpdk driver: what makes a frame the peer's.
 * - Connection ids and first psns drawn at random per flow and direction:
 *   a host that sees no frame of the flow must guess 32 bits of id and
 *   where an 8192-psn window lies in 2^32.
 * - Cookies: a listener answers a HELLO without keeping anything (SipHash-2-4
 *   of the HELLO's source, keyed per listener, changing every 2^35 ns); a flow
 *   exists only once a HELLO echoes one, i.e. once the source has shown that
 *   it receives what is sent to it.
 * - With a secret, from READY on: a per-frame authenticator keyed from the
 *   handshake's session key, AES-256-GCM over the frame where both ends have
 *   AES-NI, else ChaCha20-Poly1305 (libsodium), nonce = direction | counter.
 * See docs/drivers/dpdk.md ("Frames and addressing", "Authentication"). */
#include "dk.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define DK_CK_SHIFT 35            /* cookie epoch 2^35 ns (34 s); the previous one counts too */
#define DK_CTR_SLACK (1ull << 20) /* a counter this far behind the newest is a replay */
#define DK_KDF_CTX "kvwire dpdk frames v1"

struct dk_mac {
	crypto_aead_aes256gcm_state gcm; /* first member: aligned as libsodium wants */
	uint8_t key[32];
	bool gcm_on;
	uint32_t cap;
	uint8_t buf[];                   /* one frame's UDP payload, made contiguous */
};

/* Bytes of f's authenticator state (ops->ep_resources). */
uint64_t dk_mac_bytes(const struct dk_flow *f)
{
	return f->mac ? sizeof(*f->mac) + f->mac->cap : 0;
}

uint32_t dk_rand32(bool nonzero)
{
	uint32_t v;

	do
		v = randombytes_random();
	while (nonzero && !v);
	return v;
}

void dk_cookie_key(struct dk_listener *dl)
{
	randombytes_buf(dl->ck_key, sizeof(dl->ck_key));
}

uint32_t dk_cookie(const struct dk_listener *dl, uint64_t now, int age, uint32_t sip, uint16_t sport,
		   const struct rte_ether_addr *smac)
{
	uint8_t in[8 + 4 + 2 + 2 + RTE_ETHER_ADDR_LEN], out[crypto_shorthash_BYTES];
	uint64_t epoch = (now >> DK_CK_SHIFT) - (uint64_t)age;
	uint32_t c;

	memcpy(in, &epoch, 8);
	memcpy(in + 8, &sip, 4);
	memcpy(in + 12, &sport, 2);
	memcpy(in + 14, &dl->lport, 2);
	memcpy(in + 16, smac->addr_bytes, RTE_ETHER_ADDR_LEN);
	crypto_shorthash(out, in, sizeof(in), dl->ck_key);
	memcpy(&c, out, sizeof(c));
	return c;
}

bool dk_cookie_ok(const struct dk_listener *dl, uint64_t now, uint32_t c, uint32_t sip, uint16_t sport,
		  const struct rte_ether_addr *smac)
{
	return c == dk_cookie(dl, now, 0, sip, sport, smac) || c == dk_cookie(dl, now, 1, sip, sport, smac);
}

bool dk_gcm_here(void)
{
	return crypto_aead_aes256gcm_is_available() != 0;
}

bool dk_mac_arm(struct dk_flow *f)
{
	uint8_t sk[32];

	if (f->mac_on)
		return true;
	if (!f->mac_want || !f->ep || !kvw_core_ep_session_key(f->ep, sk))
		return false;
	/* a frame as long as ours, or as the peer's if its MTU is larger (chained jumbo frames) */
	uint32_t cap = DK_FRAME_HDR + DK_AUTH + (f->mtu_payload > 9216 ? f->mtu_payload : 9216) + 64;
	struct dk_mac *m = aligned_alloc(64, (sizeof(*m) + cap + 63) & ~(size_t)63);
	if (!m) {
		sodium_memzero(sk, sizeof(sk));
		kvw_ep_fail(f->ep, KVW_ERR_NOMEM, "dpdk: out of memory for the frame authenticator; "
			    "free memory and connect again");
		return false;
	}
	crypto_generichash(m->key, sizeof(m->key), (const uint8_t *)DK_KDF_CTX, sizeof(DK_KDF_CTX) - 1,
			   sk, sizeof(sk));
	sodium_memzero(sk, sizeof(sk));
	m->gcm_on = f->peer_gcm && dk_gcm_here();
	if (m->gcm_on)
		crypto_aead_aes256gcm_beforenm(&m->gcm, m->key);
	m->cap = cap;
	f->mac = m;
	f->mac_on = true;
	f->rx_mac_psn = f->rcv_high;
	kvw_log(f->ctx, 3, "dpdk: endpoint %u: every frame authenticated from here on (%s)", f->id,
		m->gcm_on ? "AES-256-GCM" : "ChaCha20-Poly1305");
	return true;
}

void dk_mac_free(struct dk_flow *f)
{
	if (!f->mac)
		return;
	sodium_memzero(f->mac, sizeof(*f->mac));
	free(f->mac);
	f->mac = NULL;
}

/* The tag of len bytes (the UDP payload with the tag field zeroed). */
static void dk_tag(const struct dk_mac *m, const uint8_t *ad, uint32_t len, uint64_t ctr, bool from_client,
		   uint8_t tag[16])
{
	uint8_t npub[12], none[1] = { 0 }; /* no message: the frame is all associated data */
	uint32_t dir = from_client ? 0x43u : 0x53u; /* 'C', 'S': the two directions never share a nonce */
	unsigned long long tl;

	memcpy(npub, &dir, 4);
	memcpy(npub + 4, &ctr, 8);
	if (m->gcm_on)
		crypto_aead_aes256gcm_encrypt_detached_afternm(none, tag, &tl, none, 0, ad, len, NULL, npub, &m->gcm);
	else
		crypto_aead_chacha20poly1305_ietf_encrypt_detached(none, tag, &tl, none, 0, ad, len, NULL, npub,
								   m->key);
}

void dk_mac_seal(struct dk_flow *f, struct rte_mbuf *m)
{
	uint8_t *a = rte_pktmbuf_mtod_offset(m, uint8_t *, DK_HDRS + DK_FRAME_HDR);
	uint32_t udp = m->pkt_len - DK_HDRS;
	uint64_t ctr = ++f->tx_ctr;

	memcpy(a, &ctr, 8);
	memset(a + 8, 0, 16);
	if (udp > f->mac->cap)
		return; /* cannot be (the room was reserved); the peer drops it, the RTO resends */
	dk_copy_out(m, DK_HDRS, f->mac->buf, udp);
	dk_tag(f->mac, f->mac->buf, udp, ctr, f->is_client, a + 8);
}

bool dk_mac_check(struct dk_flow *f, struct rte_mbuf *m, uint32_t udp)
{
	uint8_t want[16], got[16], *a;
	const uint8_t *ad;
	uint64_t ctr;

	if (m->data_len >= DK_HDRS + udp) { /* one segment: check it in place */
		a = rte_pktmbuf_mtod_offset(m, uint8_t *, DK_HDRS + DK_FRAME_HDR);
		ad = rte_pktmbuf_mtod_offset(m, const uint8_t *, DK_HDRS);
	} else {
		if (udp > f->mac->cap)
			return false;
		dk_copy_out(m, DK_HDRS, f->mac->buf, udp);
		a = f->mac->buf + DK_FRAME_HDR;
		ad = f->mac->buf;
	}
	memcpy(&ctr, a, 8);
	memcpy(got, a + 8, 16);
	memset(a + 8, 0, 16);
	if (ctr + DK_CTR_SLACK < f->rx_ctr)
		return false; /* an old frame played again */
	dk_tag(f->mac, ad, udp, ctr, !f->is_client, want);
	if (crypto_verify_16(want, got) != 0)
		return false;
	if (ctr > f->rx_ctr)
		f->rx_ctr = ctr;
	return true;
}
