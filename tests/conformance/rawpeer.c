/* SPDX-License-Identifier: MIT */
#include "rawpeer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvw_int.h"
#include "kvwt.h"

int rawp_connect(const char *uri)
{
	struct kvw_uri u;
	int fd = -1;
	if (kvw_uri_parse(uri, &u) != KVW_OK)
		return -1;
	if (!strcmp(u.scheme, "tcp")) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)u.port) };
		if (inet_pton(AF_INET, u.host, &a.sin_addr) != 1)
			return -1;
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
	} else if (!strcmp(u.scheme, "shm")) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		const char *path = u.path[0] ? u.path : u.host;
		if (strlen(path) >= sizeof(a.sun_path))
			return -1;
		strcpy(a.sun_path, path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
	}
	if (fd >= 0)
		close(fd);
	return -1;
}

int rawp_send(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int rawp_send_fd(int fd, const void *buf, size_t len, int pass_fd)
{
	union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	memset(cm.b, 0, sizeof(cm.b));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) != 1)
		return -1;
	return rawp_send(fd, (const uint8_t *)buf + 1, len - 1);
}

int rawp_hello_minor = -1;

int rawp_frame(int fd, unsigned type, uint32_t ep_id, const void *body, size_t len)
{
	uint8_t hdr[sizeof(struct kvw_wire_hdr)];
	kvw_wire_hdr_encode(hdr, type, 0, (uint32_t)len, ep_id);
	if (type == KVW_T_HELLO && rawp_hello_minor >= 0)
		hdr[offsetof(struct kvw_wire_hdr, minor)] = (uint8_t)rawp_hello_minor;
	if (rawp_send(fd, hdr, sizeof(hdr)))
		return -1;
	return len ? rawp_send(fd, body, len) : 0;
}

/* Reads exactly len bytes, driving ctx. 1 done, 0 EOF, -1 timeout. */
static int rawp_read(int fd, kvw_ctx *ctx, uint64_t end_ms, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(fd, p + got, len - got, MSG_DONTWAIT);
		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return 0;
		if (kvwt_now_ms() >= end_ms)
			return -1;
		if (ctx)
			kvw_progress(ctx);
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		poll(&pfd, 1, ctx ? 0 : 1);
		if (ctx)
			kvw_ctx_wait(ctx, 1);
	}
	return 1;
}

int rawp_recv(int fd, kvw_ctx *ctx, int timeout_ms, struct kvw_wire_hdr *h, void *body,
	      size_t cap)
{
	uint64_t end = kvwt_now_ms() + (uint64_t)timeout_ms;
	uint8_t raw[sizeof(*h)];
	const char *why;
	int r = rawp_read(fd, ctx, end, raw, sizeof(raw));
	if (r <= 0)
		return r;
	if (kvw_wire_check_hdr(raw, sizeof(raw), h, &why) != KVW_OK) {
		fprintf(stderr, "rawpeer: server sent a bad header: %s\n", why);
		return -1;
	}
	if (h->len > cap) {
		fprintf(stderr, "rawpeer: %u-byte body does not fit %zu\n", h->len, cap);
		return -1;
	}
	return h->len ? rawp_read(fd, ctx, end, body, h->len) : 1;
}

int rawp_wait_closed(int fd, kvw_ctx *ctx, int timeout_ms, int32_t *reject)
{
	static uint8_t body[KVW_WIRE_MAX_CTRL];
	uint64_t end = kvwt_now_ms() + (uint64_t)timeout_ms;
	struct kvw_wire_hdr h;
	*reject = 0;
	for (;;) {
		int left = (int)(end - kvwt_now_ms());
		if (left <= 0)
			return -1;
		int r = rawp_recv(fd, ctx, left, &h, body, sizeof(body));
		if (r == 0)
			return 1;
		if (r < 0)
			return -1;
		if (h.type == KVW_T_REJECT) {
			struct kvw_wire_reject rj;
			memcpy(&rj, body, sizeof(rj));
			*reject = rj.status;
		}
	}
}

/* The status of a REJECT that came where the handshake's next frame was due. */
static void rawp_note_reject(const struct kvw_wire_hdr *h, const uint8_t *body, int32_t *reject)
{
	struct kvw_wire_reject rj;
	if (reject && h->type == KVW_T_REJECT) {
		memcpy(&rj, body, sizeof(rj));
		*reject = rj.status;
	}
}

uint32_t rawp_handshake_rej(int fd, kvw_ctx *ctx, const char *driver, int32_t *reject)
{
	static uint8_t body[4096];
	struct kvw_wire_hello hello = { .caps = 0, .rails = 1 };
	struct kvw_wire_welcome w;
	struct kvw_wire_hdr h;
	int r;

	if (reject)
		*reject = 0;
	memset(hello.nonce, 0x42, sizeof(hello.nonce));
	snprintf(hello.driver, sizeof(hello.driver), "%s", driver);
	/* a refused connection may be closed before the HELLO is written:
	 * its REJECT is still in the receive buffer */
	(void)rawp_frame(fd, KVW_T_HELLO, 0, &hello, sizeof(hello));
	r = rawp_recv(fd, ctx, 5000, &h, body, sizeof(body));
	if (r == 1)
		rawp_note_reject(&h, body, reject);
	if (r != 1 || h.type != KVW_T_WELCOME)
		return 0;
	memcpy(&w, body, sizeof(w));
	struct kvw_wire_auth a = { .ep_id = 0x7777 };
	if (rawp_frame(fd, KVW_T_AUTH, w.ep_id, &a, sizeof(a)))
		return 0;
	r = rawp_recv(fd, ctx, 5000, &h, body, sizeof(body));
	if (r == 1)
		rawp_note_reject(&h, body, reject);
	if (r != 1 || h.type != KVW_T_READY)
		return 0;
	return w.ep_id;
}

uint32_t rawp_handshake(int fd, kvw_ctx *ctx, const char *driver)
{
	return rawp_handshake_rej(fd, ctx, driver, NULL);
}
