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
 * holds N sockets (and max_handshakes is cut to a quarter of the limit). */
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

struct storm_report {
	uint32_t ready, failed;
	uint64_t ms; /* from the start signal to this process's last READY */
	char why[200];
};

static void storm_cfg(unsigned n, const char *out[16])
{
	static char nbuf[16];
	snprintf(nbuf, sizeof(nbuf), "%u", n);
	const char *cfg[] = {"max_handshakes", nbuf, "max_handshakes_per_addr", nbuf, "max_unaccepted", nbuf,
			     "handshake_timeout_ms", "60000", "connect_timeout_ms", "60000",
			     "secret", "storm-test-secret-0123456789", NULL};
	memcpy(out, cfg, sizeof(cfg));
}

static void storm_child(const char *uri, unsigned n, unsigned total, int go, int out)
{
	const char *cfg[16];
	kvw_ep **eps = calloc(n, sizeof(*eps));
	struct storm_report r = {0};
	char c;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	storm_cfg(total, cfg);
	kvw_ctx *ctx = kvwt_ctx(cfg);
	if (read(go, &c, 1) != 1)
		_exit(2);
	uint64_t t0 = kvwt_now_ms();
	for (unsigned i = 0; i < n; i++)
		if (kvw_connect_start(ctx, uri, &eps[i]) != KVW_OK) {
			r.failed++;
			snprintf(r.why, sizeof(r.why), "%s", kvw_ctx_last_error(ctx));
		}
	for (unsigned left = n - r.failed; left && kvwt_now_ms() - t0 < 120000;) {
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

static void storm(const char *driver, unsigned n, uint64_t bound_ms)
{
	const char *cfg[16];
	char uri[256];
	int go[2], rep[2];
	pid_t pids[N_PROCS];
	unsigned accepted = 0, ready = 0, failed = 0;
	uint64_t worst = 0;
	kvw_listener *l;

	setenv("KVW_TEST_DRIVER", driver, 1);
	raise_nofile();
	storm_cfg(n, cfg);
	kvw_ctx *ctx = kvwt_ctx(cfg);
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(ctx, uri, &l), KVW_OK, "%s", kvw_ctx_last_error(ctx));
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(rep), 0);
	for (int i = 0; i < N_PROCS; i++)
		if ((pids[i] = fork()) == 0) {
			close(go[1]);
			storm_child(kvw_listener_uri(l), n / N_PROCS, n, go[0], rep[1]);
		}
	close(go[0]);
	close(rep[1]);
	usleep(300000); /* every child has its context */
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
		ready += r.ready;
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
		    driver, n, N_PROCS, ready, failed, accepted, (unsigned long long)worst,
		    (unsigned long long)t_all);
	cr_expect_eq(ready, n);
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
