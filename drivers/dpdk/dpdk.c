/* SPDX-License-Identifier: MIT */
/* The dpdk driver: kvwire frames in UDP/IPv4 over DPDK ethdev queues, with
 * its own reliable delivery (dk_rel.c). URI: dpdk://IP:PORT[?eal=...&port=N
 * &queues=N&mtu=N&src=IP&rate=GBPS&csum=1]. See docs/drivers/dpdk.md. */
#include "dk.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <rte_ethdev.h>

__thread uint64_t dk_now_ns;

static struct dk_drv *dk_of(kvw_drv *d)
{
	return d->priv;
}

static kvw_status dk_open(kvw_drv *d)
{
	struct dk_drv *dd = calloc(1, sizeof(*dd));
	if (!dd)
		return kvw_set_err(d->ctx, KVW_ERR_NOMEM, "dpdk: out of memory");
	dd->d = d;
	dd->timer_fd = -1;
	d->priv = dd;
	/* The EAL comes up at the first listen/connect, so that a URI's eal=
	 * can win over config dpdk_eal (two roles of one host, e.g. a forked
	 * loopback server) and nothing of DPDK exists before a fork. */
	return KVW_OK;
}

static void dk_zombies_free(struct dk_drv *dd)
{
	for (uint32_t i = 0; i < dd->n_zombies; i++) {
		dk_flow_fini(dd->zombies[i]);
		free(dd->zombies[i]);
	}
	dd->n_zombies = 0;
}

static void dk_flow_unlink(struct dk_flow *f)
{
	struct dk_port *p = f->port;
	for (uint32_t i = 0; i < p->n_flows; i++)
		if (p->flows[i] == f) {
			memmove(&p->flows[i], &p->flows[i + 1], (p->n_flows - i - 1) * sizeof(f));
			p->n_flows--;
			return;
		}
}

/* Out of the port's table; freed by its owner's next progress pass. A
 * flow whose external buffers the PMD still holds is leaked instead (their
 * free callback points at it). */
static void dk_flow_bury(struct dk_flow *f)
{
	struct dk_drv *dd = f->dd;
	dk_flow_unlink(f);
	if (f->outstanding_ext) {
		kvw_log(f->ctx, 1, "dpdk: %u tx buffers still held by the PMD at close; "
			"leaking the flow state", f->outstanding_ext);
		return;
	}
	if (dd->n_zombies >= DK_MAX_FLOWS)
		dk_zombies_free(dd);
	dd->zombies[dd->n_zombies++] = f;
}

/* Flows of closed endpoints off the port, waiting for their external
 * buffers: freed once the PMD gave all back or their dpdk_cancel_ms passed
 * (then leaked, with the log line of dk_flow_bury). Never waits. */
static void dk_burying_tick(struct dk_drv *dd, uint64_t now)
{
	for (uint32_t i = 0; i < dd->n_burying;) {
		struct dk_flow *f = dd->burying[i];
		if (f->outstanding_ext)
			dk_tx_cleanup(f);
		if (f->outstanding_ext && now < f->bury_end_ns) {
			i++;
			continue;
		}
		dd->burying[i] = dd->burying[--dd->n_burying];
		dk_flow_bury(f);
	}
}

/* Context going away: its closing flows get one last send, then go; flows
 * still waiting for their buffers get a bounded wait (not inside progress). */
static void dk_closing_free(struct dk_drv *dd)
{
	if (dd->n_burying) {
		uint64_t end = kvw_now_ns() + dk_cancel_ns(dd->burying[0]);
		for (uint32_t i = 0; i < dd->n_burying; i++) {
			uint64_t now = kvw_now_ns();
			dk_tx_drain_ext(dd->burying[i], now < end ? end - now : 0);
		}
		dk_burying_tick(dd, UINT64_MAX);
	}
	for (unsigned i = 0; i < RTE_MAX_ETHPORTS; i++) {
		struct dk_port *p = dd->ports[i];
		for (uint32_t j = 0; p && j < p->n_flows;) {
			struct dk_flow *f = p->flows[j];
			if (!f->closing || f->dd != dd) {
				j++;
				continue;
			}
			dk_rel_push(f, kvw_now_ns());
			dk_tx_drain_ext(f, 0);
			dk_flow_bury(f);
		}
	}
	dk_zombies_free(dd);
}

static void dk_close(kvw_drv *d)
{
	struct dk_drv *dd = dk_of(d);
	if (!dd)
		return;
	dk_closing_free(dd);
	dk_port_put_all(dd);
	if (dd->timer_fd >= 0) {
		kvw_core_unwatch_fd(d->ctx, dd->timer_fd);
		close(dd->timer_fd);
	}
	free(dd);
	d->priv = NULL;
}

static kvw_status dk_query_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	(void)d;
	ci->caps = KVW_CAP_ZERO_COPY_TX | KVW_CAP_RELIABLE_SW;
	ci->max_rails = 1;
	ci->max_frag = 256u << 10;
	ci->poll_us = 50; /* busy-polled: nothing but time wakes it */
	return KVW_OK;
}

static kvw_status dk_mem_reg(kvw_drv *d, kvw_mem *m)
{
	return dk_mem_register(d, m);
}

static void dk_mem_dereg(kvw_drv *d, kvw_mem *m)
{
	dk_mem_unregister(d, m);
}

/* A busy-polled driver has no fd that wakes on packets: a 50 us periodic
 * timer keeps kvw_ctx_wait() from sleeping past them. */
static void dk_timer_arm(struct dk_drv *dd)
{
	if (dd->timer_fd >= 0)
		return;
	dd->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (dd->timer_fd < 0)
		return;
	struct itimerspec its = { .it_interval = { 0, 50000 }, .it_value = { 0, 50000 } };
	timerfd_settime(dd->timer_fd, 0, &its, NULL);
	kvw_core_watch_fd(dd->d->ctx, dd->timer_fd, false);
}

/* Link state once a pass. memif unmaps its rings from its control thread
 * when the peer goes away, so no burst is tried while the link is down
 * (this narrows, it cannot close, that race inside the PMD). */
static void dk_port_link(struct dk_port *p)
{
	struct rte_eth_link link = { 0 };

	rte_eth_link_get_nowait(p->port_id, &link);
	p->link_up = link.link_status != 0;
}

static void dk_progress_flows(struct dk_port *p, uint64_t now)
{
	struct dk_flow *snap[DK_MAX_FLOWS];
	uint32_t n = p->n_flows;

	memcpy(snap, p->flows, n * sizeof(*snap));
	for (uint32_t i = 0; i < n; i++) {
		struct dk_flow *f = snap[i];
		if (f->closing) {
			if (dk_rel_close_tick(f, now)) {
				dk_tx_drain_ext(f, 0); /* frames the fault injector still holds */
				dk_flow_bury(f);
			}
			continue;
		}
		dk_rel_cancel_poll(f, now); /* cancels waiting for their buffers */
		if (f->dead)
			continue;
		if (!f->up_reported) {
			if (!p->link_up)
				continue;
			f->up_reported = true;
			kvw_core_ep_up(f->ep);
			if (f->dead)
				continue;
		}
		dk_rel_tick(f, now);
	}
}

static kvw_status dk_progress(kvw_drv *d)
{
	struct dk_drv *dd = dk_of(d);
	uint64_t tick;

	if (!dd)
		return KVW_OK;
	dk_now_ns = kvw_now_ns();
	/* clear the wake-up timer now and then, not on every call (a syscall) */
	if (dd->timer_fd >= 0 && dk_now_ns - dd->timer_cleared_ns > 1000000ull) {
		dd->timer_cleared_ns = dk_now_ns;
		if (read(dd->timer_fd, &tick, sizeof(tick)) < 0) {
			/* EAGAIN: nothing to clear */
		}
	}
	for (unsigned i = 0; i < RTE_MAX_ETHPORTS; i++) {
		struct dk_port *p = dd->ports[i];
		if (!p)
			continue;
		dk_port_link(p);
		if (p->link_up)
			dk_rx_port(dd, p);
		dk_progress_flows(p, dk_now_ns);
	}
	if (dd->n_burying)
		dk_burying_tick(dd, dk_now_ns);
	dk_zombies_free(dd);
	return KVW_OK;
}

/* End of a kvw_progress pass: frames the core queued during it (fragments
 * from the sequence pump, control frames) leave now, not a pass later. */
static void dk_flush(kvw_drv *d)
{
	struct dk_drv *dd = dk_of(d);

	if (!dd)
		return;
	for (unsigned i = 0; i < RTE_MAX_ETHPORTS; i++) {
		struct dk_port *p = dd->ports[i];
		if (!p)
			continue;
		for (uint32_t j = 0; j < p->n_flows; j++) {
			struct dk_flow *f = p->flows[j];
			if (!f->dead && !f->closing && f->up_reported && !kvw_core_ep_failed(f->ep))
				dk_rel_push(f, dk_now_ns);
		}
	}
}

/* ------------------------------------------------------------ connections */
static kvw_status dk_bring_up(struct dk_drv *dd, const struct kvw_uri *u, bool client, struct dk_port **p)
{
	kvw_drv *d = dd->d;
	char eal[512];
	const char *args = kvw_uri_param(u, "eal", eal, sizeof(eal)) ? eal : kvw_core_cfg(d->ctx)->dpdk_eal;
	kvw_status st = dk_eal_ensure(d, args);
	if (st != KVW_OK)
		return st;
	dk_mem_late(d);
	st = dk_port_get(dd, u, client, p);
	if (st == KVW_OK)
		dk_timer_arm(dd);
	return st;
}

static uint64_t dk_pace(const struct kvw_uri *u)
{
	char v[32];
	if (!kvw_uri_param(u, "rate", v, sizeof(v)))
		return 0;
	double g = strtod(v, NULL);
	return g > 0 ? (uint64_t)(8000.0 / g) : 0; /* ns per byte, x1000 */
}

static uint32_t dk_uri_u32(const struct kvw_uri *u, const char *key)
{
	char v[16];
	return kvw_uri_param(u, key, v, sizeof(v)) ? (uint32_t)strtoul(v, NULL, 0) : 0;
}

static bool dk_uri_flag(const struct kvw_uri *u, const char *key)
{
	char v[8];
	return kvw_uri_param(u, key, v, sizeof(v)) && v[0] == '1';
}

static struct dk_flow *dk_flow_new(struct dk_drv *dd, struct dk_port *p, kvw_ep *ep,
				   uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
				   uint32_t inflight, bool client)
{
	struct dk_flow *f;
	if (p->n_flows >= DK_MAX_FLOWS) {
		kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_NOMEM, "dpdk: more than %u endpoints on port %u",
			    DK_MAX_FLOWS, p->port_id);
		return NULL;
	}
	if (!(f = calloc(1, sizeof(*f)))) {
		kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_NOMEM, "dpdk: out of memory");
		return NULL;
	}
	f->port = p;
	f->dd = dd;
	f->lip = lip;
	f->lport = lport;
	f->rip = rip;
	f->rport = rport;
	f->mtu_payload = p->mtu_payload;
	f->max_inflight = inflight ? inflight : DK_INFLIGHT;
	f->cksum = p->jumbo_cksum;
	f->is_client = client;
	if (dk_flow_init(f, ep) != KVW_OK) {
		dk_flow_fini(f);
		free(f);
		return NULL;
	}
	p->flows[p->n_flows++] = f;
	kvw_core_ep_set_priv(ep, f);
	return f;
}

#define DK_LIS_PORTS 4u

struct dk_lref {
	struct dk_port *ps[DK_LIS_PORTS]; /* every port the listener answers on */
	uint32_t n_ps;
	uint64_t pace;
	uint32_t inflight;
	bool cksum;
};

/* The bound URI: the real port, and the query without eal= (EAL arguments
 * belong to this process, not to the address a peer connects to). */
static void dk_lis_uri(kvw_listener *l, const struct kvw_uri *u, uint16_t port)
{
	char q[sizeof(u->query)] = "", tmp[sizeof(u->host) + sizeof(u->query) + 32];
	size_t ql = 0;

	for (const char *p = u->query; *p;) {
		const char *amp = strchr(p, '&');
		size_t seg = amp ? (size_t)(amp - p) : strlen(p);
		if (strncmp(p, "eal=", 4) != 0 && ql + seg + 2 < sizeof(q)) {
			if (ql)
				q[ql++] = '&';
			memcpy(q + ql, p, seg);
			ql += seg;
			q[ql] = 0;
		}
		p += seg + (amp ? 1 : 0);
	}
	int n = snprintf(tmp, sizeof(tmp), "dpdk://%s:%u%s%s", u->host, port, ql ? "?" : "", q);
	if (n <= 0 || !kvw_core_listener_set_uri(l, tmp)) {
		snprintf(tmp, sizeof(tmp), "dpdk://%.64s:%u", u->host, port);
		kvw_core_listener_set_uri(l, tmp);
	}
}

/* ?port=N or a list ?port=0,2: the ports a listener answers on (one
 * process holding several links, e.g. memif to its own clients and to a
 * forked peer). Returns how many, at least 1. */
static uint32_t dk_lis_ports(const struct kvw_uri *u, unsigned *ids)
{
	char v[64];
	uint32_t n = 0;

	if (!kvw_uri_param(u, "port", v, sizeof(v)))
		v[0] = 0;
	for (char *save = NULL, *t = strtok_r(v, ",", &save); t && n < DK_LIS_PORTS;
	     t = strtok_r(NULL, ",", &save))
		ids[n++] = (unsigned)strtoul(t, NULL, 0);
	if (!n)
		ids[n++] = 0;
	return n;
}

static bool dk_lport_free(const struct dk_lref *lr, uint16_t port)
{
	for (uint32_t k = 0; k < lr->n_ps; k++)
		for (uint32_t i = 0; i < lr->ps[k]->n_lis; i++)
			if (lr->ps[k]->lis[i].lport == port)
				return false;
	return true;
}

static kvw_status dk_lis_bind(struct dk_drv *dd, struct dk_lref *lr, kvw_listener *l,
			      const struct kvw_uri *u, uint32_t ip)
{
	kvw_drv *d = dd->d;
	unsigned ids[DK_LIS_PORTS];
	uint32_t n = dk_lis_ports(u, ids);
	kvw_status st;

	for (uint32_t k = 0; k < n; k++) {
		if ((st = dk_port_get_id(dd, ids[k], u, &lr->ps[lr->n_ps])) != KVW_OK)
			return st;
		if (lr->ps[lr->n_ps]->n_lis >= DK_MAX_LISTENERS)
			return kvw_set_err(d->ctx, KVW_ERR_BUSY, "dpdk: too many listeners on port %u", ids[k]);
		lr->n_ps++;
	}
	uint16_t port = (uint16_t)u->port;
	if (!port)
		port = lr->ps[0]->next_eport++;
	if (!dk_lport_free(lr, port))
		return kvw_set_err(d->ctx, KVW_ERR_BUSY, "dpdk: UDP port %u already has a listener", port);
	struct dk_listener dl = { .l = l, .lip = ip, .lport = port };
	dk_cookie_key(&dl);
	for (uint32_t k = 0; k < lr->n_ps; k++) {
		struct dk_port *p = lr->ps[k];
		p->lis[p->n_lis++] = dl;
	}
	dk_lis_uri(l, u, port);
	return KVW_OK;
}

static kvw_status dk_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u)
{
	struct dk_drv *dd = dk_of(d);
	struct dk_port *p;
	bool ok;
	uint32_t ip = dk_ip_parse(u->host, &ok);

	if (!ok)
		return kvw_set_err(d->ctx, KVW_ERR_INVALID, "dpdk: \"%s\" is not an IPv4 address "
				   "(dpdk://10.0.0.1:7000)", u->host);
	kvw_status st = dk_bring_up(dd, u, false, &p);
	if (st != KVW_OK)
		return st;
	struct dk_lref *lr = calloc(1, sizeof(*lr));
	if (!lr)
		return kvw_set_err(d->ctx, KVW_ERR_NOMEM, "dpdk: out of memory");
	lr->pace = dk_pace(u);
	lr->cksum = dk_uri_flag(u, "csum");
	lr->inflight = dk_uri_u32(u, "inflight");
	if ((st = dk_lis_bind(dd, lr, l, u, ip)) != KVW_OK) {
		free(lr);
		return st;
	}
	kvw_core_listener_set_priv(l, lr);
	return KVW_OK;
}

static void dk_listener_close(kvw_listener *l)
{
	struct dk_lref *lr = kvw_core_listener_priv(l);
	if (!lr)
		return;
	for (uint32_t k = 0; k < lr->n_ps; k++) {
		struct dk_port *p = lr->ps[k];
		for (uint32_t i = 0; i < p->n_lis; i++)
			if (p->lis[i].l == l) {
				p->lis[i] = p->lis[--p->n_lis];
				break;
			}
	}
	free(lr);
	kvw_core_listener_set_priv(l, NULL);
}

struct dk_flow *dk_flow_accept(struct dk_drv *dd, struct dk_port *p, struct dk_listener *dl,
			       const struct rte_ether_addr *smac, uint32_t sip, uint16_t sport,
			       const struct kvw_wire_hdr *hello)
{
	struct dk_lref *lr = kvw_core_listener_priv(dl->l);
	char addr[INET_ADDRSTRLEN] = "";

	inet_ntop(AF_INET, &sip, addr, sizeof(addr)); /* per-address limits and backoff */
	kvw_ep *ep = kvw_core_ep_accepted_from(dl->l, addr);
	if (!ep)
		return NULL;
	struct dk_flow *f = dk_flow_new(dd, p, ep, dl->lip, dl->lport, sip, sport, lr->inflight, false);
	if (!f) {
		kvw_ep_fail(ep, KVW_ERR_NOMEM, "dpdk: cannot set up the flow of an accepted peer");
		return NULL;
	}
	f->pace_ns_per_byte_x1k = lr->pace;
	f->cksum |= lr->cksum;
	rte_ether_addr_copy(smac, &f->rmac);
	f->mac_known = true;
	f->up_reported = true;
	f->rcid = hello->ep_id;
	f->peer_isn = f->rcv_nxt = f->rcv_high = hello->psn;
	f->peer_gcm = (hello->flags & DK_F_AESGCM) != 0;
	f->peer_known = true;
	kvw_core_ep_admit(ep); /* the listener's handshake limits; over them a REJECT is queued */
	return f;
}

static kvw_status dk_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u)
{
	struct dk_drv *dd = dk_of(d);
	struct dk_port *p;
	char src[64];
	bool ok;
	uint32_t rip = dk_ip_parse(u->host, &ok);

	if (!ok || !u->port || u->port > 65535)
		return kvw_set_err(d->ctx, KVW_ERR_INVALID, "dpdk: connect needs dpdk://IPv4:PORT, got host "
				   "\"%s\" port %u", u->host, u->port);
	kvw_status st = dk_bring_up(dd, u, true, &p);
	if (st != KVW_OK)
		return st;
	uint32_t lip = rip ^ htonl(1); /* point-to-point default; ?src=IP sets it */
	if (kvw_uri_param(u, "src", src, sizeof(src))) {
		lip = dk_ip_parse(src, &ok);
		if (!ok)
			return kvw_set_err(d->ctx, KVW_ERR_INVALID, "dpdk: src=%s is not an IPv4 address", src);
	}
	struct dk_flow *f = dk_flow_new(dd, p, ep, lip, p->next_eport++, rip, (uint16_t)u->port,
					  dk_uri_u32(u, "inflight"), true);
	if (!f)
		return KVW_ERR_NOMEM;
	f->pace_ns_per_byte_x1k = dk_pace(u);
	f->cksum |= dk_uri_flag(u, "csum");
	return KVW_OK;
}

/* The peer may wait for our ack of its last frame (its CLOSE): send it
 * now, the flow may be gone before the next pass. */
static void dk_ep_close_ack(struct dk_flow *f)
{
	struct rte_mbuf *out[1];
	unsigned k = 0;

	if (f->up_reported && !f->dead && f->mac_known && (f->ack_now || f->ack_pending)) {
		dk_tx_ack(f, out, &k);
		dk_tx_burst(f, out, k);
	}
}

/* A READY endpoint closes with its CLOSE queued: the flow stays on the port,
 * closing, until the peer acknowledged it (dk_rel_close). Otherwise it goes
 * at the end of the progress pass. */
static void dk_ep_close(kvw_ep *ep)
{
	struct dk_flow *f = kvw_core_ep_priv(ep);
	if (!f)
		return;
	bool finish = f->up_reported && !f->dead && !kvw_core_ep_failed(ep);

	dk_now_ns = kvw_now_ns();
	dk_ep_close_ack(f);
	if (!finish && f->up_reported && !f->dead && f->mac_known)
		dk_rel_push(f, dk_now_ns); /* e.g. a REJECT: one try, the endpoint failed */
	kvw_core_ep_set_priv(ep, NULL);
	if (finish && dk_rel_close(f, dk_now_ns))
		return;
	f->dead = true;
	dk_rel_void(f, NULL);
	dk_rel_cancel_forget(f);
	dk_tx_fault_flush(f);
	/* the PMD may still hold buffers over the senders' pages: an
	 * application's call waits for them (bounded) as before; inside
	 * kvw_progress (kvw_ep_reap of a failed endpoint) nothing waits, the
	 * flow leaves the port and progress frees it once they are back */
	if (f->outstanding_ext && !kvw_core_batching(f->ctx))
		dk_tx_drain_ext(f, dk_cancel_ns(f));
	if (f->outstanding_ext && f->dd->n_burying < DK_MAX_FLOWS) {
		dk_flow_unlink(f);
		f->ep = NULL;
		f->cnt = &f->cnt_closed;
		f->bury_end_ns = dk_now_ns + dk_cancel_ns(f);
		f->dd->burying[f->dd->n_burying++] = f;
		return;
	}
	dk_flow_bury(f);
}

static kvw_status dk_send_ctrl(kvw_ep *ep, const void *frame, size_t len)
{
	dk_now_ns = kvw_now_ns();
	struct dk_flow *f = kvw_core_ep_priv(ep);
	if (!f || f->dead)
		return KVW_ERR_CLOSED;
	return dk_rel_queue_ctrl(f, frame, len);
}

static size_t dk_post_frags(kvw_ep *ep, const kvw_frag *fr, size_t n)
{
	struct dk_flow *f = kvw_core_ep_priv(ep);
	if (!f || f->dead)
		return 0;
	return dk_rel_queue_frags(f, fr, n);
}

/* Never waits inside kvw_progress: KVW_INPROGRESS while the PMD holds
 * buffers over req's pages, then kvw_core_cancel_done (dk_rel_cancel). */
static kvw_status dk_cancel(kvw_ep *ep, kvw_req *req)
{
	struct dk_flow *f = kvw_core_ep_priv(ep);
	return f ? dk_rel_cancel(f, req) : KVW_OK;
}

/* A flow holds no fd and no QP: its send ring, request records and their
 * index, the receive window (bits, and control packets held out of
 * order), the reassembly buffer and the authenticator. The ring and the
 * records are mapped, touched as used: these are the bytes reserved. */
static void dk_ep_resources(const kvw_ep *ep, struct kvw_ep_res *r)
{
	const struct dk_flow *f = kvw_core_ep_priv(ep);

	if (!f)
		return;
	r->bytes += sizeof(*f) + (uint64_t)DK_RING * sizeof(*f->ring) +
		    (uint64_t)DK_OWNERS * sizeof(*f->own) + (uint64_t)DK_OWN_HASH * sizeof(*f->own_hash) +
		    DK_RWIN / 8 + (f->held ? (uint64_t)DK_RWIN * sizeof(*f->held) + f->held_bytes : 0) +
		    f->reasm_cap + dk_mac_bytes(f);
}

const struct kvw_driver_ops kvw_dpdk_ops = {
	.name = "dpdk",
	.open = dk_open,
	.close = dk_close,
	.query_caps = dk_query_caps,
	.mem_reg = dk_mem_reg,
	.mem_dereg = dk_mem_dereg,
	.progress = dk_progress,
	.listen = dk_listen,
	.listener_close = dk_listener_close,
	.connect = dk_connect,
	.ep_close = dk_ep_close,
	.ep_resources = dk_ep_resources,
	.send_ctrl = dk_send_ctrl,
	.post_frags = dk_post_frags,
	.cancel = dk_cancel,
	.flush = dk_flush,
	.cfg_opts = dk_cfg_opts,
	.probe = dk_probe,
};
