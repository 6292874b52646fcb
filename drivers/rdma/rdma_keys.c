/* SPDX-License-Identifier: MIT */
/* RDMA grant keys.
 *
 * Receiver: when a GRANT leaves, its blocks are merged into address runs and
 * each run gets a remote-write key per rail (mw2: a type 2 memory window
 * bound through that rail's own QP, so no other endpoint's QP can use it,
 * with a random key byte) or per device (config rdma_grant_keys): a
 * type 1 memory window bound on the arena's local MR (mw), or an MR over the
 * run (mr) — either way the HCA refuses any byte outside the granted blocks,
 * the holes between them included — or one MR over the grant's whole span
 * (span: fastest, holes open; a write there is caught by the LANDED check
 * only after it landed). auto = mw where the device bounds windows, else mr
 * (rdma.c rd_keys_mode). The keys travel ahead of the GRANT on rail 0
 * (RD_KEYMAP, several messages for many runs) and are invalidated when the
 * grant ends or its fence is acknowledged (rd_revoke, rd_on_fence_ack).
 * Sender: the peer's keys by token; rd_key_rkey() picks a fragment's key. */
#include "rdma_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define RD_RUNS_PER_MSG ((RD_PAYLOAD - sizeof(struct rd_keymap)) / sizeof(struct rd_krun))
#define RD_MAX_RUNS (1u << 22)

/* ------------------------------------------------------------ sender side */
static struct rd_keyent *rd_key_slot(struct rd_ep *e, uint32_t token, bool add)
{
	uint32_t mask, i;

	if (add && (e->keys_used + 1) * 2 > e->keys_cap) {
		uint32_t cap = e->keys_cap ? e->keys_cap * 2 : 64;
		struct rd_keyent *k = calloc(cap, sizeof(*k)), *old = e->keys;
		if (!k)
			return NULL;
		e->keys = k;
		e->keys_cap = cap;
		e->keys_used = 0;
		for (uint32_t j = 0; old && j < cap / 2; j++)
			if (old[j].used)
				*rd_key_slot(e, old[j].token, true) = old[j];
		free(old);
	}
	if (!e->keys_cap)
		return NULL;
	mask = e->keys_cap - 1;
	for (i = (token * 2654435761u) & mask;; i = (i + 1) & mask) {
		if (e->keys[i].used && e->keys[i].token == token)
			return &e->keys[i];
		if (!e->keys[i].used) {
			if (!add)
				return NULL;
			e->keys[i] = (struct rd_keyent){.used = true, .token = token};
			e->keys_used++;
			return &e->keys[i];
		}
	}
}

struct rd_keyent *rd_key_find(struct rd_ep *e, uint32_t token)
{
	return rd_key_slot(e, token, false);
}

void rd_key_del(struct rd_ep *e, uint32_t token)
{
	struct rd_keyent *k = rd_key_find(e, token), tmp;
	uint32_t mask = e->keys_cap - 1, i;

	if (!k)
		return;
	free(k->run);
	*k = (struct rd_keyent){0};
	e->keys_used--;
	/* re-insert the rest of the probe run */
	for (i = ((uint32_t)(k - e->keys) + 1) & mask; e->keys[i].used; i = (i + 1) & mask) {
		tmp = e->keys[i];
		e->keys[i].used = false;
		e->keys_used--;
		*rd_key_slot(e, tmp.token, true) = tmp;
	}
}

static int rd_krun_cmp(const void *a, const void *b)
{
	const struct rd_krun *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* First message of a key map: a fresh entry (runs to come). */
static struct rd_keyent *rd_key_start(struct rd_ep *e, const struct rd_keymap *km)
{
	struct rd_keyent *k = rd_key_slot(e, km->token, true);

	if (!k)
		return NULL;
	free(k->run);
	*k = (struct rd_keyent){.used = true, .token = km->token, .n = km->n_dev & ~RD_KM_RAILS,
				.per_rail = km->n_dev & RD_KM_RAILS, .n_runs = km->n_runs};
	memcpy(k->rkey, km->rkey, sizeof(k->rkey));
	if (km->n_runs && !(k->run = calloc(km->n_runs, sizeof(*k->run)))) {
		rd_key_del(e, km->token);
		return NULL;
	}
	return k;
}

void rd_on_keymap(struct rd_rail *r, const uint8_t *p, size_t len)
{
	struct rd_keymap km;
	struct rd_keyent *k;

	if (len < sizeof(km))
		goto bad;
	memcpy(&km, p, sizeof(km));
	if ((km.n_dev & ~RD_KM_RAILS) > RD_MAX_DEV || ((km.n_dev & RD_KM_RAILS) && !km.n_runs) ||
	    km.n_runs > RD_MAX_RUNS || km.first > km.n_runs ||
	    km.n_here > km.n_runs - km.first || len < sizeof(km) + (size_t)km.n_here * sizeof(struct rd_krun))
		goto bad;
	if (km.first == 0)
		k = rd_key_start(r->rep, &km);
	else if (!(k = rd_key_find(r->rep, km.token)) || k->n_runs != km.n_runs || k->n_got != km.first)
		goto bad;
	if (!k) {
		rd_rail_fail(r, KVW_ERR_NOMEM, "rdma: out of memory for a grant's key map");
		return;
	}
	memcpy(k->run + km.first, p + sizeof(km), (size_t)km.n_here * sizeof(struct rd_krun));
	k->n_got += km.n_here;
	if (k->n_runs && k->n_got == k->n_runs)
		qsort(k->run, k->n_runs, sizeof(*k->run), rd_krun_cmp);
	return;
bad:
	kvw_core_bad_frame(r->ep, "rdma: malformed KEYMAP message (counts out of range or out of order)");
}

/* The key for [addr, addr+len) on the peer's device dev. A range no run
 * holds gets the first run's key: the HCA refuses it (remote access error). */
uint32_t rd_key_rkey(const struct rd_keyent *k, uint64_t addr, uint64_t len, uint32_t dev)
{
	uint32_t lo = 0, hi = k->n_runs;

	if (dev >= RD_MAX_DEV || dev >= k->n)
		return 0;
	if (!k->n_runs)
		return k->rkey[dev];
	if (k->n_got < k->n_runs)
		return k->run[0].rkey[dev];
	while (hi - lo > 1) {           /* last run with run.addr <= addr */
		uint32_t mid = lo + (hi - lo) / 2;
		if (k->run[mid].addr <= addr)
			lo = mid;
		else
			hi = mid;
	}
	if (k->run[lo].addr <= addr && addr + len <= k->run[lo].addr + k->run[lo].len)
		return k->run[lo].rkey[dev];
	return k->run[0].rkey[dev];
}

/* The key slot rail r's writes use: the rail's index where the receiver
 * bound a window per rail (mw2), else the peer's device on that rail. */
uint32_t rd_key_slot_of(const struct rd_keyent *k, const struct rd_rail *r)
{
	return k->per_rail ? r->idx : r->peer_dev;
}

/* ------------------------------------------------------------ receiver side */
static void rd_grant_free(struct rd_grant *g)
{
	for (uint32_t i = 0; i < g->n_mw; i++)
		if (g->mw[i])
			ibv_dealloc_mw(g->mw[i]); /* the window's key is dead from here */
	for (uint32_t i = 0; i < g->n_mr; i++)
		if (g->mr[i])
			ibv_dereg_mr(g->mr[i]);
	free(g->mw);
	free(g->mr);
	free(g);
}

static struct rd_grant **rd_grant_slot(struct rd_ep *e, uint32_t token)
{
	struct rd_grant **pp;

	for (pp = &e->grants; *pp; pp = &(*pp)->next)
		if ((*pp)->token == token)
			return pp;
	return NULL;
}

/* Removes the grant's keys: after this no write with them can land. */
void rd_grant_drop(kvw_ep *ep, uint32_t token)
{
	struct rd_ep *e = rd_ep_of(ep);
	struct rd_grant **pp = rd_grant_slot(e, token), *g;

	if (!pp)
		return;
	g = *pp;
	*pp = g->next;
	rd_grant_free(g);
	if (e->rail[0] && e->rail[0]->state == RD_R_UP)
		rd_queue_lazy(e->rail[0], RD_KEYDROP, &token, sizeof(token)); /* with the next message */
}

bool rd_grant_live(kvw_ep *ep, uint32_t token)
{
	return rd_ep_of(ep) && rd_grant_slot(rd_ep_of(ep), token);
}

struct rd_grant *rd_grant_find(kvw_ep *ep, uint32_t token)
{
	struct rd_grant **pp = rd_ep_of(ep) ? rd_grant_slot(rd_ep_of(ep), token) : NULL;

	return pp ? *pp : NULL;
}

static int rd_u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The grant's blocks as address runs: per layer, sorted blocks merged where
 * they touch (stride == block bytes). */
static kvw_status rd_grant_runs(const struct kvw_wire_grant *g, struct rd_krun **out, uint32_t *n_out)
{
	uint32_t *b = malloc((size_t)g->n_blocks * sizeof(*b)), n = 0;
	struct rd_krun *v = calloc((size_t)g->n_blocks * g->n_layers, sizeof(*v));
	bool touch = g->block_stride == g->block_bytes;

	if (!b || !v || (uint64_t)g->n_blocks * g->n_layers > RD_MAX_RUNS) {
		free(b);
		free(v);
		return KVW_ERR_NOMEM;
	}
	for (uint32_t i = 0; i < g->n_blocks; i++)
		b[i] = kvw_wire_grant_block(g, i);
	qsort(b, g->n_blocks, sizeof(*b), rd_u32_cmp);
	for (uint32_t l = 0; l < g->n_layers; l++) {
		uint64_t base = g->mem_addr + kvw_wire_grant_layer_off(g, l);
		for (uint32_t i = 0; i < g->n_blocks; i++) {
			uint64_t a = base + b[i] * g->block_stride;
			if (i && b[i] == b[i - 1])
				continue;
			if (i && touch && b[i] == b[i - 1] + 1 && v[n - 1].addr + v[n - 1].len == a)
				v[n - 1].len += g->block_bytes;
			else
				v[n++] = (struct rd_krun){.addr = a, .len = g->block_bytes};
		}
	}
	free(b);
	*out = v;
	*n_out = n;
	return KVW_OK;
}

/* The ep's first live rail on device dev, or NULL. */
static struct rd_rail *rd_dev_rail(struct rd_ep *e, int dev)
{
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++)
		if (e->rail[i] && e->rail[i]->dev_idx == dev && e->rail[i]->state == RD_R_UP)
			return e->rail[i];
	return NULL;
}

/* Room for one bind (and a spare slot) in the rail's send queue now; one
 * look at the send CQ, never a wait: grant_keys runs inside progress. */
static bool rd_sq_room(struct rd_rail *r)
{
	if (r->wr_posted + 2 - r->wr_done > r->sq_depth)
		rd_poll_sends(r);
	return r->state == RD_R_UP && r->wr_posted + 2 - r->wr_done <= r->sq_depth;
}

/* One window over one run, bound through rail r's send queue (signalled:
 * rd_binds_done counts its completion; the caller checked rd_sq_room). */
static kvw_status rd_bind_run(struct rd_rail *r, struct ibv_mr *mr, struct ibv_mw *mw,
			      const struct rd_krun *run)
{
	uint64_t seq = r->wr_posted;
	struct ibv_mw_bind b = {
		.wr_id = seq,
		.send_flags = IBV_SEND_SIGNALED,
		.bind_info = {.mr = mr, .addr = run->addr, .length = run->len,
			      .mw_access_flags = IBV_ACCESS_REMOTE_WRITE},
	};

	if (ibv_bind_mw(r->qp, mw, &b))
		return KVW_ERR_IO;
	r->cum_bytes[seq % r->sq_depth] = r->bytes_posted;
	r->wr_posted = seq + 1;
	r->last_sig = seq;
	return KVW_OK;
}

/* Windows work once their binds completed, before the peer learns them:
 * rail 0's messages (the key map, then the GRANT) wait in its queue until
 * the binds posted so far completed (rd_binds_done, from rd_flush). */
static void rd_binds_gate(struct rd_ep *e, const struct rd_rail *r)
{
	e->bind_upto[r->idx] = r->wr_posted;
}

bool rd_binds_done(struct rd_ep *e)
{
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++) {
		struct rd_rail *r = e->rail[i];
		if (!r || r->state != RD_R_UP || r->wr_done >= e->bind_upto[i])
			continue;
		if (rd_poll_sends(r) < 0 || r->wr_done < e->bind_upto[i])
			return false;
	}
	return true;
}

static kvw_status rd_key_fail(kvw_ep *ep, const char *what, const char *dev)
{
	return kvw_set_err(kvw_core_ep_ctx(ep), errno == ENOMEM || errno == EAGAIN ? KVW_ERR_MEMLOCK : KVW_ERR_IO,
			   "rdma: %s for a grant on %s: %s (raise `ulimit -l`; or set rdma_grant_keys=span "
			   "for one MR per grant)", what, dev, strerror(errno ? errno : EIO));
}

/* Per-run keys on device d: windows bound through rail r (the ep's first
 * rail on d), or MRs (mr mode, or no rail on d yet: rails may still join). */
static kvw_status rd_grant_dev(kvw_ep *ep, struct rd_grant *gr, int d, struct rd_rail *r,
			       struct ibv_mr *arena, struct rd_krun *run, uint32_t n)
{
	struct rd_dev *dv = &rd_of(kvw_core_ep_drv(ep))->dev[d];
	bool mw = dv->keys == RD_KEYS_MW && r;

	for (uint32_t j = 0; j < n; j++) {
		if (!mw || !rd_sq_room(r)) { /* no room to bind now: an MR for this run */
			struct ibv_mr *mr = ibv_reg_mr(dv->pd, (void *)(uintptr_t)run[j].addr, run[j].len,
						       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
			if (!(gr->mr[gr->n_mr] = mr))
				return rd_key_fail(ep, "registering an MR per run", dv->name);
			gr->n_mr++;
			run[j].rkey[d] = mr->rkey;
			continue;
		}
		errno = 0;
		if (!(gr->mw[gr->n_mw] = ibv_alloc_mw(dv->pd, IBV_MW_TYPE_1)))
			return rd_key_fail(ep, "allocating a memory window", dv->name);
		gr->n_mw++;
		if (rd_bind_run(r, arena, gr->mw[gr->n_mw - 1], &run[j]) != KVW_OK)
			return rd_key_fail(ep, "binding a memory window", dv->name);
		run[j].rkey[d] = gr->mw[gr->n_mw - 1]->rkey;
	}
	if (mw)
		rd_binds_gate(rd_ep_of(ep), r);
	return KVW_OK;
}

/* Per-run keys on every device the ep uses. */
static kvw_status rd_grant_runs_keys(kvw_ep *ep, struct rd_grant *gr, kvw_mem *m, struct rd_krun *run,
				     uint32_t n)
{
	struct rd_drv *rd = rd_of(kvw_core_ep_drv(ep));
	struct rd_mem *rm = kvw_core_mem_priv(m, kvw_core_ep_drv(ep));
	size_t cap = (size_t)n * (unsigned)rd->ndev;
	kvw_status st;

	if (!(gr->mw = calloc(cap, sizeof(*gr->mw))) || !(gr->mr = calloc(cap, sizeof(*gr->mr))))
		return KVW_ERR_NOMEM;
	for (int d = 0; d < rd->ndev; d++)
		if ((st = rd_grant_dev(ep, gr, d, rd_dev_rail(rd_ep_of(ep), d), rm->mr[d], run, n)) != KVW_OK)
			return st;
	return KVW_OK;
}

/* A key byte the library chose (type 2 windows): random, so no peer can
 * guess the next grant's key from the last one. One getrandom per 256. */
static bool rd_key_byte(struct rd_drv *rd, uint8_t *out)
{
	if (!rd->rnd_left) {
		if (getrandom(rd->rnd, sizeof(rd->rnd), 0) != (ssize_t)sizeof(rd->rnd))
			return false;
		rd->rnd_left = sizeof(rd->rnd);
	}
	*out = rd->rnd[--rd->rnd_left];
	return true;
}

/* One type 2 window over one run, bound through rail r's QP with a random
 * key byte: the NIC takes the key from that QP only. Signalled (rd_binds_done
 * counts it; the caller checked rd_sq_room). */
static kvw_status rd_bind2_run(struct rd_rail *r, struct ibv_mr *mr, struct ibv_mw *mw,
			       const struct rd_krun *run, uint8_t kb, uint32_t *rkey)
{
	uint64_t seq = r->wr_posted;
	uint32_t key = (mw->rkey & ~0xffu) | kb;
	struct ibv_send_wr wr = {.wr_id = seq, .opcode = IBV_WR_BIND_MW,
				 .send_flags = IBV_SEND_SIGNALED}, *bad;

	wr.bind_mw.mw = mw;
	wr.bind_mw.rkey = key;
	wr.bind_mw.bind_info = (struct ibv_mw_bind_info){.mr = mr, .addr = run->addr, .length = run->len,
							 .mw_access_flags = IBV_ACCESS_REMOTE_WRITE};
	if (ibv_post_send(r->qp, &wr, &bad))
		return KVW_ERR_IO;
	r->cum_bytes[seq % r->sq_depth] = r->bytes_posted;
	r->wr_posted = seq + 1;
	r->last_sig = seq;
	*rkey = key;
	return KVW_OK;
}

/* What a window of run j on device d lies over: the arena's MR where the NIC
 * bounds windows, else (rxe) an MR of the run alone, with no remote access of
 * its own, made once per (run, device) and shared by the rails on d. */
static struct ibv_mr *rd_bind_base(struct rd_grant *gr, struct rd_dev *dv, struct ibv_mr *arena,
				   struct ibv_mr **base, const struct rd_krun *run)
{
	if (dv->mw_bounds)
		return arena;
	if (!*base && (*base = ibv_reg_mr(dv->pd, (void *)(uintptr_t)run->addr, run->len,
					  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND)))
		gr->mr[gr->n_mr++] = *base;
	return *base;
}

/* mw2 keys of rail r, slot r->idx. A run the send queue has no room to bind
 * now: no key on an extra rail (the sender writes it on rail 0), an MR on
 * rail 0 (that run's key then works from any QP of the device: logged). */
static kvw_status rd_grant_rail(kvw_ep *ep, struct rd_grant *gr, struct rd_rail *r, struct ibv_mr *arena,
				struct ibv_mr **base, struct rd_krun *run, uint32_t n)
{
	struct rd_drv *rd = rd_of(kvw_core_ep_drv(ep));
	struct rd_dev *dv = r->dev;
	uint32_t d = (uint32_t)r->dev_idx, fell = 0;
	uint8_t kb;

	for (uint32_t j = 0; j < n; j++) {
		struct ibv_mr *on;
		if (!rd_sq_room(r)) {
			if (r->idx)
				continue;
			if (!(gr->mr[gr->n_mr] = ibv_reg_mr(dv->pd, (void *)(uintptr_t)run[j].addr, run[j].len,
							    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE)))
				return rd_key_fail(ep, "registering an MR per run", dv->name);
			run[j].rkey[0] = gr->mr[gr->n_mr++]->rkey;
			fell++;
			continue;
		}
		errno = 0;
		if (!(on = rd_bind_base(gr, dv, arena, &base[(size_t)j * RD_MAX_DEV + d], &run[j])))
			return rd_key_fail(ep, "registering the MR under a run's window", dv->name);
		if (!(gr->mw[gr->n_mw] = ibv_alloc_mw(dv->pd, IBV_MW_TYPE_2)))
			return rd_key_fail(ep, "allocating a type 2 memory window", dv->name);
		gr->n_mw++;
		if (!rd_key_byte(rd, &kb))
			return rd_key_fail(ep, "drawing a random key byte (getrandom)", dv->name);
		if (rd_bind2_run(r, on, gr->mw[gr->n_mw - 1], &run[j], kb, &run[j].rkey[r->idx]) != KVW_OK)
			return rd_key_fail(ep, "binding a type 2 memory window", dv->name);
	}
	rd_binds_gate(rd_ep_of(ep), r);
	if (fell)
		kvw_log(kvw_core_ep_ctx(ep), 3, "rdma: %u of %u runs of a grant got an MR (no send-queue room "
			"to bind windows; raise rdma_qp_depth): their keys work from any QP on %s", fell, n,
			dv->name);
	return KVW_OK;
}

/* mw2: windows per run on every rail that is up (slots = rail
 * indices below RD_MAX_DEV; a rail with no slot gets its runs' writes sent
 * on rail 0 by the sender). *slots: the key map's n_dev. */
static kvw_status rd_grant_rails(kvw_ep *ep, struct rd_grant *gr, kvw_mem *m, struct rd_krun *run,
				 uint32_t n, uint16_t *slots)
{
	struct rd_drv *rd = rd_of(kvw_core_ep_drv(ep));
	struct rd_ep *e = rd_ep_of(ep);
	struct rd_mem *rm = kvw_core_mem_priv(m, kvw_core_ep_drv(ep));
	struct ibv_mr **base = calloc((size_t)n * RD_MAX_DEV, sizeof(*base));
	uint16_t nr = 1;
	kvw_status st = KVW_ERR_NOMEM;

	if (!base || !(gr->mw = calloc((size_t)n * RD_MAX_DEV, sizeof(*gr->mw))) ||
	    !(gr->mr = calloc((size_t)n * ((unsigned)rd->ndev + 1), sizeof(*gr->mr))))
		goto out;
	for (uint32_t i = 0; i < RD_MAX_DEV; i++) {
		struct rd_rail *r = e->rail[i];
		if (!r || r->state != RD_R_UP || !r->qp)
			continue;
		if ((st = rd_grant_rail(ep, gr, r, rm->mr[r->dev_idx], base, run, n)) != KVW_OK)
			goto out;
		nr = (uint16_t)(i + 1);
	}
	*slots = (uint16_t)(nr | RD_KM_RAILS);
	st = KVW_OK;
out:
	free(base);
	return st;
}

/* Span mode: one MR per device over [lo, hi) of the grant's pages. */
static kvw_status rd_grant_span(kvw_ep *ep, struct rd_grant *gr, const struct rd_krun *run,
				uint32_t n, struct rd_keymap *km)
{
	struct rd_drv *rd = rd_of(kvw_core_ep_drv(ep));
	uint64_t lo = UINT64_MAX, hi = 0;

	if (!(gr->mr = calloc((unsigned)rd->ndev, sizeof(*gr->mr))))
		return KVW_ERR_NOMEM;
	for (uint32_t j = 0; j < n; j++) {
		lo = run[j].addr < lo ? run[j].addr : lo;
		hi = run[j].addr + run[j].len > hi ? run[j].addr + run[j].len : hi;
	}
	for (int i = 0; i < rd->ndev; i++, gr->n_mr++) {
		gr->mr[i] = ibv_reg_mr(rd->dev[i].pd, (void *)(uintptr_t)lo, hi - lo,
				       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
		if (!gr->mr[i])
			return rd_key_fail(ep, "registering an MR over the span", rd->dev[i].name);
		km->rkey[i] = gr->mr[i]->rkey;
	}
	return KVW_OK;
}

/* The key map to the peer: runs in as many messages as they need. */
static kvw_status rd_keymap_send(struct rd_rail *r, struct rd_keymap *km, const struct rd_krun *run)
{
	static __thread uint8_t buf[RD_PAYLOAD];
	uint32_t first = 0;
	kvw_status st;

	do {
		uint32_t here = km->n_runs - first < RD_RUNS_PER_MSG ? km->n_runs - first :
			(uint32_t)RD_RUNS_PER_MSG;
		km->first = first;
		km->n_here = (uint16_t)here;
		memcpy(buf, km, sizeof(*km));
		memcpy(buf + sizeof(*km), run + first, (size_t)here * sizeof(*run));
		if ((st = rd_queue(r, RD_KEYMAP, buf, sizeof(*km) + (size_t)here * sizeof(*run))) != KVW_OK)
			return st;
		first += here;
	} while (first < km->n_runs);
	return KVW_OK;
}

/* Per-run keys unless a device the ep uses is in span mode. */
static bool rd_keys_per_run(kvw_ep *ep, kvw_mem *m)
{
	struct rd_drv *rd = rd_of(kvw_core_ep_drv(ep));

	if (!m || !kvw_core_mem_priv(m, kvw_core_ep_drv(ep)))
		return false;
	for (int d = 0; d < rd->ndev; d++)
		if (rd->dev[d].keys == RD_KEYS_SPAN)
			return false;
	return true;
}

/* ops->grant_keys: a GRANT is about to leave: keys for exactly its blocks
 * on every device, the key map to the peer (queued ahead of the GRANT, which
 * send_ctrl puts in the same doorbell), and *mem_key, rail 0's first key,
 * which the GRANT carries. */
kvw_status rd_grant_keys(kvw_ep *ep, kvw_req *req, const void *body, size_t len, uint32_t *mem_key)
{
	struct rd_drv *rd = rd_of(kvw_core_ep_drv(ep));
	struct rd_ep *e = rd_ep_of(ep);
	const struct kvw_wire_grant *g = body;
	kvw_mem *m = kvw_core_grant_mem(ep, g->token);
	struct rd_keymap km = {.token = g->token, .n_dev = (uint16_t)rd->ndev};
	struct rd_krun *run = NULL;
	struct rd_grant *gr;
	uint32_t n = 0;
	uint64_t t0 = kvw_now_ns();
	kvw_status st;

	(void)req;
	if (!e || !e->rail[0] || e->rail[0]->state == RD_R_DEAD)
		return KVW_ERR_CLOSED; /* as send_ctrl would answer */
	if (len < sizeof(*g) || !g->n_blocks || !g->n_layers)
		return KVW_OK;
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++) /* READY: before the GRANT leaves, not a pass later */
		if (e->rail[i] && kvw_core_ep_ready(ep) && rd_rail_open_writes(e->rail[i]) != KVW_OK)
			return KVW_ERR_IO;
	rd_grant_drop(ep, g->token);
	if ((st = rd_grant_runs(g, &run, &n)) != KVW_OK)
		return kvw_set_err(kvw_core_ep_ctx(ep), st, "rdma: out of memory for the runs of a grant");
	if (!(gr = calloc(1, sizeof(*gr)))) {
		free(run);
		return KVW_ERR_NOMEM;
	}
	gr->token = g->token;
	if (rd_keys_per_run(ep, m) && rd->dev[e->rail[0]->dev_idx].keys == RD_KEYS_MW2) {
		km.n_runs = n;
		st = rd_grant_rails(ep, gr, m, run, n, &km.n_dev);
	} else if (rd_keys_per_run(ep, m)) {
		km.n_runs = n;
		st = rd_grant_runs_keys(ep, gr, m, run, n);
	} else {
		st = rd_grant_span(ep, gr, run, n, &km);
	}
	if (st != KVW_OK) {
		rd_grant_free(gr);
		free(run);
		return st;
	}
	if (kvw_now_ns() - t0 > 10000000ull)
		kvw_log(kvw_core_ep_ctx(ep), 3, "rdma: keys for a grant of %u runs took %llu ms", n,
			(unsigned long long)((kvw_now_ns() - t0) / 1000000));
	gr->next = e->grants;
	e->grants = gr;
	*mem_key = km.n_dev & RD_KM_RAILS ? run[0].rkey[0] : km.n_runs ? run[0].rkey[e->rail[0]->dev_idx] :
		km.rkey[e->rail[0]->dev_idx];
	st = rd_keymap_send(e->rail[0], &km, run);
	free(run);
	return st;
}

/* A receive request ended: its keys go. On success every write has landed
 * (the LANDED notices said so); on failure revoke fenced it first. */
void rd_grant_done(kvw_ep *ep, kvw_req *req)
{
	if (rd_ep_of(ep))
		rd_grant_drop(ep, kvw_core_req_token(req));
}

/* The ep's grants and their keys; before its QPs go: a type 2 window holds
 * the QP it is bound to (rxe waits for it at destroy). */
void rd_ep_grants_free(kvw_ep *ep)
{
	struct rd_ep *e = rd_ep_of(ep);

	while (e && e->grants) {
		struct rd_grant *g = e->grants;
		e->grants = g->next;
		rd_grant_free(g);
	}
}

void rd_ep_data_free(kvw_ep *ep)
{
	struct rd_ep *e = rd_ep_of(ep);

	rd_ep_grants_free(ep);
	for (uint32_t i = 0; i < e->keys_cap; i++)
		if (e->keys[i].used)
			free(e->keys[i].run);
	free(e->keys);
	e->keys = NULL;
	e->keys_cap = e->keys_used = 0;
	free(e->waits);
	e->waits = NULL;
	e->n_waits = e->cap_waits = 0;
}
