/* SPDX-License-Identifier: MIT */
/* Socket endpoints shared by the tcp and shm drivers (see sock.h). */
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct kvw_stream *kvw_stream_new(kvw_ep *ep, int fd, bool is_unix, uint32_t rail,
					 kvw_stream_frame_fn fn, void *drvp)
{
	struct kvw_stream *s = calloc(1, sizeof(*s));

	if (!s || kvw_stream_init(s, fd, is_unix, ep, rail) != KVW_OK ||
	    (is_unix && kvw_stream_set_buffered(s) != KVW_OK)) { /* shm: no inline payloads */
		if (s)
			kvw_stream_fini(s);
		free(s);
		return NULL;
	}
	s->on_frame = fn;
	s->drv = drvp;
	kvw_core_watch_fd(kvw_core_ep_ctx(ep), fd, false);
	return s;
}

static struct kvw_socklist *kvw_socklist(const kvw_drv *d) { return d->priv; }

static void kvw_sockep_link(struct kvw_sockep *se, kvw_ep *ep)
{
	struct kvw_socklist *sl = kvw_socklist(kvw_core_ep_drv(ep));

	se->ep = ep;
	se->list = sl;
	se->prev = NULL;
	se->next = sl->eps;
	if (sl->eps)
		sl->eps->prev = se;
	sl->eps = se;
}

static void kvw_sockep_unlink(struct kvw_sockep *se)
{
	struct kvw_socklist *sl = se->list;

	if (sl->iter_next == se)
		sl->iter_next = se->next;
	if (se->prev)
		se->prev->next = se->next;
	else
		sl->eps = se->next;
	if (se->next)
		se->next->prev = se->prev;
	se->next = se->prev = NULL;
}

kvw_status kvw_sockep_attach(kvw_ep *ep, int fd, bool is_unix, kvw_stream_frame_fn fn, void *drvp)
{
	struct kvw_sockep *se = calloc(1, sizeof(*se));

	if (!se)
		return KVW_ERR_NOMEM;
	se->connecting_fd = -1;
	se->rail[0] = kvw_stream_new(ep, fd, is_unix, 0, fn, drvp);
	if (!se->rail[0]) {
		free(se);
		return KVW_ERR_NOMEM;
	}
	se->n = 1;
	kvw_sockep_link(se, ep);
	kvw_core_ep_set_priv(ep, se);
	return KVW_OK;
}

kvw_status kvw_sockep_add_rail(kvw_ep *ep, int fd, uint32_t idx)
{
	struct kvw_sockep *se = kvw_sockep(ep);
	struct kvw_stream *s0 = se->rail[0];

	if (idx >= KVW_MAX_RAILS || se->rail[idx])
		return KVW_ERR_INVALID;
	se->rail[idx] = kvw_stream_new(ep, fd, s0->is_unix, idx, s0->on_frame, s0->drv);
	if (!se->rail[idx])
		return KVW_ERR_NOMEM;
	if (idx + 1 > se->n)
		se->n = idx + 1;
	return KVW_OK;
}

/* The peer's address for per-address limits: tcp its IP, unix its uid. */
static void kvw_sock_peer_addr(int fd, bool is_unix, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct ucred cr;
	socklen_t cl = sizeof(cr);

	buf[0] = 0;
	if (is_unix) {
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0)
			snprintf(buf, len, "uid:%u", (unsigned)cr.uid);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)len);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)len);
}

/* Out of fds: the listen socket stays readable, so without this every
 * progress pass would fail accept() again (a busy loop). The reserve fd is
 * given up for one accept, the connection is told why and closed, and the
 * reserve taken back; the backlog drains instead of spinning. */
static void kvw_sock_accept_emfile(kvw_listener *l, struct kvw_socklisten *sl)
{
	struct {
		uint8_t h[sizeof(struct kvw_wire_hdr)];
		struct kvw_wire_reject r;
	} f = {.r = {.status = KVW_ERR_BUSY,
		     .reason = "listener out of file descriptors: retry later (its operator: raise ulimit -n)"}};
	int fd;

	if (sl->reserve_fd < 0)
		return;
	close(sl->reserve_fd);
	fd = accept4(sl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd >= 0) {
		kvw_wire_hdr_encode(f.h, KVW_T_REJECT, 0, sizeof(f.r), 0);
		(void)!send(fd, &f, sizeof(f), MSG_DONTWAIT | MSG_NOSIGNAL);
		close(fd);
	}
	sl->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0) /* accept() says EMFILE before it looks at the backlog */
		return;
	sl->emfile_refused++;
	if ((sl->emfile_refused & (sl->emfile_refused - 1)) == 0) /* 1, 2, 4, ...: no log flood */
		kvw_log(kvw_core_listener_ctx(l), 1, "listener %s: out of file descriptors, %llu connections refused so far: "
			"raise `ulimit -n` or lower max_handshakes", kvw_listener_uri(l),
			(unsigned long long)sl->emfile_refused);
}

static void kvw_sock_accept(kvw_listener *l)
{
	struct kvw_socklisten *sl = kvw_core_listener_priv(l);
	int one = 1;
	char addr[64];

	for (int i = 0; i < 16; i++) {
		int fd = accept4(sl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		kvw_ep *ep;

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				kvw_sock_accept_emfile(l, sl);
			return;
		}
		if (!sl->is_unix)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		kvw_sock_peer_addr(fd, sl->is_unix, addr, sizeof(addr));
		ep = kvw_core_ep_accepted_from(l, addr);
		if (!ep || kvw_sockep_attach(ep, fd, sl->is_unix, sl->on_frame, sl->drvp) != KVW_OK) {
			close(fd);
			if (ep)
				kvw_core_ep_discard(ep);
			continue;
		}
		kvw_core_ep_admit(ep);
	}
}

static void kvw_sock_connecting(kvw_ep *ep, struct kvw_sockep *se)
{
	struct pollfd p = {.fd = se->connecting_fd, .events = POLLOUT};
	int err = 0;
	socklen_t el = sizeof(err);

	if (poll(&p, 1, 0) <= 0)
		return;
	getsockopt(se->connecting_fd, SOL_SOCKET, SO_ERROR, &err, &el);
	se->connecting_fd = -1;
	if (err) {
		char why[200];
		snprintf(why, sizeof(why), "cannot connect to %s: %s%s", kvw_core_ep_uri(ep), strerror(err),
			 err == ECONNREFUSED ? " (is the decode side's listener running?)" : "");
		kvw_set_err(kvw_core_ep_ctx(ep), err == ECONNREFUSED ? KVW_ERR_CONNREFUSED : KVW_ERR_IO, "%s", why);
		kvw_ep_fail(ep, err == ECONNREFUSED ? KVW_ERR_CONNREFUSED : KVW_ERR_IO, why);
		return;
	}
	kvw_core_ep_up(ep);
}

void kvw_sockep_retry_connect(kvw_ep *ep, const struct sockaddr_un *sa)
{
	struct kvw_sockep *se = kvw_sockep(ep);

	se->retry_sa = *sa;
	se->retry_connect = true;
}

static void kvw_sock_retry(kvw_ep *ep, struct kvw_sockep *se)
{
	int fd = se->rail[0]->fd;
	char why[200];

	if (connect(fd, (struct sockaddr *)&se->retry_sa, sizeof(se->retry_sa)) == 0 || errno == EISCONN) {
		se->retry_connect = false;
		kvw_core_ep_up(ep);
		return;
	}
	if (errno == EAGAIN || errno == EINTR)
		return; /* still full: the next pass tries again, the handshake deadline bounds it */
	snprintf(why, sizeof(why), "cannot connect to %s: %s (is the decode side listening there?)",
		 se->retry_sa.sun_path, strerror(errno));
	kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_CONNREFUSED, "%s", why);
	kvw_ep_fail(ep, KVW_ERR_CONNREFUSED, why);
}

static void kvw_sock_ep_progress(kvw_ep *ep)
{
	struct kvw_sockep *se = kvw_sockep(ep);

	if (se->connecting_fd >= 0) {
		kvw_sock_connecting(ep, se);
		return;
	}
	if (se->retry_connect) {
		kvw_sock_retry(ep, se);
		return;
	}
	for (uint32_t i = 0; i < se->n; i++) {
		struct kvw_stream *s = se->rail[i];
		if (!s || s->dead)
			continue;
		if (!kvw_stream_idle(s))
			kvw_stream_flush(s);
		kvw_stream_read(s);
		if (!kvw_core_ep_alive(ep) || kvw_core_ep_priv(ep) != se)
			return;
	}
}

bool kvw_sock_prepare_wait(kvw_drv *d)
{
	for (struct kvw_sockep *se = kvw_socklist(d)->eps; se; se = se->next) {
		if (!kvw_core_ep_alive(se->ep))
			continue;
		for (uint32_t i = 0; i < se->n; i++)
			if (se->rail[i] && !se->rail[i]->dead && se->rail[i]->rb_pos < se->rail[i]->rb_len)
				return true; /* read ahead but not handled (budget ran out): no sleep */
	}
	return false;
}

unsigned kvw_sock_fault_poll_us(kvw_drv *d)
{
	return kvw_core_cfg(d->ctx)->fault[0] ? 200 : 0;
}

kvw_status kvw_sock_progress(kvw_drv *d)
{
	struct kvw_socklist *sl = kvw_socklist(d);

	for (struct kvw_socklisten *l = sl->listeners; l; l = l->next)
		kvw_sock_accept(l->l);
	/* a pass may close endpoints (a joined rail's): unlinking the next one
	 * to visit moves iter_next past it */
	for (struct kvw_sockep *se = sl->eps; se; se = sl->iter_next) {
		sl->iter_next = se->next;
		if (kvw_core_ep_alive(se->ep))
			kvw_sock_ep_progress(se->ep);
	}
	sl->iter_next = NULL;
	return KVW_OK;
}

kvw_status kvw_sock_send_ctrl(kvw_ep *ep, const void *frame, size_t len)
{
	struct kvw_sockep *se = kvw_sockep(ep);
	kvw_status st;

	if (!se || !se->rail[0])
		return KVW_ERR_CLOSED;
	st = kvw_stream_ctrl(se->rail[0], frame, len, -1);
	if (st == KVW_OK && se->connecting_fd < 0 && !se->retry_connect && !kvw_core_batching(kvw_core_ep_ctx(ep)))
		kvw_stream_flush(se->rail[0]);
	return st;
}

kvw_status kvw_sock_flush_ep(kvw_ep *ep)
{
	struct kvw_sockep *se = kvw_sockep(ep);

	if (!se || se->connecting_fd >= 0 || se->retry_connect || kvw_core_batching(kvw_core_ep_ctx(ep)))
		return KVW_OK;
	for (uint32_t i = 0; i < se->n; i++)
		if (se->rail[i] && !se->rail[i]->dead && !kvw_stream_idle(se->rail[i]))
			kvw_stream_flush(se->rail[i]);
	return KVW_OK;
}

void kvw_sock_flush(kvw_drv *d)
{
	for (struct kvw_sockep *se = kvw_socklist(d)->eps; se; se = se->next)
		if (kvw_core_ep_alive(se->ep))
			kvw_sock_flush_ep(se->ep);
}

/* A half-written frame is finished from a bounce copy: nothing of req's
 * pages is read after this returns. */
kvw_status kvw_sock_cancel(kvw_ep *ep, kvw_req *req)
{
	struct kvw_sockep *se = kvw_sockep(ep);

	for (uint32_t i = 0; se && i < se->n; i++)
		if (se->rail[i])
			kvw_stream_cancel(se->rail[i], req);
	return KVW_OK;
}

void kvw_sock_ep_resources(const kvw_ep *ep, struct kvw_ep_res *r)
{
	const struct kvw_sockep *se = kvw_sockep(ep);

	if (!se)
		return;
	r->bytes += sizeof(*se);
	for (uint32_t i = 0; i < se->n; i++) {
		const struct kvw_stream *s = se->rail[i];
		if (!s)
			continue;
		r->fds += s->fd >= 0;
		r->bytes += sizeof(*s) + (uint64_t)s->tx_cap * sizeof(*s->tx) + s->rx_body_cap + s->rb_cap;
	}
}

void kvw_sock_ep_close(kvw_ep *ep)
{
	struct kvw_sockep *se = kvw_sockep(ep);

	if (!se)
		return;
	for (uint32_t i = 0; i < se->n; i++) {
		struct kvw_stream *s = se->rail[i];
		if (!s)
			continue;
		if (s->fd >= 0) {
			kvw_stream_flush_final(s); /* best effort: CLOSE / ABORT / REJECT frames */
			kvw_core_unwatch_fd(kvw_core_ep_ctx(ep), s->fd);
		}
		kvw_stream_fini(s);
		free(s);
	}
	kvw_sockep_unlink(se);
	free(se->priv);
	free(se);
	kvw_core_ep_set_priv(ep, NULL);
}

kvw_status kvw_sock_join(kvw_ep *ep, kvw_ep *extra, uint32_t idx)
{
	struct kvw_sockep *se = kvw_sockep(ep), *sx = kvw_sockep(extra);
	struct kvw_stream *s;

	if (!se || !sx || idx >= KVW_MAX_RAILS || se->rail[idx])
		return KVW_ERR_INVALID;
	s = sx->rail[0];
	sx->rail[0] = NULL;
	sx->n = 0;
	s->ep = ep;
	s->rail = idx;
	se->rail[idx] = s;
	if (idx + 1 > se->n)
		se->n = idx + 1;
	kvw_sockep_unlink(sx);
	free(sx->priv);
	free(sx);
	kvw_core_ep_set_priv(extra, NULL);
	return KVW_OK;
}

kvw_status kvw_sock_listen_fd(kvw_listener *l, int fd, bool is_unix, const char *path,
			      kvw_stream_frame_fn fn, void *drvp)
{
	struct kvw_socklisten *sl = calloc(1, sizeof(*sl));

	if (!sl)
		return KVW_ERR_NOMEM;
	sl->fd = fd;
	sl->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	sl->is_unix = is_unix;
	snprintf(sl->path, sizeof(sl->path), "%s", path ? path : "");
	sl->on_frame = fn;
	sl->drvp = drvp;
	sl->l = l;
	struct kvw_socklist *list = kvw_socklist(kvw_core_listener_drv(l));
	sl->next = list->listeners;
	list->listeners = sl;
	kvw_core_listener_set_priv(l, sl);
	kvw_core_watch_fd(kvw_core_listener_ctx(l), fd, false);
	return KVW_OK;
}

void kvw_sock_listener_close(kvw_listener *l)
{
	struct kvw_socklisten *sl = kvw_core_listener_priv(l);

	if (!sl)
		return;
	for (struct kvw_socklisten **pp = &kvw_socklist(kvw_core_listener_drv(l))->listeners; *pp;
	     pp = &(*pp)->next)
		if (*pp == sl) {
			*pp = sl->next;
			break;
		}
	kvw_core_unwatch_fd(kvw_core_listener_ctx(l), sl->fd);
	close(sl->fd);
	if (sl->reserve_fd >= 0)
		close(sl->reserve_fd);
	if (sl->path[0])
		unlink(sl->path);
	free(sl);
	kvw_core_listener_set_priv(l, NULL);
}

kvw_status kvw_sock_resolve(kvw_ctx *ctx, const struct kvw_uri *u, bool passive, const char *who,
			    struct addrinfo **out)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = passive ? AI_PASSIVE : 0};
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%u", u->port);
	rc = getaddrinfo(u->host[0] ? u->host : NULL, port, &hints, out);
	if (rc)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "%scannot resolve \"%s\": %s", who, u->host,
				   gai_strerror(rc));
	return KVW_OK;
}
