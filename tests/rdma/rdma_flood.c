/* SPDX-License-Identifier: MIT */
/* Hostile: a connection flood without a kvwire handshake (issue 17, rdma
 * finding 10). A child opens many raw rdma_cm connections to a kvwire
 * listener (valid driver private data, a QP, then silence: no HELLO ever)
 * while, in this process, an honest client connects and moves a sequence.
 * Measured: the listener process's RSS growth during the flood, and whether
 * the honest client got through. Exit 0 only when the honest transfer
 * succeeded and the growth stayed under --max-growth-mib. Run inside
 * tests/vm/run-rxe-vm.sh:  rdma_flood [N_CONNS] [MAX_GROWTH_MIB] */
#include "kvwire/kvwire.h"
#include "rdma_int.h"

#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t now_ms(void) { return kvw_now_ns() / 1000000; }

static long rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

/* ------------------------------------------------------- the raw flood */
static bool fl_wait(struct rdma_event_channel *ch, enum rdma_cm_event_type want, int ms)
{
	struct pollfd p = {.fd = ch->fd, .events = POLLIN};
	struct rdma_cm_event *ev;
	bool ok;

	if (poll(&p, 1, ms) != 1 || rdma_get_cm_event(ch, &ev))
		return false;
	ok = ev->event == want;
	rdma_ack_cm_event(ev);
	return ok;
}

/* One raw connection: a QP and the driver's private data, nothing more
 * (its own event channel: the listener's drops must not mix in). */
static bool fl_one(struct sockaddr_in *dst, struct ibv_pd **pd)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	struct rdma_cm_id *id;
	struct rd_cm_priv cp = {.magic = RD_MAGIC, .flags = RD_CM_F_NEED};
	struct ibv_qp_init_attr qa = {.qp_type = IBV_QPT_RC,
				      .cap = {.max_send_wr = 4, .max_recv_wr = 4,
					      .max_send_sge = 1, .max_recv_sge = 1}};
	struct rdma_conn_param p = {.private_data = &cp, .private_data_len = sizeof(cp),
				    .retry_count = 6, .rnr_retry_count = 6};

	if (!ch || rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) ||
	    rdma_resolve_addr(id, NULL, (struct sockaddr *)dst, 2000) ||
	    !fl_wait(ch, RDMA_CM_EVENT_ADDR_RESOLVED, 3000) || rdma_resolve_route(id, 2000) ||
	    !fl_wait(ch, RDMA_CM_EVENT_ROUTE_RESOLVED, 3000)) {
		fprintf(stderr, "flood: resolve: %m\n");
		return false;
	}
	if (!*pd && id->verbs)
		*pd = ibv_alloc_pd(id->verbs);
	if (!*pd || rdma_create_qp(id, *pd, &qa) || rdma_connect(id, &p)) {
		fprintf(stderr, "flood: qp/connect: %m\n");
		return false;
	}
	return fl_wait(ch, RDMA_CM_EVENT_ESTABLISHED, 3000); /* held open, never freed */
}

/* The child: reads "IP PORT N", floods, writes "accepted refused", then
 * holds every connection until its pipe closes. */
static void fl_child(int in, int out)
{
	char buf[128] = "";
	unsigned port, n, acc = 0;
	char ip[64];
	struct sockaddr_in dst = {.sin_family = AF_INET};
	struct ibv_pd *pd = NULL;

	signal(SIGPIPE, SIG_IGN);
	if (read(in, buf, sizeof(buf) - 1) <= 0 || sscanf(buf, "%63s %u %u", ip, &port, &n) != 3) {
		fprintf(stderr, "flood: no target\n");
		_exit(2);
	}
	inet_pton(AF_INET, ip, &dst.sin_addr);
	dst.sin_port = htons((uint16_t)port);
	for (unsigned i = 0; i < n; i++)
		acc += fl_one(&dst, &pd);
	snprintf(buf, sizeof(buf), "%u %u\n", acc, n - acc);
	if (write(out, buf, strlen(buf)) < 0)
		_exit(2);
	while (read(in, buf, sizeof(buf)) > 0)
		;
	_exit(0);
}

/* ------------------------------------------------------- the listener */
struct fl_state {
	kvw_ctx *ctx;
	kvw_listener *l;
	long rss0, rss_peak;
	unsigned accepted_eps;
	kvw_ep *srv;            /* the last endpoint accepted READY */
};

static void fl_pass(struct fl_state *s)
{
	kvw_ep *ep = NULL;
	long r;

	kvw_progress(s->ctx);
	while (kvw_accept(s->l, 0, &ep) == KVW_OK && ep) {
		s->accepted_eps++; /* READY: only the honest client can get here */
		s->srv = ep;
		ep = NULL;
	}
	kvw_ctx_wait(s->ctx, 1);
	if ((r = rss_kib()) > s->rss_peak)
		s->rss_peak = r;
}

/* The honest client: connect in this context, one sequence both ways. */
static bool fl_honest(struct fl_state *s, uint64_t *ms)
{
	kvw_ep *c = NULL;
	kvw_mem *ms_, *mr;
	kvw_layout *ls, *lr;
	kvw_req *rs = NULL, *rr = NULL;
	kvw_layout_desc d = {.n_layers = 2, .n_blocks = 8, .block_bytes = 65536,
			     .block_stride = 65536, .layer_stride = 8 * 65536};
	uint32_t blocks[4] = {0, 2, 5, 7};
	uint64_t t0 = now_ms();
	kvw_event ev[8];
	int done = 0, ok = 0;
	unsigned before = s->accepted_eps;

	if (kvw_connect_start(s->ctx, kvw_listener_uri(s->l), &c) != KVW_OK)
		return false;
	while (now_ms() - t0 < 20000 && (kvw_ep_status(c) == KVW_INPROGRESS || s->accepted_eps == before))
		fl_pass(s);
	if (kvw_ep_status(c) != KVW_OK) {
		printf("honest client: %s after %llu ms\n", kvw_ctx_last_error(s->ctx),
		       (unsigned long long)(now_ms() - t0));
		return false;
	}
	if (kvw_mem_alloc(s->ctx, 1 << 20, 0, &ms_) || kvw_mem_alloc(s->ctx, 1 << 20, 0, &mr) ||
	    kvw_layout_create(ms_, &d, &ls) || kvw_layout_create(mr, &d, &lr)) {
		printf("honest memory: %s\n", kvw_ctx_last_error(s->ctx));
		return false;
	}
	memset(kvw_mem_addr(ms_), 0x5a, 1 << 20);
	memset(kvw_mem_addr(mr), 0, 1 << 20);
	if (kvw_recv_seq(c, 9, lr, blocks, 4, 20000000, &rr) != KVW_OK ||
	    kvw_send_seq(s->srv, 9, ls, blocks, 4, 0, 2, KVW_SEND_LAST, &rs) != KVW_OK) {
		printf("honest sequence: %s\n", kvw_ctx_last_error(s->ctx));
		return false;
	}
	while (now_ms() - t0 < 40000 && done < 2) {
		int n = kvw_poll(s->ctx, ev, 8);
		for (int k = 0; k < n; k++)
			if (ev[k].type == KVW_EV_SEQ) {
				done++;
				ok += ev[k].status == KVW_OK;
				if (ev[k].status != KVW_OK)
					printf("honest sequence ended %s: %s\n", kvw_strerror(ev[k].status),
					       kvw_ctx_last_error(s->ctx));
			}
		fl_pass(s);
	}
	*ms = now_ms() - t0;
	if (done < 2)
		printf("honest sequence: %d of 2 ends in 40 s\n", done);
	for (int l = 0; l < 2; l++)
		for (int b = 0; b < 4; b++)
			if (((uint8_t *)kvw_mem_addr(mr))[(size_t)(l * 8 + blocks[b]) * 65536 + 777] != 0x5a)
				ok = 0;
	return ok == 2;
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 200;
	long max_mib = argc > 2 ? atol(argv[2]) : 160;
	int down[2], up[2];
	struct fl_state s = {0};
	char buf[128], host[64];
	unsigned port, acc = 0, ref = 0;
	uint64_t t0, hms = 0;
	pid_t pid;

	if (pipe(down) || pipe(up))
		return 2;
	fflush(NULL);
	if ((pid = fork()) == 0) {
		close(down[1]);
		close(up[0]);
		fl_child(down[0], up[1]);
	}
	close(down[0]);
	close(up[1]);
	if (kvw_ctx_create(NULL, &s.ctx) || kvw_listen(s.ctx, "rdma://10.78.0.1:0", &s.l)) {
		printf("listen: %s\n", kvw_ctx_last_error(s.ctx));
		return 2;
	}
	if (sscanf(kvw_listener_uri(s.l), "rdma://%63[^:]:%u", host, &port) != 2)
		return 2;
	for (int i = 0; i < 50; i++)
		fl_pass(&s); /* the context's own pages first */
	s.rss0 = s.rss_peak = rss_kib();
	snprintf(buf, sizeof(buf), "%s %u %u\n", host, port, n);
	if (write(down[1], buf, strlen(buf)) < 0)
		return 2;
	t0 = now_ms();
	for (struct pollfd p = {.fd = up[0], .events = POLLIN}; poll(&p, 1, 0) == 0;)
		fl_pass(&s); /* serve while the flood connects */
	if (read(up[0], buf, sizeof(buf) - 1) <= 0 || sscanf(buf, "%u %u", &acc, &ref) != 2)
		printf("flood child gave no count\n");
	printf("flood: %u raw connections established, %u refused, in %llu ms; listener RSS "
	       "%ld MiB -> peak %ld MiB (+%ld MiB)\n", acc, ref, (unsigned long long)(now_ms() - t0),
	       s.rss0 / 1024, s.rss_peak / 1024, (s.rss_peak - s.rss0) / 1024);
	bool honest = fl_honest(&s, &hms); /* the flood still holds its connections */
	printf("honest client while the flood holds: %s (%llu ms); RSS peak now %ld MiB (+%ld MiB)\n",
	       honest ? "transfer OK" : "FAILED", (unsigned long long)hms, s.rss_peak / 1024,
	       (s.rss_peak - s.rss0) / 1024);
	close(down[1]);
	int wst = 0;
	waitpid(pid, &wst, 0);
	printf("flood child: exit %d signal %d\n", WIFEXITED(wst) ? WEXITSTATUS(wst) : -1,
	       WIFSIGNALED(wst) ? WTERMSIG(wst) : 0);
	kvw_listener_close(s.l);
	kvw_ctx_destroy(s.ctx);
	if (!honest || (s.rss_peak - s.rss0) / 1024 > max_mib) {
		printf("FAIL: %s\n", !honest ? "the honest client did not get through" :
		       "the listener's memory grew past the limit during the flood");
		return 1;
	}
	printf("PASS\n");
	return 0;
}
