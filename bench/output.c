/* SPDX-License-Identifier: MIT */
/* Results: derived rates, JSON (jansson), CSV, human table, exit codes. */
#include "bench.h"

#include <stdarg.h>
#include <string.h>

void kvb_result_init(kvb_result *r, const char *test, const char *driver)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->test, sizeof(r->test), "%s", test);
	snprintf(r->driver, sizeof(r->driver), "%s", driver);
	r->rails = 1;
}

void kvb_result_finish(kvb_result *r)
{
	if (r->seconds <= 0)
		return;
	r->gbyte_per_s = (double)r->bytes / r->seconds / 1e9;
	r->gbit_per_s = r->gbyte_per_s * 8;
	r->msg_rate = (double)r->iterations / r->seconds;
}

static void side_json(json_t *o, const char *prefix, const kvb_side *s)
{
	char k[64];
	if (!s->valid)
		return;
#define KV(name, val) (snprintf(k, sizeof(k), "%s_%s", prefix, name), json_object_set_new(o, k, val))
	KV("cpu_pct", json_real(s->cpu_pct));
	KV("reg_ns", json_integer((json_int_t)s->reg_ns));
	KV("bytes_tx", json_integer((json_int_t)s->bytes_tx));
	KV("bytes_rx", json_integer((json_int_t)s->bytes_rx));
	KV("retransmits", json_integer((json_int_t)s->retransmits));
	KV("drops", json_integer((json_int_t)s->drops));
#undef KV
}

static void kv_json(json_t *o, const kvb_result *r)
{
	json_object_set_new(o, "model", json_string(r->model));
	json_object_set_new(o, "layers", json_integer(r->layers));
	json_object_set_new(o, "tokens", json_integer(r->tokens));
	json_object_set_new(o, "block_tokens", json_integer(r->block_tokens));
	json_object_set_new(o, "block_bytes", json_integer((json_int_t)r->block_bytes));
	json_object_set_new(o, "blocks_per_seq", json_integer((json_int_t)r->blocks_per_seq));
	json_object_set_new(o, "runs_per_layer", json_integer((json_int_t)r->runs_per_layer));
	json_object_set_new(o, "frags_per_seq", json_real(r->frags_per_seq));
	if (r->geom) {
		json_object_set_new(o, "src_geom", json_string(r->src_geom));
		json_object_set_new(o, "dst_geom", json_string(r->dst_geom));
	}
	json_object_set_new(o, "seqs", json_integer(r->seqs));
	json_object_set_new(o, "contiguous", json_boolean(r->contiguous));
	json_object_set_new(o, "ttll_us", json_real(r->ttll_us));
	if (r->rate > 0)
		json_object_set_new(o, "rate", json_real(r->rate));
}

json_t *kvb_result_json(const kvb_result *r)
{
	json_t *o = json_object();
	json_t *rails = json_array();

	json_object_set_new(o, "test", json_string(r->test));
	json_object_set_new(o, "driver", json_string(r->driver));
	json_object_set_new(o, "size", json_integer((json_int_t)r->size));
	json_object_set_new(o, "iterations", json_integer((json_int_t)r->iterations));
	json_object_set_new(o, "bytes", json_integer((json_int_t)r->bytes));
	json_object_set_new(o, "seconds", json_real(r->seconds));
	json_object_set_new(o, "gbit_per_s", json_real(r->gbit_per_s));
	json_object_set_new(o, "gbyte_per_s", json_real(r->gbyte_per_s));
	json_object_set_new(o, "msg_per_s", json_real(r->msg_rate));
	json_object_set_new(o, "verified", json_boolean(r->verified));
	if (r->verify_note[0])
		json_object_set_new(o, "verify_note", json_string(r->verify_note));
	json_object_set_new(o, "bidirectional", json_boolean(r->bidir));
	json_object_set_new(o, "rails", json_integer(r->rails));
	for (unsigned i = 0; i < r->rails && i < KVB_MAX_RAILS; i++)
		json_array_append_new(rails, json_integer((json_int_t)r->rail_bytes[i]));
	json_object_set_new(o, "rail_bytes_tx", rails);
	if (r->has_lat) {
		json_object_set_new(o, "p50_us", json_real(r->lat.p50));
		json_object_set_new(o, "p99_us", json_real(r->lat.p99));
		json_object_set_new(o, "p999_us", json_real(r->lat.p999));
		json_object_set_new(o, "avg_us", json_real(r->lat.avg));
		json_object_set_new(o, "min_us", json_real(r->lat.min));
		json_object_set_new(o, "max_us", json_real(r->lat.max));
		json_object_set_new(o, "lat_samples", json_integer((json_int_t)r->lat.n));
	}
	if (r->is_kv)
		kv_json(o, r);
	side_json(o, "client", &r->local);
	side_json(o, "server", &r->peer);
	json_object_set_new(o, "retransmits",
			    json_integer((json_int_t)(r->local.retransmits + r->peer.retransmits)));
	json_object_set_new(o, "drops", json_integer((json_int_t)(r->local.drops + r->peer.drops)));
	if (r->error[0])
		json_object_set_new(o, "error", json_string(r->error));
	return o;
}

json_t *kvb_results_json(const kvb_result *r, size_t n)
{
	if (n == 0)
		return json_object();
	/* the top level holds the last (largest) run; a sweep lists all of them */
	json_t *top = kvb_result_json(&r[n - 1]);
	if (n > 1) {
		json_t *arr = json_array();
		bool all = true;
		for (size_t i = 0; i < n; i++) {
			json_array_append_new(arr, kvb_result_json(&r[i]));
			all = all && r[i].verified;
		}
		json_object_set_new(top, "results", arr);
		json_object_set_new(top, "verified", json_boolean(all));
	}
	return top;
}

static void table_lat(FILE *f, const kvb_result *r, size_t n)
{
	fprintf(f, " %-10s %-10s %-10s %-10s %-10s %-10s %-10s %-8s\n", "#bytes", "#iters",
		"t_min[us]", "t_avg[us]", "t_p50[us]", "t_p99[us]", "t_p99.9[us]", "verified");
	for (size_t i = 0; i < n; i++)
		fprintf(f, " %-10llu %-10llu %-10.2f %-10.2f %-10.2f %-10.2f %-10.2f %-8s\n",
			(unsigned long long)r[i].size, (unsigned long long)r[i].iterations,
			r[i].lat.min, r[i].lat.avg, r[i].lat.p50, r[i].lat.p99, r[i].lat.p999,
			r[i].verified ? "yes" : "no");
}

static void table_bw(FILE *f, const kvb_result *r, size_t n, bool gbits)
{
	fprintf(f, " %-10s %-10s %-16s %-10s %-12s %-8s\n", "#bytes", "#iters",
		gbits ? "BW avg[Gb/sec]" : "BW avg[MiB/sec]", "GB/s", "MsgRate[Mpps]", "verified");
	for (size_t i = 0; i < n; i++) {
		double bw = gbits ? r[i].gbit_per_s : r[i].gbyte_per_s * 1e9 / 1048576.0;
		fprintf(f, " %-10llu %-10llu %-16.2f %-10.3f %-12.6f %-8s\n",
			(unsigned long long)r[i].size, (unsigned long long)r[i].iterations, bw,
			r[i].gbyte_per_s, r[i].msg_rate / 1e6, r[i].verified ? "yes" : "no");
	}
}

static void table_kv(FILE *f, const kvb_result *r)
{
	fprintf(f, " model %s: %u layers, %u tokens, %llu blocks x %llu B a layer, %u seq(s), %s\n",
		r->model, r->layers, r->tokens, (unsigned long long)r->blocks_per_seq,
		(unsigned long long)r->block_bytes, r->seqs,
		r->contiguous ? "contiguous" : "scattered");
	fprintf(f, " %llu runs a layer, %llu transfers, %.1f MiB moved in %.4f s\n",
		(unsigned long long)r->runs_per_layer, (unsigned long long)r->iterations,
		(double)r->bytes / 1048576.0, r->seconds);
	if (r->geom)
		fprintf(f, " geometry: %s -> %s\n", r->src_geom, r->dst_geom);
	fprintf(f, " fragments a sequence: %.1f\n", r->frags_per_seq);
	fprintf(f, " bandwidth: %.2f Gb/s (%.3f GB/s)   time to last layer: %.1f us\n",
		r->gbit_per_s, r->gbyte_per_s, r->ttll_us);
	if (r->has_lat)
		fprintf(f, " transfer latency [us]: min %.1f avg %.1f p50 %.1f p99 %.1f p99.9 %.1f max %.1f\n",
			r->lat.min, r->lat.avg, r->lat.p50, r->lat.p99, r->lat.p999, r->lat.max);
	fprintf(f, " verified: %s\n", r->verified ? "yes" : "no");
}

void kvb_result_table(FILE *f, const kvb_result *r, size_t n, bool report_gbits)
{
	if (!n)
		return;
	fprintf(f, "---------------------------------------------------------------------------\n");
	fprintf(f, " kvwire-bench %s%s   driver %s   rails %u\n", r->test, r->bidir ? " (bidirectional)" : "",
		r->driver, r->rails);
	fprintf(f, "---------------------------------------------------------------------------\n");
	if (r->is_kv)
		table_kv(f, r);
	else if (r->has_lat)
		table_lat(f, r, n);
	else
		table_bw(f, r, n, report_gbits);
	const kvb_result *l = &r[n - 1];
	if (l->local.valid || l->peer.valid)
		fprintf(f, " cpu: client %.0f%% server %.0f%%   registration: client %.1f us server %.1f us"
			"   retransmits %llu drops %llu\n", l->local.cpu_pct, l->peer.cpu_pct,
			(double)l->local.reg_ns / 1e3, (double)l->peer.reg_ns / 1e3,
			(unsigned long long)(l->local.retransmits + l->peer.retransmits),
			(unsigned long long)(l->local.drops + l->peer.drops));
	if (l->rails > 1) {
		fprintf(f, " per-rail bytes:");
		for (unsigned i = 0; i < l->rails && i < KVB_MAX_RAILS; i++)
			fprintf(f, " %llu", (unsigned long long)l->rail_bytes[i]);
		fputc('\n', f);
	}
	for (size_t i = 0; i < n; i++)
		if (r[i].verify_note[0] || r[i].error[0])
			fprintf(f, " note (%llu B): %s%s%s\n", (unsigned long long)r[i].size, r[i].error,
				r[i].error[0] && r[i].verify_note[0] ? "; " : "", r[i].verify_note);
	fprintf(f, "---------------------------------------------------------------------------\n");
}

void kvb_result_csv_header(FILE *f)
{
	fputs("test,driver,size,iterations,bytes,seconds,gbit_per_s,gbyte_per_s,msg_per_s,verified,"
	      "rails,p50_us,p99_us,p999_us,avg_us,min_us,max_us,ttll_us,client_cpu_pct,"
	      "server_cpu_pct,retransmits,drops\n", f);
}

void kvb_result_csv_row(FILE *f, const kvb_result *r)
{
	fprintf(f, "%s,%s,%llu,%llu,%llu,%.6f,%.4f,%.4f,%.1f,%s,%u,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,"
		"%.1f,%.1f,%.1f,%llu,%llu\n",
		r->test, r->driver, (unsigned long long)r->size, (unsigned long long)r->iterations,
		(unsigned long long)r->bytes, r->seconds, r->gbit_per_s, r->gbyte_per_s, r->msg_rate,
		r->verified ? "yes" : "no", r->rails, r->lat.p50, r->lat.p99, r->lat.p999, r->lat.avg,
		r->lat.min, r->lat.max, r->ttll_us, r->local.cpu_pct, r->peer.cpu_pct,
		(unsigned long long)(r->local.retransmits + r->peer.retransmits),
		(unsigned long long)(r->local.drops + r->peer.drops));
}

static void why_set(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;
	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

int kvb_exit_code(const kvb_result *r, size_t n, const kvb_opts *o, char *why, size_t whylen)
{
	why_set(why, whylen, "%s", "");
	if (n == 0) {
		why_set(why, whylen, "no result");
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		if (r[i].error[0]) {
			why_set(why, whylen, "run failed at %llu B: %s", (unsigned long long)r[i].size,
				r[i].error);
			return 1;
		}
		if (!r[i].verified) {
			why_set(why, whylen, "verification failed at %llu B: %s",
				(unsigned long long)r[i].size,
				r[i].verify_note);
			return 1;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (o->min_bw_gbit >= 0 && !r[i].has_lat && r[i].gbit_per_s < o->min_bw_gbit) {
			why_set(why, whylen, "bandwidth %.2f Gb/s at %llu B is below --min-bw %.2f",
				r[i].gbit_per_s, (unsigned long long)r[i].size, o->min_bw_gbit);
			return 2;
		}
		if (o->min_bw_gbit >= 0 && r[i].is_kv && r[i].gbit_per_s < o->min_bw_gbit) {
			why_set(why, whylen, "bandwidth %.2f Gb/s is below --min-bw %.2f",
				r[i].gbit_per_s, o->min_bw_gbit);
			return 2;
		}
		if (o->max_lat_us >= 0 && r[i].has_lat && r[i].lat.p99 > o->max_lat_us) {
			why_set(why, whylen, "p99 latency %.2f us at %llu B is above --max-lat %.2f",
				r[i].lat.p99, (unsigned long long)r[i].size, o->max_lat_us);
			return 2;
		}
	}
	return 0;
}
