/* SPDX-License-Identifier: MIT */
/*
 * Stats endpoint: a non-blocking unix listening socket that hands a JSON
 * snapshot of every endpoint, its counters and its in-flight requests to
 * whoever connects (`kvwire stat`), then closes the connection.
 *
 * Data path rules: kvw_stats_progress() looks at the socket at most once
 * a millisecond, accepts at most one client per call, and writes without
 * blocking; a snapshot larger than the socket buffer is finished over
 * later calls. A client that does not read within a second is dropped.
 * The JSON is written by hand so the library needs no JSON dependency.
 */
#include "stats.h"
#include "epcache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define KVW_STATS_CHECK_NS 1000000ull        /* look at the socket every 1 ms */
#define KVW_STATS_CLIENT_NS 1000000000ull    /* a client gets 1 s to read */
#define KVW_STATS_MAX_REQS 4096u             /* requests listed per endpoint */

struct kvw_stats {
	int lfd;
	int cfd;                 /* client being served, -1 when none */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint64_t next_check_ns;
	uint64_t client_deadline_ns;
	char *buf;
	size_t len, cap, off;
	bool oom;
};

/* ------------------------------------------------------------ JSON buffer */
static void kvw_stats_put(struct kvw_stats *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static bool kvw_stats_reserve(struct kvw_stats *s, size_t more)
{
	if (s->oom)
		return false;
	if (s->len + more + 1 <= s->cap)
		return true;
	size_t cap = s->cap ? s->cap : 16384;
	while (cap < s->len + more + 1)
		cap *= 2;
	char *nb = realloc(s->buf, cap);
	if (!nb) {
		s->oom = true;
		return false;
	}
	s->buf = nb;
	s->cap = cap;
	return true;
}

static void kvw_stats_put(struct kvw_stats *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !kvw_stats_reserve(s, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
	va_end(ap);
	s->len += (size_t)n;
}

/* A JSON string: quotes, escapes, control characters as \u00XX. */
static void kvw_stats_str(struct kvw_stats *s, const char *str)
{
	kvw_stats_put(s, "\"");
	for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
		if (*p == '"' || *p == '\\')
			kvw_stats_put(s, "\\%c", *p);
		else if (*p < 0x20)
			kvw_stats_put(s, "\\u%04x", *p);
		else
			kvw_stats_put(s, "%c", *p);
	}
	kvw_stats_put(s, "\"");
}

/* ---------------------------------------------------------------- snapshot */
static const char *kvw_stats_ep_state(enum kvw_ep_state st)
{
	switch (st) {
	case KVW_EP_CONNECTING: return "connecting";
	case KVW_EP_HANDSHAKE: return "handshake";
	case KVW_EP_READY: return "ready";
	case KVW_EP_FAILED: return "failed";
	case KVW_EP_CLOSED: return "closed";
	}
	return "unknown";
}

static const char *kvw_stats_status_name(kvw_status st)
{
	switch (st) {
	case KVW_OK: return "ok";
	case KVW_INPROGRESS: return "inprogress";
	case KVW_ERR_TIMEDOUT: return "timedout";
	case KVW_ERR_PEER_DEAD: return "peer_dead";
	case KVW_ERR_ABORTED: return "aborted";
	case KVW_ERR_REJECTED: return "rejected";
	default: return "error";
	}
}

static uint64_t kvw_stats_rel_us(uint64_t t, uint64_t base)
{
	return (t && base && t >= base) ? (t - base) / 1000 : 0;
}

static void kvw_stats_counters(struct kvw_stats *s, const kvw_ep *ep)
{
	kvw_counters c = ep->cnt; /* not kvw_ep_counters: a public call would clear the user's sentence */

	c.rails = ep->rails;
	kvw_stats_put(s, "\"counters\":{\"bytes_tx\":%lu,\"bytes_rx\":%lu,\"frags_tx\":%lu,"
		      "\"frags_rx\":%lu,\"frames_tx\":%lu,\"frames_rx\":%lu,\"seqs_ok\":%lu,"
		      "\"seqs_failed\":%lu,\"rejected\":%lu,\"bad_frames\":%lu,"
		      "\"retransmits\":%lu,\"drops\":%lu,\"dups\":%lu,\"out_of_order\":%lu,"
		      "\"keepalives_tx\":%lu,\"keepalives_rx\":%lu,\"rtt_us\":%lu,\"rails\":%u,\"rail\":[",
		      c.bytes_tx, c.bytes_rx, c.frags_tx, c.frags_rx, c.frames_tx, c.frames_rx,
		      c.seqs_ok, c.seqs_failed, c.rejected, c.bad_frames, c.retransmits, c.drops,
		      c.dups, c.out_of_order, c.keepalives_tx, c.keepalives_rx, c.rtt_us, c.rails);
	uint32_t nr = c.rails < KVW_MAX_RAILS ? c.rails : KVW_MAX_RAILS;
	for (uint32_t r = 0; r < nr; r++) {
		const kvw_rail_counters *rc = &c.rail[r];
		kvw_stats_put(s, "%s{\"bytes_tx\":%lu,\"bytes_rx\":%lu,\"frags_tx\":%lu,"
			      "\"frags_rx\":%lu,\"errors\":%lu}", r ? "," : "",
			      rc->bytes_tx, rc->bytes_rx, rc->frags_tx, rc->frags_rx, rc->errors);
	}
	kvw_stats_put(s, "],\"remote_refused\":%lu}", c.remote_refused);
}

static void kvw_stats_req(struct kvw_stats *s, const kvw_req *r, uint64_t now, bool first)
{
	kvw_stats_put(s, "%s{\"seq_id\":%lu,\"role\":\"%s\",\"status\":\"%s\",\"bytes_done\":%lu,"
		      "\"bytes_total\":%lu,\"layers_done\":%u,\"n_layers\":%u,\"n_blocks\":%u,"
		      "\"age_us\":%lu,\"granted\":%s,\"t_matched_us\":%lu,\"t_first_byte_us\":%lu,"
		      "\"t_last_byte_us\":%lu}",
		      first ? "" : ",", r->seq_id, r->role == KVW_ROLE_SEND ? "send" : "recv",
		      kvw_stats_status_name(r->status), r->bytes_done, r->bytes_total,
		      r->layers_done, r->n_layers, r->n_blocks, kvw_stats_rel_us(now, r->t_posted),
		      (r->role == KVW_ROLE_RECV || r->granted) ? "true" : "false",
		      kvw_stats_rel_us(r->t_matched, r->t_posted),
		      kvw_stats_rel_us(r->t_first_byte, r->t_posted),
		      kvw_stats_rel_us(r->t_last_byte, r->t_posted));
}

/* In-flight requests of the endpoint (ep->reqs holds every request not
 * yet freed); finished ones the user has not freed are only counted. */
static void kvw_stats_reqs(struct kvw_stats *s, const kvw_ep *ep, uint64_t now)
{
	uint32_t listed = 0, live = 0, done = 0;
	kvw_stats_put(s, ",\"requests\":[");
	for (const kvw_req *r = ep->reqs; r; r = r->next_ep) {
		if (r->status != KVW_INPROGRESS) {
			done++;
			continue;
		}
		live++;
		if (listed < KVW_STATS_MAX_REQS)
			kvw_stats_req(s, r, now, listed++ == 0);
	}
	kvw_stats_put(s, "],\"n_reqs\":%u,\"finished_not_freed\":%u,\"requests_truncated\":%s",
		      live, done, live > listed ? "true" : "false");
}

/* ep_cache and incarnations (epcache.c), and what the endpoint holds */
static void kvw_stats_ep_cache(struct kvw_stats *s, const kvw_ep *ep, uint64_t now)
{
	struct kvw_ep_res res;

	kvw_ep_resources(ep, &res);
	kvw_stats_put(s, "\"cached\":%s,\"refs\":%u,\"parked_ms\":%lu,\"peer_incarnation\":\"%016lx\","
		      "\"resources\":{\"fds\":%u,\"qps\":%u,\"bytes\":%lu},",
		      ep->cached ? "true" : "false", ep->cached ? ep->refs : 1,
		      kvw_stats_rel_us(now, ep->idle_since_ns) / 1000, ep->peer_incarnation,
		      res.fds, res.qps, res.bytes);
}

static void kvw_stats_ep(struct kvw_stats *s, const kvw_ep *ep, uint64_t now, bool first)
{
	const char *drv = (ep->drv && ep->drv->ops && ep->drv->ops->name) ? ep->drv->ops->name : "";
	kvw_stats_put(s, "%s{\"id\":%u,\"peer_id\":%u,\"uri\":", first ? "" : ",", ep->id, ep->peer_id);
	kvw_stats_str(s, ep->uri);
	kvw_stats_put(s, ",\"driver\":");
	kvw_stats_str(s, drv);
	kvw_stats_put(s, ",\"state\":\"%s\",\"status\":\"%s\",\"server\":%s,\"authenticated\":%s,"
		      "\"rails\":%u,\"caps\":%u,\"peer_version\":\"%u.%u\",\"age_ms\":%lu,"
		      "\"idle_ms\":%lu,",
		      kvw_stats_ep_state(ep->state),
		      ep->state == KVW_EP_FAILED ? kvw_stats_status_name(ep->fail_status) : "ok",
		      ep->is_server ? "true" : "false", ep->authenticated ? "true" : "false",
		      ep->rails, ep->caps, ep->peer_major, ep->peer_minor,
		      kvw_stats_rel_us(now, ep->t_start) / 1000,
		      kvw_stats_rel_us(now, ep->last_rx_ns) / 1000);
	if (ep->state == KVW_EP_FAILED) {
		kvw_stats_put(s, "\"why\":");
		kvw_stats_str(s, ep->fail_why);
		kvw_stats_put(s, ",");
	}
	kvw_stats_ep_cache(s, ep, now);
	kvw_stats_counters(s, ep);
	kvw_stats_reqs(s, ep, now);
	kvw_stats_put(s, "}");
}

static void kvw_stats_snapshot(struct kvw_stats *s, const kvw_ctx *ctx, uint64_t now)
{
	s->len = 0;
	s->off = 0;
	s->oom = false;
	kvw_stats_put(s, "{\"kvwire\":\"%s\",\"pid\":%ld,\"t_ns\":%lu,\"incarnation\":\"%016lx\","
		      "\"drivers\":", KVW_VERSION_STRING, (long)getpid(), now, ctx->incarnation);
	kvw_stats_str(s, kvw_drivers_built());
	kvw_stats_put(s, ",\"listeners\":[");
	bool first = true;
	for (const kvw_listener *l = ctx->listeners; l; l = l->next) {
		if (l->closed)
			continue;
		kvw_stats_put(s, "%s{\"uri\":", first ? "" : ",");
		kvw_stats_str(s, l->uri);
		kvw_stats_put(s, "}");
		first = false;
	}
	kvw_stats_put(s, "],\"endpoints\":[");
	first = true;
	for (const kvw_ep *ep = ctx->eps; ep; ep = ep->next) {
		if (ep->zombie)
			continue;
		kvw_stats_ep(s, ep, now, first);
		first = false;
	}
	kvw_stats_put(s, "]}\n");
}

/* ------------------------------------------------------------------ socket */
/* "auto" -> /run/kvwire/stats.<pid>.sock (falling back to /tmp/kvwire when
 * /run is not writable); "%p" in a path is replaced by the pid. */
static kvw_status kvw_stats_path(kvw_ctx *ctx, const char *spec, char *out, size_t len)
{
	int n;
	if (!strcmp(spec, "auto")) {
		const char *dir = "/run/kvwire";
		if (mkdir(dir, 0755) && errno != EEXIST)
			dir = "/tmp/kvwire";
		if (mkdir(dir, 0755) && errno != EEXIST)
			return kvw_set_err(ctx, KVW_ERR_IO, "stats_socket=auto: cannot create %s (%s); "
					   "set stats_socket (KVW_STATS_SOCKET) to a writable path",
					   dir, strerror(errno));
		n = snprintf(out, len, "%s/stats.%ld.sock", dir, (long)getpid());
	} else {
		const char *pp = strstr(spec, "%p");
		if (pp)
			n = snprintf(out, len, "%.*s%ld%s", (int)(pp - spec), spec, (long)getpid(), pp + 2);
		else
			n = snprintf(out, len, "%s", spec);
	}
	if (n < 0 || (size_t)n >= len)
		return kvw_set_err(ctx, KVW_ERR_INVALID, "stats_socket path '%s' is longer than %zu "
				   "bytes; choose a shorter path", spec, len - 1);
	return KVW_OK;
}

/* An existing socket file nobody listens on is stale: remove it. */
static kvw_status kvw_stats_clear_stale(kvw_ctx *ctx, const struct sockaddr_un *sa)
{
	struct stat st;
	if (lstat(sa->sun_path, &st))
		return KVW_OK;
	if (!S_ISSOCK(st.st_mode))
		return kvw_set_err(ctx, KVW_ERR_BUSY, "stats_socket %s exists and is not a socket; "
				   "remove it or choose another path", sa->sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kvw_set_err(ctx, KVW_ERR_IO, "stats socket: %s", strerror(errno));
	int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	close(fd);
	if (rc == 0)
		return kvw_set_err(ctx, KVW_ERR_BUSY, "stats_socket %s is in use by another process; "
				   "choose another path (\"auto\" adds the pid)", sa->sun_path);
	unlink(sa->sun_path);
	return KVW_OK;
}

static kvw_status kvw_stats_listen(kvw_ctx *ctx, struct kvw_stats *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, s->path, sizeof(sa.sun_path));
	kvw_status st = kvw_stats_clear_stale(ctx, &sa);
	if (st != KVW_OK)
		return st;
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->lfd < 0)
		return kvw_set_err(ctx, KVW_ERR_IO, "stats socket: %s", strerror(errno));
	if (bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(s->lfd, 16)) {
		st = kvw_set_err(ctx, KVW_ERR_IO, "stats_socket %s: cannot listen (%s); check that "
				 "its directory exists and is writable", s->path, strerror(errno));
		close(s->lfd);
		s->lfd = -1;
		return st;
	}
	return KVW_OK;
}

kvw_status kvw_stats_open(kvw_ctx *ctx)
{
	ctx->stats = NULL;
	const char *spec = ctx->cfg.stats_socket;
	if (!spec[0])
		return KVW_OK;
	struct kvw_stats *s = calloc(1, sizeof(*s));
	if (!s)
		return kvw_set_err(ctx, KVW_ERR_NOMEM, "stats endpoint: out of memory");
	s->lfd = s->cfd = -1;
	kvw_status st = kvw_stats_path(ctx, spec, s->path, sizeof(s->path));
	if (st == KVW_OK)
		st = kvw_stats_listen(ctx, s);
	if (st != KVW_OK) {
		/* kvw_ctx_create fails with this ctx: say why where it is seen */
		kvw_log(ctx, 1, "%s", ctx->err);
		free(s);
		return st;
	}
	/* wake an event loop sleeping on kvw_ctx_fd() when a client comes */
	(void)kvw_core_watch_fd(ctx, s->lfd, false);
	ctx->stats = s;
	kvw_log(ctx, 2, "stats endpoint at %s", s->path);
	return KVW_OK;
}

/* While a client is served the listening fd leaves the epoll set, so
 * queued clients do not keep waking an event loop. */
static void kvw_stats_drop_client(kvw_ctx *ctx, struct kvw_stats *s)
{
	close(s->cfd);
	s->cfd = -1;
	s->len = s->off = 0;
	(void)kvw_core_watch_fd(ctx, s->lfd, false);
}

/* Writes what the socket takes now; drops the client when done or late. */
static void kvw_stats_flush(kvw_ctx *ctx, struct kvw_stats *s, uint64_t now)
{
	while (s->off < s->len) {
		ssize_t n = send(s->cfd, s->buf + s->off, s->len - s->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			s->off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && now < s->client_deadline_ns)
			return;
		break; /* error, or the client does not read */
	}
	kvw_stats_drop_client(ctx, s);
}

void kvw_stats_progress(kvw_ctx *ctx)
{
	struct kvw_stats *s = ctx->stats;
	if (!s)
		return;
	uint64_t now = kvw_now_ns();
	if (now < s->next_check_ns)
		return;
	s->next_check_ns = now + KVW_STATS_CHECK_NS;
	if (s->cfd >= 0) {
		kvw_stats_flush(ctx, s, now);
		return;
	}
	s->cfd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (s->cfd < 0)
		return;
	kvw_core_unwatch_fd(ctx, s->lfd);
	kvw_stats_snapshot(s, ctx, now);
	if (s->oom) { /* the client sees EOF with no data and says so */
		kvw_stats_drop_client(ctx, s);
		return;
	}
	s->client_deadline_ns = now + KVW_STATS_CLIENT_NS;
	kvw_stats_flush(ctx, s, now);
}

void kvw_stats_close(kvw_ctx *ctx)
{
	struct kvw_stats *s = ctx->stats;
	if (!s)
		return;
	if (s->cfd >= 0)
		close(s->cfd);
	if (s->lfd >= 0) {
		kvw_core_unwatch_fd(ctx, s->lfd);
		close(s->lfd);
		unlink(s->path);
	}
	free(s->buf);
	free(s);
	ctx->stats = NULL;
}
