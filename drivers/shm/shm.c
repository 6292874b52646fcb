/* SPDX-License-Identifier: MIT */
/* shm driver: peers on one host. The sender's arena (memfd from
 * kvw_mem_alloc) is passed read-only over a unix socket; DESC frames name
 * (source offset -> granted block) and the receiver makes the one copy
 * into its own pages, so its grant checks and abort fence are local. */
#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

/* What a peer may make this process map (docs/drivers/shm.md): at most
 * SHM_MAPS arenas per endpoint, together at most the host's RAM (an arena
 * an honest sender sends from lives in this host's memory), and at most
 * SHM_CTX_MAP_CAP for all endpoints of a context (address space). Mapping
 * costs address space only: nothing is populated up front (no MAP_POPULATE);
 * a copy maps the 2 MiB grains it reads from, once each and only when they
 * hold no hole (pages the sender has), and reads a range with a hole with
 * pread, which returns zeros without allocating the hole. */
#define SHM_MAPS 64
#define SHM_CTX_MAP_CAP (32ull << 40)
#define SHM_GRAIN_SHIFT 21 /* 2 MiB grains: checked for holes and mapped once each */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older kernels refuse it and faults map pages */
#endif

struct shm_map {
	uint32_t id;
	int fd;              /* the peer's memfd (pread of ranges with holes), or -1 */
	uint8_t *base;       /* NULL: refused, see why */
	size_t len;
	uint64_t *seen;      /* bit per grain: no hole in it (holes cannot come back), mapped */
	bool full;           /* the whole memfd holds no hole */
	const char *why;     /* "arena N <why>": the refusal, or NULL */
};

struct shm_ep {
	uint32_t sent[SHM_MAPS]; /* arenas announced to the peer */
	uint32_t n_sent;
	struct shm_map map[SHM_MAPS]; /* peer arenas announced here */
	uint32_t n_map;
	uint64_t mapped;         /* bytes of them mapped */
};

struct shm_drv {
	struct kvw_socklist socks;   /* first: drivers/common's lists (sock.h) */
	uint64_t mapped;         /* bytes of peer arenas mapped, all endpoints */
	uint64_t ep_cap;         /* per endpoint: the host's RAM */
};

static kvw_status shm_drv_open(kvw_drv *d)
{
	struct shm_drv *sd = calloc(1, sizeof(*sd));
	long pages = sysconf(_SC_PHYS_PAGES), pg = sysconf(_SC_PAGESIZE);

	if (!sd)
		return KVW_ERR_NOMEM;
	sd->ep_cap = pages > 0 && pg > 0 ? (uint64_t)pages * (uint64_t)pg : 1ull << 40;
	d->priv = sd;
	return KVW_OK;
}

static void shm_drv_close(kvw_drv *d)
{
	free(d->priv);
	d->priv = NULL;
}

static kvw_status shm_caps(kvw_drv *d, struct kvw_caps_info *ci)
{
	*ci = (struct kvw_caps_info){.caps = KVW_CAP_SAME_HOST | KVW_CAP_ZERO_COPY_TX, .max_rails = 1,
				     .max_frag = KVW_WIRE_MAX_DATA, .max_gather = 1024,
				     .poll_us = kvw_sock_fault_poll_us(d)};
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

static kvw_status shm_reject(struct kvw_stream *s, kvw_status st, const char *why)
{
	kvw_core_reject(s->ep, st, why);
	return st;
}

static struct shm_map *shm_find(struct shm_ep *se, uint32_t id)
{
	for (uint32_t i = 0; se && i < se->n_map; i++)
		if (se->map[i].id == id)
			return &se->map[i];
	return NULL;
}

/* May this fd be mapped and read for len bytes without a fault this side
 * cannot survive or pays for? NULL = yes, else the refusal ("arena N ...").
 * Only a read-only memfd on shmem qualifies, sealed against shrinking (a
 * read past a shrunk end is SIGBUS) and against hole punching (a page
 * taken out under a copy would be allocated by it): F_SEAL_WRITE or
 * F_SEAL_FUTURE_WRITE. The seals are read before the size, so the size
 * seen can only grow afterwards. Writes through the sender's own mapping
 * stay possible and change nothing here: this side copies bytes it never
 * interprets into blocks the grant bounds. */
static const char *shm_fd_refusal(int fd, uint64_t len)
{
	int seals = fcntl(fd, F_GET_SEALS), fl = fcntl(fd, F_GETFL);
	struct statfs sf;
	struct stat st;

	if (seals < 0)
		return "is not a memfd (a pipe, socket or ordinary file was passed); the sender must "
		       "send from memory allocated with kvw_mem_alloc()";
	if (fstatfs(fd, &sf) || sf.f_type != TMPFS_MAGIC)
		return "is a hugetlbfs memfd, whose pages may fail to appear when read (SIGBUS); the "
		       "sender must send from memory allocated with kvw_mem_alloc()";
	if (!(seals & F_SEAL_SHRINK) || !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
		return "is a memfd not sealed against shrinking and hole punching (F_SEAL_SHRINK "
		       "and F_SEAL_FUTURE_WRITE), so the sender could pull pages from under this "
		       "side's copies; the sender must send from kvw_mem_alloc() memory of a kvwire "
		       "that seals it";
	if (fl < 0 || (fl & O_ACCMODE) != O_RDONLY)
		return "came as a writable fd; a kvwire sender passes a read-only one (check that "
		       "both sides run the same kvwire)";
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < len)
		return "is smaller than the length its MEM frame announced; the sender must "
		       "announce the arena's own length";
	return NULL;
}

/* The peer's arenas must stay within what one endpoint and the context may
 * map (see SHM_MAPS). */
static const char *shm_cap_refusal(const struct shm_drv *sd, const struct shm_ep *se, uint64_t len)
{
	if (len == 0)
		return "is empty; the sender must announce the arena's own length";
	if (len > sd->ep_cap - se->mapped)
		return "would take the peer's shared arenas on this endpoint past the host's RAM, "
		       "the most one endpoint may map; the sender must share only the pools it sends from";
	if (len > SHM_CTX_MAP_CAP - sd->mapped)
		return "would take the peer arenas this process maps past 32 TiB; close endpoints "
		       "that are no longer used";
	return NULL;
}

/* Maps the arena read-only, without populating it: O(1) inside progress,
 * whatever its size. Keeps fd in m. On refusal m->why says why. */
static void shm_map_arena(kvw_ep *ep, struct shm_ep *se, struct shm_map *m, int fd)
{
	struct shm_drv *sd = kvw_core_ep_drv(ep)->priv;
	uint64_t grains = ((uint64_t)m->len + (1u << SHM_GRAIN_SHIFT) - 1) >> SHM_GRAIN_SHIFT;
	void *p;

	if ((m->why = shm_cap_refusal(sd, se, m->len)) || (m->why = shm_fd_refusal(fd, m->len)))
		return;
	m->seen = calloc((grains + 63) / 64, sizeof(uint64_t));
	p = m->seen ? mmap(NULL, m->len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
	if (p == MAP_FAILED) {
		free(m->seen);
		m->seen = NULL;
		m->why = "could not be mapped (out of memory or address space, or vm.max_map_count); "
			 "close endpoints that are no longer used";
		return;
	}
	m->base = p;
	m->fd = fd;
	se->mapped += m->len;
	sd->mapped += m->len;
}

/* A refused arena is remembered with its reason: every DESC naming it
 * fails its request with REJECTED, nothing copied; the endpoint stays. */
static kvw_status shm_on_mem(struct kvw_stream *s, const struct kvw_wire_mem *wm)
{
	struct shm_ep *se = shm_ep_state(s->ep);
	int fd = kvw_stream_take_fd(s);
	struct shm_map *m;

	if (fd < 0)
		return shm_reject(s, KVW_ERR_PROTO, "MEM frame without its file descriptor: the "
				  "sender must pass the arena's memfd with the frame (SCM_RIGHTS)");
	if (!se || shm_find(se, wm->mem_id) || se->n_map == SHM_MAPS) {
		close(fd);
		return shm_reject(s, KVW_ERR_REJECTED, !se ? "out of memory for the peer's arenas" :
				  se->n_map == SHM_MAPS ? "the peer announced more than 64 shared arenas "
				  "on one endpoint; a sender shares each pool once (kvw_mem_alloc)" :
				  "the peer announced a shared arena id twice; a kvwire sender "
				  "announces each arena once per endpoint");
	}
	m = &se->map[se->n_map++];
	*m = (struct shm_map){.id = wm->mem_id, .fd = -1, .len = wm->len};
	shm_map_arena(s->ep, se, m, fd);
	if (m->fd < 0) {
		close(fd);
		kvw_core_ep_counters(s->ep)->rejected++;
		kvw_log(kvw_core_ep_ctx(s->ep), 2, "endpoint %u: shm: refused the peer's arena %u, nothing mapped: "
			"arena %u %s", kvw_core_ep_id(s->ep), wm->mem_id, wm->mem_id, m->why);
	}
	return KVW_OK;
}

/* Does the whole memfd hold no hole? (Its allocated blocks cover its size:
 * true of every arena kvw_mem_alloc pinned.) One fstat. */
static bool shm_full(const struct shm_map *m)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	struct stat st;

	return fstat(m->fd, &st) == 0 &&
	       (uint64_t)st.st_blocks * 512 >= ((uint64_t)st.st_size + pg - 1) / pg * pg;
}

/* Grain g holds no hole (asked with mincore over its pages unless the
 * whole memfd is known full): map its pages now, in one bounded call, and
 * remember it. With the seals required a hole cannot come back. */
static bool shm_grain_ready(struct shm_map *m, uint64_t g)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), at = g << SHM_GRAIN_SHIFT;
	uint64_t end = ((uint64_t)m->len + pg - 1) / pg * pg, len = end - at;
	unsigned char vec[(1u << SHM_GRAIN_SHIFT) / 4096];

	if (len > (1u << SHM_GRAIN_SHIFT))
		len = 1u << SHM_GRAIN_SHIFT;
	if (!m->full) {
		if (len / pg > sizeof(vec) || mincore(m->base + at, len, vec))
			return false;
		for (uint64_t i = 0; i < len / pg; i++)
			if (!(vec[i] & 1))
				return false;
	}
	madvise(m->base + at, len, MADV_POPULATE_READ); /* best effort: else faults map them */
	m->seen[g / 64] |= 1ull << (g % 64);
	return true;
}

/* Is [off, off + n) free of holes, so that copying it from the mapping
 * allocates nothing? Checks and maps the grains it touches for the first
 * time; the work is bounded by n plus a grain at each end. */
static bool shm_no_holes(struct shm_map *m, uint64_t off, uint64_t n)
{
	for (uint64_t g = off >> SHM_GRAIN_SHIFT; g <= (off + n - 1) >> SHM_GRAIN_SHIFT; g++) {
		if (m->seen[g / 64] >> (g % 64) & 1)
			continue;
		if (!m->full)
			m->full = shm_full(m);
		if (!shm_grain_ready(m, g))
			return false;
	}
	return true;
}

/* The one copy. A range with a hole (never written, or swapped out) is
 * read with pread: holes come back as zeros and are not allocated. */
static bool shm_copy(struct shm_map *m, uint8_t *dst, uint64_t off, uint64_t n)
{
	if (shm_no_holes(m, off, n)) {
		memcpy(dst, m->base + off, n);
		return true;
	}
	while (n) {
		ssize_t r = pread(m->fd, dst, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false; /* cannot be: the seals keep its size */
		dst += r;
		off += (uint64_t)r;
		n -= (uint64_t)r;
	}
	return true;
}

/* A DESC naming an arena this side refused (or never heard of): its
 * request fails REJECTED, and the sentence says why. */
static void shm_desc_refused(kvw_ep *ep, const struct kvw_wire_desc *dsc, const struct shm_map *m)
{
	char head[KVW_CORE_ERR_MAX];

	if (!kvw_core_token_live(ep, dsc->token)) {
		kvw_core_ep_counters(ep)->drops++;
		return; /* unknown or revoked grant: nothing to fail */
	}
	kvw_core_token_reject(ep, dsc->token, m ? "from a shared arena this side refused" :
			      "from a shared arena the sender never announced");
	snprintf(head, sizeof(head), "%s", kvw_ctx_last_error(kvw_core_ep_ctx(ep)));
	if (m)
		kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_REJECTED, "%s: arena %u %s", head, m->id, m->why);
	else
		kvw_set_err(kvw_core_ep_ctx(ep), KVW_ERR_REJECTED, "%s: arena %u has had no MEM frame; a kvwire "
			    "sender announces each arena before naming it", head, dsc->mem_id);
}

static kvw_status shm_on_desc(struct kvw_stream *s, const struct kvw_wire_desc *dsc)
{
	struct shm_ep *se = shm_ep_state(s->ep);
	struct kvw_wire_data d = {.token = dsc->token, .layer = dsc->layer, .blk_idx = dsc->blk_idx,
				  .bytes = dsc->bytes, .blk_off = dsc->blk_off};
	struct shm_map *m = shm_find(se, dsc->mem_id);
	uint8_t *dst;

	kvw_core_ep_heard(s->ep);
	if (!m || !m->base) {
		shm_desc_refused(s->ep, dsc, m);
		return KVW_OK;
	}
	if (dsc->src_off > m->len || dsc->bytes > m->len - dsc->src_off) {
		kvw_core_token_reject(s->ep, dsc->token, "whose source lies outside the sender's "
				      "shared arena");
		return KVW_OK;
	}
	if (kvw_core_dst(s->ep, &d, &dst) != KVW_OK)
		return KVW_OK; /* refused or revoked: nothing copied */
	if (!shm_copy(m, dst, dsc->src_off, dsc->bytes)) {
		kvw_core_token_reject(s->ep, dsc->token, "whose source could not be read");
		return KVW_OK;
	}
	kvw_core_ep_rail_rx(s->ep, 0, dsc->bytes);
	kvw_core_landed(s->ep, &d);
	return KVW_OK;
}

/* A gathered DESC (DESCV): every piece inside the sender's arena, the
 * destination checked once for the whole run, then one copy per piece. */
static kvw_status shm_on_descv(struct kvw_stream *s, const struct kvw_wire_descv *v)
{
	struct shm_ep *se = shm_ep_state(s->ep);
	struct kvw_wire_desc dsc = {.token = v->token, .layer = v->layer, .blk_idx = v->blk_idx,
				    .bytes = v->bytes, .blk_off = v->blk_off, .src_off = v->src_off,
				    .mem_id = v->mem_id};
	struct kvw_wire_data d = {.token = v->token, .layer = v->layer, .blk_idx = v->blk_idx,
				  .bytes = v->bytes, .blk_off = v->blk_off};
	struct shm_map *m = shm_find(se, v->mem_id);
	uint64_t n = v->bytes / v->piece; /* kvw_wire_check_body: n >= 2, n * piece == bytes */
	uint8_t *dst;

	kvw_core_ep_heard(s->ep);
	if (!m || !m->base) {
		shm_desc_refused(s->ep, &dsc, m);
		return KVW_OK;
	}
	if (v->src_off > m->len || v->piece > m->len - v->src_off ||
	    (n - 1) > (m->len - v->src_off - v->piece) / v->src_stride) {
		kvw_core_token_reject(s->ep, v->token, "whose gathered source runs outside the sender's "
				      "shared arena");
		return KVW_OK;
	}
	if (kvw_core_dst(s->ep, &d, &dst) != KVW_OK)
		return KVW_OK; /* refused or revoked: nothing copied */
	for (uint64_t i = 0; i < n; i++)
		if (!shm_copy(m, dst + i * v->piece, v->src_off + i * v->src_stride, v->piece)) {
			kvw_core_token_reject(s->ep, v->token, "whose source could not be read");
			return KVW_OK;
		}
	kvw_core_ep_rail_rx(s->ep, 0, v->bytes);
	kvw_core_landed(s->ep, &d);
	return KVW_OK;
}

/* MEM and DESC only between READY endpoints: before the handshake a peer
 * (perhaps without the secret) makes this side map nothing. */
static kvw_status shm_on_frame(struct kvw_stream *s, const struct kvw_wire_hdr *h, const void *body)
{
	if (h->type != KVW_T_MEM && h->type != KVW_T_DESC && h->type != KVW_T_DESCV)
		return shm_reject(s, KVW_ERR_PROTO, "frame type not used by this driver");
	if (!kvw_core_ep_ready(s->ep))
		return shm_reject(s, KVW_ERR_PROTO, "MEM or DESC frame before the handshake finished: "
				  "a peer may share memory only once it is READY");
	if (h->type == KVW_T_MEM) {
		struct kvw_wire_mem m;
		memcpy(&m, body, sizeof(m));
		return shm_on_mem(s, &m);
	}
	if (h->type == KVW_T_DESCV) {
		struct kvw_wire_descv v;
		memcpy(&v, body, sizeof(v));
		return shm_on_descv(s, &v);
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
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, SOMAXCONN)) {
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
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS && errno != EAGAIN) {
		int e = errno;
		close(fd);
		return kvw_set_err(d->ctx, e == ECONNREFUSED || e == ENOENT ? KVW_ERR_CONNREFUSED : KVW_ERR_IO,
				   "cannot connect to %s: %s (is the decode side listening there?)",
				   sa.sun_path, strerror(e));
	}
	bool full = errno == EAGAIN; /* the listener's backlog is full: retried by progress */
	if ((st = kvw_sockep_attach(ep, fd, true, shm_on_frame, NULL)) != KVW_OK) {
		close(fd);
		return st;
	}
	if (full)
		kvw_sockep_retry_connect(ep, &sa);
	else
		kvw_core_ep_up(ep);
	return KVW_OK;
}

/* Announces an arena to the peer once, with a read-only fd. */
static kvw_status shm_announce(kvw_ep *ep, struct shm_ep *se, const kvw_mem *m)
{
	uint8_t frame[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_mem)];
	struct kvw_wire_mem wm = {.mem_id = kvw_core_mem_id(m), .len = kvw_mem_len(m)};
	char path[64];
	int fd;

	for (uint32_t i = 0; i < se->n_sent; i++)
		if (se->sent[i] == kvw_core_mem_id(m))
			return KVW_OK;
	if (se->n_sent == SHM_MAPS)
		return KVW_ERR_UNSUPPORTED; /* the peer would refuse a 65th */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", kvw_core_mem_fd(m));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return KVW_ERR_IO;
	kvw_wire_hdr_encode(frame, KVW_T_MEM, 0, sizeof(wm), kvw_core_ep_peer_id(ep));
	memcpy(frame + sizeof(struct kvw_wire_hdr), &wm, sizeof(wm));
	if (kvw_stream_ctrl(kvw_sockep(ep)->rail[0], frame, sizeof(frame), fd) != KVW_OK) {
		close(fd);
		return KVW_ERR_NOMEM;
	}
	se->sent[se->n_sent++] = kvw_core_mem_id(m);
	return KVW_OK;
}

/* Can a peer map this arena? The verdict is kept per arena (drv_priv: NULL =
 * yes, else the sentence) and the first send over shm from it fails with it.
 * Registration itself succeeds: the context may move the arena over another
 * driver (tcp, rdma), which can. */
static const char *shm_mem_refusal(const kvw_mem *m)
{
	char path[64];
	int fd;

	if (kvw_core_mem_fd(m) < 0)
		return "the shm driver cannot share this arena with a peer: it was registered with "
		       "kvw_mem_reg() (caller memory, no memfd); allocate it with kvw_mem_alloc() "
		       "(a sealed memfd the peer maps), or send it over tcp or rdma";
	snprintf(path, sizeof(path), "/proc/self/fd/%d", kvw_core_mem_fd(m));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return "the shm driver cannot share this arena: its memfd does not reopen read-only "
		       "through /proc/self/fd; mount /proc (in a container: do not mask it)";
	close(fd);
	return NULL;
}

static kvw_status shm_mem_reg(kvw_drv *d, kvw_mem *m)
{
	const char *why = shm_mem_refusal(m);

	kvw_core_mem_set_priv(m, d, (void *)(uintptr_t)why);
	if (why)
		kvw_log(d->ctx, 3, "shm: arena %u: %s", kvw_core_mem_id(m), why);
	return KVW_OK;
}

static void shm_mem_dereg(kvw_drv *d, kvw_mem *m)
{
	kvw_core_mem_set_priv(m, d, NULL);
}

/* The DESC (or, gathered, DESCV) frame naming fragment f; its length. */
static size_t shm_desc_frame(kvw_ep *ep, const kvw_frag *f, uint8_t *head)
{
	uint32_t mem_id = kvw_core_mem_id(f->src_mem);

	if (f->piece) {
		struct kvw_wire_descv v = {.token = f->token, .layer = f->layer, .blk_idx = f->blk_idx,
					   .bytes = f->bytes, .blk_off = f->blk_off, .src_off = f->src_off,
					   .mem_id = mem_id, .piece = f->piece, .src_stride = f->src_stride};
		kvw_wire_hdr_encode(head, KVW_T_DESCV, 0, sizeof(v), kvw_core_ep_peer_id(ep));
		memcpy(head + sizeof(struct kvw_wire_hdr), &v, sizeof(v));
		return sizeof(struct kvw_wire_hdr) + sizeof(v);
	}
	struct kvw_wire_desc d = {.token = f->token, .layer = f->layer, .blk_idx = f->blk_idx,
				  .bytes = f->bytes, .blk_off = f->blk_off, .src_off = f->src_off,
				  .mem_id = mem_id};
	kvw_wire_hdr_encode(head, KVW_T_DESC, 0, sizeof(d), kvw_core_ep_peer_id(ep));
	memcpy(head + sizeof(struct kvw_wire_hdr), &d, sizeof(d));
	return sizeof(struct kvw_wire_hdr) + sizeof(d);
}

static size_t shm_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n)
{
	struct shm_ep *se = shm_ep_state(ep);
	struct kvw_stream *s = kvw_sockep(ep)->rail[0];
	uint8_t head[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_descv)];
	size_t i;

	for (i = 0; se && i < n; i++) {
		const char *why = kvw_core_mem_priv(f[i].src_mem, kvw_core_ep_drv(ep)); /* shm_mem_reg's verdict */
		if (why) {
			kvw_core_req_fail(f[i].req, KVW_ERR_UNSUPPORTED, why);
			break;
		}
		kvw_status st = shm_announce(ep, se, f[i].src_mem);
		if (st == KVW_ERR_UNSUPPORTED || st == KVW_ERR_IO)
			kvw_core_req_fail(f[i].req, st, st == KVW_ERR_IO ? "cannot reopen the arena's memfd "
					  "read-only through /proc/self/fd: is /proc mounted?" : "the shm driver "
					  "shares at most 64 arenas with one peer: send from fewer, larger "
					  "kvw_mem_alloc() pools");
		if (st != KVW_OK)
			break;
		if (!kvw_stream_data(s, head, shm_desc_frame(ep, &f[i], head), NULL, 0, f[i].req))
			break;
	}
	kvw_sock_flush_ep(ep);
	return i;
}

static void shm_ep_close(kvw_ep *ep)
{
	struct kvw_sockep *sk = kvw_sockep(ep);
	struct shm_ep *se = sk ? sk->priv : NULL;
	struct shm_drv *sd = kvw_core_ep_drv(ep)->priv;

	for (uint32_t i = 0; se && i < se->n_map; i++) {
		struct shm_map *m = &se->map[i];
		if (!m->base)
			continue;
		munmap(m->base, m->len);
		close(m->fd);
		free(m->seen);
		sd->mapped -= m->len;
	}
	kvw_sock_ep_close(ep);
}

/* The socket's share, plus a fd per mapped peer arena (the mappings are
 * the peer's memory: counted by the driver's `mapped`, not here). */
static void shm_ep_resources(const kvw_ep *ep, struct kvw_ep_res *r)
{
	struct kvw_sockep *sk = kvw_sockep(ep);
	struct shm_ep *se = sk ? sk->priv : NULL;

	kvw_sock_ep_resources(ep, r);
	if (!se)
		return;
	r->bytes += sizeof(*se);
	for (uint32_t i = 0; i < se->n_map; i++)
		r->fds += se->map[i].base != NULL;
}

const struct kvw_driver_ops kvw_shm_ops = {
	.name = "shm",
	.open = shm_drv_open,
	.close = shm_drv_close,
	.query_caps = shm_caps,
	.mem_reg = shm_mem_reg,
	.mem_dereg = shm_mem_dereg,
	.progress = kvw_sock_progress,
	.listen = shm_listen,
	.listener_close = kvw_sock_listener_close,
	.connect = shm_connect,
	.ep_close = shm_ep_close,
	.ep_resources = shm_ep_resources,
	.send_ctrl = kvw_sock_send_ctrl,
	.post_frags = shm_post_frags,
	.cancel = kvw_sock_cancel,
	.flush = kvw_sock_flush,
	.prepare_wait = kvw_sock_prepare_wait,
};

