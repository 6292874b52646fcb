/* SPDX-License-Identifier: MIT */
/* The built kvwire-bench binary: loopback runs verify their bytes over shm
 * and tcp, exit codes follow thresholds, compare runs its peers. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "kvbt_run.h"

/* Runs kvwire-bench with args; returns the exit status, stdout in *out. */
static int bench(char **out, const char *args)
{
	const char *bin = getenv("KVB_BIN");
	char cmd[2048];
	cr_assert_not_null(bin, "KVB_BIN must name the built kvwire-bench (meson sets it)");
	snprintf(cmd, sizeof(cmd), "timeout 120 %s %s", bin, args);
	return kvbt_run(cmd, out);
}

static json_t *bench_json(const char *args, int want_rc)
{
	char *out;
	int rc = bench(&out, args);
	cr_assert_eq(rc, want_rc, "kvwire-bench %s exited %d\n%s", args, rc, out);
	json_error_t e;
	json_t *j = json_loads(out, 0, &e);
	cr_assert_not_null(j, "not one JSON object (%s): %s", e.text, out);
	free(out);
	return j;
}

static void assert_verified_bytes(json_t *j, uint64_t min_bytes)
{
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert_geq(json_integer_value(json_object_get(j, "bytes")), (json_int_t)min_bytes);
	cr_assert_gt(json_real_value(json_object_get(j, "gbit_per_s")), 0);
}

Test(run, bw_shm_verifies, .timeout = 120)
{
	json_t *j = bench_json("bw --loopback --driver shm -s 64K -n 200 --json", 0);
	assert_verified_bytes(j, 200 * 65536ull);
	cr_assert_str_eq(json_string_value(json_object_get(j, "driver")), "shm");
	cr_assert_eq(json_integer_value(json_object_get(j, "iterations")), 200);
	json_decref(j);
}

Test(run, bw_tcp_two_rails_bidirectional, .timeout = 120)
{
	json_t *j = bench_json("bw --loopback --driver tcp -s 32K -n 200 -q 2 -b --json", 0);
	assert_verified_bytes(j, 2 * 200 * 32768ull);
	json_t *rails = json_object_get(j, "rail_bytes_tx");
	cr_assert_eq(json_array_size(rails), 2);
	json_decref(j);
}

Test(run, lat_shm_and_tcp_verify, .timeout = 120)
{
	const char *drv[] = {"shm", "tcp"};
	for (int i = 0; i < 2; i++) {
		char args[256];
		snprintf(args, sizeof(args), "lat --loopback --driver %s -s 4K -n 200 --json", drv[i]);
		json_t *j = bench_json(args, 0);
		cr_assert(json_is_true(json_object_get(j, "verified")), "%s", drv[i]);
		double p50 = json_real_value(json_object_get(j, "p50_us"));
		double p99 = json_real_value(json_object_get(j, "p99_us"));
		cr_assert_gt(p50, 0);
		cr_assert_geq(p99, p50);
		json_decref(j);
	}
}

Test(run, kv_small_model_both_drivers, .timeout = 120)
{
	const char *drv[] = {"shm", "tcp"};
	for (int i = 0; i < 2; i++) {
		char args[256];
		snprintf(args, sizeof(args), "kv --loopback --driver %s --layers 4 --kv-heads 2 --head-dim 64 "
			 "--tokens 256 -n 2 --seqs 2 --json", drv[i]);
		json_t *j = bench_json(args, 0);
		/* 4 layers x 2 heads x 64 x K,V x 2 B = 2 KiB a token; 256 tokens; 2 seqs x 2 rounds */
		assert_verified_bytes(j, 4ull * 2048 * 256);
		cr_assert_eq(json_integer_value(json_object_get(j, "bytes")), 4ll * 2048 * 256);
		cr_assert_eq(json_integer_value(json_object_get(j, "runs_per_layer")) > 1, 1,
			     "scattered blocks make several runs");
		json_decref(j);
	}
}

Test(run, csv_is_header_plus_rows, .timeout = 120)
{
	char *out;
	cr_assert_eq(bench(&out, "bw --loopback --driver shm -s 4K -n 100 --csv"), 0, "%s", out);
	cr_assert(!strncmp(out, "test,driver,size,", 17), "%s", out);
	char *row = strchr(out, '\n') + 1;
	cr_assert(!strncmp(row, "bw,shm,4096,100,", 16), "%s", row);
	free(out);
}

Test(run, thresholds_give_exit_2, .timeout = 120)
{
	json_t *j = bench_json("bw --loopback --driver shm -s 4K -n 100 --min-bw 100000 --json", 2);
	cr_assert(json_is_true(json_object_get(j, "verified")), "verified, just too slow");
	json_decref(j);
	j = bench_json("lat --loopback --driver shm -s 64 -n 100 --max-lat 0.001 --json", 2);
	json_decref(j);
	j = bench_json("bw --loopback --driver shm -s 4K -n 100 --min-bw 0.000001 --json", 0);
	json_decref(j);
}

Test(run, a_corrupted_byte_fails_verification, .timeout = 120)
{
	const char *drv[] = {"shm", "tcp"};
	for (int i = 0; i < 2; i++) {
		char args[256];
		snprintf(args, sizeof(args), "bw --loopback --driver %s -s 16K -n 50 --inject-corruption --json "
			 "2>/dev/null", drv[i]);
		json_t *j = bench_json(args, 1);
		cr_assert(json_is_false(json_object_get(j, "verified")), "%s", drv[i]);
		cr_assert(strstr(json_string_value(json_object_get(j, "verify_note")), "1 of"), "%s",
			  json_string_value(json_object_get(j, "verify_note")));
		json_decref(j);
	}
	json_t *j = bench_json("kv --loopback --driver shm --layers 2 --kv-heads 1 --head-dim 64 --tokens 64 "
			       "--inject-corruption --json 2>/dev/null", 1);
	cr_assert(json_is_false(json_object_get(j, "verified")));
	json_decref(j);
}

/* A geometry per side: every unit is checked by (layer, kv, token, head)
 * in the receiver's layout after the sender wrote it in its own. */
#define GEO_SHAPE "kv --loopback --layers 3 --kv-heads 4 --head-dim 32 --tokens 100 --seqs 2 -n 4 --json "

Test(run, kv_mismatched_geometries_verify, .timeout = 120)
{
	static const char *const cases[] = {
		"--src-block-tokens 16 --dst-block-tokens 64",
		"--src-layout nhd --dst-layout hnd",
		"--src-layout kv-interleaved --dst-layout kv-separate --dst-block-tokens 32",
		"--src-layout hnd-kv-interleaved --src-block-tokens 8 --dst-layout nhd --dst-tp 2:1",
		"--src-tp 2:0 --dst-tp 4:1 --dst-layout hnd",
	};
	const char *drv[] = {"shm", "tcp"};
	for (int d = 0; d < 2; d++)
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			char args[512];
			snprintf(args, sizeof(args), GEO_SHAPE "--driver %s %s", drv[d], cases[i]);
			json_t *j = bench_json(args, 0);
			cr_assert(json_is_true(json_object_get(j, "verified")), "%s", args);
			cr_assert(strstr(json_string_value(json_object_get(j, "verify_note")),
					 "by coordinate"), "%s", args);
			cr_assert_gt(json_real_value(json_object_get(j, "frags_per_seq")), 0, "%s", args);
			cr_assert_not_null(json_object_get(j, "dst_geom"), "%s", args);
			json_decref(j);
		}
	/* MLA: one latent */
	json_t *j = bench_json("kv --loopback --driver shm --model deepseek-v3 --layers 2 --tokens 70 -n 2 "
			       "--src-block-tokens 64 --json", 0);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	json_decref(j);
}

Test(run, kv_mismatched_geometry_catches_a_corrupted_byte, .timeout = 120)
{
	const char *drv[] = {"shm", "tcp"};
	for (int d = 0; d < 2; d++) {
		char args[512];
		snprintf(args, sizeof(args), GEO_SHAPE "--driver %s --src-layout nhd --dst-layout hnd "
			 "--dst-block-tokens 32 --inject-corruption 2>/dev/null", drv[d]);
		json_t *j = bench_json(args, 1);
		cr_assert(json_is_false(json_object_get(j, "verified")));
		const char *note = json_string_value(json_object_get(j, "verify_note"));
		cr_assert(strstr(note, "1 of") && strstr(note, "layer 0 kv 0 token 0"), "%s", note);
		json_decref(j);
	}
}

Test(run, kv_geometry_bad_options_say_why, .timeout = 60)
{
	char *out;
	int rc = bench(&out, "kv --loopback --driver shm --src-tp 2:0 --dst-tp 2:1 2>&1");
	cr_assert_eq(rc, 1, "%s", out);
	cr_assert(strstr(out, "do not meet"), "%s", out);
	free(out);
	rc = bench(&out, "kv --loopback --driver shm --src-layout rowmajor 2>&1");
	cr_assert_eq(rc, 1, "%s", out);
	cr_assert(strstr(out, "use nhd, hnd"), "%s", out);
	free(out);
	rc = bench(&out, "bw --loopback --driver shm --dst-block-tokens 64 2>&1");
	cr_assert_eq(rc, 1, "%s", out);
	cr_assert(strstr(out, "kv only"), "%s", out);
	free(out);
	/* the same-geometry path is untouched: no geometry in its JSON */
	json_t *j = bench_json("kv --loopback --driver shm --layers 2 --kv-heads 1 --head-dim 64 --tokens 64 "
			       "--json", 0);
	cr_assert_null(json_object_get(j, "dst_geom"));
	cr_assert(strstr(json_string_value(json_object_get(j, "verify_note")), "pages hashed"));
	json_decref(j);
}

Test(run, bad_usage_exits_1_with_a_message, .timeout = 60)
{
	cr_assert_eq(bench(NULL, "bw --driver shm 2>/dev/null"), 1);
	cr_assert_eq(bench(NULL, "bw --loopback --driver nosuch -n 10 2>/dev/null"), 1);
	cr_assert_eq(bench(NULL, "bw --connect tcp://127.0.0.1:1 -n 10 --timeout-ms 500 2>/dev/null"), 1,
		     "nobody listens there");
}

static bool in_path(const char *bin)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", bin);
	return system(cmd) == 0;
}

static json_t *peer(json_t *j, const char *prefix)
{
	size_t i;
	json_t *p;
	json_array_foreach(json_object_get(j, "peers"), i, p)
		if (!strncmp(json_string_value(json_object_get(p, "peer")), prefix, strlen(prefix)))
			return p;
	return NULL;
}

Test(compare, shm_memcpy_and_ucx, .timeout = 300)
{
	json_t *j = bench_json("compare --driver shm -s 64K -n 300 --repeat 2 --json", 0);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert_eq(json_array_size(json_object_get(j, "kvwire_gbit_runs")), 2);
	json_t *m = peer(j, "memcpy");
	cr_assert_not_null(m);
	cr_assert_str_eq(json_string_value(json_object_get(m, "status")), "ok");
	cr_assert_gt(json_real_value(json_object_get(m, "ratio")), 0);
	cr_assert_eq(json_array_size(json_object_get(m, "gbit_runs")), 2);
	json_t *u = peer(j, "ucx_perftest tag_bw");
	cr_assert_not_null(u, "ucx_perftest is always listed, present or not");
	if (in_path("ucx_perftest"))
		cr_expect_str_eq(json_string_value(json_object_get(u, "status")), "ok");
	else
		cr_assert_str_eq(json_string_value(json_object_get(u, "status")), "missing");
	json_decref(j);
}

Test(compare, tcp_iperf3, .timeout = 300)
{
	if (!in_path("iperf3"))
		cr_skip_test("iperf3 is not installed (Debian: iperf3)");
	json_t *j = bench_json("compare --driver tcp -s 128K -D 1 --json", 0);
	json_t *p = peer(j, "iperf3");
	cr_assert_not_null(p);
	cr_assert_str_eq(json_string_value(json_object_get(p, "status")), "ok");
	cr_assert_gt(json_real_value(json_object_get(p, "gbit_per_s")), 0);
	json_decref(j);
}

Test(compare, kv_scattered_vs_contiguous, .timeout = 300)
{
	json_t *j = bench_json("compare kv --driver shm --layers 4 --kv-heads 2 --head-dim 64 --tokens 512 "
			       "-n 2 --json", 0);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert_gt(json_real_value(json_object_get(j, "ratio")), 0);
	cr_assert(json_is_false(json_object_get(json_object_get(j, "scattered"), "contiguous")));
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "contiguous"), "runs_per_layer")), 1);
	json_t *m = json_object_get(j, "memcpy"); /* the yardsticks of the same run, bytes checked */
	cr_assert(json_is_true(json_object_get(m, "ok")), "memcpy yardstick: %s",
		  json_string_value(json_object_get(m, "note")));
	cr_assert_gt(json_real_value(json_object_get(m, "flat_gbit")), 0);
	cr_assert_gt(json_real_value(json_object_get(m, "scattered_gbit")), 0);
	cr_assert_gt(json_real_value(json_object_get(m, "contiguous_ratio")), 0);
	json_decref(j);
}

Test(compare, lat_shm_side_by_side, .timeout = 300)
{
	json_t *j = bench_json("compare lat --driver shm -s 64 -n 2000 --json", 0);
	cr_assert_str_eq(json_string_value(json_object_get(j, "compare")), "lat");
	cr_assert(json_is_true(json_object_get(j, "verified")));
	json_t *k = json_object_get(j, "kvwire");
	cr_assert(json_is_true(json_object_get(k, "verified")));
	cr_assert_gt(json_real_value(json_object_get(k, "p50_us")), 0);
	cr_assert_geq(json_real_value(json_object_get(k, "p99_us")), json_real_value(json_object_get(k, "p50_us")));
	const char *names[] = {"ucx_perftest tag_lat sm", "ucx_perftest ucp_put_lat sm"};
	for (size_t i = 0; i < 2; i++) {
		json_t *u = peer(j, names[i]);
		cr_assert_not_null(u, "%s is always listed, present or not", names[i]);
		const char *st = json_string_value(json_object_get(u, "status"));
		if (!in_path("ucx_perftest")) {
			cr_assert_str_eq(st, "missing");
			continue;
		}
		cr_assert_str_eq(st, "ok", "%s: %s", names[i], json_string_value(json_object_get(u, "note")));
		double p50 = json_real_value(json_object_get(u, "p50_us"));
		cr_assert_gt(p50, 0);
		double want = json_real_value(json_object_get(k, "p50_us")) / p50; /* 6 digits in JSON */
		cr_assert_float_eq(json_real_value(json_object_get(u, "x_of_peer")), want, want * 1e-4);
	}
	json_decref(j);
}

Test(compare, lat_table_labels_ratio, .timeout = 300)
{
	char *out;
	int rc = bench(&out, "compare lat --driver shm -s 64 -n 500");
	cr_assert_eq(rc, 0, "%s", out);
	cr_assert_not_null(strstr(out, "compare lat   driver shm"), "%s", out);
	cr_assert_not_null(strstr(out, "x of peer"), "%s", out);
	cr_assert_not_null(strstr(out, "above 1.00 kvwire is slower"), "%s", out);
	cr_assert_not_null(strstr(out, "verified yes"), "%s", out);
	free(out);
}

/* compare --driver ofi runs the provider's own fi_writedata loop
 * (kvwire-ofi-raw, built beside kvwire-bench) through the same provider, in
 * both its spin and yield forms, and reports kvwire/raw ratios. */
Test(compare, ofi_raw_loop_beside_kvwire, .timeout = 300)
{
	char raw[4096];
	snprintf(raw, sizeof(raw), "%s", getenv("KVB_BIN") ? getenv("KVB_BIN") : "");
	char *slash = strrchr(raw, '/');
	if (!slash || (snprintf(slash, sizeof(raw) - (size_t)(slash - raw), "/kvwire-ofi-raw"), access(raw, X_OK)))
		cr_skip_test("kvwire-ofi-raw not built (no libfabric: the ofi driver is left out)");
	setenv("FI_PROVIDER", "tcp;ofi_rxm", 1);
	json_t *j = bench_json("compare --driver ofi -s 64K -n 1000 --json", 0);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	const char *forms[] = {"ofi-raw spin tcp;ofi_rxm", "ofi-raw yield tcp;ofi_rxm"};
	for (int i = 0; i < 2; i++) {
		json_t *p = peer(j, forms[i]);
		cr_assert_not_null(p, "no peer %s in compare --driver ofi", forms[i]);
		cr_assert_str_eq(json_string_value(json_object_get(p, "status")), "ok", "%s: %s", forms[i],
				 json_string_value(json_object_get(p, "note")));
		cr_assert_gt(json_real_value(json_object_get(p, "gbit_per_s")), 0);
		cr_assert_gt(json_real_value(json_object_get(p, "ratio")), 0);
	}
	unsetenv("FI_PROVIDER");
	json_decref(j);
}
