/* SPDX-License-Identifier: MIT */
/* kvwire-bench fleet --join: a real etcd (tests/dir/etcd.c, its own loopback
 * port and temporary data dir), 2 prefill + 2 decode fleet-node processes
 * with 2 s leases, and the router taking them out of the directory:
 * every request verified over shm and tcp, twice on the same nodes (each
 * goes back to waiting for a router); a decode SIGKILLed mid-run (by the
 * router, and from outside) leaves the directory within its lease, its requests end PEER_DEAD and later ones go
 * to the survivor; etcd stopped after the join: the run still completes and
 * says the directory stopped answering. Skipped without etcd. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "etcd.h"
#include "kvbt_json.h"
#include "kvbt_run.h"

#define SHAPE "--model llama3-8b --layers 4"
#define NODES 4

static struct etcd etcd;
static pid_t node[NODES];
static char logdir[64];

static void up(void)
{
	if (!etcd_installed())
		cr_skip_test("etcd/etcdctl not installed (apt-get install etcd-server etcd-client; "
			     "scripts/install-deps.sh does)");
	cr_assert(etcd_start(&etcd), "etcd did not start; see %s/log", etcd.dir);
	snprintf(logdir, sizeof(logdir), "%s", etcd.dir);
}

/* SIGTERM: a node revokes its lease and removes its sockets (with etcd
 * gone it gives up on the revoke after its 2 s timeout). */
static void down(void)
{
	for (int i = 0; i < NODES; i++)
		if (node[i] > 0)
			kill(node[i], SIGTERM);
	for (int i = 0; i < NODES; i++) {
		for (int t = 0; node[i] > 0 && t < 100 && waitpid(node[i], NULL, WNOHANG) == 0; t++)
			usleep(50000);
		if (node[i] > 0 && waitpid(node[i], NULL, WNOHANG) == 0) {
			kill(node[i], SIGKILL);
			waitpid(node[i], NULL, 0);
		}
		char f[64]; /* what a killed node could not remove (fleet_node.c's names) */
		snprintf(f, sizeof(f), "/tmp/kvwire-node-%d.ctl", (int)node[i]);
		if (node[i] > 0)
			unlink(f);
		snprintf(f, sizeof(f), "/tmp/kvwire-node-%d.sock", (int)node[i]);
		if (node[i] > 0)
			unlink(f);
		node[i] = 0;
	}
	etcd_stop(&etcd);
}

static const char *bin(void)
{
	const char *b = getenv("KVB_BIN");
	cr_assert(b && getenv("KVB_SRC"), "KVB_BIN and KVB_SRC must be set (meson sets them)");
	return b;
}

/* Forks `kvwire-bench fleet-node` (output in the etcd dir's NAME.log). */
static pid_t start_node(const char *driver, const char *role, const char *name)
{
	char log[128];
	snprintf(log, sizeof(log), "%s/%s.log", logdir, name);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no node behind */
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(bin(), bin(), "fleet-node", "--role", role, "--dir", etcd.url, "--pool", "pool", "--name", name,
		      "--driver", driver, "--model", "llama3-8b", "--layers", "4", "--tokens", "2304", "--ttl", "2",
		      (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void start_fleet(const char *driver)
{
	node[0] = start_node(driver, "prefill", "pre-a");
	node[1] = start_node(driver, "prefill", "pre-b");
	node[2] = start_node(driver, "decode", "dec-a");
	node[3] = start_node(driver, "decode", "dec-b");
}

/* The router with args (it waits for the nodes' entries itself); its JSON. */
static json_t *join_run(const char *driver, const char *args)
{
	char cmd[2048], *out;
	snprintf(cmd, sizeof(cmd), "cd %s && timeout 60 %s fleet --join --dir %s --pool pool --driver %s "
		 "--prefill 2 --decode 2 --timeout-ms 10000 %s " SHAPE " --json", getenv("KVB_SRC"), bin(), etcd.url, driver, args);
	int rc = kvbt_run(cmd, &out);
	cr_assert_eq(rc, 0, "%s exited %d\n%s", cmd, rc, out);
	json_error_t e;
	json_t *j = json_loads(out, 0, &e);
	cr_assert_not_null(j, "not one JSON object (%s): %s", e.text, out);
	free(out);
	return j;
}

/* Bytes per pair under the nodes' names: all four pairs, summing up. */
static void assert_peers(json_t *j)
{
	static const char *const pairs[4][2] = {
		{"pre-a", "dec-a"}, {"pre-b", "dec-a"}, {"pre-a", "dec-b"}, {"pre-b", "dec-b"},
	};
	json_t *e;
	size_t i;
	json_int_t sum = 0;
	bool seen[4] = {false};
	json_array_foreach(json_object_get(j, "peers"), i, e) {
		for (int p = 0; p < 4; p++)
			if (!strcmp(gets(e, "prefill_name"), pairs[p][0]) && !strcmp(gets(e, "decode_name"), pairs[p][1]))
				seen[p] = true;
		sum += geti(e, "bytes");
	}
	for (int p = 0; p < 4; p++)
		cr_assert(seen[p], "no pair %s -> %s in \"peers\"", pairs[p][0], pairs[p][1]);
	cr_assert_eq(sum, geti(j, "bytes"));
}

static void assert_clean(json_t *j, json_int_t n)
{
	cr_assert_eq(geti(j, "requests"), n);
	cr_assert_eq(geti(j, "ok"), n, "ok %lld of %lld: %s", (long long)geti(j, "ok"), (long long)n,
		     json_dumps(json_object_get(j, "failures"), 0));
	cr_assert_eq(geti(j, "failed"), 0);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert_eq(geti(j, "bytes"), geti(j, "offered_bytes"));
	cr_assert_str_eq(gets(j, "joined"), "pool");
	assert_peers(j);
	json_t *e;
	size_t i;
	json_array_foreach(json_object_get(j, "peers"), i, e)
		cr_assert_gt(geti(e, "requests"), 0, "pair %zu got no request", i);
}

/* (a) The shipped trace, verified, bytes by name; a second router on the
 * same nodes (they went back to waiting). */
static void clean_case(const char *driver)
{
	start_fleet(driver);
	json_t *j = join_run(driver, "--trace bench/traces/mooncake-synthetic.jsonl");
	assert_clean(j, 48);
	cr_assert_eq(json_array_size(json_object_get(j, "left")), 0);
	cr_assert_null(json_object_get(j, "warning"));
	json_decref(j);
	j = join_run(driver, "--rate 100 --mix 64:0.5,700:0.5 --requests 40");
	assert_clean(j, 40);
	json_decref(j);
}

Test(fleet_join, shm_2x2, .init = up, .fini = down, .timeout = 60) { clean_case("shm"); }
Test(fleet_join, tcp_2x2, .init = up, .fini = down, .timeout = 60) { clean_case("tcp"); }

/* (b) dec-b (decode 1) SIGKILLed by the router when request 20 arrives:
 * its entry leaves within the 2 s lease (+2 s of etcd's expiry check, as in
 * the dir suite), what it held ends PEER_DEAD, later requests go to dec-a. */
Test(fleet_join, tcp_decode_killed, .init = up, .fini = down, .timeout = 60)
{
	start_fleet("tcp");
	json_t *j = join_run("tcp", "--trace bench/traces/mooncake-synthetic.jsonl --time-scale 0.5 "
			     "--kill-decode 1@20");
	json_t *fail = json_object_get(j, "failures"), *left = json_object_get(j, "left");
	json_t *d0 = json_array_get(json_object_get(j, "decodes"), 0);
	json_t *d1 = json_array_get(json_object_get(j, "decodes"), 1);
	json_int_t dead = json_integer_value(json_object_get(fail, "KVW_ERR_PEER_DEAD"));
	cr_assert_str_eq(gets(d1, "name"), "dec-b");
	cr_assert_gt(dead, 0, "no request ended PEER_DEAD");
	cr_assert_eq(json_object_size(fail), 1, "other causes than PEER_DEAD: %s", json_dumps(fail, 0));
	cr_assert_eq(geti(j, "unexpected_failures"), 0);
	cr_assert_eq(geti(j, "ok") + dead, 48);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert(json_is_true(json_object_get(d1, "dead")));
	cr_assert_eq(geti(d1, "failed"), dead);
	cr_assert_lt(geti(d1, "last_request"), 28, "the dead node still got request %lld",
		     (long long)geti(d1, "last_request"));
	cr_assert_eq(geti(d0, "last_request"), 47, "the last request did not go to the survivor");
	cr_assert_eq(geti(d0, "failed"), 0);
	cr_assert_eq(json_array_size(left), 1, "left: %s", json_dumps(left, 0));
	json_t *l = json_array_get(left, 0);
	cr_assert_str_eq(gets(l, "name"), "dec-b");
	double ms = json_real_value(json_object_get(l, "ms_from_kill"));
	cr_log_info("dec-b (lease 2 s) left the directory %.0f ms after the kill", ms);
	cr_assert_gt(ms, 0, "no time from the kill to the leave");
	cr_assert_leq(ms, 2000 + 2000, "left %.0f ms after the kill", ms);
	cr_assert_neq(etcd_ctl(&etcd, "get /kvwire/pool/decode/dec-b --print-value-only | grep -q ."), 0,
		      "dec-b's entry is still in etcd");
	json_decref(j);
}

/* The router in the background (output in the etcd dir's router.out/.err). */
static pid_t router_start(const char *driver, const char *args)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "cd %s && exec timeout 60 %s fleet --join --dir %s --pool pool --driver %s "
		 "--prefill 2 --decode 2 --timeout-ms 10000 %s " SHAPE " --json >%s/router.out 2>%s/router.err",
		 getenv("KVB_SRC"), bin(), etcd.url, driver, args, logdir, logdir);
	pid_t r = fork();
	cr_assert_geq(r, 0);
	if (r == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return r;
}

/* Waits until the router says it joined the four nodes (at most 6 s). */
static void router_joined(void)
{
	char err[128], line[512];
	bool joined = false;
	snprintf(err, sizeof(err), "%s/router.err", logdir);
	for (int t = 0; t < 300 && !joined; t++) {
		FILE *f = fopen(err, "r");
		while (f && fgets(line, sizeof(line), f))
			joined |= strstr(line, "joined 2 prefill and 2 decode") != NULL;
		if (f)
			fclose(f);
		if (!joined)
			usleep(20000);
	}
	cr_assert(joined, "the router did not join within 6 s");
}

/* Its exit status 0 and its JSON. */
static json_t *router_end(pid_t r)
{
	char cmd[256], *out = NULL;
	int st;
	cr_assert_eq(waitpid(r, &st, 0), r);
	snprintf(cmd, sizeof(cmd), "cat %s/router.out", logdir);
	kvbt_run(cmd, &out);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		char *err = NULL;
		snprintf(cmd, sizeof(cmd), "cat %s/router.err", logdir);
		kvbt_run(cmd, &err);
		cr_assert_fail("the router exited %d:\n%s\n%s", st, out, err);
	}
	json_error_t e;
	json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, &e);
	cr_assert_not_null(j, "not one JSON object (%s): %s", e.text, out);
	free(out);
	return j;
}

/* (b') dec-b SIGKILLed by the test, not the router, 500 ms into a 2 s
 * stream: its socket closes, its entry leaves within the lease, its
 * requests end PEER_DEAD (counted as failed_node_gone, not unexpected), the
 * rest goes to dec-a. */
Test(fleet_join, shm_decode_killed_outside, .init = up, .fini = down, .timeout = 60)
{
	start_fleet("shm");
	pid_t r = router_start("shm", "--rate 40 --requests 80 --mix 64:0.5,700:0.5");
	router_joined();
	usleep(500000);
	kill(node[3], SIGKILL);
	json_t *j = router_end(r), *fail = json_object_get(j, "failures"), *left = json_object_get(j, "left");
	json_t *d0 = json_array_get(json_object_get(j, "decodes"), 0);
	json_t *d1 = json_array_get(json_object_get(j, "decodes"), 1);
	json_int_t dead = json_integer_value(json_object_get(fail, "KVW_ERR_PEER_DEAD"));
	cr_assert_eq(json_object_size(fail), dead ? 1 : 0, "other causes than PEER_DEAD: %s", json_dumps(fail, 0));
	cr_assert_eq(geti(j, "unexpected_failures"), 0);
	cr_assert_eq(geti(j, "failed_node_gone"), geti(j, "failed"));
	cr_assert_eq(geti(j, "ok") + geti(j, "failed"), 80);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert(json_is_true(json_object_get(d1, "dead")));
	cr_assert_eq(geti(d0, "failed"), 0);
	cr_assert_eq(geti(d0, "last_request"), 79, "the last request did not go to the survivor");
	cr_assert_lt(geti(d1, "last_request"), 79);
	cr_assert_eq(json_array_size(left), 1, "left: %s", json_dumps(left, 0));
	json_t *l = json_array_get(left, 0);
	cr_assert_str_eq(gets(l, "name"), "dec-b");
	double ms = json_real_value(json_object_get(l, "ms_from_socket_close"));
	cr_assert_gt(ms, 0);
	cr_assert_leq(ms, 2000 + 2000, "left %.0f ms after its socket closed", ms);
	json_decref(j);
}

/* (c) etcd stopped as soon as the router joined: the 2 s stream completes,
 * every request verified, and the report warns that the directory went. */
Test(fleet_join, shm_etcd_stopped, .init = up, .fini = down, .timeout = 60)
{
	start_fleet("shm");
	pid_t r = router_start("shm", "--rate 50 --requests 100 --mix 64:0.5,700:0.5");
	router_joined();
	etcd_kill(&etcd);
	json_t *j = router_end(r);
	assert_clean(j, 100);
	cr_assert(strstr(gets(j, "warning"), "directory stopped answering"), "warning: %s", gets(j, "warning"));
	json_decref(j);
}

/* No etcd where --dir points: both end at once with a sentence naming it. */
static void unreachable(const char *args)
{
	char cmd[1024], *out;
	snprintf(cmd, sizeof(cmd), "cd %s && timeout 30 %s %s --driver shm --dir http://127.0.0.1:1 --pool p "
		 "2>&1", getenv("KVB_SRC"), bin(), args);
	int rc = kvbt_run(cmd, &out);
	cr_assert(rc != 0 && rc != 124, "%s exited %d\n%s", cmd, rc, out);
	cr_assert(strstr(out, "etcd at http://127.0.0.1:1 could not be reached"), "%s:\n%s", cmd, out);
	free(out);
}

Test(fleet_join, etcd_unreachable)
{
	unreachable("fleet --join --prefill 1 --decode 1 --trace bench/traces/mooncake-synthetic.jsonl");
	unreachable("fleet-node --role decode --name n");
}
