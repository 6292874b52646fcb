/* SPDX-License-Identifier: MIT */
/* libFuzzer: arbitrary bytes as a peer's byte stream into a real listener.
 * One context listens (tcp on loopback, or shm with KVW_FUZZ_DRIVER=shm);
 * each input is written by a fresh client socket, half-closed, and the
 * listener is driven until it has dealt with the bytes. Whatever endpoint
 * the bytes produce is granted a sequence, so GRANT-time and DATA/DESC paths
 * are reached too. The listener must never crash, leak, or write outside
 * the granted pages. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvw_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kvw_ctx *fz_ctx;
static kvw_listener *fz_l;
static kvw_mem *fz_mem;
static kvw_layout *fz_lay;
static struct kvw_uri fz_uri;
#define FZ_BLOCKS 8
#define FZ_BB 4096
#define FZ_STRIDE 8192 /* gaps between blocks stay 0x5a: a write there is a bug */

static void fz_die(const char *what)
{
	fprintf(stderr, "fuzz_stream setup: %s: %s\n", what, fz_ctx ? kvw_ctx_last_error(fz_ctx) : "");
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *drv = getenv("KVW_FUZZ_DRIVER");
	char uri[128];
	kvw_config *cfg;
	if (kvw_config_create(&cfg) || kvw_config_set(cfg, "log_level", "0") ||
	    kvw_config_set(cfg, "connect_timeout_ms", "50") ||
	    kvw_config_set(cfg, "handshake_timeout_ms", "50") || kvw_ctx_create(cfg, &fz_ctx))
		fz_die("context");
	kvw_config_destroy(cfg);
	if (drv && !strcmp(drv, "shm"))
		snprintf(uri, sizeof(uri), "shm:///tmp/kvw-fuzz-%d.sock", (int)getpid());
	else
		snprintf(uri, sizeof(uri), "tcp://127.0.0.1:0");
	if (kvw_listen(fz_ctx, uri, &fz_l) != KVW_OK)
		fz_die("listen");
	if (kvw_uri_parse(kvw_listener_uri(fz_l), &fz_uri) != KVW_OK)
		fz_die("listener uri");
	if (kvw_mem_alloc(fz_ctx, 2 * FZ_BLOCKS * FZ_STRIDE, KVW_MEM_NO_PIN, &fz_mem) != KVW_OK)
		fz_die("mem");
	kvw_layout_desc d = { .n_layers = 2, .n_blocks = FZ_BLOCKS, .block_bytes = FZ_BB,
			      .block_stride = FZ_STRIDE, .layer_stride = FZ_BLOCKS * FZ_STRIDE };
	if (kvw_layout_create(fz_mem, &d, &fz_lay) != KVW_OK)
		fz_die("layout");
	return 0;
}

/* connect() of the fuzzer's side. libFuzzer's timer signal can interrupt a
 * connect that waits for room in the listener's backlog; the handshake then
 * goes on in the kernel: drive the listener (it accepts) and wait for it. */
static int fz_connect_fd(int fd, const struct sockaddr *a, socklen_t len)
{
	for (int i = 0; i < 500; i++) {
		if (connect(fd, a, len) == 0 || errno == EISCONN)
			return 0;
		if (errno != EINTR && errno != EALREADY && errno != EINPROGRESS && errno != EAGAIN)
			return -1;
		kvw_progress(fz_ctx); /* the listener accepts: backlog room */
		poll(NULL, 0, 10);
	}
	errno = ETIMEDOUT;
	return -1;
}

static int fz_connect(void)
{
	int fd;
	if (!strcmp(fz_uri.scheme, "shm")) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", fz_uri.path[0] ? fz_uri.path : fz_uri.host);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && fz_connect_fd(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
	} else {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)fz_uri.port) };
		inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && fz_connect_fd(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
	}
	fprintf(stderr, "fuzz_stream: cannot connect to the listener: %s\n", strerror(errno));
	abort();
}

/* The gaps between granted blocks must keep their fill. */
static void fz_check_gaps(void)
{
	const uint8_t *p = kvw_mem_addr(fz_mem);
	for (size_t b = 0; b < 2 * FZ_BLOCKS; b++)
		for (size_t i = FZ_BB; i < FZ_STRIDE; i++)
			if (p[b * FZ_STRIDE + i] != 0x5a) {
				fprintf(stderr, "fuzz_stream: byte %zu after block %zu written: outside "
					"every granted page\n", i - FZ_BB, b);
				abort();
			}
}

/* Length of the leading handshake frames (HELLO, AUTH) of the input: they
 * go first, so the harness can accept and grant before the rest arrives. */
static size_t fz_handshake_len(const uint8_t *data, size_t size)
{
	size_t at = 0;
	struct kvw_wire_hdr h;
	while (size - at >= sizeof(h)) {
		memcpy(&h, data + at, sizeof(h));
		if ((h.type != KVW_T_HELLO && h.type != KVW_T_AUTH) || h.len > size - at - sizeof(h))
			break;
		at += sizeof(h) + h.len;
	}
	return at;
}

/* Writes data[*off, upto) and drives the listener until it goes quiet.
 * Returns 1 when the server closed the connection. */
static int fz_feed(int fd, const uint8_t *data, size_t *off, size_t upto, kvw_ep **ep,
		   kvw_req **req)
{
	static const uint32_t blocks[4] = { 1, 2, 5, 7 };
	kvw_event ev[16];
	int idle = 0;
	for (int round = 0; round < 2000 && idle < 20; round++) {
		if (*off < upto) {
			ssize_t n = send(fd, data + *off, upto - *off, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0)
				*off += (size_t)n;
		}
		int got = kvw_poll(fz_ctx, ev, 16);
		if (!*ep && kvw_accept(fz_l, 0, ep) == KVW_OK)
			kvw_recv_seq(*ep, 1, fz_lay, blocks, 4, 100000, req);
		char sink[4096];
		ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return 1;
		idle = (got > 0 || r > 0 || *off < upto) ? 0 : idle + 1;
		if (!got && r < 0 && *off == upto)
			kvw_ctx_wait(fz_ctx, 0);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	kvw_ep *ep = NULL;
	kvw_req *req = NULL;
	kvw_event ev[16];
	memset(kvw_mem_addr(fz_mem), 0x5a, kvw_mem_len(fz_mem));
	int fd = fz_connect();
	size_t off = 0;
	int closed = fz_feed(fd, data, &off, fz_handshake_len(data, size), &ep, &req);
	if (!closed)
		closed = fz_feed(fd, data, &off, size, &ep, &req);
	if (!closed) {
		shutdown(fd, SHUT_WR);
		fz_feed(fd, data, &off, off, &ep, &req);
	}
	close(fd);
	fz_check_gaps();
	if (getenv("KVW_FUZZ_VERBOSE")) {
		kvw_req_info in = {.size = sizeof(in)};
		if (req)
			kvw_req_query(req, &in);
		fprintf(stderr, "fuzz_stream: %zu bytes: endpoint %s, grant %s, %llu bytes landed\n",
			size, ep ? "accepted" : "none", req ? kvw_strerror(in.status) : "none",
			(unsigned long long)in.bytes);
	}
	if (ep)
		kvw_ep_close(ep);
	for (int i = 0; i < 20; i++)
		kvw_poll(fz_ctx, ev, 16); /* reap what the close left */
	if (req)
		kvw_req_free(req);
	return 0;
}
