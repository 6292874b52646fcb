/* SPDX-License-Identifier: MIT */
#include "hc.h"
#include "kvwt.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

kvw_ctx *hc_victim(const char *const *cfg, kvw_listener **l)
{
	kvw_ctx *c = kvwt_ctx(cfg);
	char uri[256];

	if (!kvwt_driver()->raw_stream)
		cr_skip_test("driver %s has no stream socket to forge frames on", kvwt_driver()->name);
	kvwt_listen_uri(uri, sizeof(uri));
	cr_assert_eq(kvw_listen(c, uri, l), KVW_OK, "%s", kvw_ctx_last_error(c));
	return c;
}

kvw_ctx *hc_child_victim(int out, unsigned nofile, const char *const *cfg, kvw_listener **l)
{
	struct rlimit rl = {nofile, nofile};
	kvw_ctx *c;
	char uri[256];

	setrlimit(RLIMIT_NOFILE, &rl);
	c = kvwt_ctx(cfg);
	kvwt_listen_uri(uri, sizeof(uri));
	if (kvw_listen(c, uri, l) != KVW_OK)
		_exit(2);
	snprintf(uri, sizeof(uri), "%s", kvw_listener_uri(*l));
	if (write(out, uri, sizeof(uri)) != (ssize_t)sizeof(uri))
		_exit(3);
	return c;
}
