/* SPDX-License-Identifier: MIT */
/* kvwire-bench fleet: a 4x4 fleet of real processes replays the shipped
 * synthetic traces over shm and tcp with every request verified; bad options
 * and malformed trace lines end with a sentence and a nonzero exit; a decode
 * SIGKILLed mid-run fails the requests it held with PEER_DEAD while the rest
 * of the run goes on over the other decodes; restarted, it takes requests
 * again over fresh links; the idle baseline reports its percentiles. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "kvbt_json.h"
#include "kvbt_run.h"

#define SHAPE "--model llama3-8b --layers 4"

/* Runs kvwire-bench with args (stderr too when err); exit status, output in *out. */
static int bench(char **out, const char *args, bool err)
{
	const char *bin = getenv("KVB_BIN"), *src = getenv("KVB_SRC");
	char cmd[4096];
	cr_assert(bin && src, "KVB_BIN and KVB_SRC must be set (meson sets them)");
	snprintf(cmd, sizeof(cmd), "cd %s && timeout 120 %s %s%s", src, bin, args, err ? " 2>&1" : "");
	return kvbt_run(cmd, out);
}

static json_t *fleet_json(const char *args, int want_rc)
{
	char *out, full[2048];
	snprintf(full, sizeof(full), "fleet %s --json", args);
	int rc = bench(&out, full, false);
	cr_assert_eq(rc, want_rc, "kvwire-bench %s exited %d\n%s", full, rc, out);
	json_error_t e;
	json_t *j = json_loads(out, 0, &e);
	cr_assert_not_null(j, "not one JSON object (%s): %s", e.text, out);
	free(out);
	return j;
}

/* Every request verified, no failure, bytes add up over the 16 pairs. */
static void assert_clean(json_t *j, json_int_t n, unsigned pairs, bool every_pair)
{
	cr_assert_eq(geti(j, "requests"), n);
	cr_assert_eq(geti(j, "ok"), n, "ok %lld of %lld", (long long)geti(j, "ok"), (long long)n);
	cr_assert_eq(geti(j, "failed"), 0);
	cr_assert_eq(json_object_size(json_object_get(j, "failures")), 0);
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert(json_is_true(json_object_get(j, "all_ok")));
	cr_assert_eq(geti(j, "bytes"), geti(j, "offered_bytes"));
	json_t *peers = json_object_get(j, "peers"), *e;
	size_t i;
	json_int_t sum = 0, reqs = 0;
	cr_assert_eq(json_array_size(peers), pairs);
	json_array_foreach(peers, i, e) {
		if (every_pair) /* round-robin goes over all pairs */
			cr_assert_gt(geti(e, "requests"), 0, "pair %zu got no request", i);
		sum += geti(e, "bytes");
		reqs += geti(e, "requests");
	}
	cr_assert_eq(sum, geti(j, "bytes"));
	cr_assert_eq(reqs, n);
	json_t *lat = json_object_get(j, "lat_us");
	cr_assert_gt(json_real_value(json_object_get(lat, "p50")), 0);
	cr_assert_geq(json_real_value(json_object_get(lat, "p99")), json_real_value(json_object_get(lat, "p90")));
	cr_assert_gt(json_real_value(json_object_get(j, "goodput_gbit")), 0);
}

Test(fleet, shm_4x4_mooncake, .timeout = 120)
{
	json_t *j = fleet_json("--driver shm --prefill 4 --decode 4 --trace bench/traces/mooncake-synthetic.jsonl "
			       SHAPE, 0);
	assert_clean(j, 48, 16, true);
	json_decref(j);
}

Test(fleet, tcp_4x4_mooncake, .timeout = 120)
{
	json_t *j = fleet_json("--driver tcp --prefill 4 --decode 4 --trace bench/traces/mooncake-synthetic.jsonl "
			       SHAPE, 0);
	assert_clean(j, 48, 16, true);
	json_decref(j);
}

Test(fleet, shm_2x2_azure_least, .timeout = 120)
{
	json_t *j = fleet_json("--driver shm --prefill 2 --decode 2 --trace bench/traces/azure-synthetic.csv "
			       "--pick least " SHAPE, 0);
	cr_assert_str_eq(json_string_value(json_object_get(j, "stream")), "azure");
	assert_clean(j, 48, 4, false);
	json_t *d;
	size_t i;
	json_array_foreach(json_object_get(j, "decodes"), i, d)
		cr_assert_gt(geti(d, "requests"), 0, "least outstanding never picked decode %zu", i);
	json_decref(j);
}

Test(fleet, tcp_2x3_poisson_mix, .timeout = 120)
{
	json_t *j = fleet_json("--driver tcp --prefill 2 --decode 3 --rate 200 --mix 64:0.5,700:0.5 --requests 60 "
			       SHAPE, 0);
	assert_clean(j, 60, 6, true);
	json_decref(j);
}

/* Decode 1 killed when request 20 arrives: what it held ends PEER_DEAD,
 * nothing else fails, later requests went to decodes 0, 2 and 3. */
static void kill_case(const char *driver)
{
	char args[512];
	snprintf(args, sizeof(args), "--driver %s --prefill 4 --decode 4 --trace bench/traces/mooncake-synthetic.jsonl "
		 "--time-scale 0.5 --kill-decode 1@20 " SHAPE, driver);
	json_t *j = fleet_json(args, 0), *d, *fail = json_object_get(j, "failures");
	json_int_t dead = json_integer_value(json_object_get(fail, "KVW_ERR_PEER_DEAD"));
	cr_assert_gt(dead, 0, "no request ended PEER_DEAD");
	cr_assert_eq(json_object_size(fail), 1, "other causes than PEER_DEAD: %s", json_dumps(fail, 0));
	cr_assert_eq(geti(j, "failed"), dead);
	cr_assert_eq(geti(j, "unexpected_failures"), 0);
	cr_assert_eq(geti(j, "ok") + dead, 48);
	size_t i;
	json_array_foreach(json_object_get(j, "decodes"), i, d) {
		if (i == 1) {
			cr_assert(json_is_true(json_object_get(d, "dead")));
			cr_assert_eq(geti(d, "failed"), dead);
			cr_assert_geq(geti(d, "last_request"), 20);
			cr_assert_lt(geti(d, "last_request"), 28, "the dead decode still got request %lld",
				     (long long)geti(d, "last_request"));
		} else {
			cr_assert_eq(geti(d, "failed"), 0);
			cr_assert_eq(geti(d, "ok"), geti(d, "requests"));
		}
	}
	/* the last requests went somewhere alive */
	json_int_t last = 0;
	json_array_foreach(json_object_get(j, "decodes"), i, d)
		if (i != 1 && geti(d, "last_request") > last)
			last = geti(d, "last_request");
	cr_assert_eq(last, 47);
	json_decref(j);
}

Test(fleet, shm_decode_killed, .timeout = 120) { kill_case("shm"); }
Test(fleet, tcp_decode_killed, .timeout = 120) { kill_case("tcp"); }

static json_int_t kgeti(json_t *j, const char *k)
{
	return geti(json_object_get(j, "killed"), k);
}

/* Decode 1 killed at request 20 and forked again 100 ms later on its URI:
 * what the old one held ends PEER_DEAD, nothing else fails, prefills
 * reconnect and the new one verifies requests; every byte accounted. */
static void restart_case(const char *driver)
{
	char args[512];
	snprintf(args, sizeof(args), "--driver %s --prefill 4 --decode 4 --rate 40 --requests 96 --mix 64:0.5,700:0.5 "
		 "--kill-decode 1@20 --restart-ms 100 " SHAPE, driver);
	json_t *j = fleet_json(args, 0), *fail = json_object_get(j, "failures");
	json_t *d1 = json_array_get(json_object_get(j, "decodes"), 1);
	json_int_t dead = json_integer_value(json_object_get(fail, "KVW_ERR_PEER_DEAD"));
	cr_assert_eq(geti(j, "unexpected_failures"), 0, "unexpected failures: %s", json_dumps(fail, 0));
	cr_assert_gt(dead, 0, "no request the killed decode held ended PEER_DEAD");
	cr_assert_eq(json_object_size(fail), 1, "other causes than PEER_DEAD: %s", json_dumps(fail, 0));
	cr_assert_eq(kgeti(j, "failed_held"), dead);
	cr_assert_eq(geti(j, "ok") + dead, 96);
	cr_assert(json_is_true(json_object_get(json_object_get(j, "killed"), "restarted")), "not restarted");
	cr_assert_eq(kgeti(j, "restart_ms"), 100);
	cr_assert_gt(kgeti(j, "prefills_relinked"), 0, "no prefill reconnected to the new decode");
	cr_assert_gt(kgeti(j, "ok_after_restart"), 0, "the restarted decode completed no request");
	cr_assert(json_is_false(json_object_get(d1, "dead")));
	cr_assert_eq(geti(d1, "failed"), dead);
	cr_assert_eq(geti(d1, "ok") + geti(d1, "failed"), geti(d1, "requests"));
	cr_assert_gt(geti(d1, "last_request"), 28, "the new decode got no late request");
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert_eq(geti(j, "bytes") + geti(j, "failed_bytes"), geti(j, "offered_bytes"));
	json_t *e;
	size_t i;
	json_int_t sum = 0;
	json_array_foreach(json_object_get(j, "peers"), i, e)
		sum += geti(e, "bytes");
	cr_assert_eq(sum, geti(j, "bytes"));
	json_decref(j);
}

Test(fleet, shm_decode_restarted, .timeout = 120) { restart_case("shm"); }
Test(fleet, tcp_decode_restarted, .timeout = 120) { restart_case("tcp"); }

static double getr(json_t *j, const char *k)
{
	json_t *v = json_object_get(j, k);
	cr_assert(json_is_real(v), "no number \"%s\"", k);
	return json_real_value(v);
}

/* --idle-baseline: the same 40 requests again one at a time; fields present
 * and sane (no timing bound: the machine is shared). */
Test(fleet, shm_idle_baseline, .timeout = 120)
{
	json_t *j = fleet_json("--driver shm --prefill 2 --decode 2 --rate 100 --mix 64:0.5,700:0.5 --requests 40 "
			       "--idle-baseline " SHAPE, 0);
	assert_clean(j, 40, 4, true);
	json_t *idle = json_object_get(j, "idle");
	cr_assert_not_null(idle, "no \"idle\" object");
	cr_assert_eq(geti(idle, "requests"), 40);
	cr_assert_eq(geti(idle, "ok"), 40);
	cr_assert_eq(geti(idle, "failed"), 0);
	cr_assert_gt(getr(idle, "p50_ms"), 0);
	cr_assert_geq(getr(idle, "p99_ms"), getr(idle, "p50_ms"));
	cr_assert_gt(getr(idle, "p99_ms"), 0);
	cr_assert_gt(getr(j, "p99_vs_idle"), 0);
	double want = json_real_value(json_object_get(json_object_get(j, "lat_us"), "p99")) / 1e3 /
		      getr(idle, "p99_ms");
	cr_assert_float_eq(getr(j, "p99_vs_idle"), want, 1e-9 * want);
	json_decref(j);
}

/* ---------------------------------------------------------------- refusals */
static void refused(const char *args, const char *says)
{
	char *out, full[2048];
	/* args name their own test when they start with one */
	snprintf(full, sizeof(full), "%s%s", strncmp(args, "kv ", 3) && strncmp(args, "fleet-node ", 11) ? "fleet " : "",
		 args);
	int rc = bench(&out, full, true);
	cr_assert_neq(rc, 0, "kvwire-bench %s exited 0\n%s", full, out);
	cr_assert_neq(rc, 124, "kvwire-bench %s hung", full);
	cr_assert(strstr(out, says), "kvwire-bench %s: wanted \"%s\" in:\n%s", full, says, out);
	free(out);
}

#define T_MC "--trace bench/traces/mooncake-synthetic.jsonl"
Test(fleet_opts, no_prefill) { refused("--driver shm --decode 2 " T_MC, "needs --prefill N and --decode M"); }
Test(fleet_opts, zero_decode) { refused("--driver shm --prefill 2 --decode 0 " T_MC, "--decode 0: give 1..64"); }
Test(fleet_opts, no_stream) { refused("--driver shm --prefill 1 --decode 1", "needs one arrival stream"); }
Test(fleet_opts, two_streams) { refused("--driver shm --prefill 1 --decode 1 --rate 5 " T_MC, "needs one arrival stream"); }
Test(fleet_opts, mix_with_trace) { refused("--driver shm --prefill 1 --decode 1 --mix 128:1 " T_MC, "--mix goes with --rate"); }
Test(fleet_opts, bad_mix) { refused("--driver shm --prefill 1 --decode 1 --rate 5 --mix 128:x", "each weight must be a number"); }
Test(fleet_opts, bad_mix_tokens) { refused("--driver shm --prefill 1 --decode 1 --rate 5 --mix 0:1", "TOKENS:WEIGHT"); }
Test(fleet_opts, bad_format) { refused("--driver shm --prefill 1 --decode 1 --trace-format xml " T_MC, "use mooncake (JSONL) or azure"); }
Test(fleet_opts, bad_time_scale) { refused("--driver shm --prefill 1 --decode 1 --time-scale 0 " T_MC, "--time-scale 0"); }
Test(fleet_opts, kill_out_of_range) { refused("--driver shm --prefill 1 --decode 2 --kill-decode 2@1 " T_MC, "only 2 decode processes"); }
Test(fleet_opts, kill_bad_spec) { refused("--driver shm --prefill 1 --decode 2 --kill-decode 1 " T_MC, "give I@REQ"); }
Test(fleet_opts, restart_without_kill) { refused("--driver shm --prefill 1 --decode 2 --restart-ms 50 " T_MC, "give both"); }
Test(fleet_opts, restart_bad_ms) { refused("--driver shm --prefill 1 --decode 2 --kill-decode 1@3 --restart-ms soon " T_MC, "--restart-ms soon: give 0..600000"); }
Test(fleet_opts, idle_elsewhere) { refused("kv --loopback --driver shm --idle-baseline", "apply to fleet only"); }
Test(fleet_opts, rdma_driver) { refused("--driver rdma --prefill 1 --decode 1 " T_MC, "fleet runs on --driver shm or tcp"); }
Test(fleet_opts, fleet_option_elsewhere) { refused("kv --loopback --driver shm --prefill 2", "apply to fleet only"); }
/* fleet --join and fleet-node (the runs themselves: test_fleet_join.c) */
#define NODE "fleet-node --driver shm --role decode --pool p --name n "
Test(fleet_opts, join_without_dir) { refused("--join --driver shm --prefill 1 --decode 1 " T_MC, "fleet --join needs --dir ETCD_URL and --pool P"); }
Test(fleet_opts, dir_without_join) { refused("--driver shm --prefill 1 --decode 1 --dir http://127.0.0.1:1 --pool p " T_MC, "--dir and --pool go with --join"); }
Test(fleet_opts, join_restart) { refused("--join --dir http://127.0.0.1:1 --pool p --driver shm --prefill 1 --decode 2 --kill-decode 1@3 --restart-ms 5 " T_MC, "start the fleet-node again yourself"); }
Test(fleet_opts, node_no_role) { refused("fleet-node --driver shm --dir http://127.0.0.1:1 --pool p --name n", "fleet-node needs --role prefill|decode"); }
Test(fleet_opts, node_bad_role) { refused(NODE "--dir http://127.0.0.1:1 --role router", "--role router: use prefill or decode"); }
Test(fleet_opts, node_bad_name) { refused("fleet-node --driver shm --role decode --pool p --name 'a b' --dir http://127.0.0.1:1", "--name a b: give 1-63 characters"); }
Test(fleet_opts, node_stream) { refused(NODE "--dir http://127.0.0.1:1 --rate 5", "fleet-node takes no stream or fleet options"); }
Test(fleet_opts, node_short_ttl) { refused(NODE "--dir http://127.0.0.1:1 --ttl 1", "--ttl 1: give the lease in seconds, 2..3600"); }
Test(fleet_opts, dir_elsewhere) { refused("kv --loopback --driver shm --pool p", "apply to fleet and fleet-node only"); }
Test(fleet_opts, missing_trace) { refused("--driver shm --prefill 1 --decode 1 --trace /nonexistent/t.jsonl", "cannot open the trace"); }

/* A trace file holding `text`; refused with `says` (and the file:line). */
static void bad_trace(const char *ext, const char *text, const char *says, int line)
{
	char path[] = "/tmp/kvb-fleet-traceXXXXXX", named[64], args[256], where[96];
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	snprintf(named, sizeof(named), "%s.%s", path, ext);
	cr_assert_eq(rename(path, named), 0);
	snprintf(args, sizeof(args), "--driver shm --prefill 1 --decode 1 --trace %s", named);
	if (line)
		snprintf(where, sizeof(where), "%s:%d: ", named, line);
	else
		snprintf(where, sizeof(where), "%s: ", named);
	refused(args, where);
	refused(args, says);
	unlink(named);
}

#define MC_OK "{\"timestamp\": 0, \"input_length\": 64, \"output_length\": 1, \"hash_ids\": [0]}\n"
Test(fleet_trace, mooncake_not_json) { bad_trace("jsonl", MC_OK "{\"timestamp\": 5, \"input_length\": \n", "not a JSON object", 2); }
Test(fleet_trace, mooncake_no_input) { bad_trace("jsonl", MC_OK MC_OK "{\"timestamp\": 5, \"output_length\": 3}\n", "\"input_length\" must be", 3); }
Test(fleet_trace, mooncake_bad_time) { bad_trace("jsonl", "{\"timestamp\": \"soon\", \"input_length\": 8}\n", "\"timestamp\" must be", 1); }
Test(fleet_trace, mooncake_bad_hashes) { bad_trace("jsonl", MC_OK "{\"timestamp\": 1, \"input_length\": 8, \"hash_ids\": 3}\n", "\"hash_ids\" must be", 2); }
Test(fleet_trace, mooncake_empty) { bad_trace("jsonl", "\n\n", "holds no requests", 0); }
#define AZ_HEAD "TIMESTAMP,ContextTokens,GeneratedTokens\n"
Test(fleet_trace, azure_bad_date) { bad_trace("csv", AZ_HEAD "2023-11-16 18:15:46.1,10,2\nyesterday,10,2\n", "is not a date", 3); }
Test(fleet_trace, azure_two_fields) { bad_trace("csv", AZ_HEAD "2023-11-16 18:15:46.1,10\n", "expected 3 fields", 2); }
Test(fleet_trace, azure_zero_context) { bad_trace("csv", AZ_HEAD "2023-11-16 18:15:46.1,0,2\n", "ContextTokens '0'", 2); }
Test(fleet_trace, azure_bad_generated) { bad_trace("csv", AZ_HEAD "2023-11-16 18:15:46.1,5,-2\n", "GeneratedTokens '-2'", 2); }
