/* SPDX-License-Identifier: MIT */
/* compare: kvwire and the matching peer tool on the same path, same run. */
#include "peer.h"
#include "run.h"

#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PEERS 6
#define MAX_REPEAT 15
#define READY_MS 10000   /* how long a peer server may take to listen */
#define PEER_GRACE_MS 1000 /* a server ends by itself after its client, else SIGTERM */
#define NO_GRACE 0         /* a server that never ends by itself: SIGTERM at once */

typedef struct kvb_peer {
	char name[48];
	char status[16];            /* ok, missing, failed, not-run */
	double gbit;                /* bw: median of gbit_runs, Gb/s */
	double gbit_runs[MAX_REPEAT];
	double p50_us;              /* lat: median of p50_runs, one-way us */
	double p50_runs[MAX_REPEAT];
	bool has_p99;               /* lat: the peer reports a 99th percentile */
	double p99_us;              /* lat: median of p99_runs, us */
	double p99_runs[MAX_REPEAT];
	unsigned n_runs;
	char command[1024];         /* rendered from the invocations that ran */
	char note[512];
} kvb_peer;

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Median of v (lower middle for even n); v is not changed. */
static double median(const double *v, unsigned n)
{
	double t[MAX_REPEAT];
	if (!n)
		return 0;
	memcpy(t, v, n * sizeof(double));
	qsort(t, n, sizeof(double), cmp_dbl);
	return t[(n - 1) / 2];
}

static json_t *runs_json(const double *v, unsigned n)
{
	json_t *a = json_array();
	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_real(v[i]));
	return a;
}

static void peer_set(kvb_peer *p, const char *name, const char *status, const char *note)
{
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->status, sizeof(p->status), "%s", status);
	snprintf(p->note, sizeof(p->note), "%s", note ? note : "");
}

/* Whether nothing listens on TCP port on any address now. */
static bool port_free(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a));
	if (fd >= 0)
		close(fd);
	return ok;
}

/* A port for a peer server: this process's own sequence, skipping ports in use. */
static int free_port(void)
{
	static int next = 0;
	if (!next)
		next = 20000 + (int)(getpid() % 20000);
	for (int i = 0; i < 64; i++) {
		next = next + 2 > 60000 ? 20000 : next + 2;
		if (port_free(next))
			break;
	}
	return next;
}

/* Starts srv (until it is ready), runs cli to its end, stops srv (grace_ms
 * to end by itself); p->command shows both. The client's output
 * (malloc'ed), or NULL with p marked failed. */
static char *peer_pair(const char *name, const kvb_cmd *srv, const kvb_cmd *cli, int timeout_s, int grace_ms,
		       kvb_peer *p, int *st)
{
	const kvb_cmd *both[] = {srv, cli};
	char err[512];
	kvb_proc sp;

	kvb_cmds_render(both, 2, p->command, sizeof(p->command));
	*st = -1;
	if (kvb_cmd_start(srv, READY_MS, &sp, err, sizeof(err))) {
		peer_set(p, name, "failed", err);
		return NULL;
	}
	char *out = kvb_cmd_capture(cli, timeout_s, st, err, sizeof(err));
	kvb_proc_stop(&sp, grace_ms);
	if (!out)
		peer_set(p, name, "failed", err);
	return out;
}

/* ------------------------------------------------------------------ memcpy */
static void peer_memcpy(const kvb_opts *o, const kvb_result *kr, kvb_peer *p)
{
	uint64_t w = (256ull << 20) / o->size;
	unsigned slots = (unsigned)(w < 2 ? 2 : w < o->tx_depth ? w : o->tx_depth);
	uint64_t iters = kr->iterations ? kr->iterations : 1000;
	uint8_t *src = aligned_alloc(4096, (slots * o->size + 4095) & ~4095ull);
	uint8_t *dst = aligned_alloc(4096, (slots * o->size + 4095) & ~4095ull);

	snprintf(p->command, sizeof(p->command), "in-process memcpy, 1 thread, %u slots x %llu B, %llu copies",
		 slots, (unsigned long long)o->size, (unsigned long long)iters);
	if (!src || !dst) {
		peer_set(p, "memcpy", "failed", "out of memory");
		goto free_bufs;
	}
	kvb_pattern_fill(src, slots * o->size, o->seed, 0, 0);
	memset(dst, 0, slots * o->size);
	for (unsigned i = 0; i < slots; i++) /* warm up once */
		memcpy(dst + i * o->size, src + i * o->size, o->size);
	uint64_t t0 = kvb_now_ns();
	for (uint64_t k = 0; k < iters; k++) {
		unsigned s = (unsigned)(k % slots);
		memcpy(dst + s * o->size, src + s * o->size, o->size);
		__asm__ __volatile__("" ::"r"(dst) : "memory");
	}
	double sec = (double)(kvb_now_ns() - t0) / 1e9;
	p->gbit = (double)iters * (double)o->size * 8 / sec / 1e9;
	peer_set(p, "memcpy", memcmp(src, dst, slots * o->size) ? "failed" : "ok", "");
free_bufs:
	free(src);
	free(dst);
}

/* ------------------------------------------------------------- ucx_perftest */
/* ucx_perftest's server (no test) or its client of test on 127.0.0.1. */
static void ucx_cmd(kvb_cmd *c, bool sm, int port, const char *test, uint64_t size, uint64_t n)
{
	kvb_cmd_init(c, test ? KVB_ROLE_CLIENT : KVB_ROLE_SERVER, "ucx_perftest");
	kvb_cmd_env(c, sm ? "UCX_TLS=sm" : "UCX_TLS=tcp");
	if (!sm)
		kvb_cmd_env(c, "UCX_NET_DEVICES=lo");
	if (test)
		kvb_cmd_args(c, "127.0.0.1", NULL);
	kvb_cmd_args(c, "-p", NULL);
	kvb_cmd_argf(c, "%d", port);
	if (!test) {
		kvb_cmd_ready_tcp(c, port); /* its out-of-band exchange */
		return;
	}
	kvb_cmd_args(c, "-t", test, "-s", NULL);
	kvb_cmd_argf(c, "%llu", (unsigned long long)size);
	kvb_cmd_args(c, "-n", NULL);
	kvb_cmd_argf(c, "%llu", (unsigned long long)n);
}

/* Runs ucx_perftest TEST over the driver's UCX transport; on success fills
 * f[0..5] from its "Final:" line (iterations, p50 us, avg us, overall us,
 * average MB/s, overall MB/s) and returns true; else p says why. */
static bool ucx_final(const kvb_opts *o, const char *test, uint64_t n, kvb_peer *p, double f[6])
{
	bool sm = !strcmp(o->driver, "shm");
	char name[48];
	kvb_cmd srv, cli;
	int st;

	snprintf(name, sizeof(name), "ucx_perftest %s %s", test, sm ? "sm" : "tcp");
	if (!kvb_in_path("ucx_perftest")) {
		peer_set(p, name, "missing", "ucx_perftest not found in PATH (Debian: ucx-utils)");
		return false;
	}
	int port = free_port();
	ucx_cmd(&srv, sm, port, NULL, 0, 0);
	ucx_cmd(&cli, sm, port, test, o->size, n);
	char *out = peer_pair(name, &srv, &cli, 120, PEER_GRACE_MS, p, &st);
	if (!out)
		return false;
	char *fin = strstr(out, "Final:");
	bool ok = fin && sscanf(fin, "Final: %lf %lf %lf %lf %lf %lf", &f[0], &f[1], &f[2], &f[3], &f[4],
				&f[5]) == 6;
	peer_set(p, name, ok ? "ok" : "failed", ok ? "" : "no 'Final:' line in ucx_perftest output");
	free(out);
	return ok;
}

static void peer_ucx(const kvb_opts *o, const kvb_result *kr, const char *test, kvb_peer *p)
{
	double f[6];
	uint64_t n = kr->bytes / o->size;
	n = n < 1000 ? 1000 : n > 200000 ? 200000 : n;
	if (ucx_final(o, test, n, p, f))
		p->gbit = f[5] * 1048576.0 * 8 / 1e9; /* overall MB/s (2^20) */
}

/* Iterations a latency peer runs: -n, else what kvwire ran (bounded). */
static uint64_t lat_peer_iters(const kvb_opts *o, const kvb_result *kr)
{
	uint64_t n = o->iters ? o->iters : kr->iterations;
	if (o->iters)
		return n;
	return n < 1000 ? 1000 : n > 100000 ? 100000 : n;
}

/* ucx_perftest's ping-pong: its 50.0%ile column is one-way (round trip / 2). */
static void peer_ucx_lat(const kvb_opts *o, const kvb_result *kr, const char *test, kvb_peer *p)
{
	double f[6];
	if (ucx_final(o, test, lat_peer_iters(o, kr), p, f))
		p->p50_us = f[1];
}

/* ------------------------------------------------------------------- iperf3 */
/* The iperf3 server and client; the client's -t, seconds. */
static int iperf3_cmds(const kvb_opts *o, double secs, kvb_cmd *srv, kvb_cmd *cli)
{
	int port = free_port(), t = secs < 1 ? 1 : (int)(secs + 0.5);
	kvb_cmd_init(srv, KVB_ROLE_SERVER, "iperf3");
	kvb_cmd_args(srv, "-s", "-1", "-p", NULL);
	kvb_cmd_argf(srv, "%d", port);
	kvb_cmd_args(srv, "-B", "127.0.0.1", NULL);
	kvb_cmd_ready_tcp(srv, port);
	kvb_cmd_init(cli, KVB_ROLE_CLIENT, "iperf3");
	kvb_cmd_args(cli, "-c", "127.0.0.1", "-p", NULL);
	kvb_cmd_argf(cli, "%d", port);
	kvb_cmd_args(cli, "-t", NULL);
	kvb_cmd_argf(cli, "%d", t);
	kvb_cmd_args(cli, "-P", NULL);
	kvb_cmd_argf(cli, "%u", o->rails);
	kvb_cmd_args(cli, "-l", NULL);
	kvb_cmd_argf(cli, "%llu", (unsigned long long)(o->size > (1u << 20) ? (1u << 20) : o->size));
	kvb_cmd_args(cli, "-J", NULL);
	return t;
}

static void peer_iperf3(const kvb_opts *o, double secs, kvb_peer *p)
{
	kvb_cmd srv, cli;
	int st;
	if (!kvb_in_path("iperf3")) {
		peer_set(p, "iperf3", "missing", "iperf3 not found in PATH (Debian: iperf3)");
		return;
	}
	int t = iperf3_cmds(o, secs, &srv, &cli);
	char *out = peer_pair("iperf3", &srv, &cli, t + 30, PEER_GRACE_MS, p, &st);
	if (!out)
		return;
	json_t *j = json_loads(out, 0, NULL);
	json_t *bps = json_object_get(json_object_get(json_object_get(j, "end"), "sum_received"),
				      "bits_per_second");
	if (!json_is_number(bps)) {
		peer_set(p, "iperf3", "failed", "no end.sum_received in iperf3 -J output");
	} else {
		p->gbit = json_number_value(bps) / 1e9;
		peer_set(p, "iperf3", "ok", "");
	}
	json_decref(j);
	free(out);
}

static bool rdma_device_present(void)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;
	bool any = false;
	while (d && (e = readdir(d)))
		any = any || e->d_name[0] != '.';
	if (d)
		closedir(d);
	return any;
}

/* The perftest server and client (on 127.0.0.1) of tool: both get the
 * device, its GID (kvb_rdma_pick) and a port, then tail (NULL-ended words).
 * false (peer marked missing) when the tool or a device lacks. */
static bool perftest_cmds(const kvb_opts *o, const char *tool, kvb_peer *p, kvb_cmd *srv, kvb_cmd *cli,
			  const char *const *tail)
{
	char dev[64], ip[64], note[96];
	int g;

	if (!kvb_in_path(tool)) {
		snprintf(note, sizeof(note), "%s not in PATH (Debian: perftest)", tool);
		peer_set(p, tool, "missing", note);
		return false;
	}
	if (!rdma_device_present() || kvb_rdma_pick(o, dev, sizeof(dev), &g, ip, sizeof(ip))) {
		peer_set(p, tool, "missing", "no RDMA device (/sys/class/infiniband empty)");
		return false;
	}
	int port = free_port();
	for (int side = 0; side < 2; side++) {
		kvb_cmd *c = side ? cli : srv;
		kvb_cmd_init(c, side ? KVB_ROLE_CLIENT : KVB_ROLE_SERVER, tool);
		kvb_cmd_args(c, "-d", dev, "-x", NULL);
		kvb_cmd_argf(c, "%d", g);
		kvb_cmd_args(c, "-p", NULL);
		kvb_cmd_argf(c, "%d", port);
		for (size_t i = 0; tail[i]; i++)
			kvb_cmd_args(c, tail[i], NULL);
	}
	kvb_cmd_ready_tcp(srv, port); /* perftest's out-of-band exchange */
	kvb_cmd_args(cli, "127.0.0.1", NULL);
	return true;
}

/* perftest's own bandwidth over the same device and size (-n, not -D). */
static void peer_ib_write_bw(const kvb_opts *o, const kvb_result *kr, kvb_peer *p)
{
	char size[32], iters[32];
	kvb_cmd srv, cli;
	int st;

	snprintf(size, sizeof(size), "%llu", (unsigned long long)kr->size);
	snprintf(iters, sizeof(iters), "%llu", (unsigned long long)(o->iters ? o->iters : 1000));
	const char *tail[] = {"-s", size, "-n", iters, "--report_gbits", NULL};
	if (!perftest_cmds(o, "ib_write_bw", p, &srv, &cli, tail))
		return;
	char *out = peer_pair("ib_write_bw", &srv, &cli, 600, PEER_GRACE_MS, p, &st);
	if (!out)
		return;
	/* result line: #bytes #iterations BW-peak BW-average MsgRate */
	double f[5] = {0};
	bool got = false;
	for (char *save, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		if (sscanf(l, " %lf %lf %lf %lf %lf", &f[0], &f[1], &f[2], &f[3], &f[4]) == 5 &&
		    f[0] == (double)kr->size)
			got = true;
	if (!got)
		peer_set(p, "ib_write_bw", "failed", "no result line in ib_write_bw output");
	else {
		p->gbit = f[3];
		peer_set(p, "ib_write_bw", "ok", "");
	}
	free(out);
}

/* The result line of ib_write_lat's output, parsed into f[9]. */
static bool ib_lat_line(char *out, uint64_t size, double f[9], const char **last)
{
	*last = "(no output)";
	for (char *save, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		*last = l;
		if (sscanf(l, " %lf %lf %lf %lf %lf %lf %lf %lf %lf", &f[0], &f[1], &f[2], &f[3], &f[4], &f[5],
			   &f[6], &f[7], &f[8]) == 9 && f[0] == (double)size)
			return true;
	}
	return false;
}

/* perftest's own latency over the same device, GID and size. Result line:
 * #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9% (us,
 * one-way: round trip / 2); t_typical is its median. */
static void peer_ib_write_lat(const kvb_opts *o, const kvb_result *kr, kvb_peer *p)
{
	char size[32], iters[32], why[300];
	kvb_cmd srv, cli;
	double f[9] = {0};
	const char *last;
	int st;

	snprintf(size, sizeof(size), "%llu", (unsigned long long)o->size);
	snprintf(iters, sizeof(iters), "%llu", (unsigned long long)lat_peer_iters(o, kr));
	const char *tail[] = {"-s", size, "-n", iters, NULL};
	if (!perftest_cmds(o, "ib_write_lat", p, &srv, &cli, tail))
		return;
	char *out = peer_pair("ib_write_lat", &srv, &cli, 600, PEER_GRACE_MS, p, &st);
	if (!out)
		return;
	if (!ib_lat_line(out, o->size, f, &last)) {
		snprintf(why, sizeof(why), "no result line in ib_write_lat output (exit %d, last line: %.90s)",
			 WIFEXITED(st) ? WEXITSTATUS(st) : -1, last);
		peer_set(p, "ib_write_lat", "failed", why);
	} else {
		p->p50_us = f[4];
		p->p99_us = f[7];
		p->has_p99 = true;
		peer_set(p, "ib_write_lat", "ok", "");
	}
	free(out);
}

/* The kvwire loopback server busy-polls its port between runs; a peer
 * measured meanwhile would share a core with it. */
static pid_t g_loop_pid = -1;

/* ------------------------------------------------------------ dpdk-testpmd */
/* The receiver (rxonly, memif server, stats to log) or the sender (txonly,
 * memif client) of dpdk-testpmd, each bounded by timeout(1) to secs, on its
 * own core, the frame size kvwire's dpdk driver uses on memif (one
 * 2048-byte buffer). The same commands as tests/dpdk/bench_memif.sh. */
static void testpmd_cmd(kvb_cmd *c, bool rx, int secs, const char *sock, const char *log)
{
	kvb_cmd_init(c, rx ? KVB_ROLE_SERVER : KVB_ROLE_CLIENT, "timeout");
	kvb_cmd_argf(c, "%d", secs);
	kvb_cmd_args(c, "dpdk-testpmd", "--no-huge", "--no-pci", "-m", "512", NULL);
	kvb_cmd_argf(c, "--file-prefix=kvwc%c%d", rx ? 'r' : 't', (int)getpid());
	kvb_cmd_args(c, rx ? "--lcores=0@0,1@0" : "--lcores=0@1,1@1", NULL);
	kvb_cmd_argf(c, "--vdev=net_memif0,role=%s,socket=%s", rx ? "server" : "client", sock);
	kvb_cmd_args(c, "--", rx ? "--forward-mode=rxonly" : "--forward-mode=txonly", NULL);
	if (!rx)
		kvb_cmd_args(c, "--txpkts=2048", NULL);
	kvb_cmd_args(c, "--stats-period=1", "--auto-start", "--nb-cores=1", "--total-num-mbufs=32768", NULL);
	if (rx) {
		kvb_cmd_ready_unix(c, sock); /* the memif server's socket */
		snprintf(c->out_path, sizeof(c->out_path), "%s", log);
	}
}

/* Mean of the receiver's non-zero Rx-bps samples after the first two, Gb/s;
 * 0 when there are none. */
static double testpmd_gbit(const char *log)
{
	FILE *f = fopen(log, "r");
	char line[512];
	double sum = 0;
	unsigned n = 0, k = 0;
	while (f && fgets(line, sizeof(line), f)) {
		char *b = strstr(line, "Rx-bps:");
		double v = b ? strtod(b + 7, NULL) : 0;
		if (v > 0 && ++n > 2) {
			sum += v;
			k++;
		}
	}
	if (f)
		fclose(f);
	return k ? sum / k / 1e9 : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

/* What testpmd leaves: its socket, the log, each side's EAL runtime directory. */
static void testpmd_clean(const char *sock, const char *log)
{
	char dir[64];
	unlink(sock);
	unlink(log);
	for (int rx = 0; rx < 2; rx++) {
		snprintf(dir, sizeof(dir), "/var/run/dpdk/kvwc%c%d", rx ? 'r' : 't', (int)getpid());
		nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	}
}

/* One receiver + sender run; Gb/s (0: no samples), or -1 with p marked failed. */
static double testpmd_once(int secs, kvb_peer *p)
{
	char sock[108], log[108];
	kvb_cmd rx, tx;
	int st;

	snprintf(sock, sizeof(sock), "/run/kvwire/cmp-testpmd-%d.sock", (int)getpid());
	snprintf(log, sizeof(log), "/run/kvwire/cmp-testpmd-%d.log", (int)getpid());
	mkdir("/run/kvwire", 0755);
	testpmd_cmd(&rx, true, secs + 4, sock, log);
	testpmd_cmd(&tx, false, secs, sock, log);
	char *out = peer_pair("dpdk-testpmd memif", &rx, &tx, secs + 15, NO_GRACE, p, &st);
	double g = out ? testpmd_gbit(log) : -1;
	free(out);
	testpmd_clean(sock, log);
	return g;
}

/* dpdk-testpmd txonly -> rxonly over net_memif between two processes. */
static void peer_testpmd(double secs, kvb_peer *p)
{
	int t = secs < 3 ? 5 : (int)secs + 2;
	double g = 0;

	if (!kvb_in_path("dpdk-testpmd")) {
		peer_set(p, "dpdk-testpmd memif", "missing", "dpdk-testpmd not in PATH (Debian: dpdk-dev)");
		return;
	}
	if (g_loop_pid > 0)
		kill(g_loop_pid, SIGSTOP);
	for (int attempt = 0; attempt < 2 && g == 0; attempt++) /* memif links sometimes never come up */
		g = testpmd_once(t, p);
	if (g_loop_pid > 0)
		kill(g_loop_pid, SIGCONT);
	if (g > 0) {
		p->gbit = g;
		peer_set(p, "dpdk-testpmd memif", "ok", "txonly->rxonly, 2048 B frames, payload untouched, "
			 "mean Rx-bps after the first 2 s");
	} else if (g == 0) {
		peer_set(p, "dpdk-testpmd memif", "failed", "no Rx-bps samples from testpmd rxonly; run the "
			 "commands shown by hand to see whether the memif link comes up");
	}
}

/* ---------------------------------------------------------- kvwire-ofi-raw */
/* The provider's own fi_writedata loop (bench/ofi_raw.c), built next to
 * this binary: its path, else the name for PATH. */
static void ofi_raw_path(char *buf, size_t len)
{
	char self[3800];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash = n > 0 ? (self[n] = '\0', strrchr(self, '/')) : NULL;
	if (slash) {
		snprintf(buf, len, "%.*s/kvwire-ofi-raw", (int)(slash - self), self);
		if (!access(buf, X_OK))
			return;
	}
	snprintf(buf, len, "kvwire-ofi-raw");
}

/* The raw loop through the provider kvwire used (FI_PROVIDER, else
 * libfabric's first choice for the same hints), same size, kvwire's depth;
 * yield: an empty CQ read yields the core (fabtests' -c yield) instead of
 * spinning (their default), which on a host with fewer cores than busy
 * processes lets the other side run. */
static void peer_ofi_raw(const kvb_opts *o, const kvb_result *kr, bool yield, kvb_peer *p)
{
	const char *prov = getenv("FI_PROVIDER");
	uint64_t w = (256ull << 20) / o->size, n = kr->bytes / o->size;
	unsigned window = (unsigned)(w < 2 ? 2 : w < o->tx_depth ? w : o->tx_depth);
	char bin[4096], name[48], *g;
	kvb_cmd srv, cli;
	int st, port = free_port();

	snprintf(name, sizeof(name), "ofi-raw %s %s", yield ? "yield" : "spin",
		 prov && *prov ? prov : "(first provider)");
	ofi_raw_path(bin, sizeof(bin));
	if (!kvb_in_path(bin)) {
		peer_set(p, name, "missing", "kvwire-ofi-raw not built (meson builds it with the ofi driver)");
		return;
	}
	n = n < 1000 ? 1000 : n > 200000 ? 200000 : n;
	for (int side = 0; side < 2; side++) {
		kvb_cmd *c = side ? &cli : &srv;
		kvb_cmd_init(c, side ? KVB_ROLE_CLIENT : KVB_ROLE_SERVER, bin);
		kvb_cmd_args(c, "-P", NULL);
		kvb_cmd_argf(c, "%d", port);
		if (prov && *prov)
			kvb_cmd_args(c, "-p", prov, NULL);
		if (yield)
			kvb_cmd_args(c, "-y", NULL);
	}
	kvb_cmd_ready_tcp(&srv, port);
	kvb_cmd_args(&cli, "-s", NULL);
	kvb_cmd_argf(&cli, "%llu", (unsigned long long)o->size);
	kvb_cmd_args(&cli, "-n", NULL);
	kvb_cmd_argf(&cli, "%llu", (unsigned long long)n);
	kvb_cmd_args(&cli, "-w", NULL);
	kvb_cmd_argf(&cli, "%u", window);
	kvb_cmd_args(&cli, "127.0.0.1", NULL);
	if (g_loop_pid > 0)
		kill(g_loop_pid, SIGSTOP); /* its busy-polling would share a core with the loop */
	char *out = peer_pair(name, &srv, &cli, 150, PEER_GRACE_MS, p, &st);
	if (g_loop_pid > 0)
		kill(g_loop_pid, SIGCONT);
	if (!out)
		return;
	if (strstr(out, "ofi-raw ok") && (g = strstr(out, " gbit=")) && (p->gbit = strtod(g + 6, NULL)) > 0)
		peer_set(p, name, "ok", "fi_writemsg + FI_REMOTE_CQ_DATA, the receiver counting remote completions");
	else
		peer_set(p, name, "failed", strstr(out, "ofi-raw failed") ? strtok(strstr(out, "ofi-raw failed"), "\n") : "no result line from kvwire-ofi-raw");
	free(out);
}

static size_t peers_for(const kvb_opts *o, const kvb_result *kr, double secs, kvb_peer *p)
{
	size_t n = 0;
	if (!strcmp(o->driver, "shm")) {
		peer_memcpy(o, kr, &p[n++]);
		peer_ucx(o, kr, "tag_bw", &p[n++]);
		peer_ucx(o, kr, "ucp_put_bw", &p[n++]);
	} else if (!strcmp(o->driver, "tcp")) {
		peer_iperf3(o, secs, &p[n++]);
		peer_ucx(o, kr, "tag_bw", &p[n++]);
	} else if (!strcmp(o->driver, "rdma")) {
		peer_ib_write_bw(o, kr, &p[n++]);
	} else if (!strcmp(o->driver, "dpdk")) {
		peer_testpmd(secs, &p[n++]);
	} else if (!strcmp(o->driver, "ofi")) {
		peer_ofi_raw(o, kr, false, &p[n++]);
		peer_ofi_raw(o, kr, true, &p[n++]);
	}
	return n;
}

/* ------------------------------------------------------------------ output */
static json_t *peers_json(const kvb_result *kr, const kvb_peer *p, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *j = json_object();
		json_object_set_new(j, "peer", json_string(p[i].name));
		json_object_set_new(j, "status", json_string(p[i].status));
		if (!strcmp(p[i].status, "ok")) {
			json_object_set_new(j, "gbit_per_s", json_real(p[i].gbit));
			json_object_set_new(j, "ratio", json_real(p[i].gbit > 0 ? kr->gbit_per_s / p[i].gbit : 0));
			json_object_set_new(j, "gbit_runs", runs_json(p[i].gbit_runs, p[i].n_runs));
		}
		json_object_set_new(j, "command", json_string(p[i].command));
		if (p[i].note[0])
			json_object_set_new(j, "note", json_string(p[i].note));
		json_array_append_new(arr, j);
	}
	return arr;
}

static void range(char *buf, size_t len, const double *v, unsigned n)
{
	double lo = v[0], hi = v[0];
	for (unsigned i = 1; i < n; i++) {
		lo = v[i] < lo ? v[i] : lo;
		hi = v[i] > hi ? v[i] : hi;
	}
	if (n > 1)
		snprintf(buf, len, "%.2f-%.2f", lo, hi);
	else
		snprintf(buf, len, "-");
}

static void peers_table(const kvb_result *kr, const double *kruns, unsigned nk, const kvb_peer *p, size_t n)
{
	char rg[64];
	range(rg, sizeof(rg), kruns, nk);
	printf(" %-28s %10s %14s %9s  %s\n", "peer", "Gb/s", "range", "kvwire/x", "status");
	printf(" %-28s %10.2f %14s %9s  verified %s\n", "kvwire", kr->gbit_per_s, rg, "1.00",
	       kr->verified ? "yes" : "no");
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(p[i].status, "ok")) {
			range(rg, sizeof(rg), p[i].gbit_runs, p[i].n_runs);
			printf(" %-28s %10.2f %14s %9.2f  ok\n", p[i].name, p[i].gbit, rg,
			       p[i].gbit > 0 ? kr->gbit_per_s / p[i].gbit : 0);
		}
		else
			printf(" %-28s %12s %10s  %s: %s\n", p[i].name, "-", "-", p[i].status, p[i].note);
	}
	for (size_t i = 0; i < n; i++)
		if (p[i].command[0])
			printf("   %s: %s\n", p[i].name, p[i].command);
}

static void peers_csv(const kvb_result *kr, const kvb_peer *p, size_t n, bool header)
{
	if (header)
		printf("driver,size,peer,status,gbit_per_s,ratio\n");
	printf("%s,%llu,kvwire,%s,%.4f,1.0\n", kr->driver, (unsigned long long)kr->size,
	       kr->verified ? "ok" : "unverified", kr->gbit_per_s);
	for (size_t i = 0; i < n; i++)
		printf("%s,%llu,%s,%s,%.4f,%.4f\n", kr->driver, (unsigned long long)kr->size, p[i].name,
		       p[i].status, p[i].gbit, p[i].gbit > 0 ? kr->gbit_per_s / p[i].gbit : 0);
}

/* ------------------------------------------------------------------ drivers */
/* compare kv's memcpy yardsticks, round by round (bench/kvcopy.c). */
struct kv_yard {
	double runs[2][MAX_REPEAT]; /* [0] scattered, [1] flat */
	double med[2];
	bool ok;
	char err[256];
};

static void kv_yard_round(const kvb_opts *o, struct kv_yard *y, unsigned k)
{
	for (int w = 0; w < 2 && y->ok; w++)
		if (kvb_kvcopy(o, w == 0, &y->runs[w][k], y->err, sizeof(y->err)))
			y->ok = false;
}

static void kv_yard_json(json_t *j, const struct kv_yard *y, const kvb_result r[2], unsigned rep)
{
	json_t *m = json_object();
	json_object_set_new(m, "ok", json_boolean(y->ok));
	if (!y->ok) {
		json_object_set_new(m, "note", json_string(y->err));
	} else {
		json_object_set_new(m, "scattered_gbit", json_real(y->med[0]));
		json_object_set_new(m, "flat_gbit", json_real(y->med[1]));
		json_object_set_new(m, "scattered_gbit_runs", runs_json(y->runs[0], rep));
		json_object_set_new(m, "flat_gbit_runs", runs_json(y->runs[1], rep));
		json_object_set_new(m, "scattered_ratio", json_real(r[0].gbit_per_s / y->med[0]));
		json_object_set_new(m, "contiguous_ratio", json_real(r[1].gbit_per_s / y->med[1]));
	}
	json_object_set_new(j, "memcpy", m);
}

static void kv_yard_text(const struct kv_yard *y, const kvb_result r[2], unsigned rep)
{
	char a[64], b[64];

	if (!y->ok) {
		printf(" memcpy yardstick: %s\n", y->err);
		return;
	}
	range(a, sizeof(a), y->runs[0], rep);
	range(b, sizeof(b), y->runs[1], rep);
	printf(" memcpy, 1 thread, same bytes (median of %u): scattered %.2f Gb/s, flat %.2f Gb/s   "
	       "ranges %s / %s\n", rep, y->med[0], y->med[1], a, b);
	printf(" kv / memcpy: scattered %.3f, contiguous %.3f\n", r[0].gbit_per_s / y->med[0],
	       r[1].gbit_per_s / y->med[1]);
}

static void kv_compare_print(const kvb_opts *o, kvb_result r[2], const double *sc, const double *ct,
			     unsigned rep, double ratio, const struct kv_yard *y)
{
	if (o->json) {
		json_t *j = json_object();
		json_object_set_new(j, "test", json_string("compare"));
		json_object_set_new(j, "compare", json_string("kv"));
		json_object_set_new(j, "driver", json_string(o->driver));
		json_object_set_new(j, "repeat", json_integer(rep));
		json_object_set_new(j, "scattered", kvb_result_json(&r[0]));
		json_object_set_new(j, "contiguous", kvb_result_json(&r[1]));
		json_object_set_new(j, "scattered_gbit_runs", runs_json(sc, rep));
		json_object_set_new(j, "contiguous_gbit_runs", runs_json(ct, rep));
		json_object_set_new(j, "ratio", json_real(ratio));
		json_object_set_new(j, "verified", json_boolean(r[0].verified && r[1].verified));
		if (y)
			kv_yard_json(j, y, r, rep);
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		fputc('\n', stdout);
		json_decref(j);
	} else if (o->csv) {
		printf("driver,model,layout,gbit_per_s,ratio,verified\n");
		printf("%s,%s,scattered,%.4f,%.4f,%s\n", o->driver, o->model, r[0].gbit_per_s, ratio,
		       r[0].verified ? "yes" : "no");
		printf("%s,%s,contiguous,%.4f,1.0,%s\n", o->driver, o->model, r[1].gbit_per_s,
		       r[1].verified ? "yes" : "no");
		if (y && y->ok) {
			printf("memcpy,%s,scattered,%.4f,%.4f,yes\n", o->model, y->med[0], y->med[0] / y->med[1]);
			printf("memcpy,%s,flat,%.4f,1.0,yes\n", o->model, y->med[1]);
		}
	} else {
		char a[64], b[64];
		kvb_result_table(stdout, &r[0], 1, o->report_gbits);
		kvb_result_table(stdout, &r[1], 1, o->report_gbits);
		range(a, sizeof(a), sc, rep);
		range(b, sizeof(b), ct, rep);
		printf(" kv scattered / contiguous (median of %u): %.2f / %.2f Gb/s = %.3f   ranges %s / %s\n",
		       rep, r[0].gbit_per_s, r[1].gbit_per_s, ratio, a, b);
		if (y)
			kv_yard_text(y, r, rep);
	}
}

static int compare_kv(kvb_opts *o)
{
	kvb_opts c;
	kvb_loop lp = {0};
	kvb_result r[2], t;
	double runs[2][MAX_REPEAT];
	unsigned rep = o->repeat ? o->repeat : 1;
	bool verified[2] = {true, true};
	char err[256];

	if (kvb_kv_resolve(o, err, sizeof(err)) || kvb_loop_start(o, &lp, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench compare: %s\n", err);
		return 1;
	}
	c = *o;
	c.test = KVB_T_KV;
	memset(r, 0, sizeof(r));
	struct kv_yard y = {.ok = true};
	bool yard = !o->geom; /* another geometry moves other bytes than a copy of the blocks */
	for (unsigned k = 0; k < rep; k++) {
		if (yard)
			kv_yard_round(o, &y, k);
		for (int which = 0; which < 2; which++) {
			c.contiguous = which == 1;
			kvb_client_run(&c, lp.uri, lp.ctl, &t);
			runs[which][k] = t.gbit_per_s;
			verified[which] = verified[which] && t.verified;
			if (t.error[0])
				fprintf(stderr, "kvwire-bench compare: %s\n", t.error);
			if (k == 0 || t.gbit_per_s == median(runs[which], k + 1))
				r[which] = t; /* keep the run nearest the median so far */
		}
	}
	kvb_loop_stop(&lp);
	for (int w = 0; yard && y.ok && w < 2; w++)
		y.med[w] = median(y.runs[w], rep);
	for (int which = 0; which < 2; which++) {
		r[which].verified = verified[which];
		r[which].gbit_per_s = median(runs[which], rep);
		r[which].gbyte_per_s = r[which].gbit_per_s / 8;
	}
	double ratio = r[1].gbit_per_s > 0 ? r[0].gbit_per_s / r[1].gbit_per_s : 0;
	kv_compare_print(o, r, runs[0], runs[1], rep, ratio, yard ? &y : NULL);
	int rc = kvb_exit_code(r, 2, o, err, sizeof(err));
	if (rc)
		fprintf(stderr, "kvwire-bench compare: %s\n", err);
	return rc;
}

/* ---------------------------------------------------------------- compare lat */
static size_t lat_peers_for(const kvb_opts *o, const kvb_result *kr, kvb_peer *p)
{
	size_t n = 0;
	if (!strcmp(o->driver, "shm")) {
		peer_ucx_lat(o, kr, "tag_lat", &p[n++]);
		peer_ucx_lat(o, kr, "ucp_put_lat", &p[n++]);
	} else if (!strcmp(o->driver, "tcp")) {
		peer_ucx_lat(o, kr, "tag_lat", &p[n++]);
	} else if (!strcmp(o->driver, "rdma")) {
		peer_ib_write_lat(o, kr, &p[n++]);
	} else if (!strcmp(o->driver, "dpdk")) {
		peer_set(&p[n++], "dpdk-testpmd", "missing",
			 "no latency peer: testpmd has no ping-pong latency test");
	}
	return n;
}

/* kvwire p50 as a multiple of the peer's: > 1 means kvwire is slower. */
static double lat_ratio(const kvb_result *kr, const kvb_peer *p)
{
	return p->p50_us > 0 ? kr->lat.p50 / p->p50_us : 0;
}

static json_t *lat_peers_json(const kvb_result *kr, const kvb_peer *p, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *j = json_object();
		json_object_set_new(j, "peer", json_string(p[i].name));
		json_object_set_new(j, "status", json_string(p[i].status));
		if (!strcmp(p[i].status, "ok")) {
			json_object_set_new(j, "p50_us", json_real(p[i].p50_us));
			if (p[i].has_p99)
				json_object_set_new(j, "p99_us", json_real(p[i].p99_us));
			json_object_set_new(j, "x_of_peer", json_real(lat_ratio(kr, &p[i])));
			json_object_set_new(j, "p50_runs", runs_json(p[i].p50_runs, p[i].n_runs));
		}
		json_object_set_new(j, "command", json_string(p[i].command));
		if (p[i].note[0])
			json_object_set_new(j, "note", json_string(p[i].note));
		json_array_append_new(arr, j);
	}
	return arr;
}

static void lat_table(const kvb_opts *o, const kvb_result *kr, const double *kruns, unsigned rep,
		      const kvb_peer *p, size_t n)
{
	char rg[64];
	printf("---------------------------------------------------------------------------\n");
	printf(" compare lat   driver %s   size %llu B   runs %u (median)   one-way = round trip / 2\n",
	       o->driver, (unsigned long long)o->size, rep);
	printf(" %-28s %9s %9s %14s %10s  %s\n", "peer", "p50 us", "p99 us", "p50 range", "x of peer", "status");
	range(rg, sizeof(rg), kruns, rep);
	printf(" %-28s %9.2f %9.2f %14s %10s  verified %s\n", "kvwire", kr->lat.p50, kr->lat.p99, rg, "1.00",
	       kr->verified ? "yes" : "no");
	for (size_t i = 0; i < n; i++) {
		char p99[32] = "-";
		if (strcmp(p[i].status, "ok")) {
			printf(" %-28s %9s %9s %14s %10s  %s: %s\n", p[i].name, "-", "-", "-", "-", p[i].status,
			       p[i].note);
			continue;
		}
		if (p[i].has_p99)
			snprintf(p99, sizeof(p99), "%.2f", p[i].p99_us);
		range(rg, sizeof(rg), p[i].p50_runs, p[i].n_runs);
		printf(" %-28s %9.2f %9s %14s %10.2f  ok\n", p[i].name, p[i].p50_us, p99, rg, lat_ratio(kr, &p[i]));
	}
	printf(" x of peer = kvwire p50 / peer p50: above 1.00 kvwire is slower, below 1.00 faster\n");
	for (size_t i = 0; i < n; i++)
		if (p[i].command[0])
			printf("   %s: %s\n", p[i].name, p[i].command);
}

/* The fields every `compare --json` answer starts with. */
static json_t *compare_json_head(const kvb_opts *o, const char *what, unsigned rep,
				 const kvb_result *kr)
{
	json_t *j = json_object();

	json_object_set_new(j, "test", json_string("compare"));
	json_object_set_new(j, "compare", json_string(what));
	json_object_set_new(j, "driver", json_string(o->driver));
	json_object_set_new(j, "size", json_integer((json_int_t)o->size));
	json_object_set_new(j, "repeat", json_integer(rep));
	json_object_set_new(j, "kvwire", kvb_result_json(kr));
	return j;
}

static void lat_print(const kvb_opts *o, const kvb_result *kr, const double *kruns, unsigned rep,
		      const kvb_peer *p, size_t n)
{
	if (o->json) {
		json_t *j = compare_json_head(o, "lat", rep, kr);
		json_object_set_new(j, "kvwire_p50_runs", runs_json(kruns, rep));
		json_object_set_new(j, "peers", lat_peers_json(kr, p, n));
		json_object_set_new(j, "x_of_peer_means", json_string("kvwire p50 / peer p50; > 1: kvwire slower"));
		json_object_set_new(j, "verified", json_boolean(kr->verified));
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		fputc('\n', stdout);
		json_decref(j);
	} else if (o->csv) {
		printf("driver,size,peer,status,p50_us,p99_us,x_of_peer\n");
		printf("%s,%llu,kvwire,%s,%.4f,%.4f,1.0\n", o->driver, (unsigned long long)o->size,
		       kr->verified ? "ok" : "unverified", kr->lat.p50, kr->lat.p99);
		for (size_t i = 0; i < n; i++) {
			char p99[32] = ""; /* empty: the peer gives no p99 */
			if (p[i].has_p99)
				snprintf(p99, sizeof(p99), "%.4f", p[i].p99_us);
			printf("%s,%llu,%s,%s,%.4f,%s,%.4f\n", o->driver, (unsigned long long)o->size, p[i].name,
			       p[i].status, p[i].p50_us, p99, lat_ratio(kr, &p[i]));
		}
	} else {
		lat_table(o, kr, kruns, rep, p, n);
	}
	fflush(stdout);
}

/* Folds one round's peer results into the totals (a failed run marks the peer). */
static void lat_fold(kvb_peer *peers, const kvb_peer *tp, size_t n, bool first)
{
	for (size_t i = 0; i < n; i++) {
		if (first)
			peers[i] = tp[i];
		if (strcmp(tp[i].status, "ok")) {
			peers[i] = tp[i];
			continue;
		}
		peers[i].p99_runs[peers[i].n_runs] = tp[i].p99_us;
		peers[i].p50_runs[peers[i].n_runs++] = tp[i].p50_us;
	}
}

/* kvwire's lat, then each peer's latency test, o->repeat times; medians of p50. */
static int compare_lat(kvb_opts *o)
{
	kvb_loop lp = {0};
	kvb_peer peers[MAX_PEERS];
	double kruns[MAX_REPEAT];
	unsigned rep = o->repeat ? o->repeat : 1;
	kvb_result *runs = calloc(rep, sizeof(*runs)), kr;
	bool verified = true;
	size_t n = 0;
	char err[256];

	if (!runs || kvb_loop_start(o, &lp, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench compare: %s\n", runs ? err : "out of memory");
		free(runs);
		return 1;
	}
	g_loop_pid = lp.pid;
	memset(peers, 0, sizeof(peers));
	for (unsigned r = 0; r < rep; r++) {
		kvb_peer tp[MAX_PEERS];
		memset(tp, 0, sizeof(tp));
		kvb_client_run(o, lp.uri, lp.ctl, &runs[r]);
		if (runs[r].error[0])
			fprintf(stderr, "kvwire-bench compare: kvwire run failed: %s\n", runs[r].error);
		verified = verified && runs[r].verified;
		kruns[r] = runs[r].lat.p50;
		if (lp.pid > 0)
			kill(lp.pid, SIGSTOP); /* its busy-polling would share a core with the peer */
		n = lat_peers_for(o, &runs[r], tp);
		if (lp.pid > 0)
			kill(lp.pid, SIGCONT);
		lat_fold(peers, tp, n, r == 0);
	}
	kvb_loop_stop(&lp);
	for (size_t i = 0; i < n; i++) {
		peers[i].p50_us = median(peers[i].p50_runs, peers[i].n_runs);
		peers[i].p99_us = median(peers[i].p99_runs, peers[i].n_runs);
	}
	double med = median(kruns, rep);
	kr = runs[0];
	for (unsigned r = 0; r < rep; r++)
		if (runs[r].lat.p50 == med)
			kr = runs[r];
	kr.verified = verified;
	free(runs);
	lat_print(o, &kr, kruns, rep, peers, n);
	int rc = kvb_exit_code(&kr, 1, o, err, sizeof(err));
	if (rc)
		fprintf(stderr, "kvwire-bench compare: %s\n", err);
	return rc;
}

/* Runs kvwire and every peer o->repeat times (alternating); medians. */
static void compare_runs(const kvb_opts *o, const kvb_loop *lp, kvb_result *kr, double *kruns,
			 kvb_peer *peers, size_t *npeers)
{
	unsigned rep = o->repeat ? o->repeat : 1;
	kvb_result *runs = calloc(rep, sizeof(*runs));
	bool all_verified = true;
	*npeers = 0;
	g_loop_pid = lp->pid;
	for (unsigned r = 0; runs && r < rep; r++) {
		kvb_peer tp[MAX_PEERS];
		memset(tp, 0, sizeof(tp));
		size_t n = 0;
		bool peers_first = !strcmp(o->driver, "dpdk"); /* before this process's EAL exists */
		if (peers_first) {
			runs[r].size = o->size;
			n = peers_for(o, &runs[r], o->duration > 0 ? o->duration : 3, tp);
		}
		kvb_client_run(o, lp->uri, lp->ctl, &runs[r]);
		if (runs[r].error[0])
			fprintf(stderr, "kvwire-bench compare: kvwire run failed: %s\n", runs[r].error);
		all_verified = all_verified && runs[r].verified;
		kruns[r] = runs[r].gbit_per_s;
		if (!peers_first)
			n = peers_for(o, &runs[r], runs[r].seconds > 0 ? runs[r].seconds : 3, tp);
		for (size_t i = 0; i < n; i++) {
			if (r == 0)
				peers[i] = tp[i];
			if (!strcmp(tp[i].status, "ok"))
				peers[i].gbit_runs[peers[i].n_runs++] = tp[i].gbit;
			else
				peers[i] = tp[i]; /* a failed run marks the peer */
		}
		*npeers = n;
	}
	for (size_t i = 0; i < *npeers; i++)
		peers[i].gbit = median(peers[i].gbit_runs, peers[i].n_runs);
	double med = median(kruns, rep);
	for (unsigned r = 0; runs && r < rep; r++)
		if (runs[r].gbit_per_s == med) {
			*kr = runs[r];
			break;
		}
	kr->verified = all_verified;
	free(runs);
}

static int compare_one(const kvb_opts *o, const kvb_loop *lp, bool first, kvb_result *kr)
{
	kvb_peer peers[MAX_PEERS];
	double kruns[MAX_REPEAT];
	size_t n;
	unsigned rep = o->repeat ? o->repeat : 1;

	memset(peers, 0, sizeof(peers));
	compare_runs(o, lp, kr, kruns, peers, &n);
	if (o->json) {
		json_t *j = compare_json_head(o, "bw", rep, kr);
		json_object_set_new(j, "kvwire_gbit_runs", runs_json(kruns, rep));
		json_object_set_new(j, "peers", peers_json(kr, peers, n));
		json_object_set_new(j, "verified", json_boolean(kr->verified));
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		fputc('\n', stdout);
		json_decref(j);
	} else if (o->csv) {
		peers_csv(kr, peers, n, first);
	} else {
		printf("---------------------------------------------------------------------------\n");
		printf(" compare bw   driver %s   size %llu B   rails %u   runs %u (median)\n", o->driver,
		       (unsigned long long)o->size, o->rails, rep);
		peers_table(kr, kruns, rep, peers, n);
	}
	fflush(stdout);
	return 0;
}

int kvb_compare_main(const kvb_opts *in)
{
	kvb_opts o = *in;
	kvb_loop lp = {0};
	char err[256];
	uint64_t sizes[KVB_MAX_SWEEP];
	size_t n = 1;

	if (o.compare_test == KVB_T_KV) {
		o.test = KVB_T_KV;
		return compare_kv(&o);
	}
	if (o.compare_test == KVB_T_LAT) {
		o.test = KVB_T_LAT;
		if (o.sweep) {
			fprintf(stderr, "kvwire-bench compare: compare lat runs one size: give -s SIZE, not -a\n");
			return 1;
		}
		return compare_lat(&o);
	}
	o.test = KVB_T_BW;
	if (!o.sweep && !o.iters && o.duration <= 0)
		o.duration = 3;
	sizes[0] = o.size;
	if (o.sweep)
		n = kvb_sweep_sizes(sizes, KVB_MAX_SWEEP);
	if (kvb_loop_start(&o, &lp, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench compare: %s\n", err);
		return 1;
	}
	kvb_result *r = calloc(n, sizeof(*r));
	for (size_t i = 0; r && i < n; i++) {
		o.size = sizes[i];
		compare_one(&o, &lp, i == 0, &r[i]);
	}
	kvb_loop_stop(&lp);
	if (!r)
		return 1;
	int rc = kvb_exit_code(r, n, &o, err, sizeof(err));
	if (rc)
		fprintf(stderr, "kvwire-bench compare: %s\n", err);
	free(r);
	return rc;
}
