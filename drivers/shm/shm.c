/* SPDX-License-Identifier: MIT */
/* shm driver: peers on one host. The sender's arena (memfd from
 * kvw_mem_alloc) is passed read-only over a unix socket; DESC frames name
 * (source offset -> granted block) and the receiver makes the one copy
 * into its own pages, so its grant checks and abort fence are local. */
#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SHM_MAPS 64

struct shm_map {
	uint32_t id;
	uint8_t *base;
	size_t len;
};

struct shm_ep {
	uint32_t sent[SHM_MAPS]; /* arenas announced to the peer */
	uint32_t n_sent;
	struct shm_map map[SHM_MAPS]; /* peer arenas mapped here */
	uint32_t n_map;
};

static kvw_status shm_drv_open(kvw_drv *d)
{
	d->priv = NULL;
	return KVW_OK;
}

static kvw_status shm_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	*ci = (struct kvw_caps_info){.caps = KVW_CAP_SAME_HOST | KVW_CAP_ZERO_COPY_TX, .max_rails = 1,
				     .max_frag = KVW_WIRE_MAX_DATA, .poll_us = kvw_sock_fault_poll_us(d)};
	return KVW_OK;
}

static kvw_status shm_addr(kvw_ctx *ctx, const struct kvw_uri *u, struct sockaddr_un *sa)
{
	const char *path = u->path[0] ? u->path : u->host;

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!path[0] || strlen(path) >= sizeof(sa->sun_path))
		return kvw_set_err(ctx, KVW_ERR_INVALID, "shm URI needs a socket path shorter than %zu "
				   "characters, e.g. shm:///run/kvwire/decode0.sock", sizeof(sa->sun_path));
	strcpy(sa->sun_path, path);
	return KVW_OK;
}

static struct shm_ep *shm_ep_state(kvw_ep *ep)
{
	struct kvw_sockep *se = kvw_sockep(ep);

	if (se && !se->priv)
		se->priv = calloc(1, sizeof(struct shm_ep));
	return se ? se->priv : NULL;
}

static kvw_status shm_reject(struct kvw_stream *s, const char *why)
{
	kvw_core_reject(s->ep, KVW_ERR_PROTO, why);
	return KVW_ERR_PROTO;
}

static kvw_status shm_on_mem(struct kvw_stream *s, const struct kvw_wire_mem *m)
{
	struct shm_ep *se = shm_ep_state(s->ep);
	int fd = kvw_stream_take_fd(s);
	struct stat st;
	void *p;

	if (fd < 0)
		return shm_reject(s, "MEM frame without its file descriptor");
	if (!se || se->n_map == SHM_MAPS || fstat(fd, &st) || m->len == 0 ||
	    (uint64_t)st.st_size < m->len) {
		close(fd);
		return shm_reject(s, "MEM frame: too many arenas or size larger than the file");
	}
	p = mmap(NULL, m->len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0); /* fault once, not per page */
	close(fd);
	if (p == MAP_FAILED)
		return shm_reject(s, "MEM frame: cannot map the peer's arena");
	se->map[se->n_map++] = (struct shm_map){.id = m->mem_id, .base = p, .len = m->len};
	return KVW_OK;
}

static kvw_status shm_on_desc(struct kvw_stream *s, const struct kvw_wire_desc *dsc)
{
	struct shm_ep *se = shm_ep_state(s->ep);
	struct kvw_wire_data d = {.token = dsc->token, .layer = dsc->layer, .blk_idx = dsc->blk_idx,
				  .bytes = dsc->bytes, .blk_off = dsc->blk_off};
	const struct shm_map *m = NULL;
	uint8_t *dst;

	s->ep->last_rx_ns = kvw_now_ns();
	for (uint32_t i = 0; se && i < se->n_map; i++)
		if (se->map[i].id == dsc->mem_id)
			m = &se->map[i];
	if (!m || dsc->src_off > m->len || dsc->bytes > m->len - dsc->src_off) {
		kvw_core_token_reject(s->ep, dsc->token, "whose source lies outside the sender's "
				      "shared arena");
		return KVW_OK;
	}
	if (kvw_core_dst(s->ep, &d, &dst) != KVW_OK)
		return KVW_OK; /* refused or revoked: nothing copied */
	memcpy(dst, m->base + dsc->src_off, dsc->bytes);
	s->ep->cnt.rail[0].bytes_rx += dsc->bytes;
	s->ep->cnt.rail[0].frags_rx++;
	kvw_core_landed(s->ep, dsc->token, dsc->layer, dsc->bytes);
	return KVW_OK;
}

static kvw_status shm_on_frame(struct kvw_stream *s, const struct kvw_wire_hdr *h, const void *body)
{
	if (h->type == KVW_T_MEM) {
		struct kvw_wire_mem m;
		memcpy(&m, body, sizeof(m));
		return shm_on_mem(s, &m);
	}
	struct kvw_wire_desc d;
	memcpy(&d, body, sizeof(d));
	return shm_on_desc(s, &d);
}

/* Is something already listening there? Then refuse; else clear a stale file. */
static kvw_status shm_claim_path(kvw_ctx *ctx, const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char dir[sizeof(sa->sun_path)], *slash;
	int rc;

	if (fd < 0)
		return KVW_ERR_IO;
	rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	close(fd);
	if (rc == 0)
		return kvw_set_err(ctx, KVW_ERR_BUSY, "another process listens on %s: pick another "
				   "socket path", sa->sun_path);
	unlink(sa->sun_path);
	strcpy(dir, sa->sun_path);
	if ((slash = strrchr(dir, '/')) && slash != dir) {
		*slash = 0;
		mkdir(dir, 0755); /* e.g. /run/kvwire */
	}
	return KVW_OK;
}

static kvw_status shm_listen(kvw_drv *d, kvw_listener *l, const struct kvw_uri *u)
{
	struct sockaddr_un sa;
	kvw_status st = shm_addr(d->ctx, u, &sa);
	int fd;

	if (st != KVW_OK || (st = shm_claim_path(d->ctx, &sa)) != KVW_OK)
		return st;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 128)) {
		st = kvw_set_err(d->ctx, KVW_ERR_IO, "cannot listen on %s: %s", sa.sun_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return st;
	}
	return kvw_sock_listen_fd(l, fd, true, sa.sun_path, shm_on_frame, NULL);
}

static kvw_status shm_connect(kvw_drv *d, kvw_ep *ep, const struct kvw_uri *u)
{
	struct sockaddr_un sa;
	kvw_status st = shm_addr(d->ctx, u, &sa);
	int fd;

	if (st != KVW_OK)
		return st;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return KVW_ERR_IO;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return kvw_set_err(d->ctx, e == ECONNREFUSED || e == ENOENT ? KVW_ERR_CONNREFUSED : KVW_ERR_IO,
				   "cannot connect to %s: %s (is the decode side listening there?)",
				   sa.sun_path, strerror(e));
	}
	if ((st = kvw_sockep_attach(ep, fd, true, shm_on_frame, NULL)) != KVW_OK) {
		close(fd);
		return st;
	}
	kvw_core_ep_up(ep);
	return KVW_OK;
}

/* Announces an arena to the peer once, with a read-only fd. */
static kvw_status shm_announce(kvw_ep *ep, struct shm_ep *se, const kvw_mem *m)
{
	uint8_t frame[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_mem)];
	struct kvw_wire_mem wm = {.mem_id = m->id, .len = m->len};
	char path[64];
	int fd;

	for (uint32_t i = 0; i < se->n_sent; i++)
		if (se->sent[i] == m->id)
			return KVW_OK;
	if (se->n_sent == SHM_MAPS)
		return KVW_ERR_NOMEM;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", m->memfd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return KVW_ERR_IO;
	kvw_wire_hdr_encode(frame, KVW_T_MEM, 0, sizeof(wm), ep->peer_id);
	memcpy(frame + sizeof(struct kvw_wire_hdr), &wm, sizeof(wm));
	if (kvw_stream_ctrl(kvw_sockep(ep)->rail[0], frame, sizeof(frame), fd) != KVW_OK) {
		close(fd);
		return KVW_ERR_NOMEM;
	}
	se->sent[se->n_sent++] = m->id;
	return KVW_OK;
}

static size_t shm_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n)
{
	struct shm_ep *se = shm_ep_state(ep);
	struct kvw_stream *s = kvw_sockep(ep)->rail[0];
	uint8_t head[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_desc)];
	size_t i;

	for (i = 0; se && i < n; i++) {
		struct kvw_wire_desc d = {.token = f[i].token, .layer = f[i].layer, .blk_idx = f[i].blk_idx,
					  .bytes = f[i].bytes, .blk_off = f[i].blk_off,
					  .src_off = f[i].src_off, .mem_id = f[i].src_mem->id};
		if (f[i].src_mem->memfd < 0) {
			kvw_core_req_fail(f[i].req, KVW_ERR_UNSUPPORTED, "the shm driver sends only from "
					  "memory allocated with kvw_mem_alloc() (shareable memfd)");
			break;
		}
		if (shm_announce(ep, se, f[i].src_mem) != KVW_OK)
			break;
		kvw_wire_hdr_encode(head, KVW_T_DESC, 0, sizeof(d), ep->peer_id);
		memcpy(head + sizeof(struct kvw_wire_hdr), &d, sizeof(d));
		if (!kvw_stream_data(s, head, sizeof(head), NULL, 0, f[i].req))
			break;
	}
	kvw_sock_flush_ep(ep);
	return i;
}

static void shm_ep_close(kvw_ep *ep)
{
	struct kvw_sockep *sk = kvw_sockep(ep);
	struct shm_ep *se = sk ? sk->priv : NULL;

	for (uint32_t i = 0; se && i < se->n_map; i++)
		munmap(se->map[i].base, se->map[i].len);
	kvw_sock_ep_close(ep);
}

const struct kvw_driver_ops kvw_shm_ops = {
	.name = "shm",
	.open = shm_drv_open,
	.query_caps = shm_caps,
	.progress = kvw_sock_progress,
	.listen = shm_listen,
	.listener_close = kvw_sock_listener_close,
	.connect = shm_connect,
	.ep_close = shm_ep_close,
	.send_ctrl = kvw_sock_send_ctrl,
	.post_frags = shm_post_frags,
	.cancel = kvw_sock_cancel,
	.flush = kvw_sock_flush,
};
