/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <string.h>

#include "kvw_int.h"

TestSuite(uri, .timeout = 10);

Test(uri, tcp_host_port)
{
	struct kvw_uri u;
	cr_assert_eq(kvw_uri_parse("tcp://127.0.0.1:7471", &u), KVW_OK);
	cr_assert_str_eq(u.scheme, "tcp");
	cr_assert_str_eq(u.host, "127.0.0.1");
	cr_assert_eq(u.port, 7471);
	cr_assert_str_eq(u.query, "");
	cr_assert_eq(kvw_uri_parse("rdma://10.0.0.2:0", &u), KVW_OK);
	cr_assert_str_eq(u.scheme, "rdma");
	cr_assert_eq(u.port, 0);
	cr_assert_eq(kvw_uri_parse("tcp://decode-3.example:65535", &u), KVW_OK);
	cr_assert_str_eq(u.host, "decode-3.example");
	cr_assert_eq(u.port, 65535);
}

Test(uri, ipv6_literal)
{
	struct kvw_uri u;
	cr_assert_eq(kvw_uri_parse("tcp://[::1]:9000", &u), KVW_OK);
	cr_assert_str_eq(u.host, "::1");
	cr_assert_eq(u.port, 9000);
}

Test(uri, shm_path)
{
	struct kvw_uri u;
	cr_assert_eq(kvw_uri_parse("shm:///run/kvwire/decode0.sock", &u), KVW_OK);
	cr_assert_str_eq(u.scheme, "shm");
	cr_assert(!strcmp(u.path, "/run/kvwire/decode0.sock") ||
		  !strcmp(u.host, "/run/kvwire/decode0.sock"), "path \"%s\" host \"%s\"", u.path,
		  u.host);
}

Test(uri, query_params)
{
	struct kvw_uri u;
	char v[64];
	cr_assert_eq(kvw_uri_parse("dpdk://10.1.0.2:7000?rails=4&secret=abc&eal=--no-huge", &u),
		     KVW_OK);
	cr_assert_str_eq(u.host, "10.1.0.2");
	cr_assert_eq(u.port, 7000);
	cr_assert(kvw_uri_param(&u, "rails", v, sizeof(v)));
	cr_assert_str_eq(v, "4");
	cr_assert(kvw_uri_param(&u, "secret", v, sizeof(v)));
	cr_assert_str_eq(v, "abc");
	cr_assert(kvw_uri_param(&u, "eal", v, sizeof(v)));
	cr_assert_str_eq(v, "--no-huge");
	cr_assert_not(kvw_uri_param(&u, "rail", v, sizeof(v)), "prefix of a key matched");
	cr_assert_not(kvw_uri_param(&u, "ecret", v, sizeof(v)), "suffix of a key matched");
	cr_assert_not(kvw_uri_param(&u, "missing", v, sizeof(v)));
	cr_assert_not(kvw_uri_param(&u, "secret", v, 3), "value truncated silently");
	cr_assert_eq(kvw_uri_parse("shm:///tmp/x.sock?rails=2", &u), KVW_OK);
	cr_assert(kvw_uri_param(&u, "rails", v, sizeof(v)));
	cr_assert_str_eq(v, "2");
	cr_assert(strcmp(u.path, "/tmp/x.sock") == 0 || strcmp(u.host, "/tmp/x.sock") == 0);
}

Test(uri, malformed_refused)
{
	static const char *const bad[] = {
		"", "tcp", "tcp:/127.0.0.1:1", "://127.0.0.1:1", "tcp://127.0.0.1:",
		"tcp://127.0.0.1:65536", "tcp://127.0.0.1:99999999999", "tcp://127.0.0.1:7a",
		"tcp://127.0.0.1:-1", "tcp://[::1:9000", "averyveryverylongscheme://h:1",
	};
	struct kvw_uri u;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_lt(kvw_uri_parse(bad[i], &u), 0, "\"%s\" accepted", bad[i]);
	cr_assert_lt(kvw_uri_parse(NULL, &u), 0);
}

Test(uri, overlong_parts_refused)
{
	char s[2048];
	struct kvw_uri u;
	memset(s, 0, sizeof(s));
	strcpy(s, "tcp://");
	memset(s + 6, 'h', 300);
	strcat(s, ":1");
	cr_assert_lt(kvw_uri_parse(s, &u), 0, "300-byte host accepted");
	strcpy(s, "shm://");
	s[6] = '/';
	memset(s + 7, 'p', 400);
	s[407] = 0;
	cr_assert_lt(kvw_uri_parse(s, &u), 0, "400-byte path accepted");
	strcpy(s, "tcp://h:1?k=");
	memset(s + 12, 'q', 1000);
	s[1012] = 0;
	cr_assert_lt(kvw_uri_parse(s, &u), 0, "1000-byte query accepted");
}

Test(uri, connect_to_bad_uri_is_invalid)
{
	kvw_ctx *ctx;
	kvw_ep *ep = NULL;
	kvw_listener *l = NULL;
	cr_assert_eq(kvw_ctx_create(NULL, &ctx), KVW_OK);
	cr_assert_lt(kvw_connect(ctx, "tcp://127.0.0.1:notaport", 100, &ep), 0);
	cr_assert_null(ep);
	cr_assert(strlen(kvw_ctx_last_error(ctx)) > 0);
	cr_assert_lt(kvw_connect(ctx, "carrier-pigeon://x:1", 100, &ep), 0);
	cr_assert_null(ep);
	cr_assert_lt(kvw_listen(ctx, "tcp://127.0.0.1:70000", &l), 0);
	cr_assert_null(l);
	kvw_ctx_destroy(ctx);
}
