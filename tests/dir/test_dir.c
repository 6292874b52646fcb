/* SPDX-License-Identifier: MIT */
/* The fleet directory (libkvwire-dir) against a real etcd started by each
 * test on its own loopback port: publish/resolve/list/watch, lease expiry
 * of a SIGKILLed publisher, etcd stopped and frozen mid-run (calls fail
 * with a sentence within their timeout, kvwire endpoints keep working, all
 * recovers when etcd returns), hostile values. Skipped without etcd. */
#include "dirt.h"
#include "kvwire/dir.h"
#include "kvwt.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(dir, .timeout = 120);

Test(dir, publish_resolve_list, .init = up, .fini = down)
{
	kvw_dir *pub = open_dir(2000, 10), *cli = open_dir(2000, 10);
	kvw_dir_entry e = mk("llama", KVW_DIR_DECODE, "decode0", 4096), got = {.size = sizeof(got)};
	kvw_dir_entry list[8] = {{.size = sizeof(kvw_dir_entry)}};
	size_t n, bad;

	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK, "%s", kvw_dir_last_error(pub));
	e = mk("llama", KVW_DIR_DECODE, "decode1", 100);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);
	e = mk("llama", KVW_DIR_PREFILL, "prefill0", 0);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);
	e = mk("other", KVW_DIR_DECODE, "x", 1);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);

	cr_assert_eq(kvw_dir_resolve(cli, "llama", "decode0", &got), KVW_OK, "%s", kvw_dir_last_error(cli));
	cr_expect_str_eq(got.pool, "llama");
	cr_expect_eq(got.role, KVW_DIR_DECODE);
	cr_expect_eq(got.capacity, 4096u);
	cr_expect_eq(got.n_uris, 2u);
	cr_expect(!strcmp(got.uris[0], "tcp://10.0.0.1:7471") || !strcmp(got.uris[1], "tcp://10.0.0.1:7471"));
	cr_expect_str_eq(got.geometry, "llama3-8b layers=32 block=64K blocks=4096");
	cr_expect_gt(got.revision, 0);

	cr_assert_eq(kvw_dir_list(cli, "llama", KVW_DIR_DECODE, list, 8, &n, &bad), KVW_OK);
	cr_expect_eq(n, 2u);
	cr_assert_eq(kvw_dir_list(cli, "llama", KVW_DIR_ANY, list, 8, &n, &bad), KVW_OK);
	cr_expect_eq(n, 3u);
	cr_assert_eq(kvw_dir_list(cli, NULL, KVW_DIR_ANY, list, 8, &n, &bad), KVW_OK);
	cr_expect_eq(n, 4u);
	cr_expect_eq(bad, 0u);
	cr_expect_eq(kvw_dir_list(cli, NULL, KVW_DIR_ANY, list, 2, &n, &bad), KVW_ERR_NOMEM);

	/* an update replaces the value */
	e = mk("llama", KVW_DIR_DECODE, "decode0", 17);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);
	cr_assert_eq(kvw_dir_resolve(cli, "llama", "decode0", &got), KVW_OK);
	cr_expect_eq(got.capacity, 17u);

	cr_expect_eq(kvw_dir_resolve(cli, "llama", "nobody", &got), KVW_ERR_NOT_FOUND);
	cr_expect_not_null(strstr(kvw_dir_last_error(cli), "kvwire pools"), "%s", kvw_dir_last_error(cli));
	cr_expect_eq(kvw_dir_resolve(cli, "llama", "../etc", &got), KVW_ERR_INVALID);
	e = mk("llama", KVW_DIR_DECODE, "a/b", 1);
	cr_expect_eq(kvw_dir_publish(pub, &e), KVW_ERR_INVALID);
	e.size = 0;
	cr_expect_eq(kvw_dir_publish(pub, &e), KVW_ERR_INVALID);

	cr_assert_eq(kvw_dir_unpublish(pub, "llama", KVW_DIR_DECODE, "decode1"), KVW_OK);
	cr_expect_eq(kvw_dir_resolve(cli, "llama", "decode1", &got), KVW_ERR_NOT_FOUND);
	/* close revokes the lease: everything of pub is gone at once */
	kvw_dir_close(pub);
	cr_assert_eq(kvw_dir_list(cli, NULL, KVW_DIR_ANY, list, 8, &n, &bad), KVW_OK);
	cr_expect_eq(n, 0u);
	kvw_dir_close(cli);
}

Test(dir, watch_join_leave, .init = up, .fini = down)
{
	kvw_dir *pub = open_dir(2000, 10), *w = open_dir(2000, 10);
	kvw_dir_entry e = mk("llama", KVW_DIR_DECODE, "d0", 1);
	kvw_dir_event ev;

	cr_assert_eq(kvw_dir_watch(w, "llama", KVW_DIR_DECODE), KVW_OK);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);
	e = mk("llama", KVW_DIR_PREFILL, "p0", 1); /* other role: not seen */
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);
	e = mk("llama", KVW_DIR_DECODE, "d1", 2);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);
	cr_assert(wait_event(w, KVW_DIR_JOIN, "d0", 5000, &ev), "no JOIN for d0: %s", kvw_dir_last_error(w));
	cr_expect_eq(ev.status, KVW_OK);
	cr_expect_eq(ev.entry.capacity, 1u);
	cr_assert(wait_event(w, KVW_DIR_JOIN, "d1", 5000, NULL));
	cr_assert_eq(kvw_dir_unpublish(pub, "llama", KVW_DIR_DECODE, "d0"), KVW_OK);
	cr_assert(wait_event(w, KVW_DIR_LEAVE, "d0", 5000, &ev));
	cr_expect_eq(ev.entry.role, KVW_DIR_DECODE);
	kvw_dir_close(pub); /* lease revoked: d1 leaves */
	cr_assert(wait_event(w, KVW_DIR_LEAVE, "d1", 5000, NULL));
	ev.size = sizeof(ev);
	for (int i = 0; i < 10; i++)
		cr_expect_neq(kvw_dir_next(w, &ev) == KVW_OK && !strcmp(ev.entry.name, "p0"), 1,
			      "the prefill entry was reported to a decode watch");
	kvw_dir_close(w);
}

/* A publisher with a 2 s lease, alive for 3 TTLs (its keepalive holds the
 * entry), then SIGKILLed: the entry vanishes within the TTL (+2 s of etcd's
 * expiry check) and the watcher sees it leave. */
Test(dir, lease_expires_when_publisher_killed, .init = up, .fini = down)
{
	int p[2];
	char c;
	pid_t pid;
	kvw_dir *w = open_dir(2000, 10);
	kvw_dir_entry got = {.size = sizeof(got)};

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(kvw_dir_watch(w, "pool", KVW_DIR_ANY), KVW_OK);
	if ((pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
		kvw_dir_opts o = {.size = sizeof(o), .timeout_ms = 1000, .lease_ttl_s = 2};
		kvw_dir *d;
		kvw_dir_entry e = mk("pool", KVW_DIR_PREFILL, "victim", 9);
		if (kvw_dir_open(etcd.url, &o, &d) != KVW_OK || kvw_dir_publish(d, &e) != KVW_OK)
			_exit(2);
		if (write(p[1], "k", 1) != 1)
			_exit(3);
		for (;;) {
			kvw_dir_progress(d);
			kvw_dir_wait(d, 100);
		}
	}
	cr_assert_eq(read(p[0], &c, 1), 1, "the publisher failed");
	cr_assert(wait_event(w, KVW_DIR_JOIN, "victim", 5000, NULL), "%s", kvw_dir_last_error(w));
	for (uint64_t end = kvwt_now_ms() + 6000; kvwt_now_ms() < end;) {
		kvw_dir_progress(w);
		kvw_dir_wait(w, 100);
	}
	cr_expect_eq(kvw_dir_resolve(w, "pool", "victim", &got), KVW_OK,
		     "the keepalive did not hold the entry past 3 TTLs: %s", kvw_dir_last_error(w));
	uint64_t t0 = kvwt_now_ms();
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	bool left = wait_event(w, KVW_DIR_LEAVE, "victim", 10000, NULL);
	uint64_t ms = kvwt_now_ms() - t0;
	cr_log_info("SIGKILLed publisher (lease 2 s) left the directory after %llu ms", (unsigned long long)ms);
	cr_expect(left, "the watcher never saw the killed publisher leave");
	cr_expect_leq(ms, 2000 + 2000, "left after %llu ms", (unsigned long long)ms);
	cr_expect_eq(kvw_dir_resolve(w, "pool", "victim", &got), KVW_ERR_NOT_FOUND);
	kvw_dir_close(w);
}

/* The lease revoked behind the publisher's back (as when etcd was away
 * longer than the TTL): the entries leave, the next keepalive learns it,
 * and kvw_dir_progress grants a new lease and publishes them again. */
Test(dir, lost_lease_is_republished, .init = up, .fini = down)
{
	kvw_dir *pub = open_dir(2000, 3), *w = open_dir(2000, 10);
	kvw_dir_entry e = mk("pool", KVW_DIR_DECODE, "d0", 5), got = {.size = sizeof(got)};
	char cmd[512];

	cr_assert_eq(kvw_dir_watch(w, "pool", KVW_DIR_ANY), KVW_OK);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK, "%s", kvw_dir_last_error(pub));
	e = mk("pool", KVW_DIR_PREFILL, "p0", 6);
	cr_assert_eq(kvw_dir_publish(pub, &e), KVW_OK);
	snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints=%s lease list | tail -n +2 | "
		 "xargs -r -n1 env ETCDCTL_API=3 etcdctl --endpoints=%s lease revoke >/dev/null", etcd.url, etcd.url);
	cr_assert_eq(system(cmd), 0);
	cr_assert(wait_event(w, KVW_DIR_LEAVE, "d0", 5000, NULL), "the revoked lease's entry did not leave");
	uint64_t t0 = kvwt_now_ms();
	bool d0 = false, p0 = false, back = false;
	while (!back && kvwt_now_ms() - t0 < 10000) { /* republished one by one, in any order */
		kvw_dir_progress(pub);
		kvw_dir_event ev = {.size = sizeof(ev)};
		if (kvw_dir_next(w, &ev) == KVW_OK && ev.type == KVW_DIR_JOIN) {
			d0 |= !strcmp(ev.entry.name, "d0");
			p0 |= !strcmp(ev.entry.name, "p0");
		} else {
			kvw_dir_wait(pub, 20);
		}
		back = d0 && p0;
	}
	cr_log_info("entries republished %llu ms after their lease was revoked (TTL 3 s)",
		    (unsigned long long)(kvwt_now_ms() - t0));
	cr_expect(back, "not republished:%s%s (%s)", d0 ? "" : " d0", p0 ? "" : " p0", kvw_dir_last_error(pub));
	cr_expect_eq(kvw_dir_resolve(w, "pool", "p0", &got), KVW_OK, "p0 was not republished");
	cr_expect_eq(got.capacity, 6u);
	kvw_dir_close(pub);
	kvw_dir_close(w);
}
