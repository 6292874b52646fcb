/* SPDX-License-Identifier: MIT */
/* What the socket drivers (tcp, shm) share: endpoints made of framed
 * streams (one per rail), listeners, and their progress loop. */
#ifndef KVW_SOCK_H
#define KVW_SOCK_H
#include "stream.h"
#include <netdb.h>
#include <sys/un.h>

struct kvw_sockep {
	kvw_ep *ep;
	struct kvw_socklist *list;
	struct kvw_sockep *next, *prev; /* the driver's endpoints (kvw_socklist) */
	struct kvw_stream *rail[KVW_MAX_RAILS];
	uint32_t n;
	int connecting_fd;       /* non-blocking connect in flight, or -1 */
	bool retry_connect;      /* unix socket: the listener's backlog was full (EAGAIN) */
	struct sockaddr_un retry_sa;
	void *priv;              /* driver's own per-endpoint state */
};

struct kvw_socklisten {
	kvw_listener *l;
	struct kvw_socklisten *next;
	int fd;
	int reserve_fd;          /* /dev/null, given up to accept at EMFILE */
	uint64_t emfile_refused; /* connections refused for want of fds */
	bool is_unix;
	char path[108];          /* unix socket to unlink on close */
	kvw_stream_frame_fn on_frame;
	void *drvp;
};

/* What one socket driver (tcp or shm) owns: its endpoints' and listeners'
 * transports. The driver's d->priv points to a struct whose first member is
 * a struct kvw_socklist (tcp: the list alone), set up in ops->open. */
struct kvw_socklist {
	struct kvw_sockep *eps;
	struct kvw_sockep *iter_next;   /* the walk in progress: unlinking it moves it on */
	struct kvw_socklisten *listeners;
};

/* Gives ep a sockep whose rail 0 is fd. */
kvw_status kvw_sockep_attach(kvw_ep *ep, int fd, bool is_unix, kvw_stream_frame_fn fn, void *drvp);
/* A unix-socket connect that found the listener's backlog full (EAGAIN):
 * progress retries it on fd until it goes through (then HELLO) or the
 * handshake deadline fails the endpoint. Call after kvw_sockep_attach. */
void kvw_sockep_retry_connect(kvw_ep *ep, const struct sockaddr_un *sa);
/* Adds fd as rail idx of ep. */
kvw_status kvw_sockep_add_rail(kvw_ep *ep, int fd, uint32_t idx);
static inline struct kvw_sockep *kvw_sockep(const kvw_ep *ep) { return kvw_core_ep_priv(ep); }
/* Accepts on every listener of d, connects, flushes and reads every
 * endpoint of d. */
/* host:port of a URI for a TCP socket (passive: to listen on; "" host = any).
 * who prefixes the error sentence ("ofi: "; "" for tcp). */
kvw_status kvw_sock_resolve(kvw_ctx *ctx, const struct kvw_uri *u, bool passive, const char *who,
			    struct addrinfo **out);
kvw_status kvw_sock_progress(kvw_drv *d);
/* ops->prepare_wait of the socket drivers: true while a stream holds
 * read-ahead bytes a pass left unhandled (its budget ran out); the socket's
 * fd would not wake the context for them. */
bool kvw_sock_prepare_wait(kvw_drv *d);
/* With config `fault` set, frames held by the fault layer need a timed
 * wake-up: the context then polls every this many us (else 0). */
unsigned kvw_sock_fault_poll_us(kvw_drv *d);
kvw_status kvw_sock_send_ctrl(kvw_ep *ep, const void *frame, size_t len);
/* Writes ep's queued frames now, unless inside a progress pass (then the
 * pass's end does it: ops->flush = kvw_sock_flush). */
kvw_status kvw_sock_flush_ep(kvw_ep *ep);
void kvw_sock_flush(kvw_drv *d);
kvw_status kvw_sock_cancel(kvw_ep *ep, kvw_req *req);
void kvw_sock_ep_close(kvw_ep *ep);
/* ops->ep_resources of the socket drivers: a fd and the rings of each rail. */
void kvw_sock_ep_resources(const kvw_ep *ep, struct kvw_ep_res *r);
kvw_status kvw_sock_join(kvw_ep *ep, kvw_ep *extra, uint32_t rail_idx);
void kvw_sock_listener_close(kvw_listener *l);
kvw_status kvw_sock_listen_fd(kvw_listener *l, int fd, bool is_unix, const char *path,
			      kvw_stream_frame_fn fn, void *drvp);
#endif
