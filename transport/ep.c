/* SPDX-License-Identifier: MIT */
/* Endpoints: connect/listen/accept, handshake with optional mutual
 * HMAC challenge-response, keepalive, frame dispatch, teardown. */
#include "kvw_int.h"
#include "seq.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ allocation */
kvw_ep *kvw_ep_alloc(kvw_ctx *ctx, kvw_drv *drv, const char *uri)
{
	kvw_ep *ep = calloc(1, sizeof(*ep));

	if (!ep)
		return NULL;
	ep->ctx = ctx;
	ep->drv = drv;
	ep->id = ctx->next_ep_id++;
	ep->rails = 1;
	ep->state = KVW_EP_CONNECTING;
	ep->fail_status = KVW_INPROGRESS;
	ep->t_start = ep->last_rx_ns = kvw_now_ns();
	snprintf(ep->uri, sizeof(ep->uri), "%s", uri ? uri : "");
	randombytes_buf(ep->nonce, sizeof(ep->nonce));
	ep->next = ctx->eps;
	ctx->eps = ep;
	return ep;
}

void kvw_ep_free(kvw_ep *ep)
{
	kvw_ctx *ctx = ep->ctx;

	kvw_seq_fail_all(ep, KVW_ERR_ABORTED);
	if (!ep->transport_closed) {
		ep->transport_closed = true;
		ep->drv->ops->ep_close(ep);
	}
	kvw_seq_ep_release(ep);
	for (kvw_ep **pp = &ctx->eps; *pp; pp = &(*pp)->next) {
		if (*pp == ep) {
			*pp = ep->next;
			break;
		}
	}
	free(ep);
}

/* Frees endpoints nobody holds (failed before accept, merged rails). */
static void kvw_ep_reap(kvw_ctx *ctx)
{
	kvw_ep *next;

	for (kvw_ep *ep = ctx->eps; ep; ep = next) {
		next = ep->next;
		if (ep->state == KVW_EP_FAILED && !ep->transport_closed) {
			ep->transport_closed = true;
			ep->drv->ops->ep_close(ep);
		}
		if (ep->zombie)
			kvw_ep_free(ep);
	}
}

void kvw_ep_fail(kvw_ep *ep, kvw_status st, const char *why)
{
	if (ep->state == KVW_EP_FAILED || ep->state == KVW_EP_CLOSED)
		return;
	kvw_log(ep->ctx, ep->is_server && !ep->accepted ? 3 : 2, "endpoint %u (%s): %s: %s", ep->id,
		ep->uri, kvw_strerror(st), why);
	snprintf(ep->fail_why, sizeof(ep->fail_why), "%s", why);
	if (!ep->is_server || ep->accepted)
		snprintf(ep->ctx->err, sizeof(ep->ctx->err), "endpoint %s: %s", ep->uri, why);
	ep->state = KVW_EP_FAILED;
	ep->fail_status = st;
	kvw_seq_fail_all(ep, st);
	if (ep->is_server && !ep->accepted)
		ep->zombie = true; /* nobody will ever see it */
}

/* ---------------------------------------------------------- frame output */
kvw_status kvw_ep_send(kvw_ep *ep, unsigned type, const void *body, size_t len)
{
	uint8_t stackbuf[256], *buf = stackbuf;
	kvw_status st;

	if (ep->state == KVW_EP_FAILED || ep->state == KVW_EP_CLOSED)
		return ep->fail_status < 0 ? ep->fail_status : KVW_ERR_CLOSED;
	if (len + sizeof(struct kvw_wire_hdr) > sizeof(stackbuf)) {
		buf = malloc(len + sizeof(struct kvw_wire_hdr));
		if (!buf)
			return KVW_ERR_NOMEM;
	}
	kvw_wire_hdr_encode(buf, type, 0, (uint32_t)len, ep->peer_id);
	memcpy(buf + sizeof(struct kvw_wire_hdr), body, len);
	st = ep->drv->ops->send_ctrl(ep, buf, len + sizeof(struct kvw_wire_hdr));
	ep->cnt.frames_tx++;
	if (buf != stackbuf)
		free(buf);
	return st;
}

void kvw_core_reject(kvw_ep *ep, kvw_status st, const char *why)
{
	struct kvw_wire_reject r = {.status = st};

	ep->cnt.bad_frames++;
	if (ep->state == KVW_EP_HANDSHAKE || ep->state == KVW_EP_CONNECTING) {
		snprintf(r.reason, sizeof(r.reason), "%s", why);
		kvw_ep_send(ep, KVW_T_REJECT, &r, sizeof(r));
	}
	kvw_ep_fail(ep, st, why);
}

void kvw_core_bad_frame(kvw_ep *ep, const char *why)
{
	ep->cnt.bad_frames++;
	kvw_log(ep->ctx, 3, "endpoint %u: dropped bad frame: %s", ep->id, why);
}

/* ------------------------------------------------------------ handshake */
/* mac = HMAC-SHA512/256(secret, label | a | b) */
static void kvw_mac(const kvw_ep *ep, const char *label, const uint8_t *a, const uint8_t *b,
		    uint8_t mac[KVW_WIRE_MAC])
{
	crypto_auth_hmacsha512256_state s;
	uint8_t key[crypto_auth_hmacsha512256_KEYBYTES];

	crypto_generichash(key, sizeof(key), (const uint8_t *)ep->secret, strlen(ep->secret), NULL, 0);
	crypto_auth_hmacsha512256_init(&s, key, sizeof(key));
	crypto_auth_hmacsha512256_update(&s, (const uint8_t *)label, strlen(label));
	crypto_auth_hmacsha512256_update(&s, a, KVW_WIRE_NONCE);
	crypto_auth_hmacsha512256_update(&s, b, KVW_WIRE_NONCE);
	crypto_auth_hmacsha512256_final(&s, mac);
	sodium_memzero(key, sizeof(key));
}

static uint32_t kvw_local_caps(const kvw_ep *ep)
{
	return ep->drv->caps.caps | (ep->secret[0] ? KVW_CAP_AUTH : 0);
}

void kvw_core_ep_up(kvw_ep *ep)
{
	struct kvw_wire_hello h = {.caps = kvw_local_caps(ep), .rails = ep->rails};

	ep->state = KVW_EP_HANDSHAKE;
	memcpy(h.nonce, ep->nonce, sizeof(h.nonce));
	snprintf(h.driver, sizeof(h.driver), "%s", ep->drv->ops->name);
	kvw_ep_send(ep, KVW_T_HELLO, &h, sizeof(h));
}

kvw_ep *kvw_core_ep_accepted(kvw_listener *l)
{
	kvw_ep *ep = kvw_ep_alloc(l->ctx, l->drv, l->uri);

	if (!ep)
		return NULL;
	ep->is_server = true;
	ep->listener = l;
	ep->state = KVW_EP_HANDSHAKE;
	snprintf(ep->secret, sizeof(ep->secret), "%s", l->secret);
	ep->rails = l->rails;
	return ep;
}

size_t kvw_core_hello_join(kvw_ep *ep, uint32_t rail_idx, void *buf)
{
	struct kvw_wire_hello h = {.caps = kvw_local_caps(ep), .rails = ep->rails,
				   .flags = KVW_HELLO_JOIN, .rail_idx = rail_idx,
				   .session = ep->session};
	uint8_t idx[KVW_WIRE_NONCE] = {0};

	memcpy(idx, &ep->session, 8);
	memcpy(idx + 8, &rail_idx, 4);
	if (ep->secret[0])
		kvw_mac(ep, "kvw-J", idx, ep->peer_nonce, h.nonce);
	snprintf(h.driver, sizeof(h.driver), "%s", ep->drv->ops->name);
	kvw_wire_hdr_encode(buf, KVW_T_HELLO, 0, sizeof(h), ep->peer_id);
	memcpy((uint8_t *)buf + sizeof(struct kvw_wire_hdr), &h, sizeof(h));
	return sizeof(struct kvw_wire_hdr) + sizeof(h);
}

static kvw_status kvw_on_join(kvw_ep *ep, const struct kvw_wire_hello *h)
{
	uint8_t idx[KVW_WIRE_NONCE] = {0}, mac[KVW_WIRE_MAC];
	kvw_status st;

	for (kvw_ep *m = ep->ctx->eps; m; m = m->next) {
		if (m == ep || !m->is_server || m->listener != ep->listener ||
		    m->state != KVW_EP_READY || m->session != h->session)
			continue;
		memcpy(idx, &h->session, 8);
		memcpy(idx + 8, &h->rail_idx, 4);
		if (m->secret[0]) {
			kvw_mac(m, "kvw-J", idx, m->nonce, mac);
			if (sodium_memcmp(mac, h->nonce, sizeof(mac)) != 0)
				break;
		}
		if (h->rail_idx == 0 || h->rail_idx >= m->rails)
			break;
		st = m->drv->ops->join(m, ep, h->rail_idx);
		if (st != KVW_OK)
			break;
		ep->zombie = true;
		ep->transport_closed = true; /* the transport now belongs to m */
		ep->state = KVW_EP_CLOSED;
		return KVW_OK;
	}
	kvw_core_reject(ep, KVW_ERR_PROTO, "rail join refused: unknown session, bad rail index or proof");
	return KVW_ERR_PROTO;
}

static kvw_status kvw_on_hello(kvw_ep *ep, const struct kvw_wire_hdr *hdr,
			       const struct kvw_wire_hello *h)
{
	struct kvw_wire_welcome w = {0};

	if (!ep->is_server || ep->state != KVW_EP_HANDSHAKE) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "HELLO out of place");
		return KVW_ERR_PROTO;
	}
	if (h->flags & KVW_HELLO_JOIN)
		return kvw_on_join(ep, h);
	ep->peer_major = hdr->major;
	ep->peer_minor = hdr->minor;
	ep->peer_caps = h->caps;
	memcpy(ep->peer_nonce, h->nonce, sizeof(ep->peer_nonce));
	if (h->rails < ep->rails)
		ep->rails = h->rails;
	if (ep->rails > ep->drv->caps.max_rails)
		ep->rails = ep->drv->caps.max_rails ? ep->drv->caps.max_rails : 1;
	randombytes_buf(&ep->session, sizeof(ep->session));
	w.caps = kvw_local_caps(ep);
	w.rails = ep->rails;
	w.ep_id = ep->id;
	w.session = ep->session;
	memcpy(w.nonce, ep->nonce, sizeof(w.nonce));
	if (ep->secret[0]) {
		w.flags = KVW_WELCOME_AUTH;
		kvw_mac(ep, "kvw-S", ep->peer_nonce, ep->nonce, w.mac);
	}
	return kvw_ep_send(ep, KVW_T_WELCOME, &w, sizeof(w));
}

static kvw_status kvw_on_welcome(kvw_ep *ep, const struct kvw_wire_hdr *hdr,
				 const struct kvw_wire_welcome *w)
{
	struct kvw_wire_auth a = {.ep_id = ep->id};
	uint8_t mac[KVW_WIRE_MAC];

	if (ep->is_server || ep->state != KVW_EP_HANDSHAKE) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "WELCOME out of place");
		return KVW_ERR_PROTO;
	}
	ep->peer_major = hdr->major;
	ep->peer_minor = hdr->minor;
	ep->peer_caps = w->caps;
	ep->peer_id = w->ep_id;
	ep->session = w->session;
	memcpy(ep->peer_nonce, w->nonce, sizeof(ep->peer_nonce));
	if (w->rails < ep->rails)
		ep->rails = w->rails;
	if (ep->secret[0] && !(w->flags & KVW_WELCOME_AUTH)) {
		kvw_core_reject(ep, KVW_ERR_AUTH, "this side has a secret but the server does not "
				"authenticate: set the same `secret` on the listener");
		return KVW_ERR_AUTH;
	}
	if (w->flags & KVW_WELCOME_AUTH) {
		if (!ep->secret[0]) {
			kvw_core_reject(ep, KVW_ERR_AUTH, "the server requires a shared secret: set "
					"config `secret` (KVW_SECRET or ?secret= in the URI)");
			return KVW_ERR_AUTH;
		}
		kvw_mac(ep, "kvw-S", ep->nonce, ep->peer_nonce, mac);
		if (sodium_memcmp(mac, w->mac, sizeof(mac)) != 0) {
			kvw_core_reject(ep, KVW_ERR_AUTH, "the server could not prove the shared "
					"secret: the two sides' `secret` values differ");
			return KVW_ERR_AUTH;
		}
		kvw_mac(ep, "kvw-C", ep->peer_nonce, ep->nonce, a.mac);
		ep->authenticated = true;
	}
	return kvw_ep_send(ep, KVW_T_AUTH, &a, sizeof(a));
}

static kvw_status kvw_on_auth(kvw_ep *ep, const struct kvw_wire_auth *a)
{
	struct kvw_wire_ready r = {.ep_id = ep->id};
	uint8_t mac[KVW_WIRE_MAC];

	if (!ep->is_server || ep->state != KVW_EP_HANDSHAKE || ep->session == 0) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "AUTH out of place");
		return KVW_ERR_PROTO;
	}
	if (ep->secret[0]) {
		kvw_mac(ep, "kvw-C", ep->nonce, ep->peer_nonce, mac);
		if (sodium_memcmp(mac, a->mac, sizeof(mac)) != 0) {
			kvw_core_reject(ep, KVW_ERR_AUTH, "authentication failed: the peers' "
					"`secret` values differ");
			return KVW_ERR_AUTH;
		}
		ep->authenticated = true;
	}
	ep->peer_id = a->ep_id;
	r.caps = kvw_local_caps(ep);
	ep->state = KVW_EP_READY;
	return kvw_ep_send(ep, KVW_T_READY, &r, sizeof(r));
}

static kvw_status kvw_on_ready(kvw_ep *ep)
{
	kvw_status st;

	if (ep->is_server || ep->state != KVW_EP_HANDSHAKE || ep->peer_id == 0) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "READY out of place");
		return KVW_ERR_PROTO;
	}
	ep->state = KVW_EP_READY;
	st = ep->rails > 1 ? ep->drv->ops->open_rails(ep) : KVW_OK;
	if (st != KVW_OK)
		kvw_ep_fail(ep, st, "could not open the extra rails");
	return st;
}

static kvw_status kvw_on_reject(kvw_ep *ep, const struct kvw_wire_reject *r)
{
	char why[160];
	kvw_status st = r->status < 0 && r->status >= KVW_ERR_CLOSED ? r->status : KVW_ERR_PROTO;

	snprintf(why, sizeof(why), "peer refused: %.*s", (int)sizeof(r->reason), r->reason);
	kvw_set_err(ep->ctx, st, "%s", why);
	kvw_ep_fail(ep, st, why);
	return st;
}

/* ------------------------------------------------------------- dispatch */
static kvw_status kvw_on_ping(kvw_ep *ep, unsigned type, const struct kvw_wire_ping *p)
{
	if (type == KVW_T_PING) {
		ep->cnt.keepalives_rx++;
		return kvw_ep_send(ep, KVW_T_PONG, p, sizeof(*p));
	}
	if (p->cookie == ep->ping_cookie) {
		uint64_t rtt = kvw_now_ns() - p->t_ns;
		ep->pong_cookie = p->cookie;
		ep->last_rtt_ns = rtt;
		ep->cnt.rtt_us = ep->cnt.rtt_us ? (ep->cnt.rtt_us * 7 + rtt / 1000) / 8 : rtt / 1000;
	}
	return KVW_OK;
}

kvw_status kvw_core_on_frame(kvw_ep *ep, const struct kvw_wire_hdr *h, const void *body)
{
	const char *why = "";
	kvw_status st;

	if (ep->state == KVW_EP_FAILED || ep->state == KVW_EP_CLOSED)
		return KVW_ERR_CLOSED;
	st = kvw_wire_check_body(h->type, body, h->len, &why);
	if (st != KVW_OK) {
		kvw_core_reject(ep, st, why);
		return st;
	}
	ep->last_rx_ns = kvw_now_ns();
	ep->cnt.frames_rx++;
	if (ep->state != KVW_EP_READY && h->type > KVW_T_REJECT && h->type != KVW_T_PING &&
	    h->type != KVW_T_PONG) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "frame before the handshake finished");
		return KVW_ERR_PROTO;
	}
	switch (h->type) {
	case KVW_T_HELLO: return kvw_on_hello(ep, h, body);
	case KVW_T_WELCOME: return kvw_on_welcome(ep, h, body);
	case KVW_T_AUTH: return kvw_on_auth(ep, body);
	case KVW_T_READY: return kvw_on_ready(ep);
	case KVW_T_REJECT: return kvw_on_reject(ep, body);
	case KVW_T_PING:
	case KVW_T_PONG: return kvw_on_ping(ep, h->type, body);
	case KVW_T_CLOSE:
		kvw_ep_fail(ep, KVW_ERR_PEER_DEAD, "peer closed the endpoint");
		return KVW_OK;
	default:
		return kvw_seq_on_frame(ep, h, body);
	}
}

/* --------------------------------------------------------------- public */
static kvw_status kvw_uri_driver(kvw_ctx *ctx, const char *uri, struct kvw_uri *u, kvw_drv **d)
{
	if (!uri || kvw_uri_parse(uri, u) != KVW_OK)
		return kvw_set_err(ctx, KVW_ERR_INVALID,
				   "bad URI \"%s\": expected tcp://HOST:PORT, shm:///PATH, "
				   "rdma://IP:PORT or dpdk://IP:PORT", uri ? uri : "(null)");
	return kvw_ctx_driver(ctx, u->scheme, d);
}

static kvw_status kvw_uri_overrides(kvw_ctx *ctx, const struct kvw_uri *u, bool listening,
				    unsigned *rails, char *secret, size_t slen)
{
	char v[128];

	*rails = listening ? KVW_MAX_RAILS : ctx->cfg.rails; /* a listener grants what clients ask */
	snprintf(secret, slen, "%s", ctx->cfg.secret);
	if (kvw_uri_param(u, "rails", v, sizeof(v))) {
		int r = atoi(v);
		if (r < 1 || r > (int)KVW_MAX_RAILS)
			return kvw_set_err(ctx, KVW_ERR_INVALID, "URI rails=%s: expected 1..%u", v, KVW_MAX_RAILS);
		*rails = (unsigned)r;
	}
	if (kvw_uri_param(u, "secret", v, sizeof(v)))
		snprintf(secret, slen, "%s", v);
	return KVW_OK;
}

kvw_status kvw_listen(kvw_ctx *ctx, const char *uri, kvw_listener **out)
{
	struct kvw_uri u;
	kvw_drv *d;
	kvw_listener *l;
	kvw_status st;

	if (!ctx || !out)
		return KVW_ERR_INVALID;
	if ((st = kvw_uri_driver(ctx, uri, &u, &d)) != KVW_OK)
		return st;
	if (!(l = calloc(1, sizeof(*l))))
		return KVW_ERR_NOMEM;
	l->ctx = ctx;
	l->drv = d;
	snprintf(l->uri, sizeof(l->uri), "%s", uri);
	st = kvw_uri_overrides(ctx, &u, true, &l->rails, l->secret, sizeof(l->secret));
	if (st == KVW_OK)
		st = d->ops->listen(d, l, &u);
	if (st != KVW_OK) {
		free(l);
		return st;
	}
	l->next = ctx->listeners;
	ctx->listeners = l;
	*out = l;
	return KVW_OK;
}

const char *kvw_listener_uri(const kvw_listener *l)
{
	return l ? l->uri : NULL;
}

void kvw_listener_close(kvw_listener *l)
{
	kvw_ctx *ctx;

	if (!l)
		return;
	ctx = l->ctx;
	for (kvw_ep *ep = ctx->eps; ep; ep = ep->next) {
		if (ep->listener == l && !ep->accepted && !ep->zombie) {
			ep->zombie = true;
			kvw_ep_fail(ep, KVW_ERR_CLOSED, "listener closed");
		}
		if (ep->listener == l)
			ep->listener = NULL;
	}
	kvw_ep_reap(ctx);
	l->drv->ops->listener_close(l);
	for (kvw_listener **pp = &ctx->listeners; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	free(l);
}

static kvw_ep *kvw_accept_ready(kvw_listener *l)
{
	for (kvw_ep *ep = l->ctx->eps; ep; ep = ep->next)
		if (ep->listener == l && !ep->accepted && !ep->zombie && ep->state == KVW_EP_READY)
			return ep;
	return NULL;
}

kvw_status kvw_accept(kvw_listener *l, int timeout_ms, kvw_ep **out)
{
	uint64_t end;
	kvw_ep *ep;

	if (!l || !out)
		return KVW_ERR_INVALID;
	end = kvw_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
	for (;;) {
		kvw_progress(l->ctx);
		kvw_ep_reap(l->ctx);
		if ((ep = kvw_accept_ready(l))) {
			ep->accepted = true;
			*out = ep;
			return KVW_OK;
		}
		if (timeout_ms >= 0 && kvw_now_ns() >= end)
			return KVW_INPROGRESS;
		kvw_ctx_wait(l->ctx, 1);
	}
}

kvw_status kvw_connect_start(kvw_ctx *ctx, const char *uri, kvw_ep **out)
{
	struct kvw_uri u;
	kvw_drv *d;
	kvw_ep *ep;
	kvw_status st;

	if (!ctx || !out)
		return KVW_ERR_INVALID;
	if ((st = kvw_uri_driver(ctx, uri, &u, &d)) != KVW_OK)
		return st;
	if (!(ep = kvw_ep_alloc(ctx, d, uri)))
		return KVW_ERR_NOMEM;
	st = kvw_uri_overrides(ctx, &u, false, &ep->rails, ep->secret, sizeof(ep->secret));
	if (ep->rails > d->caps.max_rails)
		ep->rails = d->caps.max_rails ? d->caps.max_rails : 1;
	if (st == KVW_OK)
		st = d->ops->connect(d, ep, &u);
	if (st != KVW_OK) {
		ep->transport_closed = true;
		kvw_ep_free(ep);
		return st;
	}
	*out = ep;
	return KVW_OK;
}

kvw_status kvw_connect(kvw_ctx *ctx, const char *uri, int timeout_ms, kvw_ep **out)
{
	kvw_ep *ep;
	kvw_status st;
	uint64_t end;

	if ((st = kvw_connect_start(ctx, uri, &ep)) != KVW_OK)
		return st;
	if (timeout_ms < 0)
		timeout_ms = (int)ctx->cfg.connect_timeout_ms;
	end = kvw_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	while ((st = kvw_ep_status(ep)) == KVW_INPROGRESS) {
		if (kvw_now_ns() >= end) {
			kvw_set_err(ctx, KVW_ERR_TIMEDOUT, "connect to %s: no handshake within %d ms; "
				    "is a kvwire listener running there?", uri, timeout_ms);
			st = KVW_ERR_TIMEDOUT;
			break;
		}
		kvw_progress(ctx);
		kvw_ctx_wait(ctx, 1);
	}
	if (st != KVW_OK) {
		if (ep->state == KVW_EP_FAILED && ep->fail_why[0])
			kvw_set_err(ctx, st, "connect to %s: %s", uri, ep->fail_why);
		kvw_ep_free(ep);
		return st;
	}
	*out = ep;
	return KVW_OK;
}

kvw_status kvw_ep_status(const kvw_ep *ep)
{
	if (!ep)
		return KVW_ERR_INVALID;
	switch (ep->state) {
	case KVW_EP_READY: return KVW_OK;
	case KVW_EP_CONNECTING:
	case KVW_EP_HANDSHAKE: return KVW_INPROGRESS;
	case KVW_EP_CLOSED: return KVW_ERR_CLOSED;
	default: return ep->fail_status;
	}
}

void kvw_ep_close(kvw_ep *ep)
{
	struct kvw_wire_close c = {.status = KVW_ERR_CLOSED};

	if (!ep)
		return;
	if (ep->state == KVW_EP_READY)
		kvw_ep_send(ep, KVW_T_CLOSE, &c, sizeof(c));
	ep->state = KVW_EP_CLOSED;
	ep->fail_status = KVW_ERR_CLOSED;
	kvw_ep_free(ep);
}

kvw_status kvw_ep_query(const kvw_ep *ep, kvw_ep_info *info)
{
	if (!ep || !info)
		return KVW_ERR_INVALID;
	memset(info, 0, sizeof(*info));
	snprintf(info->driver, sizeof(info->driver), "%s", ep->drv->ops->name);
	snprintf(info->peer_uri, sizeof(info->peer_uri), "%s", ep->uri);
	info->peer_version_major = ep->peer_major;
	info->peer_version_minor = ep->peer_minor;
	info->caps = kvw_local_caps(ep) & ep->peer_caps;
	info->rails = ep->rails;
	info->id = ep->id;
	info->authenticated = ep->authenticated;
	return KVW_OK;
}

kvw_status kvw_ep_counters(const kvw_ep *ep, kvw_counters *out)
{
	if (!ep || !out)
		return KVW_ERR_INVALID;
	*out = ep->cnt;
	out->rails = ep->rails;
	return KVW_OK;
}

static kvw_status kvw_ep_send_ping(kvw_ep *ep, uint64_t now)
{
	struct kvw_wire_ping p = {.t_ns = now};

	randombytes_buf(&p.cookie, sizeof(p.cookie));
	ep->ping_cookie = p.cookie;
	ep->last_ping_ns = now;
	ep->cnt.keepalives_tx++;
	return kvw_ep_send(ep, KVW_T_PING, &p, sizeof(p));
}

kvw_status kvw_ep_ping(kvw_ep *ep, int timeout_ms, uint64_t *rtt_ns)
{
	uint64_t end, cookie;
	kvw_status st;

	if (!ep || !rtt_ns)
		return KVW_ERR_INVALID;
	if ((st = kvw_ep_status(ep)) != KVW_OK)
		return st;
	if ((st = kvw_ep_send_ping(ep, kvw_now_ns())) != KVW_OK)
		return st;
	cookie = ep->ping_cookie;
	end = kvw_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (ep->pong_cookie != cookie) {
		if ((st = kvw_ep_status(ep)) != KVW_OK)
			return st;
		if (kvw_now_ns() >= end)
			return kvw_set_err(ep->ctx, KVW_ERR_TIMEDOUT, "no PONG within %d ms", timeout_ms);
		kvw_progress(ep->ctx);
	}
	*rtt_ns = ep->last_rtt_ns;
	return KVW_OK;
}

/* Keepalive and liveness; called every ~1 ms from kvw_progress. */
void kvw_ep_keepalive(kvw_ep *ep, uint64_t now)
{
	const struct kvw_cfgv *c = &ep->ctx->cfg;
	uint64_t idle = now - ep->last_rx_ns, ka = (uint64_t)c->keepalive_ms * 1000000ull;
	char why[128];

	if (ep->state == KVW_EP_CONNECTING || ep->state == KVW_EP_HANDSHAKE) {
		if (now - ep->t_start > (uint64_t)c->connect_timeout_ms * 1000000ull)
			kvw_ep_fail(ep, KVW_ERR_TIMEDOUT, "handshake did not finish within connect_timeout_ms");
		return;
	}
	if (ep->state != KVW_EP_READY)
		return;
	if (ep->last_check_ns && now - ep->last_check_ns > ka) {
		/* this process ran no progress for a while: the silence was ours,
		 * so the peer gets a full keepalive round from now to answer */
		if (ep->last_rx_ns < now - ka)
			ep->last_rx_ns = now - ka;
		idle = now - ep->last_rx_ns;
	}
	ep->last_check_ns = now;
	if (idle > (uint64_t)c->peer_dead_ms * 1000000ull) {
		snprintf(why, sizeof(why), "no frame from the peer for %llu ms (peer_dead_ms=%u): "
			 "peer process or host is gone", (unsigned long long)(idle / 1000000), c->peer_dead_ms);
		kvw_ep_fail(ep, KVW_ERR_PEER_DEAD, why);
		return;
	}
	if (idle >= ka && now - ep->last_ping_ns >= ka)
		kvw_ep_send_ping(ep, now);
}

void kvw_ctx_reap(kvw_ctx *ctx)
{
	kvw_ep_reap(ctx);
}

/* When the next keepalive, liveness or deadline check of ep is due. */
uint64_t kvw_ep_next_timer(const kvw_ep *ep)
{
	const struct kvw_cfgv *c = &ep->ctx->cfg;
	uint64_t t;

	if (ep->state == KVW_EP_CONNECTING || ep->state == KVW_EP_HANDSHAKE)
		return ep->t_start + (uint64_t)c->connect_timeout_ms * 1000000ull;
	if (ep->state != KVW_EP_READY)
		return UINT64_MAX;
	t = ep->last_rx_ns + (uint64_t)c->keepalive_ms * 1000000ull;
	if (ep->last_ping_ns + (uint64_t)c->keepalive_ms * 1000000ull > t)
		t = ep->last_ping_ns + (uint64_t)c->keepalive_ms * 1000000ull;
	if (ep->last_rx_ns + (uint64_t)c->peer_dead_ms * 1000000ull < t)
		t = ep->last_rx_ns + (uint64_t)c->peer_dead_ms * 1000000ull;
	if (ep->next_deadline_ns && ep->next_deadline_ns < t)
		t = ep->next_deadline_ns;
	return t;
}
