/* SPDX-License-Identifier: MIT */
#include "hs.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rawpeer.h"

/* Reads and drops what the victim sent the peer (no wait). */
static void hs_drain(struct hs *h)
{
	static uint8_t sink[1u << 16];

	while (recv(h->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
}

void hs_drive(struct hs *h, int ms)
{
	uint64_t end = kvwt_now_ms() + (uint64_t)ms;

	do {
		kvw_progress(h->ctx);
		hs_drain(h);
		kvw_ctx_wait(h->ctx, 1);
	} while (kvwt_now_ms() < end);
}

/* Writes all of buf (fd attached to its first byte when >= 0), driving
 * the victim whenever the socket is full. */
static void hs_send(struct hs *h, const uint8_t *buf, size_t len, int pass_fd)
{
	if (pass_fd >= 0) {
		cr_assert_eq(rawp_send_fd(h->fd, buf, len, pass_fd), 0, "MEM with its fd: %s",
			     strerror(errno));
		return;
	}
	uint64_t end = kvwt_now_ms() + 10000;
	while (len) {
		ssize_t n = send(h->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		cr_assert(n < 0 && (errno == EAGAIN || errno == EINTR), "the victim closed the "
			  "peer's socket: %s", kvw_ctx_last_error(h->ctx));
		cr_assert_lt(kvwt_now_ms(), end, "the victim read nothing for 10 s");
		kvw_progress(h->ctx);
		hs_drain(h);
	}
}

static void hs_frame(struct hs *h, unsigned type, const void *body, size_t len, int pass_fd)
{
	uint8_t frame[sizeof(struct kvw_wire_hdr) + 64];

	cr_assert_leq(len, 64);
	kvw_wire_hdr_encode(frame, type, 0, (uint32_t)len, h->srv_id);
	memcpy(frame + sizeof(struct kvw_wire_hdr), body, len);
	hs_send(h, frame, sizeof(struct kvw_wire_hdr) + len, pass_fd);
}

/* Reads frames until the victim's GRANT: its token. */
static uint32_t hs_grant_token(struct hs *h)
{
	static uint8_t body[KVW_WIRE_MAX_CTRL];
	struct kvw_wire_grant g;
	struct kvw_wire_hdr hd;

	do
		cr_assert_eq(rawp_recv(h->fd, h->ctx, 5000, &hd, body, sizeof(body)), 1,
			     "no GRANT came to the raw peer: %s", kvw_ctx_last_error(h->ctx));
	while (hd.type != KVW_T_GRANT);
	memcpy(&g, body, sizeof(g));
	cr_assert_eq(g.seq_id, HS_SEQ);
	return g.token;
}

void hs_listen(struct hs *h, const char *const *cfg)
{
	char uri[160];

	memset(h, 0, sizeof(*h));
	h->fd = -1;
	h->ctx = kvwt_ctx(cfg);
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(h->ctx, uri, &h->l), KVW_OK, "%s", kvw_ctx_last_error(h->ctx));
}

void hs_join(struct hs *h)
{
	h->fd = rawp_connect(kvw_listener_uri(h->l));
	cr_assert_geq(h->fd, 0);
	h->srv_id = rawp_handshake(h->fd, h->ctx, "shm");
	cr_assert_neq(h->srv_id, 0, "raw handshake failed: %s", kvw_ctx_last_error(h->ctx));
	cr_assert_eq(kvw_accept(h->l, 5000, &h->ep), KVW_OK);
	kvwt_pool_make(h->ctx, &h->dst, 2, 16, HS_BB, HS_STRIDE);
	kvwt_pool_fill(&h->dst, 71);
	h->blk[0] = 5, h->blk[1] = 6, h->blk[2] = 9, h->blk[3] = 0;
	kvwt_rec_init(&h->rrec);
	cr_assert_eq(kvw_recv_seq(h->ep, HS_SEQ, h->dst.lay, h->blk, 4, 20000000, &h->rreq), KVW_OK,
		     "%s", kvw_ctx_last_error(h->ctx));
	kvw_req_set_user_data(h->rreq, &h->rrec);
	h->token = hs_grant_token(h);
	h->dlen = h->dst.layer_stride * 2;
	h->snap = malloc(h->dlen);
	cr_assert_not_null(h->snap);
	memcpy(h->snap, h->dst.base, h->dlen);
}

void hs_open(struct hs *h, const char *const *cfg)
{
	hs_listen(h, cfg);
	hs_join(h);
}

void hs_close(struct hs *h)
{
	if (h->fd >= 0)
		close(h->fd);
	if (h->rreq)
		kvw_req_free(h->rreq);
	if (h->ep)
		kvw_ep_close(h->ep);
	if (h->dst.mem)
		kvwt_pool_free(&h->dst);
	kvw_listener_close(h->l);
	kvw_ctx_destroy(h->ctx);
	free(h->snap);
}

int hs_memfd(const char *name, uint64_t size, unsigned seals, uint8_t fill, uint64_t fill_len)
{
	static uint8_t buf[1u << 16];
	int fd = memfd_create(name, MFD_CLOEXEC | (seals ? MFD_ALLOW_SEALING : 0));

	cr_assert_geq(fd, 0, "memfd_create: %s", strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)size), 0, "ftruncate(%llu): %s", (unsigned long long)size,
		     strerror(errno));
	memset(buf, fill, sizeof(buf));
	for (uint64_t at = 0; at < fill_len; at += sizeof(buf)) {
		size_t n = fill_len - at < sizeof(buf) ? (size_t)(fill_len - at) : sizeof(buf);
		cr_assert_eq(pwrite(fd, buf, n, (off_t)at), (ssize_t)n);
	}
	if (seals)
		cr_assert_eq(fcntl(fd, F_ADD_SEALS, seals), 0, "F_ADD_SEALS: %s", strerror(errno));
	return fd;
}

int hs_ro(int fd)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int ro = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(ro, 0, "reopen %s: %s", path, strerror(errno));
	return ro;
}

void hs_mem(struct hs *h, uint32_t mem_id, uint64_t len, int pass_fd)
{
	struct kvw_wire_mem m = { .mem_id = mem_id, .len = len };

	hs_frame(h, KVW_T_MEM, &m, sizeof(m), pass_fd);
}

void hs_desc(struct hs *h, uint32_t layer, uint32_t idx, uint64_t off, uint32_t bytes,
	     uint64_t src_off, uint32_t mem_id)
{
	struct kvw_wire_desc d = { .token = h->token, .layer = layer, .blk_idx = idx, .bytes = bytes,
				   .blk_off = off, .src_off = src_off, .mem_id = mem_id };

	hs_frame(h, KVW_T_DESC, &d, sizeof(d), -1);
}

void hs_descv(struct hs *h, uint32_t layer, uint32_t idx, uint64_t off, uint32_t bytes,
	      uint64_t src_off, uint32_t piece, uint64_t stride, uint32_t mem_id)
{
	struct kvw_wire_descv d = { .token = h->token, .layer = layer, .blk_idx = idx, .bytes = bytes,
				    .blk_off = off, .src_off = src_off, .mem_id = mem_id, .piece = piece,
				    .src_stride = stride };

	hs_frame(h, KVW_T_DESCV, &d, sizeof(d), -1);
}

void hs_desc_all(struct hs *h, uint64_t src_off, uint32_t mem_id)
{
	for (uint32_t l = 0; l < 2; l++)
		for (uint32_t i = 0; i < 4; i++)
			hs_desc(h, l, i, 0, HS_BB, src_off + (l * 4 + i) * HS_BB, mem_id);
}

static bool hs_done(void *arg)
{
	return ((struct kvwt_rec *)arg)->status != KVW_INPROGRESS;
}

static void hs_wait_done(struct hs *h)
{
	uint64_t end = kvwt_now_ms() + 5000;

	while (!hs_done(&h->rrec) && kvwt_now_ms() < end) {
		kvwt_drive1(h->ctx, 1, hs_done, &h->rrec);
		hs_drain(h);
	}
	cr_assert(hs_done(&h->rrec), "the grant's request did not end within 5 s");
}

void hs_expect_rejected(struct hs *h, const char *const *words)
{
	const char *err;

	hs_wait_done(h);
	err = kvw_ctx_last_error(h->ctx);
	cr_assert_eq(h->rrec.status, KVW_ERR_REJECTED, "request ended %s, not REJECTED: %s",
		     kvw_strerror(h->rrec.status), err);
	cr_assert_eq(memcmp(h->snap, h->dst.base, h->dlen), 0, "a refused arena wrote the pool");
	cr_assert_eq(kvw_ep_status(h->ep), KVW_OK, "the victim's endpoint went down: %s", err);
	for (size_t i = 0; words && words[i]; i++)
		cr_assert(strstr(err, words[i]), "the sentence lacks \"%s\": %s", words[i], err);
	cr_log_info("refused: %s", err);
}

uint8_t hs_expect_ok(struct hs *h)
{
	hs_wait_done(h);
	cr_assert_eq(h->rrec.status, KVW_OK, "request ended %s: %s", kvw_strerror(h->rrec.status),
		     kvw_ctx_last_error(h->ctx));
	return kvwt_page(&h->dst, 0, h->blk[0])[0];
}

long hs_shmem_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssShmem: %ld kB", &kib) == 1)
			break;
	fclose(f);
	cr_assert_geq(kib, 0, "no RssShmem in /proc/self/status");
	return kib;
}

bool hs_mapped(const char *name)
{
	char line[512], want[160];
	bool found = false;
	FILE *f = fopen("/proc/self/maps", "r");

	cr_assert_not_null(f);
	snprintf(want, sizeof(want), "/memfd:%s ", name);
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, want) != NULL;
	fclose(f);
	return found;
}
