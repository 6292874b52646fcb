/* SPDX-License-Identifier: MIT */
/* The control link: newline-delimited JSON over TCP or a unix socket. */
#include "run.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int ctl_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Fills a sockaddr from "tcp:HOST:PORT" or "unix:PATH". */
static int ctl_sockaddr(const char *addr, struct sockaddr_storage *ss, socklen_t *sl)
{
	memset(ss, 0, sizeof(*ss));
	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		if (strlen(addr + 5) >= sizeof(un->sun_path) || !addr[5])
			return -1;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, addr + 5);
		*sl = sizeof(*un);
		return 0;
	}
	if (strncmp(addr, "tcp:", 4))
		return -1;
	char host[256];
	const char *colon = strrchr(addr + 4, ':');
	if (!colon || (size_t)(colon - (addr + 4)) >= sizeof(host))
		return -1;
	memcpy(host, addr + 4, (size_t)(colon - (addr + 4)));
	host[colon - (addr + 4)] = '\0';
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
	if (getaddrinfo(host[0] ? host : "0.0.0.0", colon + 1, &hints, &ai))
		return -1;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sl = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int kvb_ctl_listen(const char *addr, int *lfd, char *bound, size_t boundlen, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1;

	if (ctl_sockaddr(addr, &ss, &sl))
		return ctl_fail(err, errlen, "bad control address '%s' (tcp:HOST:PORT or unix:PATH)", addr);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ctl_fail(err, errlen, "socket: %s", strerror(errno));
	if (ss.ss_family == AF_UNIX)
		unlink(((struct sockaddr_un *)&ss)->sun_path);
	else
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 64) ||
	    fcntl(fd, F_SETFL, O_NONBLOCK)) {
		ctl_fail(err, errlen, "control socket %s: %s (is another server running? use -p PORT)",
			 addr, strerror(errno));
		close(fd);
		return -1;
	}
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in sin;
		socklen_t l = sizeof(sin);
		getsockname(fd, (struct sockaddr *)&sin, &l);
		char ip[64];
		inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof(ip));
		snprintf(bound, boundlen, "tcp:%s:%u", ip, ntohs(sin.sin_port));
	} else {
		snprintf(bound, boundlen, "%s", addr);
	}
	*lfd = fd;
	return 0;
}

static void ctl_init(kvb_ctl *c, int fd)
{
	int one = 1;
	c->fd = fd;
	c->len = 0;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails quietly on unix */
}

int kvb_ctl_accept(int lfd, kvb_ctl *c)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
		       errno == ECONNABORTED ? 1 : -1;
	ctl_init(c, fd);
	return 0;
}

int kvb_ctl_connect(const char *addr, int timeout_ms, kvb_ctl *c, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	uint64_t end = kvb_now_ns() + (uint64_t)timeout_ms * 1000000ull;

	if (ctl_sockaddr(addr, &ss, &sl))
		return ctl_fail(err, errlen, "bad control address '%s'", addr);
	for (;;) {
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return ctl_fail(err, errlen, "socket: %s", strerror(errno));
		if (!connect(fd, (struct sockaddr *)&ss, sl)) {
			ctl_init(c, fd);
			return 0;
		}
		int e = errno;
		close(fd);
		if (kvb_now_ns() > end)
			return ctl_fail(err, errlen, "cannot reach the bench server's control socket %s: %s "
					"(start `kvwire-bench server --listen URI` there, or pass -p PORT)",
					addr, strerror(e));
		usleep(20000);
	}
}

int kvb_ctl_send(kvb_ctl *c, json_t *msg)
{
	char *s = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!s)
		return -1;
	size_t len = strlen(s);
	char *line = malloc(len + 2);
	int rc = -1;
	if (line) {
		memcpy(line, s, len);
		line[len] = '\n';
		rc = write(c->fd, line, len + 1) == (ssize_t)(len + 1) ? 0 : -1;
	}
	free(line);
	free(s);
	return rc;
}

int kvb_ctl_take(kvb_ctl *c, json_t **msg)
{
	char *nl = memchr(c->buf, '\n', c->len);
	if (!nl)
		return 1;
	*nl = '\0';
	json_t *j = json_loads(c->buf, 0, NULL);
	size_t used = (size_t)(nl - c->buf) + 1;
	memmove(c->buf, nl + 1, c->len - used);
	c->len -= used;
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return -1;
	}
	*msg = j;
	return 0;
}

int kvb_ctl_recv(kvb_ctl *c, int timeout_ms, json_t **msg)
{
	uint64_t end = kvb_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
	for (;;) {
		int r = kvb_ctl_take(c, msg);
		if (r <= 0)
			return r;
		uint64_t now = kvb_now_ns();
		int wait = now >= end ? 0 : (int)((end - now + 999999) / 1000000);
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		r = poll(&p, 1, wait);
		if (r == 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
		if (r < 0)
			continue;
		if (kvb_ctl_fill(c) < 0)
			return -1;
	}
}

int kvb_ctl_fill(kvb_ctl *c)
{
	if (c->len >= sizeof(c->buf) - 1)
		return -1; /* a line that long is not ours */
	ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	if (n <= 0)
		return -1;
	c->len += (size_t)n;
	return (int)n;
}

void kvb_ctl_close(kvb_ctl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

int kvb_ctl_addr_for(const char *uri, int ctl_port, char *out, size_t len)
{
	const char *p = strstr(uri, "://");
	if (!p)
		return -1;
	p += 3;
	if (!strncmp(uri, "shm://", 6)) {
		size_t n = strcspn(p, "?");
		if (!n || n + 10 > len)
			return -1;
		snprintf(out, len, "unix:%.*s.ctl", (int)n, p);
		return 0;
	}
	size_t hl = strcspn(p, "/?");
	const char *colon = memchr(p, ':', hl);
	if (!colon)
		return -1;
	long port = strtol(colon + 1, NULL, 10);
	if (ctl_port)
		port = ctl_port;
	else if (port <= 0 || port >= 65535)
		return -1;
	else
		port++;
	snprintf(out, len, "tcp:%.*s:%ld", (int)(colon - p), p, port);
	return 0;
}
