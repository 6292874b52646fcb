/* SPDX-License-Identifier: MIT */
/* Framed non-blocking socket stream (see stream.h). */
#include "stream.h"
#include "fault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define KVW_HDR sizeof(struct kvw_wire_hdr)
#define KVW_IOV_MAX 256 /* gathered payloads take an iovec per piece */
#define KVW_IOV_BYTES (8u << 20) /* a sendmsg offers at most this (more than any socket buffer
				  * takes): walking further only costs */
#define KVW_RX_BUDGET (64u << 20) /* bytes read per call before yielding */

/* Config `fault` set: this rail's own seeded injector (see fault.h). */
static kvw_status kvw_stream_fault_init(struct kvw_stream *s)
{
	char err[200];
	const char *spec = kvw_core_cfg(kvw_core_ep_ctx(s->ep))->fault;

	if (!spec[0])
		return KVW_OK;
	if (kvw_fault_create_salted(spec, kvw_core_ep_id(s->ep) * 64ull + s->rail, &s->fault, err, sizeof(err)) != KVW_OK)
		return kvw_set_err(kvw_core_ep_ctx(s->ep), KVW_ERR_INVALID, "config fault: %s", err);
	return KVW_OK;
}

/* What a lossy link below this reliable stream does to one frame: resend
 * delay, hold, or nothing; later frames on the rail never overtake it.
 * Held frames go out from a later progress pass (kvw_sock_fault_poll_us). */
static void kvw_stream_fault(struct kvw_stream *s, struct kvw_txitem *it)
{
	uint64_t hold = kvw_fault_reliable(s->fault, it->hlen + it->plen, kvw_core_ep_counters(s->ep));

	it->not_before = hold ? kvw_now_ns() + hold : 0;
	if (it->not_before < s->hold_until)
		it->not_before = s->hold_until;
	s->hold_until = it->not_before;
}

kvw_status kvw_stream_init(struct kvw_stream *s, int fd, bool is_unix, kvw_ep *ep, uint32_t rail)
{
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	s->is_unix = is_unix;
	s->ep = ep;
	s->rail = rail;
	s->tx_cap = 64; /* doubles when a burst needs it: an idle endpoint stays small */
	s->tx = calloc(s->tx_cap, sizeof(*s->tx));
	s->rb_cap = KVW_HDR + sizeof(struct kvw_wire_data);
	s->rb = malloc(s->rb_cap);
	if (!s->tx || !s->rb)
		return KVW_ERR_NOMEM;
	return ep ? kvw_stream_fault_init(s) : KVW_OK;
}

kvw_status kvw_stream_set_buffered(struct kvw_stream *s)
{
	uint8_t *b = realloc(s->rb, 1u << 16);

	if (!b)
		return KVW_ERR_NOMEM;
	s->rb = b;
	s->rb_cap = 1u << 16;
	s->buffered = true;
	return KVW_OK;
}

static void kvw_txitem_release(struct kvw_txitem *it)
{
	free(it->heap);
	free(it->owned_payload);
	if (it->fd >= 0)
		close(it->fd);
	it->heap = it->owned_payload = NULL;
	it->fd = -1;
}

void kvw_stream_fini(struct kvw_stream *s)
{
	if (!s->tx)
		return;
	for (uint32_t i = s->tx_head; i != s->tx_tail; i++)
		kvw_txitem_release(&s->tx[i & (s->tx_cap - 1)]);
	free(s->tx);
	free(s->rx_body);
	free(s->rb);
	for (uint32_t i = 0; i < s->rx_nfds; i++)
		close(s->rx_fds[i]);
	if (s->fd >= 0)
		close(s->fd);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

static struct kvw_txitem *kvw_tx_push(struct kvw_stream *s)
{
	struct kvw_txitem *it;

	if (s->tx_tail - s->tx_head == s->tx_cap) {
		uint32_t ncap = s->tx_cap * 2;
		struct kvw_txitem *n = calloc(ncap, sizeof(*n));
		if (!n)
			return NULL;
		for (uint32_t i = 0; i < s->tx_cap; i++)
			n[i] = s->tx[(s->tx_head + i) & (s->tx_cap - 1)];
		free(s->tx);
		s->tx = n;
		s->tx_tail = s->tx_cap;
		s->tx_head = 0;
		s->tx_cap = ncap;
	}
	it = &s->tx[s->tx_tail++ & (s->tx_cap - 1)];
	memset(it, 0, sizeof(*it));
	it->fd = -1;
	return it;
}

/* A peer that stops reading must not make this process queue without end. */
static bool kvw_stream_over(struct kvw_stream *s, size_t len)
{
	char why[200];
	uint64_t cap = s->ep ? kvw_core_cfg(kvw_core_ep_ctx(s->ep))->max_tx_queue : UINT64_MAX;

	if (s->tx_ctrl_bytes + len <= cap)
		return false;
	snprintf(why, sizeof(why), "the peer stopped reading: %llu bytes of control frames are "
		 "queued for it on rail %u (config max_tx_queue)", (unsigned long long)s->tx_ctrl_bytes, s->rail);
	s->dead = s->broken = true;
	if (s->ep)
		kvw_ep_fail(s->ep, KVW_ERR_PEER_DEAD, why);
	return true;
}

kvw_status kvw_stream_ctrl(struct kvw_stream *s, const void *frame, size_t len, int pass_fd)
{
	struct kvw_txitem *it;

	if (s->dead || kvw_stream_over(s, len))
		return KVW_ERR_PEER_DEAD;
	if (!(it = kvw_tx_push(s)))
		return KVW_ERR_NOMEM;
	if (len <= sizeof(it->head)) {
		memcpy(it->head, frame, len);
	} else {
		if (!(it->heap = malloc(len))) {
			s->tx_tail--;
			return KVW_ERR_NOMEM;
		}
		memcpy(it->heap, frame, len);
	}
	it->hlen = (uint32_t)len;
	it->fd = pass_fd;
	s->tx_ctrl_bytes += len;
	if (s->fault)
		kvw_stream_fault(s, it);
	return KVW_OK;
}

bool kvw_stream_data(struct kvw_stream *s, const void *head, size_t hlen, const void *payload,
		     uint64_t plen, kvw_req *req)
{
	return kvw_stream_data_gather(s, head, hlen, payload, plen, 0, 0, req);
}

bool kvw_stream_data_gather(struct kvw_stream *s, const void *head, size_t hlen,
			    const void *payload, uint64_t plen, uint64_t piece, uint64_t stride,
			    kvw_req *req)
{
	struct kvw_txitem *it;

	if (s->dead || s->tx_data >= KVW_STREAM_DATA_MAX || hlen > sizeof(it->head))
		return false;
	if (!(it = kvw_tx_push(s)))
		return false;
	memcpy(it->head, head, hlen);
	it->hlen = (uint32_t)hlen;
	it->payload = payload;
	it->plen = plen;
	it->piece = piece < plen ? piece : 0;
	it->stride = stride;
	it->req = req;
	it->is_data = true;
	s->tx_data++;
	if (s->fault)
		kvw_stream_fault(s, it);
	return true;
}

void kvw_stream_cancel(struct kvw_stream *s, kvw_req *req)
{
	uint32_t w = s->tx_head;

	for (uint32_t i = s->tx_head; i != s->tx_tail; i++) {
		struct kvw_txitem *it = &s->tx[i & (s->tx_cap - 1)];
		if (it->req == req && it->done == 0) {
			kvw_txitem_release(it);
			if (it->is_data)
				s->tx_data--;
			else
				s->tx_ctrl_bytes -= it->hlen;
			continue; /* dropped */
		}
		if (it->req == req && it->payload && !it->owned_payload) {
			/* half written: finish it from a copy, free the caller's pages */
			uint8_t *copy = malloc(it->plen ? it->plen : 1);
			if (copy) {
				for (uint64_t o = 0, pc = it->piece ? it->piece : it->plen; o < it->plen; o += pc)
					memcpy(copy + o, it->payload + o / pc * (it->piece ? it->stride : 0), pc);
				it->owned_payload = copy;
				it->payload = copy;
				it->piece = it->stride = 0;
			} else {
				s->dead = true; /* cannot keep the promise: cut the stream */
				kvw_ep_fail(s->ep, KVW_ERR_NOMEM, "out of memory while aborting");
			}
		}
		if (w != i)
			s->tx[w & (s->tx_cap - 1)] = *it;
		w++;
	}
	s->tx_tail = w;
}

static void kvw_stream_broken(struct kvw_stream *s, const char *what, int err)
{
	char why[160];

	if (s->dead)
		return;
	s->dead = s->broken = true;
	if (err)
		snprintf(why, sizeof(why), "%s on rail %u: %s", what, s->rail, strerror(err));
	else
		snprintf(why, sizeof(why), "%s on rail %u", what, s->rail);
	if (s->ep)
		kvw_ep_fail(s->ep, KVW_ERR_PEER_DEAD, why);
}

/* iovecs of a gathered payload from its byte p on, while iov has room and
 * *bytes is under KVW_IOV_BYTES; false when it stopped short of the end. */
static bool kvw_tx_iov_gather(const struct kvw_txitem *it, uint64_t p, struct iovec *iov, int *n,
			      uint64_t *bytes)
{
	while (p < it->plen && *n < KVW_IOV_MAX && *bytes < KVW_IOV_BYTES) {
		uint64_t w = p % it->piece;
		iov[(*n)++] = (struct iovec){(void *)(it->payload + p / it->piece * it->stride + w),
					     it->piece - w};
		*bytes += it->piece - w;
		p += it->piece - w;
	}
	return p >= it->plen;
}

/* iovecs of the queued items from the head, up to KVW_IOV_BYTES (a
 * socket takes less at once); *pass_fd: the head item passes an fd */
static int kvw_tx_iov(struct kvw_stream *s, struct iovec *iov, int *pass_fd)
{
	int n = 0;
	uint64_t now = s->hold_until ? kvw_now_ns() : 0, bytes = 0;

	*pass_fd = -1;
	for (uint32_t i = s->tx_head; i != s->tx_tail && n < KVW_IOV_MAX - 1 && bytes < KVW_IOV_BYTES;
	     i++) {
		struct kvw_txitem *it = &s->tx[i & (s->tx_cap - 1)];
		const uint8_t *h = it->heap ? it->heap : it->head;
		uint64_t d = it->done;

		if (it->not_before > now && d == 0)
			break; /* fault layer: held (and everything behind it) */
		if (it->fd >= 0) {
			if (i != s->tx_head)
				break; /* an fd goes alone, first byte of its own sendmsg */
			*pass_fd = it->fd;
		}
		if (d < it->hlen) {
			iov[n++] = (struct iovec){(void *)(h + d), it->hlen - d};
			bytes += it->hlen - d;
			d = it->hlen;
		}
		if (it->piece) {
			if (!kvw_tx_iov_gather(it, d - it->hlen, iov, &n, &bytes))
				break; /* the rest of it in the next sendmsg, then what follows */
		} else if (it->plen && d - it->hlen < it->plen) {
			iov[n++] = (struct iovec){(void *)(it->payload + (d - it->hlen)),
						  it->plen - (d - it->hlen)};
			bytes += it->plen - (d - it->hlen);
		}
		if (*pass_fd >= 0)
			break;
	}
	return n;
}

static void kvw_tx_advance(struct kvw_stream *s, uint64_t n)
{
	while (n && s->tx_head != s->tx_tail) {
		struct kvw_txitem *it = &s->tx[s->tx_head & (s->tx_cap - 1)];
		uint64_t left = it->hlen + it->plen - it->done;
		if (n < left) {
			it->done += n;
			if (it->fd >= 0) { /* the fd went with the first byte */
				close(it->fd);
				it->fd = -1;
			}
			return;
		}
		n -= left;
		if (it->is_data)
			s->tx_data--;
		else
			s->tx_ctrl_bytes -= it->hlen;
		kvw_txitem_release(it);
		s->tx_head++;
	}
}

/* The socket took nothing: a peer that reads nothing for peer_dead_ms is
 * as good as dead, even if it keeps sending (e.g. PINGs it never reads
 * the PONGs of). */
static void kvw_stream_stalled(struct kvw_stream *s)
{
	uint64_t now = kvw_now_ns(), lim;
	char why[200];

	if (!s->ep)
		return;
	if (!s->tx_stall_ns) {
		s->tx_stall_ns = now;
		return;
	}
	lim = (uint64_t)kvw_core_cfg(kvw_core_ep_ctx(s->ep))->peer_dead_ms * 1000000ull;
	if (now - s->tx_stall_ns <= lim)
		return;
	snprintf(why, sizeof(why), "the peer read nothing for %llu ms (peer_dead_ms) with %llu bytes "
		 "queued for it on rail %u: it stopped reading or is stuck",
		 (unsigned long long)((now - s->tx_stall_ns) / 1000000), (unsigned long long)s->tx_ctrl_bytes,
		 s->rail);
	s->dead = s->broken = true;
	kvw_ep_fail(s->ep, KVW_ERR_PEER_DEAD, why);
}

void kvw_stream_flush(struct kvw_stream *s)
{
	struct iovec iov[KVW_IOV_MAX];
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
	int pass_fd, n;
	ssize_t w;

	while (!s->dead && s->tx_head != s->tx_tail) {
		struct msghdr mh = {0};

		if ((n = kvw_tx_iov(s, iov, &pass_fd)) == 0)
			return; /* held by the fault layer: the next pass retries */
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)n;
		if (pass_fd >= 0) {
			struct cmsghdr *c;
			mh.msg_control = cm.buf;
			mh.msg_controllen = sizeof(cm.buf);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
		}
		w = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (!s->want_write && s->ep) /* wake kvw_ctx_wait when writable */
					kvw_core_watch_fd(kvw_core_ep_ctx(s->ep), s->fd, true);
				s->want_write = true;
				kvw_stream_stalled(s);
				return;
			}
			if (errno == EINTR)
				continue;
			kvw_stream_broken(s, "connection lost while sending", errno);
			return;
		}
		s->tx_stall_ns = 0;
		kvw_tx_advance(s, (uint64_t)w);
	}
	if (s->want_write && s->ep && !s->dead)
		kvw_core_watch_fd(kvw_core_ep_ctx(s->ep), s->fd, false);
	s->want_write = false;
}

void kvw_stream_flush_final(struct kvw_stream *s)
{
	static uint8_t sink[1u << 14];
	bool dead = s->dead;

	if (s->broken || s->fd < 0)
		return;
	/* fault layer: frames it holds go now -- TCP below a lossy link would
	 * still deliver them after the close, only later (a held REJECT came
	 * as a bare EOF: PEER_DEAD instead of its status) */
	for (uint32_t i = s->tx_head; i != s->tx_tail; i++)
		s->tx[i & (s->tx_cap - 1)].not_before = 0;
	s->hold_until = 0;
	s->dead = false;
	kvw_stream_flush(s);
	s->dead = dead || s->dead;
	for (int i = 0; i < 16; i++) /* at most 256 KiB: then the RST is the peer's doing */
		if (recv(s->fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
			break;
}

/* ------------------------------------------------------------------ rx */
static void kvw_rx_fds(struct kvw_stream *s, struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (s->rx_nfds < KVW_ARRAY_SIZE(s->rx_fds))
				s->rx_fds[s->rx_nfds++] = fd;
			else
				close(fd); /* unsolicited flood: refuse */
		}
	}
}

int kvw_stream_take_fd(struct kvw_stream *s)
{
	int fd;

	if (!s->rx_nfds)
		return -1;
	fd = s->rx_fds[0];
	memmove(s->rx_fds, s->rx_fds + 1, --s->rx_nfds * sizeof(int));
	return fd;
}

/* Reads up to len bytes; >0 bytes, 0 = would block, -1 = stream ended. */
static ssize_t kvw_rx_sock(struct kvw_stream *s, void *buf, size_t len)
{
	union { char buf[CMSG_SPACE(sizeof(int) * 4)]; struct cmsghdr align; } cm;
	struct iovec iov = {buf, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t r;

	if (s->is_unix) {
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
	}
	do
		r = recvmsg(s->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r > 0 && s->is_unix)
		kvw_rx_fds(s, &mh);
	if (r > 0)
		return r;
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	kvw_stream_broken(s, r == 0 ? "peer closed the connection" : "connection lost while receiving",
			  r == 0 ? 0 : errno);
	return -1;
}

/* Serves from the read-ahead first. `ahead` = how many bytes from here on
 * may be read ahead without reaching a payload (0 = read exactly). */
static ssize_t kvw_rx(struct kvw_stream *s, void *buf, size_t len, size_t ahead)
{
	ssize_t r;

	if (s->rb_pos == s->rb_len && (s->buffered || ahead > len)) {
		r = kvw_rx_sock(s, s->rb, s->buffered ? s->rb_cap : ahead);
		if (r <= 0)
			return r;
		s->rb_pos = 0;
		s->rb_len = (uint32_t)r;
	}
	if (s->rb_pos < s->rb_len) {
		size_t n = s->rb_len - s->rb_pos < len ? s->rb_len - s->rb_pos : len;
		memcpy(buf, s->rb + s->rb_pos, n);
		s->rb_pos += (uint32_t)n;
		return (ssize_t)n;
	}
	return kvw_rx_sock(s, buf, len);
}

/* Fills want bytes at p (progress kept in rx_got); true when complete.
 * frame_off: offset of p inside the current frame (read-ahead bound). */
static bool kvw_rx_fill(struct kvw_stream *s, uint8_t *p, uint64_t want, uint64_t frame_off,
			uint64_t *budget)
{
	const uint64_t safe = KVW_HDR + sizeof(struct kvw_wire_data);

	while (s->rx_got < want) {
		uint64_t at = frame_off + s->rx_got;
		ssize_t r = kvw_rx(s, p + s->rx_got, want - s->rx_got, at < safe ? safe - at : 0);
		if (r <= 0)
			return false;
		s->rx_got += (uint64_t)r;
		if (*budget <= (uint64_t)r) {
			*budget = 0;
			return s->rx_got == want;
		}
		*budget -= (uint64_t)r;
	}
	return true;
}

static void kvw_rx_hdr_done(struct kvw_stream *s)
{
	const char *why = "";
	kvw_status st = kvw_wire_check_hdr(s->rx_hdr, KVW_HDR, &s->rx_h, &why);

	s->rx_got = 0;
	if (st != KVW_OK) {
		kvw_core_reject(s->ep, st, why);
		s->dead = true; /* a byte stream cannot resynchronise */
		return;
	}
	if (!kvw_core_ep_ready(s->ep) &&
	    (s->rx_h.type > KVW_T_REJECT || s->rx_h.len > KVW_WIRE_MAX_PREAUTH)) {
		kvw_core_reject(s->ep, KVW_ERR_PROTO, "frame before the handshake finished: only small "
				"HELLO/WELCOME/AUTH/READY/REJECT may come first");
		s->dead = true;
		return;
	}
	if (s->rx_h.type == KVW_T_DATA) {
		if (s->buffered) {
			kvw_core_reject(s->ep, KVW_ERR_PROTO, "DATA frame on a driver that moves no inline payload");
			s->dead = true;
			return;
		}
		s->rx_state = KVW_RX_DATA_FIXED;
		return;
	}
	if (s->rx_h.len > s->rx_body_cap) {
		uint8_t *b = realloc(s->rx_body, s->rx_h.len);
		if (!b) {
			kvw_ep_fail(s->ep, KVW_ERR_NOMEM, "out of memory for a control frame");
			s->dead = true;
			return;
		}
		s->rx_body = b;
		s->rx_body_cap = s->rx_h.len;
	}
	s->rx_state = KVW_RX_BODY;
}

static void kvw_rx_data_fixed_done(struct kvw_stream *s)
{
	const char *why = "";
	kvw_status st;

	memcpy(&s->rx_d, s->rx_hdr + KVW_HDR, sizeof(s->rx_d));
	s->rx_got = 0;
	st = kvw_wire_check_body(KVW_T_DATA, s->rx_hdr + KVW_HDR, s->rx_h.len, &why);
	if (st != KVW_OK) {
		kvw_core_reject(s->ep, st, why);
		s->dead = true;
		return;
	}
	kvw_core_ep_heard(s->ep);
	s->rx_dst = NULL;
	if (kvw_core_dst(s->ep, &s->rx_d, &s->rx_dst) != KVW_OK)
		s->rx_dst = NULL; /* refused: read the payload into the void */
	s->rx_state = KVW_RX_PAYLOAD;
}

static uint8_t kvw_discard[1u << 16];

static bool kvw_rx_payload(struct kvw_stream *s, uint64_t *budget)
{
	while (s->rx_got < s->rx_d.bytes) {
		uint64_t left = s->rx_d.bytes - s->rx_got;
		ssize_t r;

		/* the fence: an abort between two reads stops writes at once */
		if (s->rx_dst && !kvw_core_token_live(s->ep, s->rx_d.token))
			s->rx_dst = NULL;
		if (s->rx_dst) {
			r = kvw_rx(s, s->rx_dst + s->rx_got, left, 0);
		} else {
			r = kvw_rx(s, kvw_discard, left < sizeof(kvw_discard) ? left : sizeof(kvw_discard), 0);
		}
		if (r <= 0)
			return false;
		s->rx_got += (uint64_t)r;
		if (*budget <= (uint64_t)r) {
			*budget = 0;
			if (s->rx_got < s->rx_d.bytes)
				return false;
		} else {
			*budget -= (uint64_t)r;
		}
	}
	kvw_core_ep_rail_rx(s->ep, s->rail, s->rx_d.bytes);
	if (s->rx_dst)
		kvw_core_landed(s->ep, &s->rx_d);
	return true;
}

static void kvw_rx_body_done(struct kvw_stream *s, uint64_t *budget)
{
	s->rx_got = 0;
	s->rx_state = KVW_RX_HDR;
	if (s->on_frame && (s->rx_h.type == KVW_T_MEM || s->rx_h.type == KVW_T_DESC ||
			    s->rx_h.type == KVW_T_DESCV || s->rx_h.type == KVW_T_DRV)) {
		const char *why = "";
		kvw_status st = kvw_wire_check_body(s->rx_h.type, s->rx_body, s->rx_h.len, &why);
		if (st == KVW_OK && (s->rx_h.type == KVW_T_DESC || s->rx_h.type == KVW_T_DESCV)) {
			/* a 40-byte DESC can make the driver copy 16 MiB: the pass's
			 * budget counts what it copies, so other endpoints get their turn
			 * (bytes sits at the same place in DESC and DESCV) */
			struct kvw_wire_desc d;
			memcpy(&d, s->rx_body, sizeof(d));
			*budget = *budget > d.bytes ? *budget - d.bytes : 0;
		}
		if (st == KVW_OK)
			st = s->on_frame(s, &s->rx_h, s->rx_body);
		else
			kvw_core_reject(s->ep, st, why);
		if (st != KVW_OK)
			s->dead = true;
		return;
	}
	if (s->rx_h.type == KVW_T_MEM || s->rx_h.type == KVW_T_DESC || s->rx_h.type == KVW_T_ACK ||
	    s->rx_h.type == KVW_T_DESCV || s->rx_h.type == KVW_T_DRV) {
		kvw_core_reject(s->ep, KVW_ERR_PROTO, "frame type not used by this driver");
		s->dead = true;
		return;
	}
	if (kvw_core_on_frame(s->ep, &s->rx_h, s->rx_body) != KVW_OK &&
	    kvw_core_ep_failed(s->ep))
		s->dead = true;
}

void kvw_stream_read(struct kvw_stream *s)
{
	uint64_t budget = KVW_RX_BUDGET;

	while (!s->dead && budget && kvw_core_ep_alive(s->ep)) {
		switch (s->rx_state) {
		case KVW_RX_HDR:
			if (!kvw_rx_fill(s, s->rx_hdr, KVW_HDR, 0, &budget))
				return;
			kvw_rx_hdr_done(s);
			break;
		case KVW_RX_DATA_FIXED:
			if (!kvw_rx_fill(s, s->rx_hdr + KVW_HDR, sizeof(struct kvw_wire_data), KVW_HDR, &budget))
				return;
			kvw_rx_data_fixed_done(s);
			break;
		case KVW_RX_PAYLOAD:
			if (!kvw_rx_payload(s, &budget))
				return;
			s->rx_got = 0;
			s->rx_state = KVW_RX_HDR;
			break;
		case KVW_RX_BODY:
			if (!kvw_rx_fill(s, s->rx_body, s->rx_h.len, KVW_HDR, &budget))
				return;
			kvw_rx_body_done(s, &budget);
			break;
		}
	}
}
