/* SPDX-License-Identifier: MIT */
/* kvwire-bench option parser (perftest-compatible where the names overlap). */
#include "bench.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const test_names[] = {
	[KVB_T_NONE] = "none", [KVB_T_SERVER] = "server", [KVB_T_BW] = "bw",
	[KVB_T_LAT] = "lat", [KVB_T_KV] = "kv", [KVB_T_COMPARE] = "compare", [KVB_T_FLEET] = "fleet",
	[KVB_T_FLEET_NODE] = "fleet-node",
};

const char *kvb_test_name(enum kvb_test t)
{
	if ((unsigned)t >= sizeof(test_names) / sizeof(test_names[0]))
		return "?";
	return test_names[t];
}

void kvb_opts_init(kvb_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = 65536;
	o->rails = 1;
	o->tx_depth = 16;
	o->tokens = 4096;
	o->block_tokens = 16;
	o->seqs = 1;
	o->pool_factor = 2;
	o->min_bw_gbit = -1;
	o->max_lat_us = -1;
	o->seed = 0x6b7677697265ull; /* "kvwire" */
	o->timeout_ms = 30000;
	o->repeat = 1;
	o->time_scale = 1;
	o->kill_decode = -1;
	o->restart_ms = -1;
}

void kvb_usage(FILE *f)
{
	fputs("usage: kvwire-bench server --driver D --listen URI [--once]\n"
	      "       kvwire-bench bw|lat|kv --driver D --connect URI [options]\n"
	      "       kvwire-bench bw|lat|kv --loopback --driver D [options]\n"
	      "       kvwire-bench compare [bw|lat|kv] --driver D [--repeat N] [options]\n"
	      "\n"
	      "common:  --driver shm|tcp|rdma|dpdk  -p/--ctl-port PORT  --secret S  --fault SPEC\n"
	      "         -d DEV (rdma_dev)  -x GID (rdma_gid)  --seed N  --timeout-ms MS  --no-pin\n"
	      "         --inject-corruption (flips one sent bit: checks that verify catches it)\n"
	      "bw/lat:  -s SIZE  -a (sweep 2 B..8 MiB)  -n ITERS  -D SECONDS  -q RAILS  -b  -t TX_DEPTH\n"
	      "kv:      --model llama3-8b|llama3-70b|qwen3-8b|qwen3-235b|deepseek-v3\n"
	      "         --layers N --kv-heads N --head-dim N --dtype bf16|fp16|fp8|fp32\n"
	      "         --tokens N (4096) --block-tokens N (16) --layer-interval USEC\n"
	      "         --seqs N --rate REQ_PER_S --contiguous --pool-factor N (2)\n"
	      "         --src-layout|--dst-layout nhd|hnd|kv-interleaved|hnd-kv-interleaved|kv-separate|mla\n"
	      "         --src-block-tokens N --dst-block-tokens N --src-tp N:RANK --dst-tp N:RANK\n"
	      "       kvwire-bench fleet --driver shm|tcp --prefill N --decode M [--model P]\n"
	      "                (--rate R --mix 128:0.5,1024:0.3,4096:0.2 | --trace F [--trace-format mooncake|azure])\n"
	      "                [--time-scale F] [--requests K] [--pick rr|least] [--kill-decode I@REQ [--restart-ms MS]]\n"
	      "                [--idle-baseline]\n"
	      "       kvwire-bench fleet --join --dir ETCD_URL --pool P --driver shm|tcp --prefill N --decode M (stream)\n"
	      "       kvwire-bench fleet-node --role prefill|decode --dir ETCD_URL --pool P --name NAME\n"
	      "                --driver shm|tcp [--model P] [--tokens MAX] [--ttl S] [--listen URI] [--once]\n"
	      "output:  --json | --out_json [--out_json_file F] | --csv  --report_gbits  --quiet\n"
	      "limits:  --min-bw GBIT  --max-lat USEC (p99)  -> exit 2 when missed; failed verify -> exit 1\n",
	      f);
}

int kvb_parse_size(const char *s, uint64_t *out)
{
	char *end;
	uint64_t mult = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	switch (toupper((unsigned char)*end)) {
	case '\0': break;
	case 'K': mult = 1ull << 10; end++; break;
	case 'M': mult = 1ull << 20; end++; break;
	case 'G': mult = 1ull << 30; end++; break;
	default: return -1;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v == 0 || v > (1ull << 40) / mult)
		return -1;
	*out = v * mult;
	return 0;
}

size_t kvb_sweep_sizes(uint64_t *sizes, size_t max)
{
	size_t n = 0;
	for (uint64_t s = 2; s <= (8ull << 20) && n < max; s <<= 1)
		sizes[n++] = s;
	return n;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_double(const char *s, double *out)
{
	char *end;
	if (!s || !*s)
		return -1;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v < 0)
		return -1;
	*out = v;
	return 0;
}

static int copy_str(char *dst, size_t len, const char *src)
{
	if (strlen(src) >= len)
		return -1;
	strcpy(dst, src);
	return 0;
}

static int dtype_bytes(const char *s)
{
	if (!strcmp(s, "bf16") || !strcmp(s, "fp16") || !strcmp(s, "f16"))
		return 2;
	if (!strcmp(s, "fp8") || !strcmp(s, "int8"))
		return 1;
	if (!strcmp(s, "fp32") || !strcmp(s, "f32"))
		return 4;
	return -1;
}

static enum kvb_test test_from_name(const char *s)
{
	for (unsigned i = KVB_T_SERVER; i <= KVB_T_FLEET_NODE; i++)
		if (!strcmp(s, test_names[i]))
			return (enum kvb_test)i;
	return KVB_T_NONE;
}

enum {
	O_DRIVER = 1000, O_LISTEN, O_CONNECT, O_LOOPBACK, O_ONCE, O_MODEL, O_LAYERS, O_KVHEADS,
	O_HEADDIM, O_DTYPE, O_TOKENS, O_BLOCKTOK, O_LAYERINT, O_SEQS, O_RATE, O_CONTIG, O_POOLF,
	O_JSON, O_OUTJSON, O_OUTJSONF, O_CSV, O_GBITS, O_MINBW, O_MAXLAT, O_FAULT, O_SECRET,
	O_SEED, O_NOPIN, O_CORRUPT, O_REPEAT, O_TIMEOUT, O_CTL, O_QUIET, O_HELP,
	O_SRCLAY, O_DSTLAY, O_SRCBT, O_DSTBT, O_SRCTP, O_DSTTP,
	O_PREFILL, O_DECODE, O_MIX, O_TRACE, O_TRACEFMT, O_TSCALE, O_REQUESTS, O_KILLDEC, O_PICK,
	O_RESTART, O_IDLEBASE, O_DIR, O_POOL, O_NAME, O_ROLE, O_JOIN, O_TTL,
};

static const struct option long_opts[] = {
	{"driver", required_argument, 0, O_DRIVER},
	{"listen", required_argument, 0, O_LISTEN},
	{"connect", required_argument, 0, O_CONNECT},
	{"loopback", no_argument, 0, O_LOOPBACK},
	{"once", no_argument, 0, O_ONCE},
	{"size", required_argument, 0, 's'},
	{"all", no_argument, 0, 'a'},
	{"iters", required_argument, 0, 'n'},
	{"duration", required_argument, 0, 'D'},
	{"qp", required_argument, 0, 'q'},
	{"rails", required_argument, 0, 'q'},
	{"bidirectional", no_argument, 0, 'b'},
	{"tx-depth", required_argument, 0, 't'},
	{"port", required_argument, 0, 'p'},
	{"ctl-port", required_argument, 0, 'p'},
	{"ib-dev", required_argument, 0, 'd'},
	{"gid-index", required_argument, 0, 'x'},
	{"model", required_argument, 0, O_MODEL},
	{"layers", required_argument, 0, O_LAYERS},
	{"kv-heads", required_argument, 0, O_KVHEADS},
	{"head-dim", required_argument, 0, O_HEADDIM},
	{"dtype", required_argument, 0, O_DTYPE},
	{"tokens", required_argument, 0, O_TOKENS},
	{"block-tokens", required_argument, 0, O_BLOCKTOK},
	{"layer-interval", required_argument, 0, O_LAYERINT},
	{"seqs", required_argument, 0, O_SEQS},
	{"rate", required_argument, 0, O_RATE},
	{"contiguous", no_argument, 0, O_CONTIG},
	{"pool-factor", required_argument, 0, O_POOLF},
	{"src-layout", required_argument, 0, O_SRCLAY},
	{"dst-layout", required_argument, 0, O_DSTLAY},
	{"src-block-tokens", required_argument, 0, O_SRCBT},
	{"dst-block-tokens", required_argument, 0, O_DSTBT},
	{"src-tp", required_argument, 0, O_SRCTP},
	{"dst-tp", required_argument, 0, O_DSTTP},
	{"json", no_argument, 0, O_JSON},
	{"out_json", no_argument, 0, O_OUTJSON},
	{"out_json_file", required_argument, 0, O_OUTJSONF},
	{"csv", no_argument, 0, O_CSV},
	{"report_gbits", no_argument, 0, O_GBITS},
	{"min-bw", required_argument, 0, O_MINBW},
	{"max-lat", required_argument, 0, O_MAXLAT},
	{"fault", required_argument, 0, O_FAULT},
	{"secret", required_argument, 0, O_SECRET},
	{"seed", required_argument, 0, O_SEED},
	{"no-pin", no_argument, 0, O_NOPIN},
	{"inject-corruption", no_argument, 0, O_CORRUPT},
	{"repeat", required_argument, 0, O_REPEAT},
	{"timeout-ms", required_argument, 0, O_TIMEOUT},
	{"ctl", required_argument, 0, O_CTL},
	{"quiet", no_argument, 0, O_QUIET},
	{"help", no_argument, 0, O_HELP},
	{"prefill", required_argument, 0, O_PREFILL},
	{"decode", required_argument, 0, O_DECODE},
	{"mix", required_argument, 0, O_MIX},
	{"trace", required_argument, 0, O_TRACE},
	{"trace-format", required_argument, 0, O_TRACEFMT},
	{"time-scale", required_argument, 0, O_TSCALE},
	{"requests", required_argument, 0, O_REQUESTS},
	{"kill-decode", required_argument, 0, O_KILLDEC},
	{"pick", required_argument, 0, O_PICK},
	{"restart-ms", required_argument, 0, O_RESTART},
	{"idle-baseline", no_argument, 0, O_IDLEBASE},
	{"dir", required_argument, 0, O_DIR},
	{"pool", required_argument, 0, O_POOL},
	{"name", required_argument, 0, O_NAME},
	{"role", required_argument, 0, O_ROLE},
	{"join", no_argument, 0, O_JOIN},
	{"ttl", required_argument, 0, O_TTL},
	{0, 0, 0, 0},
};

/* Options that take numbers; returns 0, or -1 with a message. */
static int opt_number(kvb_opts *o, int c, const char *arg, char *err, size_t errlen)
{
	unsigned long long u;
	double d;

	switch (c) {
	case 's':
		if (kvb_parse_size(arg, &o->size) || o->size > (1ull << 30))
			return fail(err, errlen, "-s %s: give a size in bytes up to 1G, e.g. 65536, 64K or 1M", arg);
		return 0;
	case 'n':
		if (parse_uint(arg, 1ull << 40, &u) || u == 0)
			return fail(err, errlen, "-n %s: give a positive iteration count", arg);
		o->iters = u;
		return 0;
	case 'D':
		if (parse_double(arg, &d) || d <= 0 || d > 86400)
			return fail(err, errlen, "-D %s: give a duration in seconds (0 < D <= 86400)", arg);
		o->duration = d;
		return 0;
	case 'q':
		if (parse_uint(arg, KVB_MAX_RAILS, &u) || u == 0)
			return fail(err, errlen, "-q %s: rails must be 1..%d", arg, KVB_MAX_RAILS);
		o->rails = (unsigned)u;
		return 0;
	case 't':
		if (parse_uint(arg, 4096, &u) || u == 0)
			return fail(err, errlen, "-t %s: tx depth must be 1..4096", arg);
		o->tx_depth = (unsigned)u;
		return 0;
	case 'p':
		if (parse_uint(arg, 65535, &u) || u == 0)
			return fail(err, errlen, "-p %s: give a TCP port 1..65535", arg);
		o->ctl_port = (int)u;
		return 0;
	}
	return 1;
}

/* --src-/--dst- geometry options; 1 when c is none of them. */
static int opt_geom(kvb_opts *o, int c, const char *arg, char *err, size_t errlen)
{
	unsigned long long u, r;
	char *end;

	switch (c) {
	case O_SRCLAY: case O_DSTLAY:
		if (kvb_layout_name_ok(arg))
			return fail(err, errlen, "--%s-layout %s: use nhd, hnd, kv-interleaved, "
				    "hnd-kv-interleaved, kv-separate or mla", c == O_SRCLAY ? "src" : "dst", arg);
		o->geom = true;
		return copy_str(c == O_SRCLAY ? o->src_layout : o->dst_layout, sizeof(o->src_layout), arg);
	case O_SRCBT: case O_DSTBT:
		if (parse_uint(arg, 1u << 16, &u) || u == 0)
			return fail(err, errlen, "%s: give a positive number of tokens a block", arg);
		*(c == O_SRCBT ? &o->src_block_tokens : &o->dst_block_tokens) = (unsigned)u;
		o->geom = true;
		return 0;
	case O_SRCTP: case O_DSTTP:
		errno = 0;
		u = strtoull(arg, &end, 10);
		r = *end == ':' ? strtoull(end + 1, &end, 10) : ~0ull;
		if (errno || *end || u == 0 || u > 1024 || r >= u)
			return fail(err, errlen, "--%s-tp %s: give N:RANK with RANK < N, e.g. 4:1",
				    c == O_SRCTP ? "src" : "dst", arg);
		if (c == O_SRCTP) o->src_tp = (unsigned)u, o->src_rank = (unsigned)r;
		else o->dst_tp = (unsigned)u, o->dst_rank = (unsigned)r;
		o->geom = true;
		return 0;
	}
	return 1;
}

static int opt_kv(kvb_opts *o, int c, const char *arg, char *err, size_t errlen)
{
	unsigned long long u;
	double d;
	int b;

	switch (c) {
	case O_MODEL:
		if (!kvb_model_find(arg))
			return fail(err, errlen, "--model %s: unknown; use llama3-8b, llama3-70b, qwen3-8b, "
				    "qwen3-235b or deepseek-v3", arg);
		return copy_str(o->model, sizeof(o->model), arg);
	case O_LAYERS: case O_KVHEADS: case O_HEADDIM: case O_TOKENS: case O_BLOCKTOK:
	case O_SEQS: case O_POOLF:
		if (parse_uint(arg, 1u << 24, &u) || u == 0)
			return fail(err, errlen, "%s: give a positive number", arg);
		if (c == O_LAYERS) o->layers = (unsigned)u;
		else if (c == O_KVHEADS) o->kv_heads = (unsigned)u;
		else if (c == O_HEADDIM) o->head_dim = (unsigned)u;
		else if (c == O_TOKENS) o->tokens = (unsigned)u;
		else if (c == O_BLOCKTOK) o->block_tokens = (unsigned)u;
		else if (c == O_SEQS) o->seqs = (unsigned)u;
		else o->pool_factor = (unsigned)u;
		return 0;
	case O_DTYPE:
		if ((b = dtype_bytes(arg)) < 0)
			return fail(err, errlen, "--dtype %s: use bf16, fp16, fp8 or fp32", arg);
		o->dtype_bytes = (unsigned)b;
		return 0;
	case O_LAYERINT:
		if (parse_uint(arg, 60000000, &u))
			return fail(err, errlen, "--layer-interval %s: give microseconds", arg);
		o->layer_interval_us = u;
		return 0;
	case O_RATE:
		if (parse_double(arg, &d) || d <= 0)
			return fail(err, errlen, "--rate %s: give requests per second (> 0)", arg);
		o->rate = d;
		return 0;
	case O_CONTIG:
		o->contiguous = true;
		return 0;
	}
	return 1;
}

/* fleet --join and fleet-node options; 1 when c is none of them. */
static int opt_dir(kvb_opts *o, int c, const char *arg, char *err, size_t errlen)
{
	unsigned long long u;

	switch (c) {
	case O_DIR:
		return copy_str(o->dir, sizeof(o->dir), arg) ? fail(err, errlen, "--dir is too long") : 0;
	case O_POOL: case O_NAME:
		if (!*arg || strlen(arg) > 63 || strspn(arg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
							 "0123456789._-") != strlen(arg))
			return fail(err, errlen, "--%s %s: give 1-63 characters of A-Z a-z 0-9 . _ -",
				    c == O_POOL ? "pool" : "name", arg);
		strcpy(c == O_POOL ? o->pool : o->name, arg);
		return 0;
	case O_ROLE:
		if (strcmp(arg, "prefill") && strcmp(arg, "decode"))
			return fail(err, errlen, "--role %s: use prefill or decode", arg);
		o->role = !strcmp(arg, "prefill") ? 1 : 2;
		return 0;
	case O_JOIN:
		o->join = true;
		return 0;
	case O_TTL:
		if (parse_uint(arg, 3600, &u) || u < 2)
			return fail(err, errlen, "--ttl %s: give the lease in seconds, 2..3600", arg);
		o->ttl_s = (unsigned)u;
		return 0;
	}
	return 1;
}

/* fleet options; 1 when c is none of them. */
static int opt_fleet(kvb_opts *o, int c, const char *arg, char *err, size_t errlen)
{
	unsigned long long u, r;
	char *end;
	double d;
	kvb_mix m;

	switch (c) {
	case O_PREFILL: case O_DECODE:
		if (parse_uint(arg, 64, &u) || u == 0)
			return fail(err, errlen, "--%s %s: give 1..64 processes",
				    c == O_PREFILL ? "prefill" : "decode", arg);
		*(c == O_PREFILL ? &o->prefill : &o->decode) = (unsigned)u;
		return 0;
	case O_MIX:
		if (kvb_mix_parse(arg, &m, err, errlen))
			return -1;
		return copy_str(o->mix, sizeof(o->mix), arg) ? fail(err, errlen, "--mix is too long") : 0;
	case O_TRACE:
		return copy_str(o->trace, sizeof(o->trace), arg) ? fail(err, errlen, "--trace path too long") : 0;
	case O_TRACEFMT:
		if (strcmp(arg, "mooncake") && strcmp(arg, "azure"))
			return fail(err, errlen, "--trace-format %s: use mooncake (JSONL) or azure (CSV)", arg);
		strcpy(o->trace_format, arg);
		return 0;
	case O_TSCALE:
		if (parse_double(arg, &d) || d <= 0 || d > 1e6)
			return fail(err, errlen, "--time-scale %s: give a factor > 0 for the gaps between "
				    "arrivals (0.5 = twice as fast)", arg);
		o->time_scale = d;
		return 0;
	case O_REQUESTS:
		if (parse_uint(arg, 1ull << 32, &u) || u == 0)
			return fail(err, errlen, "--requests %s: give a positive count", arg);
		o->requests = u;
		return 0;
	case O_KILLDEC:
		errno = 0;
		u = isdigit((unsigned char)*arg) ? strtoull(arg, &end, 10) : ~0ull;
		r = u != ~0ull && *end == '@' && isdigit((unsigned char)end[1]) ? strtoull(end + 1, &end, 10) : ~0ull;
		if (errno || u > 63 || r == ~0ull || *end)
			return fail(err, errlen, "--kill-decode %s: give I@REQ (SIGKILL decode I when request "
				    "REQ arrives), e.g. 1@20", arg);
		o->kill_decode = (int)u;
		o->kill_at = r;
		return 0;
	case O_PICK:
		if (strcmp(arg, "rr") && strcmp(arg, "least"))
			return fail(err, errlen, "--pick %s: use rr (round-robin) or least (least outstanding)", arg);
		o->pick_least = !strcmp(arg, "least");
		return 0;
	case O_RESTART:
		if (parse_uint(arg, 600000, &u))
			return fail(err, errlen, "--restart-ms %s: give 0..600000 (ms after the kill to start "
				    "the decode again)", arg);
		o->restart_ms = (int)u;
		return 0;
	case O_IDLEBASE:
		o->idle_baseline = true;
		return 0;
	}
	return opt_dir(o, c, arg, err, errlen);
}

static int opt_misc(kvb_opts *o, int c, const char *arg, char *err, size_t errlen)
{
	unsigned long long u;
	double d;

	switch (c) {
	case O_DRIVER: return copy_str(o->driver, sizeof(o->driver), arg);
	case O_LISTEN: return copy_str(o->listen, sizeof(o->listen), arg);
	case O_CONNECT: return copy_str(o->connect, sizeof(o->connect), arg);
	case O_CTL: return copy_str(o->ctl, sizeof(o->ctl), arg);
	case O_LOOPBACK: o->loopback = true; return 0;
	case O_ONCE: o->once = true; return 0;
	case 'a': o->sweep = true; return 0;
	case 'b': o->bidir = true; return 0;
	case 'd': return copy_str(o->rdma_dev, sizeof(o->rdma_dev), arg);
	case 'x': return copy_str(o->rdma_gid, sizeof(o->rdma_gid), arg);
	case O_JSON: case O_OUTJSON: o->json = true; return 0;
	case O_OUTJSONF: o->json = true; return copy_str(o->json_file, sizeof(o->json_file), arg);
	case O_CSV: o->csv = true; return 0;
	case O_GBITS: o->report_gbits = true; return 0;
	case O_QUIET: o->quiet = true; return 0;
	case O_NOPIN: o->no_pin = true; return 0;
	case O_CORRUPT: o->inject_corruption = true; return 0;
	case O_FAULT: return copy_str(o->fault, sizeof(o->fault), arg);
	case O_SECRET: return copy_str(o->secret, sizeof(o->secret), arg);
	case O_MINBW: case O_MAXLAT:
		if (parse_double(arg, &d))
			return fail(err, errlen, "%s: give a non-negative number", arg);
		if (c == O_MINBW) o->min_bw_gbit = d; else o->max_lat_us = d;
		return 0;
	case O_SEED:
		if (parse_uint(arg, UINT64_MAX, &u))
			return fail(err, errlen, "--seed %s: give a number", arg);
		o->seed = u;
		return 0;
	case O_REPEAT:
		if (parse_uint(arg, 15, &u) || u == 0)
			return fail(err, errlen, "--repeat %s: give 1..15 runs", arg);
		o->repeat = (unsigned)u;
		return 0;
	case O_TIMEOUT:
		if (parse_uint(arg, 3600000, &u) || u == 0)
			return fail(err, errlen, "--timeout-ms %s: give 1..3600000", arg);
		o->timeout_ms = (unsigned)u;
		return 0;
	}
	return fail(err, errlen, "unknown option; see kvwire-bench --help");
}

static int apply_opt(kvb_opts *o, int c, const char *arg, char *err, size_t errlen)
{
	int r = opt_number(o, c, arg, err, errlen);
	if (r <= 0)
		return r;
	r = opt_geom(o, c, arg, err, errlen);
	if (r != 1)
		return r;
	r = opt_kv(o, c, arg, err, errlen);
	if (r <= 0)
		return r;
	r = opt_fleet(o, c, arg, err, errlen);
	if (r <= 0)
		return r;
	r = opt_misc(o, c, arg, err, errlen);
	if (r > 0 || (r < 0 && !err[0]))
		return fail(err, errlen, "value too long: %s", arg ? arg : "");
	return r;
}

static const char *uri_driver(const char *uri)
{
	static const char *const schemes[] = {"shm", "tcp", "rdma", "dpdk", "ofi"};
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		size_t l = strlen(schemes[i]);
		if (!strncmp(uri, schemes[i], l) && !strncmp(uri + l, "://", 3))
			return schemes[i];
	}
	return NULL;
}

static int check_fleet(kvb_opts *o, char *err, size_t errlen)
{
	if (strcmp(o->driver, "shm") && strcmp(o->driver, "tcp"))
		return fail(err, errlen, "fleet runs on --driver shm or tcp (loopback), not '%s'",
			    o->driver[0] ? o->driver : "none");
	if (!o->prefill || !o->decode)
		return fail(err, errlen, "fleet needs --prefill N and --decode M (processes of each role)");
	if (o->connect[0] || o->loopback || o->listen[0])
		return fail(err, errlen, "fleet starts its own processes: no --connect, --listen or --loopback");
	if (o->role || o->name[0] || o->ttl_s)
		return fail(err, errlen, "--role, --name and --ttl are fleet-node's; fleet --join takes --dir and --pool");
	if (o->join && (!o->dir[0] || !o->pool[0]))
		return fail(err, errlen, "fleet --join needs --dir ETCD_URL and --pool P (where the fleet-nodes publish)");
	if (!o->join && (o->dir[0] || o->pool[0]))
		return fail(err, errlen, "--dir and --pool go with --join (fleet takes running fleet-nodes)");
	if (o->join && o->restart_ms >= 0)
		return fail(err, errlen, "--restart-ms forks the killed decode again; with --join, start the "
			    "fleet-node again yourself");
	if (!o->trace[0] == !(o->rate > 0))
		return fail(err, errlen, "fleet needs one arrival stream: --rate R (Poisson, with --mix) "
			    "or --trace FILE");
	if (o->trace[0] && o->mix[0])
		return fail(err, errlen, "--mix goes with --rate; a trace brings its own prompt lengths");
	if (o->trace_format[0] && !o->trace[0])
		return fail(err, errlen, "--trace-format needs --trace FILE");
	if (o->kill_decode >= (int)o->decode)
		return fail(err, errlen, "--kill-decode %d: there are only %u decode processes (0..%u)",
			    o->kill_decode, o->decode, o->decode - 1);
	if (o->restart_ms >= 0 && o->kill_decode < 0)
		return fail(err, errlen, "--restart-ms restarts the decode that --kill-decode I@REQ kills: "
			    "give both");
	return 0;
}

static int check_node(kvb_opts *o, char *err, size_t errlen)
{
	if (strcmp(o->driver, "shm") && strcmp(o->driver, "tcp"))
		return fail(err, errlen, "fleet-node runs on --driver shm or tcp (loopback), not '%s'",
			    o->driver[0] ? o->driver : "none");
	if (!o->role || !o->dir[0] || !o->pool[0] || !o->name[0])
		return fail(err, errlen, "fleet-node needs --role prefill|decode, --dir ETCD_URL, --pool P "
			    "and --name NAME");
	if (o->prefill || o->decode || o->mix[0] || o->trace[0] || o->kill_decode >= 0 ||
	    o->restart_ms >= 0 || o->idle_baseline || o->join || o->connect[0] || o->loopback || o->rate > 0)
		return fail(err, errlen, "fleet-node takes no stream or fleet options: the router (fleet --join) "
			    "brings them");
	if (o->listen[0] && (!uri_driver(o->listen) || strcmp(uri_driver(o->listen), o->driver)))
		return fail(err, errlen, "--driver %s does not match the URI %s", o->driver, o->listen);
	return 0;
}

static int check_roles(kvb_opts *o, char *err, size_t errlen)
{
	if (o->test == KVB_T_FLEET)
		return check_fleet(o, err, errlen);
	if (o->test == KVB_T_FLEET_NODE)
		return check_node(o, err, errlen);
	if (o->prefill || o->decode || o->mix[0] || o->trace[0] || o->kill_decode >= 0 ||
	    o->restart_ms >= 0 || o->idle_baseline)
		return fail(err, errlen, "--prefill, --decode, --mix, --trace, --kill-decode, --restart-ms "
			    "and --idle-baseline apply to fleet only");
	if (o->dir[0] || o->pool[0] || o->name[0] || o->role || o->join || o->ttl_s)
		return fail(err, errlen, "--dir, --pool, --name, --role, --join and --ttl apply to fleet and "
			    "fleet-node only");
	const char *uri = o->test == KVB_T_SERVER ? o->listen : o->connect;
	if (!o->driver[0] && uri[0] && uri_driver(uri))
		strcpy(o->driver, uri_driver(uri));
	if (!o->driver[0])
		return fail(err, errlen, "say which driver to use: --driver shm|tcp|rdma|dpdk|ofi");
	if (uri[0] && uri_driver(uri) && strcmp(uri_driver(uri), o->driver))
		return fail(err, errlen, "--driver %s does not match the URI %s", o->driver, uri);
	if (o->test == KVB_T_SERVER) {
		if (!o->listen[0])
			return fail(err, errlen, "server needs --listen URI (e.g. tcp://127.0.0.1:18515)");
		return 0;
	}
	if (o->test == KVB_T_COMPARE)
		o->loopback = true;
	if (o->loopback && o->connect[0])
		return fail(err, errlen, "--loopback and --connect exclude each other");
	if (!o->loopback && !o->connect[0])
		return fail(err, errlen, "%s needs --connect URI or --loopback", kvb_test_name(o->test));
	return 0;
}

static int take_test(kvb_opts *o, const char *name, char *err, size_t errlen)
{
	enum kvb_test t = test_from_name(name);
	if (o->test == KVB_T_NONE) {
		if (t == KVB_T_NONE)
			return fail(err, errlen, "unknown test '%s': use server, bw, lat, kv, compare, fleet or "
				    "fleet-node", name);
		o->test = t;
		o->compare_test = KVB_T_BW;
		return 0;
	}
	if (o->test == KVB_T_COMPARE && (t == KVB_T_BW || t == KVB_T_KV || t == KVB_T_LAT)) {
		o->compare_test = t;
		return 0;
	}
	return fail(err, errlen, "unexpected argument '%s'", name);
}

int kvb_opts_parse(int argc, char **argv, kvb_opts *o, char *err, size_t errlen)
{
	int c;

	err[0] = '\0';
	optind = 0; /* full reset of GNU getopt (tests parse many times) */
	opterr = 0;
	for (;;) {
		/* the test name may come anywhere among the options */
		while (optind > 0 && optind < argc && argv[optind][0] != '-') {
			if (take_test(o, argv[optind], err, errlen))
				return -1;
			optind++;
		}
		c = getopt_long(argc, argv, "+s:an:D:q:bt:p:d:x:h", long_opts, NULL);
		if (c == -1) {
			if (optind < argc && argv[optind][0] != '-')
				continue;
			break;
		}
		if (c == 'h' || c == O_HELP)
			return 1;
		if (c == '?' || c == ':')
			return fail(err, errlen, "bad or incomplete option '%s'; see kvwire-bench --help",
				    argv[optind - 1]);
		if (apply_opt(o, c, optarg, err, errlen))
			return -1;
	}
	if (optind < argc)
		return fail(err, errlen, "unexpected argument '%s'", argv[optind]);
	if (o->test == KVB_T_NONE)
		return fail(err, errlen, "say which test to run: server, bw, lat, kv, compare or fleet");
	if (o->json && o->csv)
		return fail(err, errlen, "choose one of --json and --csv");
	if (o->sweep && o->test == KVB_T_KV)
		return fail(err, errlen, "-a (size sweep) applies to bw and lat, not kv");
	if (o->geom && o->test != KVB_T_KV)
		return fail(err, errlen, "--src-/--dst- geometry options apply to kv only");
	return check_roles(o, err, errlen);
}
