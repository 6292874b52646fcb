/* SPDX-License-Identifier: MIT */
/* RDMA driver data path: SEND/RECV messages with credits (control frames,
 * LANDED notices, keys, fences) and one-sided RDMA WRITEs for payload. */
#include "rdma_int.h"
#include "fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RD_RECV_TAG (1ull << 63)

/* ------------------------------------------------------------ buffers */
static kvw_status rd_post_recv(struct rd_rail *r, uint32_t i)
{
	struct ibv_sge sg = {.addr = (uintptr_t)(r->rbuf + (size_t)i * RD_BUF), .length = RD_BUF,
			     .lkey = r->rmr->lkey};
	struct ibv_recv_wr wr = {.wr_id = RD_RECV_TAG | i, .sg_list = &sg, .num_sge = 1}, *bad;

	return ibv_post_recv(r->qp, &wr, &bad) ? KVW_ERR_IO : KVW_OK;
}

kvw_status rd_rail_bufs(struct rd_rail *r)
{
	size_t rl = (size_t)RD_RECV_DEPTH * RD_BUF, sl;

	const struct kvw_cfgv *c = kvw_core_cfg(r->rd->d->ctx);
	uint32_t rails = r->ep && kvw_core_ep_rails(r->ep) ? kvw_core_ep_rails(r->ep) : 1;

	r->window = c->window / rails > (1u << 20) ? c->window / rails : (1u << 20);
	if (c->fault[0]) {
		char err[200];
		uint64_t salt = (r->ep ? kvw_core_ep_id(r->ep) : 0) * 64ull + r->idx + (r->ep && kvw_core_ep_is_server(r->ep) ? 32 : 0);
		if (kvw_fault_create_salted(c->fault, salt, &r->fault, err, sizeof(err)) != KVW_OK) {
			rd_rail_fail(r, KVW_ERR_INVALID, "rdma: config fault: bad spec");
			return kvw_set_err(r->rd->d->ctx, KVW_ERR_INVALID, "config fault: %s", err);
		}
	}
	/* a connection that has not finished the handshake pins few send
	 * slots (a flood of silent QPs, issue 17); rd_sbuf_grow after READY */
	r->n_slots = r->sq_depth < RD_HS_SLOTS ? r->sq_depth : RD_HS_SLOTS;
	sl = (size_t)r->n_slots * RD_BUF;
	r->cum_bytes = calloc(r->sq_depth, sizeof(*r->cum_bytes));
	if (!r->cum_bytes) {
		rd_rail_fail(r, KVW_ERR_NOMEM, "rdma: out of memory for a rail");
		return KVW_ERR_NOMEM;
	}
	r->rbuf = aligned_alloc(4096, rl);
	r->sbuf = aligned_alloc(4096, sl);
	if (r->rbuf)
		r->rmr = ibv_reg_mr(r->dev->pd, r->rbuf, rl, IBV_ACCESS_LOCAL_WRITE);
	if (r->sbuf)
		r->smr = ibv_reg_mr(r->dev->pd, r->sbuf, sl, 0);
	if (!r->rmr || !r->smr) {
		rd_rail_fail(r, KVW_ERR_MEMLOCK, "rdma: cannot register the message buffers: raise the "
			     "memlock limit (`ulimit -l unlimited`) or lower rdma_qp_depth");
		return KVW_ERR_MEMLOCK;
	}
	for (uint32_t i = 0; i < RD_RECV_DEPTH; i++)
		if (rd_post_recv(r, i) != KVW_OK) {
			rd_rail_fail(r, KVW_ERR_IO, "rdma: ibv_post_recv failed");
			return KVW_ERR_IO;
		}
	return KVW_OK;
}

/* Once READY and the send queue is empty: one send slot per SQ entry (one
 * allocation and registration per rail, at READY only). */
void rd_sbuf_grow(struct rd_rail *r)
{
	size_t sl = (size_t)r->sq_depth * RD_BUF;
	struct ibv_mr *mr = NULL;
	uint8_t *b;

	if (r->n_slots >= r->sq_depth || r->state != RD_R_UP || !r->ep ||
	    !kvw_core_ep_ready(r->ep) || r->wr_done < r->wr_posted || r->dead_why)
		return;
	if ((b = aligned_alloc(4096, sl)))
		mr = ibv_reg_mr(r->dev->pd, b, sl, 0);
	if (!mr) {
		free(b);
		r->dead_st = KVW_ERR_MEMLOCK; /* the endpoint fails in this pass */
		r->dead_why = "rdma: cannot register the send buffers after the handshake: raise the "
			      "memlock limit (`ulimit -l unlimited`) or lower rdma_qp_depth";
		return;
	}
	ibv_dereg_mr(r->smr);
	free(r->sbuf);
	r->sbuf = b;
	r->smr = mr;
	r->n_slots = r->sq_depth;
}

/* ------------------------------------------------------------ completions */
static void rd_wc_fail(struct rd_rail *r, const struct ibv_wc *wc)
{
	char why[240];
	kvw_status st = KVW_ERR_PEER_DEAD;

	switch (wc->status) {
	case IBV_WC_RETRY_EXC_ERR:
		snprintf(why, sizeof(why), "rdma: rail %u: the peer stopped acknowledging (RETRY_EXC_ERR "
			 "after retry_cnt tries): peer host down or path broken", r->idx);
		break;
	case IBV_WC_RNR_RETRY_EXC_ERR:
		snprintf(why, sizeof(why), "rdma: rail %u: the peer has no receive buffers (RNR retries "
			 "exhausted): peer process stuck or gone", r->idx);
		break;
	case IBV_WC_REM_ACCESS_ERR:
		st = KVW_ERR_REJECTED;
		snprintf(why, sizeof(why), "rdma: rail %u: the peer refused an RDMA WRITE (remote access "
			 "error): its grant key was revoked or the address lies outside the grant", r->idx);
		break;
	case IBV_WC_WR_FLUSH_ERR:
		snprintf(why, sizeof(why), "rdma: rail %u: the QP is in error (work requests flushed)",
			 r->idx);
		break;
	default:
		snprintf(why, sizeof(why), "rdma: rail %u: completion error %s (vendor 0x%x)", r->idx,
			 ibv_wc_status_str(wc->status), wc->vendor_err);
		break;
	}
	r->dead_st = st;
	r->dead_why = NULL;
	rd_rail_fail(r, st, why);
}

/* Send completions only: safe from anywhere (no core callback). A rail
 * still joining may have no CQ yet: rd_on_fence and the cancel path poll
 * every rail of the endpoint, and a FENCE that came while rail 1 was being
 * set up crashed on its NULL CQ (conformance-rdma-rails2, once). */
int rd_poll_sends(struct rd_rail *r)
{
	struct ibv_wc wc[16];
	int n = r->state == RD_R_DEAD || !r->scq ? 0 : ibv_poll_cq(r->scq, 16, wc);

	for (int i = 0; i < n; i++) {
		if (wc[i].status != IBV_WC_SUCCESS) {
			if (r->ep && (wc[i].status == IBV_WC_REM_ACCESS_ERR || wc[i].status == IBV_WC_REM_INV_REQ_ERR))
				kvw_core_ep_counters(r->ep)->remote_refused++; /* kvwire stat shows it */
			r->state = RD_R_DEAD; /* fail the ep from progress, not from inside the core */
			r->dead_st = wc[i].status == IBV_WC_REM_ACCESS_ERR ? KVW_ERR_REJECTED : KVW_ERR_PEER_DEAD;
			r->dead_why = wc[i].status == IBV_WC_REM_ACCESS_ERR ?
				"rdma: the peer refused an RDMA WRITE (remote access error): its grant key "
				"was revoked or the address lies outside the grant" :
				"rdma: send completion error: the peer stopped acknowledging (host down, "
				"path broken) or the QP failed";
			return -1;
		}
		if (wc[i].wr_id + 1 > r->wr_done) {
			r->wr_done = wc[i].wr_id + 1;
			r->bytes_acked = r->cum_bytes[wc[i].wr_id % r->sq_depth];
		}
	}
	return n;
}

void rd_drain_sends(struct rd_rail *r, uint64_t timeout_ns)
{
	uint64_t end = kvw_now_ns() + timeout_ns;

	while (r->state == RD_R_UP && r->wr_done < r->wr_posted && kvw_now_ns() < end)
		if (rd_poll_sends(r) < 0)
			break;
}

/* ------------------------------------------------------------ fault layer */
/* What a lossy link below RC does to this rail (see fault.h), as
 * drivers/common/stream.c models it for a stream: the fate of a unit (a queued
 * message, or a write batch with its LANDED) is decided once, when it is
 * ready to go; lost or corrupted, RC resends it `rto` later; delayed or
 * reordered, it is held; and no unit goes before the one ahead of it on the
 * rail (other rails go on). A hold counts from when the unit was ready: a
 * delay is latency, so a backlog of N messages waits one delay, not N. A
 * duplicate is discarded by RC (counted). Returns when the unit may go. */
static uint64_t rd_fault_due(struct rd_rail *r, size_t len, uint64_t now)
{
	static __thread kvw_counters none;
	uint64_t due = now + kvw_fault_reliable(r->fault, len, r->ep ? kvw_core_ep_counters(r->ep) : &none);

	if (due < r->fault_tail)
		due = r->fault_tail;
	r->fault_tail = due;
	return due;
}

/* Write batches: true when the rail's next batch may go now. */
static bool rd_fault_gate(struct rd_rail *r)
{
	uint64_t now;

	if (!r->fault)
		return true;
	now = kvw_now_ns();
	if (!r->batch_fated) {
		r->hold_until = rd_fault_due(r, RD_BUF, now);
		r->batch_fated = true;
	}
	return now >= r->hold_until;
}

/* Messages: the fate of a record as it is queued (rd_queue). */
static kvw_status rd_fault_queue(struct rd_rail *r, size_t len)
{
	if (r->txq_n == r->txq_due_cap) {
		size_t cap = r->txq_due_cap ? r->txq_due_cap * 2 : 1024;
		uint64_t *d = realloc(r->txq_due, cap * sizeof(*d));
		if (!d)
			return KVW_ERR_NOMEM;
		r->txq_due = d;
		r->txq_due_cap = cap;
	}
	r->txq_due[r->txq_n++] = rd_fault_due(r, len, kvw_now_ns());
	return KVW_OK;
}

/* ------------------------------------------------------------ messages */
static bool rd_can_send(const struct rd_rail *r, unsigned kind)
{
	int need = kind == RD_CREDIT ? 1 : 2; /* the last credit is for returning credits */

	return r->state == RD_R_UP && r->credits >= need && r->wr_posted - r->wr_done < r->n_slots;
}

/* Posts one message now (the caller checked rd_can_send). */
static kvw_status rd_post_msg(struct rd_rail *r, unsigned kind, const void *p, size_t len)
{
	uint64_t seq = r->wr_posted;
	uint8_t *slot = r->sbuf + (size_t)(seq % r->n_slots) * RD_BUF;
	struct rd_hdr h = {.kind = (uint8_t)kind, .credits = (uint16_t)r->to_return, .len = (uint32_t)len};
	struct ibv_sge sg = {.addr = (uintptr_t)slot, .length = (uint32_t)(sizeof(h) + len),
			     .lkey = r->smr->lkey};
	struct ibv_send_wr wr = {.wr_id = seq, .sg_list = &sg, .num_sge = 1, .opcode = IBV_WR_SEND,
				 .send_flags = IBV_SEND_SIGNALED}, *bad;

	if (r->credits == (kind == RD_CREDIT ? 1 : 2))
		h.flags |= RD_F_STARVED;
	memcpy(slot, &h, sizeof(h));
	if (len)
		memcpy(slot + sizeof(h), p, len);
	if (sg.length <= r->max_inline)
		wr.send_flags |= IBV_SEND_INLINE;
	if (ibv_post_send(r->qp, &wr, &bad)) {
		rd_rail_fail(r, KVW_ERR_IO, "rdma: ibv_post_send failed: the QP is in error");
		return KVW_ERR_IO;
	}
	r->cum_bytes[seq % r->sq_depth] = r->bytes_posted;
	r->wr_posted++;
	r->last_sig = seq;
	r->credits--;
	r->to_return = 0;
	return KVW_OK;
}

kvw_status rd_queue(struct rd_rail *r, unsigned kind, const void *p, size_t len)
{
	struct rd_hdr h = {.kind = (uint8_t)kind, .len = (uint32_t)len};
	size_t need = r->txq_len + sizeof(h) + len;

	if (r->ep && need > kvw_core_cfg(kvw_core_ep_ctx(r->ep))->max_tx_queue) {
		/* a peer that returns no credits must not make us queue without end */
		kvw_ep_fail(r->ep, KVW_ERR_PEER_DEAD, "the peer stopped taking messages: max_tx_queue "
			    "bytes are queued for it (it returns no receive credits)");
		return KVW_ERR_PEER_DEAD;
	}
	if (r->fault && rd_fault_queue(r, sizeof(h) + len) != KVW_OK)
		return KVW_ERR_NOMEM;
	if (need > r->txq_cap) {
		size_t cap = r->txq_cap ? r->txq_cap : 65536;
		uint8_t *q;
		while (cap < need)
			cap *= 2;
		if (!(q = realloc(r->txq, cap))) {
			r->txq_n -= r->fault ? 1 : 0;
			return KVW_ERR_NOMEM;
		}
		r->txq = q;
		r->txq_cap = cap;
	}
	memcpy(r->txq + r->txq_len, &h, sizeof(h));
	if (len)
		memcpy(r->txq + r->txq_len + sizeof(h), p, len);
	r->txq_len = need;
	return KVW_OK;
}

/* Bytes of the records from off (record rec) that fit one send buffer
 * (FENCE and FENCE_ACK travel alone: the blocking fence wait of a peer
 * built before issue 11 looks at a buffer's first record only); with the fault layer only records whose time has come. *nrec:
 * how many records. */
static size_t rd_pack(const struct rd_rail *r, size_t off, size_t rec, uint64_t now,
		      bool *credit_only, size_t *nrec)
{
	size_t n = 0;

	*credit_only = true;
	*nrec = 0;
	while (off + n < r->txq_len) {
		struct rd_hdr h;
		memcpy(&h, r->txq + off + n, sizeof(h));
		bool alone = h.kind == RD_FENCE || h.kind == RD_FENCE_ACK;
		if ((n && (alone || n + sizeof(h) + h.len > RD_BUF)) ||
		    (r->fault && r->txq_due[rec + *nrec] > now))
			break;
		*credit_only &= h.kind == RD_CREDIT;
		n += sizeof(h) + h.len;
		++*nrec;
		if (alone)
			break;
	}
	return n;
}

/* Send k of a chain: the packed records in its send slot; the first
 * record's header carries the returned credits. */
static void rd_chain_add(struct rd_rail *r, const uint8_t *p, size_t bytes, int need, uint32_t k,
			 struct ibv_send_wr *wr, struct ibv_sge *sg)
{
	uint64_t seq = r->wr_posted + k;
	uint8_t *slot = r->sbuf + (size_t)(seq % r->n_slots) * RD_BUF;
	struct rd_hdr h;

	memcpy(slot, p, bytes);
	memcpy(&h, slot, sizeof(h));
	h.credits = k == 0 ? (uint16_t)r->to_return : 0;
	h.flags = r->credits - (int)k == need ? RD_F_STARVED : 0;
	memcpy(slot, &h, sizeof(h));
	*sg = (struct ibv_sge){.addr = (uintptr_t)slot, .length = (uint32_t)bytes, .lkey = r->smr->lkey};
	*wr = (struct ibv_send_wr){.wr_id = seq, .sg_list = sg, .num_sge = 1, .opcode = IBV_WR_SEND,
				   .next = wr + 1};
	if (sg->length <= r->max_inline)
		wr->send_flags |= IBV_SEND_INLINE;
	if (seq % RD_SIG_EVERY == RD_SIG_EVERY - 1)
		wr->send_flags |= IBV_SEND_SIGNALED;
	r->cum_bytes[seq % r->sq_depth] = r->bytes_posted;
}

/* Window binds are local work requests that rxe runs in send-queue order,
 * behind the SENDs posted before them. In the VM pair under netem loss
 * (1-2 %, Linux 6.1's rxe) a queue was seen to stop at a grant's 160 binds
 * for good: no completion and no error, rxe's own SEND count still, and
 * further posts (credit messages tried as a nudge) stopped behind them.
 * The rail's messages wait for those binds (rd_flush), so the peer heard
 * nothing until its peer_dead_ms. This side says why first: a rail whose
 * messages wait for binds and whose send queue completed nothing for half
 * of peer_dead_ms fails. */
static void rd_binds_stalled(struct rd_rail *r)
{
	uint64_t now = kvw_now_ns();
	uint64_t lim = (uint64_t)kvw_core_cfg(r->rd->d->ctx)->peer_dead_ms * 500000ull;

	if (!r->bind_wait_ns || r->wr_done != r->bind_wait_done) {
		r->bind_wait_ns = now; /* a completion since: the queue moves */
		r->bind_wait_done = r->wr_done;
		return;
	}
	if (now - r->bind_wait_ns < lim || r->dead_why)
		return;
	kvw_log(r->rd->d->ctx, 2, "rdma: rail %u: messages wait for window binds and no work request "
		"completed for %llu ms (%llu in flight, no error)", r->idx,
		(unsigned long long)((now - r->bind_wait_ns) / 1000000u),
		(unsigned long long)(r->wr_posted - r->wr_done));
	r->dead_st = KVW_ERR_PEER_DEAD; /* the endpoint fails in this pass (rd_progress) */
	r->dead_why = "rdma: the send queue completed nothing for half of peer_dead_ms while messages "
		      "waited for window binds, and the QP reports no error: it stalled (seen with rxe "
		      "on Linux 6.1 under packet loss); rdma_grant_keys=mr needs no binds";
}

/* Sends the queued messages that credits and SQ room allow, in order:
 * records packed into as few sends as fit, posted as one chain (one
 * doorbell, one syscall on rxe, for a whole pass's messages). */
static void rd_flush(struct rd_rail *r)
{
	struct ibv_send_wr wr[RD_CHAIN_MAX], *bad;
	struct ibv_sge sg[RD_CHAIN_MAX];
	uint64_t now = r->fault ? kvw_now_ns() : 0;
	size_t off = 0, rec = 0;
	uint32_t n = 0;

	if (r->idx == 0 && r->rep && r->txq_len && !rd_binds_done(r->rep)) {
		rd_binds_stalled(r);
		return; /* a grant's windows are not bound yet: its key map waits */
	}
	r->bind_wait_ns = 0;
	while (off < r->txq_len && n < RD_CHAIN_MAX) {
		bool credit_only;
		size_t k, bytes = rd_pack(r, off, rec, now, &credit_only, &k);
		int need = credit_only ? 1 : 2; /* the last credit returns credits */
		if (r->state != RD_R_UP || r->credits - (int)n < need || !bytes ||
		    r->wr_posted + n - r->wr_done >= r->n_slots)
			break;
		rd_chain_add(r, r->txq + off, bytes, need, n, &wr[n], &sg[n]);
		off += bytes;
		rec += k;
		n++;
	}
	if (n == 0)
		return;
	wr[n - 1].next = NULL;
	wr[n - 1].send_flags |= IBV_SEND_SIGNALED;
	if (ibv_post_send(r->qp, wr, &bad)) {
		rd_rail_fail(r, KVW_ERR_IO, "rdma: ibv_post_send failed: the QP is in error");
		return;
	}
	r->wr_posted += n;
	r->last_sig = r->wr_posted - 1;
	r->credits -= (int)n;
	r->to_return = 0;
	memmove(r->txq, r->txq + off, r->txq_len - off);
	r->txq_len -= off;
	if (r->fault) {
		memmove(r->txq_due, r->txq_due + rec, (r->txq_n - rec) * sizeof(*r->txq_due));
		r->txq_n -= rec;
	}
}

/* Queues a message; outside a progress pass it goes at once, inside the
 * pass's messages leave together at its end (rd_flush_all). */
kvw_status rd_msg(struct rd_rail *r, unsigned kind, const void *p, size_t len)
{
	kvw_status st = rd_queue(r, kind, p, len);

	if (st == KVW_OK && !kvw_core_batching(r->rd->d->ctx))
		rd_flush(r);
	return st;
}

/* A record nobody waits for (KEYDROP): it leaves with the next message
 * of its rail instead of in a packet of its own. */
void rd_queue_lazy(struct rd_rail *r, unsigned kind, const void *p, size_t len)
{
	size_t at = r->txq_len;

	if (rd_queue(r, kind, p, len) == KVW_OK)
		r->txq[at + 1] |= RD_F_LAZY; /* rd_hdr.flags */
}

static bool rd_txq_lazy_only(const struct rd_rail *r)
{
	for (size_t off = 0; off < r->txq_len;) {
		struct rd_hdr h;
		memcpy(&h, r->txq + off, sizeof(h));
		if (!(h.flags & RD_F_LAZY))
			return false;
		off += sizeof(h) + h.len;
	}
	return true;
}

void rd_flush_all(kvw_drv *d)
{
	for (struct rd_rail *r = rd_of(d)->rails; r; r = r->next_all)
		if (r->txq_len && r->state == RD_R_UP && !rd_txq_lazy_only(r))
			rd_flush(r);
}

/* ------------------------------------------------------------ control frames */
kvw_status rd_send_ctrl(kvw_ep *ep, const void *frame, size_t len)
{
	struct rd_ep *e = rd_ep_of(ep);
	struct rd_rail *r = e ? e->rail[0] : NULL;
	kvw_status st = KVW_OK;

	if (!r || r->state == RD_R_DEAD)
		return KVW_ERR_CLOSED;
	for (size_t off = 0; off < len && st == KVW_OK; off += RD_PAYLOAD) {
		size_t n = len - off < RD_PAYLOAD ? len - off : RD_PAYLOAD;
		st = rd_queue(r, RD_CTRL, (const uint8_t *)frame + off, n);
	}
	if (st == KVW_OK && !kvw_core_batching(kvw_core_ep_ctx(ep)))
		rd_flush(r); /* with a GRANT: its key map (rd_grant_keys) and the GRANT in one chain */
	return st;
}

static kvw_status rd_rx_append(struct rd_rail *r, const uint8_t *p, size_t n)
{
	if (r->rx_len + n > r->rx_cap) {
		size_t cap = r->rx_cap ? r->rx_cap : 65536;
		uint8_t *b;
		while (cap < r->rx_len + n)
			cap *= 2;
		if (cap > 2 * (KVW_WIRE_MAX_CTRL + sizeof(struct kvw_wire_hdr)) || !(b = realloc(r->rx, cap)))
			return KVW_ERR_NOMEM;
		r->rx = b;
		r->rx_cap = cap;
	}
	memcpy(r->rx + r->rx_len, p, n);
	r->rx_len += n;
	return KVW_OK;
}

/* Hands every whole frame in the stream to the core, in order. */
static void rd_rx_frames(struct rd_rail *r)
{
	size_t off = 0;

	while (r->state == RD_R_UP && r->rx_len - off >= sizeof(struct kvw_wire_hdr)) {
		struct kvw_wire_hdr h;
		const char *why = "";
		kvw_status st = kvw_wire_check_hdr(r->rx + off, r->rx_len - off, &h, &why);
		if (st != KVW_OK) {
			kvw_core_reject(r->ep, st, why);
			r->state = RD_R_DEAD;
			return;
		}
		if (r->rx_len - off < sizeof(h) + h.len)
			break;
		off += sizeof(h) + h.len;
		kvw_core_on_frame(r->ep, &h, r->rx + off - h.len); /* may move r to another ep (join) */
		if (!kvw_core_ep_alive(r->ep))
			break;
	}
	memmove(r->rx, r->rx + off, r->rx_len - off);
	r->rx_len -= off;
}

/* ------------------------------------------------------------ receive side */
/* A write our NIC placed (a write-with-immediate consumed a receive): kept
 * until the LANDED entry that names it. At most RD_BATCH_MAX are honest;
 * a full ring is a peer writing without ever naming its writes. */
static void rd_on_wimm(struct rd_rail *r, const struct ibv_wc *wc)
{
	if (r->n_wimm == RD_RECV_DEPTH) {
		kvw_core_reject(r->ep, KVW_ERR_PROTO, "rdma: the peer made more RDMA writes than a "
				"batch holds without a LANDED naming them: not a kvwire sender");
		r->state = RD_R_DEAD;
		return;
	}
	r->wimm[(r->wimm_head + r->n_wimm) % RD_RECV_DEPTH] =
		(struct rd_wimm){.token = ntohl(wc->imm_data), .bytes = wc->byte_len};
	r->n_wimm++;
}

/* A LANDED entry naming data our NIC did not deliver: the peer's word is
 * not enough, the endpoint fails (its requests end REJECTED). */
static void rd_landed_lie(struct rd_rail *r, const struct kvw_wire_data *d, const struct rd_wimm *w)
{
	char why[300];

	if (!w)
		snprintf(why, sizeof(why), "rdma: the peer says %u bytes of grant %08x (layer %u, block %u) "
			 "landed, but this NIC completed no write of it on rail %u: a LANDED notice without "
			 "the write; nothing of it counts as landed", d->bytes, d->token, d->layer,
			 d->blk_idx, r->idx);
	else
		snprintf(why, sizeof(why), "rdma: the peer says %u bytes of grant %08x (layer %u, block %u) "
			 "landed, but the write this NIC completed on rail %u carried %u bytes of grant "
			 "%08x: a LANDED notice that names another write; nothing of it counts as landed",
			 d->bytes, d->token, d->layer, d->blk_idx, r->idx, w->bytes, w->token);
	kvw_core_reject(r->ep, KVW_ERR_REJECTED, why);
	r->state = RD_R_DEAD;
}

/* Landing is what the NIC says: each entry must match, in order, a write
 * our receive CQ completed (token, bytes); only then does the core place
 * it against the grant's coverage (kvw_core_dst, kvw_core_landed). */
static void rd_on_landed(struct rd_rail *r, const uint8_t *p, size_t len)
{
	kvw_ep *ep = r->ep;

	for (size_t off = 0; off + sizeof(struct kvw_wire_data) <= len; off += sizeof(struct kvw_wire_data)) {
		struct kvw_wire_data d;
		const struct rd_wimm *w = r->n_wimm ? &r->wimm[r->wimm_head] : NULL;
		uint8_t *dst;
		memcpy(&d, p + off, sizeof(d));
		if (!w || w->token != d.token || w->bytes != d.bytes) {
			rd_landed_lie(r, &d, w);
			return;
		}
		r->wimm_head = (r->wimm_head + 1) % RD_RECV_DEPTH;
		r->n_wimm--;
		if (kvw_core_dst(ep, &d, &dst) != KVW_OK)
			continue; /* revoked grant (discard) or rejected (request failed) */
		kvw_core_ep_rail_rx(ep, r->idx, d.bytes);
		kvw_core_landed(ep, &d);
		if (!kvw_core_ep_ready(ep))
			return;
	}
	if (r->n_wimm) { /* a batch's LANDED follows its writes: it names them all */
		kvw_core_reject(ep, KVW_ERR_PROTO, "rdma: the peer made RDMA writes that its LANDED "
				"notice does not name: not a kvwire sender");
		r->state = RD_R_DEAD;
	}
}

/* ------------------------------------------------------------ sender waits */
/* True once every rail's send queue completed what it had posted when w
 * began (a dead rail's QP is in error: it reads nothing more). */
static bool rd_wait_met(const struct rd_ep *e, const struct rd_wait *w)
{
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++) {
		const struct rd_rail *r = e->rail[i];
		if (r && r->state == RD_R_UP && r->wr_done < w->upto[i])
			return false;
	}
	return true;
}

/* Remembers what each rail posted so far; the answer goes from progress
 * once it completed (rd_waits_poll). false: no room (the caller answers). */
static bool rd_wait_add(struct rd_ep *e, enum rd_wait_kind kind, uint32_t token, uint64_t seq_id)
{
	struct rd_wait *w;

	if (e->n_waits == e->cap_waits) {
		uint32_t cap = e->cap_waits ? e->cap_waits * 2 : 16;
		if (cap > RD_WAITS_MAX || !(w = realloc(e->waits, cap * sizeof(*w))))
			return false;
		e->waits = w;
		e->cap_waits = cap;
	}
	w = &e->waits[e->n_waits++];
	*w = (struct rd_wait){.kind = kind, .token = token, .seq_id = seq_id};
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++)
		w->upto[i] = e->rail[i] ? e->rail[i]->wr_posted : 0;
	return true;
}

static void rd_wait_answer(kvw_ep *ep, struct rd_ep *e, const struct rd_wait *w)
{
	if (w->kind == RD_W_FENCE)
		rd_msg(e->rail[0], RD_FENCE_ACK, &w->token, sizeof(w->token));
	else
		kvw_core_cancel_done(ep, w->seq_id);
}

/* From progress: answers the waits whose writes completed, in order. */
void rd_waits_poll(kvw_ep *ep)
{
	struct rd_ep *e = ep ? rd_ep_of(ep) : NULL;
	uint32_t i = 0;

	if (!e || !e->n_waits)
		return;
	/* targets grow with time: the waits met are a prefix */
	for (; i < e->n_waits && rd_wait_met(e, &e->waits[i]) && kvw_core_ep_alive(ep); i++) {
		struct rd_wait w = e->waits[i];
		rd_wait_answer(ep, e, &w);
	}
	memmove(e->waits, e->waits + i, (e->n_waits - i) * sizeof(*e->waits));
	e->n_waits -= i;
}

/* Every rail's send queue is empty (what was posted completed). */
static bool rd_ep_drained(const struct rd_ep *e)
{
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++) {
		const struct rd_rail *r = e->rail[i];
		if (r && r->state == RD_R_UP && r->wr_done < r->wr_posted)
			return false;
	}
	return true;
}

/* The peer asks us (the sender) to stop writing a grant: later fragments of
 * that token are dropped, and FENCE_ACK goes once every write posted so far
 * completed (rd_waits_poll): nothing waits here, inside progress. */
static void rd_on_fence(struct rd_rail *r, uint32_t token)
{
	struct rd_ep *e = r->rep;
	struct rd_keyent *k = rd_key_find(e, token);

	if (k)
		k->fenced = true;
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++)
		if (e->rail[i] && rd_poll_sends(e->rail[i]) < 0)
			return; /* the rail failed: the endpoint fails in this pass */
	if (rd_ep_drained(e)) {
		rd_msg(e->rail[0], RD_FENCE_ACK, &token, sizeof(token));
		return;
	}
	if (!rd_wait_add(e, RD_W_FENCE, token, 0))
		kvw_core_bad_frame(r->ep, "rdma: the peer fenced more grants than it can hold");
	kvw_log(r->rd->d->ctx, 4, "rdma: fence of grant %08x (key %s): FENCE_ACK once the writes "
		"in flight completed", token, k ? "known" : "unknown");
}

/* The sender drained this grant's writes: its keys go, then the core ends
 * the request (its final event comes only now: nothing of it can land). */
static void rd_on_fence_ack(struct rd_rail *r, uint32_t token)
{
	struct rd_grant *g = rd_grant_find(r->ep, token);
	kvw_req *req;

	if (!g || !g->fence_req)
		return; /* the grant ended meanwhile (abort_timeout_ms, endpoint closed) */
	req = g->fence_req;
	kvw_log(r->rd->d->ctx, 4, "rdma: fence of sequence %llu acknowledged after %llu ms",
		(unsigned long long)kvw_core_req_seq_id(req),
		(unsigned long long)((kvw_now_ns() - g->fence_t0) / 1000000));
	rd_grant_drop(r->ep, token);
	kvw_core_fence_done(r->ep, req);
}

static void rd_on_msg(struct rd_rail *r, const uint8_t *buf, uint32_t len)
{
	struct rd_hdr h;
	const uint8_t *p = buf + sizeof(h);
	uint32_t tok;

	if (len < sizeof(h))
		return;
	memcpy(&h, buf, sizeof(h));
	r->credits += h.credits;
	if (h.flags & RD_F_STARVED)
		r->peer_starved = true;
	if (h.len > len - sizeof(h)) {
		kvw_core_bad_frame(r->ep, "rdma: message longer than its receive");
		return;
	}
	switch (h.kind) {
	case RD_CTRL:
		if (rd_rx_append(r, p, h.len) != KVW_OK)
			rd_rail_fail(r, KVW_ERR_PROTO, "rdma: control frame larger than the protocol allows");
		else
			rd_rx_frames(r);
		break;
	case RD_LANDED:
		rd_on_landed(r, p, h.len);
		break;
	case RD_KEYMAP:
		rd_on_keymap(r, p, h.len);
		break;
	case RD_JOINED:
		r->peer_open = true;
		break;
	case RD_KEYDROP:
	case RD_FENCE:
	case RD_FENCE_ACK:
		if (h.len < sizeof(tok))
			break;
		memcpy(&tok, p, sizeof(tok));
		if (h.kind == RD_KEYDROP)
			rd_key_del(r->rep, tok);
		else if (h.kind == RD_FENCE)
			rd_on_fence(r, tok);
		else
			rd_on_fence_ack(r, tok);
		break;
	default:
		break;
	}
}

/* One receive buffer: one or more records packed by the sender's rd_flush. */
static void rd_on_buf(struct rd_rail *r, const uint8_t *buf, uint32_t len)
{
	uint32_t off = 0;

	while (len - off >= sizeof(struct rd_hdr) && r->state == RD_R_UP &&
	       kvw_core_ep_alive(r->ep)) {
		struct rd_hdr h;
		memcpy(&h, buf + off, sizeof(h));
		if (h.len > len - off - sizeof(h)) {
			kvw_core_bad_frame(r->ep, "rdma: message longer than its receive");
			return;
		}
		rd_on_msg(r, buf + off, (uint32_t)sizeof(h) + h.len);
		off += (uint32_t)sizeof(h) + h.len;
	}
}

static void rd_recv_wc(struct rd_rail *r, const struct ibv_wc *wc)
{
	uint32_t i = (uint32_t)(wc->wr_id & ~RD_RECV_TAG);

	if (wc->status != IBV_WC_SUCCESS) {
		if (r->state == RD_R_UP)
			rd_wc_fail(r, wc);
		return;
	}
	r->heard = true; /* liveness: rd_rail_progress */
	if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM)
		rd_on_wimm(r, wc); /* a write: the receive buffer holds nothing */
	else
		rd_on_buf(r, r->rbuf + (size_t)i * RD_BUF, wc->byte_len);
	if (r->state == RD_R_DEAD)
		return;
	if (rd_post_recv(r, i) == KVW_OK)
		r->to_return++;
}

/* Completion events wake the context's epoll. Busy passes cost no
 * syscall: CQs are armed only by rd_rail_prepare_wait, when the context is
 * about to sleep; a pass that finds completions on an armed rail consumes
 * the channel's event (its fd would stay readable). */
static void rd_stash(struct rd_rail *r, const struct ibv_wc *wc);

/* Reads the completion channel (non-blocking) until empty. */
static void rd_cq_consume(struct rd_rail *r)
{
	struct ibv_cq *cq;
	void *cctx;

	while (ibv_get_cq_event(r->cc, &cq, &cctx) == 0)
		ibv_ack_cq_events(cq, 1);
	r->armed = false;
}

/* Before the context sleeps: CQ notification on, then one look at both
 * CQs (what completed before the arm would never signal). Busy passes
 * never arm: in a polling loop no notify or channel syscall is paid. */
bool rd_rail_prepare_wait(struct rd_rail *r)
{
	struct ibv_wc wc;

	if (!r->cc || r->state != RD_R_UP)
		return false;
	if (r->n_stash)
		return true; /* completions stashed by an earlier look: the next pass */
	rd_cq_consume(r); /* an event of an earlier arm would keep the fd readable */
	if (ibv_req_notify_cq(r->scq, 0) || ibv_req_notify_cq(r->rcq, 0))
		return true; /* cannot arm: poll rather than sleep blind */
	r->armed = true;
	if (rd_poll_sends(r) != 0)
		return true;
	if (ibv_poll_cq(r->rcq, 1, &wc) == 1) {
		rd_stash(r, &wc); /* handled, in order, by the next pass */
		return true;
	}
	return false;
}

static bool rd_rail_pass(struct rd_rail *r)
{
	struct ibv_wc wc[16];
	bool busy = r->n_stash > 0;
	int n;

	if ((n = rd_poll_sends(r)) < 0)
		return false;
	busy |= n > 0;
	while (r->state == RD_R_UP && r->n_stash > 0) {
		struct ibv_wc w = r->stash[r->stash_head];
		r->stash_head = (r->stash_head + 1) % RD_RECV_DEPTH;
		r->n_stash--;
		rd_recv_wc(r, &w);
	}
	while (r->state == RD_R_UP && (n = ibv_poll_cq(r->rcq, 16, wc)) > 0) {
		busy = true;
		for (int i = 0; i < n && r->state == RD_R_UP; i++)
			rd_recv_wc(r, &wc[i]);
	}
	return busy;
}

/* Any message is the peer's progress at work (LANDED, credits, keys), so
 * it is alive, as a tcp DATA head or an shm DESC says: the core counts
 * control frames only, and a keepalive PONG may queue behind a long backlog
 * on either side. Set here, in the driver's progress, never from inside
 * the core's timer pass: a time later than the pass's `now`
 * would read as a silence of 2^64 ns there. */
static void rd_heard(struct rd_rail *r)
{
	if (r->heard && r->ep)
		kvw_core_ep_heard(r->ep);
	r->heard = false;
}

void rd_rail_progress(struct rd_rail *r)
{
	bool busy = rd_rail_pass(r);

	rd_heard(r);
	if (r->state != RD_R_UP)
		return;
	if (r->rep && r->rep->n_waits && r->ep)
		rd_waits_poll(r->ep); /* FENCE_ACK, cancel_done: their writes completed */
	if (r->state != RD_R_UP)
		return;
	if (busy && r->armed)
		rd_cq_consume(r); /* woken by the channel: clear its fd */
	if (r->state != RD_R_UP)
		return;
	if (!r->writes_open && r->ep && kvw_core_ep_ready(r->ep) && rd_rail_open_writes(r) != KVW_OK)
		return;
	rd_sbuf_grow(r);
	rd_flush(r);
	/* Return credits when a quarter waits, when the peer is starved, or
	 * when our own queue is stuck for lack of credit: the reserved last
	 * credit is for exactly this, or two sides with queues would wait on
	 * each other for ever. */
	if (r->to_return > 0 &&
	    (r->to_return >= RD_RECV_DEPTH / 4 || r->peer_starved || (r->txq_len && r->credits < 2)) &&
	    rd_can_send(r, RD_CREDIT)) {
		r->peer_starved = false;
		rd_post_msg(r, RD_CREDIT, NULL, 0);
	}
}

/* ------------------------------------------------------------ data path */
/* Writes a fragment takes on r: one, or for a gathered fragment one per
 * max_sge of its pieces (each a WRITE_WITH_IMM of contiguous receiver
 * bytes with its own LANDED entry). */
static uint32_t rd_frag_wrs(const struct rd_rail *r, const kvw_frag *f)
{
	uint32_t n = f->piece ? f->bytes / f->piece : 1;

	return (n + r->max_sge - 1) / r->max_sge;
}

static bool rd_rail_room(struct rd_rail *r, const struct rd_batch *b, uint32_t bytes, uint32_t wrs)
{
	uint64_t inflight = r->bytes_posted - r->bytes_acked + b->bytes;

	/* a credit per write (each consumes a receive at the peer), one for
	 * their LANDED message, and a spare; bytes in flight under the
	 * window, so control messages (PONG, FENCE_ACK) queued behind the
	 * writes on this QP never wait long */
	if (inflight && inflight + bytes > r->window)
		return false;
	return r->state == RD_R_UP && r->n_slots == r->sq_depth && r->txq_len == 0 &&
	       r->credits >= (int)(b->n + wrs) + 2 &&
	       r->wr_posted - r->wr_done + b->n + wrs + 1 <= r->sq_depth &&
	       (b->n + wrs) * sizeof(struct kvw_wire_data) <= RD_PAYLOAD &&
	       b->n + wrs <= RD_BATCH_MAX && (b->n || rd_fault_gate(r));
}

/* One WRITE_WITH_IMM of n SGEs to dst, its LANDED entry (token, where in
 * the block, bytes): the receiver's NIC completes it there (token,
 * byte_len), which is what the receiver counts as landed. */
static void rd_batch_write(struct rd_batch *b, const kvw_frag *f, uint32_t rkey, uint32_t n_sge,
			   uint64_t off, uint32_t bytes)
{
	uint32_t i = b->n++;

	b->wr[i] = (struct ibv_send_wr){.sg_list = &b->sge[b->n_sge - n_sge], .num_sge = (int)n_sge,
					.opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
					.imm_data = htonl(f->token)};
	b->wr[i].wr.rdma.remote_addr = f->dst_addr + off;
	b->wr[i].wr.rdma.rkey = rkey;
	b->bytes += bytes;
	b->land[i] = (struct kvw_wire_data){.token = f->token, .layer = f->layer,
					    .blk_idx = f->blk_idx, .bytes = bytes,
					    .blk_off = f->blk_off + off};
}

/* A fragment into the batch (rd_rail_room said it fits): a gathered one
 * as an SGE per piece, r->max_sge of them per write. */
static void rd_batch_add(struct rd_rail *r, struct rd_batch *b, const kvw_frag *f, uint32_t rkey)
{
	const struct rd_mem *rm = kvw_core_mem_priv(f->src_mem, r->rd->d);
	uint32_t lkey = rm->mr[r->dev_idx]->lkey;
	uint32_t pieces = f->piece ? f->bytes / f->piece : 1, pc = f->piece ? f->piece : f->bytes;

	for (uint32_t p = 0; p < pieces;) {
		uint32_t k = pieces - p < r->max_sge ? pieces - p : r->max_sge;

		for (uint32_t j = 0; j < k; j++)
			b->sge[b->n_sge++] = (struct ibv_sge){
				.addr = (uintptr_t)(f->src + (uint64_t)(p + j) * f->src_stride),
				.length = pc, .lkey = lkey};
		rd_batch_write(b, f, rkey, k, (uint64_t)p * pc, k * pc);
		p += k;
	}
}

/* One doorbell: the chained writes, then the LANDED SEND that follows them
 * (RC places every write before a later SEND completes at the peer). */
static void rd_batch_post(struct rd_rail *r, struct rd_batch *b)
{
	struct ibv_send_wr *bad;
	uint64_t seq = r->wr_posted;
	size_t len = b->n * sizeof(struct kvw_wire_data);
	uint8_t *slot;
	struct rd_hdr h = {.kind = RD_LANDED, .credits = (uint16_t)r->to_return, .len = (uint32_t)len};
	struct ibv_sge lsg;

	for (uint32_t i = 0; i < b->n; i++) {
		r->bytes_posted += b->land[i].bytes;
		r->cum_bytes[(seq + i) % r->sq_depth] = r->bytes_posted;
		b->wr[i].wr_id = seq + i;
		b->wr[i].next = &b->wr[i + 1];
		if ((seq + i) % RD_SIG_EVERY == RD_SIG_EVERY - 1)
			b->wr[i].send_flags |= IBV_SEND_SIGNALED;
	}
	slot = r->sbuf + (size_t)((seq + b->n) % r->n_slots) * RD_BUF;
	if (r->credits - (int)b->n - 1 < RD_RECV_DEPTH / 4)
		h.flags |= RD_F_STARVED; /* writes spend credits fast: ask for them early */
	memcpy(slot, &h, sizeof(h));
	memcpy(slot + sizeof(h), b->land, len);
	lsg = (struct ibv_sge){.addr = (uintptr_t)slot, .length = (uint32_t)(sizeof(h) + len),
			       .lkey = r->smr->lkey};
	b->wr[b->n] = (struct ibv_send_wr){.wr_id = seq + b->n, .sg_list = &lsg, .num_sge = 1,
					   .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED};
	if (lsg.length <= r->max_inline)
		b->wr[b->n].send_flags |= IBV_SEND_INLINE;
	if (ibv_post_send(r->qp, &b->wr[0], &bad)) {
		r->state = RD_R_DEAD;
		r->dead_st = KVW_ERR_IO;
		r->dead_why = "rdma: ibv_post_send of a write batch failed: the QP is in error";
		return;
	}
	r->cum_bytes[(seq + b->n) % r->sq_depth] = r->bytes_posted;
	r->wr_posted = seq + b->n + 1;
	r->last_sig = r->wr_posted - 1;
	r->credits -= (int)b->n + 1;
	r->to_return = 0;
	r->batch_fated = false;
	b->n = b->n_sge = 0;
	b->bytes = 0;
}

size_t rd_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n)
{
	struct rd_ep *e = rd_ep_of(ep);
	struct rd_rail *r;
	size_t took = 0;

	if (!e || !e->rail[0] || e->rail[0]->state != RD_R_UP)
		return 0;
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++) {
		if (e->rail[i])
			rd_sbuf_grow(e->rail[i]); /* the first writes after READY */
		if (e->rail[i] && e->rail[i]->txq_len)
			rd_flush(e->rail[i]); /* messages of this pass go before the writes */
	}
	for (; took < n; took++) {
		const struct rd_keyent *k = rd_key_find(e, f[took].token);
		uint32_t ri = f[took].rail < KVW_MAX_RAILS ? f[took].rail : 0;

		uint32_t rkey;

		r = e->rail[ri] && e->rail[ri]->state == RD_R_UP && e->rail[ri]->peer_open ?
			e->rail[ri] : e->rail[0];
		if (k && k->fenced)
			continue; /* the receiver fenced this grant: drop, it is being aborted */
		rkey = k ? rd_key_rkey(k, f[took].dst_addr, f[took].bytes, rd_key_slot_of(k, r)) : f[took].rkey;
		if (k && k->per_rail && !rkey && r != e->rail[0]) { /* no window on this rail: rail 0's */
			r = e->rail[0];
			rkey = rd_key_rkey(k, f[took].dst_addr, f[took].bytes, 0);
		}
		if (!f[took].src_mem || !kvw_core_mem_priv(f[took].src_mem, kvw_core_ep_drv(ep)))
			break;
		if (!rd_rail_room(r, &r->batch, f[took].bytes, rd_frag_wrs(r, &f[took])))
			break;
		rd_batch_add(r, &r->batch, &f[took], rkey);
	}
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++)
		if (e->rail[i] && e->rail[i]->batch.n)
			rd_batch_post(e->rail[i], &e->rail[i]->batch);
	return took;
}

/* Sender abort. The core posts no more fragments of req; writes already
 * posted may still read its pages: KVW_INPROGRESS, and
 * kvw_core_cancel_done follows from progress once they completed
 * (rd_waits_poll). Nothing waits here: cancel is called inside progress. */
kvw_status rd_cancel(kvw_ep *ep, kvw_req *req)
{
	struct rd_ep *e = rd_ep_of(ep);
	bool ready = e && kvw_core_ep_ready(ep);

	if (!e)
		return KVW_OK;
	if (ready) {
		if (!kvw_core_req_bytes_posted(req))
			return KVW_OK; /* no write of req was ever posted */
		for (uint32_t i = 0; i < KVW_MAX_RAILS; i++)
			if (e->rail[i])
				rd_poll_sends(e->rail[i]);
		if (rd_ep_drained(e))
			return KVW_OK;
		if (rd_wait_add(e, RD_W_CANCEL, 0, kvw_core_req_seq_id(req)))
			return KVW_INPROGRESS;
	}
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++) {
		struct rd_rail *r = e->rail[i];
		if (!r)
			continue;
		if (ready && r->state == RD_R_UP) { /* no memory to remember the wait */
			r->dead_st = KVW_ERR_NOMEM;
			r->dead_why = "rdma: out of memory while aborting a send: endpoint closed so "
				      "that no write reads its pages any more (free memory, retry)";
		}
		if (r->qp && r->state != RD_R_DEAD) {
			/* the endpoint is failing: no ack may ever come, so do not
			 * wait for one; the error state stops the QP reading pages */
			struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};
			ibv_modify_qp(r->qp, &a, IBV_QP_STATE);
			r->state = RD_R_DEAD;
		}
	}
	return KVW_OK;
}

/* Keeps a receive completion for the next progress pass. Its returned
 * credits count at once. */
static void rd_stash(struct rd_rail *r, const struct ibv_wc *wc)
{
	uint8_t *buf = r->rbuf + (size_t)(wc->wr_id & ~RD_RECV_TAG) * RD_BUF;
	struct rd_hdr h;

	if (wc->status == IBV_WC_SUCCESS && wc->opcode != IBV_WC_RECV_RDMA_WITH_IMM &&
	    wc->byte_len >= sizeof(h)) {
		memcpy(&h, buf, sizeof(h));
		r->credits += h.credits;
		if (h.flags & RD_F_STARVED)
			r->peer_starved = true;
		h.credits = 0;
		h.flags &= (uint8_t)~RD_F_STARVED;
		memcpy(buf, &h, sizeof(h));
	}
	r->stash[(r->stash_head + r->n_stash) % RD_RECV_DEPTH] = *wc;
	r->n_stash++;
}

/* Receiver fence: FENCE to the sender, which stops this grant's writes,
 * drains the ones it posted and answers FENCE_ACK (rd_on_fence_ack drops the
 * keys and reports to the core). Nothing waits here: revoke is called inside
 * kvw_progress. Without a live rail the keys go at once. */
kvw_status rd_revoke(kvw_ep *ep, kvw_req *req)
{
	struct rd_ep *e = rd_ep_of(ep);
	struct rd_rail *r = e ? e->rail[0] : NULL;
	uint32_t token = kvw_core_req_token(req);
	struct rd_grant *g = e ? rd_grant_find(ep, token) : NULL;

	if (!g)
		return KVW_OK;
	if (g->fence_req)
		return KVW_INPROGRESS;
	if (kvw_core_ep_ready(ep) && r && r->state == RD_R_UP &&
	    rd_msg(r, RD_FENCE, &token, sizeof(token)) == KVW_OK) {
		g->fence_req = req;
		g->fence_t0 = kvw_now_ns();
		return KVW_INPROGRESS;
	}
	rd_grant_drop(ep, token);
	return KVW_OK;
}
