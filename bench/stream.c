/* SPDX-License-Identifier: MIT */
/* Request streams of kvwire-bench fleet: Poisson arrivals with a prompt-length
 * mix, or a trace file (Mooncake JSONL, Azure LLM inference CSV). */
#include "bench.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int sfail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

int kvb_mix_parse(const char *s, kvb_mix *m, char *err, size_t errlen)
{
	kvb_mix out = {0};
	double sum = 0;
	const char *p = s;

	while (*p) {
		char *end;
		errno = 0;
		unsigned long t = isdigit((unsigned char)*p) ? strtoul(p, &end, 10) : 0;
		if (!t || errno || *end != ':' || t > (1u << 24) || out.n == KVB_MIX_MAX)
			return sfail(err, errlen, "--mix %s: give up to %d TOKENS:WEIGHT pairs, e.g. "
				     "128:0.5,1024:0.3,4096:0.2", s, KVB_MIX_MAX);
		double w = strtod(end + 1, &end);
		if (errno || !isfinite(w) || w <= 0 || (*end && *end != ','))
			return sfail(err, errlen, "--mix %s: each weight must be a number > 0, e.g. 128:0.5", s);
		out.tokens[out.n] = (uint32_t)t;
		out.weight[out.n++] = w;
		sum += w;
		p = *end ? end + 1 : end;
	}
	if (!out.n)
		return sfail(err, errlen, "--mix is empty: give TOKENS:WEIGHT pairs, e.g. 128:0.5,1024:0.5");
	for (unsigned i = 0; i < out.n; i++)
		out.weight[i] /= sum;
	*m = out;
	return 0;
}

static int stream_add(kvb_stream *s, uint64_t t_ns, uint32_t tokens, uint32_t out_tokens)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		kvb_arrival_rec *r = realloc(s->r, cap * sizeof(*r));
		if (!r)
			return -1;
		s->r = r;
		s->cap = cap;
	}
	s->r[s->n++] = (kvb_arrival_rec){.t_ns = t_ns, .tokens = tokens, .out_tokens = out_tokens};
	return 0;
}

static double unit_rand(uint64_t *x)
{
	*x = *x * 6364136223846793005ull + 1442695040888963407ull;
	return ((double)(*x >> 11) + 0.5) / 9007199254740992.0;
}

int kvb_stream_poisson(kvb_stream *s, double rate, const kvb_mix *m, uint64_t count, uint64_t seed)
{
	uint64_t x = seed ^ 0x666c656574ull;
	double t = 0;

	for (uint64_t k = 0; k < count; k++) {
		double u = unit_rand(&x), acc = 0;
		unsigned i = 0;
		while (i + 1 < m->n && u > (acc += m->weight[i]))
			i++;
		if (stream_add(s, (uint64_t)(t * 1e9), m->tokens[i], 0))
			return -1;
		t += -log(unit_rand(&x)) / rate;
	}
	return 0;
}

/* {"timestamp": ms, "input_length": N, "output_length": N, "hash_ids": [...]} */
static int mooncake_line(kvb_stream *s, const char *line, const char *where, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loads(line, 0, &je);
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return sfail(err, errlen, "%s: not a JSON object (%s); a Mooncake trace has one "
			     "{\"timestamp\":MS,\"input_length\":N,\"output_length\":N,\"hash_ids\":[...]} a line",
			     where, j ? "another JSON value" : je.text);
	}
	json_t *ts = json_object_get(j, "timestamp"), *in = json_object_get(j, "input_length");
	json_t *out = json_object_get(j, "output_length"), *h = json_object_get(j, "hash_ids");
	int rc = 0;
	if (!json_is_number(ts) || json_number_value(ts) < 0)
		rc = sfail(err, errlen, "%s: \"timestamp\" must be milliseconds (a number >= 0)", where);
	else if (!json_is_integer(in) || json_integer_value(in) <= 0 || json_integer_value(in) > (1 << 24))
		rc = sfail(err, errlen, "%s: \"input_length\" must be a token count 1..16777216", where);
	else if (out && (!json_is_integer(out) || json_integer_value(out) < 0))
		rc = sfail(err, errlen, "%s: \"output_length\" must be a token count >= 0", where);
	else if (h && !json_is_array(h))
		rc = sfail(err, errlen, "%s: \"hash_ids\" must be an array", where);
	else if (stream_add(s, (uint64_t)(json_number_value(ts) * 1e6), (uint32_t)json_integer_value(in),
			    out ? (uint32_t)json_integer_value(out) : 0))
		rc = sfail(err, errlen, "out of memory reading the trace");
	json_decref(j);
	return rc;
}

/* "2023-11-16 18:15:46.6805900" -> ns since the epoch (UTC); -1 on bad text. */
static int azure_time(const char *s, uint64_t *ns)
{
	struct tm tm = {0};
	const char *p = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
	if (!p)
		p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -1;
	uint64_t frac = 0, scale = 1000000000ull;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			if (scale > 1)
				scale /= 10, frac += (uint64_t)(*p - '0') * scale;
	if (*p == 'Z')
		p++;
	if (*p)
		return -1;
	time_t t = timegm(&tm);
	if (t < 0)
		return -1;
	*ns = (uint64_t)t * 1000000000ull + frac;
	return 0;
}

/* TIMESTAMP,ContextTokens,GeneratedTokens */
static int azure_line(kvb_stream *s, char *line, const char *where, char *err, size_t errlen)
{
	char *f[3], *save = NULL, *end;
	unsigned n = 0;
	for (char *t = strtok_r(line, ",", &save); t && n < 3; t = strtok_r(NULL, ",", &save))
		f[n++] = t;
	if (n != 3 || strtok_r(NULL, ",", &save))
		return sfail(err, errlen, "%s: expected 3 fields TIMESTAMP,ContextTokens,GeneratedTokens", where);
	uint64_t ns;
	if (azure_time(f[0], &ns))
		return sfail(err, errlen, "%s: TIMESTAMP '%s' is not a date like 2023-11-16 18:15:46.6805900",
			     where, f[0]);
	errno = 0;
	unsigned long ctx = isdigit((unsigned char)*f[1]) ? strtoul(f[1], &end, 10) : 0;
	if (!ctx || errno || *end || ctx > (1u << 24))
		return sfail(err, errlen, "%s: ContextTokens '%s' must be a token count 1..16777216", where, f[1]);
	unsigned long gen = isdigit((unsigned char)*f[2]) ? strtoul(f[2], &end, 10) : ~0ul;
	if (gen == ~0ul || errno || *end)
		return sfail(err, errlen, "%s: GeneratedTokens '%s' must be a token count >= 0", where, f[2]);
	if (stream_add(s, ns, (uint32_t)ctx, (uint32_t)gen))
		return sfail(err, errlen, "out of memory reading the trace");
	return 0;
}

static bool ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

static int trace_lines(kvb_stream *s, FILE *f, const char *path, bool azure, char *err, size_t errlen)
{
	char *line = NULL, where[300];
	size_t cap = 0;
	ssize_t len;
	unsigned long no = 0;
	int rc = 0;

	while (!rc && (len = getline(&line, &cap, f)) >= 0) {
		no++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (!len)
			continue;
		snprintf(where, sizeof(where), "%s:%lu", path, no);
		if (azure && s->n == 0 && !strncmp(line, "TIMESTAMP", 9))
			continue; /* the header */
		rc = azure ? azure_line(s, line, where, err, errlen) : mooncake_line(s, line, where, err, errlen);
	}
	free(line);
	if (!rc && !s->n)
		rc = sfail(err, errlen, "%s: the trace holds no requests", path);
	return rc;
}

int kvb_stream_load(kvb_stream *s, const char *path, const char *fmt, char *err, size_t errlen)
{
	bool azure;
	if (fmt && *fmt)
		azure = !strcmp(fmt, "azure");
	else if (ends_with(path, ".csv"))
		azure = true;
	else if (ends_with(path, ".jsonl") || ends_with(path, ".json"))
		azure = false;
	else
		return sfail(err, errlen, "%s: say --trace-format mooncake or azure (the name ends in "
			     "neither .jsonl nor .csv)", path);
	FILE *f = fopen(path, "r");
	if (!f)
		return sfail(err, errlen, "cannot open the trace %s: %s", path, strerror(errno));
	int rc = trace_lines(s, f, path, azure, err, errlen);
	fclose(f);
	return rc;
}

static int cmp_arrival(const void *a, const void *b)
{
	const kvb_arrival_rec *x = a, *y = b;
	return x->t_ns < y->t_ns ? -1 : x->t_ns > y->t_ns;
}

void kvb_stream_shape(kvb_stream *s, double scale, uint64_t limit)
{
	if (!s->n)
		return;
	qsort(s->r, s->n, sizeof(*s->r), cmp_arrival);
	uint64_t t0 = s->r[0].t_ns;
	for (size_t i = 0; i < s->n; i++)
		s->r[i].t_ns = (uint64_t)((double)(s->r[i].t_ns - t0) * scale);
	if (limit && limit < s->n)
		s->n = limit;
}

uint32_t kvb_stream_max_tokens(const kvb_stream *s)
{
	uint32_t m = 0;
	for (size_t i = 0; i < s->n; i++)
		if (s->r[i].tokens > m)
			m = s->r[i].tokens;
	return m;
}

void kvb_stream_free(kvb_stream *s)
{
	free(s->r);
	s->r = NULL;
	s->n = s->cap = 0;
}
