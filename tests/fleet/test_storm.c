/* SPDX-License-Identifier: MIT */
/* The handshake storm (issue 16): a fleet's peers all connect at once to
 * one listener, as after a decode host restarts. N endpoints in 8 forked
 * processes (N/8 each, kvw_connect_start in one burst after a common start
 * signal) hit one listener with a shared secret (CPace on every handshake);
 * every one must reach READY and be accepted, none refused, within a
 * generous bound; the time to all-READY is logged.
 *
 * The config this needs, and why: every peer here comes from one address
 * (127.0.0.1 on tcp, one uid on shm), so max_handshakes_per_addr (default
 * 64) and max_handshakes (default 256) are raised to N, max_unaccepted to
 * N (the parent accepts while the storm runs, but may fall behind), and
 * handshake_timeout_ms to 60 s (a loaded 2-CPU host runs 2 N CPace
 * exchanges). RLIMIT_NOFILE is raised to its hard limit: the listener
 * holds N sockets (and max_handshakes is cut to a quarter of the limit).
 * rdma (192 peers, only in the Soft-RoCE VM): see storm_rdma. */
#include "kvwt.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(fleet, .timeout = 180);

#define N_PROCS 8
#define URI_LEN 256 /* one pipe write each: atomic (<= PIPE_BUF) */

struct storm_report {
	uint32_t ready, failed;
	uint64_t ms; /* from the start signal to this process's last READY */
	char why[200];
};

static void storm_cfg(unsigned n, const char *out[16])
{
	static char nbuf[16];
	const char *d = getenv("KVW_TEST_DRIVER");
	snprintf(nbuf, sizeof(nbuf), "%u", n);
	bool rdma = d && !strcmp(d, "rdma"); /* see storm_rdma */
	const char *cfg[] = {"max_handshakes", nbuf, "max_handshakes_per_addr", nbuf, "max_unaccepted", nbuf,
			     "handshake_timeout_ms", rdma ? "240000" : "60000",
			     "connect_timeout_ms", rdma ? "240000" : "60000",
			     "secret", "storm-test-secret-0123456789",
			     rdma ? "peer_dead_ms" : NULL, "60000", NULL};
	memcpy(out, cfg, sizeof(cfg));
}

/* A peer process: takes the listener's URI, makes its context, says so
 * (one byte on ready), waits for the start signal, connects n endpoints. */
static void storm_child(unsigned n, unsigned total, uint64_t wait_ms, int uri_in, int ready, int go, int out)
{
	const char *cfg[16];
	char uri[URI_LEN];
	kvw_ep **eps = calloc(n, sizeof(*eps));
	struct storm_report r = {0};
	char c;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (read(uri_in, uri, sizeof(uri)) != (ssize_t)sizeof(uri))
		_exit(2);
	storm_cfg(total, cfg);
	kvw_ctx *ctx = kvwt_ctx(cfg);
	if (write(ready, "r", 1) != 1 || read(go, &c, 1) != 1)
		_exit(2);
	uint64_t t0 = kvwt_now_ms();
	for (unsigned i = 0; i < n; i++)
		if (kvw_connect_start(ctx, uri, &eps[i]) != KVW_OK) {
			r.failed++;
			snprintf(r.why, sizeof(r.why), "%s", kvw_ctx_last_error(ctx));
		}
	for (unsigned left = n - r.failed; left && kvwt_now_ms() - t0 < wait_ms;) {
		kvw_progress(ctx);
		left = 0;
		for (unsigned i = 0; i < n; i++) {
			kvw_status st = eps[i] ? kvw_ep_status(eps[i]) : KVW_OK;
			left += st == KVW_INPROGRESS;
		}
		kvw_ctx_wait(ctx, 1);
	}
	r.ms = kvwt_now_ms() - t0;
	for (unsigned i = 0; i < n; i++) {
		kvw_status st = eps[i] ? kvw_ep_status(eps[i]) : KVW_ERR_INVALID;
		if (st == KVW_OK)
			r.ready++;
		else if (eps[i] && !r.why[0])
			snprintf(r.why, sizeof(r.why), "%s: %s", kvw_strerror(st), kvw_ctx_last_error(ctx));
	}
	r.failed = n - r.ready;
	if (write(out, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(3);
	/* stay (answering keepalives) until the parent has accepted everyone */
	while (read(go, &c, 1) != 0) {
	}
	_exit(0);
}

static void raise_nofile(void)
{
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	cr_log_info("RLIMIT_NOFILE %llu", (unsigned long long)rl.rlim_cur);
}

/* The peers are forked before this process opens its context: a child
 * must not inherit verbs state (librdmacm opens every device once per
 * process; the kernel refuses a child's use of its parent's uverbs fds). */
static void storm(const char *driver, unsigned n, uint64_t bound_ms)
{
	const char *cfg[16];
	char uri[URI_LEN];
	int go[2], rep[2], up[2], ready[2];
	pid_t pids[N_PROCS];
	unsigned accepted = 0, ready_n = 0, failed = 0;
	uint64_t worst = 0;
	kvw_listener *l;

	setenv("KVW_TEST_DRIVER", driver, 1);
	raise_nofile();
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(rep), 0);
	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(ready), 0);
	for (int i = 0; i < N_PROCS; i++)
		if ((pids[i] = fork()) == 0) {
			close(go[1]);
			close(up[1]);
			storm_child(n / N_PROCS, n, bound_ms + 60000, up[0], ready[1], go[0], rep[1]);
		}
	close(go[0]);
	close(rep[1]);
	close(up[0]);
	close(ready[1]);
	storm_cfg(n, cfg);
	kvw_ctx *ctx = kvwt_ctx(cfg);
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(ctx, uri, &l), KVW_OK, "%s", kvw_ctx_last_error(ctx));
	memset(uri, 0, sizeof(uri));
	snprintf(uri, sizeof(uri), "%s", kvw_listener_uri(l));
	for (int i = 0; i < N_PROCS; i++)
		cr_assert_eq(write(up[1], uri, sizeof(uri)), (ssize_t)sizeof(uri));
	for (int i = 0; i < N_PROCS; i++) { /* every child has its context */
		struct pollfd pf = {.fd = ready[0], .events = POLLIN};
		char c;
		cr_assert(poll(&pf, 1, 60000) == 1 && read(ready[0], &c, 1) == 1,
			  "a peer process made no context within 60 s");
	}
	uint64_t t0 = kvwt_now_ms(), t_all = 0;
	cr_assert_eq(write(go[1], "gggggggg", N_PROCS), N_PROCS);
	while (accepted < n && kvwt_now_ms() - t0 < bound_ms + 30000) {
		kvw_ep *ep;
		kvw_progress(ctx);
		while (kvw_accept(l, 0, &ep) == KVW_OK)
			accepted++;
		kvw_ctx_wait(ctx, 1);
	}
	t_all = kvwt_now_ms() - t0;
	for (int i = 0; i < N_PROCS; i++) {
		struct storm_report r;
		cr_assert_eq(read(rep[0], &r, sizeof(r)), (ssize_t)sizeof(r), "a peer process died");
		ready_n += r.ready;
		failed += r.failed;
		worst = r.ms > worst ? r.ms : worst;
		if (r.failed)
			cr_log_warn("a peer process: %u of %u failed: %s", r.failed, r.ready + r.failed, r.why);
	}
	close(go[1]); /* the children exit */
	for (int i = 0; i < N_PROCS; i++)
		waitpid(pids[i], NULL, 0);
	cr_log_info("%s storm: %u peers in %d processes, %u READY, %u failed, %u accepted; "
		    "all READY at the peers after %llu ms, all accepted after %llu ms",
		    driver, n, N_PROCS, ready_n, failed, accepted, (unsigned long long)worst,
		    (unsigned long long)t_all);
	cr_expect_eq(ready_n, n);
	cr_expect_eq(failed, 0u);
	cr_expect_eq(accepted, n);
	cr_expect_leq(t_all, bound_ms, "all accepted only after %llu ms", (unsigned long long)t_all);
	kvw_listener_close(l);
	kvw_ctx_destroy(ctx);
}

Test(fleet, storm_256_tcp)
{
	storm("tcp", 256, 30000);
}

Test(fleet, storm_256_shm)
{
	storm("shm", 256, 30000);
}

Test(fleet, storm_1024_tcp)
{
	storm("tcp", 1024, 60000);
}

/* rdma, only inside the Soft-RoCE VM (meson test fleet-rdma): 192 peers
 * (KVW_FLEET_STORM_N for another count), all on rxe0 with client and
 * server ends in one guest. The limit is the guest's memory, not rxe
 * (max_qp 1,048,560): each READY endpoint holds ~4.75 MB of rings
 * registered (pinned) with the device, ~10.3 MB a pair with the kernel's
 * share; 192 peaked at 2.05 GB of the guest's 2.97 GB (RXE_VM_MEM 3072M),
 * 256 at 2.80 GB (it passed, 49 s, but 170 MB from the end is no margin
 * for a test), 320 cannot fit. Under TCG (2 emulated CPUs for 9 processes)
 * the handshakes are slow and slower still on a loaded host: all READY
 * after 7.6 s (64), 15-22 s (128), 22-61 s (192; 61 s with the host at
 * load 5), 49 s (256). So the bound is 180 s, and for rdma the handshake
 * and connect timeouts are 240 s (at 60 s, 256 failed: 179 READY) and
 * peer_dead_ms 60 s (at the default 5 s, 76 of 128 failed PEER_DEAD: the
 * listener, busy with a burst of CPace exchanges on the emulated CPUs,
 * sent the peers already READY no frame for 5 s). */
static void storm_rdma(void)
{
	const char *d = getenv("KVW_TEST_DRIVER"), *u = getenv("KVW_TEST_LISTEN_URI");
	const char *n = getenv("KVW_FLEET_STORM_N");
	if (!d || strcmp(d, "rdma") || !u || strncmp(u, "rdma://", 7))
		cr_skip_test("rdma runs only inside the Soft-RoCE VM (meson test fleet-rdma: "
			     "KVW_TEST_DRIVER=rdma, KVW_TEST_LISTEN_URI=rdma://IP:0)");
	storm("rdma", n && *n ? (unsigned)strtoul(n, NULL, 10) / N_PROCS * N_PROCS : 192, 180000);
}

Test(fleet, storm_192_rdma, .timeout = 300)
{
	storm_rdma();
}
