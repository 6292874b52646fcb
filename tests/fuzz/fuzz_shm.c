/* SPDX-License-Identifier: MIT */
/* libFuzzer: a hostile same-host peer against the shm driver's receive path
 * (MEM and DESC frames with real fds). One context listens on shm in this
 * process; each input is a fresh raw unix-socket peer that goes through the
 * handshake (or, when the first byte says so, sends MEM before it), gets a
 * grant of 4 blocks x 2 layers, and then runs up to FZ_OPS operations the
 * input spells out: MEM frames passing memfds of chosen sizes (sparse up
 * to past the host's RAM), seals, fill, access mode and announced length,
 * or a pipe, a regular file or no fd at all; DESC frames naming any arena,
 * layer, block, offset, length and source; truncating and punching the
 * memfds already passed; driving the victim. The victim must never crash
 * (SIGBUS included), write outside the granted pages, or keep an fd or a
 * mapping of a peer's arena once the endpoint is closed. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvw_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_BLOCKS 8
#define FZ_BB 4096
#define FZ_STRIDE 8192 /* gaps between blocks stay 0x5a: a write there is a bug */
#define FZ_OPS 48
#define FZ_FDS 8

static kvw_ctx *fz_ctx;
static kvw_listener *fz_l;
static kvw_mem *fz_mem;
static kvw_layout *fz_lay;
static struct sockaddr_un fz_sa;
static int fz_base_fds;

/* The input, read a byte at a time (zeros once it runs out). */
struct fz_in {
	const uint8_t *p;
	size_t n, at;
};

static uint8_t fz_u8(struct fz_in *in) { return in->at < in->n ? in->p[in->at++] : 0; }
static uint32_t fz_u16(struct fz_in *in) { return fz_u8(in) | (uint32_t)fz_u8(in) << 8; }

static void fz_die(const char *what)
{
	fprintf(stderr, "fuzz_shm: %s: %s\n", what, fz_ctx ? kvw_ctx_last_error(fz_ctx) : "");
	abort();
}

/* The peer's pipes of this input, by inode (libFuzzer's own pipes to its
 * symbolizer must not count). */
static unsigned long fz_pipes[64];
static unsigned fz_n_pipes;

/* fds that are the peer's (its arenas, files, pipes) or sockets: what a
 * closed endpoint must not hold. */
static int fz_count_fds(bool print)
{
	char path[64], to[256];
	int n = 0;
	for (int fd = 0; fd < 512; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t k = readlink(path, to, sizeof(to) - 1);
		unsigned long ino = 0;
		bool ours = false;
		if (k <= 0)
			continue;
		to[k] = 0;
		if (sscanf(to, "pipe:[%lu]", &ino) == 1)
			for (unsigned i = 0; i < fz_n_pipes; i++)
				ours = ours || fz_pipes[i] == ino;
		ours = ours || strstr(to, "memfd:fz-arena") || !strncmp(to, "/tmp/#", 6) ||
		       !strncmp(to, "socket:", 7);
		n += ours;
		if (ours && print)
			fprintf(stderr, "  fd %d -> %s\n", fd, to);
	}
	return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char uri[128];
	kvw_config *cfg;
	if (kvw_config_create(&cfg) || kvw_config_set(cfg, "log_level", "0") ||
	    kvw_config_set(cfg, "connect_timeout_ms", "200") || kvw_ctx_create(cfg, &fz_ctx))
		fz_die("context");
	kvw_config_destroy(cfg);
	snprintf(uri, sizeof(uri), "shm:///tmp/kvw-fuzz-shm-%d.sock", (int)getpid());
	if (kvw_listen(fz_ctx, uri, &fz_l) != KVW_OK)
		fz_die("listen");
	fz_sa.sun_family = AF_UNIX;
	snprintf(fz_sa.sun_path, sizeof(fz_sa.sun_path), "/tmp/kvw-fuzz-shm-%d.sock", (int)getpid());
	if (kvw_mem_alloc(fz_ctx, 2 * FZ_BLOCKS * FZ_STRIDE, KVW_MEM_NO_PIN, &fz_mem) != KVW_OK)
		fz_die("mem");
	kvw_layout_desc d = { .n_layers = 2, .n_blocks = FZ_BLOCKS, .block_bytes = FZ_BB,
			      .block_stride = FZ_STRIDE, .layer_stride = FZ_BLOCKS * FZ_STRIDE };
	if (kvw_layout_create(fz_mem, &d, &fz_lay) != KVW_OK)
		fz_die("layout");
	fz_base_fds = fz_count_fds(false);
	return 0;
}

/* ------------------------------------------------------------ the peer */
struct fz_peer {
	int fd;
	uint32_t srv_id, token;
	kvw_ep *ep;
	kvw_req *req;
	int fds[FZ_FDS];       /* the peer's own copies of what it passed */
	uint64_t lens[FZ_FDS];
	bool closed;           /* the victim closed the connection */
};

static void fz_drive(struct fz_peer *p, int rounds)
{
	static uint8_t sink[1u << 16];
	kvw_event ev[16];
	for (int i = 0; i < rounds; i++) {
		kvw_poll(fz_ctx, ev, 16);
		ssize_t r = recv(p->fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			p->closed = true;
	}
}

/* Writes a frame (fd on its first byte when >= 0), driving the victim
 * while the socket is full. */
static void fz_send(struct fz_peer *p, unsigned type, const void *body, size_t len, int pass_fd)
{
	uint8_t f[sizeof(struct kvw_wire_hdr) + 128];
	size_t at = 0, n = sizeof(struct kvw_wire_hdr) + len;
	kvw_wire_hdr_encode(f, type, 0, (uint32_t)len, p->srv_id);
	memcpy(f + sizeof(struct kvw_wire_hdr), body, len);
	for (int tries = 0; at < n && !p->closed && tries < 10000; tries++) {
		union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
		struct iovec iov = { f + at, n - at };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (pass_fd >= 0 && at == 0) {
			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.b;
			mh.msg_controllen = sizeof(cm.b);
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
		}
		ssize_t w = sendmsg(p->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w > 0)
			at += (size_t)w;
		else if (w < 0 && errno != EAGAIN && errno != EINTR)
			p->closed = true;
		else
			fz_drive(p, 1);
	}
}

/* Reads frames (driving the victim) until one of type; false if none. */
static bool fz_expect(struct fz_peer *p, unsigned type, void *body, size_t cap)
{
	uint8_t h[sizeof(struct kvw_wire_hdr)];
	struct kvw_wire_hdr hd;
	const char *why;
	for (int round = 0; round < 2000; round++) {
		kvw_progress(fz_ctx);
		ssize_t r = recv(p->fd, h, sizeof(h), MSG_DONTWAIT | MSG_PEEK);
		if (r == 0)
			return false;
		if (r != (ssize_t)sizeof(h))
			continue;
		if (kvw_wire_check_hdr(h, sizeof(h), &hd, &why) != KVW_OK || hd.len > cap)
			return false;
		uint8_t buf[sizeof(h) + 4096];
		if (hd.len > sizeof(buf) - sizeof(h) ||
		    recv(p->fd, buf, sizeof(h) + hd.len, MSG_DONTWAIT | MSG_PEEK) != (ssize_t)(sizeof(h) + hd.len))
			continue;
		recv(p->fd, buf, sizeof(h) + hd.len, MSG_DONTWAIT);
		if (hd.type == type) {
			memcpy(body, buf + sizeof(h), hd.len);
			return true;
		}
	}
	return false;
}

/* HELLO / WELCOME / AUTH / READY without a secret, accepted, granted. */
static bool fz_handshake(struct fz_peer *p)
{
	static const uint32_t blocks[4] = { 1, 2, 5, 7 };
	struct kvw_wire_hello hello = { .rails = 1 };
	struct kvw_wire_welcome w;
	struct kvw_wire_auth a = { .ep_id = 0x7777 };
	uint8_t body[4096];
	snprintf(hello.driver, sizeof(hello.driver), "shm");
	fz_send(p, KVW_T_HELLO, &hello, sizeof(hello), -1);
	if (!fz_expect(p, KVW_T_WELCOME, body, sizeof(body)))
		return false;
	memcpy(&w, body, sizeof(w));
	p->srv_id = w.ep_id;
	fz_send(p, KVW_T_AUTH, &a, sizeof(a), -1);
	if (!fz_expect(p, KVW_T_READY, body, sizeof(body)))
		return false;
	for (int i = 0; i < 200 && !p->ep; i++)
		if (kvw_accept(fz_l, 1, &p->ep) != KVW_OK)
			p->ep = NULL;
	if (!p->ep || kvw_recv_seq(p->ep, 1, fz_lay, blocks, 4, 1000000, &p->req) != KVW_OK)
		return false;
	p->token = p->req->token;
	return fz_expect(p, KVW_T_GRANT, body, sizeof(body));
}

/* Each choice below reads 0 as what an honest kvwire sender does, so the
 * fuzzer starts from arenas that are mapped and used and mutates them
 * into hostile ones. */

/* Sizes a MEM's memfd may have: up to sparse ones past the host's RAM. */
static uint64_t fz_size(uint8_t k)
{
	static const uint64_t sz[] = { 65536, 0, 1, 4096, 5000, 1u << 20, 1ull << 30, 64ull << 30 };
	if ((k & 7) == 7 && (k & 8))
		return (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE) + 4096;
	return sz[k & 7];
}

static int fz_pipe(void)
{
	struct stat st;
	int ps[2];
	if (pipe(ps))
		return -1;
	close(ps[1]);
	if (fz_n_pipes < 64 && fstat(ps[0], &st) == 0)
		fz_pipes[fz_n_pipes++] = st.st_ino;
	return ps[0];
}

/* Seals: bit i of `drop` leaves out the i-th of kvw_mem_alloc's seals;
 * bit 4 adds F_SEAL_WRITE. */
static void fz_seal(int fd, uint8_t drop)
{
	static const unsigned honest[] = { F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_FUTURE_WRITE, F_SEAL_SEAL };
	if (drop & 0x10)
		fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE);
	for (unsigned i = 0; i < 4; i++)
		if (!(drop >> i & 1))
			fcntl(fd, F_ADD_SEALS, honest[i]);
}

/* The fd a MEM passes: a memfd (seals, fill, read-only unless bit 3 of
 * kind), none, a pipe or a regular file. Keeps the peer's own copy. */
static int fz_make_fd(struct fz_peer *p, struct fz_in *in, uint32_t id, uint64_t len)
{
	uint8_t kind = fz_u8(in), drop = fz_u8(in), fill = fz_u8(in) ^ 0xee;
	int fd;
	if ((kind & 7) == 5)
		return -1;
	if ((kind & 7) == 6)
		return fz_pipe();
	fd = (kind & 7) == 7 ? open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)
			     : memfd_create("fz-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, (off_t)len)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (len)
		(void)!pwrite(fd, &fill, 1, (off_t)((uint64_t)fz_u16(in) * 4096 % len));
	fz_seal(fd, drop);
	if (p->fds[id] < 0) {
		p->fds[id] = dup(fd);
		p->lens[id] = len;
	}
	if (!(kind & 8)) { /* read-only, as kvwire sends it */
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		int ro = open(path, O_RDONLY | O_CLOEXEC);
		close(fd);
		fd = ro;
	}
	return fd;
}

static void fz_op_mem(struct fz_peer *p, struct fz_in *in)
{
	uint32_t id = fz_u8(in) % FZ_FDS;
	uint64_t len = fz_size(fz_u8(in));
	uint8_t how = fz_u8(in);
	struct kvw_wire_mem m = { .mem_id = id, .len = len };
	int fd = fz_make_fd(p, in, id, len);
	if (how & 1)
		m.len = how & 2 ? len + 4096 : len / 2; /* announces more or less */
	fz_send(p, KVW_T_MEM, &m, sizeof(m), fd);
	if (fd >= 0)
		close(fd);
}

static void fz_op_desc(struct fz_peer *p, struct fz_in *in)
{
	static const uint32_t bytes[] = { 4096, 1, 100, 4095, 8192, 16384, 65536, 1u << 24 };
	uint8_t k = fz_u8(in), b = fz_u8(in);
	struct kvw_wire_desc d = { .token = k & 0x80 ? p->token + b : p->token,
				   .layer = k % 3, .blk_idx = (k >> 2) % 5,
				   .bytes = bytes[b & 7], .blk_off = (b & 8) ? fz_u16(in) : 0,
				   .mem_id = fz_u8(in) % (FZ_FDS + 1) };
	uint8_t s = fz_u8(in);
	uint64_t len = d.mem_id < FZ_FDS ? p->lens[d.mem_id] : 0;
	d.src_off = s & 1 ? (uint64_t)fz_u16(in) * 4096 : s & 2 ? len - (s >> 2) : (uint64_t)s << 12;
	fz_send(p, KVW_T_DESC, &d, sizeof(d), -1);
}

/* A gathered DESC (DESCV): pieces and strides that fit, wrap or overrun. */
static void fz_op_descv(struct fz_peer *p, struct fz_in *in)
{
	static const uint32_t pieces[] = { 256, 1, 100, 4096, 512, 1u << 20, 3, 0 };
	static const uint64_t strides[] = { 2048, 257, 4096, 1ull << 40, UINT64_MAX / 3, 1, 65536, 0 };
	uint8_t k = fz_u8(in), b = fz_u8(in), s = fz_u8(in);
	struct kvw_wire_descv d = { .token = k & 0x80 ? p->token + b : p->token,
				    .layer = k % 3, .blk_idx = (k >> 2) % 5, .piece = pieces[b & 7],
				    .src_stride = strides[(b >> 3) & 7],
				    .blk_off = (b & 0x40) ? fz_u16(in) : 0,
				    .mem_id = fz_u8(in) % (FZ_FDS + 1) };
	d.bytes = d.piece * (1 + s % 32);
	d.src_off = s & 0x40 ? (uint64_t)fz_u16(in) * 4096 : (uint64_t)(s & 0x3f) << 12;
	fz_send(p, KVW_T_DESCV, &d, sizeof(d), -1);
}

/* What the peer does to a memfd it passed: truncate or punch a hole. */
static void fz_op_change(struct fz_peer *p, struct fz_in *in)
{
	uint8_t k = fz_u8(in);
	int fd = p->fds[k % FZ_FDS];
	uint64_t at = (uint64_t)fz_u16(in) * 4096;
	if (fd < 0)
		return;
	if (k & 0x10)
		(void)!ftruncate(fd, (off_t)(k & 0x20 ? 0 : at));
	else
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at, 1 << 20);
}

static void fz_ops(struct fz_peer *p, struct fz_in *in)
{
	for (int i = 0; i < FZ_OPS && in->at < in->n && !p->closed; i++) {
		switch (fz_u8(in) % 5) {
		case 0: fz_op_mem(p, in); break;
		case 1: fz_op_desc(p, in); break;
		case 2: fz_op_change(p, in); break;
		case 4: fz_op_descv(p, in); break;
		default: fz_drive(p, 1 + fz_u8(in) % 8); break;
		}
	}
	fz_drive(p, 20);
}

/* The gaps between granted blocks keep their fill. */
static void fz_check_gaps(void)
{
	const uint8_t *b = kvw_mem_addr(fz_mem);
	for (size_t blk = 0; blk < 2 * FZ_BLOCKS; blk++)
		for (size_t i = FZ_BB; i < FZ_STRIDE; i++)
			if (b[blk * FZ_STRIDE + i] != 0x5a) {
				fprintf(stderr, "fuzz_shm: byte %zu after block %zu written: outside "
					"every granted page\n", i - FZ_BB, blk);
				abort();
			}
}

/* Once the endpoint is gone, no arena of the peer is mapped or held open. */
static void fz_check_released(void)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "/memfd:fz-arena")) {
			fprintf(stderr, "fuzz_shm: a peer arena is still mapped after its endpoint "
				"closed: %s", line);
			abort();
		}
	if (f)
		fclose(f);
	int n = fz_count_fds(false);
	for (int i = 0; i < 200 && n > fz_base_fds; i++, n = fz_count_fds(false)) {
		kvw_event ev[16];
		kvw_poll(fz_ctx, ev, 16); /* a refused handshake's endpoint goes at its next pass */
		poll(NULL, 0, 1);
	}
	if (n > fz_base_fds) {
		fz_count_fds(true);
		fprintf(stderr, "fuzz_shm: %d sockets and peer fds open, %d before: an fd of a "
			"closed endpoint is still held\n", n, fz_base_fds);
		abort();
	}
}

static void fz_peer_close(struct fz_peer *p)
{
	kvw_event ev[16];
	close(p->fd);
	for (int i = 0; i < FZ_FDS; i++)
		if (p->fds[i] >= 0)
			close(p->fds[i]);
	if (p->ep)
		kvw_ep_close(p->ep);
	for (int i = 0; i < 20; i++)
		kvw_poll(fz_ctx, ev, 16); /* reap what the close left */
	if (p->req)
		kvw_req_free(p->req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size, 0 };
	struct fz_peer p = { .fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) };
	memset(p.fds, -1, sizeof(p.fds));
	fz_n_pipes = 0;
	memset(kvw_mem_addr(fz_mem), 0x5a, kvw_mem_len(fz_mem));
	if (p.fd < 0 || connect(p.fd, (struct sockaddr *)&fz_sa, sizeof(fz_sa)) != 0)
		fz_die("connect to the listener");
	if (fz_u8(&in) & 1) /* MEM (or DESC) before the handshake */
		fz_ops(&p, &in);
	else if (fz_handshake(&p))
		fz_ops(&p, &in);
	fz_check_gaps();
	if (getenv("KVW_FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz_shm: %zu bytes: endpoint %s, grant %s: %s\n", size,
			p.ep ? "accepted" : "none", p.req ? kvw_strerror(p.req->status) : "none",
			kvw_ctx_last_error(fz_ctx));
	fz_peer_close(&p);
	fz_check_released();
	return 0;
}
