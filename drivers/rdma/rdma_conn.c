/* SPDX-License-Identifier: MIT */
/* RDMA driver: rdma_cm connections, QP state machine, rails. The QP is
 * ours (not rdma_create_qp), moved INIT -> RTR -> RTS by hand so that the
 * retry settings are exact and a failed transition can say why. */
#include "rdma_int.h"
#include "fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *rd_mtu_str(enum ibv_mtu m)
{
	switch (m) {
	case IBV_MTU_256: return "256";
	case IBV_MTU_512: return "512";
	case IBV_MTU_1024: return "1024";
	case IBV_MTU_2048: return "2048";
	case IBV_MTU_4096: return "4096";
	default: return "?";
	}
}

/* ------------------------------------------------------------ rails */
static struct rd_rail *rd_rail_new(struct rd_drv *rd, struct rd_ep *rep, kvw_ep *ep, uint32_t idx)
{
	struct rd_rail *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->rd = rd;
	r->rep = rep;
	r->ep = ep;
	r->idx = idx;
	r->state = RD_R_CONNECTING;
	r->dev_idx = -1;
	r->next_all = rd->rails;
	rd->rails = r;
	return r;
}

/* Frees what a rail holds (unlinked from rd->rails already). */
static void rd_rail_destroy(struct rd_rail *r)
{
	struct rd_drv *rd = r->rd;

	if (r->id && r->cm_established)
		rdma_disconnect(r->id);
	if (r->qp)
		ibv_destroy_qp(r->qp);
	if (r->scq)
		ibv_destroy_cq(r->scq);
	if (r->rcq)
		ibv_destroy_cq(r->rcq);
	if (r->cc) {
		if (!r->lingering)
			kvw_core_unwatch_fd(rd->d->ctx, r->cc->fd);
		ibv_destroy_comp_channel(r->cc);
	}
	kvw_fault_destroy(r->fault);
	if (r->rmr)
		ibv_dereg_mr(r->rmr);
	if (r->smr)
		ibv_dereg_mr(r->smr);
	if (r->id)
		rdma_destroy_id(r->id);
	free(r->rbuf);
	free(r->sbuf);
	free(r->cum_bytes);
	free(r->txq);
	free(r->txq_due);
	free(r->rx);
	free(r);
}

#define RD_LINGER_NS 50000000ull /* how long a closed rail's last sends may take */

/* A closed rail whose last sends (CLOSE, REJECT) are still on the wire
 * lingers, detached from its endpoint, until they completed or
 * RD_LINGER_NS passed (rd_lingering_progress): nothing waits at close. */
static void rd_rail_linger(struct rd_rail *r)
{
	struct rd_drv *rd = r->rd;

	r->ep = NULL;
	r->rep = NULL;
	r->lingering = true;
	r->linger_until = kvw_now_ns() + RD_LINGER_NS;
	if (r->cc)
		kvw_core_unwatch_fd(rd->d->ctx, r->cc->fd);
	r->next_all = rd->lingering;
	rd->lingering = r;
}

/* From progress (wait false: one look at each send CQ) or at context close
 * (wait true: up to what is left of RD_LINGER_NS, outside any pass). */
void rd_lingering_progress(struct rd_drv *rd, bool wait)
{
	for (struct rd_rail **pp = &rd->lingering; *pp;) {
		struct rd_rail *r = *pp;
		uint64_t now = kvw_now_ns();
		if (wait && now < r->linger_until)
			rd_drain_sends(r, r->linger_until - now);
		else
			rd_poll_sends(r);
		if (r->state == RD_R_UP && r->wr_done < r->wr_posted && kvw_now_ns() < r->linger_until) {
			pp = &r->next_all;
			continue;
		}
		*pp = r->next_all;
		rd_rail_destroy(r);
	}
}

void rd_rail_free(struct rd_rail *r)
{
	struct rd_drv *rd = r->rd;

	for (struct rd_rail **pp = &rd->rails; *pp; pp = &(*pp)->next_all)
		if (*pp == r) {
			*pp = r->next_all;
			break;
		}
	if (r->qp && r->state == RD_R_UP && r->txq_len) {
		if (r->txq_due) /* fault holds: the link would deliver them later, it closes now */
			memset(r->txq_due, 0, r->txq_n * sizeof(*r->txq_due));
		rd_flush_all(rd->d); /* queued in this pass: a last CLOSE/REJECT */
	}
	if (r->qp && r->state == RD_R_UP && rd_poll_sends(r) >= 0 && r->wr_done < r->wr_posted) {
		rd_rail_linger(r); /* let a last CLOSE/REJECT go out */
		return;
	}
	rd_rail_destroy(r);
}

/* Says which of port state, MTU, GID index or path broke a transition. */
static void rd_diag_rtr(struct rd_rail *r, const struct ibv_qp_attr *a, int err, char *out, size_t n)
{
	struct rd_dev *dv = r->dev;
	struct ibv_port_attr pa;
	union ibv_gid g;
	static const uint8_t zero[16];
	int sgid = a->ah_attr.grh.sgid_index;

	if (ibv_query_port(dv->verbs, dv->port, &pa) == 0 && pa.state != IBV_PORT_ACTIVE) {
		snprintf(out, n, "rdma: modify QP to RTR failed (%s): port state: %s port %u is %s, not "
			 "ACTIVE; check the link (`ibv_devinfo -d %s`, `rdma link`)", strerror(err),
			 dv->name, dv->port, ibv_port_state_str(pa.state), dv->name);
	} else if (a->path_mtu > pa.active_mtu) {
		snprintf(out, n, "rdma: modify QP to RTR failed (%s): MTU: path MTU %s exceeds %s's active "
			 "MTU %s; set the same netdev MTU on both hosts (RoCE MTU = netdev MTU rounded "
			 "down, 9000 -> 4096)", strerror(err), rd_mtu_str(a->path_mtu), dv->name,
			 rd_mtu_str(pa.active_mtu));
	} else if (ibv_query_gid(dv->verbs, dv->port, sgid, &g) || !memcmp(g.raw, zero, 16)) {
		snprintf(out, n, "rdma: modify QP to RTR failed (%s): GID index: %d is empty on %s port %u; "
			 "check `ibv_devinfo -v -d %s` (GID table) and config rdma_gid", strerror(err),
			 sgid, dv->name, dv->port, dv->name);
	} else if (!memcmp(a->ah_attr.grh.dgid.raw, zero, 16) || !a->dest_qp_num) {
		snprintf(out, n, "rdma: modify QP to RTR failed (%s): path: no destination GID/QP from "
			 "rdma_cm; check the route to the peer (`ip route get PEER_IP`) and that both "
			 "sides use RoCE v2 IPv4 GIDs", strerror(err));
	} else {
		snprintf(out, n, "rdma: modify QP to RTR failed (%s): port ACTIVE, MTU %s <= %s, GID index %d "
			 "valid; check the path (peer GID, VLAN, `ip route get PEER_IP`)", strerror(err),
			 rd_mtu_str(a->path_mtu), rd_mtu_str(pa.active_mtu), sgid);
	}
}

static kvw_status rd_qp_modify(struct rd_rail *r, enum ibv_qp_state to)
{
	const struct kvw_cfgv *c = kvw_core_cfg(r->rd->d->ctx);
	struct ibv_qp_attr a;
	int mask = 0, e;
	char why[400];

	memset(&a, 0, sizeof(a));
	a.qp_state = to;
	if (rdma_init_qp_attr(r->id, &a, &mask)) {
		snprintf(why, sizeof(why), "rdma: rdma_init_qp_attr(%s): %s: the rdma_cm path is gone",
			 ibv_wc_status_str(0), strerror(errno));
		rd_rail_fail(r, KVW_ERR_PEER_DEAD, why);
		return KVW_ERR_PEER_DEAD;
	}
	if (to == IBV_QPS_INIT)
		a.qp_access_flags = 0; /* no remote access before the handshake (rd_rail_open_writes) */
	if (to == IBV_QPS_RTR) {
		a.min_rnr_timer = RD_MIN_RNR_TIMER;
		if (a.path_mtu > r->dev->active_mtu)
			a.path_mtu = r->dev->active_mtu;
	}
	if (to == IBV_QPS_RTS) {
		a.timeout = RD_ACK_TIMEOUT;
		a.retry_cnt = c->rdma_retry > 6 ? 6 : c->rdma_retry; /* rxe: 7 = forever */
		a.rnr_retry = RD_RNR_RETRY;
		mask |= IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY;
	}
	if ((e = ibv_modify_qp(r->qp, &a, mask)) == 0)
		return KVW_OK;
	if (to == IBV_QPS_RTR)
		rd_diag_rtr(r, &a, e, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "rdma: modify QP to %s failed: %s (device %s port %u)",
			 to == IBV_QPS_INIT ? "INIT" : "RTS", strerror(e), r->dev->name, r->dev->port);
	kvw_set_err(r->rd->d->ctx, KVW_ERR_IO, "%s", why);
	rd_rail_fail(r, KVW_ERR_IO, why);
	return KVW_ERR_IO;
}

/* The kvwire handshake authenticated the peer (its endpoint is READY, or
 * this rail joined one with a valid proof): from now on the QP takes RDMA
 * WRITEs (RTS -> RTS, access flags only). Until then a write to it, with
 * any key, is refused by the NIC (issue 17, finding 8): an rdma_cm
 * connection that never says HELLO cannot reach a grant. */
kvw_status rd_rail_open_writes(struct rd_rail *r)
{
	struct ibv_qp_attr a = {.qp_access_flags = IBV_ACCESS_REMOTE_WRITE};
	char why[200];
	int e;

	if (r->writes_open || r->state != RD_R_UP || !r->qp)
		return KVW_OK;
	if ((e = ibv_modify_qp(r->qp, &a, IBV_QP_ACCESS_FLAGS)) != 0) {
		snprintf(why, sizeof(why), "rdma: enabling remote writes on rail %u's QP after the "
			 "handshake failed: %s (device %s)", r->idx, strerror(e), r->dev->name);
		rd_rail_fail(r, KVW_ERR_IO, why);
		return KVW_ERR_IO;
	}
	r->writes_open = true;
	return KVW_OK;
}

/* CQs, QP, buffers on the device rdma_cm picked; QP left in INIT. */
static kvw_status rd_rail_setup(struct rd_rail *r)
{
	const struct kvw_cfgv *c = kvw_core_cfg(r->rd->d->ctx);
	struct ibv_qp_init_attr qa;
	char why[200];

	r->dev_idx = rd_dev_index(r->rd, r->id->verbs);
	if (r->dev_idx < 0) {
		snprintf(why, sizeof(why), "rdma: rdma_cm routed rail %u to device %s, which has no "
			 "active port with an IPv4 RoCE v2 GID (or is not config rdma_dev)", r->idx,
			 ibv_get_device_name(r->id->verbs->device));
		rd_rail_fail(r, KVW_ERR_NOT_FOUND, why);
		return KVW_ERR_NOT_FOUND;
	}
	r->dev = &r->rd->dev[r->dev_idx];
	r->sq_depth = c->rdma_qp_depth;
	r->cc = ibv_create_comp_channel(r->id->verbs);
	if (r->cc) {
		int fl = fcntl(r->cc->fd, F_GETFL);
		fcntl(r->cc->fd, F_SETFL, fl | O_NONBLOCK);
		kvw_core_watch_fd(r->rd->d->ctx, r->cc->fd, false);
	}
	r->scq = ibv_create_cq(r->id->verbs, (int)r->sq_depth, r, r->cc, 0);
	r->rcq = ibv_create_cq(r->id->verbs, RD_RECV_DEPTH, r, r->cc, 0);
	memset(&qa, 0, sizeof(qa));
	qa.send_cq = r->scq;
	qa.recv_cq = r->rcq;
	qa.qp_type = IBV_QPT_RC;
	qa.sq_sig_all = 0;
	qa.cap.max_send_wr = r->sq_depth;
	qa.cap.max_recv_wr = RD_RECV_DEPTH;
	qa.cap.max_send_sge = r->dev->max_sge ? r->dev->max_sge : 1;
	qa.cap.max_recv_sge = 1;
	qa.cap.max_inline_data = 64;
	if (r->scq && r->rcq)
		r->qp = ibv_create_qp(r->dev->pd, &qa);
	if (!r->qp) {
		snprintf(why, sizeof(why), "rdma: creating CQs/QP (depth %u) on %s: %s; lower config "
			 "rdma_qp_depth or raise `ulimit -l`", r->sq_depth, r->dev->name, strerror(errno));
		rd_rail_fail(r, KVW_ERR_NOMEM, why);
		return KVW_ERR_NOMEM;
	}
	r->max_inline = qa.cap.max_inline_data;
	r->max_sge = qa.cap.max_send_sge < RD_MAX_SGE ? qa.cap.max_send_sge : RD_MAX_SGE;
	if (!r->max_sge)
		r->max_sge = 1;
	r->credits = RD_RECV_DEPTH;
	if (rd_qp_modify(r, IBV_QPS_INIT) != KVW_OK)
		return KVW_ERR_IO;
	return rd_rail_bufs(r); /* receives may be posted from INIT on */
}

/* ------------------------------------------------------------ listener */
static kvw_status rd_listen_on(struct rd_drv *rd, struct rd_lst *ls, struct sockaddr_in *sa)
{
	struct rdma_cm_id *id;

	if (rdma_create_id(rd->ech, &id, ls, RDMA_PS_TCP))
		return KVW_ERR_IO;
	if (rdma_bind_addr(id, (struct sockaddr *)sa) || rdma_listen(id, 64)) {
		rdma_destroy_id(id);
		return KVW_ERR_IO;
	}
	ls->id[ls->n_id++] = id;
	return KVW_OK;
}

static kvw_status rd_addr(kvw_ctx *ctx, const struct kvw_uri *u, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)u->port);
	if (inet_pton(AF_INET, u->host[0] ? u->host : "0.0.0.0", &sa->sin_addr) != 1)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "rdma: \"%s\" is not an IPv4 address: rdma:// URIs "
				   "take the IPv4 address of a RoCE netdev (e.g. rdma://10.0.0.2:7471)",
				   u->host);
	return KVW_OK;
}

kvw_status rd_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u)
{
	struct rd_drv *rd = rd_of(d);
	struct rd_lst *ls = calloc(1, sizeof(*ls));
	struct sockaddr_in sa;
	kvw_status st;

	if (!ls)
		return KVW_ERR_NOMEM;
	ls->l = l;
	if ((st = rd_addr(d->ctx, u, &sa)) != KVW_OK)
		goto err_free;
	if (rd_listen_on(rd, ls, &sa) != KVW_OK) {
		st = kvw_set_err(d->ctx, errno == EADDRINUSE ? KVW_ERR_BUSY : KVW_ERR_IO,
				 "rdma: listen on %s:%u: %s (the address must belong to an RDMA netdev; "
				 "check `rdma link` and `ip addr`)", u->host, u->port, strerror(errno));
		goto err_free;
	}
	sa.sin_port = rdma_get_src_port(ls->id[0]);
	ls->ip[ls->n_ip++] = sa.sin_addr.s_addr;
	/* extra rails on the other devices: listen there too, same port */
	for (int i = 0; sa.sin_addr.s_addr != INADDR_ANY && i < rd->ndev; i++) {
		struct sockaddr_in s2 = sa;
		if (rd->dev[i].ip.s_addr == sa.sin_addr.s_addr)
			continue;
		s2.sin_addr = rd->dev[i].ip;
		if (rd_listen_on(rd, ls, &s2) == KVW_OK)
			ls->ip[ls->n_ip++] = s2.sin_addr.s_addr;
	}
	char uri[KVW_CORE_URI_MAX];
	if (u->port == 0 && snprintf(uri, sizeof(uri), "rdma://%.40s:%u%s%.100s", u->host[0] ? u->host : "0.0.0.0",
			 ntohs(sa.sin_port), u->query[0] ? "?" : "", u->query) > 0)
		kvw_core_listener_set_uri(l, uri);
	kvw_core_listener_set_priv(l, ls);
	return KVW_OK;

err_free:
	free(ls);
	return st;
}

void rd_listener_close(kvw_listener *l)
{
	struct rd_lst *ls = kvw_core_listener_priv(l);

	if (!ls)
		return;
	for (int i = 0; i < ls->n_id; i++)
		rdma_destroy_id(ls->id[i]);
	free(ls);
	kvw_core_listener_set_priv(l, NULL);
}

/* The peer's IPv4 address, for the listener's per-address limits. */
static const char *rd_peer_ip(struct rdma_cm_id *id, char *buf, size_t len)
{
	const struct sockaddr *sa = rdma_get_peer_addr(id);

	buf[0] = 0;
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
	return buf;
}

/* A CONNECT_REQUEST on one of the listener's ids: QP to RTS, accept, new ep
 * (its send buffer small until READY: rd_sbuf_grow). */
static void rd_on_request(struct rd_drv *rd, struct rd_lst *ls, struct rdma_cm_event *ev)
{
	const struct rd_cm_priv *cp = ev->param.conn.private_data;
	struct rd_cm_priv rep = {.magic = RD_MAGIC, .flags = RD_CM_F_NEED};
	struct rdma_conn_param p;
	struct rd_ep *e = calloc(1, sizeof(*e));
	struct rd_rail *r = e ? rd_rail_new(rd, e, NULL, 0) : NULL;
	char ip[INET_ADDRSTRLEN];
	kvw_ep *ep;

	if (!r || ev->param.conn.private_data_len < sizeof(*cp) || cp->magic != RD_MAGIC)
		goto err_reject;
	if ((cp->flags & RD_CM_F_NEED) != RD_CM_F_NEED) {
		kvw_log(rd->d->ctx, 2, "rdma: refused a connection from %s: its kvwire driver predates "
			"write-with-immediate landing (issue 17), which this one requires: upgrade the peer",
			rd_peer_ip(ev->id, ip, sizeof(ip)));
		goto err_reject;
	}
	e->rail[0] = r;
	r->id = ev->id;
	ev->id->context = r;
	r->peer_dev = cp->dev_idx < RD_MAX_DEV ? cp->dev_idx : 0;
	if (rd_rail_setup(r) != KVW_OK || rd_qp_modify(r, IBV_QPS_RTR) != KVW_OK ||
	    rd_qp_modify(r, IBV_QPS_RTS) != KVW_OK)
		goto err_reject;
	rep.dev_idx = (uint8_t)r->dev_idx;
	rep.n_ip = (uint8_t)ls->n_ip;
	memcpy(rep.ip, ls->ip, sizeof(rep.ip));
	memset(&p, 0, sizeof(p));
	p.private_data = &rep;
	p.private_data_len = sizeof(rep);
	p.qp_num = r->qp->qp_num;
	p.retry_count = 6;
	p.rnr_retry_count = RD_RNR_RETRY;
	if (rdma_accept(ev->id, &p))
		goto err_reject;
	if (!(ep = kvw_core_ep_accepted_from(ls->l, rd_peer_ip(ev->id, ip, sizeof(ip)))))
		goto err_reject;
	kvw_core_ep_set_priv(ep, e);
	r->ep = ep;
	r->state = RD_R_UP;
	r->peer_open = true; /* the client opened its QP before it could be written to */
	kvw_core_ep_admit(ep); /* max_handshakes[_per_addr]: a silent one may go */
	return;

err_reject:
	rdma_reject(ev->id, NULL, 0);
	if (r) {
		r->id = NULL; /* destroyed by the caller after the ack */
		rd_rail_free(r);
	}
	free(e);
	ev->id->context = NULL;
}

/* ------------------------------------------------------------ client */
static kvw_status rd_rail_connect(struct rd_drv *rd, struct rd_ep *e, kvw_ep *ep, uint32_t idx,
				  const struct sockaddr_in *dst)
{
	struct rd_rail *r = rd_rail_new(rd, e, ep, idx);
	struct sockaddr_in src = {.sin_family = AF_INET};
	int cdev = rd->cfg_dev >= 0 ? rd->cfg_dev : -1;

	if (!r)
		return KVW_ERR_NOMEM;
	e->rail[idx] = r;
	if (cdev < 0 && kvw_core_cfg(rd->d->ctx)->rdma_gid >= 0)
		cdev = 0;
	if (cdev >= 0)
		src.sin_addr = rd->dev[cdev].ip;
	if (rdma_create_id(rd->ech, &r->id, r, RDMA_PS_TCP) ||
	    rdma_resolve_addr(r->id, cdev >= 0 ? (struct sockaddr *)&src : NULL,
			      (struct sockaddr *)dst, 2000)) {
		kvw_status st = kvw_set_err(rd->d->ctx, KVW_ERR_IO, "rdma: resolving %s: %s",
					    inet_ntoa(dst->sin_addr), strerror(errno));
		e->rail[idx] = NULL;
		rd_rail_free(r);
		return st;
	}
	return KVW_OK;
}

kvw_status rd_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u)
{
	struct rd_ep *e = calloc(1, sizeof(*e));
	kvw_status st;

	if (!e)
		return KVW_ERR_NOMEM;
	if ((st = rd_addr(d->ctx, u, &e->peer)) != KVW_OK)
		goto err_free;
	if (u->port == 0) {
		st = kvw_set_err(d->ctx, KVW_ERR_INVALID, "rdma: connect needs a port (rdma://IP:PORT)");
		goto err_free;
	}
	kvw_core_ep_set_priv(ep, e);
	if ((st = rd_rail_connect(rd_of(d), e, ep, 0, &e->peer)) != KVW_OK) {
		kvw_core_ep_set_priv(ep, NULL);
		goto err_free;
	}
	return KVW_OK;

err_free:
	free(e);
	return st;
}

kvw_status rd_open_rails(kvw_ep *ep)
{
	struct rd_ep *e = rd_ep_of(ep);
	kvw_status st;

	for (uint32_t i = 1; i < kvw_core_ep_rails(ep); i++) {
		struct sockaddr_in dst = e->peer;
		if (e->n_peer_ip)
			dst.sin_addr.s_addr = e->peer_ip[i % e->n_peer_ip];
		if ((st = rd_rail_connect(rd_of(kvw_core_ep_drv(ep)), e, ep, i, &dst)) != KVW_OK)
			return st;
	}
	return KVW_OK;
}

static void rd_on_route(struct rd_rail *r)
{
	struct rd_cm_priv cp = {.magic = RD_MAGIC, .flags = RD_CM_F_NEED};
	struct rdma_conn_param p;
	char why[160];

	if (rd_rail_setup(r) != KVW_OK)
		return;
	cp.dev_idx = (uint8_t)r->dev_idx;
	memset(&p, 0, sizeof(p));
	p.private_data = &cp;
	p.private_data_len = sizeof(cp);
	p.qp_num = r->qp->qp_num;
	p.retry_count = 6;
	p.rnr_retry_count = RD_RNR_RETRY;
	if (rdma_connect(r->id, &p)) {
		snprintf(why, sizeof(why), "rdma: rdma_connect: %s", strerror(errno));
		rd_rail_fail(r, KVW_ERR_IO, why);
	}
}

static void rd_on_response(struct rd_rail *r, struct rdma_cm_event *ev)
{
	const struct rd_cm_priv *cp = ev->param.conn.private_data;
	struct rd_ep *e = r->rep;
	uint8_t join[128];
	char why[120];

	if (ev->param.conn.private_data_len < sizeof(*cp) || cp->magic != RD_MAGIC) {
		rd_rail_fail(r, KVW_ERR_PROTO, "rdma: the peer's rdma_cm reply is not kvwire's");
		return;
	}
	if ((cp->flags & RD_CM_F_NEED) != RD_CM_F_NEED) {
		rdma_reject(r->id, NULL, 0);
		rd_rail_fail(r, KVW_ERR_PROTO, "rdma: the listener's kvwire driver predates write-with-"
			     "immediate landing (issue 17): it would take a peer's word that data landed; "
			     "upgrade it (this build refuses it)");
		return;
	}
	r->peer_dev = cp->dev_idx < RD_MAX_DEV ? cp->dev_idx : 0;
	if (r->idx == 0) {
		e->n_peer_ip = cp->n_ip <= RD_MAX_DEV ? cp->n_ip : RD_MAX_DEV;
		memcpy(e->peer_ip, cp->ip, sizeof(e->peer_ip));
	}
	if (rd_qp_modify(r, IBV_QPS_RTR) != KVW_OK || rd_qp_modify(r, IBV_QPS_RTS) != KVW_OK) {
		rdma_reject(r->id, NULL, 0);
		return;
	}
	if (rdma_establish(r->id)) {
		snprintf(why, sizeof(why), "rdma: rdma_establish: %s", strerror(errno));
		rd_rail_fail(r, KVW_ERR_IO, why);
		return;
	}
	r->cm_established = true;
	r->state = RD_R_UP;
	r->peer_open = r->idx == 0; /* an extra rail: once the server says RD_JOINED */
	if (r->idx == 0) {
		kvw_core_ep_up(r->ep);
	} else if (rd_rail_open_writes(r) == KVW_OK) { /* before the server can write back */
		size_t n = kvw_core_hello_join(r->ep, r->idx, join);
		rd_msg(r, RD_CTRL, join, n);
	}
}

static void rd_on_cm_error(struct rd_rail *r, struct rdma_cm_event *ev)
{
	char why[220];
	kvw_status st = KVW_ERR_PEER_DEAD;
	const char *peer = r->rep ? inet_ntoa(r->rep->peer.sin_addr) : "?";

	/* A rail that was up: what the peer sent before it went (a REJECT with
	 * its reason, a CLOSE) has completed here already and says more than
	 * the DISCONNECTED (or, when it closed before it saw ESTABLISHED, the
	 * REJECTED) that follows it: handle that first. */
	if (r->state == RD_R_UP && r->ep)
		rd_rail_progress(r);
	switch (ev->event) {
	case RDMA_CM_EVENT_REJECTED:
		st = r->state == RD_R_CONNECTING ? KVW_ERR_CONNREFUSED : KVW_ERR_PEER_DEAD;
		snprintf(why, sizeof(why), "rdma: connection to %s refused (rdma_cm REJECTED, status %d): "
			 "is a kvwire rdma listener running at that address and port?", peer,
			 ev->status);
		break;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		st = KVW_ERR_CONNREFUSED;
		snprintf(why, sizeof(why), "rdma: %s %s (status %d): the address must be reachable "
			 "through an RDMA netdev (`ip route get %s`, `rdma link`)", rdma_event_str(ev->event),
			 peer, ev->status, peer);
		break;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		snprintf(why, sizeof(why), "rdma: device %s removed", r->dev ? r->dev->name : "?");
		break;
	default:
		snprintf(why, sizeof(why), "rdma: peer disconnected (rdma_cm %s) on rail %u",
			 rdma_event_str(ev->event), r->idx);
		break;
	}
	rd_rail_fail(r, st, why);
}

static void rd_cm_event(struct rd_drv *rd, struct rdma_cm_event *ev)
{
	struct rd_rail *r;

	kvw_log(rd->d->ctx, 4, "rdma: cm event %s status %d", rdma_event_str(ev->event), ev->status);
	if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
		rd_on_request(rd, ev->listen_id->context, ev);
		return;
	}
	r = ev->id->context;
	for (struct rd_rail *k = rd->rails; k != r; k = k->next_all)
		if (!k)
			return; /* a listener's id, or a rail already gone */
	if (!r)
		return;
	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		if (rdma_resolve_route(r->id, 2000))
			rd_rail_fail(r, KVW_ERR_IO, "rdma: rdma_resolve_route failed");
		break;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		rd_on_route(r);
		break;
	case RDMA_CM_EVENT_CONNECT_RESPONSE:
		rd_on_response(r, ev);
		break;
	case RDMA_CM_EVENT_ESTABLISHED:
		r->cm_established = true;
		break;
	case RDMA_CM_EVENT_TIMEWAIT_EXIT:
	case RDMA_CM_EVENT_ADDR_CHANGE:
		break;
	default:
		rd_on_cm_error(r, ev);
		break;
	}
}

void rd_cm_progress(struct rd_drv *rd)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(rd->ech, &ev) == 0) {
		struct rdma_cm_id *reject = NULL;
		bool req = ev->event == RDMA_CM_EVENT_CONNECT_REQUEST;

		rd_cm_event(rd, ev);
		if (req && !ev->id->context)
			reject = ev->id;
		rdma_ack_cm_event(ev);
		if (reject)
			rdma_destroy_id(reject);
	}
}

/* ------------------------------------------------------------ rails, close */
kvw_status rd_join(kvw_ep *ep, kvw_ep *extra, uint32_t rail_idx)
{
	struct rd_ep *e = rd_ep_of(ep), *x = rd_ep_of(extra);
	struct rd_rail *r;

	if (!e || !x || !(r = x->rail[0]) || rail_idx >= KVW_MAX_RAILS || e->rail[rail_idx])
		return KVW_ERR_PROTO;
	if (rd_rail_open_writes(r) != KVW_OK) /* the join proof authenticated it */
		return KVW_ERR_IO;
	r->ep = ep;
	r->rep = e;
	r->idx = rail_idx;
	e->rail[rail_idx] = r;
	x->rail[0] = NULL;
	rd_ep_data_free(extra);
	free(x);
	kvw_core_ep_set_priv(extra, NULL);
	rd_msg(r, RD_JOINED, NULL, 0); /* the client may write on this rail now (a failure fails ep) */
	return KVW_OK;
}

/* A QP, its completion channel's fd and registered message buffers per
 * rail; the sender's key table (ops->ep_resources). */
void rd_ep_resources(const kvw_ep *ep, struct kvw_ep_res *res)
{
	const struct rd_ep *e = rd_ep_of(ep);

	if (!e)
		return;
	res->bytes += sizeof(*e) + (uint64_t)e->keys_cap * sizeof(*e->keys);
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++) {
		const struct rd_rail *r = e->rail[i];
		if (!r)
			continue;
		res->qps += r->qp != NULL;
		res->fds += r->cc != NULL;
		res->bytes += sizeof(*r) + (uint64_t)RD_RECV_DEPTH * RD_BUF + (uint64_t)r->n_slots * RD_BUF +
			      (uint64_t)r->sq_depth * sizeof(*r->cum_bytes);
	}
}

void rd_ep_close(kvw_ep *ep)
{
	struct rd_ep *e = rd_ep_of(ep);

	if (!e)
		return;
	rd_ep_grants_free(ep); /* windows bound to the QPs go first */
	for (uint32_t i = 0; i < KVW_MAX_RAILS; i++)
		if (e->rail[i]) {
			const struct rd_rail *r = e->rail[i];
			if (kvw_core_ep_failed(ep)) /* what the rail waited on when the endpoint failed */
				kvw_log(r->rd->d->ctx, 3, "rdma: endpoint %llu rail %u at close: credits %d, "
					"to return %d, peer starved %d, %zu bytes queued, %llu WRs in flight "
					"of %u slots, %llu bytes unacknowledged", (unsigned long long)kvw_core_ep_id(ep),
					i, r->credits, r->to_return, r->peer_starved, r->txq_len,
					(unsigned long long)(r->wr_posted - r->wr_done), r->n_slots,
					(unsigned long long)(r->bytes_posted - r->bytes_acked));
			rd_rail_free(e->rail[i]);
		}
	rd_ep_data_free(ep);
	free(e);
	kvw_core_ep_set_priv(ep, NULL);
}
