/* SPDX-License-Identifier: MIT */
/* Endpoints: connect/listen/accept, handshake with optional mutual
 * HMAC challenge-response, keepalive, frame dispatch, teardown. */
#include "kvw_int.h"
#include "seq.h"
#include "auth.h"
#include "epcache.h"

#include <sys/resource.h>

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
	kvw_uri_redact(uri, ep->uri, sizeof(ep->uri));
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
	sodium_memzero(ep->secret, sizeof(ep->secret));
	sodium_memzero(ep->sess_key, sizeof(ep->sess_key));
	sodium_memzero(ep->auth_scalar, sizeof(ep->auth_scalar));
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
	if ((ep->is_server && !ep->accepted) || (ep->cached && ep->refs == 0))
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
/* With a secret, HELLO and WELCOME carry CPace shares in their nonce
 * fields (auth.h); WELCOME's mac and AUTH's mac confirm the session key.
 * Neither message lets an offline guess of the secret be checked. */
static uint32_t kvw_local_caps(const kvw_ep *ep)
{
	return ep->drv->caps.caps | (ep->secret[0] ? KVW_CAP_AUTH : 0);
}

void kvw_core_ep_up(kvw_ep *ep)
{
	struct kvw_wire_hello h = {.caps = kvw_local_caps(ep), .rails = ep->rails,
				   .session = ep->ctx->incarnation};

	ep->state = KVW_EP_HANDSHAKE;
	if (ep->secret[0]) {
		if (kvw_auth_start(ep->secret, ep->auth_scalar, ep->nonce) != KVW_OK) {
			kvw_ep_fail(ep, KVW_ERR_IO, "authentication: the group arithmetic failed");
			return;
		}
		h.flags = KVW_HELLO_PAKE;
	}
	memcpy(h.nonce, ep->nonce, sizeof(h.nonce));
	snprintf(h.driver, sizeof(h.driver), "%s", ep->drv->ops->name);
	kvw_ep_send(ep, KVW_T_HELLO, &h, sizeof(h));
}

kvw_ep *kvw_core_ep_accepted_from(kvw_listener *l, const char *peer_addr)
{
	kvw_ep *ep = kvw_ep_alloc(l->ctx, l->drv, l->uri);

	if (!ep)
		return NULL;
	ep->is_server = true;
	ep->listener = l;
	ep->state = KVW_EP_HANDSHAKE;
	snprintf(ep->secret, sizeof(ep->secret), "%s", l->secret);
	snprintf(ep->peer_addr, sizeof(ep->peer_addr), "%s", peer_addr ? peer_addr : "");
	ep->rails = l->rails;
	return ep;
}

bool kvw_core_ep_session_key(const kvw_ep *ep, uint8_t key[32])
{
	if (ep->state != KVW_EP_READY || !ep->secret[0])
		return false;
	memcpy(key, ep->sess_key, 32);
	return true;
}

kvw_ep *kvw_core_ep_accepted(kvw_listener *l)
{
	return kvw_core_ep_accepted_from(l, "");
}

/* join proof = MAC(session key, "kvw-J" | session, rail | server's share) */
static void kvw_join_proof(const kvw_ep *ep, uint64_t session, uint32_t rail_idx,
			   const uint8_t *server_share, uint8_t mac[KVW_WIRE_MAC])
{
	uint8_t idx[KVW_WIRE_NONCE] = {0};

	memcpy(idx, &session, 8);
	memcpy(idx + 8, &rail_idx, 4);
	kvw_auth_mac(ep->sess_key, "kvw-J", idx, server_share, mac);
}

size_t kvw_core_hello_join(kvw_ep *ep, uint32_t rail_idx, void *buf)
{
	struct kvw_wire_hello h = {.caps = kvw_local_caps(ep), .rails = ep->rails,
				   .flags = KVW_HELLO_JOIN, .rail_idx = rail_idx,
				   .session = ep->session};

	if (ep->secret[0])
		kvw_join_proof(ep, ep->session, rail_idx, ep->peer_nonce, h.nonce);
	snprintf(h.driver, sizeof(h.driver), "%s", ep->drv->ops->name);
	kvw_wire_hdr_encode(buf, KVW_T_HELLO, 0, sizeof(h), ep->peer_id);
	memcpy((uint8_t *)buf + sizeof(struct kvw_wire_hdr), &h, sizeof(h));
	return sizeof(struct kvw_wire_hdr) + sizeof(h);
}

static kvw_status kvw_on_join(kvw_ep *ep, const struct kvw_wire_hello *h)
{
	uint8_t mac[KVW_WIRE_MAC];
	kvw_status st;

	for (kvw_ep *m = ep->ctx->eps; m; m = m->next) {
		if (m == ep || !m->is_server || m->listener != ep->listener ||
		    m->state != KVW_EP_READY || m->session != h->session)
			continue;
		if (m->secret[0]) {
			kvw_join_proof(m, h->session, h->rail_idx, m->nonce, mac);
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

/* --------------------------------------------- authentication backoff */
/* A peer address's failed authentications: from the third in a row on,
 * the n-th makes the listener refuse that address's handshakes for
 * 100 ms * 2^(n-3), at most 10 s, so guessing the secret online costs
 * time (a typo retried costs nothing); other addresses are served as
 * before. A slot forgets after 60 s without failures. */
#define KVW_AUTHFAIL_FORGET_NS (60ull * 1000000000ull)
#define KVW_AUTHFAIL_MAX_NS (10ull * 1000000000ull)

static struct kvw_authfail *kvw_authfail_slot(kvw_listener *l, const char *addr, bool make)
{
	struct kvw_authfail *old = &l->authfail[0];

	for (unsigned i = 0; i < KVW_AUTHFAIL_SLOTS; i++) {
		struct kvw_authfail *f = &l->authfail[i];
		if (f->fails && strcmp(f->addr, addr) == 0)
			return f;
		if (f->last_ns < old->last_ns)
			old = f;
	}
	if (!make)
		return NULL;
	memset(old, 0, sizeof(*old));
	snprintf(old->addr, sizeof(old->addr), "%s", addr);
	return old;
}

static void kvw_authfail_note(kvw_ep *ep)
{
	struct kvw_authfail *f;
	uint64_t now = kvw_now_ns(), pen;

	if (!ep->is_server || !ep->listener)
		return;
	f = kvw_authfail_slot(ep->listener, ep->peer_addr, true);
	if (now - f->last_ns > KVW_AUTHFAIL_FORGET_NS)
		f->fails = 0;
	f->fails++;
	f->last_ns = now;
	pen = f->fails <= 2 ? 0 : 100000000ull << (f->fails - 3 < 7 ? f->fails - 3 : 7);
	f->until_ns = now + (pen < KVW_AUTHFAIL_MAX_NS ? pen : KVW_AUTHFAIL_MAX_NS);
	kvw_log(ep->ctx, 2, "listener %s: failed authentication #%u from %s", ep->listener->uri, f->fails,
		ep->peer_addr[0] ? ep->peer_addr : "an unknown address");
}

/* Refuses a HELLO from an address in its backoff; true when refused. */
static bool kvw_authfail_refuse(kvw_ep *ep)
{
	struct kvw_authfail *f;
	uint64_t now = kvw_now_ns();
	char why[96];

	if (!ep->secret[0] || !ep->listener)
		return false;
	f = kvw_authfail_slot(ep->listener, ep->peer_addr, false);
	if (!f || now >= f->until_ns)
		return false;
	snprintf(why, sizeof(why), "too many failed authentications from this address: retry in %llu ms",
		 (unsigned long long)((f->until_ns - now) / 1000000 + 1));
	kvw_core_reject(ep, KVW_ERR_BUSY, why);
	return true;
}

static kvw_status kvw_auth_refused(kvw_ep *ep, const char *why)
{
	kvw_authfail_note(ep);
	kvw_core_reject(ep, KVW_ERR_AUTH, why);
	return KVW_ERR_AUTH;
}

/* Server: our share, the session key, and the key confirmation for WELCOME. */
static kvw_status kvw_hello_auth(kvw_ep *ep, const struct kvw_wire_hello *h, struct kvw_wire_welcome *w)
{
	if (!(h->flags & KVW_HELLO_PAKE)) {
		kvw_core_reject(ep, KVW_ERR_AUTH, "the listener requires a shared secret: set config "
				"`secret` or `secret_file` on the connecting side");
		return KVW_ERR_AUTH;
	}
	if (kvw_auth_start(ep->secret, ep->auth_scalar, ep->nonce) != KVW_OK ||
	    kvw_auth_finish(ep->auth_scalar, h->nonce, h->nonce, ep->nonce, ep->sess_key) != KVW_OK)
		return kvw_auth_refused(ep, "authentication failed: the client's key share is invalid");
	sodium_memzero(ep->auth_scalar, sizeof(ep->auth_scalar));
	w->flags = KVW_WELCOME_AUTH;
	kvw_auth_mac(ep->sess_key, "kvw-S", h->nonce, ep->nonce, w->mac);
	return KVW_OK;
}

static kvw_status kvw_on_hello(kvw_ep *ep, const struct kvw_wire_hdr *hdr,
			       const struct kvw_wire_hello *h)
{
	struct kvw_wire_welcome w = {0};
	kvw_status st;

	if (!ep->is_server || ep->state != KVW_EP_HANDSHAKE || ep->session) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "HELLO out of place");
		return KVW_ERR_PROTO;
	}
	if (hdr->major != KVW_WIRE_MAJOR) {
		kvw_core_reject(ep, KVW_ERR_VERSION, "unsupported wire protocol major version: this side speaks 1");
		return KVW_ERR_VERSION;
	}
	if (h->flags & KVW_HELLO_JOIN)
		return kvw_on_join(ep, h);
	if (kvw_authfail_refuse(ep))
		return KVW_ERR_BUSY;
	ep->peer_major = hdr->major;
	ep->peer_minor = hdr->minor;
	ep->peer_caps = h->caps;
	memcpy(ep->peer_nonce, h->nonce, sizeof(ep->peer_nonce));
	if (h->rails < ep->rails)
		ep->rails = h->rails;
	if (ep->rails > ep->drv->caps.max_rails)
		ep->rails = ep->drv->caps.max_rails ? ep->drv->caps.max_rails : 1;
	if (ep->secret[0] && (st = kvw_hello_auth(ep, h, &w)) != KVW_OK)
		return st;
	randombytes_buf(&ep->session, sizeof(ep->session));
	w.caps = kvw_local_caps(ep);
	w.rails = ep->rails;
	w.ep_id = ep->id;
	w.session = ep->session;
	w.incarnation = ep->ctx->incarnation;
	ep->peer_incarnation = hdr->minor >= 4 ? h->session : 0;
	memcpy(w.nonce, ep->nonce, sizeof(w.nonce));
	/* a 1.3 client takes exactly 88 bytes */
	return kvw_ep_send(ep, KVW_T_WELCOME, &w, hdr->minor >= 4 ? sizeof(w) : KVW_WIRE_WELCOME_13);
}

/* Client: checks the server's key confirmation, makes our own for AUTH. */
static kvw_status kvw_welcome_auth(kvw_ep *ep, const struct kvw_wire_welcome *w, struct kvw_wire_auth *a)
{
	uint8_t mac[KVW_WIRE_MAC];

	if (!ep->secret[0]) {
		kvw_core_reject(ep, KVW_ERR_AUTH, "the server requires a shared secret: set config "
				"`secret` (KVW_SECRET, secret_file or ?secret= in the URI)");
		return KVW_ERR_AUTH;
	}
	if (kvw_auth_finish(ep->auth_scalar, w->nonce, ep->nonce, w->nonce, ep->sess_key) != KVW_OK) {
		kvw_core_reject(ep, KVW_ERR_AUTH, "the server's key share is invalid: is it a kvwire listener?");
		return KVW_ERR_AUTH;
	}
	sodium_memzero(ep->auth_scalar, sizeof(ep->auth_scalar));
	kvw_auth_mac(ep->sess_key, "kvw-S", ep->nonce, w->nonce, mac);
	if (sodium_memcmp(mac, w->mac, sizeof(mac)) != 0) {
		kvw_core_reject(ep, KVW_ERR_AUTH, "the server could not prove the shared secret: the two "
				"sides' `secret` values differ");
		return KVW_ERR_AUTH;
	}
	kvw_auth_mac(ep->sess_key, "kvw-C", w->nonce, ep->nonce, a->mac);
	ep->authenticated = true;
	return KVW_OK;
}

static kvw_status kvw_on_welcome(kvw_ep *ep, const struct kvw_wire_hdr *hdr, const void *body)
{
	struct kvw_wire_auth a = {.ep_id = ep->id};
	struct kvw_wire_welcome wb = {0}, *w = &wb;
	kvw_status st;

	memcpy(&wb, body, hdr->len < sizeof(wb) ? hdr->len : sizeof(wb)); /* 88 bytes from a 1.3 peer */

	if (ep->is_server || ep->state != KVW_EP_HANDSHAKE || ep->session) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "WELCOME out of place");
		return KVW_ERR_PROTO;
	}
	if (hdr->major != KVW_WIRE_MAJOR) {
		kvw_core_reject(ep, KVW_ERR_VERSION, "unsupported wire protocol major version: this side speaks 1");
		return KVW_ERR_VERSION;
	}
	ep->peer_major = hdr->major;
	ep->peer_minor = hdr->minor;
	ep->peer_caps = w->caps;
	ep->peer_id = w->ep_id;
	ep->session = w->session;
	ep->peer_incarnation = w->incarnation;
	memcpy(ep->peer_nonce, w->nonce, sizeof(ep->peer_nonce));
	if (w->rails < ep->rails)
		ep->rails = w->rails;
	if (ep->secret[0] && !(w->flags & KVW_WELCOME_AUTH)) {
		kvw_core_reject(ep, KVW_ERR_AUTH, "this side has a secret but the server does not "
				"authenticate: set the same `secret` on the listener");
		return KVW_ERR_AUTH;
	}
	if ((w->flags & KVW_WELCOME_AUTH) && (st = kvw_welcome_auth(ep, w, &a)) != KVW_OK)
		return st;
	return kvw_ep_send(ep, KVW_T_AUTH, &a, sizeof(a));
}

/* READY endpoints that nobody accepted yet, from this endpoint's listener. */
static unsigned kvw_unaccepted(const kvw_ep *ep)
{
	unsigned n = 0;

	for (const kvw_ep *e = ep->ctx->eps; e; e = e->next)
		n += e->listener == ep->listener && e->is_server && !e->accepted && !e->zombie &&
		     e->state == KVW_EP_READY;
	return n;
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
		kvw_auth_mac(ep->sess_key, "kvw-C", ep->nonce, ep->peer_nonce, mac);
		if (sodium_memcmp(mac, a->mac, sizeof(mac)) != 0)
			return kvw_auth_refused(ep, "authentication failed: the peers' `secret` values differ");
		ep->authenticated = true;
	}
	if (ep->listener && kvw_unaccepted(ep) >= ep->ctx->cfg.max_unaccepted) {
		kvw_core_reject(ep, KVW_ERR_BUSY, "the listener has max_unaccepted endpoints waiting for "
				"kvw_accept(): retry later");
		return KVW_ERR_BUSY;
	}
	ep->peer_id = a->ep_id;
	r.caps = kvw_local_caps(ep);
	ep->state = KVW_EP_READY;
	ep->t_ready = kvw_now_ns();
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
	ep->t_ready = kvw_now_ns();
	st = ep->rails > 1 ? ep->drv->ops->open_rails(ep) : KVW_OK;
	if (st != KVW_OK)
		kvw_ep_fail(ep, st, "could not open the extra rails");
	else
		kvw_epc_restarted(ep);
	return st;
}

/* The peer's reason, with bytes outside printable ASCII as \xNN: it may
 * reach a terminal and must not carry escape sequences there. */
static void kvw_reason_escape(const char *in, size_t inlen, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < inlen && in[i] && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = 0;
}

static kvw_status kvw_on_reject(kvw_ep *ep, const struct kvw_wire_reject *r)
{
	char why[160], reason[4 * sizeof(r->reason) + 1];
	kvw_status st = r->status < 0 && r->status >= KVW_ERR_CLOSED ? r->status : KVW_ERR_PROTO;

	kvw_reason_escape(r->reason, sizeof(r->reason), reason, sizeof(reason));
	snprintf(why, sizeof(why), "peer refused: %.130s", reason);
	kvw_set_err(ep->ctx, st, "%s", why);
	kvw_ep_fail(ep, st, why);
	return st;
}

/* ------------------------------------------------- listener admission */
struct kvw_pending_scan {
	unsigned total, of_addr;
	kvw_ep *silent, *silent_of_addr, *oldest_of_addr;
};

static void kvw_pending_scan(const kvw_ep *self, struct kvw_pending_scan *ps)
{
	memset(ps, 0, sizeof(*ps));
	for (kvw_ep *e = self->ctx->eps; e; e = e->next) { /* newest first: the last seen is oldest */
		bool same;
		if (e == self || e->listener != self->listener || !e->is_server || e->zombie ||
		    (e->state != KVW_EP_HANDSHAKE && e->state != KVW_EP_CONNECTING))
			continue;
		same = strcmp(e->peer_addr, self->peer_addr) == 0;
		ps->total++;
		ps->of_addr += same;
		if (e->cnt.frames_rx == 0)
			ps->silent = e;
		if (same && e->cnt.frames_rx == 0)
			ps->silent_of_addr = e;
		if (same)
			ps->oldest_of_addr = e;
	}
}

static unsigned kvw_handshake_cap(const kvw_ctx *ctx)
{
	struct rlimit rl;
	unsigned cap = ctx->cfg.max_handshakes;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < cap)
		cap = rl.rlim_cur / 4 > 0 ? (unsigned)(rl.rlim_cur / 4) : 1;
	return cap;
}

void kvw_core_ep_admit(kvw_ep *ep)
{
	struct kvw_pending_scan ps;
	kvw_ep *victim = NULL;

	if (!ep->listener)
		return;
	kvw_pending_scan(ep, &ps);
	if (ps.of_addr >= ep->ctx->cfg.max_handshakes_per_addr)
		victim = ps.silent_of_addr ? ps.silent_of_addr : ps.oldest_of_addr;
	else if (ps.total >= kvw_handshake_cap(ep->ctx))
		victim = ps.silent;
	if (victim)
		kvw_core_reject(victim, KVW_ERR_BUSY, "dropped: the listener is at its limit of connections "
				"in the handshake (max_handshakes[_per_addr])");
	else if (ps.of_addr >= ep->ctx->cfg.max_handshakes_per_addr || ps.total >= kvw_handshake_cap(ep->ctx)) {
		kvw_core_reject(ep, KVW_ERR_BUSY, "the listener is at its limit of connections in the "
				"handshake: retry later");
	}
}

/* ------------------------------------------------------------- dispatch */
static kvw_status kvw_on_ping(kvw_ep *ep, unsigned type, const struct kvw_wire_ping *p)
{
	if (type == KVW_T_PING) {
		ep->cnt.keepalives_rx++;
		return kvw_ep_send(ep, KVW_T_PONG, p, sizeof(*p));
	}
	if (p->cookie == ep->ping_cookie && p->cookie != ep->pong_cookie) { /* first answer only */
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
	if (ep->state != KVW_EP_READY && (h->type > KVW_T_REJECT || h->len > KVW_WIRE_MAX_PREAUTH)) {
		kvw_core_reject(ep, KVW_ERR_PROTO, "frame before the handshake finished: only HELLO, "
				"WELCOME, AUTH, READY and REJECT may come first");
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
	if (kvw_uri_param(u, "secret", v, sizeof(v)) && strcmp(v, "***") != 0) /* "***": redacted, keep config's */
		snprintf(secret, slen, "%s", v);
	sodium_memzero(v, sizeof(v));
	return KVW_OK;
}

kvw_status kvw_listen(kvw_ctx *ctx, const char *uri, kvw_listener **out)
{
	struct kvw_uri u;
	kvw_drv *d;
	kvw_listener *l;
	kvw_status st;

	if (!ctx || !out)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "kvw_listen: context and output pointer must not be NULL");
	kvw_err_clear(ctx);
	if ((st = kvw_uri_driver(ctx, uri, &u, &d)) != KVW_OK)
		return st;
	if (!(l = calloc(1, sizeof(*l))))
		return kvw_set_err(ctx, KVW_ERR_NOMEM, "kvw_listen: out of memory");
	l->ctx = ctx;
	l->drv = d;
	snprintf(l->uri, sizeof(l->uri), "%s", uri);
	st = kvw_uri_overrides(ctx, &u, true, &l->rails, l->secret, sizeof(l->secret));
	if (st == KVW_OK)
		st = d->ops->listen(d, l, &u);
	if (st != KVW_OK) {
		sodium_memzero(l->secret, sizeof(l->secret));
		free(l);
		return st;
	}
	{ /* the driver may have rewritten it (bound port): redact what it kept */
		char shown[sizeof(l->uri)];
		kvw_uri_redact(l->uri, shown, sizeof(shown));
		memcpy(l->uri, shown, sizeof(shown));
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
	sodium_memzero(l->secret, sizeof(l->secret));
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
		return kvw_set_err(l ? l->ctx : NULL, KVW_ERR_INVALID, "kvw_accept: listener and output "
				   "pointer must not be NULL");
	kvw_err_clear(l->ctx);
	end = kvw_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
	/* one already READY is taken without a progress pass: taking N peers of
	 * a handshake storm costs N passes over every endpoint otherwise */
	for (bool pass = false;; pass = true) {
		if (pass) {
			kvw_progress(l->ctx);
			kvw_ep_reap(l->ctx);
		}
		if ((ep = kvw_accept_ready(l))) {
			ep->accepted = true;
			*out = ep;
			return KVW_OK;
		}
		if (!pass)
			continue;
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
	uint8_t peer_key[16], uri_key[16];

	if (!ctx || !out)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "kvw_connect: context and output pointer must not be NULL");
	kvw_err_clear(ctx);
	if ((st = kvw_uri_driver(ctx, uri, &u, &d)) != KVW_OK)
		return st;
	kvw_epc_keys(ctx, uri, peer_key, uri_key);
	if ((ep = kvw_epc_take(ctx, uri_key))) { /* ep_cache: the live one, or its handshake */
		*out = ep;
		return KVW_OK;
	}
	if (!(ep = kvw_ep_alloc(ctx, d, uri)))
		return kvw_set_err(ctx, KVW_ERR_NOMEM, "kvw_connect: out of memory");
	memcpy(ep->peer_key, peer_key, sizeof(peer_key));
	memcpy(ep->uri_key, uri_key, sizeof(uri_key));
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
	kvw_epc_adopt(ep);
	*out = ep;
	return KVW_OK;
}

/* A kvw_connect that failed lets go of its endpoint: freed, unless other
 * callers share it (ep_cache), who see the failure on their own. */
static void kvw_connect_drop(kvw_ep *ep)
{
	if (ep->cached && ep->refs > 1) {
		ep->refs--;
		return;
	}
	kvw_ep_free(ep);
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
	if (!ep->cached || ep->refs == 1) /* a shared handshake keeps its first caller's limit */
		ep->hs_limit_ns = (uint64_t)timeout_ms * 1000000ull + 1; /* the call's, not the config's */
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
		kvw_connect_drop(ep);
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

	if (!ep || kvw_epc_release(ep)) /* ep_cache: others hold it, or it waits idle */
		return;
	if (ep->state == KVW_EP_READY)
		kvw_ep_send(ep, KVW_T_CLOSE, &c, sizeof(c));
	ep->state = KVW_EP_CLOSED;
	ep->fail_status = KVW_ERR_CLOSED;
	kvw_ep_free(ep);
}

kvw_status kvw_ep_query(const kvw_ep *ep, kvw_ep_info *info)
{
	kvw_ep_info in = {.size = sizeof(in)};

	if (!ep || !info)
		return kvw_set_err(ep ? ep->ctx : NULL, KVW_ERR_INVALID, "kvw_ep_query: endpoint and info "
				   "must not be NULL");
	kvw_err_clear(ep->ctx);
	snprintf(in.driver, sizeof(in.driver), "%s", ep->drv->ops->name);
	snprintf(in.peer_uri, sizeof(in.peer_uri), "%s", ep->uri);
	in.peer_version_major = ep->peer_major;
	in.peer_version_minor = ep->peer_minor;
	in.caps = kvw_local_caps(ep) & ep->peer_caps;
	in.rails = ep->rails;
	in.id = ep->id;
	in.authenticated = ep->authenticated;
	in.refs = ep->cached ? ep->refs : 1;
	in.peer_incarnation = ep->peer_incarnation;
	struct kvw_ep_res res = {0};
	kvw_ep_resources(ep, &res);
	in.res_fds = res.fds;
	in.res_qps = res.qps;
	in.res_bytes = res.bytes;
	return kvw_struct_out(ep->ctx, "kvw_ep_query", info, &in, sizeof(in));
}

kvw_status kvw_ep_counters(const kvw_ep *ep, kvw_counters *out)
{
	kvw_counters c;

	if (!ep || !out)
		return kvw_set_err(ep ? ep->ctx : NULL, KVW_ERR_INVALID, "kvw_ep_counters: endpoint and "
				   "output must not be NULL");
	kvw_err_clear(ep->ctx);
	c = ep->cnt;
	c.size = sizeof(c);
	c.rails = ep->rails;
	return kvw_struct_out(ep->ctx, "kvw_ep_counters", out, &c, sizeof(c));
}

/* fresh: a new cookie (kvw_ep_ping). A keepalive reuses the cookie of a
 * ping still unanswered, so a slow PONG still ends the kvw_ep_ping waiting
 * for it (it had been ignored, and that call timed out, when a keepalive
 * went out meanwhile: seen under 5 % loss). */
static kvw_status kvw_ep_send_ping(kvw_ep *ep, uint64_t now, bool fresh)
{
	struct kvw_wire_ping p = {.t_ns = now, .cookie = ep->ping_cookie};

	if (fresh || ep->pong_cookie == ep->ping_cookie)
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
		return kvw_set_err(ep ? ep->ctx : NULL, KVW_ERR_INVALID, "kvw_ep_ping: endpoint and rtt "
				   "pointer must not be NULL");
	kvw_err_clear(ep->ctx);
	if ((st = kvw_ep_status(ep)) != KVW_OK)
		return kvw_set_err(ep->ctx, st, "kvw_ep_ping: the endpoint is not usable: %s",
				   ep->fail_why[0] ? ep->fail_why : kvw_strerror(st));
	if ((st = kvw_ep_send_ping(ep, kvw_now_ns(), true)) != KVW_OK)
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

/* How long this side's handshake may take: the listener's own limit on
 * accepted connections, the caller's connect_timeout_ms on its own. */
static uint64_t kvw_ep_handshake_ns(const kvw_ep *ep)
{
	const struct kvw_cfgv *c = &ep->ctx->cfg;

	if (ep->hs_limit_ns)
		return ep->hs_limit_ns;
	return (uint64_t)(ep->is_server ? c->handshake_timeout_ms : c->connect_timeout_ms) * 1000000ull;
}

/* Keepalive and liveness; called every ~1 ms from kvw_progress. */
void kvw_ep_keepalive(kvw_ep *ep, uint64_t now)
{
	const struct kvw_cfgv *c = &ep->ctx->cfg;
	uint64_t idle = now > ep->last_rx_ns ? now - ep->last_rx_ns : 0, ka = (uint64_t)c->keepalive_ms * 1000000ull;
	char why[128];

	if (ep->state == KVW_EP_CONNECTING || ep->state == KVW_EP_HANDSHAKE) {
		if (now - ep->t_start <= kvw_ep_handshake_ns(ep))
			return;
		if (ep->is_server)
			kvw_core_reject(ep, KVW_ERR_TIMEDOUT, "handshake did not finish within the "
					"listener's handshake_timeout_ms");
		else
			kvw_ep_fail(ep, KVW_ERR_TIMEDOUT, "handshake did not finish within connect_timeout_ms");
		return;
	}
	if (ep->state != KVW_EP_READY || kvw_epc_expire(ep, now))
		return;
	if (ep->is_server && !ep->accepted && now - ep->t_ready > (uint64_t)c->accept_timeout_ms * 1000000ull) {
		struct kvw_wire_close cl = {.status = KVW_ERR_BUSY};
		kvw_ep_send(ep, KVW_T_CLOSE, &cl, sizeof(cl));
		kvw_ep_fail(ep, KVW_ERR_CLOSED, "nobody called kvw_accept() for it within accept_timeout_ms");
		return;
	}
	if (ep->last_check_ns && now - ep->last_check_ns > 2 * ka) {
		/* this process ran no progress for a while: the silence was ours,
		 * so the peer gets a full keepalive round from now to answer. Two
		 * rounds, not one: a wake on the keepalive timer itself comes a
		 * little after `ka` (ms rounding, scheduling), and taking that for
		 * our absence would keep a dead peer alive for ever. */
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
		kvw_ep_send_ping(ep, now, false);
}

void kvw_ctx_reap(kvw_ctx *ctx)
{
	kvw_ep_reap(ctx);
}

/* When the next keepalive, liveness or deadline check of ep is due. */
uint64_t kvw_ep_next_timer(const kvw_ep *ep)
{
	const struct kvw_cfgv *c = &ep->ctx->cfg;
	uint64_t t, idle;

	if (ep->state == KVW_EP_CONNECTING || ep->state == KVW_EP_HANDSHAKE)
		return ep->t_start + kvw_ep_handshake_ns(ep);
	if (ep->state != KVW_EP_READY)
		return UINT64_MAX;

	t = ep->last_rx_ns + (uint64_t)c->keepalive_ms * 1000000ull;
	if (ep->last_ping_ns + (uint64_t)c->keepalive_ms * 1000000ull > t)
		t = ep->last_ping_ns + (uint64_t)c->keepalive_ms * 1000000ull;
	if (ep->last_rx_ns + (uint64_t)c->peer_dead_ms * 1000000ull < t)
		t = ep->last_rx_ns + (uint64_t)c->peer_dead_ms * 1000000ull;
	if (ep->next_deadline_ns && ep->next_deadline_ns < t)
		t = ep->next_deadline_ns;
	if (ep->is_server && !ep->accepted && ep->t_ready + (uint64_t)c->accept_timeout_ms * 1000000ull < t)
		t = ep->t_ready + (uint64_t)c->accept_timeout_ms * 1000000ull;
	idle = kvw_epc_next_timer(ep);
	return idle < t ? idle : t;
}
