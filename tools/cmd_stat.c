/* SPDX-License-Identifier: MIT */
/* kvwire stat [PID|SOCKET]: live counters of a running kvwire process via
 * its stats socket (config stats_socket / KVW_STATS_SOCKET). Exit 0 on
 * success, 1 when the process cannot be reached, 2 on a bad command line. */
#include "cli.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *const stat_dirs[] = { "/run/kvwire", "/tmp/kvwire" };

#define STAT_MAX_BYTES (16u << 20) /* default -m: a snapshot of ~50,000 requests */

struct stat_opts {
	char path[108];
	double wait_s;
	long count, timeout_ms;
	size_t max_bytes;
	bool as_json, prom;
};

/* Finds the one stats.*.sock in the default directories. */
static int stat_find_any(char *out, size_t len)
{
	int found = 0;
	for (size_t i = 0; i < 2; i++) {
		DIR *d = opendir(stat_dirs[i]);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			size_t n = strlen(e->d_name);
			if (strncmp(e->d_name, "stats.", 6) || n < 11 || strcmp(e->d_name + n - 5, ".sock"))
				continue;
			if (!found++)
				snprintf(out, len, "%s/%s", stat_dirs[i], e->d_name);
			else
				fprintf(stderr, "kvwire stat: several processes: %s/%s\n", stat_dirs[i],
					cli_safe(e->d_name));
		}
		if (d)
			closedir(d);
	}
	return found;
}

static int stat_resolve(const char *arg, char *out, size_t len)
{
	if (arg && *arg && strspn(arg, "0123456789") == strlen(arg)) {
		for (size_t i = 0; i < 2; i++) {
			snprintf(out, len, "%s/stats.%s.sock", stat_dirs[i], arg);
			if (!access(out, F_OK))
				return CLI_EXIT_OK;
		}
		return cli_err("stat", CLI_EXIT_FAIL, "no stats socket for pid %s in /run/kvwire or "
			       "/tmp/kvwire: start it with KVW_STATS_SOCKET=auto (or give the socket path)", arg);
	}
	if (arg) {
		snprintf(out, len, "%s", arg);
		return CLI_EXIT_OK;
	}
	const char *env = getenv("KVW_STATS_SOCKET");
	if (env && *env && strcmp(env, "auto") && !strstr(env, "%p")) {
		snprintf(out, len, "%s", env);
		return CLI_EXIT_OK;
	}
	int n = stat_find_any(out, len);
	if (n == 1)
		return CLI_EXIT_OK;
	return cli_err("stat", n ? CLI_EXIT_USAGE : CLI_EXIT_FAIL, n ? "several kvwire processes "
		       "serve stats: name one (PID or socket path)" : "no stats socket found: start the "
		       "process with KVW_STATS_SOCKET=auto or name its socket");
}

static long stat_left_ms(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long ms = (long)(deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms > 0 ? ms : 0;
}

/* Connects without blocking: a socket whose backlog is full (a hung or
 * hostile server) is retried until the deadline. */
static int stat_connect(const struct stat_opts *o, const struct timespec *dl, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", o->path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (rc && fd >= 0 && errno == EAGAIN && stat_left_ms(dl) > 0) {
		nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	}
	if (!rc)
		return fd;
	if (errno == EAGAIN)
		snprintf(err, errlen, "%s takes no connection within %ld ms (its backlog is full): is the "
			 "process hung, or is this not a kvwire stats socket?", o->path, o->timeout_ms);
	else
		snprintf(err, errlen, "cannot connect to %s: %s (is the process running with "
			 "stats_socket set?)", o->path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Reads to EOF: at most max_bytes, all of it before the deadline. */
static char *stat_read(int fd, const struct stat_opts *o, const struct timespec *dl, size_t *len,
		       char *err, size_t errlen)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap), *nb = buf;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	while (nb && n <= o->max_bytes) {
		if (n == cap && (nb = realloc(buf, cap * 2)) != NULL) {
			buf = nb;
			cap *= 2;
		}
		if (!nb || poll(&pfd, 1, (int)stat_left_ms(dl)) <= 0)
			break;
		ssize_t got = read(fd, buf + n, cap - n);
		if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
			*len = n;
			return buf;
		}
		n += got > 0 ? (size_t)got : 0;
	}
	if (n > o->max_bytes)
		snprintf(err, errlen, "%s: the snapshot is larger than %zu bytes, the most stat reads: is "
			 "this a kvwire stats socket? if the process has that many endpoints, raise -m",
			 o->path, o->max_bytes);
	else
		snprintf(err, errlen, "%s: %s within %ld ms (%zu bytes came): is the process calling "
			 "kvw_progress? raise -t if it is only slow", o->path, nb ? "no complete snapshot" :
			 "out of memory", o->timeout_ms, n);
	free(buf);
	return NULL;
}

/* One snapshot: connect, read to EOF (within -t, at most -m bytes), parse. */
static json_t *stat_fetch(const struct stat_opts *o, char *err, size_t errlen)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += o->timeout_ms / 1000;
	dl.tv_nsec += o->timeout_ms % 1000 * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	int fd = stat_connect(o, &dl, err, errlen);
	size_t n = 0;
	char *buf = fd < 0 ? NULL : stat_read(fd, o, &dl, &n, err, errlen);
	if (fd >= 0)
		close(fd);
	if (!buf)
		return NULL;
	json_error_t je;
	json_t *doc = n ? json_loadb(buf, n, 0, &je) : NULL;
	free(buf);
	if (!doc) {
		snprintf(err, errlen, "%s: %s", o->path, n ? cli_safe(je.text) : "closed without a snapshot");
		return NULL;
	}
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "%s: the snapshot is not a JSON object: is this a kvwire stats "
			 "socket?", o->path);
		json_decref(doc);
		return NULL;
	}
	cli_json_redact(doc); /* --json too: no secret= value leaves this tool */
	return doc;
}

static const json_t *stat_prev_ep(const json_t *prev, long long id)
{
	const json_t *e;
	size_t i;
	json_array_foreach(json_object_get(prev, "endpoints"), i, e)
		if (cli_jint(e, "id") == id)
			return e;
	return NULL;
}

/* Per-second rate of a counter between two snapshots ("" without one). */
static const char *stat_rate(const json_t *cur, const json_t *prev, const json_t *ep,
			     const json_t *pep, const char *key, char *buf, size_t len)
{
	buf[0] = 0;
	if (!pep)
		return buf;
	double dt = (double)(cli_jint(cur, "t_ns") - cli_jint(prev, "t_ns")) / 1e9;
	long long d = cli_jint(json_object_get(ep, "counters"), key) -
		      cli_jint(json_object_get(pep, "counters"), key);
	char b[32];
	if (dt > 0 && d >= 0)
		snprintf(buf, len, "%s/s", cli_fmt_bytes((uint64_t)((double)d / dt), b, sizeof(b)));
	return buf;
}

static void stat_human_reqs(const json_t *ep)
{
	const json_t *r;
	size_t i;
	json_array_foreach(json_object_get(ep, "requests"), i, r) {
		char a[32], b[32];
		printf("     req seq %lld %s %s layers %lld/%lld bytes %s/%s age %.1f ms%s\n",
		       cli_jint(r, "seq_id"), cli_jsafe(r, "role"), cli_jsafe(r, "status"),
		       cli_jint(r, "layers_done"), cli_jint(r, "n_layers"),
		       cli_fmt_bytes((uint64_t)cli_jint(r, "bytes_done"), a, sizeof(a)),
		       cli_fmt_bytes((uint64_t)cli_jint(r, "bytes_total"), b, sizeof(b)),
		       (double)cli_jint(r, "age_us") / 1000.0,
		       json_is_true(json_object_get(r, "granted")) ? "" : " (waiting for grant)");
	}
	if (json_is_true(json_object_get(ep, "requests_truncated")))
		printf("     ... more requests not listed\n");
}

static void stat_human_snap(const json_t *doc, const json_t *prev)
{
	const json_t *e, *x;
	size_t i, j;
	printf("kvwire pid %lld (v%s, drivers %s)", cli_jint(doc, "pid"), cli_jsafe(doc, "kvwire"),
	       cli_jsafe(doc, "drivers"));
	json_array_foreach(json_object_get(doc, "listeners"), i, x)
		printf("%s%s", i ? ", " : "; listening on ", cli_jsafe(x, "uri"));
	printf("\n%-4s %-5s %-10s %-5s %-10s %-10s %-12s %-12s %-8s %-6s %-7s %s\n", "EP", "DRV", "STATE",
	       "RAILS", "TX", "RX", "TX/s", "RX/s", "SEQ_OK", "FAIL", "RTT_us", "URI");
	if (!json_array_size(json_object_get(doc, "endpoints")))
		printf("(no endpoints)\n");
	json_array_foreach(json_object_get(doc, "endpoints"), i, e) {
		const json_t *c = json_object_get(e, "counters"), *pe = prev ? stat_prev_ep(prev, cli_jint(e, "id")) : NULL;
		char tx[32], rx[32], rtx[32], rrx[32];
		printf("%-4lld %-5s %-10s %-5lld %-10s %-10s %-12s %-12s %-8lld %-6lld %-7lld %s\n",
		       cli_jint(e, "id"), cli_jsafe(e, "driver"), cli_jsafe(e, "state"), cli_jint(e, "rails"),
		       cli_fmt_bytes((uint64_t)cli_jint(c, "bytes_tx"), tx, sizeof(tx)),
		       cli_fmt_bytes((uint64_t)cli_jint(c, "bytes_rx"), rx, sizeof(rx)),
		       stat_rate(doc, prev, e, pe, "bytes_tx", rtx, sizeof(rtx)),
		       stat_rate(doc, prev, e, pe, "bytes_rx", rrx, sizeof(rrx)),
		       cli_jint(c, "seqs_ok"), cli_jint(c, "seqs_failed"), cli_jint(c, "rtt_us"),
		       cli_jsafe(e, "uri"));
		printf("     frags tx %lld rx %lld, frames tx %lld rx %lld, rejected %lld, bad frames %lld, "
		       "retransmits %lld, drops %lld, remote accesses refused %lld\n", cli_jint(c, "frags_tx"),
		       cli_jint(c, "frags_rx"), cli_jint(c, "frames_tx"), cli_jint(c, "frames_rx"),
		       cli_jint(c, "rejected"), cli_jint(c, "bad_frames"), cli_jint(c, "retransmits"),
		       cli_jint(c, "drops"), cli_jint(c, "remote_refused"));
		json_array_foreach(json_object_get(c, "rail"), j, x)
			printf("     rail %zu: tx %s rx %s frags %lld/%lld errors %lld\n", j,
			       cli_fmt_bytes((uint64_t)cli_jint(x, "bytes_tx"), tx, sizeof(tx)),
			       cli_fmt_bytes((uint64_t)cli_jint(x, "bytes_rx"), rx, sizeof(rx)),
			       cli_jint(x, "frags_tx"), cli_jint(x, "frags_rx"), cli_jint(x, "errors"));
		stat_human_reqs(e);
	}
}

/* Prometheus label values: backslash, quote and newline escaped. */
static void stat_prom_label(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			printf("\\%c", *s);
		else if (*s == '\n')
			printf("\\n");
		else
			putchar(*s);
	}
}

static void stat_prom_metric(const json_t *doc, const char *metric, const char *type,
			     const char *help, const char *key, bool per_rail)
{
	const json_t *e, *x;
	size_t i, j;
	printf("# HELP kvwire_%s %s\n# TYPE kvwire_%s %s\n", metric, help, metric, type);
	json_array_foreach(json_object_get(doc, "endpoints"), i, e) {
		const json_t *c = json_object_get(e, "counters");
		const json_t *rails = per_rail ? json_object_get(c, "rail") : NULL;
		for (j = 0; j < (per_rail ? json_array_size(rails) : 1); j++) {
			x = per_rail ? json_array_get(rails, j) : c;
			printf("kvwire_%s{pid=\"%lld\",ep=\"%lld\",driver=\"", metric, cli_jint(doc, "pid"),
			       cli_jint(e, "id"));
			stat_prom_label(cli_jsafe(e, "driver"));
			printf("\",uri=\"");
			stat_prom_label(cli_jsafe(e, "uri"));
			if (per_rail)
				printf("\",rail=\"%zu", j);
			printf("\"} %lld\n", !strcmp(key, "n_reqs") ? cli_jint(e, key) :
			       !strcmp(key, "up") ? (long long)!strcmp(cli_jstr(e, "state"), "ready") : cli_jint(x, key));
		}
	}
}

static void stat_prom(const json_t *doc)
{
	static const struct { const char *m, *key, *help; } ctr[] = {
		{ "bytes_tx_total", "bytes_tx", "Payload bytes sent." },
		{ "bytes_rx_total", "bytes_rx", "Payload bytes received." },
		{ "frags_tx_total", "frags_tx", "Data fragments sent." },
		{ "frags_rx_total", "frags_rx", "Data fragments received." },
		{ "frames_tx_total", "frames_tx", "Control frames sent." },
		{ "frames_rx_total", "frames_rx", "Control frames received." },
		{ "seqs_ok_total", "seqs_ok", "Sequences completed." },
		{ "seqs_failed_total", "seqs_failed", "Sequences failed." },
		{ "rejected_total", "rejected", "Descriptors refused." },
		{ "bad_frames_total", "bad_frames", "Malformed frames dropped." },
		{ "retransmits_total", "retransmits", "Retransmitted packets." },
		{ "drops_total", "drops", "Dropped packets." },
		{ "remote_refused_total", "remote_refused", "Remote memory accesses a NIC refused (rdma)." },
	};
	for (size_t i = 0; i < sizeof(ctr) / sizeof(ctr[0]); i++)
		stat_prom_metric(doc, ctr[i].m, "counter", ctr[i].help, ctr[i].key, false);
	stat_prom_metric(doc, "rtt_microseconds", "gauge", "Smoothed round-trip time.", "rtt_us", false);
	stat_prom_metric(doc, "requests_inflight", "gauge", "Live requests.", "n_reqs", false);
	stat_prom_metric(doc, "endpoint_up", "gauge", "1 when the endpoint is ready.", "up", false);
	stat_prom_metric(doc, "rail_bytes_tx_total", "counter", "Payload bytes sent per rail.", "bytes_tx", true);
	stat_prom_metric(doc, "rail_bytes_rx_total", "counter", "Payload bytes received per rail.", "bytes_rx", true);
	stat_prom_metric(doc, "rail_errors_total", "counter", "Errors per rail.", "errors", true);
}

static int stat_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire stat [PID|SOCKET] [-w SECS] [-n COUNT] [-t MS] [-m SIZE] [--json|--prom]\n"
		"  -w SECS   refresh every SECS seconds (rates shown from the second sample)\n"
		"  -n COUNT  stop after COUNT samples (default 1, or forever with -w)\n"
		"  -t MS     the whole snapshot within MS milliseconds (default 2000)\n"
		"  -m SIZE   refuse a snapshot larger than SIZE (default 16M)\n"
		"  --json    the snapshot as JSON (one document per sample)\n"
		"  --prom    Prometheus text exposition\n");
	return rc;
}

static int stat_parse(int argc, char **argv, struct stat_opts *o)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "prom", no_argument, 0, 'p' },
		{ "watch", required_argument, 0, 'w' }, { "count", required_argument, 0, 'n' },
		{ "timeout", required_argument, 0, 't' }, { "max-size", required_argument, 0, 'm' },
		{ "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
	int c;
	char *end;
	uint64_t max;
	*o = (struct stat_opts){ .count = -1, .timeout_ms = 2000, .max_bytes = STAT_MAX_BYTES };
	while ((c = getopt_long(argc, argv, "jpw:n:t:m:h", opts, NULL)) != -1) {
		if (c == 't') {
			o->timeout_ms = strtol(optarg, &end, 10);
			if (*end || o->timeout_ms < 1 || o->timeout_ms > 3600000)
				return cli_err("stat", CLI_EXIT_USAGE, "-t '%s': give milliseconds, 1 to 3600000",
					       optarg);
		} else if (c == 'm') {
			if (!cli_parse_size(optarg, &max) || max < 1024 || max > (1ull << 32))
				return cli_err("stat", CLI_EXIT_USAGE, "-m '%s': give a size from 1K to 4G "
					       "(e.g. 64M)", optarg);
			o->max_bytes = (size_t)max;
		} else if (c == 'j') {
			o->as_json = true;
		} else if (c == 'p') {
			o->prom = true;
		} else if (c == 'w') {
			o->wait_s = strtod(optarg, &end);
			if (*end || o->wait_s <= 0)
				return cli_err("stat", CLI_EXIT_USAGE, "-w '%s': give seconds > 0", optarg);
		} else if (c == 'n') {
			o->count = strtol(optarg, &end, 10);
			if (*end || o->count < 1)
				return cli_err("stat", CLI_EXIT_USAGE, "-n '%s': give a count >= 1", optarg);
		} else {
			return stat_usage(c == 'h' ? stdout : stderr, c == 'h' ? -1 : CLI_EXIT_USAGE);
		}
	}
	if (optind + 1 < argc || (o->as_json && o->prom))
		return stat_usage(stderr, CLI_EXIT_USAGE);
	if (o->count < 0)
		o->count = o->wait_s > 0 ? 0 : 1; /* 0 = forever */
	return stat_resolve(optind < argc ? argv[optind] : NULL, o->path, sizeof(o->path));
}

int cmd_stat(int argc, char **argv)
{
	struct stat_opts o;
	int rc = stat_parse(argc, argv, &o);
	if (rc)
		return rc < 0 ? CLI_EXIT_OK : rc;
	json_t *prev = NULL;
	for (long i = 0; !o.count || i < o.count; i++) {
		char err[512];
		json_t *doc = stat_fetch(&o, err, sizeof(err));
		if (!doc) {
			json_decref(prev);
			return cli_err("stat", CLI_EXIT_FAIL, "%s", cli_safe(err));
		}
		if (o.as_json) {
			json_dumpf(doc, stdout, (o.wait_s > 0 ? JSON_COMPACT : JSON_INDENT(2)) | JSON_ENSURE_ASCII);
			putchar('\n');
		} else if (o.prom) {
			stat_prom(doc);
		} else {
			if (i)
				printf("\n");
			stat_human_snap(doc, prev);
		}
		fflush(stdout);
		json_decref(prev);
		prev = doc;
		if (o.wait_s > 0 && (!o.count || i + 1 < o.count))
			nanosleep(&(struct timespec){ (time_t)o.wait_s,
				  (long)((o.wait_s - (double)(time_t)o.wait_s) * 1e9) }, NULL);
	}
	json_decref(prev);
	return CLI_EXIT_OK;
}
