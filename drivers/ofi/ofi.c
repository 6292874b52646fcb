/* SPDX-License-Identifier: MIT */
/* ofi driver: provider and domain, arenas, connections, the ops table.
 * See ofi_int.h for the design and docs/drivers/ofi.md. */
#include "ofi_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

kvw_status ofi_err(kvw_ctx *ctx, kvw_status st, const char *what, int rc)
{
	return kvw_set_err(ctx, st, "ofi: %s failed: %s", what, fi_strerror(rc < 0 ? -rc : rc));
}

static kvw_status ofi_open(kvw_drv *d)
{
	struct ofi_drv *od;
	uint32_t v = fi_version();

	if (FI_VERSION_LT(v, OFI_API))
		return kvw_set_err(d->ctx, KVW_ERR_UNSUPPORTED, "ofi: libfabric %u.%u is older than the "
				   "1.17 this driver needs: install libfabric 1.17 or newer",
				   FI_MAJOR(v), FI_MINOR(v));
	if (!(od = calloc(1, sizeof(*od))))
		return KVW_ERR_NOMEM;
	od->d = d;
	od->next_key = 1;
	d->priv = od;
	return KVW_OK;
}

static void ofi_close(kvw_drv *d)
{
	struct ofi_drv *od = ofi_of(d);

	if (!od)
		return;
	if (od->dom)
		fi_close(&od->dom->fid);
	if (od->fab)
		fi_close(&od->fab->fid);
	if (od->info)
		fi_freeinfo(od->info);
	free(od);
	d->priv = NULL;
}

static kvw_status ofi_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	(void)d;
	/* completions are polled (no fd wakes the context for them yet);
	 * max_gather is set when the provider is picked (ofi_dom_open) */
	*ci = (struct kvw_caps_info){.caps = KVW_CAP_ZERO_COPY_TX | KVW_CAP_ONE_SIDED, .max_rails = 1,
				     .max_frag = 1u << 20, .poll_us = 100};
	return KVW_OK;
}

/* The arena's MR in the open domain (once). */
static kvw_status ofi_mem_mr(struct ofi_drv *od, struct ofi_mem *om)
{
	size_t len = kvw_mem_len(om->m);
	int rc;

	if (om->mr || !od->dom)
		return KVW_OK;
	rc = fi_mr_reg(od->dom, kvw_mem_addr(om->m), len, FI_WRITE | FI_READ, 0, od->next_key++, 0,
		       &om->mr, NULL);
	if (rc) {
		om->mr = NULL;
		return kvw_set_err(od->d->ctx, rc == -FI_ENOMEM ? KVW_ERR_MEMLOCK : KVW_ERR_IO,
				   "ofi: registering an arena of %zu bytes with provider %s: %s (raise "
				   "`ulimit -l`, or use a smaller arena)", len, od->prov, fi_strerror(-rc));
	}
	om->desc = fi_mr_desc(om->mr);
	return KVW_OK;
}

/* Every arena is kept on the driver's own list; its MR is made now if the
 * domain is open, else when it opens (ofi_dom_open). */
static kvw_status ofi_mem_reg(kvw_drv *d, kvw_mem *m)
{
	struct ofi_drv *od = ofi_of(d);
	struct ofi_mem *om = kvw_core_mem_priv(m, d);
	kvw_status st;

	if (om)
		return ofi_mem_mr(od, om);
	if (!(om = calloc(1, sizeof(*om))))
		return kvw_set_err(d->ctx, KVW_ERR_NOMEM, "ofi: out of memory for an arena's state");
	om->m = m;
	if ((st = ofi_mem_mr(od, om)) != KVW_OK) {
		free(om);
		return st;
	}
	om->next = od->mems;
	od->mems = om;
	kvw_core_mem_set_priv(m, d, om);
	return KVW_OK;
}

static void ofi_mem_dereg(kvw_drv *d, kvw_mem *m)
{
	struct ofi_drv *od = ofi_of(d);
	struct ofi_mem *om = kvw_core_mem_priv(m, d), **pp;

	if (!om)
		return;
	ofi_mem_quiesce(od, om);
	for (pp = &od->mems; *pp; pp = &(*pp)->next)
		if (*pp == om) {
			*pp = om->next;
			break;
		}
	if (om->mr)
		fi_close(&om->mr->fid);
	free(om);
	kvw_core_mem_set_priv(m, d, NULL);
}

static struct fi_info *ofi_hints(const char *prov, bool delivery)
{
	struct fi_info *h = fi_allocinfo();

	if (!h)
		return NULL;
	h->ep_attr->type = FI_EP_RDM;
	h->caps = FI_RMA | FI_WRITE | FI_REMOTE_WRITE;
	h->mode = FI_CONTEXT | FI_CONTEXT2;
	h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	h->domain_attr->threading = FI_THREAD_DOMAIN;
	h->tx_attr->op_flags = delivery ? FI_DELIVERY_COMPLETE : 0;
	if (prov && *prov)
		h->fabric_attr->prov_name = strdup(prov);
	return h;
}

/* The first provider that offers RDM + RMA writes for prov ("" = the one
 * libfabric prefers, FI_PROVIDER honoured), with delivery completion when it
 * has it, else transmit completion. */
static kvw_status ofi_getinfo(struct ofi_drv *od, const char *prov, struct fi_info **out)
{
	int rc = -FI_ENODATA;

	for (int pass = 0; pass < 2 && rc; pass++) {
		struct fi_info *h = ofi_hints(prov, pass == 0);
		if (!h)
			return KVW_ERR_NOMEM;
		rc = fi_getinfo(OFI_API, NULL, NULL, 0, h, out);
		fi_freeinfo(h);
		od->delivery = pass == 0;
	}
	if (rc)
		return kvw_set_err(od->d->ctx, KVW_ERR_UNSUPPORTED,
				   "ofi: no libfabric provider %s%s%soffers reliable datagram endpoints with RMA "
				   "writes (%s): see `fi_info -l`, and pick one with ?provider=NAME "
				   "(e.g. tcp;ofi_rxm, shm)", *prov ? "\"" : "", prov, *prov ? "\" " : "",
				   fi_strerror(-rc));
	return KVW_OK;
}

/* One probe entry per provider and domain that offers what ofi_getinfo
 * asks (pass 0: with delivery completion, pass 1: without); the first
 * pass's entry wins. */
static void ofi_probe_add(const struct fi_info *i, bool delivery, struct kvw_probe_entry *out,
			  size_t cap, size_t *n)
{
	char name[sizeof(out->name)];
	bool cq_ok = i->domain_attr->cq_data_size >= 8;

	snprintf(name, sizeof(name), "%s domain %s", i->fabric_attr->prov_name, i->domain_attr->name);
	for (size_t k = 0; k < *n && k < cap; k++)
		if (!strcmp(out[k].name, name))
			return;
	if (*n < cap) {
		struct kvw_probe_entry *e = &out[*n];
		*e = (struct kvw_probe_entry){.usable = cq_ok};
		snprintf(e->name, sizeof(e->name), "%s", name);
		if (cq_ok)
			snprintf(e->reason, sizeof(e->reason), "usable: pick it with ?provider=%s%s",
				 i->fabric_attr->prov_name, delivery ? "" : " (no delivery completion: "
				 "a write completes when sent, the receiver's frames order the rest)");
		else
			snprintf(e->reason, sizeof(e->reason), "carries %zu bytes of CQ data; kvwire names "
				 "each write with 8: pick another provider", i->domain_attr->cq_data_size);
		snprintf(e->details, sizeof(e->details), "fabric %s, %s, cq data %zu B, mr_mode%s%s",
			 i->fabric_attr->name, delivery ? "FI_DELIVERY_COMPLETE" : "FI_TRANSMIT_COMPLETE",
			 i->domain_attr->cq_data_size,
			 i->domain_attr->mr_mode & FI_MR_VIRT_ADDR ? " VIRT_ADDR" : " offsets",
			 i->domain_attr->mr_mode & FI_MR_PROV_KEY ? " PROV_KEY" : "");
	}
	++*n;
}

/* ops->probe: every provider libfabric offers reliable datagram endpoints
 * with RMA writes on, by the rule a listener or connect applies
 * (ofi_getinfo; the URI's ?provider= picks one, so none is left out by
 * config). FI_PROVIDER narrows the list as it narrows open. */
static kvw_status ofi_probe(const struct kvw_cfgv *cfg, struct kvw_probe_entry *out, size_t cap,
			    size_t *n)
{
	uint32_t v = fi_version();
	size_t found = 0;
	int rc = 0;

	(void)cfg;
	if (FI_VERSION_LT(v, OFI_API))
		return kvw_set_err(NULL, KVW_ERR_UNSUPPORTED, "ofi: libfabric %u.%u is older than the "
				   "1.17 this driver needs: install libfabric 1.17 or newer",
				   FI_MAJOR(v), FI_MINOR(v));
	for (int pass = 0; pass < 2; pass++) {
		struct fi_info *h = ofi_hints(NULL, pass == 0), *list = NULL;
		if (!h)
			return kvw_set_err(NULL, KVW_ERR_NOMEM, "ofi: out of memory for the probe's hints");
		rc = fi_getinfo(OFI_API, NULL, NULL, 0, h, &list);
		fi_freeinfo(h);
		for (const struct fi_info *i = rc ? NULL : list; i; i = i->next)
			ofi_probe_add(i, pass == 0, out, cap, &found);
		if (list)
			fi_freeinfo(list);
	}
	if (!found)
		return kvw_set_err(NULL, KVW_ERR_UNSUPPORTED, "ofi: no libfabric provider offers reliable "
				   "datagram endpoints with RMA writes (%s): see `fi_info -l`; on EFA "
				   "hosts install the EFA driver and libfabric's efa provider",
				   fi_strerror(rc < 0 ? -rc : FI_ENODATA));
	*n = found;
	return KVW_OK;
}

static void ofi_log_features(struct ofi_drv *od)
{
	const struct fi_info *i = od->info;

	kvw_log(od->d->ctx, 3, "ofi: provider %s (fabric %s, domain %s), API 1.17 of libfabric %u.%u; "
		"completion level %s; mr_mode%s%s%s%s; cq data %zu bytes; largest message %zu",
		i->fabric_attr->prov_name, i->fabric_attr->name, i->domain_attr->name,
		FI_MAJOR(fi_version()), FI_MINOR(fi_version()),
		od->delivery ? "FI_DELIVERY_COMPLETE" : "FI_TRANSMIT_COMPLETE (no delivery completion)",
		od->virt_addr ? " VIRT_ADDR" : " offset-addressed", od->prov_key ? " PROV_KEY" : "",
		od->mr_local ? " LOCAL" : "", i->domain_attr->mr_mode & FI_MR_ALLOCATED ? " ALLOCATED" : "",
		i->domain_attr->cq_data_size, i->ep_attr->max_msg_size);
}

/* Opens the fabric and domain of provider prov once per context, and
 * registers the arenas that exist already. */
static kvw_status ofi_dom_open(struct ofi_drv *od, const char *prov)
{
	kvw_ctx *ctx = od->d->ctx;
	int rc;
	kvw_status st;

	if (od->dom) {
		if (!*prov || !strcmp(prov, od->prov))
			return KVW_OK;
		return kvw_set_err(ctx, KVW_ERR_UNSUPPORTED, "ofi: this context uses provider %s; "
				   "provider %s needs a context of its own", od->prov, prov);
	}
	if ((st = ofi_getinfo(od, prov, &od->info)) != KVW_OK)
		return st;
	if (od->info->domain_attr->cq_data_size < 8) {
		st = kvw_set_err(ctx, KVW_ERR_UNSUPPORTED, "ofi: provider %s carries %zu bytes of CQ data; "
				 "kvwire names each write with 8: pick another provider",
				 od->info->fabric_attr->prov_name, od->info->domain_attr->cq_data_size);
		goto fail;
	}
	if ((rc = fi_fabric(od->info->fabric_attr, &od->fab, NULL)) ||
	    (rc = fi_domain(od->fab, od->info, &od->dom, NULL))) {
		st = ofi_err(ctx, KVW_ERR_IO, "opening the fabric and domain", rc);
		goto fail;
	}
	snprintf(od->prov, sizeof(od->prov), "%s", od->info->fabric_attr->prov_name);
	od->virt_addr = od->info->domain_attr->mr_mode & FI_MR_VIRT_ADDR;
	od->prov_key = od->info->domain_attr->mr_mode & FI_MR_PROV_KEY;
	od->mr_local = od->info->domain_attr->mr_mode & FI_MR_LOCAL;
	od->key_mask = od->info->domain_attr->mr_key_size && od->info->domain_attr->mr_key_size < 8 ?
		(1ull << 8 * od->info->domain_attr->mr_key_size) - 1 : ~0ull;
	od->max_msg = od->info->ep_attr->max_msg_size;
	/* gathered fragments (a source piece per iovec) only once the provider
	 * is known: before the first endpoint, so the core never cuts one for
	 * more pieces than a write takes */
	if (od->info->tx_attr->iov_limit >= 2)
		od->d->caps.max_gather = od->info->tx_attr->iov_limit < OFI_MAX_IOV ?
			(uint32_t)od->info->tx_attr->iov_limit : OFI_MAX_IOV;
	ofi_log_features(od);
	for (struct ofi_mem *om = od->mems; om; om = om->next)
		if ((st = ofi_mem_mr(od, om)) != KVW_OK)
			return st;
	return KVW_OK;
fail:
	if (od->fab)
		fi_close(&od->fab->fid);
	od->fab = NULL;
	fi_freeinfo(od->info);
	od->info = NULL;
	return st;
}

static kvw_status ofi_uri_prov(kvw_drv *d, const struct kvw_uri *u)
{
	char prov[64] = "";

	kvw_uri_param(u, "provider", prov, sizeof(prov));
	return ofi_dom_open(ofi_of(d), prov);
}

/* ------------------------------------------------------------ endpoints */
static void ofi_ep_free(struct ofi_ep *oe)
{
	struct ofi_ep **pp;

	ofi_fault_close(oe);
	if (oe->fep)
		fi_close(&oe->fep->fid);
	if (oe->av)
		fi_close(&oe->av->fid);
	if (oe->cq)
		fi_close(&oe->cq->fid);
	ofi_grants_free(oe);
	ofi_keys_free(oe);
	free(oe->pend.e);
	free(oe->fences);
	for (pp = &oe->od->eps; *pp; pp = &(*pp)->next)
		if (*pp == oe) {
			*pp = oe->next;
			break;
		}
	free(oe);
}

static kvw_status ofi_ep_fabric(struct ofi_ep *oe)
{
	struct ofi_drv *od = oe->od;
	struct fi_cq_attr ca = {.format = FI_CQ_FORMAT_DATA, .size = 4 * OFI_OPS, .wait_obj = FI_WAIT_NONE};
	struct fi_av_attr aa = {.type = FI_AV_UNSPEC, .count = 4};
	int rc;

	if ((rc = fi_cq_open(od->dom, &ca, &oe->cq, NULL)))
		return ofi_err(od->d->ctx, KVW_ERR_IO, "fi_cq_open", rc);
	if ((rc = fi_av_open(od->dom, &aa, &oe->av, NULL)))
		return ofi_err(od->d->ctx, KVW_ERR_IO, "fi_av_open", rc);
	if ((rc = fi_endpoint(od->dom, od->info, &oe->fep, NULL)))
		return ofi_err(od->d->ctx, KVW_ERR_IO, "fi_endpoint", rc);
	if ((rc = fi_ep_bind(oe->fep, &oe->av->fid, 0)) ||
	    (rc = fi_ep_bind(oe->fep, &oe->cq->fid, FI_TRANSMIT | FI_RECV)) || (rc = fi_enable(oe->fep)))
		return ofi_err(od->d->ctx, KVW_ERR_IO, "binding and enabling the fabric endpoint", rc);
	return KVW_OK;
}

/* The endpoint's fabric side, made on first use (a GRANT to send, the
 * peer's address to take). NULL: failed, the sentence is set. */
struct ofi_ep *ofi_ep_get(kvw_ep *ep)
{
	struct kvw_sockep *se = kvw_sockep(ep);
	struct ofi_drv *od = ofi_of_ep(ep);
	struct ofi_ep *oe;

	if (!se)
		return NULL;
	if (se->priv)
		return se->priv;
	if (!od->dom || !(oe = calloc(1, sizeof(*oe))))
		return NULL;
	oe->od = od;
	oe->ep = ep;
	for (int i = 0; i < OFI_OPS; i++)
		oe->op[i].next_free = i + 1 < OFI_OPS ? i + 1 : -1;
	oe->next = od->eps;
	od->eps = oe;
	if (ofi_ep_fabric(oe) != KVW_OK || ofi_fault_open(oe) != KVW_OK) {
		ofi_ep_free(oe);
		return NULL;
	}
	se->priv = oe;
	return oe;
}

static void ofi_ep_close(kvw_ep *ep)
{
	struct kvw_sockep *se = kvw_sockep(ep);

	if (se && se->priv) {
		ofi_ep_free(se->priv);
		se->priv = NULL;
	}
	kvw_sock_ep_close(ep);
}

/* The control stream's (drivers/common) plus one RDM endpoint, counted as
 * the QP it is on EFA, with its tables. The provider's own fds and buffers
 * (the tcp provider's sockets, shm's regions) are not visible from here. */
static void ofi_ep_resources(const kvw_ep *ep, struct kvw_ep_res *r)
{
	const struct kvw_sockep *se = kvw_sockep(ep);
	const struct ofi_ep *oe = se ? se->priv : NULL;

	kvw_sock_ep_resources(ep, r);
	if (!oe)
		return;
	r->qps += oe->fep != NULL;
	r->bytes += sizeof(*oe) + ((uint64_t)oe->keys.cap + oe->pend.cap) * sizeof(*oe->keys.e) +
		    (uint64_t)oe->cap_fences * sizeof(*oe->fences);
}

static kvw_status ofi_progress(kvw_drv *d)
{
	struct ofi_drv *od = ofi_of(d);

	kvw_sock_progress(d); /* control first: a DROP before the refused writes it explains */
	for (struct ofi_ep *oe = od->eps, *next; oe; oe = next) {
		next = oe->next;
		if (kvw_core_ep_ready(oe->ep))
			ofi_fault_release(oe, false);
		if (kvw_core_ep_ready(oe->ep))
			ofi_cq_poll(oe, false);
		if (kvw_core_ep_ready(oe->ep) && oe->n_fences)
			ofi_fences_serve(oe);
		if (kvw_core_ep_ready(oe->ep) && oe->n_local_fences)
			ofi_fences_local(oe);
	}
	return KVW_OK;
}

/* ------------------------------------------------------------ connections */

/* The listener's URI names the bound port and the provider it opened, so a
 * client given it uses the same one. */
static void ofi_listener_uri(kvw_listener *l, int fd, const struct kvw_uri *u, const char *prov)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[128] = "", q[sizeof(u->query) + 80], uri[KVW_CORE_URI_MAX + 1];
	bool has = kvw_uri_param(u, "provider", host, sizeof(host));

	snprintf(q, sizeof(q), "%s%s%s%s", u->query, has ? "" : (u->query[0] ? "&" : ""),
		 has ? "" : "provider=", has ? "" : prov);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), NULL, 0, NI_NUMERICHOST);
	snprintf(uri, sizeof(uri), ss.ss_family == AF_INET6 ? "ofi://[%s]:%u?%s" : "ofi://%s:%u?%s",
		 host, ntohs(((struct sockaddr_in *)&ss)->sin_port), q);
	if (!kvw_core_listener_set_uri(l, uri))
		kvw_log(kvw_core_listener_ctx(l), 2, "ofi: the listener's address %s is too long to report: "
			"kvw_listener_uri keeps the one it was given", uri);
}

static kvw_status ofi_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u)
{
	struct addrinfo *ai;
	int fd, one = 1;
	kvw_status st = ofi_uri_prov(d, u);

	if (st != KVW_OK || (st = kvw_sock_resolve(d->ctx, u, true, "ofi: ", &ai)) != KVW_OK)
		return st;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
		st = kvw_set_err(d->ctx, errno == EADDRINUSE ? KVW_ERR_BUSY : KVW_ERR_IO,
				 "cannot listen on ofi://%s:%u (control stream): %s", u->host, u->port,
				 strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return st;
	}
	freeaddrinfo(ai);
	ofi_listener_uri(l, fd, u, ofi_of(d)->prov);
	return kvw_sock_listen_fd(l, fd, false, NULL, ofi_on_frame, NULL);
}

static kvw_status ofi_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u)
{
	struct addrinfo *ai;
	int fd, one = 1, rc;
	kvw_status st = ofi_uri_prov(d, u);

	if (st != KVW_OK || (st = kvw_sock_resolve(d->ctx, u, false, "ofi: ", &ai)) != KVW_OK)
		return st;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return kvw_set_err(d->ctx, KVW_ERR_IO, "ofi: socket: %s", strerror(errno));
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc < 0 && errno != EINPROGRESS) {
		st = kvw_set_err(d->ctx, errno == ECONNREFUSED ? KVW_ERR_CONNREFUSED : KVW_ERR_IO,
				 "cannot connect to ofi://%s:%u (control stream): %s (is the decode side "
				 "listening there?)", u->host, u->port, strerror(errno));
		close(fd);
		return st;
	}
	if ((st = kvw_sockep_attach(ep, fd, false, ofi_on_frame, NULL)) != KVW_OK) {
		close(fd);
		return st;
	}
	if (rc < 0)
		kvw_sockep(ep)->connecting_fd = fd;
	else
		kvw_core_ep_up(ep);
	return KVW_OK;
}

const struct kvw_driver_ops kvw_ofi_ops = {
	.name = "ofi",
	.open = ofi_open,
	.close = ofi_close,
	.query_caps = ofi_caps,
	.mem_reg = ofi_mem_reg,
	.mem_dereg = ofi_mem_dereg,
	.progress = ofi_progress,
	.listen = ofi_listen,
	.listener_close = kvw_sock_listener_close,
	.connect = ofi_connect,
	.ep_close = ofi_ep_close,
	.ep_resources = ofi_ep_resources,
	.send_ctrl = kvw_sock_send_ctrl,
	.grant_keys = ofi_grant_keys,
	.post_frags = ofi_post_frags,
	.cancel = ofi_cancel,
	.revoke = ofi_revoke,
	.grant_done = ofi_grant_done,
	.flush = kvw_sock_flush,
	.prepare_wait = kvw_sock_prepare_wait,
	.probe = ofi_probe,
};
