/* SPDX-License-Identifier: MIT */
#include "rp.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvwt.h"
#include "rawpeer.h"

#define RP_RX_CAP ((size_t)KVW_WIRE_MAX_DATA + 64)
#define RP_ARENA (4u << 20)
#define RP_MEM_ID 1u

static void rp_share_arena(struct rp *p)
{
	int mfd = memfd_create("hostile-seq", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(mfd, 0);
	cr_assert_eq(ftruncate(mfd, RP_ARENA), 0);
	p->arena = mmap(NULL, RP_ARENA, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	cr_assert_neq(p->arena, MAP_FAILED);
	/* sealed as kvw_mem_alloc seals its arenas (the receiver refuses others);
	 * this mapping, made before, stays writable */
	cr_assert_eq(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE), 0);
	uint8_t frame[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_mem)];
	struct kvw_wire_mem m = { .mem_id = RP_MEM_ID, .len = RP_ARENA };
	kvw_wire_hdr_encode(frame, KVW_T_MEM, 0, sizeof(m), p->srv_id);
	memcpy(frame + sizeof(struct kvw_wire_hdr), &m, sizeof(m));
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	int ro = open(path, O_RDONLY | O_CLOEXEC); /* a kvwt sender passes a read-only fd */
	cr_assert_geq(ro, 0);
	cr_assert_eq(rawp_send_fd(p->fd, frame, sizeof(frame), ro), 0);
	close(ro);
	close(mfd);
}

void rp_open(struct rp *p, const char *const *cfg)
{
	char uri[256];
	memset(p, 0, sizeof(*p));
	p->ctx = kvwt_ctx(cfg);
	p->shm = !strcmp(kvwt_driver()->name, "shm");
	if (!kvwt_driver()->raw_stream)
		cr_skip_test("driver %s has no stream socket for a raw peer", kvwt_driver()->name);
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(p->ctx, uri, &p->l), KVW_OK, "%s", kvw_ctx_last_error(p->ctx));
	p->fd = rawp_connect(kvw_listener_uri(p->l));
	cr_assert_geq(p->fd, 0);
	p->srv_id = rawp_handshake(p->fd, p->ctx, kvwt_driver()->name);
	cr_assert_neq(p->srv_id, 0, "raw handshake failed: %s", kvw_ctx_last_error(p->ctx));
	cr_assert_eq(kvw_accept(p->l, 5000, &p->ep), KVW_OK);
	p->rx = malloc(RP_RX_CAP);
	cr_assert_not_null(p->rx);
	if (p->shm)
		rp_share_arena(p);
}

void rp_close(struct rp *p)
{
	close(p->fd);
	if (p->arena)
		munmap(p->arena, RP_ARENA);
	free(p->rx);
	p->rx = NULL;
}

static void rp_on_frame(struct rp *p, const struct kvw_wire_hdr *h, const uint8_t *body)
{
	if (h->type == KVW_T_PING) { /* answered between two frames (rp_pong) */
		memcpy(&p->ping, body, sizeof(p->ping));
		p->ping_due = true;
	}
	if (h->type == KVW_T_LAYER_DONE)
		p->n_layer_done++;
	if (h->type == KVW_T_SEQ_DONE)
		p->n_seq_done++;
	if (h->type != KVW_T_ABORT)
		return;
	struct kvw_wire_abort a;
	memcpy(&a, body, sizeof(a));
	p->n_abort++;
	p->n_abort_busy += a.status == KVW_ERR_BUSY;
	p->n_abort_timedout += a.status == KVW_ERR_TIMEDOUT;
	if (a.seq_id < RP_SEQS)
		p->abort_status[a.seq_id] = a.status;
}

/* Parses the complete frames at the head of rx. */
static void rp_parse(struct rp *p)
{
	size_t off = 0;
	for (;;) {
		struct kvw_wire_hdr h;
		const char *why;
		if (p->rx_len - off < sizeof(h))
			break;
		cr_assert_eq(kvw_wire_check_hdr(p->rx + off, sizeof(h), &h, &why), KVW_OK,
			     "victim sent a bad header: %s", why);
		if (p->rx_len - off < sizeof(h) + h.len)
			break;
		rp_on_frame(p, &h, p->rx + off + sizeof(h));
		off += sizeof(h) + h.len;
	}
	memmove(p->rx, p->rx + off, p->rx_len - off);
	p->rx_len -= off;
}

void rp_drain(struct rp *p)
{
	for (;;) {
		ssize_t n = recv(p->fd, p->rx + p->rx_len, RP_RX_CAP - p->rx_len, MSG_DONTWAIT);
		if (n <= 0)
			return;
		p->rx_len += (size_t)n;
		rp_parse(p);
	}
}

static void rp_write(struct rp *p, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	uint64_t end = kvwt_now_ms() + 20000;
	while (len) {
		ssize_t n = send(p->fd, b, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			b += n;
			len -= (size_t)n;
			continue;
		}
		cr_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR),
			  "the victim closed the raw peer's connection: %s", kvw_ctx_last_error(p->ctx));
		cr_assert_lt(kvwt_now_ms(), end, "the victim stopped reading the raw peer");
		kvw_progress(p->ctx);
		rp_drain(p);
	}
}

/* Keepalive: the victim's PING gets its PONG, so long cases stay alive. */
static void rp_pong(struct rp *p)
{
	uint8_t f[sizeof(struct kvw_wire_hdr) + sizeof(p->ping)];
	if (!p->ping_due)
		return;
	p->ping_due = false;
	kvw_wire_hdr_encode(f, KVW_T_PONG, 0, sizeof(p->ping), p->srv_id);
	memcpy(f + sizeof(struct kvw_wire_hdr), &p->ping, sizeof(p->ping));
	rp_write(p, f, sizeof(f));
}

void rp_frame(struct rp *p, unsigned type, const void *body, size_t len)
{
	uint8_t hdr[sizeof(struct kvw_wire_hdr)];
	rp_pong(p);
	kvw_wire_hdr_encode(hdr, type, 0, (uint32_t)len, p->srv_id);
	rp_write(p, hdr, sizeof(hdr));
	if (len)
		rp_write(p, body, len);
}

bool rp_drive(struct rp *p, int ms, bool (*pred)(struct rp *p, void *arg), void *arg)
{
	uint64_t end = kvwt_now_ms() + (uint64_t)ms;
	for (;;) {
		kvw_event ev[16];
		int n = kvw_poll(p->ctx, ev, 16);
		for (int i = 0; i < n; i++) {
			struct kvwt_rec *r = ev[i].user_data;
			if (!r)
				continue;
			if (ev[i].type == KVW_EV_LAYER && ev[i].layer < KVW_MAX_LAYERS) {
				r->layer_events++;
				r->layer_seen[ev[i].layer]++;
				r->layer_bytes += ev[i].bytes;
			} else if (ev[i].type == KVW_EV_SEQ) {
				r->seq_events++;
				r->status = ev[i].status;
				r->seq_bytes = ev[i].bytes;
				r->t_done_ms = kvwt_now_ms();
			}
		}
		rp_drain(p);
		rp_pong(p);
		if (pred && pred(p, arg))
			return true;
		if (kvwt_now_ms() >= end)
			return pred ? pred(p, arg) : true;
		kvw_ctx_wait(p->ctx, 1);
	}
}

void rp_grant(struct rp *p, uint64_t seq_id, uint32_t token, uint32_t n_layers, uint32_t n_blocks,
	      uint64_t block_bytes, uint64_t timeout_us)
{
	static uint8_t *body;
	size_t len = kvw_wire_grant_len(n_layers, n_blocks);
	struct kvw_wire_grant g = { .seq_id = seq_id, .token = token, .n_blocks = n_blocks,
				    .n_layers = n_layers, .block_bytes = block_bytes,
				    .block_stride = block_bytes, .timeout_us = timeout_us };
	if (!body)
		body = malloc(KVW_WIRE_MAX_CTRL);
	cr_assert_not_null(body);
	cr_assert_leq(len, KVW_WIRE_MAX_CTRL);
	memcpy(body, &g, sizeof(g));
	uint8_t *q = body + sizeof(g);
	for (uint32_t l = 0; l < n_layers; l++, q += 8) {
		uint64_t off = (uint64_t)l * n_blocks * block_bytes;
		memcpy(q, &off, 8);
	}
	for (uint32_t i = 0; i < n_blocks; i++, q += 4)
		memcpy(q, &i, 4);
	rp_frame(p, KVW_T_GRANT, body, len);
}

void rp_frag(struct rp *p, uint32_t token, uint32_t layer, uint32_t idx, uint64_t off,
	     const void *payload, uint32_t bytes)
{
	static uint8_t frame[sizeof(struct kvw_wire_data) + 65536];
	if (p->shm) {
		cr_assert_leq(p->arena_used + bytes, RP_ARENA);
		memcpy(p->arena + p->arena_used, payload, bytes);
		struct kvw_wire_desc d = { .token = token, .layer = layer, .blk_idx = idx,
					   .bytes = bytes, .blk_off = off, .src_off = p->arena_used,
					   .mem_id = RP_MEM_ID };
		p->arena_used += bytes;
		rp_frame(p, KVW_T_DESC, &d, sizeof(d));
		return;
	}
	struct kvw_wire_data d = { .token = token, .layer = layer, .blk_idx = idx, .bytes = bytes,
				   .blk_off = off };
	cr_assert_leq(bytes, 65536);
	memcpy(frame, &d, sizeof(d));
	memcpy(frame + sizeof(d), payload, bytes);
	rp_frame(p, KVW_T_DATA, frame, sizeof(d) + bytes);
}

static long rp_status_kib(const char *fmt)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, fmt, &kib) == 1)
			break;
	fclose(f);
	cr_assert_geq(kib, 0, "no %s in /proc/self/status", fmt);
	return kib;
}

long rp_rss_mark(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	cr_assert_not_null(f, "cannot reset the peak RSS (/proc/self/clear_refs)");
	cr_assert_eq(fputs("5", f) >= 0 && fclose(f) == 0, 1);
	return rp_status_kib("VmRSS: %ld kB");
}

long rp_rss_peak_kib(void)
{
	return rp_status_kib("VmHWM: %ld kB");
}
