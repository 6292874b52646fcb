/* SPDX-License-Identifier: MIT */
/* The directory when etcd misbehaves: frozen (SIGSTOP) and stopped mid-run,
 * unreachable or not etcd at all, and hostile values in the directory. */
#include "dirt.h"
#include "kvwt.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(dir_fail, .timeout = 120);

/* Each call gets timeout_ms; allow 1 s of scheduling on a loaded host. */
#define SLACK_MS 1000

static uint64_t worst_progress_ms(kvw_dir *const *d, int n, struct kvwt_pair *pair, int ms)
{
	uint64_t worst = 0, end = kvwt_now_ms() + ms, rtt;
	while (kvwt_now_ms() < end) {
		for (int i = 0; i < n; i++) {
			uint64_t t = kvwt_now_ms();
			kvw_dir_progress(d[i]);
			worst = kvwt_now_ms() - t > worst ? kvwt_now_ms() - t : worst;
		}
		cr_assert_eq(kvw_ep_ping(pair->client, 2000, &rtt), KVW_OK,
			     "a kvwire endpoint stalled while etcd was away: %s", kvw_ctx_last_error(pair->ctx));
		usleep(20000);
	}
	return worst;
}

/* A blocking call fails within timeout_ms + slack, with status want and a
 * sentence naming the endpoint. */
static void expect_fails(kvw_dir *d, kvw_status want, const char *what)
{
	kvw_dir_entry got = {.size = sizeof(got)}, e = mk("pool", KVW_DIR_DECODE, "late", 1);
	kvw_dir_entry list[4] = {{.size = sizeof(kvw_dir_entry)}};
	size_t n, bad;
	uint64_t t0 = kvwt_now_ms();
	kvw_status st = kvw_dir_resolve(d, "pool", "d0", &got);
	uint64_t ms = kvwt_now_ms() - t0;
	cr_log_info("%s: resolve failed after %llu ms: %s", what, (unsigned long long)ms, kvw_dir_last_error(d));
	cr_expect_eq(st, want, "%s: resolve gave %s", what, kvw_strerror(st));
	cr_expect_leq(ms, 500 + SLACK_MS, "%s: resolve took %llu ms", what, (unsigned long long)ms);
	cr_expect_not_null(strstr(kvw_dir_last_error(d), etcd.url), "%s", kvw_dir_last_error(d));
	cr_expect_not_null(strstr(kvw_dir_last_error(d), "check that etcd runs"), "%s", kvw_dir_last_error(d));
	t0 = kvwt_now_ms();
	cr_expect_eq(kvw_dir_list(d, "pool", KVW_DIR_ANY, list, 4, &n, &bad), want);
	cr_expect_eq(kvw_dir_publish(d, &e), want);
	cr_expect_leq(kvwt_now_ms() - t0, 2 * 500 + SLACK_MS);
}

/* etcd frozen, then stopped, mid-run: every call fails with a sentence
 * within its 500 ms timeout, kvw_dir_progress never waits, a kvwire tcp
 * endpoint of the same thread keeps answering pings; when etcd is back the
 * calls work, the lease is still held (the entry is there) and the watch
 * reconnects (a new entry is seen joining). */
Test(dir_fail, etcd_frozen_and_stopped_mid_run, .init = up, .fini = down)
{
	kvw_dir *pub = open_dir(500, 4), *w = open_dir(500, 4);
	kvw_dir *ds[] = {pub, w};
	kvw_dir_entry e = mk("pool", KVW_DIR_DECODE, "d0", 1), got = {.size = sizeof(got)};
	struct kvwt_pair pair;

	setenv("KVW_TEST_DRIVER", "tcp", 1);
	kvwt_pair_open(kvwt_ctx(NULL), &pair);
	cr_assert_eq(kvw_dir_watch(w, "pool", KVW_DIR_ANY), KVW_OK);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK, "%s", kvw_dir_last_error(pub));
	cr_assert(wait_event(w, KVW_DIR_JOIN, "d0", 5000, NULL));

	kill(etcd.pid, SIGSTOP);
	cr_log_info("etcd frozen: longest kvw_dir_progress %llu ms",
		    (unsigned long long)worst_progress_ms(ds, 2, &pair, 1500));
	expect_fails(pub, KVW_ERR_TIMEDOUT, "etcd frozen");
	kill(etcd.pid, SIGCONT);
	cr_expect_eq(kvw_dir_resolve(pub, "pool", "d0", &got), KVW_OK, "%s", kvw_dir_last_error(pub));

	etcd_kill(&etcd);
	uint64_t worst = worst_progress_ms(ds, 2, &pair, 1500);
	cr_log_info("etcd stopped: longest kvw_dir_progress %llu ms", (unsigned long long)worst);
	cr_expect_leq(worst, 500, "kvw_dir_progress waited %llu ms", (unsigned long long)worst);
	cr_expect_lt(kvw_dir_progress(pub), 0, "the lost keepalive was not reported");
	cr_expect_not_null(strstr(kvw_dir_last_error(pub), etcd.url), "%s", kvw_dir_last_error(pub));
	expect_fails(pub, KVW_ERR_CONNREFUSED, "etcd stopped");

	cr_assert(etcd_restart(&etcd), "etcd did not come back");
	worst_progress_ms(ds, 2, &pair, 2000);
	cr_expect_eq(kvw_dir_progress(pub), KVW_OK, "%s", kvw_dir_last_error(pub));
	cr_expect_eq(kvw_dir_resolve(w, "pool", "d0", &got), KVW_OK, "the entry was lost: %s",
		     kvw_dir_last_error(w));
	e = mk("pool", KVW_DIR_DECODE, "d1", 1);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK, "%s", kvw_dir_last_error(pub));
	cr_expect(wait_event(w, KVW_DIR_JOIN, "d1", 5000, NULL), "the watch did not come back: %s",
		  kvw_dir_last_error(w));
	kvw_dir_close(pub);
	kvw_dir_close(w);
	kvw_ctx_destroy(pair.ctx);
}

/* Opening fails with a sentence: bad endpoint text, nobody listening, a
 * listener that never answers; a dead first endpoint fails over. */
Test(dir_fail, open_unreachable_and_failover, .init = up, .fini = down)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	kvw_dir_opts o = {.size = sizeof(o), .timeout_ms = 500};
	kvw_dir *d = NULL;
	char eps[256];
	int mute = socket(AF_INET, SOCK_STREAM, 0), dead = socket(AF_INET, SOCK_STREAM, 0);
	int mport, dport;

	cr_assert_eq(bind(mute, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(mute, 8), 0);
	getsockname(mute, (struct sockaddr *)&a, &al);
	mport = ntohs(a.sin_port);
	a.sin_port = 0;
	cr_assert_eq(bind(dead, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(dead, (struct sockaddr *)&a, &al);
	dport = ntohs(a.sin_port);
	close(dead); /* nobody listens there any more */

	cr_expect_eq(kvw_dir_open("etcd:2379", &o, &d), KVW_ERR_INVALID);
	cr_expect_not_null(strstr(kvw_dir_last_error(NULL), "http://"), "%s", kvw_dir_last_error(NULL));
	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", dport);
	cr_expect_eq(kvw_dir_open(eps, &o, &d), KVW_ERR_CONNREFUSED);
	cr_expect_not_null(strstr(kvw_dir_last_error(NULL), eps), "%s", kvw_dir_last_error(NULL));
	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", mport);
	uint64_t t0 = kvwt_now_ms();
	cr_expect_eq(kvw_dir_open(eps, &o, &d), KVW_ERR_TIMEDOUT);
	cr_expect_leq(kvwt_now_ms() - t0, 500 + SLACK_MS);
	cr_log_info("a listener that never answers: %s", kvw_dir_last_error(NULL));
	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d,%s", dport, etcd.url);
	cr_assert_eq(kvw_dir_open(eps, &o, &d), KVW_OK, "no failover: %s", kvw_dir_last_error(NULL));
	kvw_dir_entry e = mk("pool", KVW_DIR_DECODE, "d0", 1), got = {.size = sizeof(got)};
	cr_expect_eq(kvw_dir_publish(d, &e), KVW_OK, "%s", kvw_dir_last_error(d));
	cr_expect_eq(kvw_dir_resolve(d, "pool", "d0", &got), KVW_OK, "%s", kvw_dir_last_error(d));
	kvw_dir_close(d);
	close(mute);
}

/* Values a kvwire publisher never writes: each is refused with a sentence
 * naming its key; list skips them and counts them; the watch reports them
 * as KVW_ERR_PROTO joins; nothing crashes. */
static const char *const hostile[][2] = {
	{"notjson", "this is not json"},
	{"array", "[1,2,3]"},
	{"nameint", "{\"v\":1,\"name\":5,\"role\":\"decode\",\"uris\":{\"tcp\":\"tcp://a:1\"}}"},
	{"othername", "{\"v\":1,\"name\":\"someone\",\"role\":\"decode\",\"uris\":{\"tcp\":\"tcp://a:1\"}}"},
	{"wrongrole", "{\"v\":1,\"name\":\"wrongrole\",\"role\":\"prefill\",\"uris\":{\"tcp\":\"tcp://a:1\"}}"},
	{"capstr", "{\"v\":1,\"name\":\"capstr\",\"role\":\"decode\",\"uris\":{\"tcp\":\"tcp://a:1\"},\"capacity\":\"lots\"}"},
	{"capneg", "{\"v\":1,\"name\":\"capneg\",\"role\":\"decode\",\"uris\":{\"tcp\":\"tcp://a:1\"},\"capacity\":-1}"},
	{"scheme", "{\"v\":1,\"name\":\"scheme\",\"role\":\"decode\",\"uris\":{\"tcp\":\"rdma://a:1\"}}"},
	{"nouris", "{\"v\":1,\"name\":\"nouris\",\"role\":\"decode\",\"uris\":{}}"},
	{"ctrl", "{\"v\":1,\"name\":\"ctrl\",\"role\":\"decode\",\"uris\":{\"tcp\":\"tcp://a:1\"},\"geometry\":\"\\u001b[2J\"}"},
	{"v2", "{\"v\":2,\"name\":\"v2\",\"role\":\"decode\",\"uris\":{\"tcp\":\"tcp://a:1\"}}"},
	{"dup", "{\"v\":1,\"name\":\"dup\",\"name\":\"dup\",\"role\":\"decode\",\"uris\":{\"tcp\":\"tcp://a:1\"}}"},
};

static void put_hostile(void)
{
	char key[128], *big;
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		snprintf(key, sizeof(key), "/kvwire/pool/decode/%s", hostile[i][0]);
		cr_assert(etcd_put_raw(&etcd, key, hostile[i][1], strlen(hostile[i][1])), "etcdctl put %s", key);
	}
	big = malloc(1 << 20); /* 1 MiB value */
	memset(big, '[', 1 << 20);
	cr_assert(etcd_put_raw(&etcd, "/kvwire/pool/decode/huge", big, 1 << 20));
	memset(big, '[', 200000); /* deep nesting, under the size bound */
	cr_assert(etcd_put_raw(&etcd, "/kvwire/pool/decode/deep", big, 60000));
	free(big);
	cr_assert(etcd_put_raw(&etcd, "/kvwire/pool/decode/bad\x01key", "{}", 2));
	cr_assert(etcd_put_raw(&etcd, "/kvwire/pool/decode/a/b/c", "{}", 2));
}

#define N_HOSTILE (sizeof(hostile) / sizeof(hostile[0]) + 4)

Test(dir_fail, hostile_values, .init = up, .fini = down)
{
	kvw_dir *d = open_dir(2000, 10), *w = open_dir(2000, 10);
	kvw_dir_entry e = mk("pool", KVW_DIR_DECODE, "good", 1), got = {.size = sizeof(got)};
	static kvw_dir_entry list[64] = {{.size = sizeof(kvw_dir_entry)}};
	size_t n = 0, bad = 0, proto = 0;
	kvw_dir_event ev = {.size = sizeof(ev)};

	cr_assert_eq(kvw_dir_watch(w, "pool", KVW_DIR_ANY), KVW_OK);
	cr_assert_eq(kvw_dir_publish(d, &e), KVW_OK);
	put_hostile();
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		cr_expect_eq(kvw_dir_resolve(d, "pool", hostile[i][0], &got), KVW_ERR_PROTO, "%s", hostile[i][0]);
		cr_expect_not_null(strstr(kvw_dir_last_error(d), hostile[i][0]), "%s", kvw_dir_last_error(d));
		cr_expect_not_null(strstr(kvw_dir_last_error(d), "etcdctl del"), "%s", kvw_dir_last_error(d));
		cr_log_info("%s: %s", hostile[i][0], kvw_dir_last_error(d));
	}
	cr_expect_eq(kvw_dir_resolve(d, "pool", "huge", &got), KVW_ERR_PROTO);
	cr_log_info("huge: %s", kvw_dir_last_error(d));
	cr_expect_eq(kvw_dir_resolve(d, "pool", "deep", &got), KVW_ERR_PROTO);
	cr_log_info("deep: %s", kvw_dir_last_error(d));
	cr_assert_eq(kvw_dir_list(d, "pool", KVW_DIR_ANY, list, 64, &n, &bad), KVW_OK, "%s", kvw_dir_last_error(d));
	cr_expect_eq(n, 1u);
	cr_expect_str_eq(list[0].name, "good");
	cr_expect_eq(bad, N_HOSTILE, "%zu skipped: %s", bad, kvw_dir_last_error(d));
	cr_log_info("list: %s", kvw_dir_last_error(d));
	for (uint64_t end = kvwt_now_ms() + 5000; kvwt_now_ms() < end && proto < N_HOSTILE - 2;) {
		if (kvw_dir_next(w, &ev) == KVW_OK)
			proto += ev.type == KVW_DIR_JOIN && ev.status == KVW_ERR_PROTO;
		else
			kvw_dir_wait(w, 20);
	}
	/* the two keys that are not <pool>/<role>/<name> are not entries at all */
	cr_expect_eq(proto, N_HOSTILE - 2, "the watch reported %zu bad joins", proto);
	kvw_dir_close(d);
	kvw_dir_close(w);
}

/* etcd with auth enabled: no user or a wrong password is KVW_ERR_AUTH with
 * a sentence that names the fix; the right one publishes and resolves; an
 * auth turned off and on again does not break an open directory. */
Test(dir_fail, etcd_auth, .init = up, .fini = down)
{
	kvw_dir_opts o = {.size = sizeof(o), .timeout_ms = 2000, .user = "root", .password = "rootpw"};
	kvw_dir *d = NULL;
	kvw_dir_entry e = mk("pool", KVW_DIR_DECODE, "d0", 1), got = {.size = sizeof(got)};

	cr_assert_eq(etcd_ctl(&etcd, "user add root:rootpw"), 0);
	cr_assert_eq(etcd_ctl(&etcd, "auth enable"), 0);
	cr_expect_eq(kvw_dir_open(etcd.url, NULL, &d), KVW_ERR_AUTH);
	cr_expect_not_null(strstr(kvw_dir_last_error(NULL), "user and password"), "%s", kvw_dir_last_error(NULL));
	o.password = "wrong";
	cr_expect_eq(kvw_dir_open(etcd.url, &o, &d), KVW_ERR_AUTH);
	cr_log_info("wrong password: %s", kvw_dir_last_error(NULL));
	o.password = "rootpw";
	cr_assert_eq(kvw_dir_open(etcd.url, &o, &d), KVW_OK, "%s", kvw_dir_last_error(NULL));
	cr_expect_eq(kvw_dir_publish(d, &e), KVW_OK, "%s", kvw_dir_last_error(d));
	cr_expect_eq(kvw_dir_resolve(d, "pool", "d0", &got), KVW_OK, "%s", kvw_dir_last_error(d));
	/* calls keep working after auth is disabled and enabled again (a token
	 * etcd no longer knows is renewed once per call by dir_rpc) */
	cr_assert_eq(etcd_ctl(&etcd, "--user root:rootpw auth disable"), 0);
	cr_assert_eq(etcd_ctl(&etcd, "auth enable"), 0);
	cr_expect_eq(kvw_dir_resolve(d, "pool", "d0", &got), KVW_OK, "token not renewed: %s", kvw_dir_last_error(d));
	kvw_dir_close(d);
}
