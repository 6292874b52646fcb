/* SPDX-License-Identifier: MIT */
/* tcp driver: kernel sockets for hosts without a bypass fabric. Several
 * streams (rails) per endpoint; DATA frames are written with sendmsg
 * straight from the KV pages and read straight into the granted blocks. */
#include "sock.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static kvw_status tcp_open(kvw_drv *d)
{
	if (!(d->priv = calloc(1, sizeof(struct kvw_socklist))))
		return KVW_ERR_NOMEM;
	return KVW_OK;
}

static void tcp_close(kvw_drv *d)
{
	free(d->priv);
	d->priv = NULL;
}

static kvw_status tcp_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	*ci = (struct kvw_caps_info){.caps = KVW_CAP_MULTI_RAIL, .max_rails = KVW_MAX_RAILS,
				     .max_frag = KVW_WIRE_MAX_DATA, .max_gather = 1024,
				     .poll_us = kvw_sock_fault_poll_us(d)};
	return KVW_OK;
}

static kvw_status tcp_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u)
{
	struct addrinfo *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1;
	kvw_status st = kvw_sock_resolve(d->ctx, u, true, "", &ai);
	char host[128];

	if (st != KVW_OK)
		return st;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
		st = kvw_set_err(d->ctx, errno == EADDRINUSE ? KVW_ERR_BUSY : KVW_ERR_IO,
				 "cannot listen on tcp://%s:%u: %s", u->host, u->port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return st;
	}
	freeaddrinfo(ai);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), NULL, 0, NI_NUMERICHOST);
	char uri[KVW_CORE_URI_MAX];
	snprintf(uri, sizeof(uri), ss.ss_family == AF_INET6 ? "tcp://[%s]:%u%s%s" : "tcp://%s:%u%s%s",
		 host, ntohs(((struct sockaddr_in *)&ss)->sin_port), u->query[0] ? "?" : "", u->query);
	kvw_core_listener_set_uri(l, uri);
	return kvw_sock_listen_fd(l, fd, false, NULL, NULL, NULL);
}

/* Blocking connect bounded by the connect timeout (extra rails). */
static int tcp_connect_fd(kvw_ctx *ctx, const struct kvw_uri *u, bool wait, int *pending)
{
	struct addrinfo *ai;
	int fd, one = 1, rc;

	if (kvw_sock_resolve(ctx, u, false, "", &ai) != KVW_OK)
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	*pending = rc < 0 && errno == EINPROGRESS;
	if (rc < 0 && !*pending) {
		kvw_set_err(ctx, errno == ECONNREFUSED ? KVW_ERR_CONNREFUSED : KVW_ERR_IO,
			    "cannot connect to tcp://%s:%u: %s", u->host, u->port, strerror(errno));
		close(fd);
		return -1;
	}
	if (*pending && wait) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t el = sizeof(err);
		if (poll(&p, 1, (int)kvw_core_cfg(ctx)->connect_timeout_ms) <= 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
			kvw_set_err(ctx, KVW_ERR_IO, "extra rail to tcp://%s:%u: %s", u->host, u->port,
				    strerror(err ? err : ETIMEDOUT));
			close(fd);
			return -1;
		}
		*pending = 0;
	}
	return fd;
}

static kvw_status tcp_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u)
{
	int pending, fd = tcp_connect_fd(d->ctx, u, false, &pending);
	struct kvw_uri *keep;
	kvw_status st;

	if (fd < 0)
		return kvw_ctx_last_error(d->ctx)[0] ? KVW_ERR_CONNREFUSED : KVW_ERR_IO;
	if ((st = kvw_sockep_attach(ep, fd, false, NULL, NULL)) != KVW_OK) {
		close(fd);
		return st;
	}
	keep = malloc(sizeof(*keep)); /* for the extra rails */
	if (keep)
		*keep = *u;
	kvw_sockep(ep)->priv = keep;
	if (pending)
		kvw_sockep(ep)->connecting_fd = fd;
	else
		kvw_core_ep_up(ep);
	return KVW_OK;
}

static kvw_status tcp_open_rails(kvw_ep *ep)
{
	struct kvw_sockep *se = kvw_sockep(ep);
	const struct kvw_uri *u = se->priv;
	uint8_t frame[128];

	if (!u)
		return KVW_ERR_NOMEM;
	for (uint32_t i = 1; i < kvw_core_ep_rails(ep); i++) {
		int pending, fd = tcp_connect_fd(kvw_core_ep_ctx(ep), u, true, &pending);
		kvw_status st;

		if (fd < 0)
			return KVW_ERR_IO;
		if ((st = kvw_sockep_add_rail(ep, fd, i)) != KVW_OK) {
			close(fd);
			return st;
		}
		st = kvw_stream_ctrl(se->rail[i], frame, kvw_core_hello_join(ep, i, frame), -1);
		if (st != KVW_OK)
			return st;
	}
	return KVW_OK;
}

static size_t tcp_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n)
{
	struct kvw_sockep *se = kvw_sockep(ep);
	uint8_t head[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_data)];
	size_t i;

	for (i = 0; i < n; i++) {
		struct kvw_stream *s = se->rail[f[i].rail < se->n ? f[i].rail : 0];
		struct kvw_wire_data d = {.token = f[i].token, .layer = f[i].layer,
					  .blk_idx = f[i].blk_idx, .bytes = f[i].bytes,
					  .blk_off = f[i].blk_off};
		if (!s)
			s = se->rail[0];
		kvw_wire_hdr_encode(head, KVW_T_DATA, 0, (uint32_t)(sizeof(d) + f[i].bytes), kvw_core_ep_peer_id(ep));
		memcpy(head + sizeof(struct kvw_wire_hdr), &d, sizeof(d));
		if (!kvw_stream_data_gather(s, head, sizeof(head), f[i].src, f[i].bytes, f[i].piece,
					    f[i].src_stride, f[i].req))
			break;
	}
	kvw_sock_flush_ep(ep);
	return i;
}

const struct kvw_driver_ops kvw_tcp_ops = {
	.name = "tcp",
	.open = tcp_open,
	.close = tcp_close,
	.query_caps = tcp_caps,
	.progress = kvw_sock_progress,
	.listen = tcp_listen,
	.listener_close = kvw_sock_listener_close,
	.connect = tcp_connect,
	.join = kvw_sock_join,
	.open_rails = tcp_open_rails,
	.ep_close = kvw_sock_ep_close,
	.ep_resources = kvw_sock_ep_resources,
	.send_ctrl = kvw_sock_send_ctrl,
	.post_frags = tcp_post_frags,
	.cancel = kvw_sock_cancel,
	.flush = kvw_sock_flush,
	.prepare_wait = kvw_sock_prepare_wait,
};
