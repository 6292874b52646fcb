/* SPDX-License-Identifier: MIT */
/* dpdk driver: the reliable packet layer of one flow (endpoint).
 * Sender: psn per packet, window = min(ring, peer credits, config window),
 * cumulative + selective acks, RTO from Jacobson/Karels with Karn's rule,
 * fast retransmit of SACK holes, pacing, void fillers for cancelled
 * fragments. Receiver: bitmap window, duplicate suppression, data placed
 * on arrival (any order), control frames delivered in psn order. */
#include "dk.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rte_ethdev.h>

/* Out-of-order control bytes kept by every flow of the process (DK_HELD_ALL_MAX). */
static size_t dk_held_all;

static inline bool dk_bit(const struct dk_flow *f, uint32_t psn)
{
	uint32_t i = psn & (DK_RWIN - 1);
	return f->rbits[i / 64] & (1ull << (i % 64));
}

static inline void dk_bit_set(struct dk_flow *f, uint32_t psn, bool on)
{
	uint32_t i = psn & (DK_RWIN - 1);
	if (on)
		f->rbits[i / 64] |= 1ull << (i % 64);
	else
		f->rbits[i / 64] &= ~(1ull << (i % 64));
}

/* The send ring (720 KB) is mapped, not malloc'd: untouched slots cost no
 * memory, so a flow that never gets past the handshake costs a few pages
 * (from the heap, calloc would zero all of it). */
static struct dk_slot *dk_ring_alloc(void)
{
	void *p = mmap(NULL, DK_RING * sizeof(struct dk_slot), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

kvw_status dk_flow_init(struct dk_flow *f, kvw_ep *ep)
{
	const struct kvw_cfgv *cfg = kvw_core_cfg(kvw_core_ep_ctx(ep));
	char err[160];

	f->ep = ep;
	f->ctx = kvw_core_ep_ctx(ep);
	f->id = kvw_core_ep_id(ep);
	f->cnt = kvw_core_ep_counters(ep);
	f->ring = dk_ring_alloc();
	f->rbits = calloc(DK_RWIN / 64, sizeof(uint64_t));
	/* request records (96 KB): mapped like the ring, so pages are touched
	 * only as records are handed out (from index 0 up) */
	void *own = mmap(NULL, DK_OWNERS * sizeof(*f->own), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	f->own = own == MAP_FAILED ? NULL : own;
	f->own_hash = calloc(DK_OWN_HASH, sizeof(*f->own_hash));
	if (!f->ring || !f->rbits || !f->own || !f->own_hash)
		return kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_NOMEM, "dpdk: out of memory for a flow");
	/* random ids and first psn: nothing an off-path host could predict */
	f->lcid = dk_rand32(true);
	f->isn = f->una = f->nxt = f->tail = f->sack_high = dk_rand32(false);
	f->peer_credits = DK_RWIN;
	f->mac_want = kvw_core_ep_has_secret(ep); /* frames carry an authenticator once READY */
	if (f->mac_want)
		f->mtu_payload -= DK_AUTH;
	uint64_t win = cfg->window ? cfg->window : (16u << 20);
	uint64_t pk = win / (f->mtu_payload ? f->mtu_payload : 1400);
	if (pk > f->max_inflight)
		pk = f->max_inflight; /* set by the caller: URI inflight= or DK_INFLIGHT */
	f->max_inflight = pk < 16 ? 16 : pk > DK_RING - 1 ? DK_RING - 1 : (uint32_t)pk;
	f->rto_ns = DK_RTO_INIT_NS;
	f->last_progress_ns = kvw_now_ns();
	if (kvw_fault_create_salted(cfg->fault, kvw_core_ep_id(ep), &f->fault, err, sizeof(err)) != KVW_OK)
		return kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_INVALID, "dpdk: config fault: %s", err);
	if (f->fault && kvw_fault_get_spec(f->fault)->corrupt > 0)
		f->cksum = true;
	return KVW_OK;
}

static void dk_held_free(struct dk_flow *f, uint32_t i)
{
	uint8_t *b = f->held[i];
	struct kvw_wire_hdr h;

	memcpy(&h, b, sizeof(h));
	f->held_bytes -= DK_FRAME_HDR + h.len;
	__atomic_sub_fetch(&dk_held_all, DK_FRAME_HDR + h.len, __ATOMIC_RELAXED);
	free(b);
	f->held[i] = NULL;
}

void dk_flow_fini(struct dk_flow *f)
{
	if (f->ring)
		for (uint32_t p = f->una; p != f->tail; p++) {
			struct dk_slot *s = &f->ring[p & (DK_RING - 1)];
			if (s->kind == DK_SLOT_CTRL)
				free(s->ctrl.buf);
		}
	if (f->held)
		for (uint32_t i = 0; i < DK_RWIN; i++)
			if (f->held[i])
				dk_held_free(f, i);
	if (f->ring)
		munmap(f->ring, DK_RING * sizeof(*f->ring));
	free(f->rbits);
	free(f->held);
	free(f->reasm);
	dk_mac_free(f);
	kvw_fault_destroy(f->fault);
	if (f->own)
		munmap(f->own, DK_OWNERS * sizeof(*f->own));
	free(f->own_hash);
}

/* A frame that is not the peer's: dropped, counted, and logged with what
 * it was; nothing about the peer is concluded from it. */
void dk_forged(struct dk_flow *f, const char *what)
{
	char why[200];

	f->port->forged++;
	if (!f->ep || f->closing)
		return;
	snprintf(why, sizeof(why), "dpdk: dropped %s: not the peer's, forged (or left over from an "
		 "earlier connection)", what);
	kvw_core_bad_frame(f->ep, why);
}

/* ------------------------------------------------------- request records */
/* Open addressing with linear probing over DK_OWN_HASH slots (at most
 * DK_OWNERS in use: the table never fills); deletion shifts back. */
static uint32_t dk_own_h(const kvw_req *r)
{
	uint64_t v = (uint64_t)(uintptr_t)r;
	v ^= v >> 29;
	v *= 0x9e3779b97f4a7c15ull;
	return (uint32_t)(v >> 40) & (DK_OWN_HASH - 1);
}

static struct dk_own *dk_own_find(struct dk_flow *f, const kvw_req *req)
{
	for (uint32_t i = dk_own_h(req);; i = (i + 1) & (DK_OWN_HASH - 1)) {
		uint32_t k = f->own_hash[i];
		if (!k)
			return NULL;
		if (f->own[k - 1].req == req)
			return &f->own[k - 1];
	}
}

static void dk_own_unhash(struct dk_flow *f, struct dk_own *o)
{
	uint32_t idx = (uint32_t)(o - f->own) + 1, i = dk_own_h(o->req);

	while (f->own_hash[i] != idx) {
		if (!f->own_hash[i])
			return;
		i = (i + 1) & (DK_OWN_HASH - 1);
	}
	f->own_hash[i] = 0;
	for (uint32_t j = (i + 1) & (DK_OWN_HASH - 1); f->own_hash[j]; j = (j + 1) & (DK_OWN_HASH - 1)) {
		uint32_t h = dk_own_h(f->own[f->own_hash[j] - 1].req);
		/* the entry at j stays unless its home lies cyclically outside (i, j] */
		bool stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
		if (stays)
			continue;
		f->own_hash[i] = f->own_hash[j];
		f->own_hash[j] = 0;
		i = j;
	}
}

/* The LIVE record of req, made if there is none; NULL when all are in use
 * (queue_frags then takes no more: the ring's acks free them). */
static struct dk_own *dk_own_get(struct dk_flow *f, const kvw_req *req)
{
	struct dk_own *o;
	uint32_t idx;

	if (f->own_last && f->own[f->own_last - 1].state == DK_OWN_LIVE && f->own[f->own_last - 1].req == req)
		return &f->own[f->own_last - 1];
	if ((o = dk_own_find(f, req))) {
		f->own_last = (uint32_t)(o - f->own) + 1;
		return o;
	}
	if (f->own_free) {
		idx = f->own_free;
		f->own_free = f->own[idx - 1].next_free;
	} else if (f->own_hw < DK_OWNERS) {
		idx = ++f->own_hw;
	} else {
		return NULL;
	}
	o = &f->own[idx - 1];
	*o = (struct dk_own){ .f = f, .req = req, .state = DK_OWN_LIVE };
	uint32_t i = dk_own_h(req);
	while (f->own_hash[i])
		i = (i + 1) & (DK_OWN_HASH - 1);
	f->own_hash[i] = (uint16_t)idx;
	f->own_last = idx;
	return o;
}

static void dk_own_free(struct dk_flow *f, struct dk_own *o)
{
	uint32_t idx = (uint32_t)(o - f->own) + 1;

	if (o->state == DK_OWN_LIVE)
		dk_own_unhash(f, o);
	if (f->own_last == idx)
		f->own_last = 0;
	o->state = DK_OWN_FREE;
	o->req = NULL;
	o->next_free = f->own_free;
	f->own_free = idx;
}

/* A CANCEL record waits for dk_rel_cancel_poll; the others go once no slot
 * names them and the PMD holds none of their buffers. */
void dk_own_release(struct dk_flow *f, struct dk_own *o)
{
	if (!o->slots && !o->ext && (o->state == DK_OWN_LIVE || o->state == DK_OWN_ORPHAN))
		dk_own_free(f, o);
}

/* A DATA slot stops naming its record (acked or voided). */
static void dk_slot_unown(struct dk_flow *f, struct dk_slot *s)
{
	if (!s->data.own)
		return;
	struct dk_own *o = &f->own[s->data.own - 1];
	s->data.own = 0;
	o->slots--;
	dk_own_release(f, o);
}

/* ---------------------------------------------------------------- sending */
static struct dk_slot *dk_slot_new(struct dk_flow *f)
{
	if (f->tail - f->una >= DK_RING - 1)
		return NULL;
	struct dk_slot *s = &f->ring[f->tail & (DK_RING - 1)];
	memset(s, 0, sizeof(*s));
	f->tail++;
	return s;
}

static uint32_t dk_ring_free(const struct dk_flow *f)
{
	return DK_RING - 1 - (f->tail - f->una);
}

/* A control frame goes out whole when it fits a packet, else as chunks
 * of its bytes (header included) flagged DK_F_SEG, the last DK_F_SEG_END. */
kvw_status dk_rel_queue_ctrl(struct dk_flow *f, const void *frame, size_t len)
{
	const struct kvw_wire_hdr *fh = frame;
	uint32_t mp = f->mtu_payload;
	bool whole = len - DK_FRAME_HDR <= mp;
	size_t chunks = whole ? 1 : (len + mp - 1) / mp;

	if (len < DK_FRAME_HDR)
		return kvw_set_err(f->ctx, KVW_ERR_INVALID, "dpdk: control frame shorter than a header");
	if (f->mac_want && !f->mac_on)
		dk_mac_arm(f); /* listener: READY is queued once the endpoint is READY */
	if (chunks > dk_ring_free(f))
		return kvw_set_err(f->ctx, KVW_ERR_NOMEM, "dpdk: send window full (%u packets queued); "
				   "the peer is not acknowledging", f->tail - f->una);
	const uint8_t *src = whole ? (const uint8_t *)frame + DK_FRAME_HDR : frame;
	size_t left = whole ? len - DK_FRAME_HDR : len;
	for (size_t c = 0; c < chunks; c++) {
		size_t n = left < mp ? left : mp;
		struct dk_slot *s = dk_slot_new(f);
		s->kind = DK_SLOT_CTRL;
		s->h = *fh;
		s->h.flags &= (uint8_t)~(DK_F_SEG | DK_F_SEG_END | DK_F_VOID);
		if (!whole)
			s->h.flags |= DK_F_SEG | (c + 1 == chunks ? DK_F_SEG_END : 0);
		s->len = (uint32_t)n;
		s->ctrl.buf = n ? malloc(n) : NULL;
		if (n && !s->ctrl.buf) {
			s->kind = DK_SLOT_VOID; /* keeps the psn space whole */
			return kvw_set_err(f->ctx, KVW_ERR_NOMEM, "dpdk: out of memory");
		}
		if (n)
			memcpy(s->ctrl.buf, src, n);
		src += n;
		left -= n;
	}
	return KVW_OK;
}

/* The receiver names a place by (index in its block list, offset below one
 * block): a piece `off` bytes into a fragment that spans several blocks of
 * one run moves to the block it starts in. */
static void dk_frag_dst(const kvw_frag *x, uint32_t off, struct kvw_wire_data *d)
{
	uint64_t bb = x->req ? kvw_core_req_peer_block_bytes(x->req) : 0;
	uint64_t at = x->blk_off + off;

	if (!bb) {
		d->blk_idx = x->blk_idx;
		d->blk_off = at;
		return;
	}
	d->blk_idx = x->blk_idx + (uint32_t)(at / bb);
	d->blk_off = at % bb;
}

size_t dk_rel_queue_frags(struct dk_flow *f, const kvw_frag *fr, size_t n)
{
	uint32_t mp = f->mtu_payload - DK_DATA_HDR;
	size_t taken = 0;

	for (; taken < n; taken++) {
		const kvw_frag *x = &fr[taken];
		uint32_t pk = (x->bytes + mp - 1) / mp;
		if (pk > dk_ring_free(f))
			break;
		struct dk_own *o = dk_own_get(f, x->req);
		if (!o)
			break;
		uint32_t own = (uint32_t)(o - f->own) + 1;
		for (uint32_t off = 0; off < x->bytes; off += mp) {
			struct dk_slot *s = dk_slot_new(f);
			uint32_t b = x->bytes - off < mp ? x->bytes - off : mp;
			s->kind = DK_SLOT_DATA;
			kvw_wire_hdr_encode(&s->h, KVW_T_DATA, 0, 0, kvw_core_ep_peer_id(f->ep));
			s->len = b;
			s->data.d.token = x->token;
			s->data.d.layer = x->layer;
			s->data.d.bytes = b;
			dk_frag_dst(x, off, &s->data.d);
			s->data.src = x->src + off;
			s->data.mem = x->src_mem;
			s->data.req = x->req;
			s->data.own = own;
			o->slots++;
		}
	}
	return taken;
}

/* Queued and unacked fragments of req (NULL: of every request) become
 * void fillers: their psns still go out, carrying no payload. */
void dk_rel_void(struct dk_flow *f, const kvw_req *req)
{
	for (uint32_t p = f->una; p != f->tail; p++) {
		struct dk_slot *s = &f->ring[p & (DK_RING - 1)];
		if (s->kind == DK_SLOT_DATA && (!req || s->data.req == req)) {
			dk_slot_unown(f, s);
			s->kind = DK_SLOT_VOID;
			s->len = 0;
			s->data.src = NULL;
		}
	}
}

/* Abort, sender side: req's fragments turn void (no page of it is read
 * for a frame built from now on) and the frames the fault injector holds
 * go. External buffers over its pages that the PMD still holds (net_ring:
 * until the receiver reads the ring) are waited for without blocking:
 * KVW_INPROGRESS, and dk_rel_cancel_poll reports kvw_core_cancel_done once
 * the last of them came back, or after dpdk_cancel_ms with a log line
 * (as the bounded wait before it did). */
kvw_status dk_rel_cancel(struct dk_flow *f, kvw_req *req)
{
	dk_rel_void(f, req);
	dk_tx_fault_flush(f);
	struct dk_own *o = dk_own_find(f, req);
	if (!o)
		return KVW_OK;
	if (o->ext)
		dk_tx_cleanup(f);
	if (!o->ext) {
		dk_own_release(f, o);
		return KVW_OK;
	}
	if (f->ep && kvw_core_ep_ready(f->ep)) {
		dk_own_unhash(f, o);
		o->state = DK_OWN_CANCEL;
		o->seq_id = kvw_core_req_seq_id(req);
		o->cancel_end_ns = kvw_now_ns() + dk_cancel_ns(f);
		f->n_cancel++;
		return KVW_INPROGRESS;
	}
	/* The endpoint is failing or closing: the core ends the request now
	 * whatever we answer. Called by the application (kvw_ep_close), the
	 * bounded wait of before still runs; inside kvw_progress nothing waits. */
	if (!kvw_core_batching(f->ctx))
		dk_tx_drain_own(f, o, dk_cancel_ns(f));
	if (o->ext) {
		kvw_log(f->ctx, 2, "dpdk: ep %u: a send request ended with its endpoint while the PMD "
			"still holds %u tx buffers over its pages", f->id, o->ext);
		dk_own_unhash(f, o);
		o->state = DK_OWN_ORPHAN;
	}
	dk_own_release(f, o);
	return KVW_OK;
}

/* From progress, each pass while cancels wait: one non-blocking cleanup
 * of the port's tx queues, then every cancel whose buffers all came back
 * (or whose dpdk_cancel_ms passed) is reported. */
void dk_rel_cancel_poll(struct dk_flow *f, uint64_t now)
{
	if (!f->n_cancel)
		return;
	dk_tx_cleanup(f);
	for (uint32_t i = 0; i < f->own_hw && f->n_cancel; i++) {
		struct dk_own *o = &f->own[i];
		if (o->state != DK_OWN_CANCEL || (o->ext && now < o->cancel_end_ns))
			continue;
		uint64_t seq = o->seq_id;
		if (o->ext)
			kvw_log(f->ctx, 1, "dpdk: ep %u: cancel of sequence %llu: the PMD still holds %u tx "
				"buffers over its pages after %llu ms (dpdk_cancel_ms); reporting it done anyway",
				f->id, (unsigned long long)seq, o->ext,
				(unsigned long long)(dk_cancel_ns(f) / 1000000ull));
		f->n_cancel--;
		o->state = DK_OWN_ORPHAN;
		dk_own_release(f, o);
		if (f->ep && kvw_core_ep_alive(f->ep))
			kvw_core_cancel_done(f->ep, seq);
	}
}

void dk_rel_cancel_forget(struct dk_flow *f)
{
	for (uint32_t i = 0; i < f->own_hw && f->n_cancel; i++) {
		struct dk_own *o = &f->own[i];
		if (o->state != DK_OWN_CANCEL)
			continue;
		f->n_cancel--;
		o->state = DK_OWN_ORPHAN;
		dk_own_release(f, o);
	}
}

static void dk_rtt_sample(struct dk_flow *f, uint64_t rtt)
{
	if (!f->min_rtt_ns || rtt < f->min_rtt_ns)
		f->min_rtt_ns = rtt;
	if (!f->srtt_ns) {
		f->srtt_ns = rtt;
		f->rttvar_ns = rtt / 2;
	} else {
		uint64_t err = rtt > f->srtt_ns ? rtt - f->srtt_ns : f->srtt_ns - rtt;
		f->rttvar_ns = (3 * f->rttvar_ns + err) / 4;
		f->srtt_ns = (7 * f->srtt_ns + rtt) / 8;
	}
	uint64_t rto = f->srtt_ns + 4 * f->rttvar_ns;
	f->rto_ns = rto < DK_RTO_MIN_NS ? DK_RTO_MIN_NS : rto > DK_RTO_MAX_NS ? DK_RTO_MAX_NS : rto;
	f->cnt->rtt_us = f->srtt_ns / 1000;
}

/* A packet reached the peer: RACK's clock. */
static void dk_delivered(struct dk_flow *f, const struct dk_slot *s)
{
	if (s->t_sent > f->rack_t)
		f->rack_t = s->t_sent;
}

/* D-SACK: the peer got psn twice. If we had resent it, the original was
 * only late (reordered, not lost): widen the reordering window, as RACK
 * does (RFC 8985 7.2), up to one smoothed RTT (a longer wait for every
 * real loss would cost more than the spurious resends it saves). */
static void dk_on_dsack(struct dk_flow *f, uint32_t dsack)
{
	uint32_t p = dsack - 1;
	const struct dk_slot *s = &f->ring[p & (DK_RING - 1)];

	if (!dsack || (int32_t)(f->nxt - p) <= 0 || (int32_t)(f->tail - p) > (int32_t)DK_RING ||
	    !(s->fl & DK_SL_RETX))
		return;
	uint64_t w = f->reo_ns ? 2 * f->reo_ns : 2 * DK_REO_MIN_NS;
	uint64_t cap = f->srtt_ns > 2 * DK_REO_MIN_NS ? f->srtt_ns : 2 * DK_REO_MIN_NS;
	f->reo_ns = w > cap ? cap : w;
}

static void dk_on_cum_ack(struct dk_flow *f, uint32_t ack, uint64_t now)
{
	if ((int32_t)(ack - f->una) <= 0 || (int32_t)(ack - f->nxt) > 0)
		return;
	f->first_acked = true;
	for (; f->una != ack; f->una++) {
		struct dk_slot *s = &f->ring[f->una & (DK_RING - 1)];
		if (!(s->fl & DK_SL_SACKED))
			dk_delivered(f, s);
		if (s->kind == DK_SLOT_CTRL)
			free(s->ctrl.buf);
		else if (s->kind == DK_SLOT_DATA)
			dk_slot_unown(f, s);
		s->kind = DK_SLOT_FREE;
	}
	f->reo_ns -= f->reo_ns / 64; /* the learnt window fades while all goes well */
	if (f->srtt_ns) { /* progress ends the backoff */
		uint64_t rto = f->srtt_ns + 4 * f->rttvar_ns;
		f->rto_ns = rto < DK_RTO_MIN_NS ? DK_RTO_MIN_NS : rto > DK_RTO_MAX_NS ? DK_RTO_MAX_NS : rto;
	}
	f->last_progress_ns = now;
	f->rto_due_ns = f->una != f->nxt ? now + f->rto_ns : 0;
}

/* An ACK is checked as a whole before any of it is used: its cumulative
 * ack within what was sent, at most 16 SACK ranges, each non-empty, above
 * the cumulative ack and the range before it, and ending at most at nxt.
 * 1 = usable, 0 = stale (an older ACK overtaken by a newer one: ignored),
 * -1 = impossible from the peer (forged or corrupt): why says what. */
static int dk_ack_check(const struct dk_flow *f, const struct kvw_wire_ack *a, const char **why)
{
	uint32_t low = a->cum_ack;

	*why = "an ACK that acknowledges psns never sent";
	if ((int32_t)(a->cum_ack - f->nxt) > 0)
		return -1;
	if ((int32_t)(a->cum_ack - f->una) < 0)
		return 0;
	*why = "an ACK with more than 16 SACK ranges";
	if (a->n_sack > KVW_WIRE_SACK_MAX)
		return -1;
	*why = "an ACK whose SACK ranges are empty, overlap, run backwards or name psns never sent";
	for (uint32_t i = 0; i < a->n_sack; i++) {
		uint32_t b = a->sack[i][0], e = a->sack[i][1];
		if ((int32_t)(b - low) <= 0 || (int32_t)(e - b) <= 0 || (int32_t)(e - f->nxt) > 0)
			return -1;
		low = e;
	}
	return 1;
}

/* Ranges already checked (dk_ack_check): at most nxt - una slots in all. */
static void dk_on_sack(struct dk_flow *f, const struct kvw_wire_ack *a)
{
	for (uint32_t i = 0; i < a->n_sack; i++) {
		uint32_t b = a->sack[i][0], e = a->sack[i][1];
		if ((int32_t)(b - f->una) < 0)
			b = f->una;
		for (uint32_t p = b; (int32_t)(e - p) > 0; p++) {
			struct dk_slot *s = &f->ring[p & (DK_RING - 1)];
			if (!(s->fl & DK_SL_SACKED))
				dk_delivered(f, s);
			s->fl |= DK_SL_SACKED;
		}
		if ((int32_t)(e - f->sack_high) > 0)
			f->sack_high = e;
	}
}

/* SACKed frames stay until the cumulative ack passes them. One the peer
 * SACKed but whose psn its cumulative ack still stops at was not received
 * after all (a lying or reneging peer): it becomes a hole again, so it is
 * resent, and the lie costs a resend, never the sequence. */
static void dk_renege(struct dk_flow *f)
{
	struct dk_slot *s = &f->ring[f->una & (DK_RING - 1)];

	if (f->una != f->nxt && (s->fl & DK_SL_SACKED))
		s->fl &= (uint8_t)~DK_SL_SACKED;
}

/* Fast retransmit, time-based as RACK (RFC 8985): a hole is lost once a
 * packet sent more than a reordering window after it was delivered; the
 * window is min_rtt/4 (at least DK_REO_MIN_NS), widened by D-SACKs up to
 * srtt, so frames merely overtaken (reordering) are not resent. A hole
 * whose (re)send is older than srtt + window + rttvar is lost too (RACK's
 * timer: a lost resend, with no later packet to reveal it, must not wait
 * for the RTO). Never resent within the last smoothed RTT. */
static void dk_fast_retx(struct dk_flow *f, uint64_t now)
{
	struct rte_mbuf *out[DK_BURST];
	unsigned k = 0;
	uint64_t guard = f->srtt_ns ? f->srtt_ns : DK_RTO_MIN_NS;
	uint64_t reo = f->min_rtt_ns / 4 > DK_REO_MIN_NS ? f->min_rtt_ns / 4 : DK_REO_MIN_NS;

	if (f->reo_ns > reo)
		reo = f->reo_ns;

	for (uint32_t p = f->una; (int32_t)(f->sack_high - p) > 0 && k < DK_BURST; p++) {
		struct dk_slot *s = &f->ring[p & (DK_RING - 1)];
		if ((s->fl & DK_SL_SACKED) || now - s->t_sent < guard ||
		    (s->t_sent + reo > f->rack_t && now - s->t_sent < guard + reo + f->rttvar_ns))
			continue;
		dk_tx_slot(f, p, out, &k);
		s->fl |= DK_SL_RETX;
		f->cnt->retransmits++;
	}
	dk_tx_burst(f, out, k);
}

/* RTT sample (Karn: first transmissions only) from the psn whose arrival
 * made the peer send this ACK; the ACK echoes it in echo_t_ns (psn + 1). */
static void dk_ack_rtt(struct dk_flow *f, const struct kvw_wire_ack *a, uint64_t now)
{
	uint32_t p = (uint32_t)a->echo_t_ns - 1;
	if (!a->echo_t_ns || (int32_t)(p - f->una) < 0 || (int32_t)(f->nxt - p) <= 0)
		return;
	struct dk_slot *s = &f->ring[p & (DK_RING - 1)];
	if (s->ntx == 1 && now > s->t_sent) {
		dk_rtt_sample(f, now - s->t_sent);
		s->ntx = 2; /* one sample per packet */
	}
}

static void dk_on_ack_frame(struct dk_flow *f, const struct kvw_wire_ack *a, uint64_t now)
{
	const char *why;
	int ok = dk_ack_check(f, a, &why);

	if (ok <= 0) {
		if (ok < 0)
			dk_forged(f, why);
		return;
	}
	dk_ack_rtt(f, a, now);
	dk_on_cum_ack(f, a->cum_ack, now);
	/* credits are a hint: the ring never passes the receiver's window */
	f->peer_credits = a->credits > DK_RWIN ? DK_RWIN : a->credits < DK_CREDITS_MIN ? DK_CREDITS_MIN : a->credits;
	dk_on_sack(f, a);
	dk_renege(f);
	dk_on_dsack(f, a->dsack);
	dk_fast_retx(f, now);
}

/* --------------------------------------------------------------- receiving */
static void dk_ctrl_frame(struct dk_flow *f, const uint8_t *frame, size_t len)
{
	struct kvw_wire_hdr h;
	const char *why = "";

	if (kvw_wire_check_hdr(frame, len, &h, &why) != KVW_OK || h.len != len - DK_FRAME_HDR) {
		kvw_core_bad_frame(f->ep, why);
		return;
	}
	kvw_core_on_frame(f->ep, &h, frame + DK_FRAME_HDR);
	if (f->mac_want && !f->mac_on)
		dk_mac_arm(f); /* client: that was the READY */
}

static void dk_reasm(struct dk_flow *f, const struct kvw_wire_hdr *h, const uint8_t *b, uint32_t n)
{
	if (f->reasm_len + n > KVW_WIRE_MAX_CTRL + DK_FRAME_HDR) {
		kvw_core_bad_frame(f->ep, "segmented control frame too long");
		f->reasm_len = 0;
		return;
	}
	if (f->ep && !kvw_core_ep_ready(f->ep) && f->reasm_len + n > KVW_WIRE_MAX_PREAUTH + DK_FRAME_HDR) {
		/* before READY only small handshake frames exist: hold nothing big */
		kvw_core_reject(f->ep, KVW_ERR_PROTO, "segmented control frame before the handshake finished");
		f->reasm_len = 0;
		return;
	}
	if (f->reasm_len + n > f->reasm_cap) {
		size_t cap = (f->reasm_len + n) * 2;
		uint8_t *nb = realloc(f->reasm, cap);
		if (!nb) {
			kvw_ep_fail(f->ep, KVW_ERR_NOMEM, "dpdk: out of memory reassembling a control frame");
			return;
		}
		f->reasm = nb;
		f->reasm_cap = cap;
	}
	memcpy(f->reasm + f->reasm_len, b, n);
	f->reasm_len += n;
	if (h->flags & DK_F_SEG_END) {
		dk_ctrl_frame(f, f->reasm, f->reasm_len);
		f->reasm_len = 0;
	}
}

/* One in-order control packet: header + body (contiguous, ours). */
static void dk_ctrl_deliver(struct dk_flow *f, uint8_t *pkt)
{
	struct kvw_wire_hdr h;

	memcpy(&h, pkt, sizeof(h));
	if (h.flags & DK_F_VOID)
		return;
	if (h.flags & DK_F_SEG) {
		dk_reasm(f, &h, pkt + DK_FRAME_HDR, h.len);
		return;
	}
	h.flags &= KVW_WF_ACK_VALID; /* the core knows no driver flag */
	memcpy(pkt, &h, sizeof(h));
	dk_ctrl_frame(f, pkt, DK_FRAME_HDR + h.len);
}

/* Copies len bytes at off of m into dst (walks segments). */
void dk_copy_out(const struct rte_mbuf *m, uint32_t off, uint8_t *dst, uint32_t len)
{
	while (m && off >= m->data_len) {
		off -= m->data_len;
		m = m->next;
	}
	while (m && len) {
		uint32_t n = m->data_len - off;
		if (n > len)
			n = len;
		memcpy(dst, rte_pktmbuf_mtod_offset(m, const uint8_t *, off), n);
		dst += n;
		len -= n;
		off = 0;
		m = m->next;
	}
}

/* The sentence of a refused DATA frame when frames are not authenticated:
 * the core's names the peer, but the frame may be anyone's on the link. */
static void dk_unauth_reject(struct dk_flow *f, const struct kvw_wire_hdr *h)
{
	unsigned long long seq = 0;
	char what[128] = "outside its grant", ip[INET_ADDRSTRLEN] = "?";
	const char *e = kvw_ctx_last_error(f->ctx), *w = strstr(e, "fragment ");

	if (sscanf(e, "sequence %llu:", &seq) != 1)
		return;
	if (w)
		snprintf(what, sizeof(what), "%.*s", (int)strcspn(w + 9, ";"), w + 9);
	inet_ntop(AF_INET, &f->rip, ip, sizeof(ip));
	kvw_set_err(f->ctx, KVW_ERR_REJECTED, "sequence %llu: refused a DATA frame (psn %u from %s:%u) %s; "
		    "request rejected. Without a secret dpdk frames are not authenticated: it may have been "
		    "forged by another host on the link, and such frames may also have written inside the "
		    "grant. Set the same secret on both sides so that every frame is authenticated",
		    seq, h->psn, ip, f->rport, what);
}

static void dk_data_place(struct dk_flow *f, struct rte_mbuf *m, const struct kvw_wire_hdr *h, uint32_t off)
{
	struct kvw_wire_data d;
	uint8_t *dst;

	if (h->flags & DK_F_VOID)
		return;
	if (h->len < DK_DATA_HDR) {
		kvw_core_bad_frame(f->ep, "DATA frame shorter than its descriptor");
		return;
	}
	dk_copy_out(m, off, (uint8_t *)&d, DK_DATA_HDR);
	if (d.bytes != h->len - DK_DATA_HDR) {
		kvw_core_bad_frame(f->ep, "DATA byte count does not match the frame length");
		return;
	}
	kvw_status st = kvw_core_dst(f->ep, &d, &dst);
	if (st == KVW_ERR_REJECTED && !f->mac_on)
		dk_unauth_reject(f, h);
	if (st != KVW_OK)
		return; /* aborted grant or rejected: payload discarded */
	dk_copy_out(m, off + DK_DATA_HDR, dst, d.bytes);
	kvw_core_landed(f->ep, &d);
}

static bool dk_ep_live(const struct dk_flow *f)
{
	return !f->dead && kvw_core_ep_alive(f->ep);
}

static void dk_rcv_advance(struct dk_flow *f)
{
	while (dk_bit(f, f->rcv_nxt) && (int32_t)(f->rcv_high - f->rcv_nxt) > 0) {
		uint32_t i = f->rcv_nxt & (DK_RWIN - 1);
		dk_bit_set(f, f->rcv_nxt, false);
		f->rcv_nxt++;
		uint8_t *held = f->held ? f->held[i] : NULL;
		if (!held)
			continue;
		if (dk_ep_live(f))
			dk_ctrl_deliver(f, held);
		dk_held_free(f, i);
	}
}

/* May an out-of-order control frame of n bytes be kept? Not before READY
 * (the handshake is lock-step), nor while a secret's authenticator is not
 * armed; at most DK_HELD_FLOW_MAX bytes a flow and DK_HELD_ALL_MAX in all.
 * Refused, it is dropped unmarked and the peer resends it. */
static bool dk_may_hold(struct dk_flow *f, size_t n)
{
	if (!f->ep || !kvw_core_ep_ready(f->ep) || (f->mac_want && !f->mac_on) ||
	    f->held_bytes + n > DK_HELD_FLOW_MAX)
		return false;
	if (!f->held && !(f->held = calloc(DK_RWIN, sizeof(*f->held))))
		return false;
	if (__atomic_add_fetch(&dk_held_all, n, __ATOMIC_RELAXED) > DK_HELD_ALL_MAX) {
		__atomic_sub_fetch(&dk_held_all, n, __ATOMIC_RELAXED);
		return false;
	}
	f->held_bytes += n;
	return true;
}

/* Control packet: delivered now when in order, else kept until it is. */
static void dk_ctrl_arrive(struct dk_flow *f, struct rte_mbuf *m, const struct kvw_wire_hdr *h,
			   uint32_t off, bool in_order)
{
	size_t n = DK_FRAME_HDR + h->len;
	uint8_t *buf = NULL;
	struct kvw_wire_hdr hc = *h;

	if (in_order)
		buf = n <= sizeof(f->scratch) ? f->scratch : malloc(n);
	else if (dk_may_hold(f, n) && !(buf = malloc(n))) {
		f->held_bytes -= n;
		__atomic_sub_fetch(&dk_held_all, n, __ATOMIC_RELAXED);
	}
	if (!buf) {
		f->cnt->drops++;
		dk_bit_set(f, h->psn, false); /* the sender resends it */
		return;
	}
	hc.flags &= (uint8_t)(KVW_WF_ACK_VALID | DK_F_SEG | DK_F_SEG_END | DK_F_VOID);
	memcpy(buf, &hc, sizeof(hc));
	dk_copy_out(m, off, buf + DK_FRAME_HDR, h->len);
	if (in_order) {
		dk_ctrl_deliver(f, buf);
		if (buf != f->scratch)
			free(buf);
	} else {
		f->held[h->psn & (DK_RWIN - 1)] = buf;
	}
}

/* A frame for this flow; off = offset of its body in m. */
void dk_rel_on_packet(struct dk_flow *f, struct rte_mbuf *m, const struct kvw_wire_hdr *h, uint32_t off)
{
	uint64_t now = dk_now_ns;

	if (h->type == KVW_T_ACK) {
		struct kvw_wire_ack a;
		if (h->len < sizeof(a)) {
			if (!f->closing)
				kvw_core_bad_frame(f->ep, "ACK frame too short");
			return;
		}
		dk_copy_out(m, off, (uint8_t *)&a, sizeof(a));
		dk_on_ack_frame(f, &a, now);
		return;
	}
	if (h->flags & KVW_WF_ACK_VALID)
		dk_on_cum_ack(f, h->ack, now);
	if (f->closing)
		return; /* nobody to deliver to; the peer stops at our CLOSE */
	int32_t d = (int32_t)(h->psn - f->rcv_nxt);
	if (d < 0 || (d < (int32_t)DK_RWIN && dk_bit(f, h->psn))) {
		f->cnt->dups++;
		f->dsack = h->psn + 1;
		f->ack_now = true;
		return;
	}
	if (d >= (int32_t)DK_RWIN) {
		f->cnt->drops++;
		return;
	}
	if (d > 0) {
		f->cnt->out_of_order++;
		f->ack_now = true;
	}
	dk_bit_set(f, h->psn, true);
	f->last_rx_psn = h->psn;
	if ((int32_t)(h->psn + 1 - f->rcv_high) > 0)
		f->rcv_high = h->psn + 1;
	if (h->type == KVW_T_DATA)
		dk_data_place(f, m, h, off);
	else
		dk_ctrl_arrive(f, m, h, off, d == 0);
	if (!dk_ep_live(f)) { /* e.g. this was the peer's CLOSE: confirm it */
		dk_rcv_advance(f);
		f->ack_now = true;
		return;
	}
	dk_rcv_advance(f);
	if (!f->ack_pending++)
		f->ack_due_ns = now + DK_ACK_DELAY_NS;
	if (f->ack_pending >= DK_ACK_EVERY || h->type != KVW_T_DATA)
		f->ack_now = true;
}

/* Client: the listener's cookie. The HELLO (our first frame, not yet
 * acknowledged) goes again at once carrying it, at most DK_COOKIE_BURST
 * times a timeout: a host that saw our broadcast HELLO can send challenges
 * too, and the newest cookie is the one used. */
void dk_rel_on_challenge(struct dk_flow *f, uint32_t cookie)
{
	struct rte_mbuf *out[1];
	unsigned k = 0;

	if (f->first_acked || (f->cookie_have && f->cookie == cookie))
		return;
	f->cookie = cookie;
	f->cookie_have = true;
	if (f->una != f->isn || f->nxt == f->una || f->ck_sends >= DK_COOKIE_BURST)
		return;
	f->ck_sends++;
	dk_tx_slot(f, f->isn, out, &k);
	dk_tx_burst(f, out, k);
}

/* ------------------------------------------------------------------ timers */
static bool dk_send_burst(struct dk_flow *f, uint64_t now);
static void dk_rto(struct dk_flow *f, uint64_t now);

/* Up to DK_TX_BURSTS bursts a progress call: amortises the core's pass. */
static void dk_send_new(struct dk_flow *f, uint64_t now)
{
	for (unsigned i = 0; i < DK_TX_BURSTS && dk_send_burst(f, now); i++)
		;
}

/* One burst of new frames; true when it was full and more may follow. */
static bool dk_send_burst(struct dk_flow *f, uint64_t now)
{
	struct rte_mbuf *out[DK_BURST];
	unsigned k = 0;
	uint32_t lim = f->max_inflight < f->peer_credits ? f->max_inflight : f->peer_credits;

	if (f->is_client && !f->peer_known)
		lim = 1; /* the HELLO alone, until the listener named its id */
	while (f->nxt != f->tail && f->nxt - f->una < lim && k < DK_BURST) {
		if (f->pace_ns_per_byte_x1k && f->pace_next_ns > now + DK_PACE_BURST_NS)
			break; /* token bucket: at most DK_PACE_BURST_NS of credit ahead */
		struct dk_slot *s = &f->ring[f->nxt & (DK_RING - 1)];
		dk_tx_slot(f, f->nxt, out, &k);
		if (!(s->fl & DK_SL_SENT))
			break; /* out of mbufs */
		f->pace_next_ns = (f->pace_next_ns > now ? f->pace_next_ns : now) +
				  (s->len + 90) * f->pace_ns_per_byte_x1k / 1000;
		if (f->una == f->nxt || !f->rto_due_ns)
			f->rto_due_ns = now + f->rto_ns;
		f->nxt++;
	}
	if (!k)
		return false;
	if (f->rcv_high == f->rcv_nxt) { /* the piggybacked ack said it all */
		f->ack_pending = 0;
		f->ack_now = false;
	}
	unsigned sent = dk_tx_burst(f, out, k);
	for (unsigned i = sent; i < k; i++) { /* queue full: take them back */
		f->nxt--;
		struct dk_slot *s = &f->ring[f->nxt & (DK_RING - 1)];
		s->ntx--;
		s->fl &= (uint8_t)~DK_SL_SENT;
	}
	return sent == DK_BURST;
}

void dk_rel_push(struct dk_flow *f, uint64_t now)
{
	if (f->nxt != f->tail)
		dk_send_new(f, now);
}

/* Close: the endpoint goes, its last frames (the CLOSE) still have to
 * arrive. Fragments turn into void fillers so no page is read again; the
 * flow keeps its psn state and finishes the exchange in later progress
 * passes (dk_rel_close_tick), for at most min(peer_dead_ms, 2 s). */
bool dk_rel_close(struct dk_flow *f, uint64_t now)
{
	uint64_t ms = kvw_core_cfg(f->ctx)->peer_dead_ms;

	dk_rel_void(f, NULL);
	dk_rel_cancel_forget(f); /* the endpoint goes: nobody to report to */
	if (f->una == f->tail)
		return false;
	ms = ms < 100 ? 100 : ms > 2000 ? 2000 : ms;
	f->close_end_ns = now + ms * 1000000ull;
	f->cnt = &f->cnt_closed;
	f->ep = NULL;
	f->closing = true;
	dk_send_new(f, now); /* the CLOSE leaves now when the window allows */
	return true;
}

/* Held fault frames, RACK's timer look at SACK holes, the RTO. */
static void dk_rel_timers(struct dk_flow *f, uint64_t now)
{
	dk_tx_fault_due(f, now);
	if ((int32_t)(f->sack_high - f->una) > 0 && now >= f->retx_check_ns) {
		dk_fast_retx(f, now); /* RACK's timer: holes no later ACK will reveal */
		f->retx_check_ns = now + DK_REO_MIN_NS;
	}
	if (f->una != f->nxt && f->rto_due_ns && now >= f->rto_due_ns)
		dk_rto(f, now);
}

bool dk_rel_close_tick(struct dk_flow *f, uint64_t now)
{
	dk_rel_timers(f, now);
	dk_send_new(f, now);
	if (f->outstanding_ext) /* e.g. net_ring: buffers wait in the ring until read */
		dk_tx_cleanup(f);
	return (f->una == f->tail && !f->outstanding_ext) || now >= f->close_end_ns;
}

/* Timeout: resend the oldest frame the peer has not sacked, back off. Its
 * ACK (immediate: a gap or a duplicate) carries the SACK ranges that let
 * fast retransmit repair the rest; when it was only the ACKs that were
 * late, one frame is all the timeout cost. */
static void dk_rto(struct dk_flow *f, uint64_t now)
{
	struct rte_mbuf *out[DK_RTO_BURST];
	unsigned k = 0;

	kvw_log(f->ctx, 4, "dpdk: ep %u timeout: una %u nxt %u tail %u, %lu us since progress, "
		"srtt %lu us rto %lu us credits %u", f->id, f->una, f->nxt, f->tail,
		(unsigned long)((now - f->last_progress_ns) / 1000), (unsigned long)(f->srtt_ns / 1000),
		(unsigned long)(f->rto_ns / 1000), f->peer_credits);

	f->ck_sends = 0;
	dk_renege(f); /* the oldest frame goes again even if it was SACKed */
	for (uint32_t p = f->una; p != f->nxt && k < DK_RTO_BURST; p++) {
		struct dk_slot *s = &f->ring[p & (DK_RING - 1)];
		if (s->fl & DK_SL_SACKED)
			continue;
		dk_tx_slot(f, p, out, &k);
		s->fl |= DK_SL_RETX;
		f->cnt->retransmits++;
	}
	dk_tx_burst(f, out, k);
	f->rto_ns = f->rto_ns * 2 > DK_RTO_MAX_NS ? DK_RTO_MAX_NS : f->rto_ns * 2;
	f->rto_due_ns = now + f->rto_ns;
}

void dk_rel_tick(struct dk_flow *f, uint64_t now)
{
	const struct kvw_cfgv *cfg = kvw_core_cfg(f->ctx);
	struct rte_mbuf *out[1];
	unsigned k = 0;

	if (f->ack_now || (f->ack_pending && now >= f->ack_due_ns)) {
		dk_tx_ack(f, out, &k);
		dk_tx_burst(f, out, k);
	}
	dk_rel_timers(f, now);
	/* queued counts too: a link that refuses every frame is no progress */
	if (f->una != f->tail && cfg->peer_dead_ms &&
	    now - f->last_progress_ns > (uint64_t)cfg->peer_dead_ms * 1000000ull) {
		f->dead = true;
		kvw_ep_fail(f->ep, KVW_ERR_PEER_DEAD, "dpdk: no acknowledgement from the peer within "
			    "peer_dead_ms; the peer process or the link is gone");
		return;
	}
	if (f->una == f->tail)
		f->last_progress_ns = now;
	dk_send_new(f, now);
}
