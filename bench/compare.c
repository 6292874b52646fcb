/* SPDX-License-Identifier: MIT */
/* compare: kvwire and the matching peer tool on the same path, same run. */
#include "run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PEERS 6
#define MAX_REPEAT 15

typedef struct kvb_peer {
	char name[48];
	char status[16];            /* ok, missing, failed, not-run */
	double gbit;                /* median of the runs (lat: p50 in us) */
	double runs[MAX_REPEAT];
	bool has_p99;               /* lat: the peer reports a 99th percentile */
	double p99;                 /* lat: median of p99_runs, us */
	double p99_runs[MAX_REPEAT];
	unsigned n_runs;
	char command[400];
	char note[200];
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

static bool in_path(const char *bin)
{
	const char *path = getenv("PATH");
	char buf[4096];
	if (!path)
		path = "/usr/bin:/bin";
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *save, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char full[4200];
		snprintf(full, sizeof(full), "%s/%s", d, bin);
		if (!access(full, X_OK))
			return true;
	}
	return false;
}

static void peer_set(kvb_peer *p, const char *name, const char *status, const char *note)
{
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->status, sizeof(p->status), "%s", status);
	snprintf(p->note, sizeof(p->note), "%s", note ? note : "");
}

/* A peer starts with every CPU allowed: a DPDK run earlier in this process
 * pinned it to one core, which children would inherit. */
static void peer_unpin(void)
{
	cpu_set_t all;
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	CPU_ZERO(&all);
	for (long i = 0; i < n && i < CPU_SETSIZE; i++)
		CPU_SET(i, &all);
	sched_setaffinity(0, sizeof(all), &all);
}

/* Starts argv with env additions (NAME=VAL strings); stdout captured if out. */
static pid_t spawn(char *const argv[], char *const env[], int *out_fd)
{
	int p[2] = {-1, -1};
	if (out_fd && pipe(p))
		return -1;
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		peer_unpin();
		int nul = open("/dev/null", O_RDWR);
		dup2(nul, 0);
		dup2(out_fd ? p[1] : nul, 1);
		dup2(nul, 2);
		for (int f = 3; f < 4096; f++) /* nothing of this process's DPDK/kvwire state */
			close(f);
		for (size_t i = 0; env && env[i]; i++)
			putenv(env[i]);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (out_fd) {
		close(p[1]);
		*out_fd = p[0];
	}
	return pid;
}

/* Runs argv to completion (timeout_s), capturing stdout into a malloc'ed string. */
static char *run_capture(char *const argv[], char *const env[], int timeout_s, int *status)
{
	int fd;
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap);
	pid_t pid = spawn(argv, env, &fd);
	if (pid < 0 || !buf) {
		free(buf);
		return NULL;
	}
	uint64_t end = kvb_now_ns() + (uint64_t)timeout_s * 1000000000ull;
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	while (kvb_now_ns() < end) {
		int pr = poll(&pf, 1, 200);
		if (pr < 0 && errno == EINTR) /* e.g. SIGCHLD of the loopback server */
			continue;
		if (pr < 0)
			break;
		if (!(pf.revents & (POLLIN | POLLHUP)))
			continue;
		if (len + 4096 > cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	if (waitpid(pid, status, WNOHANG) != pid) {
		kill(pid, SIGKILL);
		waitpid(pid, status, 0);
		*status = -1;
	}
	return buf;
}

static void stop_server(pid_t pid)
{
	int st;
	for (int i = 0; i < 50; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return;
		usleep(20000);
	}
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
}

static int free_port(void)
{
	/* the control-port helper of the loopback code is private; 0 bind trick here too */
	static int next = 0;
	if (!next)
		next = 20000 + (int)(getpid() % 20000);
	return next += 2;
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
/* Runs ucx_perftest TEST over the driver's UCX transport; on success fills
 * f[0..5] from its "Final:" line (iterations, p50 us, avg us, overall us,
 * average MB/s, overall MB/s) and returns true; else p says why. */
static bool ucx_final(const kvb_opts *o, const char *test, uint64_t n, kvb_peer *p, double f[6])
{
	bool sm = !strcmp(o->driver, "shm");
	char name[48], port[16], size[32], iters[32];
	snprintf(name, sizeof(name), "ucx_perftest %s %s", test, sm ? "sm" : "tcp");
	if (!in_path("ucx_perftest")) {
		peer_set(p, name, "missing", "ucx_perftest not found in PATH (Debian: ucx-utils)");
		return false;
	}
	snprintf(port, sizeof(port), "%d", free_port());
	snprintf(size, sizeof(size), "%llu", (unsigned long long)o->size);
	snprintf(iters, sizeof(iters), "%llu", (unsigned long long)n);
	char *env_sm[] = {"UCX_TLS=sm", NULL};
	char *env_tcp[] = {"UCX_TLS=tcp", "UCX_NET_DEVICES=lo", NULL};
	char **env = sm ? env_sm : env_tcp;
	char *srv[] = {"ucx_perftest", "-p", port, NULL};
	char *cli[] = {"ucx_perftest", "127.0.0.1", "-p", port, "-t", (char *)test, "-s", size, "-n", iters, NULL};
	snprintf(p->command, sizeof(p->command), "%s ucx_perftest -p %s & %s ucx_perftest 127.0.0.1 -p %s -t %s "
		 "-s %s -n %s", sm ? "UCX_TLS=sm" : "UCX_TLS=tcp UCX_NET_DEVICES=lo", port,
		 sm ? "UCX_TLS=sm" : "UCX_TLS=tcp UCX_NET_DEVICES=lo", port, test, size, iters);
	pid_t spid = spawn(srv, env, NULL);
	usleep(300000);
	int st;
	char *out = run_capture(cli, env, 120, &st);
	stop_server(spid);
	char *fin = out ? strstr(out, "Final:") : NULL;
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
		p->gbit = f[1];
}

/* ------------------------------------------------------------------- iperf3 */
static void peer_iperf3(const kvb_opts *o, double secs, kvb_peer *p)
{
	char port[16], t[16], par[16], len[32];
	if (!in_path("iperf3")) {
		peer_set(p, "iperf3", "missing", "iperf3 not found in PATH (Debian: iperf3)");
		return;
	}
	snprintf(port, sizeof(port), "%d", free_port());
	snprintf(t, sizeof(t), "%d", secs < 1 ? 1 : (int)(secs + 0.5));
	snprintf(par, sizeof(par), "%u", o->rails);
	snprintf(len, sizeof(len), "%llu", (unsigned long long)(o->size > (1u << 20) ? (1u << 20) : o->size));
	char *srv[] = {"iperf3", "-s", "-1", "-p", port, "-B", "127.0.0.1", NULL};
	char *cli[] = {"iperf3", "-c", "127.0.0.1", "-p", port, "-t", t, "-P", par, "-l", len, "-J", NULL};
	snprintf(p->command, sizeof(p->command), "iperf3 -s -1 -p %s -B 127.0.0.1 & iperf3 -c 127.0.0.1 -p %s "
		 "-t %s -P %s -l %s -J", port, port, t, par, len);
	pid_t spid = spawn(srv, NULL, NULL);
	usleep(300000);
	int st;
	char *out = run_capture(cli, NULL, atoi(t) + 30, &st);
	stop_server(spid);
	json_t *j = out ? json_loads(out, 0, NULL) : NULL;
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

/* What both perftest peers need first: the tool, a device and its GID
 * (kvb_rdma_pick), a port. false (peer marked missing) when one lacks. */
static bool perftest_prepare(const kvb_opts *o, const char *tool, kvb_peer *p, char *dev, size_t dlen,
			     char *gid, size_t glen, char *port, size_t plen)
{
	char ip[64], note[96];
	int g;

	if (!in_path(tool)) {
		snprintf(note, sizeof(note), "%s not in PATH (Debian: perftest)", tool);
		peer_set(p, tool, "missing", note);
		return false;
	}
	if (!rdma_device_present() || kvb_rdma_pick(o, dev, dlen, &g, ip, sizeof(ip))) {
		peer_set(p, tool, "missing", "no RDMA device (/sys/class/infiniband empty)");
		return false;
	}
	snprintf(gid, glen, "%d", g);
	snprintf(port, plen, "%d", free_port());
	return true;
}

/* A perftest server, then its client against it on 127.0.0.1; the
 * client's output (malloc'ed) or NULL, and its wait status in *st. */
static char *perftest_run(char *const srv[], char *const cli[], int *st)
{
	pid_t spid = spawn(srv, NULL, NULL);
	usleep(500000);
	char *out = run_capture(cli, NULL, 600, st);
	stop_server(spid);
	return out;
}

/* perftest's own bandwidth over the same device and size (-n, not -D). */
static void peer_ib_write_bw(const kvb_opts *o, const kvb_result *kr, kvb_peer *p)
{
	char dev[64], gid[16], port[16], size[32], iters[32];
	if (!perftest_prepare(o, "ib_write_bw", p, dev, sizeof(dev), gid, sizeof(gid), port, sizeof(port)))
		return;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)kr->size);
	snprintf(iters, sizeof(iters), "%llu", (unsigned long long)(o->iters ? o->iters : 1000));
	char *srv[] = {"ib_write_bw", "-d", dev, "-x", gid, "-p", port, "-s", size, "-n", iters,
		       "--report_gbits", NULL};
	char *cli[] = {"ib_write_bw", "-d", dev, "-x", gid, "-p", port, "-s", size, "-n", iters,
		       "--report_gbits", "127.0.0.1", NULL};
	snprintf(p->command, sizeof(p->command), "ib_write_bw -d %s -x %s -p %s -s %s -n %s --report_gbits "
		 "& ib_write_bw ... 127.0.0.1", dev, gid, port, size, iters);
	int st;
	char *out = perftest_run(srv, cli, &st);
	/* result line: #bytes #iterations BW-peak BW-average MsgRate */
	double f[5] = {0};
	bool got = false;
	for (char *save, *l = out ? strtok_r(out, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
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

/* perftest's own latency over the same device, GID and size. Result line:
 * #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9% (us,
 * one-way: round trip / 2); t_typical is its median. */
static void peer_ib_write_lat(const kvb_opts *o, const kvb_result *kr, kvb_peer *p)
{
	char dev[64], gid[16], port[16], size[32], iters[32];
	if (!perftest_prepare(o, "ib_write_lat", p, dev, sizeof(dev), gid, sizeof(gid), port, sizeof(port)))
		return;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)o->size);
	snprintf(iters, sizeof(iters), "%llu", (unsigned long long)lat_peer_iters(o, kr));
	char *srv[] = {"ib_write_lat", "-d", dev, "-x", gid, "-p", port, "-s", size, "-n", iters, NULL};
	char *cli[] = {"ib_write_lat", "-d", dev, "-x", gid, "-p", port, "-s", size, "-n", iters, "127.0.0.1",
		       NULL};
	snprintf(p->command, sizeof(p->command), "ib_write_lat -d %s -x %s -p %s -s %s -n %s "
		 "& ib_write_lat ... 127.0.0.1", dev, gid, port, size, iters);
	int st;
	char *out = perftest_run(srv, cli, &st);
	double f[9] = {0};
	bool got = false;
	const char *last = "(no output)";
	for (char *save, *l = out ? strtok_r(out, "\n", &save) : NULL; l && !got; l = strtok_r(NULL, "\n", &save)) {
		last = l;
		got = sscanf(l, " %lf %lf %lf %lf %lf %lf %lf %lf %lf", &f[0], &f[1], &f[2], &f[3], &f[4], &f[5],
			     &f[6], &f[7], &f[8]) == 9 && f[0] == (double)o->size;
	}
	if (!got) {
		char why[200];
		snprintf(why, sizeof(why), "no result line in ib_write_lat output (exit %d, last line: %.90s)",
			 WIFEXITED(st) ? WEXITSTATUS(st) : -1, last);
		peer_set(p, "ib_write_lat", "failed", why);
	} else {
		p->gbit = f[4];
		p->p99 = f[7];
		p->has_p99 = true;
		peer_set(p, "ib_write_lat", "ok", "");
	}
	free(out);
}

/* The kvwire loopback server busy-polls its port between runs; a peer
 * measured meanwhile would share a core with it. */
static pid_t g_loop_pid = -1;

/* dpdk-testpmd txonly -> rxonly over net_memif between two processes, the
 * frame size kvwire's dpdk driver uses on memif (one 2048-byte buffer). */
static void peer_testpmd(double secs, kvb_peer *p)
{
	/* the same commands as tests/dpdk/bench_memif.sh, through sh: receiver in
	 * the background with its stats in a file, sender for T seconds */
	static const char script[] =
		"S=/run/kvwire/cmp-testpmd-$$.sock; L=/run/kvwire/cmp-testpmd-$$.log; mkdir -p /run/kvwire; rm -f $S\n"
		"E='--no-huge --no-pci -m 512'\n"
		"timeout $(($1 + 4)) dpdk-testpmd $E --file-prefix=kvwcr$$ --lcores=0@0,1@0 "
		"--vdev=net_memif0,role=server,socket=$S -- --forward-mode=rxonly --stats-period=1 --auto-start "
		"--nb-cores=1 --total-num-mbufs=32768 >$L 2>&1 </dev/null &\n"
		"R=$!; sleep 1\n"
		"timeout $1 dpdk-testpmd $E --file-prefix=kvwct$$ --lcores=0@1,1@1 --vdev=net_memif0,role=client,socket=$S "
		"-- --forward-mode=txonly --txpkts=2048 --stats-period=1 --auto-start --nb-cores=1 "
		"--total-num-mbufs=32768 >/dev/null 2>&1 </dev/null\n"
		"wait $R\n"
		"grep -a 'Rx-bps:' $L | awk '{ if ($4 > 0) { n++; if (n > 2) { b += $4; k++ } } } "
		"END { if (k) printf \"GBPS %.3f\\n\", b / k / 1e9 }'\n"
		"rm -f $S $L; rm -rf /var/run/dpdk/kvwcr$$ /var/run/dpdk/kvwct$$\n";
	char t[16];
	int st;

	if (!in_path("dpdk-testpmd")) {
		peer_set(p, "dpdk-testpmd memif", "missing", "dpdk-testpmd not in PATH (Debian: dpdk)");
		return;
	}
	snprintf(t, sizeof(t), "%d", secs < 3 ? 5 : (int)secs + 2);
	char *argv[] = {"sh", "-c", (char *)script, "sh", t, NULL};
	snprintf(p->command, sizeof(p->command), "dpdk-testpmd --no-huge --no-pci -m 512 --vdev=net_memif0,role=server "
		 "-- --forward-mode=rxonly & dpdk-testpmd ... role=client -- --forward-mode=txonly --txpkts=2048 "
		 "(%s s; mean Rx-bps after 2 s)", t);
	if (g_loop_pid > 0)
		kill(g_loop_pid, SIGSTOP);
	char *out = NULL, *g = NULL;
	for (int attempt = 0; attempt < 2 && !g; attempt++) { /* memif links sometimes never come up */
		free(out);
		out = run_capture(argv, NULL, atoi(t) + 15, &st);
		g = out ? strstr(out, "GBPS ") : NULL;
	}
	if (g_loop_pid > 0)
		kill(g_loop_pid, SIGCONT);
	if (!g) {
		peer_set(p, "dpdk-testpmd memif", "failed", "no Rx-bps samples from testpmd rxonly");
	} else {
		p->gbit = strtod(g + 5, NULL);
		peer_set(p, "dpdk-testpmd memif", "ok", "txonly->rxonly, 2048 B frames, payload untouched");
	}
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
			json_object_set_new(j, "gbit_runs", runs_json(p[i].runs, p[i].n_runs));
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
			range(rg, sizeof(rg), p[i].runs, p[i].n_runs);
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
static void kv_compare_print(const kvb_opts *o, kvb_result r[2], const double *sc, const double *ct,
			     unsigned rep, double ratio)
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
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		fputc('\n', stdout);
		json_decref(j);
	} else if (o->csv) {
		printf("driver,model,layout,gbit_per_s,ratio,verified\n");
		printf("%s,%s,scattered,%.4f,%.4f,%s\n", o->driver, o->model, r[0].gbit_per_s, ratio,
		       r[0].verified ? "yes" : "no");
		printf("%s,%s,contiguous,%.4f,1.0,%s\n", o->driver, o->model, r[1].gbit_per_s,
		       r[1].verified ? "yes" : "no");
	} else {
		char a[64], b[64];
		kvb_result_table(stdout, &r[0], 1, o->report_gbits);
		kvb_result_table(stdout, &r[1], 1, o->report_gbits);
		range(a, sizeof(a), sc, rep);
		range(b, sizeof(b), ct, rep);
		printf(" kv scattered / contiguous (median of %u): %.2f / %.2f Gb/s = %.3f   ranges %s / %s\n",
		       rep, r[0].gbit_per_s, r[1].gbit_per_s, ratio, a, b);
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
	for (unsigned k = 0; k < rep; k++)
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
	kvb_loop_stop(&lp);
	for (int which = 0; which < 2; which++) {
		r[which].verified = verified[which];
		r[which].gbit_per_s = median(runs[which], rep);
		r[which].gbyte_per_s = r[which].gbit_per_s / 8;
	}
	double ratio = r[1].gbit_per_s > 0 ? r[0].gbit_per_s / r[1].gbit_per_s : 0;
	kv_compare_print(o, r, runs[0], runs[1], rep, ratio);
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
	return p->gbit > 0 ? kr->lat.p50 / p->gbit : 0;
}

static json_t *lat_peers_json(const kvb_result *kr, const kvb_peer *p, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *j = json_object();
		json_object_set_new(j, "peer", json_string(p[i].name));
		json_object_set_new(j, "status", json_string(p[i].status));
		if (!strcmp(p[i].status, "ok")) {
			json_object_set_new(j, "p50_us", json_real(p[i].gbit));
			if (p[i].has_p99)
				json_object_set_new(j, "p99_us", json_real(p[i].p99));
			json_object_set_new(j, "x_of_peer", json_real(lat_ratio(kr, &p[i])));
			json_object_set_new(j, "p50_runs", runs_json(p[i].runs, p[i].n_runs));
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
			snprintf(p99, sizeof(p99), "%.2f", p[i].p99);
		range(rg, sizeof(rg), p[i].runs, p[i].n_runs);
		printf(" %-28s %9.2f %9s %14s %10.2f  ok\n", p[i].name, p[i].gbit, p99, rg, lat_ratio(kr, &p[i]));
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
				snprintf(p99, sizeof(p99), "%.4f", p[i].p99);
			printf("%s,%llu,%s,%s,%.4f,%s,%.4f\n", o->driver, (unsigned long long)o->size, p[i].name,
			       p[i].status, p[i].gbit, p99, lat_ratio(kr, &p[i]));
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
		peers[i].p99_runs[peers[i].n_runs] = tp[i].p99;
		peers[i].runs[peers[i].n_runs++] = tp[i].gbit;
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
		peers[i].gbit = median(peers[i].runs, peers[i].n_runs);
		peers[i].p99 = median(peers[i].p99_runs, peers[i].n_runs);
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
				peers[i].runs[peers[i].n_runs++] = tp[i].gbit;
			else
				peers[i] = tp[i]; /* a failed run marks the peer */
		}
		*npeers = n;
	}
	for (size_t i = 0; i < *npeers; i++)
		peers[i].gbit = median(peers[i].runs, peers[i].n_runs);
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
