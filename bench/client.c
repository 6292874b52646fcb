/* SPDX-License-Identifier: MIT */
/* kvwire-bench client: one session per size, the loopback server, output. */
#include "session.h"

#include <dirent.h>
#include <stdio.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

/* Waits for the server's result, driving progress meanwhile. */
static json_t *client_wait_result(kvb_sess *s)
{
	uint64_t end = kvb_now_ns() + (uint64_t)s->o.timeout_ms * 1000000ull;
	if (s->early_result) { /* the server finished first: read by the run's control poll */
		json_t *m = s->early_result;
		s->early_result = NULL;
		return m;
	}
	while (kvb_now_ns() < end) {
		json_t *m;
		kvw_progress(s->ctx);
		int r = kvb_ctl_recv(s->ctl, 1, &m);
		if (r < 0)
			break;
		if (r)
			continue;
		const char *t = json_string_value(json_object_get(m, "type"));
		if (t && (!strcmp(t, "result") || !strcmp(t, "error")))
			return m;
		json_decref(m);
	}
	return NULL;
}

static uint64_t ju(json_t *m, const char *k)
{
	json_t *v = json_object_get(m, k);
	return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static void fill_peer(kvb_result *r, json_t *m)
{
	const char *note = json_string_value(json_object_get(m, "note"));
	const char *err = json_string_value(json_object_get(m, "error"));
	r->peer.valid = true;
	r->peer.cpu_pct = json_number_value(json_object_get(m, "cpu_pct"));
	r->peer.reg_ns = ju(m, "reg_ns");
	r->peer.bytes_tx = ju(m, "bytes_tx");
	r->peer.bytes_rx = ju(m, "bytes_rx");
	r->peer.retransmits = ju(m, "retransmits");
	r->peer.drops = ju(m, "drops");
	if (ju(m, "runs_per_layer"))
		r->runs_per_layer = ju(m, "runs_per_layer");
	if (!json_is_true(json_object_get(m, "verified"))) {
		r->verified = false;
		snprintf(r->verify_note, sizeof(r->verify_note), "server: %s%s%s", note ? note : "",
			 err && err[0] ? "; " : "", err ? err : "");
	} else if (!r->verify_note[0] && note) {
		snprintf(r->verify_note, sizeof(r->verify_note), "server: %s", note);
	}
}

static double mean(const kvb_samples *sm)
{
	double t = 0;
	for (size_t i = 0; i < sm->n; i++)
		t += sm->v[i];
	return sm->n ? t / (double)sm->n : 0;
}

static void fill_local(kvb_result *r, kvb_sess *s)
{
	kvw_counters cn = {.size = sizeof(cn)};
	cn = (kvw_counters){.size = sizeof(cn)};
	if (s->ep)
		kvw_ep_counters(s->ep, &cn);
	r->local.valid = true;
	r->local.cpu_pct = s->cpu_pct;
	r->local.reg_ns = s->mem ? kvw_mem_reg_ns(s->mem) : 0;
	r->local.bytes_tx = cn.bytes_tx;
	r->local.bytes_rx = cn.bytes_rx;
	r->local.retransmits = cn.retransmits;
	r->local.drops = cn.drops;
	r->rails = cn.rails ? cn.rails : s->o.rails;
	for (unsigned i = 0; i < r->rails && i < KVB_MAX_RAILS; i++)
		r->rail_bytes[i] = cn.rail[i].bytes_tx;
}

static void fill_numbers(kvb_result *r, kvb_sess *s)
{
	const kvb_opts *o = &s->o;
	r->size = o->test == KVB_T_KV ? s->block_bytes : o->size;
	r->bidir = o->bidir;
	if (o->test == KVB_T_LAT) {
		kvb_stats_compute(&s->lat_us, &r->lat);
		r->has_lat = true;
		r->iterations = s->lat_count;
		r->bytes = 2 * o->size * s->lat_count;
		r->seconds = (double)(s->t1 - s->t0) / 1e9;
		return;
	}
	uint64_t first = s->send.t_first, last = s->send.t_last;
	r->bytes = s->send.bytes;
	r->iterations = s->send.done;
	if (s->has_recv) {
		r->bytes += s->recv.bytes;
		r->iterations += s->recv.done;
		if (s->recv.t_first && s->recv.t_first < first)
			first = s->recv.t_first;
		if (s->recv.t_last > last)
			last = s->recv.t_last;
	}
	r->seconds = last > first ? (double)(last - first) / 1e9 : 0;
	if (o->test == KVB_T_KV) {
		r->is_kv = true;
		snprintf(r->model, sizeof(r->model), "%s", o->model);
		r->layers = o->layers;
		r->seqs = o->seqs;
		r->tokens = o->tokens;
		r->block_tokens = o->block_tokens;
		r->block_bytes = s->block_bytes;
		r->blocks_per_seq = s->nblk;
		r->contiguous = o->contiguous;
		r->rate = o->rate;
		r->ttll_us = mean(&s->send.ttll_us);
		kvw_counters cn = {.size = sizeof(cn)};
		if (s->ep && !kvw_ep_counters(s->ep, &cn) && s->send.done)
			r->frags_per_seq = (double)cn.frags_tx / (double)s->send.done;
		if (o->geom) {
			r->geom = true;
			snprintf(r->src_geom, sizeof(r->src_geom), "%s/%u tp%u:%u", o->src_layout,
				 o->src_block_tokens, o->src_tp ? o->src_tp : 1, o->src_rank);
			snprintf(r->dst_geom, sizeof(r->dst_geom), "%s/%u tp%u:%u", o->dst_layout,
				 o->dst_block_tokens, o->dst_tp ? o->dst_tp : 1, o->dst_rank);
		}
		kvb_stats_compute(&s->send.lat_us, &r->lat);
		r->has_lat = true;
	}
}

static int client_session(kvb_sess *s, const char *uri, const char *ctladdr, kvb_result *r)
{
	kvb_ctl c = {.fd = -1};
	char err[256];
	json_t *m = NULL;

	if (kvb_ctl_connect(ctladdr, 5000, &c, err, sizeof(err)))
		return kvb_sess_fail(s, "%s", err);
	s->ctl = &c;
	kvb_ctl_send(&c, kvb_params_json(&s->o));
	if (kvb_ctl_recv(&c, (int)s->o.timeout_ms + 60000, &m)) {
		kvb_sess_fail(s, "the bench server did not answer the start message");
		goto close_ctl;
	}
	const char *t = json_string_value(json_object_get(m, "type"));
	if (!t || strcmp(t, "ready")) {
		const char *msg = json_string_value(json_object_get(m, "msg"));
		kvb_sess_fail(s, "server: %s", msg ? msg : "refused the test");
		goto close_ctl;
	}
	kvw_status st = kvw_connect(s->ctx, uri, -1, &s->ep);
	if (st) {
		kvb_sess_fail(s, "kvw_connect %s: %s %s", uri, kvw_strerror(st), kvw_ctx_last_error(s->ctx));
		goto close_ctl;
	}
	if (s->o.test == KVB_T_LAT) {
		kvb_sess_lat(s);
	} else {
		kvb_sess_flows(s);
		kvb_sess_run(s);
	}
	fill_numbers(r, s);
	fill_local(r, s);
	r->verified = s->verified && !s->err[0];
	snprintf(r->verify_note, sizeof(r->verify_note), "%s", s->has_recv ? s->note : "");
	json_decref(m);
	m = client_wait_result(s);
	if (!m)
		kvb_sess_fail(s, "no result from the bench server");
	else if (!strcmp(json_string_value(json_object_get(m, "type")), "error"))
		kvb_sess_fail(s, "server: %s", json_string_value(json_object_get(m, "msg")));
	else
		fill_peer(r, m);
	json_t *bye = json_object();
	json_object_set_new(bye, "type", json_string("bye"));
	kvb_ctl_send(&c, bye);
close_ctl:
	json_decref(m);
	kvb_ctl_close(&c);
	s->ctl = NULL;
	return s->err[0] ? -1 : 0;
}

int kvb_client_run(const kvb_opts *o, const char *uri, const char *ctl, kvb_result *r)
{
	kvw_ctx *ctx;
	kvb_sess s;
	char err[256];

	kvb_result_init(r, kvb_test_name(o->test), o->driver);
	r->size = o->size;
	if (kvb_ctx_open(o, o->rails, &ctx, r->error, sizeof(r->error)))
		return -1;
	int rc = kvb_sess_setup(&s, ctx, o, true);
	if (!rc)
		rc = client_session(&s, uri, ctl, r);
	if (s.err[0])
		snprintf(r->error, sizeof(r->error), "%s", s.err);
	if (rc)
		r->verified = false;
	kvb_result_finish(r);
	kvb_sess_free(&s);
	kvw_ctx_destroy(ctx);
	(void)err;
	return rc;
}

/* ---------------------------------------------------------------- loopback */
static int free_tcp_port(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
	if (fd < 0)
		return -1;
	if (!bind(fd, (struct sockaddr *)&sin, sizeof(sin)) && !getsockname(fd, (struct sockaddr *)&sin, &l))
		port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

int kvb_rdma_pick(const kvb_opts *o, char *dev, size_t dlen, int *gid, char *ipv4, size_t iplen)
{
	DIR *d;
	struct dirent *e;

	dev[0] = 0;
	ipv4[0] = 0;
	if (o->rdma_dev[0]) {
		snprintf(dev, dlen, "%s", o->rdma_dev);
	} else if ((d = opendir("/sys/class/infiniband"))) {
		while ((e = readdir(d)))
			if (e->d_name[0] != '.' && !dev[0] && strlen(e->d_name) < dlen)
				memcpy(dev, e->d_name, strlen(e->d_name) + 1);
		closedir(d);
	}
	if (!dev[0])
		return -1;
	*gid = o->rdma_gid[0] ? atoi(o->rdma_gid) : 0;
	for (int i = 0; i < 16; i++) {
		char path[300], val[64] = "";
		unsigned a, b, c, dd;
		FILE *f;
		if (o->rdma_gid[0] && i != *gid)
			continue;
		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/1/gids/%d", dev, i);
		if (!(f = fopen(path, "r")))
			break;
		bool v4 = fgets(val, sizeof(val), f) && !strncmp(val, "0000:0000:0000:0000:0000:ffff:", 30) &&
			  sscanf(val + 30, "%2x%2x:%2x%2x", &a, &b, &c, &dd) == 4;
		fclose(f);
		if (v4) {
			*gid = i;
			snprintf(ipv4, iplen, "%u.%u.%u.%u", a, b, c, dd);
			break;
		}
	}
	return 0;
}

/* dpdk without a NIC: the two processes meet over net_memif (--no-huge
 * --no-pci), the server in the memif server role through its URI's eal=,
 * this process as the client through KVW_DPDK_EAL (unless the user set it). */
static int loop_addresses_dpdk(kvb_opts *so, char *err, size_t errlen)
{
	char sock[96], eal[400];
	int pid = (int)getpid();

	if (mkdir("/run/kvwire", 0755) && errno != EEXIST) {
		snprintf(err, errlen, "cannot create /run/kvwire for the memif socket: %s", strerror(errno));
		return -1;
	}
	snprintf(sock, sizeof(sock), "/run/kvwire/bench-memif-%d.sock", pid);
	unlink(sock);
	/* EAL pins its main thread: one core each, or both on core 0 */
	int cl = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 1 : 0;
	snprintf(eal, sizeof(eal), "--no-huge --no-pci -m 512 -l %d --log-level=lib.eal:warning "
		 "--file-prefix=kvwbC%d --vdev=net_memif0,role=client,socket=%s", cl, pid, sock);
	setenv("KVW_DPDK_EAL", eal, 0);
	snprintf(so->listen, sizeof(so->listen),
		 "dpdk://127.0.0.1:7000?eal=--no-huge+--no-pci+-m+512+-l+0+--log-level=lib.eal:warning+"
		 "--file-prefix=kvwbS%d+--vdev=net_memif0,role=server,socket=%s", pid, sock);
	snprintf(so->ctl, sizeof(so->ctl), "tcp:127.0.0.1:0");
	return 0;
}

static int loop_addresses(const kvb_opts *o, kvb_opts *so, char *err, size_t errlen)
{
	if (o->listen[0])
		return 0; /* the caller chose (dpdk needs its EAL query) */
	if (!strcmp(o->driver, "shm")) {
		snprintf(so->listen, sizeof(so->listen), "shm:///tmp/kvwire-bench-%d.sock", (int)getpid());
		snprintf(so->ctl, sizeof(so->ctl), "unix:/tmp/kvwire-bench-%d.ctl", (int)getpid());
		return 0;
	}
	if (!strcmp(o->driver, "tcp") || !strcmp(o->driver, "rdma") || !strcmp(o->driver, "ofi")) {
		char host[64] = "127.0.0.1";
		char dev[64];
		int gid;
		if (!strcmp(o->driver, "rdma") &&
		    (kvb_rdma_pick(o, dev, sizeof(dev), &gid, host, sizeof(host)) || !host[0])) {
			snprintf(err, errlen, "--loopback --driver rdma: no RDMA port with an IPv4 RoCE GID "
				 "(see `kvwire devices`; -d DEV / -x GID pick one)");
			return -1;
		}
		int port = free_tcp_port();
		if (port < 0) {
			snprintf(err, errlen, "no free TCP port on 127.0.0.1");
			return -1;
		}
		snprintf(so->listen, sizeof(so->listen), "%s://%s:%d", o->driver, host, port);
		snprintf(so->ctl, sizeof(so->ctl), "tcp:127.0.0.1:0");
		return 0;
	}
	if (!strcmp(o->driver, "dpdk"))
		return loop_addresses_dpdk(so, err, errlen);
	snprintf(err, errlen, "--loopback with driver %s needs --listen URI for the server side", o->driver);
	return -1;
}

int kvb_loop_start(const kvb_opts *o, kvb_loop *lp, char *err, size_t errlen)
{
	kvb_opts so = *o;
	int p[2];

	so.test = KVB_T_SERVER;
	so.quiet = true;
	so.once = false;
	if (loop_addresses(o, &so, err, errlen))
		return -1;
	if (pipe(p)) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		_exit(kvb_server_main(&so, p[1]));
	}
	close(p[1]);
	lp->pid = pid;
	char line[700] = "";
	size_t len = 0;
	struct pollfd pf = {.fd = p[0], .events = POLLIN};
	while (len < sizeof(line) - 1 && poll(&pf, 1, 20000) > 0) {
		ssize_t n = read(p[0], line + len, sizeof(line) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		line[len] = '\0';
		if (strchr(line, '\n'))
			break;
	}
	close(p[0]);
	if (sscanf(line, "%299s %299s", lp->uri, lp->ctl) != 2) {
		snprintf(err, errlen, "the loopback server did not start (its message is above)");
		kvb_loop_stop(lp);
		return -1;
	}
	return 0;
}

void kvb_loop_stop(kvb_loop *lp)
{
	kvb_ctl c;
	char err[128];
	int status;

	if (lp->pid <= 0)
		return;
	if (lp->ctl[0] && !kvb_ctl_connect(lp->ctl, 1000, &c, err, sizeof(err))) {
		json_t *m = json_object();
		json_object_set_new(m, "type", json_string("quit"));
		kvb_ctl_send(&c, m);
		kvb_ctl_close(&c);
	}
	for (int i = 0; i < 250; i++) {
		if (waitpid(lp->pid, &status, WNOHANG) == lp->pid) {
			lp->pid = 0;
			return;
		}
		usleep(20000);
	}
	kill(lp->pid, SIGTERM);
	waitpid(lp->pid, &status, 0);
	lp->pid = 0;
}

/* ------------------------------------------------------------------ output */
static void emit(const kvb_opts *o, const kvb_result *r, size_t n)
{
	if (o->csv) {
		kvb_result_csv_header(stdout);
		for (size_t i = 0; i < n; i++)
			kvb_result_csv_row(stdout, &r[i]);
	} else if (o->json) {
		json_t *j = kvb_results_json(r, n);
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		fputc('\n', stdout);
		if (o->json_file[0] && json_dump_file(j, o->json_file, JSON_INDENT(2)))
			fprintf(stderr, "kvwire-bench: cannot write %s\n", o->json_file);
		json_decref(j);
	} else {
		kvb_result_table(stdout, r, n, o->report_gbits);
	}
	fflush(stdout);
}

int kvb_client_main(const kvb_opts *o)
{
	kvb_opts p = *o;
	kvb_loop lp = {0};
	char err[256], ctl[300], uri[300];
	uint64_t sizes[KVB_MAX_SWEEP];
	size_t n = 1, done = 0;

	if (p.test == KVB_T_KV && kvb_kv_resolve(&p, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench: %s\n", err);
		return 1;
	}
	sizes[0] = p.size;
	if (p.sweep)
		n = kvb_sweep_sizes(sizes, KVB_MAX_SWEEP);
	if (p.loopback) {
		if (kvb_loop_start(&p, &lp, err, sizeof(err))) {
			fprintf(stderr, "kvwire-bench: %s\n", err);
			return 1;
		}
		snprintf(uri, sizeof(uri), "%s", lp.uri);
		snprintf(ctl, sizeof(ctl), "%s", lp.ctl);
	} else {
		snprintf(uri, sizeof(uri), "%s", p.connect);
		if (p.ctl[0])
			snprintf(ctl, sizeof(ctl), "%s", p.ctl);
		else if (kvb_ctl_addr_for(p.connect, p.ctl_port, ctl, sizeof(ctl))) {
			fprintf(stderr, "kvwire-bench: cannot derive the control address from %s; pass -p PORT\n",
				p.connect);
			return 1;
		}
	}
	kvb_result *r = calloc(n, sizeof(*r));
	for (size_t i = 0; r && i < n; i++) {
		p.size = sizes[i];
		done++;
		if (kvb_client_run(&p, uri, ctl, &r[i]))
			break; /* the exit status message below says why */
	}
	kvb_loop_stop(&lp);
	if (!r)
		return 1;
	emit(&p, r, done);
	int rc = kvb_exit_code(r, done, &p, err, sizeof(err));
	if (rc)
		fprintf(stderr, "kvwire-bench: %s\n", err);
	free(r);
	return rc;
}
