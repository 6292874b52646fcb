/* SPDX-License-Identifier: MIT */
/* kvwire ping URI: handshake with a peer on any driver, then N keepalive
 * round trips. Exit 0 when every ping came back, 1 when the peer is
 * unreachable or pings were lost, 2 on a bad command line. */
#include "cli.h"
#include "kvwire/kvwire.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ping_opts {
	char *uri;
	const char *secret_file;
	long count, interval_ms, timeout_ms;
	bool as_json;
};

static int ping_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double ping_pct(const uint64_t *v, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)v[i < n ? i : n - 1] / 1000.0;
}

static json_t *ping_rtt(uint64_t *rtt, size_t n)
{
	if (!n)
		return json_null();
	qsort(rtt, n, sizeof(*rtt), ping_cmp);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += (double)rtt[i];
	return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "min_us", (double)rtt[0] / 1000.0, "avg_us",
			 sum / (double)n / 1000.0, "p50_us", ping_pct(rtt, n, 50), "p90_us",
			 ping_pct(rtt, n, 90), "p99_us", ping_pct(rtt, n, 99), "max_us",
			 (double)rtt[n - 1] / 1000.0);
}

/* Rails: how many the handshake joined, and what each carried. */
static json_t *ping_rails(const kvw_ep *ep, uint32_t rails)
{
	kvw_counters c = {.size = sizeof(c)};
	json_t *arr = json_array();
	if (kvw_ep_counters(ep, &c) != KVW_OK)
		memset(&c, 0, sizeof(c));
	for (uint32_t r = 0; r < rails && r < KVW_MAX_RAILS; r++)
		json_array_append_new(arr, json_pack("{s:i,s:b,s:I,s:I,s:I}", "rail", (int)r,
			"joined", 1, "bytes_tx", (json_int_t)c.rail[r].bytes_tx, "bytes_rx",
			(json_int_t)c.rail[r].bytes_rx, "errors", (json_int_t)c.rail[r].errors));
	return arr;
}

static json_t *ping_run(kvw_ep *ep, const struct ping_opts *o, long *lost, char *err, size_t errlen)
{
	uint64_t *rtt = calloc((size_t)o->count, sizeof(*rtt));
	size_t n = 0;
	*lost = 0;
	for (long i = 0; rtt && i < o->count; i++) {
		uint64_t ns;
		kvw_status st = kvw_ep_ping(ep, (int)o->timeout_ms, &ns);
		if (st == KVW_OK) {
			rtt[n++] = ns;
		} else {
			(*lost)++;
			snprintf(err, errlen, "ping %ld: %s", i + 1, kvw_strerror(st));
			if (st != KVW_ERR_TIMEDOUT)
				break; /* the endpoint is gone */
		}
		if (o->interval_ms > 0 && i + 1 < o->count)
			nanosleep(&(struct timespec){ o->interval_ms / 1000, o->interval_ms % 1000 * 1000000 },
				  NULL);
	}
	*lost = o->count - (long)n; /* not attempted after a fatal error counts as lost */
	json_t *r = ping_rtt(rtt, n);
	free(rtt);
	return r;
}

static void ping_human(const json_t *d)
{
	if (!json_is_true(json_object_get(d, "reachable"))) {
		printf("%s: unreachable: %s\n", cli_jsafe(d, "uri"), cli_jsafe(d, "error"));
		return;
	}
	printf("%s: reachable via %s, protocol %s, caps %s, rails %lld, %s\n", cli_jsafe(d, "uri"),
	       cli_jsafe(d, "driver"), cli_jsafe(d, "peer_version"), cli_jsafe(d, "caps_names"),
	       cli_jint(d, "rails"), json_is_true(json_object_get(d, "authenticated")) ?
	       "authenticated" : "not authenticated");
	printf("connect+handshake %.1f us\n", json_real_value(json_object_get(d, "connect_us")));
	printf("%lld pings, %lld lost", cli_jint(d, "sent"), cli_jint(d, "lost"));
	const json_t *r = json_object_get(d, "rtt");
	if (json_is_object(r))
		printf("; rtt us min %.1f avg %.1f p50 %.1f p90 %.1f p99 %.1f max %.1f",
		       json_real_value(json_object_get(r, "min_us")), json_real_value(json_object_get(r, "avg_us")),
		       json_real_value(json_object_get(r, "p50_us")), json_real_value(json_object_get(r, "p90_us")),
		       json_real_value(json_object_get(r, "p99_us")), json_real_value(json_object_get(r, "max_us")));
	printf("\n");
	if (*cli_jstr(d, "error"))
		printf("last error: %s\n", cli_jsafe(d, "error"));
	const json_t *x;
	size_t i;
	json_array_foreach(json_object_get(d, "rail"), i, x)
		printf("  rail %lld: joined, bytes tx %lld rx %lld, errors %lld\n", cli_jint(x, "rail"),
		       cli_jint(x, "bytes_tx"), cli_jint(x, "bytes_rx"), cli_jint(x, "errors"));
}

static int ping_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire ping URI [-c COUNT] [-i INTERVAL_MS] [-t TIMEOUT_MS] "
		"[--secret-file FILE] [--json]\n"
		"  -c COUNT        round trips (default 10)\n"
		"  -i INTERVAL_MS  pause between pings (default 0)\n"
		"  -t TIMEOUT_MS   per ping and for the connection (default 2000)\n"
		"  --secret-file FILE  the shared secret is FILE's first line (or set\n"
		"                  KVW_SECRET_FILE / KVW_SECRET; ?secret= shows in ps)\n");
	return rc;
}

static int ping_parse(int argc, char **argv, struct ping_opts *o)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "count", required_argument, 0, 'c' },
		{ "interval", required_argument, 0, 'i' }, { "timeout", required_argument, 0, 't' },
		{ "secret-file", required_argument, 0, 'S' }, { "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 } };
	int c;
	char *end;
	*o = (struct ping_opts){ .count = 10, .interval_ms = 0, .timeout_ms = 2000 };
	while ((c = getopt_long(argc, argv, "jc:i:t:h", opts, NULL)) != -1) {
		long *dst = c == 'c' ? &o->count : c == 'i' ? &o->interval_ms : c == 't' ? &o->timeout_ms : NULL;
		if (c == 'j') {
			o->as_json = true;
		} else if (c == 'S') {
			o->secret_file = optarg;
		} else if (dst) {
			*dst = strtol(optarg, &end, 10);
			if (*end || *dst < (c == 'i' ? 0 : 1) || *dst > 100000000)
				return cli_err("ping", CLI_EXIT_USAGE, "-%c '%s': give a positive number", c, optarg);
		} else {
			return ping_usage(c == 'h' ? stdout : stderr, c == 'h' ? -1 : CLI_EXIT_USAGE);
		}
	}
	if (optind + 1 != argc)
		return ping_usage(stderr, CLI_EXIT_USAGE);
	o->uri = strdup(argv[optind]);
	cli_hide_arg(argv[optind]); /* ps shows secret=*** from here on */
	return o->uri ? CLI_EXIT_OK : cli_err("ping", CLI_EXIT_ERROR, "out of memory");
}

/* What the handshake settled, and the pings. */
static void ping_report(json_t *doc, kvw_ep *ep, const struct ping_opts *o, double connect_us,
			long *lost)
{
	kvw_ep_info info = {.size = sizeof(info)};
	info = (kvw_ep_info){.size = sizeof(info)};
	kvw_ep_query(ep, &info);
	char caps[128], ver[32], err[256] = "";
	snprintf(ver, sizeof(ver), "%u.%u", info.peer_version_major, info.peer_version_minor);
	json_t *rtt = ping_run(ep, o, lost, err, sizeof(err));
	json_object_update_new(doc, json_pack("{s:o,s:o,s:s,s:i,s:s,s:i,s:b,s:f,s:i,s:i,s:o,s:o,s:o}",
		"driver", cli_jtext(info.driver), "peer_uri", cli_jtext(info.peer_uri), "peer_version",
		ver, "caps", (int)info.caps, "caps_names", cli_caps_str(info.caps, caps, sizeof(caps)),
		"rails", (int)info.rails, "authenticated", info.authenticated, "connect_us", connect_us,
		"sent", (int)o->count, "lost", (int)*lost, "rtt", rtt, "rail", ping_rails(ep, info.rails),
		"error", cli_jtext(err)));
}

int cmd_ping(int argc, char **argv)
{
	struct ping_opts o;
	int rc = ping_parse(argc, argv, &o);
	if (rc)
		return rc < 0 ? CLI_EXIT_OK : rc;
	kvw_ctx *ctx = NULL;
	if ((rc = cli_ctx_open("ping", o.secret_file, &ctx)) != CLI_EXIT_OK) {
		free(o.uri);
		return rc;
	}
	kvw_ep *ep = NULL;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	kvw_status st = kvw_connect(ctx, o.uri, (int)o.timeout_ms, &ep);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	json_t *doc = json_pack("{s:o,s:b}", "uri", cli_jtext(o.uri), "reachable", st == KVW_OK);
	free(o.uri);
	long lost = 0;
	if (st != KVW_OK) {
		/* the sentence may carry the peer's REJECT reason: escaped */
		json_object_set_new(doc, "status", json_string(kvw_strerror(st)));
		json_object_set_new(doc, "error", cli_jtext(kvw_ctx_last_error(ctx)));
	} else {
		ping_report(doc, ep, &o, (double)((t1.tv_sec - t0.tv_sec) * 1000000000ll +
			    (t1.tv_nsec - t0.tv_nsec)) / 1000.0, &lost);
		kvw_ep_close(ep);
	}
	kvw_ctx_destroy(ctx);
	return cli_emit(doc, o.as_json, ping_human, st != KVW_OK || lost ? CLI_EXIT_FAIL : CLI_EXIT_OK);
}
