/* SPDX-License-Identifier: MIT */
/* JSON and CSV shape, exit codes, control-link parameters. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static kvb_result sample_bw(uint64_t size, double gbit, bool verified)
{
	kvb_result r;
	kvb_result_init(&r, "bw", "shm");
	r.size = size;
	r.iterations = 1000;
	r.bytes = size * 1000;
	r.seconds = (double)r.bytes * 8 / (gbit * 1e9);
	r.verified = verified;
	r.rails = 2;
	r.rail_bytes[0] = r.bytes / 2;
	r.rail_bytes[1] = r.bytes / 2;
	r.local.valid = r.peer.valid = true;
	r.local.cpu_pct = 99;
	r.peer.reg_ns = 1234;
	kvb_result_finish(&r);
	return r;
}

Test(output, json_has_the_contract_fields)
{
	kvb_result r = sample_bw(65536, 40, true);
	json_t *j = kvb_result_json(&r);
	const char *num[] = {"bytes", "seconds", "gbit_per_s", "gbyte_per_s", "iterations", "size", "rails",
			     "client_cpu_pct", "server_reg_ns", "retransmits", "drops"};
	for (size_t i = 0; i < sizeof(num) / sizeof(num[0]); i++)
		cr_assert(json_is_number(json_object_get(j, num[i])), "%s", num[i]);
	cr_assert_str_eq(json_string_value(json_object_get(j, "test")), "bw");
	cr_assert_str_eq(json_string_value(json_object_get(j, "driver")), "shm");
	cr_assert(json_is_true(json_object_get(j, "verified")));
	cr_assert_eq(json_array_size(json_object_get(j, "rail_bytes_tx")), 2);
	cr_assert_float_eq(json_real_value(json_object_get(j, "gbit_per_s")), 40, 1e-6);
	cr_assert_float_eq(json_real_value(json_object_get(j, "gbyte_per_s")), 5, 1e-6);
	cr_assert_null(json_object_get(j, "p50_us"), "no latency keys in a bw result");
	json_decref(j);
}

Test(output, latency_keys_and_sweep)
{
	kvb_result r[2] = {sample_bw(2, 1, true), sample_bw(4, 1, false)};
	r[1].has_lat = true;
	r[1].lat.p50 = 1;
	r[1].lat.p99 = 2;
	r[1].lat.p999 = 3;
	json_t *j = kvb_results_json(r, 2);
	cr_assert_float_eq(json_real_value(json_object_get(j, "p999_us")), 3, 1e-9);
	cr_assert(json_is_number(json_object_get(j, "avg_us")));
	cr_assert(json_is_number(json_object_get(j, "min_us")));
	cr_assert(json_is_number(json_object_get(j, "max_us")));
	cr_assert_eq(json_array_size(json_object_get(j, "results")), 2);
	cr_assert(json_is_false(json_object_get(j, "verified")), "a sweep is verified only if all are");
	json_decref(j);
}

static size_t count_char(const char *s, char c)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == c;
	return n;
}

Test(output, csv_rows_match_header)
{
	char *buf;
	size_t len;
	FILE *f = open_memstream(&buf, &len);
	kvb_result r = sample_bw(1048576, 80, true);
	kvb_result_csv_header(f);
	kvb_result_csv_row(f, &r);
	fclose(f);
	char *nl = strchr(buf, '\n');
	cr_assert_not_null(nl);
	*nl = '\0';
	cr_assert_eq(count_char(buf, ','), count_char(nl + 1, ','));
	cr_assert(strstr(buf, "gbit_per_s"));
	cr_assert(!strncmp(nl + 1, "bw,shm,1048576,1000,", 20), "%s", nl + 1);
	free(buf);
}

Test(output, table_prints_verified)
{
	char *buf;
	size_t len;
	FILE *f = open_memstream(&buf, &len);
	kvb_result r = sample_bw(4096, 10, true);
	kvb_result_table(f, &r, 1, true);
	fclose(f);
	cr_assert(strstr(buf, "BW avg[Gb/sec]"), "%s", buf);
	cr_assert(strstr(buf, "yes"));
	free(buf);
}

Test(output, exit_codes)
{
	kvb_opts o;
	char why[256];
	kvb_opts_init(&o);
	kvb_result ok = sample_bw(65536, 40, true), bad = sample_bw(65536, 40, false);
	cr_assert_eq(kvb_exit_code(&ok, 1, &o, why, sizeof(why)), 0);
	cr_assert_eq(kvb_exit_code(&bad, 1, &o, why, sizeof(why)), 1);
	o.min_bw_gbit = 50;
	cr_assert_eq(kvb_exit_code(&ok, 1, &o, why, sizeof(why)), 2);
	cr_assert(strstr(why, "--min-bw"), "%s", why);
	cr_assert_eq(kvb_exit_code(&bad, 1, &o, why, sizeof(why)), 1, "a failed verify wins");
	o.min_bw_gbit = 30;
	cr_assert_eq(kvb_exit_code(&ok, 1, &o, why, sizeof(why)), 0);
	kvb_result lat = ok;
	lat.has_lat = true;
	lat.lat.p99 = 20;
	o.max_lat_us = 10;
	cr_assert_eq(kvb_exit_code(&lat, 1, &o, why, sizeof(why)), 2);
	o.max_lat_us = 25;
	cr_assert_eq(kvb_exit_code(&lat, 1, &o, why, sizeof(why)), 0);
	cr_assert_eq(kvb_exit_code(&ok, 0, &o, why, sizeof(why)), 1, "no result is a failure");
}

Test(params, round_trip)
{
	kvb_opts o, p;
	char err[256];
	kvb_opts_init(&o);
	o.test = KVB_T_KV;
	strcpy(o.model, "qwen3-235b");
	o.tokens = 1000;
	o.seqs = 3;
	o.rate = 12.5;
	o.layer_interval_us = 250;
	o.seed = 77;
	o.duration = 1.5;
	cr_assert_eq(kvb_kv_resolve(&o, err, sizeof(err)), 0);
	json_t *j = kvb_params_json(&o);
	cr_assert_eq(kvb_params_parse(j, &p, err, sizeof(err)), 0, "%s", err);
	json_decref(j);
	cr_assert_eq(p.test, KVB_T_KV);
	cr_assert_eq(p.layers, 94);
	cr_assert_eq(p.kv_heads, 4);
	cr_assert_eq(p.tokens, 1000);
	cr_assert_eq(p.seqs, 3);
	cr_assert_eq(p.seed, 77);
	cr_assert_eq(p.layer_interval_us, 250);
	cr_assert_float_eq(p.rate, 12.5, 1e-9);
	cr_assert_float_eq(p.duration, 1.5, 1e-9);
	cr_assert_eq(kvb_kv_block_bytes(&p), kvb_kv_block_bytes(&o));
}

Test(params, rejects_malformed)
{
	kvb_opts p;
	char err[256];
	const char *bad[] = {
		"{\"type\":\"start\",\"test\":\"rm -rf\"}",
		"{\"type\":\"start\",\"test\":\"bw\",\"size\":-1}",
		"{\"type\":\"start\",\"test\":\"bw\",\"size\":0}",
		"{\"type\":\"start\",\"test\":\"bw\",\"rails\":99}",
		"{\"type\":\"start\",\"test\":\"kv\",\"layers\":\"many\"}",
		"{\"type\":\"start\",\"test\":\"kv\",\"layers\":5000}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *j = json_loads(bad[i], 0, NULL);
		cr_assert_not_null(j);
		cr_assert_eq(kvb_params_parse(j, &p, err, sizeof(err)), -1, "%s", bad[i]);
		json_decref(j);
	}
}
