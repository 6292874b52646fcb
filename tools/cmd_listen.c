/* SPDX-License-Identifier: MIT */
/* kvwire listen URI: accepts connections and drives progress until
 * SIGINT/SIGTERM (or --duration), so that pings are answered. Prints the
 * bound URI first ("listening on URI"), one line per connection event. */
#include "cli.h"
#include "kvwire/kvwire.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LISTEN_MAX_EPS 256

static volatile sig_atomic_t listen_stop;

static void listen_on_signal(int sig)
{
	(void)sig;
	listen_stop = 1;
}

struct listen_state {
	kvw_ep *eps[LISTEN_MAX_EPS];
	size_t n;
	bool as_json;
};

/* uri and detail may come from the peer: printed redacted and escaped. */
static void listen_say(const struct listen_state *s, const char *event, const char *uri,
		       const char *detail)
{
	uri = cli_safe(uri);
	detail = cli_safe(detail);
	if (s->as_json) {
		json_t *j = json_pack("{s:s,s:s,s:s}", "event", event, "uri", uri, "detail", detail);
		json_dumpf(j, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
		json_decref(j);
		putchar('\n');
	} else
		printf("%s%s %s%s%s\n", event, strcmp(event, "listening") ? "" : " on", uri,
		       *detail ? ": " : "", detail);
	fflush(stdout);
}

/* Closes endpoints whose peer went away. */
static void listen_reap(struct listen_state *s)
{
	for (size_t i = 0; i < s->n;) {
		kvw_status st = kvw_ep_status(s->eps[i]);
		if (st == KVW_OK || st == KVW_INPROGRESS) {
			i++;
			continue;
		}
		kvw_ep_info info = {.size = sizeof(info)};
		info = (kvw_ep_info){.size = sizeof(info)};
		kvw_ep_query(s->eps[i], &info);
		listen_say(s, "closed", info.peer_uri, kvw_strerror(st));
		kvw_ep_close(s->eps[i]);
		s->eps[i] = s->eps[--s->n];
	}
}

static void listen_accept(kvw_listener *l, struct listen_state *s)
{
	kvw_ep *ep;
	while (s->n < LISTEN_MAX_EPS && kvw_accept(l, 0, &ep) == KVW_OK) {
		kvw_ep_info info = {.size = sizeof(info)};
		char caps[128];
		info = (kvw_ep_info){.size = sizeof(info)};
		kvw_ep_query(ep, &info);
		s->eps[s->n++] = ep;
		listen_say(s, "accepted", info.peer_uri, cli_caps_str(info.caps, caps, sizeof(caps)));
	}
}

/* Finished requests (none are posted here, but a peer could fail some). */
static void listen_drain_events(kvw_ctx *ctx)
{
	kvw_event evs[64];
	int n = kvw_poll(ctx, evs, 64);
	for (int i = 0; i < n; i++)
		if (evs[i].type == KVW_EV_SEQ && evs[i].req)
			kvw_req_free(evs[i].req);
}

static int listen_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire listen URI [-d SECONDS] [--secret-file FILE] [--json]\n"
		"  -d SECONDS  exit after this long (default: until SIGINT/SIGTERM)\n"
		"  --secret-file FILE  peers must prove the secret on FILE's first line (or\n"
		"              set KVW_SECRET_FILE / KVW_SECRET; ?secret= shows in ps)\n"
		"Set KVW_STATS_SOCKET to watch it with `kvwire stat`.\n");
	return rc;
}

struct listen_opts {
	double duration;
	const char *secret_file;
	char *uri;
};

static int listen_parse(int argc, char **argv, struct listen_opts *o, struct listen_state *s)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "duration", required_argument, 0, 'd' },
		{ "secret-file", required_argument, 0, 'S' }, { "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 } };
	int c;
	char *end;
	while ((c = getopt_long(argc, argv, "jd:h", opts, NULL)) != -1) {
		if (c == 'j') {
			s->as_json = true;
		} else if (c == 'S') {
			o->secret_file = optarg;
		} else if (c == 'd') {
			o->duration = strtod(optarg, &end);
			if (*end || o->duration <= 0)
				return cli_err("listen", CLI_EXIT_USAGE, "-d '%s': give seconds > 0", optarg);
		} else {
			return listen_usage(c == 'h' ? stdout : stderr, c == 'h' ? -1 : CLI_EXIT_USAGE);
		}
	}
	if (optind + 1 != argc)
		return listen_usage(stderr, CLI_EXIT_USAGE);
	o->uri = strdup(argv[optind]);
	cli_hide_arg(argv[optind]); /* ps shows secret=*** from here on */
	return o->uri ? CLI_EXIT_OK : cli_err("listen", CLI_EXIT_ERROR, "out of memory");
}

static double listen_elapsed(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

int cmd_listen(int argc, char **argv)
{
	static struct listen_state s;
	struct listen_opts o = { 0 };
	int rc = listen_parse(argc, argv, &o, &s);
	if (rc)
		return rc < 0 ? CLI_EXIT_OK : rc;
	kvw_ctx *ctx = NULL;
	kvw_listener *l = NULL;
	if ((rc = cli_ctx_open("listen", o.secret_file, &ctx)) == CLI_EXIT_OK &&
	    kvw_listen(ctx, o.uri, &l) != KVW_OK)
		rc = cli_err("listen", CLI_EXIT_ERROR, "%s", cli_safe(kvw_ctx_last_error(ctx)));
	free(o.uri);
	if (rc != CLI_EXIT_OK) {
		kvw_ctx_destroy(ctx);
		return rc;
	}
	signal(SIGINT, listen_on_signal);
	signal(SIGTERM, listen_on_signal);
	signal(SIGPIPE, SIG_IGN);
	listen_say(&s, "listening", kvw_listener_uri(l), "");
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!listen_stop && (o.duration <= 0 || listen_elapsed(&t0) < o.duration)) {
		kvw_ctx_wait(ctx, 20);
		listen_drain_events(ctx);
		listen_accept(l, &s);
		listen_reap(&s);
	}
	for (size_t i = 0; i < s.n; i++)
		kvw_ep_close(s.eps[i]);
	kvw_listener_close(l);
	kvw_ctx_destroy(ctx);
	return CLI_EXIT_OK;
}
