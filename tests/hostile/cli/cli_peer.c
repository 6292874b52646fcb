/* SPDX-License-Identifier: MIT */
/* Hostile peers for the kvwire CLI (tests/hostile/cli). Each mode serves
 * until it is killed; it prints "ready" (and for tcp the port) first.
 *   cli_peer stats-flood PATH     a stats socket that streams bytes forever
 *   cli_peer stats-trickle PATH   one byte every 200 ms forever
 *   cli_peer stats-noaccept PATH  a stats socket whose backlog is full
 *   cli_peer stats-evil PATH      a well-formed snapshot whose strings carry
 *                                 escape sequences and secret=hunter2
 *   cli_peer reject-escape        tcp 127.0.0.1:0; answers each HELLO with a
 *                                 REJECT whose reason carries terminal
 *                                 escape sequences
 *   cli_peer reject-binary        the same, the reason ending in bytes that
 *                                 are not UTF-8
 *   cli_peer measure MAX_MB SECS FILE CMD...
 *                                 runs CMD; kills it when its RSS passes
 *                                 MAX_MB or it runs past SECS; writes
 *                                 "rc=N maxrss_kb=K wall_ms=T killed=WHY"
 *                                 to FILE (max RSS of CMD and the children
 *                                 it waited for) */
#include "kvwire/kvwire.h"
#include "wire.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The escape sequences the REJECT reason carries: set the terminal title,
 * clear the screen, red text, a fake prompt after a newline, and a C1 CSI
 * (U+009B, valid UTF-8) asking for the cursor position. The binary variant
 * adds bytes that are not UTF-8. */
#define EVIL_REASON "\x1b]0;pwned\x07\x1b[2J\x1b[31mEVIL\r\nroot@host# \xc2\x9b" "6n"
#define EVIL_BINARY "\xff\xfe\x80"
static bool evil_binary;

static int unix_listen(const char *path, int backlog)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, backlog)) {
		perror(path);
		exit(2);
	}
	return fd;
}

static void ready(void)
{
	printf("ready\n");
	fflush(stdout);
}

static void sleep_ms(long ms)
{
	nanosleep(&(struct timespec){ ms / 1000, ms % 1000 * 1000000 }, NULL);
}

/* A JSON document that never ends: an object, then one string forever. */
static int stats_stream(const char *path, size_t chunk, long pause_ms)
{
	static char buf[1 << 20];
	int lfd = unix_listen(path, 8);
	ready();
	memset(buf, 'A', sizeof(buf));
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			continue;
		const char *head = "{\"kvwire\":\"0.1.0\",\"pad\":\"";
		ssize_t w = write(c, head, strlen(head));
		while (w > 0) {
			w = write(c, buf, chunk);
			if (pause_ms)
				sleep_ms(pause_ms);
		}
		close(c);
	}
	return 0;
}

static const char evil_snapshot[] =
	"{\"kvwire\":\"0.1.0\\u001b[2J\",\"pid\":1,\"t_ns\":1,"
	"\"drivers\":\"tcp\\u001b]0;pwned\\u0007\",\"listeners\":[{\"uri\":"
	"\"tcp://0.0.0.0:7471?secret=hunter2\"}],\"endpoints\":[{\"id\":1,\"uri\":"
	"\"tcp://10.0.0.1:5555?rails=2&secret=hunter2\\u001b[31m\",\"driver\":\"tcp\\u009b6n\","
	"\"state\":\"ready\\r\\n\",\"rails\":1,\"counters\":{\"bytes_tx\":1,\"rail\":[]},"
	"\"requests\":[{\"seq_id\":1,\"role\":\"send\\u001b[H\",\"status\":\"x\"}]}]}\n";

/* One well-formed snapshot per client, then EOF. */
static int stats_evil(const char *path)
{
	int lfd = unix_listen(path, 8);
	ready();
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			continue;
		if (write(c, evil_snapshot, sizeof(evil_snapshot) - 1) < 0)
			perror("write");
		close(c);
	}
	return 0;
}

/* Listens with backlog 0 and fills it with its own connection: a client's
 * connect() then blocks until the server accepts, which it never does. */
static int stats_noaccept(const char *path)
{
	int lfd = unix_listen(path, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int self = socket(AF_UNIX, SOCK_STREAM, 0);
	if (self < 0 || connect(self, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("self connect");
		return 2;
	}
	ready();
	for (;;)
		pause();
	close(lfd);
	return 0;
}

static bool read_full(int fd, void *buf, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = read(fd, (char *)buf + off, len - off);
		if (n <= 0)
			return false;
		off += (size_t)n;
	}
	return true;
}

static void reject_one(int c)
{
	uint8_t hdr[24], body[256];
	struct kvw_wire_hdr h;
	if (!read_full(c, hdr, sizeof(hdr)))
		return;
	memcpy(&h, hdr, sizeof(h));
	if (h.len > sizeof(body) || !read_full(c, body, h.len))
		return;
	struct kvw_wire_reject r = { .status = KVW_ERR_AUTH };
	memcpy(r.reason, EVIL_REASON, sizeof(EVIL_REASON) - 1);
	if (evil_binary)
		memcpy(r.reason + sizeof(EVIL_REASON) - 1, EVIL_BINARY, sizeof(EVIL_BINARY) - 1);
	uint8_t out[24 + sizeof(r)];
	kvw_wire_hdr_encode(out, KVW_T_REJECT, 0, sizeof(r), 0);
	memcpy(out + 24, &r, sizeof(r));
	if (write(c, out, sizeof(out)) != (ssize_t)sizeof(out))
		return;
	shutdown(c, SHUT_WR);
	sleep_ms(200);
}

static int reject_escape(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 16) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
		perror("tcp listen");
		return 2;
	}
	printf("ready port %u\n", ntohs(sa.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			continue;
		reject_one(c);
		close(c);
	}
	return 0;
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kb = atol(line + 6);
	if (f)
		fclose(f);
	return kb;
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Runs argv under a memory and time watch (every 5 ms). */
static int measure(long max_mb, double secs, const char *file, char **argv)
{
	double t0 = now_ms();
	pid_t pid = fork();
	if (pid == 0) {
		execvp(argv[0], argv);
		perror(argv[0]);
		_exit(127);
	}
	const char *killed = "no";
	int status = 0;
	struct rusage ru;
	while (wait4(pid, &status, WNOHANG, &ru) == 0) {
		if (*killed == 'n' && rss_kb(pid) > max_mb * 1024)
			killed = "rss";
		else if (*killed == 'n' && now_ms() - t0 > secs * 1e3)
			killed = "time";
		if (*killed != 'n')
			kill(pid, SIGKILL);
		sleep_ms(5);
	}
	int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	FILE *f = fopen(file, "w");
	if (!f) {
		perror(file);
		return 2;
	}
	fprintf(f, "rc=%d maxrss_kb=%ld wall_ms=%.0f killed=%s\n", rc, ru.ru_maxrss, now_ms() - t0, killed);
	fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "stats-flood") && argc == 3)
		return stats_stream(argv[2], 1 << 20, 0);
	if (!strcmp(mode, "stats-trickle") && argc == 3)
		return stats_stream(argv[2], 1, 200);
	if (!strcmp(mode, "stats-evil") && argc == 3)
		return stats_evil(argv[2]);
	if (!strcmp(mode, "stats-noaccept") && argc == 3)
		return stats_noaccept(argv[2]);
	if (!strcmp(mode, "reject-escape") || !strcmp(mode, "reject-binary")) {
		evil_binary = mode[7] == 'b';
		return reject_escape();
	}
	if (!strcmp(mode, "measure") && argc > 5)
		return measure(atol(argv[2]), atof(argv[3]), argv[4], argv + 5);
	fprintf(stderr, "usage: cli_peer stats-flood|stats-trickle|stats-noaccept|stats-evil PATH | "
		"reject-escape|reject-binary | measure MAX_MB SECS FILE CMD...\n");
	return 2;
}
