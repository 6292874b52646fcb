/* SPDX-License-Identifier: MIT */
/* kvwire-bench option parser, perftest compatibility included. */
#include <criterion/criterion.h>
#include <string.h>

#include "bench.h"

static int parse(kvb_opts *o, char *err, int argc, char **argv)
{
	kvb_opts_init(o);
	return kvb_opts_parse(argc, argv, o, err, 256);
}

#define PARSE(o, err, ...) ({ char *a_[] = {"kvwire-bench", __VA_ARGS__}; \
	parse(o, err, (int)(sizeof(a_) / sizeof(a_[0])), a_); })

Test(opts, perftest_compatible_flags)
{
	kvb_opts o;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "bw", "--driver", "shm", "--loopback", "-s", "65536", "-n", "100",
			   "-q", "2", "-b", "--report_gbits", "--out_json", "-d", "rxe0", "-x", "3"), 0, "%s", err);
	cr_assert_eq(o.test, KVB_T_BW);
	cr_assert_eq(o.size, 65536);
	cr_assert_eq(o.iters, 100);
	cr_assert_eq(o.rails, 2);
	cr_assert(o.bidir);
	cr_assert(o.report_gbits);
	cr_assert(o.json);
	cr_assert_str_eq(o.rdma_dev, "rxe0");
	cr_assert_str_eq(o.rdma_gid, "3");
	cr_assert(o.loopback);
}

Test(opts, sweep_duration_and_port)
{
	kvb_opts o;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "-a", "-D", "2.5", "lat", "--connect", "tcp://10.0.0.2:18515", "-p", "9000"),
		     0, "%s", err);
	cr_assert(o.sweep);
	cr_assert_float_eq(o.duration, 2.5, 1e-9);
	cr_assert_eq(o.test, KVB_T_LAT);
	cr_assert_str_eq(o.driver, "tcp", "the driver follows the URI scheme");
	cr_assert_eq(o.ctl_port, 9000);
}

Test(opts, sizes_with_suffixes)
{
	uint64_t v;
	cr_assert_eq(kvb_parse_size("64K", &v), 0);
	cr_assert_eq(v, 65536);
	cr_assert_eq(kvb_parse_size("1MiB", &v), 0);
	cr_assert_eq(v, 1048576);
	cr_assert_eq(kvb_parse_size("2g", &v), 0);
	cr_assert_eq(v, 2ull << 30);
	cr_assert_eq(kvb_parse_size("4096", &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(kvb_parse_size("0", &v), -1);
	cr_assert_eq(kvb_parse_size("-5", &v), -1);
	cr_assert_eq(kvb_parse_size("12Q", &v), -1);
	cr_assert_eq(kvb_parse_size("", &v), -1);
	cr_assert_eq(kvb_parse_size("99999999999999999999", &v), -1);
}

Test(opts, kv_model_and_shape)
{
	kvb_opts o;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm", "--model", "llama3-70b",
			   "--tokens", "8192", "--block-tokens", "32", "--seqs", "4", "--rate", "10",
			   "--layer-interval", "500", "--contiguous"), 0, "%s", err);
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(o.layers, 80);
	cr_assert_eq(o.tokens, 8192);
	cr_assert_eq(o.seqs, 4);
	cr_assert_eq(o.layer_interval_us, 500);
	cr_assert(o.contiguous);
	cr_assert_eq(kvb_kv_bytes_per_token(&o), 320 * 1024);
	cr_assert_eq(kvb_kv_block_bytes(&o), 32ull * 8 * 128 * 2 * 2);
	cr_assert_eq(kvb_kv_blocks_per_seq(&o), 256);
}

Test(opts, kv_explicit_shape_overrides)
{
	kvb_opts o;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "tcp", "--layers", "4", "--kv-heads", "2",
			   "--head-dim", "64", "--dtype", "fp8", "--tokens", "100"), 0, "%s", err);
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(kvb_kv_bytes_per_token(&o), 4 * 2 * 64 * 2 * 1);
	cr_assert_eq(kvb_kv_blocks_per_seq(&o), 7, "100 tokens in 16-token blocks round up");
}

Test(opts, rejects_bad_input)
{
	kvb_opts o;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "bw", "--driver", "shm"), -1, "no --connect or --loopback");
	cr_assert(strstr(err, "--connect"), "%s", err);
	cr_assert_eq(PARSE(&o, err, "bogus", "--loopback", "--driver", "shm"), -1);
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback"), -1, "no driver");
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback", "--driver", "shm", "-s", "0"), -1);
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback", "--driver", "shm", "-q", "17"), -1);
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback", "--driver", "shm", "--json", "--csv"), -1);
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback", "--connect", "tcp://1.2.3.4:5", "--driver", "tcp"), -1);
	cr_assert_eq(PARSE(&o, err, "bw", "--driver", "shm", "--connect", "tcp://1.2.3.4:5"), -1,
		     "driver and URI disagree");
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm", "--model", "gpt-9"), -1);
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm", "--dtype", "fp4"), -1);
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm", "-a"), -1);
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback", "--driver", "shm", "--nonsense"), -1);
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback", "--driver", "shm", "-s"), -1, "missing value");
	cr_assert_eq(PARSE(&o, err, "server", "--driver", "shm"), -1, "server needs --listen");
	cr_assert_eq(PARSE(&o, err, "bw", "--loopback", "--driver", "shm", "-D", "-1"), -1);
}

Test(opts, compare_and_help)
{
	kvb_opts o;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "compare", "kv", "--driver", "shm"), 0, "%s", err);
	cr_assert_eq(o.test, KVB_T_COMPARE);
	cr_assert_eq(o.compare_test, KVB_T_KV);
	cr_assert(o.loopback, "compare always runs in loopback");
	cr_assert_eq(PARSE(&o, err, "compare", "--driver", "tcp", "--repeat", "3"), 0, "%s", err);
	cr_assert_eq(o.repeat, 3);
	cr_assert_eq(PARSE(&o, err, "compare", "--driver", "tcp", "--repeat", "0"), -1);
	cr_assert_eq(PARSE(&o, err, "--help"), 1);
	cr_assert_eq(PARSE(&o, err, "server", "--listen", "shm:///tmp/x.sock", "--once"), 0, "%s", err);
	cr_assert_str_eq(o.driver, "shm");
	cr_assert(o.once);
}

Test(opts, thresholds)
{
	kvb_opts o;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "lat", "--loopback", "--driver", "shm", "--max-lat", "12.5",
			   "--min-bw", "40"), 0, "%s", err);
	cr_assert_float_eq(o.max_lat_us, 12.5, 1e-9);
	cr_assert_float_eq(o.min_bw_gbit, 40, 1e-9);
}

Test(opts, sweep_sizes)
{
	uint64_t s[32];
	size_t n = kvb_sweep_sizes(s, 32);
	cr_assert_eq(n, 23, "perftest -a: 2 B .. 8 MiB");
	cr_assert_eq(s[0], 2);
	cr_assert_eq(s[n - 1], 8ull << 20);
}

Test(opts, kv_geometry_per_side_and_its_start_message)
{
	kvb_opts o, back;
	char err[256];
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "tcp", "--src-layout", "kv-interleaved",
			   "--dst-layout", "hnd", "--src-block-tokens", "16", "--dst-block-tokens", "64",
			   "--src-tp", "2:1", "--dst-tp", "4:2"), 0, "%s", err);
	cr_assert(o.geom);
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), 0, "%s", err);
	json_t *j = kvb_params_json(&o);
	cr_assert_eq(kvb_params_parse(j, &back, err, sizeof(err)), 0, "%s", err);
	cr_assert(back.geom);
	cr_assert_str_eq(back.src_layout, "kv-interleaved");
	cr_assert_str_eq(back.dst_layout, "hnd");
	cr_assert_eq(back.src_block_tokens, 16);
	cr_assert_eq(back.dst_block_tokens, 64);
	cr_assert_eq(back.src_tp, 2);
	cr_assert_eq(back.src_rank, 1);
	cr_assert_eq(back.dst_tp, 4);
	cr_assert_eq(back.dst_rank, 2);
	/* a start message naming an unknown layout is refused */
	json_object_set_new(j, "dst_layout", json_string("rowmajor"));
	cr_assert_eq(kvb_params_parse(j, &back, err, sizeof(err)), -1);
	json_decref(j);
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm", "--src-tp", "4:4"), -1);
	cr_assert(strstr(err, "RANK < N"), "%s", err);
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm", "--dst-tp", "3:0"), 0, "%s", err);
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), -1);
	cr_assert(strstr(err, "divide"), "%s", err);
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm", "--model", "deepseek-v3",
			   "--src-layout", "nhd"), 0, "%s", err);
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), -1);
	cr_assert(strstr(err, "mla"), "%s", err);
	/* no geometry option: the page run, no geometry in the start message */
	cr_assert_eq(PARSE(&o, err, "kv", "--loopback", "--driver", "shm"), 0, "%s", err);
	cr_assert(!o.geom);
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), 0, "%s", err);
	j = kvb_params_json(&o);
	cr_assert_null(json_object_get(j, "src_layout"));
	json_decref(j);
}
