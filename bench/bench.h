/* SPDX-License-Identifier: MIT */
/*
 * kvwire-bench internals: options, model shapes, statistics, data patterns
 * and result output. This part has no kvwire dependency; it is built as a
 * small static library linked by the tool and by tests/bench.
 */
#ifndef KVB_BENCH_H
#define KVB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define KVB_MAX_SWEEP 32
#define KVB_MAX_RAILS 16

/* ------------------------------------------------------------------ options */
enum kvb_test {
	KVB_T_NONE = 0, KVB_T_SERVER, KVB_T_BW, KVB_T_LAT, KVB_T_KV, KVB_T_COMPARE, KVB_T_FLEET,
	KVB_T_FLEET_NODE,
};

typedef struct kvb_opts {
	enum kvb_test test;
	enum kvb_test compare_test; /* compare: which test (bw default, kv) */
	char driver[16];
	char listen[256];
	char connect[256];
	char ctl[300];              /* explicit control address (internal) */
	int ctl_port;               /* -p / --ctl-port, 0 = URI port + 1 */
	bool loopback;
	bool once;
	/* bw / lat */
	uint64_t size;
	bool sweep;
	uint64_t iters;             /* 0 = the test's default */
	double duration;            /* seconds, 0 = by iterations */
	unsigned rails;
	bool bidir;
	unsigned tx_depth;
	/* kv */
	char model[32];
	unsigned layers, kv_heads, head_dim, dtype_bytes, kv_factor;
	unsigned tokens, block_tokens;
	uint64_t layer_interval_us;
	unsigned seqs;
	double rate;
	bool contiguous;
	unsigned pool_factor;
	/* kv with a geometry per side (docs/man/kvwire-bench.1.scd): the client
	 * (prefill, src) and the server (decode, dst) each lay out the cache
	 * their own way; verification then goes by logical coordinate. */
	bool geom;                  /* any --src-/--dst- option given */
	char src_layout[24], dst_layout[24];   /* nhd (default) hnd kv-interleaved ... */
	unsigned src_block_tokens, dst_block_tokens; /* 0 = --block-tokens */
	unsigned src_tp, src_rank, dst_tp, dst_rank; /* tp 0/1 = all heads */
	/* output */
	bool json, csv, report_gbits, quiet;
	char json_file[256];
	double min_bw_gbit;         /* < 0 = off */
	double max_lat_us;          /* < 0 = off */
	/* pass-through config */
	char rdma_dev[64];
	char rdma_gid[16];
	char fault[128];
	char secret[128];
	uint64_t seed;
	bool no_pin;
	unsigned repeat;            /* compare: runs of kvwire and each peer (median) */
	bool inject_corruption;     /* self-test of the verifier: flip a sent bit */
	unsigned timeout_ms;
	/* fleet: N prefill and M decode processes and a router (bench/fleet.c) */
	unsigned prefill, decode;
	char mix[256];              /* "128:0.5,1024:0.3,4096:0.2" */
	char trace[256];
	char trace_format[16];      /* mooncake | azure ("" = by file name) */
	double time_scale;          /* multiplies inter-arrival gaps */
	uint64_t requests;          /* 0 = the whole trace, 200 for Poisson */
	int kill_decode;            /* -1 none: SIGKILL decode I at request kill_at */
	uint64_t kill_at;
	int restart_ms;             /* -1 none: fork decode kill_decode again MS after the kill */
	bool idle_baseline;         /* after the replay, the same requests one at a time */
	bool pick_least;            /* least-outstanding decode, else round-robin */
	/* fleet --join and fleet-node: the directory (libkvwire-dir on etcd) */
	char dir[256];              /* etcd endpoints, "http://127.0.0.1:2379" */
	char pool[64];
	char name[64];              /* fleet-node: its entry's name */
	int role;                   /* fleet-node: 1 prefill, 2 decode */
	bool join;                  /* fleet: take running fleet-nodes of --pool */
	unsigned ttl_s;             /* fleet-node: its lease (0 = the library's 10 s) */
} kvb_opts;

void kvb_opts_init(kvb_opts *o);
/* 0 ok, 1 help printed/asked (exit 0), -1 error (message in err). */
int kvb_opts_parse(int argc, char **argv, kvb_opts *o, char *err, size_t errlen);
/* "64K", "1M", "1MiB", "4096" -> bytes; -1 on bad input. */
int kvb_parse_size(const char *s, uint64_t *out);
void kvb_usage(FILE *f);
const char *kvb_test_name(enum kvb_test t);
/* Sizes of a perftest-like sweep (-a): 2 B .. 8 MiB. Returns count. */
size_t kvb_sweep_sizes(uint64_t *sizes, size_t max);

/* --------------------------------------------------------------- kv shapes */
typedef struct kvb_model {
	const char *name;
	unsigned layers, kv_heads, head_dim, kv_factor; /* kv_factor 2 = K,V; 1 = MLA latent */
} kvb_model;

const kvb_model *kvb_model_find(const char *name);
const kvb_model *kvb_models(size_t *n);
/* Applies --model presets, fills defaults; -1 with message on a bad shape. */
int kvb_kv_resolve(kvb_opts *o, char *err, size_t errlen);
uint64_t kvb_kv_bytes_per_token(const kvb_opts *o);
uint64_t kvb_kv_block_bytes(const kvb_opts *o);
uint32_t kvb_kv_blocks_per_seq(const kvb_opts *o);
/* The kv run's scattered grant: a seeded permutation of n decode-pool blocks. */
void kvb_scatter_perm(uint64_t seed, uint32_t n, uint32_t *perm);
/* compare kv's yardsticks: one thread's memcpy of the bytes of o's KV
 * sequences, flat (one call) or block by block into the kv run's scattered
 * blocks; Gb/s of the median pass, every byte checked (bench/kvcopy.c). */
int kvb_kvcopy(const kvb_opts *o, bool scattered, double *gbit, char *err, size_t errlen);
/* Layout names for --src-layout/--dst-layout; 0 on a known name. */
int kvb_layout_name_ok(const char *name);
/* Heads [h0, h1) a side holds under --*-tp N:RANK. */
void kvb_tp_heads(unsigned heads, unsigned tp, unsigned rank, unsigned *h0, unsigned *h1);

/* --------------------------------------------------------------- statistics */
typedef struct kvb_samples {
	double *v;
	size_t n, cap;
} kvb_samples;

typedef struct kvb_stats {
	size_t n;
	double min, max, avg, p50, p99, p999;
} kvb_stats;

int kvb_samples_add(kvb_samples *s, double v);
void kvb_samples_free(kvb_samples *s);
/* Nearest-rank percentiles; sorts s in place. n == 0 gives all zeros. */
void kvb_stats_compute(kvb_samples *s, kvb_stats *out);
double kvb_percentile_sorted(const double *v, size_t n, double p);

/* --------------------------------------------------------------- patterns */
/* Deterministic pseudo-random bytes for (seed, a, b). */
void kvb_pattern_fill(void *buf, size_t len, uint64_t seed, uint64_t a, uint64_t b);
/* xxh3 of the page's bytes after the 8-byte stamp (whole page if < 16 B). */
uint64_t kvb_page_hash(const void *page, size_t len);
/* Expected hash of a page filled with kvb_pattern_fill(seed, a, b). */
uint64_t kvb_pattern_hash(size_t len, uint64_t seed, uint64_t a, uint64_t b, void *scratch);
/* The 8-byte stamp put at the start of page `page` of message `k`. */
uint64_t kvb_stamp(uint64_t seed, uint64_t k, uint64_t page);
bool kvb_has_stamp(size_t len);

/* ------------------------------------------------------------------ result */
typedef struct kvb_side {
	bool valid;
	double cpu_pct;             /* (user+sys) / wall of the run */
	uint64_t reg_ns;
	uint64_t bytes_tx, bytes_rx;
	uint64_t retransmits, drops;
} kvb_side;

typedef struct kvb_result {
	char test[16];
	char driver[16];
	uint64_t size;              /* message / block bytes */
	uint64_t iterations;
	uint64_t bytes;             /* payload moved (one direction, or both for -b) */
	double seconds;
	double gbit_per_s, gbyte_per_s, msg_rate;
	bool verified;
	char verify_note[256];
	unsigned rails;
	uint64_t rail_bytes[KVB_MAX_RAILS];
	bool bidir;
	bool has_lat;
	kvb_stats lat;              /* µs */
	kvb_side local, peer;       /* client (local) and server (peer) */
	/* kv */
	bool is_kv;
	char model[32];
	unsigned layers, seqs, tokens, block_tokens;
	uint64_t block_bytes, blocks_per_seq, runs_per_layer;
	bool contiguous;
	double ttll_us;             /* time to last layer, mean */
	double frags_per_seq;       /* sender's data fragments / sequences done */
	bool geom;
	char src_geom[64], dst_geom[64]; /* "nhd/16 tp1:0" */
	double rate;
	char error[256];
} kvb_result;

void kvb_result_init(kvb_result *r, const char *test, const char *driver);
void kvb_result_finish(kvb_result *r); /* derives rates from bytes/seconds */
json_t *kvb_result_json(const kvb_result *r);
/* One JSON object for a list of results (a sweep adds "results"). */
json_t *kvb_results_json(const kvb_result *r, size_t n);
void kvb_result_table(FILE *f, const kvb_result *r, size_t n, bool report_gbits);
void kvb_result_csv_header(FILE *f);
void kvb_result_csv_row(FILE *f, const kvb_result *r);
/* 1 when not verified, 2 when a threshold is missed, else 0. */
int kvb_exit_code(const kvb_result *r, size_t n, const kvb_opts *o, char *why, size_t whylen);

/* ------------------------------------------------------------ test params */
/* What the client sends the server to set up a session (one JSON object). */
json_t *kvb_params_json(const kvb_opts *o);
/* Starts from kvb_opts_init() defaults; -1 with message on bad input. */
int kvb_params_parse(const json_t *j, kvb_opts *o, char *err, size_t errlen);
/* Iterations the test runs when -n and -D are not given. */
uint64_t kvb_default_iters(const kvb_opts *o);

/* ------------------------------------------------------- fleet streams */
#define KVB_MIX_MAX 16
typedef struct kvb_mix {
	unsigned n;
	uint32_t tokens[KVB_MIX_MAX];
	double weight[KVB_MIX_MAX];  /* normalised to sum 1 */
} kvb_mix;

typedef struct kvb_arrival_rec {
	uint64_t t_ns;               /* since the stream's start */
	uint32_t tokens, out_tokens;
} kvb_arrival_rec;

typedef struct kvb_stream {
	kvb_arrival_rec *r;
	size_t n, cap;
} kvb_stream;

/* "TOKENS:WEIGHT,..." -> mix; -1 with a sentence. */
int kvb_mix_parse(const char *s, kvb_mix *m, char *err, size_t errlen);
/* count Poisson arrivals at rate per second, prompt lengths drawn from m. */
int kvb_stream_poisson(kvb_stream *s, double rate, const kvb_mix *m, uint64_t count, uint64_t seed);
/* A Mooncake JSONL or Azure CSV trace (fmt "mooncake", "azure", or "" = by
 * the file name); -1 with "FILE:LINE: what is wrong" on a bad line. */
int kvb_stream_load(kvb_stream *s, const char *path, const char *fmt, char *err, size_t errlen);
/* Times relative to the first arrival, gaps x scale, at most limit (0 = all). */
void kvb_stream_shape(kvb_stream *s, double scale, uint64_t limit);
uint32_t kvb_stream_max_tokens(const kvb_stream *s);
void kvb_stream_free(kvb_stream *s);

/* ------------------------------------------------------------------- misc */
uint64_t kvb_now_ns(void);

#endif
