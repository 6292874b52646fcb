/* SPDX-License-Identifier: MIT */
/* The framed stream below tcp and shm (drivers/common/stream.c): gathered
 * payloads (kvw_frag.piece: a fragment contiguous only at the receiver)
 * leave as one frame whose bytes are the pieces in order, across partial
 * writes and iovec limits; a sender abort that meets a half-written
 * gathered frame finishes it from a copy of the pieces, never from the
 * pages after the abort, and drops the frames not yet begun. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream.h"

#define PIECE 100u
#define STRIDE 300u
#define NPIECE 2000u /* 200,000 bytes: several sendmsg calls over a small buffer */

static uint8_t *src;

static void fill(void)
{
	src = malloc((size_t)STRIDE * NPIECE);
	cr_assert_not_null(src);
	for (size_t i = 0; i < (size_t)STRIDE * NPIECE; i++)
		src[i] = (uint8_t)(i * 31 + i / 257);
}

/* A stream on one end of a socket pair with a small send buffer. */
static void pair(struct kvw_stream *s, int *peer)
{
	int sv[2], small = 4096;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	cr_assert_eq(kvw_stream_init(s, sv[0], true, NULL, 0), KVW_OK);
	*peer = sv[1];
}

/* Reads exactly n bytes from fd while flushing s (non-blocking both ways). */
static void drain(struct kvw_stream *s, int fd, uint8_t *out, size_t n)
{
	size_t got = 0;

	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (int spins = 0; got < n && spins < 1000000; spins++) {
		kvw_stream_flush(s);
		ssize_t r = read(fd, out + got, n - got);
		if (r > 0)
			got += (size_t)r;
		else
			cr_assert(r < 0 && errno == EAGAIN, "read: %s", r ? strerror(errno) : "EOF");
	}
	cr_assert_eq(got, n, "%zu of %zu bytes came out", got, n);
}

static void expect_pieces(const uint8_t *p, const uint8_t *from)
{
	for (uint32_t i = 0; i < NPIECE; i++)
		cr_assert_eq(memcmp(p + (size_t)i * PIECE, from + (size_t)i * STRIDE, PIECE), 0,
			     "piece %u is not the source's piece %u", i, i);
}

TestSuite(stream, .timeout = 60);

Test(stream, gathered_payload_leaves_in_piece_order)
{
	struct kvw_stream s;
	uint8_t head[16] = "HEADHEADHEADHEAD", *out = malloc(16 + PIECE * NPIECE);
	int peer;

	fill();
	pair(&s, &peer);
	cr_assert(kvw_stream_data_gather(&s, head, sizeof(head), src, PIECE * NPIECE, PIECE, STRIDE,
					 (kvw_req *)&s));
	drain(&s, peer, out, 16 + PIECE * NPIECE);
	cr_assert_eq(memcmp(out, head, 16), 0);
	expect_pieces(out + 16, src);
	cr_assert(kvw_stream_idle(&s));
	kvw_stream_fini(&s);
	close(peer);
	free(out);
	free(src);
}

Test(stream, abort_finishes_a_half_written_gathered_frame_from_a_copy)
{
	struct kvw_stream s;
	uint8_t head[16] = {0}, *out = malloc(2 * (16 + PIECE * NPIECE)), *want;
	kvw_req *req = (kvw_req *)&s;
	int peer;

	fill();
	want = malloc((size_t)STRIDE * NPIECE);
	memcpy(want, src, (size_t)STRIDE * NPIECE);
	pair(&s, &peer);
	cr_assert(kvw_stream_data_gather(&s, head, sizeof(head), src, PIECE * NPIECE, PIECE, STRIDE, req));
	cr_assert(kvw_stream_data_gather(&s, head, sizeof(head), src, PIECE * NPIECE, PIECE, STRIDE, req));
	kvw_stream_flush(&s); /* the first frame is now half written (4 KiB buffer) */
	cr_assert_not(kvw_stream_idle(&s));
	kvw_stream_cancel(&s, req);
	memset(src, 0xAB, (size_t)STRIDE * NPIECE); /* the pages are the caller's again */
	drain(&s, peer, out, 16 + PIECE * NPIECE);
	expect_pieces(out + 16, want);
	cr_assert(kvw_stream_idle(&s), "the frame not yet begun was not dropped");
	kvw_stream_fini(&s);
	close(peer);
	free(out);
	free(want);
	free(src);
}
