/* SPDX-License-Identifier: MIT */
/* Helpers of the dir suite (see dirt.h). */
#include "dirt.h"
#include "kvwt.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

struct etcd etcd;

void up(void)
{
	if (!etcd_installed())
		cr_skip_test("etcd/etcdctl not installed (apt-get install etcd-server etcd-client)");
	cr_assert(etcd_start(&etcd), "etcd did not start; see %s/log", etcd.dir);
}

void down(void)
{
	etcd_stop(&etcd);
}

kvw_dir *open_dir(uint32_t timeout_ms, uint32_t ttl_s)
{
	kvw_dir_opts o = {.size = sizeof(o), .timeout_ms = timeout_ms, .lease_ttl_s = ttl_s};
	kvw_dir *d = NULL;
	cr_assert_eq(kvw_dir_open(etcd.url, &o, &d), KVW_OK, "%s", kvw_dir_last_error(NULL));
	return d;
}

kvw_dir_entry mk(const char *pool, kvw_dir_role role, const char *name, uint64_t cap)
{
	kvw_dir_entry e = {.size = sizeof(e), .role = role, .n_uris = 2, .capacity = cap};
	snprintf(e.pool, sizeof(e.pool), "%s", pool);
	snprintf(e.name, sizeof(e.name), "%s", name);
	snprintf(e.uris[0], sizeof(e.uris[0]), "tcp://10.0.0.1:7471");
	snprintf(e.uris[1], sizeof(e.uris[1]), "rdma://10.0.1.1:7471");
	snprintf(e.geometry, sizeof(e.geometry), "llama3-8b layers=32 block=64K blocks=4096");
	return e;
}

/* Drives d until an event of type t for name comes (or ms pass). */
bool wait_event(kvw_dir *d, kvw_dir_event_type t, const char *name, int ms, kvw_dir_event *out)
{
	uint64_t end = kvwt_now_ms() + ms;
	while (kvwt_now_ms() < end) {
		kvw_dir_event ev = {.size = sizeof(ev)};
		if (kvw_dir_next(d, &ev) == KVW_OK) {
			if (ev.type == t && !strcmp(ev.entry.name, name)) {
				if (out)
					*out = ev;
				return true;
			}
			continue;
		}
		kvw_dir_wait(d, 50);
	}
	return false;
}

