/* SPDX-License-Identifier: MIT */
/* loop driver: both ends in one process (like UCX's `self` transport), so
 * the core and the conformance suite run without sockets.
 *
 * A listener puts its NAME in a process-wide registry (a mutex: control
 * path only). connect (the caller's context) makes the shared pair and
 * queues it on the listener (the same mutex); the listener's context takes
 * it in its own progress (kvw_core_ep_accepted_from). Contexts may live on
 * different threads.
 *
 * Each direction is a bounded single-producer/single-consumer ring (C11
 * atomics, no lock). An entry carries either a DATA fragment (its
 * kvw_wire_data and the sender's source pointer: same address space, no
 * copy at post; the receiver copies once into the block kvw_core_dst gave)
 * or a control frame (a heap copy). Control and data share the ring, so
 * order is kept: a frame sent after data arrives after it (the core's abort
 * fence relies on that). A control frame that finds the ring full waits in
 * an ordered producer-side overflow list, drained first by progress;
 * post_frags takes nothing while that list is not empty.
 *
 * Wake-ups: caps.poll_us (kvw_ctx_wait sleeps at most LOOP_POLL_US), not an
 * eventfd. The producer would have to write the consumer's eventfd, which
 * belongs to the other context and may be closed under it when that context
 * goes away on another thread; a poll interval needs no shared fd whose
 * lifetime spans two contexts. prepare_wait answers true while this
 * context has ring entries to consume, so a context that talks to itself
 * never sleeps with work queued.
 *
 * Cancel: the consumer may still be copying from the sender's pages, so
 * cancel records the ring's producer position and answers KVW_INPROGRESS;
 * progress calls kvw_core_cancel_done once the consumer's position passed
 * it (or the peer closed: it reads nothing any more). */
#include "driver.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOOP_RING 1024u                 /* entries per direction (power of two) */
#define LOOP_POLL_US 100u               /* kvw_ctx_wait's longest sleep */
#define LOOP_RX_BUDGET (64ull << 20)    /* bytes copied per endpoint per pass */
#define LOOP_RX_FRAMES 512u             /* entries consumed per endpoint per pass */
#define HDR sizeof(struct kvw_wire_hdr)

/* A control frame (heap copy): in a ring entry, the overflow list, or the
 * list a closed producer leaves behind. */
struct loop_msg {
	struct loop_msg *next;
	uint32_t len, rsvd;
	uint8_t frame[];        /* 8-aligned (malloc + 16): the core reads the body after the
				 * 24-byte header as its wire structs (UBSan: misaligned) */
};
_Static_assert(offsetof(struct loop_msg, frame) % 8 == 0 && sizeof(struct kvw_wire_hdr) % 8 == 0,
	       "loop: a control frame's body must be 8-aligned");

enum { LOOP_CTRL = 1, LOOP_DATA = 2 };

struct loop_ent {
	uint32_t kind;
	struct loop_msg *msg;           /* CTRL */
	struct kvw_wire_data d;         /* DATA */
	const uint8_t *src;             /* DATA: the sender's pages */
};

/* One direction. head is written by the consumer only, tail by the
 * producer only; both count entries since the start (never wrap in
 * practice: 2^64). */
struct loop_ring {
	_Alignas(64) _Atomic uint64_t tail;
	_Alignas(64) _Atomic uint64_t head;
	_Alignas(64) struct loop_ent ent[LOOP_RING];
};

/* What two endpoints share. Side 0 is the client, side 1 the server;
 * ring[s] carries what side s sends. */
struct loop_pair {
	_Atomic int refs;               /* the two sides; the last one frees it */
	_Atomic bool closed[2];         /* side s sends and reads nothing more */
	_Atomic bool nodata[2];         /* side s's pages must not be read any more */
	_Atomic bool copying[2];        /* side s is copying from the peer's pages now */
	struct loop_msg *orphan[2];     /* side s's unsent overflow, handed over on close */
	char name[128];
	struct loop_ring ring[2];
};

/* A connection request waiting for the listener's progress. */
struct loop_conn {
	struct loop_conn *next;
	struct loop_pair *pair;
};

struct loop_lsn {
	struct loop_lsn *next;          /* registry (under loop_mu) */
	struct loop_lsn *dnext;         /* the listener's driver's list */
	kvw_listener *l;
	char name[128];
	_Atomic uint32_t pending;       /* requests queued: read without the lock */
	struct loop_conn *q_head, *q_tail; /* under loop_mu */
};

struct loop_cancel {
	uint64_t seq_id, pos;
};

struct loop_ep {
	kvw_ep *ep;
	struct loop_ep *next, *prev;    /* the driver's endpoints */
	struct loop_pair *pair;
	int side;
	struct loop_msg *ovf_head, *ovf_tail; /* control frames the full ring did not take */
	uint64_t ovf_bytes;
	struct loop_cancel *cancels;    /* cancels waiting for the consumer */
	uint32_t n_cancels, cap_cancels;
	bool ovf_logged;                /* said once that the ring was full */
};

struct loop_drv {
	struct loop_ep *eps;
	struct loop_ep *iter_next;      /* the walk in progress: unlinking it moves it on */
	struct loop_lsn *lsns;
};

static pthread_mutex_t loop_mu = PTHREAD_MUTEX_INITIALIZER;
static struct loop_lsn *loop_registry;

/* ------------------------------------------------------------- pairs */
static void loop_msgs_free(struct loop_msg *m)
{
	while (m) {
		struct loop_msg *n = m->next;
		free(m);
		m = n;
	}
}

static void loop_pair_unref(struct loop_pair *p)
{
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (int s = 0; s < 2; s++) {
		struct loop_ring *r = &p->ring[s];
		uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
		for (uint64_t i = atomic_load_explicit(&r->head, memory_order_acquire); i != t; i++)
			if (r->ent[i & (LOOP_RING - 1)].kind == LOOP_CTRL)
				free(r->ent[i & (LOOP_RING - 1)].msg);
		loop_msgs_free(p->orphan[s]);
	}
	free(p);
}

/* From now on nothing is read from side s's pages: the peer checks nodata
 * before each copy (seq_cst on both flags, so one of the two sees the
 * other), and a copy already under way is let finish (one fragment, at
 * most 16 MiB of memcpy: a bounded wait, never on the peer's progress). */
static void loop_stop_data(struct loop_pair *p, int s)
{
	atomic_store(&p->nodata[s], true);
	while (atomic_load(&p->copying[!s]))
		sched_yield();
}

/* Side s stops: nothing of the ring is read or written by it any more.
 * Its unsent control frames go to the peer after the ring (the CLOSE the
 * core sent first may wait there). */
static void loop_side_close(struct loop_pair *p, int s, struct loop_msg *unsent)
{
	loop_stop_data(p, s);
	p->orphan[s] = unsent;
	atomic_store_explicit(&p->closed[s], true, memory_order_release);
	loop_pair_unref(p);
}

static struct loop_pair *loop_pair_new(const char *name)
{
	struct loop_pair *p = aligned_alloc(64, (sizeof(*p) + 63) & ~(size_t)63);

	if (!p)
		return NULL;
	memset(p, 0, sizeof(*p));
	atomic_init(&p->refs, 2);
	atomic_init(&p->closed[0], false);
	atomic_init(&p->closed[1], false);
	for (int s = 0; s < 2; s++) {
		atomic_init(&p->nodata[s], false);
		atomic_init(&p->copying[s], false);
	}
	atomic_init(&p->ring[0].head, 0);
	atomic_init(&p->ring[0].tail, 0);
	atomic_init(&p->ring[1].head, 0);
	atomic_init(&p->ring[1].tail, 0);
	snprintf(p->name, sizeof(p->name), "%s", name);
	return p;
}

/* ------------------------------------------------------------ driver */
static kvw_status loop_open(kvw_drv *d)
{
	if (!(d->priv = calloc(1, sizeof(struct loop_drv))))
		return KVW_ERR_NOMEM;
	return KVW_OK;
}

static void loop_close(kvw_drv *d)
{
	free(d->priv);
	d->priv = NULL;
}

static kvw_status loop_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	(void)d;
	*ci = (struct kvw_caps_info){.caps = KVW_CAP_SAME_HOST | KVW_CAP_ZERO_COPY_TX, .max_rails = 1,
				     .max_frag = KVW_WIRE_MAX_DATA, .poll_us = LOOP_POLL_US};
	return KVW_OK;
}

static kvw_status loop_name(kvw_ctx *ctx, const struct kvw_uri *u)
{
	if (!u->host[0] || u->port || u->path[0])
		return kvw_set_err(ctx, KVW_ERR_INVALID, "a loop URI names an in-process listener and "
				   "nothing else: loop://NAME (no port, no path), e.g. loop://decode0");
	return KVW_OK;
}

static struct loop_lsn *loop_find(const char *name)
{
	for (struct loop_lsn *s = loop_registry; s; s = s->next)
		if (!strcmp(s->name, name))
			return s;
	return NULL;
}

static void loop_ep_link(struct loop_drv *ld, struct loop_ep *le)
{
	le->prev = NULL;
	le->next = ld->eps;
	if (ld->eps)
		ld->eps->prev = le;
	ld->eps = le;
}

static void loop_ep_unlink(struct loop_drv *ld, struct loop_ep *le)
{
	if (ld->iter_next == le)
		ld->iter_next = le->next;
	if (le->prev)
		le->prev->next = le->next;
	else
		ld->eps = le->next;
	if (le->next)
		le->next->prev = le->prev;
	le->next = le->prev = NULL;
}

static struct loop_ep *loop_ep_new(kvw_ep *ep, struct loop_pair *p, int side)
{
	struct loop_ep *le = calloc(1, sizeof(*le));

	if (!le)
		return NULL;
	le->ep = ep;
	le->pair = p;
	le->side = side;
	loop_ep_link(kvw_core_ep_drv(ep)->priv, le);
	kvw_core_ep_set_priv(ep, le);
	return le;
}

/* --------------------------------------------------------- listeners */
static kvw_status loop_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u)
{
	struct loop_drv *ld = d->priv;
	struct loop_lsn *s;
	kvw_status st = loop_name(d->ctx, u);

	if (st != KVW_OK)
		return st;
	if (!(s = calloc(1, sizeof(*s))))
		return KVW_ERR_NOMEM;
	s->l = l;
	snprintf(s->name, sizeof(s->name), "%s", u->host);
	atomic_init(&s->pending, 0);
	pthread_mutex_lock(&loop_mu);
	if (loop_find(s->name)) {
		pthread_mutex_unlock(&loop_mu);
		free(s);
		return kvw_set_err(d->ctx, KVW_ERR_BUSY, "loop://%s is in use: another listener of this "
				   "process has that name; pick another or close that listener first",
				   u->host);
	}
	s->next = loop_registry;
	loop_registry = s;
	pthread_mutex_unlock(&loop_mu);
	s->dnext = ld->lsns;
	ld->lsns = s;
	kvw_core_listener_set_priv(l, s);
	return KVW_OK;
}

/* Requests nobody will accept: the client side sees its peer closed. */
static void loop_conns_refuse(struct loop_conn *c)
{
	while (c) {
		struct loop_conn *n = c->next;
		loop_side_close(c->pair, 1, NULL);
		free(c);
		c = n;
	}
}

static void loop_listener_close(kvw_listener *l)
{
	struct loop_lsn *s = kvw_core_listener_priv(l);
	struct loop_drv *ld = kvw_core_listener_drv(l)->priv;
	struct loop_conn *q;

	if (!s)
		return;
	pthread_mutex_lock(&loop_mu);
	for (struct loop_lsn **pp = &loop_registry; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	q = s->q_head;
	pthread_mutex_unlock(&loop_mu);
	loop_conns_refuse(q);
	for (struct loop_lsn **pp = &ld->lsns; *pp; pp = &(*pp)->dnext)
		if (*pp == s) {
			*pp = s->dnext;
			break;
		}
	free(s);
	kvw_core_listener_set_priv(l, NULL);
}

static void loop_accept(struct loop_lsn *s)
{
	struct loop_conn *c;

	if (!atomic_load_explicit(&s->pending, memory_order_acquire))
		return;
	pthread_mutex_lock(&loop_mu);
	c = s->q_head;
	s->q_head = s->q_tail = NULL;
	atomic_store_explicit(&s->pending, 0, memory_order_relaxed);
	pthread_mutex_unlock(&loop_mu);
	while (c) {
		struct loop_conn *n = c->next;
		kvw_ep *ep = kvw_core_ep_accepted_from(s->l, "");
		if (!ep || !loop_ep_new(ep, c->pair, 1)) {
			if (ep)
				kvw_core_ep_discard(ep);
			loop_side_close(c->pair, 1, NULL);
		} else {
			kvw_core_ep_admit(ep);
		}
		free(c);
		c = n;
	}
}

/* ----------------------------------------------------------- connect */
static kvw_status loop_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u)
{
	struct loop_conn *c;
	struct loop_lsn *s;
	struct loop_pair *p;
	kvw_status st = loop_name(d->ctx, u);

	if (st != KVW_OK)
		return st;
	if (!(c = calloc(1, sizeof(*c))) || !(p = c->pair = loop_pair_new(u->host))) {
		free(c);
		return KVW_ERR_NOMEM;
	}
	pthread_mutex_lock(&loop_mu);
	if (!(s = loop_find(u->host))) {
		pthread_mutex_unlock(&loop_mu);
		free(p);
		free(c);
		return kvw_set_err(d->ctx, KVW_ERR_CONNREFUSED, "nobody listens at loop://%s in this "
				   "process: the loop driver connects only to a kvw_listen(\"loop://%s\") "
				   "of the same process", u->host, u->host);
	}
	if (!loop_ep_new(ep, p, 0)) {
		pthread_mutex_unlock(&loop_mu);
		free(p);
		free(c);
		return KVW_ERR_NOMEM;
	}
	if (s->q_tail)
		s->q_tail->next = c;
	else
		s->q_head = c;
	s->q_tail = c;
	atomic_fetch_add_explicit(&s->pending, 1, memory_order_release);
	pthread_mutex_unlock(&loop_mu);
	kvw_core_ep_up(ep); /* HELLO goes into the ring; the listener reads it once it accepted */
	return KVW_OK;
}

/* ------------------------------------------------------------ sending */
static struct loop_ring *loop_tx(const struct loop_ep *le) { return &le->pair->ring[le->side]; }
static struct loop_ring *loop_rx(const struct loop_ep *le) { return &le->pair->ring[!le->side]; }

static bool loop_peer_closed(const struct loop_ep *le)
{
	return atomic_load_explicit(&le->pair->closed[!le->side], memory_order_acquire);
}

/* Moves the overflow into the ring, oldest first, as far as it has room. */
static void loop_ovf_drain(struct loop_ep *le)
{
	struct loop_ring *r = loop_tx(le);
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
	uint64_t t0 = t;

	while (le->ovf_head && t - h < LOOP_RING) {
		struct loop_msg *m = le->ovf_head;
		le->ovf_head = m->next;
		le->ovf_bytes -= m->len;
		m->next = NULL;
		r->ent[t & (LOOP_RING - 1)] = (struct loop_ent){.kind = LOOP_CTRL, .msg = m};
		t++;
	}
	if (!le->ovf_head)
		le->ovf_tail = NULL;
	if (t != t0)
		atomic_store_explicit(&r->tail, t, memory_order_release);
}

static kvw_status loop_send_ctrl(kvw_ep *ep, const void *frame, size_t len)
{
	struct loop_ep *le = kvw_core_ep_priv(ep);
	struct loop_msg *m;
	uint64_t cap;
	char why[320];

	if (!le)
		return KVW_ERR_CLOSED;
	if (len < HDR || len > UINT32_MAX)
		return KVW_ERR_INVALID;
	if (loop_peer_closed(le))
		return KVW_OK; /* nobody reads it; progress fails the endpoint after the peer's last frames */
	cap = kvw_core_cfg(kvw_core_ep_ctx(ep))->max_tx_queue;
	if (le->ovf_head && le->ovf_bytes + len > cap) {
		snprintf(why, sizeof(why), "the peer stopped reading: %llu bytes of control frames wait "
			 "for room in the loop ring to loop://%s (config max_tx_queue)",
			 (unsigned long long)le->ovf_bytes, le->pair->name);
		kvw_ep_fail(ep, KVW_ERR_PEER_DEAD, why);
		return KVW_ERR_PEER_DEAD;
	}
	if (!(m = malloc(sizeof(*m) + len)))
		return KVW_ERR_NOMEM;
	m->next = NULL;
	m->len = (uint32_t)len;
	memcpy(m->frame, frame, len);
	if (le->ovf_tail)
		le->ovf_tail->next = m;
	else
		le->ovf_head = m;
	le->ovf_tail = m;
	le->ovf_bytes += len;
	loop_ovf_drain(le); /* the ring takes it now unless older frames still wait */
	if (le->ovf_head && !le->ovf_logged) {
		le->ovf_logged = true;
		kvw_log(kvw_core_ep_ctx(ep), 4, "endpoint %u: the loop ring to loop://%s is full: control "
			"frames wait in order behind it (said once per endpoint)", kvw_core_ep_id(ep),
			le->pair->name);
	}
	return KVW_OK;
}

static size_t loop_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n)
{
	struct loop_ep *le = kvw_core_ep_priv(ep);
	struct loop_ring *r;
	uint64_t t, h;
	size_t i;

	if (!le || le->ovf_head || loop_peer_closed(le))
		return 0; /* control frames first (order); a closed peer fails the endpoint in progress */
	r = loop_tx(le);
	t = atomic_load_explicit(&r->tail, memory_order_relaxed);
	h = atomic_load_explicit(&r->head, memory_order_acquire);
	for (i = 0; i < n && t - h < LOOP_RING; i++, t++)
		r->ent[t & (LOOP_RING - 1)] = (struct loop_ent){
			.kind = LOOP_DATA, .src = f[i].src,
			.d = {.token = f[i].token, .layer = f[i].layer, .blk_idx = f[i].blk_idx,
			      .bytes = f[i].bytes, .blk_off = f[i].blk_off}};
	if (i)
		atomic_store_explicit(&r->tail, t, memory_order_release);
	return i;
}

static kvw_status loop_cancel(kvw_ep *ep, kvw_req *req)
{
	struct loop_ep *le = kvw_core_ep_priv(ep);
	uint64_t pos;

	if (!le || !kvw_core_req_bytes_posted(req) || loop_peer_closed(le))
		return KVW_OK; /* nothing of it in the ring, or nobody reads the ring any more */
	if (!kvw_core_ep_alive(ep)) {
		/* the endpoint failed: the core ends the request now, without waiting
		 * for cancel_done, so the peer must read none of our pages from here on
		 * (its DATA entries still in the ring are dropped unread) */
		loop_stop_data(le->pair, le->side);
		return KVW_OK;
	}
	pos = atomic_load_explicit(&loop_tx(le)->tail, memory_order_relaxed);
	if (atomic_load_explicit(&loop_tx(le)->head, memory_order_acquire) >= pos)
		return KVW_OK; /* the consumer is past every fragment of it already */
	if (le->n_cancels == le->cap_cancels) {
		uint32_t nc = le->cap_cancels ? le->cap_cancels * 2 : 8;
		struct loop_cancel *c = realloc(le->cancels, nc * sizeof(*c));
		if (!c) {
			kvw_ep_fail(ep, KVW_ERR_NOMEM, "out of memory while aborting a send on a loop endpoint");
			return KVW_OK; /* the endpoint is failed: its requests end */
		}
		le->cancels = c;
		le->cap_cancels = nc;
	}
	le->cancels[le->n_cancels++] = (struct loop_cancel){kvw_core_req_seq_id(req), pos};
	return KVW_INPROGRESS;
}

/* Cancels whose fragments the consumer is past (or never reads: closed). */
static void loop_cancels_check(struct loop_ep *le)
{
	uint64_t h = atomic_load_explicit(&loop_tx(le)->head, memory_order_acquire);
	bool gone = loop_peer_closed(le);

	for (uint32_t i = 0; i < le->n_cancels;) {
		if (!gone && h < le->cancels[i].pos) {
			i++;
			continue;
		}
		uint64_t seq = le->cancels[i].seq_id;
		le->cancels[i] = le->cancels[--le->n_cancels];
		kvw_core_cancel_done(le->ep, seq);
		if (kvw_core_ep_priv(le->ep) != le)
			return;
	}
}

/* ---------------------------------------------------------- receiving */
static void loop_on_ctrl(struct loop_ep *le, struct loop_msg *m)
{
	kvw_ep *ep = le->ep;
	struct kvw_wire_hdr h;
	const char *why = "";
	kvw_status st = kvw_wire_check_hdr(m->frame, m->len, &h, &why);

	if (st == KVW_OK && h.len != m->len - HDR) {
		st = KVW_ERR_PROTO;
		why = "control frame length does not match its header";
	}
	if (st != KVW_OK) {
		kvw_core_reject(ep, st, why);
		return;
	}
	if (!kvw_core_ep_ready(ep) && (h.type > KVW_T_REJECT || h.len > KVW_WIRE_MAX_PREAUTH)) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "frame before the handshake finished: only small "
				"HELLO/WELCOME/AUTH/READY/REJECT may come first");
		return;
	}
	if (h.type == KVW_T_DATA || h.type == KVW_T_MEM || h.type == KVW_T_DESC || h.type == KVW_T_ACK ||
	    h.type == KVW_T_DESCV || h.type == KVW_T_DRV) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "frame type not used by the loop driver");
		return;
	}
	kvw_core_on_frame(ep, &h, m->frame + HDR);
}

/* The one copy: from the sender's pages into the granted block. A sender
 * that closed may have freed its pages: nothing is read from them then. */
static void loop_on_data(struct loop_ep *le, struct loop_ent *e, bool peer_closed)
{
	kvw_ep *ep = le->ep;
	const char *why = "";
	uint8_t *dst;

	if (kvw_wire_check_body(KVW_T_DATA, &e->d, sizeof(e->d) + (size_t)e->d.bytes, &why) != KVW_OK) {
		kvw_core_reject(ep, KVW_ERR_PROTO, why);
		return;
	}
	kvw_core_ep_heard(ep);
	if (peer_closed || !kvw_core_ep_ready(ep)) {
		kvw_core_ep_counters(ep)->drops++;
		return;
	}
	if (kvw_core_dst(ep, &e->d, &dst) != KVW_OK)
		return; /* refused or revoked: nothing copied */
	atomic_store(&le->pair->copying[le->side], true);
	if (atomic_load(&le->pair->nodata[!le->side])) { /* the sender's request ended meanwhile */
		atomic_store(&le->pair->copying[le->side], false);
		kvw_core_ep_counters(ep)->drops++;
		return;
	}
	memcpy(dst, e->src, e->d.bytes);
	atomic_store_explicit(&le->pair->copying[le->side], false, memory_order_release);
	kvw_core_ep_rail_rx(ep, 0, e->d.bytes);
	kvw_core_landed(ep, &e->d);
}

static void loop_ep_fail_closed(struct loop_ep *le)
{
	char why[256];

	if (!kvw_core_ep_ready(le->ep) && !kvw_core_ep_is_server(le->ep)) {
		snprintf(why, sizeof(why), "loop://%s: the listener closed (or refused the connection) "
			 "before the handshake finished", le->pair->name);
		kvw_set_err(kvw_core_ep_ctx(le->ep), KVW_ERR_CONNREFUSED, "%s", why);
		kvw_ep_fail(le->ep, KVW_ERR_CONNREFUSED, why);
		return;
	}
	snprintf(why, sizeof(why), "loop://%s: the peer endpoint went away without a CLOSE frame "
		 "(closed or failed on its side)", le->pair->name);
	kvw_ep_fail(le->ep, KVW_ERR_PEER_DEAD, why);
}

/* Consumes what the peer queued: the ring, then (once the peer closed)
 * what its overflow held. The consumer position advances after each entry
 * is done with (its source pages no longer read). */
static void loop_rx_progress(struct loop_ep *le)
{
	struct loop_ring *r = loop_rx(le);
	bool closed = loop_peer_closed(le); /* before the tail: a close comes after its last entry */
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t budget = LOOP_RX_BUDGET;
	unsigned frames = 0;

	while (h != t && budget && frames < LOOP_RX_FRAMES && kvw_core_ep_alive(le->ep)) {
		struct loop_ent *e = &r->ent[h & (LOOP_RING - 1)];
		if (e->kind == LOOP_CTRL) {
			struct loop_msg *m = e->msg;
			e->msg = NULL;
			e->kind = 0;
			atomic_store_explicit(&r->head, ++h, memory_order_release);
			loop_on_ctrl(le, m);
			free(m);
		} else {
			loop_on_data(le, e, closed || loop_peer_closed(le));
			budget = budget > e->d.bytes ? budget - e->d.bytes : 0;
			atomic_store_explicit(&r->head, ++h, memory_order_release);
		}
		frames++;
		if (kvw_core_ep_priv(le->ep) != le)
			return; /* the endpoint's transport was closed from a callback */
	}
	if (!closed || h != t)
		return;
	while (le->pair->orphan[!le->side] && kvw_core_ep_alive(le->ep) && frames++ < LOOP_RX_FRAMES) {
		struct loop_msg *m = le->pair->orphan[!le->side];
		le->pair->orphan[!le->side] = m->next;
		loop_on_ctrl(le, m);
		free(m);
		if (kvw_core_ep_priv(le->ep) != le)
			return;
	}
	if (!le->pair->orphan[!le->side] && kvw_core_ep_alive(le->ep))
		loop_ep_fail_closed(le);
}

static kvw_status loop_progress(kvw_drv *d)
{
	struct loop_drv *ld = d->priv;

	for (struct loop_lsn *s = ld->lsns; s; s = s->dnext)
		loop_accept(s);
	for (struct loop_ep *le = ld->eps; le; le = ld->iter_next) {
		ld->iter_next = le->next;
		if (!kvw_core_ep_alive(le->ep))
			continue;
		if (le->ovf_head)
			loop_ovf_drain(le);
		loop_rx_progress(le);
		if (kvw_core_ep_priv(le->ep) == le && le->n_cancels)
			loop_cancels_check(le);
	}
	ld->iter_next = NULL;
	return KVW_OK;
}

/* Work is queued for this context: kvw_ctx_wait must not sleep. */
static bool loop_prepare_wait(kvw_drv *d)
{
	struct loop_drv *ld = d->priv;

	for (struct loop_lsn *s = ld->lsns; s; s = s->dnext)
		if (atomic_load_explicit(&s->pending, memory_order_acquire))
			return true;
	for (struct loop_ep *le = ld->eps; le; le = le->next) {
		struct loop_ring *r = loop_rx(le);
		if (!kvw_core_ep_alive(le->ep))
			continue;
		if (atomic_load_explicit(&r->tail, memory_order_acquire) !=
		    atomic_load_explicit(&r->head, memory_order_relaxed) || loop_peer_closed(le))
			return true;
	}
	return false;
}

static void loop_ep_close(kvw_ep *ep)
{
	struct loop_ep *le = kvw_core_ep_priv(ep);

	if (!le)
		return;
	loop_ovf_drain(le); /* as much as fits; the rest goes to the peer as orphans */
	loop_ep_unlink(kvw_core_ep_drv(ep)->priv, le);
	loop_side_close(le->pair, le->side, le->ovf_head);
	free(le->cancels);
	free(le);
	kvw_core_ep_set_priv(ep, NULL);
}

const struct kvw_driver_ops kvw_loop_ops = {
	.name = "loop",
	.open = loop_open,
	.close = loop_close,
	.query_caps = loop_caps,
	.progress = loop_progress,
	.listen = loop_listen,
	.listener_close = loop_listener_close,
	.connect = loop_connect,
	.ep_close = loop_ep_close,
	.send_ctrl = loop_send_ctrl,
	.post_frags = loop_post_frags,
	.cancel = loop_cancel,
	.prepare_wait = loop_prepare_wait,
};
