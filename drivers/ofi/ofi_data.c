/* SPDX-License-Identifier: MIT */
/* ofi driver: DRV records on the control stream, grant keys, writes and
 * their completions. See ofi_int.h. */
#include "ofi_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ------------------------------------------------------------ tables */
static uint32_t ofi_hash(uint64_t id)
{
	return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32);
}

static bool ofi_tab_grow(struct ofi_tab *t)
{
	uint32_t cap = t->cap ? t->cap * 2 : 64;
	struct ofi_ent *old = t->e, *e;

	if (cap > 2 * OFI_PEND_MAX || !(e = calloc(cap, sizeof(*e))))
		return false;
	t->e = e;
	t->cap = cap;
	t->used = 0;
	for (uint32_t j = 0; old && j < cap / 2; j++)
		if (old[j].used)
			*ofi_tab_find(t, old[j].id, true) = old[j];
	free(old);
	return true;
}

/* The entry of id; with add, a fresh one when absent (NULL: table full). */
struct ofi_ent *ofi_tab_find(struct ofi_tab *t, uint64_t id, bool add)
{
	uint32_t mask, i;

	if (add && (t->used + 1) * 2 > t->cap && !ofi_tab_grow(t))
		return NULL;
	if (!t->cap)
		return NULL;
	mask = t->cap - 1;
	for (i = ofi_hash(id) & mask;; i = (i + 1) & mask) {
		if (t->e[i].used && t->e[i].id == id)
			return &t->e[i];
		if (!t->e[i].used) {
			if (!add)
				return NULL;
			t->e[i] = (struct ofi_ent){.used = true, .id = id};
			t->used++;
			return &t->e[i];
		}
	}
}

void ofi_tab_del(struct ofi_tab *t, uint64_t id)
{
	struct ofi_ent *k = ofi_tab_find(t, id, false), tmp;
	uint32_t mask = t->cap - 1, i;

	if (!k)
		return;
	*k = (struct ofi_ent){0};
	t->used--;
	for (i = ((uint32_t)(k - t->e) + 1) & mask; t->e[i].used; i = (i + 1) & mask) {
		tmp = t->e[i];
		t->e[i].used = false;
		t->used--;
		*ofi_tab_find(t, tmp.id, true) = tmp;
	}
}

static void ofi_key_del(struct ofi_ep *oe, uint32_t token)
{
	struct ofi_ent *k = ofi_tab_find(&oe->keys, token, false);

	if (!k)
		return;
	free(k->run);
	ofi_tab_del(&oe->keys, token);
}

void ofi_keys_free(struct ofi_ep *oe)
{
	for (uint32_t i = 0; i < oe->keys.cap; i++)
		if (oe->keys.e[i].used)
			free(oe->keys.e[i].run);
	free(oe->keys.e);
	oe->keys = (struct ofi_tab){0};
}

/* Every half-joined write of a grant that ended goes (none can complete). */
static void ofi_pend_purge(struct ofi_ep *oe, uint32_t token)
{
	for (uint32_t i = 0; oe->pend.used && i < oe->pend.cap; i++)
		while (oe->pend.e[i].used && (uint32_t)(oe->pend.e[i].id >> 32) == token)
			ofi_tab_del(&oe->pend, oe->pend.e[i].id);
}

/* ------------------------------------------------------------ records */
static kvw_status ofi_rec_send(kvw_ep *ep, uint32_t kind, const void *p, size_t len)
{
	uint8_t frame[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_drv) + KVW_WIRE_MAX_DRV];
	struct kvw_wire_drv r = {.kind = kind, .len = (uint32_t)len};
	struct kvw_sockep *se = kvw_sockep(ep);

	if (!se || !se->rail[0] || len > KVW_WIRE_MAX_DRV)
		return KVW_ERR_CLOSED;
	kvw_wire_hdr_encode(frame, KVW_T_DRV, 0, (uint32_t)(sizeof(r) + len), kvw_core_ep_peer_id(ep));
	memcpy(frame + sizeof(struct kvw_wire_hdr), &r, sizeof(r));
	memcpy(frame + sizeof(struct kvw_wire_hdr) + sizeof(r), p, len);
	return kvw_stream_ctrl(se->rail[0], frame, sizeof(struct kvw_wire_hdr) + sizeof(r) + len, -1);
}

static kvw_status ofi_bad(struct kvw_stream *s, const char *why)
{
	kvw_core_reject(s->ep, KVW_ERR_PROTO, why);
	return KVW_ERR_PROTO;
}

static void ofi_land(struct ofi_ep *oe, const struct kvw_wire_data *d)
{
	uint8_t *dst;

	if (kvw_core_dst(oe->ep, d, &dst) != KVW_OK)
		return; /* revoked (discard) or outside the grant (request failed) */
	kvw_core_ep_rail_rx(oe->ep, 0, d->bytes);
	kvw_core_landed(oe->ep, d);
}

/* One half of a write: its name (DESC) or its remote completion (CQ);
 * the write has landed once both are here, in either order. */
static kvw_status ofi_join(struct ofi_ep *oe, uint64_t id, uint8_t half, const struct kvw_wire_data *d)
{
	struct ofi_ent *e = ofi_tab_find(&oe->pend, id, true);
	struct kvw_wire_data got;

	if (!e) {
		kvw_ep_fail(oe->ep, KVW_ERR_PROTO, "ofi: the peer named more writes than it completed "
			    "(over a million waiting): failing the endpoint");
		return KVW_ERR_PROTO;
	}
	if (e->have & half)
		return KVW_OK; /* a repeat: counted once */
	e->have |= half;
	if (d)
		e->d = *d;
	if (e->have != (OFI_HAVE_DESC | OFI_HAVE_CQ))
		return KVW_OK;
	got = e->d;
	ofi_tab_del(&oe->pend, id);
	ofi_land(oe, &got);
	return KVW_OK;
}

static kvw_status ofi_on_desc(struct kvw_stream *s, struct ofi_ep *oe, const uint8_t *p, uint32_t len)
{
	if (len % sizeof(struct ofi_desc_rec))
		return ofi_bad(s, "ofi: DESC record of a length that is no multiple of 32");
	for (uint32_t off = 0; off < len && kvw_core_ep_ready(s->ep); off += sizeof(struct ofi_desc_rec)) {
		struct ofi_desc_rec r;
		memcpy(&r, p + off, sizeof(r));
		if (ofi_join(oe, (uint64_t)r.d.token << 32 | r.n, OFI_HAVE_DESC, &r.d) != KVW_OK)
			return KVW_ERR_PROTO;
	}
	return KVW_OK;
}

static kvw_status ofi_on_addr(struct kvw_stream *s, struct ofi_ep *oe, const uint8_t *p, uint32_t len)
{
	int rc;

	if (!len || len > OFI_ADDR_MAX || oe->peer_known)
		return ofi_bad(s, "ofi: fabric address record empty, too long or repeated");
	rc = fi_av_insert(oe->av, p, 1, &oe->peer, 0, NULL);
	if (rc != 1) {
		kvw_ep_fail(s->ep, KVW_ERR_IO, "ofi: the peer's fabric address does not resolve here "
			    "(fi_av_insert): do both ends use the same provider?");
		return KVW_ERR_IO;
	}
	oe->peer_known = true;
	memcpy(oe->peer_name, p, len);
	oe->peer_name_len = len;
	return KVW_OK;
}

/* A KEY record: the first of a grant starts its run table, later ones fill
 * it in order. */
static kvw_status ofi_on_key(struct kvw_stream *s, struct ofi_ep *oe, const uint8_t *p, uint32_t len)
{
	struct ofi_key_rec k;
	struct ofi_ent *e;

	if (len < sizeof(k))
		return ofi_bad(s, "ofi: KEY record too short");
	memcpy(&k, p, sizeof(k));
	if (!k.n_runs || k.n_runs > OFI_MAX_RUNS || k.first > k.n_runs || k.n_here > k.n_runs - k.first ||
	    len != sizeof(k) + (size_t)k.n_here * sizeof(struct ofi_run))
		return ofi_bad(s, "ofi: KEY record with counts out of range");
	if (k.first == 0) {
		ofi_key_del(oe, k.token);
		if (!(e = ofi_tab_find(&oe->keys, k.token, true)) ||
		    !(e->run = calloc(k.n_runs, sizeof(*e->run)))) {
			if (e)
				ofi_tab_del(&oe->keys, k.token);
			kvw_ep_fail(s->ep, KVW_ERR_NOMEM, "ofi: out of memory for the peer's grant keys");
			return KVW_ERR_NOMEM;
		}
		e->n_runs = k.n_runs;
	} else if (!(e = ofi_tab_find(&oe->keys, k.token, false)) || e->n_runs != k.n_runs ||
		   e->n_got != k.first) {
		return ofi_bad(s, "ofi: KEY record out of order");
	}
	memcpy(e->run + k.first, p + sizeof(k), (size_t)k.n_here * sizeof(struct ofi_run));
	e->n_got += k.n_here;
	return KVW_OK;
}

static kvw_status ofi_on_fence(struct ofi_ep *oe, uint32_t token)
{
	struct ofi_ent *k = ofi_tab_find(&oe->keys, token, false);
	kvw_log(ofi_ctx(oe), 4, "ofi: FENCE of grant %08x (key %s), %u writes in flight", token,
		k ? "known" : "unknown", oe->n_inflight);

	if (!k)
		return KVW_OK; /* no key, no write: nothing to mark (the receiver times out) */
	if (k->fenced)
		return KVW_OK; /* a repeat: one marker */
	k->fenced = true;
	if (oe->n_fences == oe->cap_fences) {
		uint32_t cap = oe->cap_fences ? 2 * oe->cap_fences : 16;
		uint32_t *f = cap <= OFI_PEND_MAX ? realloc(oe->fences, cap * sizeof(*f)) : NULL;
		if (!f) {
			kvw_ep_fail(oe->ep, KVW_ERR_NOMEM, "ofi: out of memory for the peer's fences "
				    "(or over a million at once): failing the endpoint");
			return KVW_ERR_NOMEM;
		}
		oe->fences = f;
		oe->cap_fences = cap;
	}
	oe->fences[oe->n_fences++] = token;
	return KVW_OK;
}

/* DRV records, only between READY endpoints. */
kvw_status ofi_on_frame(struct kvw_stream *s, const struct kvw_wire_hdr *h, const void *body)
{
	struct kvw_wire_drv r;
	const uint8_t *p = (const uint8_t *)body + sizeof(r);
	struct ofi_ep *oe;
	uint32_t tok;

	if (h->type != KVW_T_DRV || !kvw_core_ep_ready(s->ep))
		return ofi_bad(s, "ofi: driver record before the handshake finished, or a frame type "
			       "this driver does not use");
	memcpy(&r, body, sizeof(r));
	if (!(oe = ofi_ep_get(s->ep))) {
		kvw_ep_fail(s->ep, KVW_ERR_IO, kvw_ctx_last_error(kvw_core_ep_ctx(s->ep)));
		return KVW_ERR_IO;
	}
	switch (r.kind) {
	case OFI_R_ADDR: return ofi_on_addr(s, oe, p, r.len);
	case OFI_R_KEY: return ofi_on_key(s, oe, p, r.len);
	case OFI_R_DESC: return ofi_on_desc(s, oe, p, r.len);
	case OFI_R_FENCE:
		if (r.len != sizeof(tok))
			return ofi_bad(s, "ofi: FENCE record of the wrong length");
		memcpy(&tok, p, sizeof(tok));
		return ofi_on_fence(oe, tok);
	case OFI_R_DROP:
		if (r.len != sizeof(tok))
			return ofi_bad(s, "ofi: DROP record of the wrong length");
		memcpy(&tok, p, sizeof(tok));
		ofi_key_del(oe, tok);
		return KVW_OK;
	}
	return ofi_bad(s, "ofi: unknown driver record kind");
}

/* ------------------------------------------------------------ grants (receiver) */
static void ofi_grant_close(struct ofi_ep *oe, uint32_t token, bool tell)
{
	struct ofi_grant **pp, *g;

	for (pp = &oe->grants; *pp && (*pp)->token != token; pp = &(*pp)->next)
		;
	if (!(g = *pp))
		return;
	*pp = g->next;
	if (g->fence_local && g->fence_req)
		oe->n_local_fences--;
	if (g->fence_req)
		kvw_log(ofi_ctx(oe), 2, "ofi: fence of grant %08x NOT answered after %llu ms "
			"(abort_timeout_ms, or the endpoint closed): its key goes now; a later write "
			"of it fails at the sender", token,
			(unsigned long long)((kvw_now_ns() - g->fence_t0) / 1000000));
	if (tell && kvw_core_ep_ready(oe->ep) && ofi_rec_send(oe->ep, OFI_R_DROP, &token, sizeof(token)) == KVW_OK)
		kvw_stream_flush(kvw_sockep(oe->ep)->rail[0]); /* the DROP leaves before the key dies */
	for (uint32_t i = 0; i < g->n_mr; i++)
		fi_close(&g->mr[i]->fid); /* from here the provider refuses writes with these keys */
	free(g->mr);
	free(g);
	ofi_pend_purge(oe, token);
}

void ofi_grants_free(struct ofi_ep *oe)
{
	while (oe->grants)
		ofi_grant_close(oe, oe->grants->token, false);
}

static int ofi_u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int ofi_run_cmp(const void *a, const void *b)
{
	const struct ofi_run *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* The grant's blocks as address runs, sorted: per layer, sorted blocks
 * merged where they touch (stride == block bytes). */
static kvw_status ofi_grant_runs(const struct kvw_wire_grant *g, struct ofi_run **out, uint32_t *n_out)
{
	uint32_t *b, n = 0;
	struct ofi_run *v;
	bool touch = g->block_stride == g->block_bytes;

	if ((uint64_t)g->n_blocks * g->n_layers > OFI_MAX_RUNS)
		return KVW_ERR_NOMEM;
	b = malloc((size_t)g->n_blocks * sizeof(*b));
	v = calloc((size_t)g->n_blocks * g->n_layers, sizeof(*v));
	if (!b || !v) {
		free(b);
		free(v);
		return KVW_ERR_NOMEM;
	}
	for (uint32_t i = 0; i < g->n_blocks; i++)
		b[i] = kvw_wire_grant_block(g, i);
	qsort(b, g->n_blocks, sizeof(*b), ofi_u32_cmp);
	for (uint32_t l = 0; l < g->n_layers; l++) {
		uint64_t base = g->mem_addr + kvw_wire_grant_layer_off(g, l);
		for (uint32_t i = 0; i < g->n_blocks; i++) {
			uint64_t a = base + b[i] * g->block_stride;
			if (i && b[i] == b[i - 1])
				continue;
			if (i && touch && b[i] == b[i - 1] + 1 && v[n - 1].addr + v[n - 1].len == a)
				v[n - 1].len += g->block_bytes;
			else
				v[n++] = (struct ofi_run){.addr = a, .len = g->block_bytes};
		}
	}
	free(b);
	qsort(v, n, sizeof(*v), ofi_run_cmp);
	*out = v;
	*n_out = n;
	return KVW_OK;
}

/* Our fabric address, once, ahead of the first GRANT. */
static kvw_status ofi_addr_send(kvw_ep *ep, struct ofi_ep *oe)
{
	uint8_t addr[OFI_ADDR_MAX];
	size_t alen = sizeof(addr);
	int rc;

	if (oe->addr_sent)
		return KVW_OK;
	if ((rc = fi_getname(&oe->fep->fid, addr, &alen)))
		return ofi_err(kvw_core_ep_ctx(ep), KVW_ERR_IO, "fi_getname", rc);
	if (alen > OFI_ADDR_MAX || ofi_rec_send(ep, OFI_R_ADDR, addr, alen) != KVW_OK)
		return KVW_ERR_NOMEM;
	memcpy(oe->name, addr, alen);
	oe->name_len = alen;
	oe->addr_sent = true;
	return KVW_OK;
}

/* The key to ask for a grant's MR: random bits (a counter, as the arena
 * MRs get, would let any peer of this domain guess the live keys of another
 * endpoint's grants: keys are per domain, not per endpoint), 32 keys per
 * getrandom call; 0 where the provider picks (FI_MR_PROV_KEY). */
static bool ofi_key_pick(struct ofi_drv *od, uint64_t *key)
{
	if (od->prov_key) {
		*key = 0;
		return true;
	}
	if (!od->n_rand) {
		if (getrandom(od->rand, sizeof(od->rand), 0) != (ssize_t)sizeof(od->rand))
			return false;
		od->n_rand = KVW_ARRAY_SIZE(od->rand);
	}
	*key = od->rand[--od->n_rand] & od->key_mask;
	return true;
}

/* An MR with remote-write access only over each run; a requested key the
 * domain holds already (chance) is drawn again. */
static kvw_status ofi_runs_reg(kvw_ep *ep, struct ofi_ep *oe, struct ofi_grant *gr, struct ofi_run *run,
			       uint32_t n)
{
	if (!(gr->mr = calloc(n, sizeof(*gr->mr))))
		return KVW_ERR_NOMEM;
	for (uint32_t j = 0; j < n; j++, gr->n_mr++) {
		uint64_t key;
		int rc = -FI_ENOKEY;
		for (int t = 0; t < 4 && (rc == -FI_ENOKEY || rc == -FI_EALREADY); t++) {
			if (!ofi_key_pick(oe->od, &key))
				return kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_IO, "ofi: no random bytes for "
						   "a grant's key (getrandom failed): check the system's entropy source");
			rc = fi_mr_reg(oe->od->dom, (void *)(uintptr_t)run[j].addr, run[j].len, FI_REMOTE_WRITE,
				       0, key, 0, &gr->mr[j], NULL);
		}
		if (rc)
			return kvw_set_err(kvw_core_ep_ctx(ep), rc == -FI_ENOMEM ? KVW_ERR_MEMLOCK : KVW_ERR_IO,
					   "ofi: registering run %u of %u of a grant: %s (raise `ulimit -l`)",
					   j, n, fi_strerror(-rc));
		run[j].key = fi_mr_key(gr->mr[j]);
	}
	return KVW_OK;
}

/* The runs' keys to the peer, in as many records as they need. */
static kvw_status ofi_keys_send(kvw_ep *ep, uint32_t token, const struct ofi_run *run, uint32_t n)
{
	static __thread uint8_t buf[KVW_WIRE_MAX_DRV];
	struct ofi_key_rec k = {.token = token, .n_runs = n};
	kvw_status st;

	do {
		k.n_here = n - k.first < OFI_RUNS_PER_REC ? n - k.first : (uint32_t)OFI_RUNS_PER_REC;
		memcpy(buf, &k, sizeof(k));
		memcpy(buf + sizeof(k), run + k.first, (size_t)k.n_here * sizeof(*run));
		if ((st = ofi_rec_send(ep, OFI_R_KEY, buf, sizeof(k) + (size_t)k.n_here * sizeof(*run))) != KVW_OK)
			return st;
		k.first += k.n_here;
	} while (k.first < n);
	return KVW_OK;
}

/* ops->grant_keys. A GRANT leaves: an MR per run of its blocks, so the
 * provider refuses any byte outside them (holes between blocks included);
 * their keys (and, the first time, our fabric address) go ahead of it on
 * the stream. */
kvw_status ofi_grant_keys(kvw_ep *ep, kvw_req *req, const void *body, size_t len, uint32_t *mem_key)
{
	struct kvw_wire_grant g;
	struct ofi_ep *oe = ofi_ep_get(ep);
	kvw_ctx *ctx = kvw_core_ep_ctx(ep);
	struct ofi_grant *gr;
	struct ofi_run *run = NULL;
	uint32_t n = 0;
	kvw_status st;

	(void)req;
	if (!oe)
		return kvw_ctx_last_error(ctx)[0] ? KVW_ERR_IO
			: kvw_set_err(ctx, KVW_ERR_NOMEM, "ofi: out of memory for an endpoint's fabric state");
	if (len < sizeof(g))
		return kvw_set_err(ctx, KVW_ERR_INVALID, "ofi: GRANT body too short (a core bug: report it)");
	memcpy(&g, body, sizeof(g));
	if (!g.n_blocks || !g.n_layers)
		return KVW_OK;
	if ((st = ofi_addr_send(ep, oe)) != KVW_OK)
		return st;
	ofi_grant_close(oe, g.token, false);
	if ((st = ofi_grant_runs(body, &run, &n)) != KVW_OK)
		return kvw_set_err(ctx, st, "ofi: out of memory for the runs of a grant");
	if (!(gr = calloc(1, sizeof(*gr)))) {
		free(run);
		return kvw_set_err(ctx, KVW_ERR_NOMEM, "ofi: out of memory for a grant's keys");
	}
	gr->token = g.token;
	gr->next = oe->grants;
	oe->grants = gr;
	st = ofi_runs_reg(ep, oe, gr, run, n);
	if (st == KVW_OK) {
		*mem_key = (uint32_t)run[0].key; /* informational: the KEY records hold them all */
		st = ofi_keys_send(ep, g.token, run, n);
	}
	if (st != KVW_OK)
		ofi_grant_close(oe, g.token, false);
	free(run);
	return st;
}

static struct ofi_op *ofi_op_take(struct ofi_ep *oe);
static void ofi_op_put(struct ofi_ep *oe, struct ofi_op *op);

static bool ofi_token_inflight(const struct ofi_ep *oe, uint32_t token)
{
	for (int i = 0; oe->n_inflight && i < OFI_OPS; i++)
		if (oe->op[i].used && oe->op[i].token == token)
			return true;
	return false;
}

/* Sender: every fenced grant whose writes all completed gets its marker. */
void ofi_fences_serve(struct ofi_ep *oe)
{
	for (uint32_t i = 0; i < oe->n_fences;) {
		uint32_t token = oe->fences[i];
		struct ofi_ent *k = ofi_tab_find(&oe->keys, token, false);
		struct ofi_op *op;
		ssize_t rc = 0;

		if (k && ofi_token_inflight(oe, token)) {
			i++;
			continue;
		}
		if (k && oe->peer_known && k->n_got == k->n_runs && (op = ofi_op_take(oe))) {
			*op = (struct ofi_op){.token = token, .used = true};
			rc = fi_writedata(oe->fep, NULL, 0, NULL, (uint64_t)token << 32 | OFI_N_MARK, oe->peer,
					  oe->od->virt_addr ? k->run[0].addr : 0, k->run[0].key, &op->fctx);
			if (rc)
				ofi_op_put(oe, op);
			if (rc == -FI_EAGAIN) {
				i++;
				continue;
			}
		} else if (k) {
			i++;
			continue; /* no write context free now */
		}
		if (rc)
			kvw_log(ofi_ctx(oe), 2, "ofi: fence marker of grant %08x: %s", token, fi_strerror((int)-rc));
		else
			kvw_log(ofi_ctx(oe), 4, "ofi: fence marker of grant %08x %s", token, k ? "posted" : "not needed (no key)");
		oe->fences[i] = oe->fences[--oe->n_fences];
	}
}

static struct ofi_grant *ofi_grant_find(struct ofi_ep *oe, uint32_t token)
{
	struct ofi_grant *g;

	for (g = oe->grants; g && g->token != token; g = g->next)
		;
	return g;
}

/* The sender endpoint of this driver that writes to oe (both ends in one
 * context), or NULL. */
static struct ofi_ep *ofi_local_peer(struct ofi_ep *oe)
{
	for (struct ofi_ep *o = oe->od->eps; o; o = o->next)
		if (o != oe && o->peer_known && o->peer_name_len == oe->name_len &&
		    !memcmp(o->peer_name, oe->name, oe->name_len) && kvw_core_ep_ready(o->ep))
			return o;
	return NULL;
}

/* A sender in this context: its key of the grant is fenced (no new write)
 * and progress ends the fence once none of its writes is in flight
 * (ofi_fences_local); no marker: shm left the sender's queue stuck when the
 * receiver closed the key right after a marker in the same process. */
static void ofi_fence_local(struct ofi_ep *peer, struct ofi_ep *oe, struct ofi_grant *g, kvw_req *req)
{
	struct ofi_ent *k = ofi_tab_find(&peer->keys, g->token, false);

	if (k)
		k->fenced = true;
	g->fence_req = req;
	g->fence_t0 = kvw_now_ns();
	g->fence_local = true;
	oe->n_local_fences++;
}

/* ops->revoke, never a wait: FENCE to the sender, which stops the grant and,
 * once every write it posted completed (delivery complete: landed), writes a
 * zero-byte marker; ofi_fence_marker ends the fence when it arrives. The
 * core cuts a fence not answered in abort_timeout_ms (grant_done). Without
 * a key to the peer yet, or a stream to send on, the key just dies. */
kvw_status ofi_revoke(kvw_ep *ep, kvw_req *req)
{
	struct ofi_ep *oe = ofi_ep_of(ep);
	uint32_t token = kvw_core_req_token(req);
	struct ofi_grant *g = oe ? ofi_grant_find(oe, token) : NULL;
	struct ofi_ep *peer;

	if (!g)
		return KVW_OK;
	if (g->fence_req)
		return KVW_INPROGRESS;
	if (kvw_core_ep_ready(ep) && oe->addr_sent && (peer = ofi_local_peer(oe))) {
		ofi_fence_local(peer, oe, g, req);
		return KVW_INPROGRESS;
	}
	if (kvw_core_ep_ready(ep) && oe->addr_sent &&
	    ofi_rec_send(ep, OFI_R_FENCE, &token, sizeof(token)) == KVW_OK) {
		kvw_sock_flush_ep(ep);
		g->fence_req = req;
		g->fence_t0 = kvw_now_ns();
		return KVW_INPROGRESS;
	}
	ofi_grant_close(oe, token, true);
	return KVW_OK;
}

/* The marker of a fenced grant landed: every write of it the sender posted
 * has completed. The key dies, then the core ends the request. */
static void ofi_fence_marker(struct ofi_ep *oe, uint32_t token)
{
	struct ofi_grant *g = ofi_grant_find(oe, token);
	kvw_req *req;

	if (!g || !g->fence_req)
		return; /* the grant ended meanwhile (abort_timeout_ms, endpoint closed) */
	req = g->fence_req;
	kvw_log(ofi_ctx(oe), 4, "ofi: fence of grant %08x done after %llu us", token,
		(unsigned long long)((kvw_now_ns() - g->fence_t0) / 1000));
	if (g->fence_local)
		oe->n_local_fences--;
	g->fence_local = false;
	g->fence_req = NULL;
	ofi_grant_close(oe, token, true);
	kvw_core_fence_done(oe->ep, req);
}

static bool ofi_token_inflight(const struct ofi_ep *oe, uint32_t token);

/* Receiver: local fences whose sender has no write of the grant in flight
 * (or is gone) end now. */
void ofi_fences_local(struct ofi_ep *oe)
{
	for (struct ofi_grant *g = oe->grants, *next; g; g = next) {
		struct ofi_ep *peer;
		next = g->next;
		if (!g->fence_req || !g->fence_local)
			continue;
		peer = ofi_local_peer(oe);
		if (!peer || !ofi_token_inflight(peer, g->token))
			ofi_fence_marker(oe, g->token);
	}
}

void ofi_grant_done(kvw_ep *ep, kvw_req *req)
{
	struct ofi_ep *oe = ofi_ep_of(ep);

	if (oe)
		ofi_grant_close(oe, kvw_core_req_token(req), true);
}

/* ------------------------------------------------------------ writes (sender) */
static struct ofi_op *ofi_op_take(struct ofi_ep *oe)
{
	struct ofi_op *op;

	if (oe->free_op < 0)
		return NULL;
	op = &oe->op[oe->free_op];
	oe->free_op = op->next_free;
	op->used = true;
	oe->n_inflight++;
	return op;
}

static void ofi_op_put(struct ofi_ep *oe, struct ofi_op *op)
{
	op->used = false;
	op->cancelled = false;
	op->req = NULL;
	op->next_free = oe->free_op;
	oe->free_op = (int)(op - oe->op);
	oe->n_inflight--;
}

static bool ofi_req_inflight(const struct ofi_ep *oe, const kvw_req *req)
{
	for (int i = 0; oe->n_inflight && i < OFI_OPS; i++)
		if (oe->op[i].used && oe->op[i].req == req)
			return true;
	return false;
}

/* A write completed (or failed). The last write of a cancelled request ends
 * its wait (ofi_cancel), if the request still lives: compared, never read. */
static void ofi_op_done(struct ofi_ep *oe, struct ofi_op *op)
{
	kvw_req *req = op->cancelled ? op->req : NULL;

	ofi_op_put(oe, op);
	if (req && !ofi_req_inflight(oe, req) && kvw_core_req_live(oe->ep, req))
		kvw_core_cancel_done(oe->ep, kvw_core_req_seq_id(req));
}

/* The run holding [addr, addr + len); one that holds none gets the first
 * run: the provider refuses the write (outside its MR). */
static const struct ofi_run *ofi_run_of(const struct ofi_ent *k, uint64_t addr, uint64_t len)
{
	uint32_t lo = 0, hi = k->n_runs;

	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (k->run[mid].addr <= addr)
			lo = mid;
		else
			hi = mid;
	}
	if (k->run[lo].addr <= addr && addr - k->run[lo].addr <= k->run[lo].len &&
	    len <= k->run[lo].len - (addr - k->run[lo].addr))
		return &k->run[lo];
	return &k->run[0];
}

/* 1 posted, 0 the provider is full now, -1 the endpoint failed. A
 * gathered fragment goes as one write of an iovec per piece (at most
 * caps.max_gather, the provider's iov_limit). */
static int ofi_write(struct ofi_ep *oe, const kvw_frag *f, struct ofi_ent *k, uint32_t n,
		     struct ofi_op *op)
{
	const struct ofi_mem *om = kvw_core_mem_priv(f->src_mem, oe->od->d);
	struct iovec iov[OFI_MAX_IOV];
	void *desc[OFI_MAX_IOV];
	size_t n_iov = f->piece ? f->bytes / f->piece : 1;
	const struct ofi_run *run = ofi_run_of(k, f->dst_addr, f->bytes);
	struct fi_rma_iov rma = {.addr = oe->od->virt_addr ? f->dst_addr : f->dst_addr - run->addr,
				 .len = f->bytes, .key = run->key};
	struct fi_msg_rma msg = {.msg_iov = iov, .desc = desc, .iov_count = n_iov, .addr = oe->peer,
				 .rma_iov = &rma, .rma_iov_count = 1, .context = &op->fctx,
				 .data = (uint64_t)f->token << 32 | n};
	uint64_t flags = FI_REMOTE_CQ_DATA | FI_COMPLETION | (oe->od->delivery ? FI_DELIVERY_COMPLETE : 0);
	ssize_t rc;

	if (n_iov > OFI_MAX_IOV || (f->piece && n_iov > oe->od->d->caps.max_gather)) {
		kvw_ep_fail(oe->ep, KVW_ERR_INVALID, "ofi: a fragment gathers more pieces than the "
			    "provider's iov_limit: report this kvwire bug");
		return -1;
	}
	for (size_t i = 0; i < n_iov; i++) {
		iov[i] = (struct iovec){.iov_base = (void *)(uintptr_t)(f->src + i * f->src_stride),
					.iov_len = f->piece ? f->piece : f->bytes};
		desc[i] = om->desc;
	}
	rc = fi_writemsg(oe->fep, &msg, flags);
	if (rc == -FI_EAGAIN)
		return 0;
	if (rc) {
		kvw_ep_fail(oe->ep, KVW_ERR_IO, "ofi: fi_writemsg failed: the fabric endpoint is in error");
		return -1;
	}
	return 1;
}

/* The fragment's arena has its MR in our domain. */
static bool ofi_src_ok(const struct ofi_ep *oe, const kvw_frag *f)
{
	const struct ofi_mem *om = f->src_mem ? kvw_core_mem_priv(f->src_mem, oe->od->d) : NULL;

	return om && om->mr;
}

/* ------------------------------------------------------------ fault layer */
/* Config fault on ofi: what EFA's SRD does to writes, reliable but
 * unordered. Each write gets its own fate (kvw_fault_reliable: a loss is
 * the resend `rto` later, a delay or reorder its hold) and is posted when
 * due, while later writes go ahead of it and its name (DESC) travels on
 * the control stream at once: names come before completions, completions
 * in any order. A held write counts as in flight (fences, cancel, mem
 * quiesce wait for it); a cancelled one is never posted. */
kvw_status ofi_fault_open(struct ofi_ep *oe)
{
	const char *spec = kvw_core_cfg(ofi_ctx(oe))->fault;
	char err[200];

	if (!spec[0])
		return KVW_OK;
	if (kvw_fault_create_salted(spec, kvw_core_ep_id(oe->ep) * 64ull + 63, &oe->fault, err,
				    sizeof(err)) != KVW_OK)
		return kvw_set_err(ofi_ctx(oe), KVW_ERR_INVALID, "config fault: %s", err);
	return KVW_OK;
}

static bool ofi_fault_hold(struct ofi_ep *oe, struct ofi_op *op, const kvw_frag *f)
{
	uint64_t hold = kvw_fault_reliable(oe->fault, f->bytes, kvw_core_ep_counters(oe->ep));

	if (!hold)
		return false;
	op->held = true;
	op->hf = *f;
	if (kvw_fault_hold(oe->fault, op, kvw_now_ns(), hold))
		return true;
	op->held = false; /* the hold queue is full: it goes now */
	return false;
}

/* Posts the held writes that are due (all: every one, now). One the
 * provider cannot take now is held again for the next pass. */
void ofi_fault_release(struct ofi_ep *oe, bool all)
{
	uint64_t now = kvw_now_ns();
	struct ofi_op *op;

	if (!oe->fault)
		return;
	while ((op = all ? kvw_fault_drain(oe->fault) : kvw_fault_due(oe->fault, now))) {
		struct ofi_ent *k = ofi_tab_find(&oe->keys, op->token, false);
		int rc = 0;
		if (op->cancelled || !k || k->fenced) {
			ofi_op_done(oe, op); /* never posted: nothing reads its pages */
			continue;
		}
		if ((rc = ofi_write(oe, &op->hf, k, op->n, op)) == 0) {
			kvw_fault_hold(oe->fault, op, now, 1); /* provider full */
			if (!all)
				return;
			continue;
		}
		op->held = false;
		if (rc < 0)
			return;
	}
}

/* Endpoint close: held writes are forgotten (nothing was posted). */
void ofi_fault_close(struct ofi_ep *oe)
{
	struct ofi_op *op;

	if (!oe->fault)
		return;
	while ((op = kvw_fault_drain(oe->fault)))
		ofi_op_put(oe, op);
	kvw_fault_destroy(oe->fault);
	oe->fault = NULL;
}

size_t ofi_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n)
{
	struct ofi_ep *oe = ofi_ep_of(ep);
	struct ofi_desc_rec rec[KVW_WIRE_MAX_DRV / sizeof(struct ofi_desc_rec)];
	size_t took = 0, nrec = 0;

	if (!oe || !oe->peer_known)
		return 0; /* the receiver's address comes ahead of its first GRANT */
	for (; took < n && nrec < KVW_ARRAY_SIZE(rec); took++) {
		struct ofi_ent *k = ofi_tab_find(&oe->keys, f[took].token, false);
		struct ofi_op *op;
		int rc;

		if (k && k->fenced)
			continue; /* the receiver fenced this grant: dropped, it is being aborted */
		if (!k || k->n_got < k->n_runs || !ofi_src_ok(oe, &f[took]) || !(op = ofi_op_take(oe)))
			break;
		*op = (struct ofi_op){.req = f[took].req, .token = f[took].token, .bytes = f[took].bytes,
				      .om = kvw_core_mem_priv(f[took].src_mem, oe->od->d), .used = true,
				      .n = k->next_n};
		if (oe->fault && ofi_fault_hold(oe, op, &f[took]))
			rc = 1; /* posted later, on its own */
		else if ((rc = ofi_write(oe, &f[took], k, op->n, op)) <= 0) {
			ofi_op_put(oe, op); /* full: progress reaps completions, the pump retries */
			break;
		}
		rec[nrec++] = (struct ofi_desc_rec){.n = k->next_n++, .d = {.token = f[took].token,
			.layer = f[took].layer, .blk_idx = f[took].blk_idx, .bytes = f[took].bytes,
			.blk_off = f[took].blk_off}};
	}
	if (nrec && ofi_rec_send(ep, OFI_R_DESC, rec, nrec * sizeof(rec[0])) != KVW_OK)
		kvw_ep_fail(ep, KVW_ERR_NOMEM, "ofi: the control stream took no fragment names "
			    "(max_tx_queue): failing the endpoint");
	kvw_sock_flush_ep(ep);
	return took;
}

/* ------------------------------------------------------------ completions */
/* A write failed at the target: its key was dropped (an abort: no error) or
 * never covered those bytes (a forged or stale key): REJECTED, counted in
 * remote_refused. tcp;ofi_rxm reports such a refusal as FI_ECANCELED (its
 * target answers the bad key with an error response); shm and udp;ofi_rxd
 * of libfabric 1.17 drop it at the target and never complete the write, so
 * there the receiver's deadline ends both sides (docs/drivers/ofi.md,
 * "Scoped grants"). */
static void ofi_cq_error(struct ofi_ep *oe)
{
	struct fi_cq_err_entry err = {0};
	struct ofi_op *op;

	if (fi_cq_readerr(oe->cq, &err, 0) != 1)
		return;
	op = err.op_context;
	if (!op || op < &oe->op[0] || op >= &oe->op[OFI_OPS] || !op->used) {
		kvw_log(ofi_ctx(oe), 2, "ofi: completion error without a write: %s",
			fi_strerror(err.err));
		return;
	}
	if (!op->cancelled && ofi_tab_find(&oe->keys, op->token, false) && kvw_core_req_live(oe->ep, op->req)) {
		char why[256];
		snprintf(why, sizeof(why), "ofi: the receiver's provider (%s) refused a write of grant %08x "
			 "(it said: %s): its key does not cover those bytes", oe->od->prov, op->token,
			 fi_strerror(err.err));
		kvw_core_ep_counters(oe->ep)->remote_refused++; /* kvwire stat shows it */
		kvw_core_req_fail(op->req, KVW_ERR_REJECTED, why);
	}
	ofi_op_done(oe, op);
}

static void ofi_cq_entry(struct ofi_ep *oe, const struct fi_cq_data_entry *c, bool stash)
{
	struct ofi_op *op = c->op_context;

	if (c->flags & FI_REMOTE_CQ_DATA) {
		if (stash) {
			oe->stash[oe->n_stash++] = *c;
			return;
		}
		if ((uint32_t)c->data == OFI_N_MARK) {
			ofi_fence_marker(oe, (uint32_t)(c->data >> 32));
			return;
		}
		kvw_core_ep_heard(oe->ep); /* the peer is alive */
		ofi_join(oe, c->data, OFI_HAVE_CQ, NULL);
		return;
	}
	if (op >= &oe->op[0] && op < &oe->op[OFI_OPS] && op->used)
		ofi_op_done(oe, op);
}

/* Bounded work: a few batches of completions, never a wait. stash: remote
 * completions (and fence markers) are kept for the next progress pass
 * (outside kvw_progress: kvw_mem_dereg), else first the kept ones are
 * handed on. */
void ofi_cq_poll(struct ofi_ep *oe, bool stash)
{
	struct fi_cq_data_entry c[OFI_CQ_BATCH];

	for (uint32_t i = 0; !stash && i < oe->n_stash && kvw_core_ep_ready(oe->ep); i++)
		ofi_cq_entry(oe, &oe->stash[i], false);
	if (!stash)
		oe->n_stash = 0;
	for (int pass = 0; pass < 8 && kvw_core_ep_ready(oe->ep); pass++) {
		size_t room = stash ? OFI_STASH - oe->n_stash : OFI_CQ_BATCH;
		ssize_t n;
		if (!room)
			return;
		n = fi_cq_read(oe->cq, c, room < OFI_CQ_BATCH ? room : OFI_CQ_BATCH);
		if (n == -FI_EAVAIL) {
			ofi_cq_error(oe);
			continue;
		}
		if (n <= 0)
			return;
		for (ssize_t i = 0; i < n && kvw_core_ep_ready(oe->ep); i++)
			ofi_cq_entry(oe, &c[i], stash);
		if (n < OFI_CQ_BATCH)
			return;
	}
}

/* ops->cancel, never a wait. post_frags queues nothing, so nothing is left
 * to forget: from here no new write reads req's pages. Writes it posted
 * before cannot be recalled; the provider may read their source bytes until
 * they complete, so cancel answers KVW_INPROGRESS and the last of them to
 * complete reports kvw_core_cancel_done (ofi_op_done): the request's final
 * event (and an application's kvw_req_abort) comes only then. kvw_mem_dereg of the
 * arena waits for them too (ofi_mem_quiesce). */
kvw_status ofi_cancel(kvw_ep *ep, kvw_req *req)
{
	struct ofi_ep *oe = ofi_ep_of(ep);
	bool reading = false;

	for (int i = 0; oe && oe->n_inflight && i < OFI_OPS; i++)
		if (oe->op[i].used && oe->op[i].req == req) {
			oe->op[i].cancelled = true;
			reading = true;
		}
	return reading ? KVW_INPROGRESS : KVW_OK;
}

static bool ofi_mem_inflight(const struct ofi_ep *oe, const struct ofi_mem *om)
{
	for (int i = 0; oe->n_inflight && i < OFI_OPS; i++)
		if (oe->op[i].used && oe->op[i].om == om)
			return true;
	return false;
}

/* kvw_mem_dereg (an application call, never inside kvw_progress): the
 * provider may still read the arena for writes posted before their request
 * was cancelled; wait for them (bounded by abort_timeout_ms, remote
 * completions kept for the next pass). An endpoint whose writes do not
 * complete by then is failed. */
void ofi_mem_quiesce(struct ofi_drv *od, const struct ofi_mem *om)
{
	for (struct ofi_ep *oe = od->eps; oe; oe = oe->next) {
		uint64_t end = kvw_now_ns() + (uint64_t)kvw_core_cfg(ofi_ctx(oe))->abort_timeout_ms * 1000000ull;
		while (kvw_core_ep_ready(oe->ep) && ofi_mem_inflight(oe, om) && kvw_now_ns() < end) {
			ofi_fault_release(oe, false);
			ofi_cq_poll(oe, true);
		}
		if (kvw_core_ep_ready(oe->ep) && ofi_mem_inflight(oe, om))
			kvw_ep_fail(oe->ep, KVW_ERR_IO, "ofi: writes from an arena being deregistered did "
				    "not complete within abort_timeout_ms: the endpoint is failed; "
				    "check the fabric and the peer");
	}
}
