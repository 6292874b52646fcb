/* SPDX-License-Identifier: MIT */
/* fleet --join: the router takes running fleet-nodes (bench/fleet_node.c)
 * out of the directory instead of forking. It watches the pool first (a node
 * that leaves while it lists is not missed), lists it until it holds --prefill
 * N prefill and --decode M decode entries that fit (the same KV shape, a URI
 * for --driver, a control socket, requests as long as the stream's), takes
 * the first N and M by name and connects to their control sockets. During
 * the replay kvb_join_next is called from the router's drain loop: it never
 * waits, and an etcd that stops answering only ends the events (a warning);
 * the links are kvwire's and the records go over the control sockets. */
#include "fleet.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvwire/dir.h"

#define JOIN_MAX 128              /* entries listed at once */
#define JOIN_NEXT_NS 20000000ull  /* the watch driven every 20 ms at most */

struct kvb_join {
	kvw_dir *dir;
	uint64_t t0, next_ns;
	char warn[400];
};

void kvb_join_geometry(const kvb_opts *o, char *buf, size_t len)
{
	snprintf(buf, len, "kvb-fleet %s layers=%u block_bytes=%llu block_tokens=%u seed=%llu",
		 o->model[0] ? o->model : "custom", o->layers, (unsigned long long)kvb_kv_block_bytes(o),
		 o->block_tokens, (unsigned long long)o->seed);
}

/* Whether e fits this router; why not in why. */
static bool node_fits(const kvb_opts *o, uint32_t max_tokens, const kvw_dir_entry *e, kvb_fl_node *n,
		      char *why, size_t len)
{
	char shape[160];
	const char *ctl = NULL, *uri = NULL;
	size_t dl = strlen(o->driver);
	kvb_join_geometry(o, shape, sizeof(shape));
	for (uint32_t i = 0; i < e->n_uris; i++) {
		if (!strncmp(e->uris[i], "kvbctl://", 9))
			ctl = e->uris[i] + 9;
		else if (!strncmp(e->uris[i], o->driver, dl) && !strncmp(e->uris[i] + dl, "://", 3))
			uri = e->uris[i];
	}
	size_t sl = strlen(shape);
	const char *rest = e->geometry + sl;
	if (strncmp(e->geometry, shape, sl) || *rest != ' ' ||
	    sscanf(rest, " max_tokens=%u ttl=%u pid=%d", &n->max_tokens, &n->ttl_s, &n->pid) != 3) {
		snprintf(why, len, "%s publishes \"%s\", not this router's \"%s\": start it with the same "
			 "--model, --layers and --seed options", e->name, e->geometry, shape);
		return false;
	}
	if (!ctl || !uri || strlen(ctl) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(why, len, "%s has no %s listener or no control socket (kvbctl://) in its entry: "
			 "start it with fleet-node --driver %s", e->name, o->driver, o->driver);
		return false;
	}
	if (n->max_tokens < max_tokens) {
		snprintf(why, len, "%s takes requests up to %u tokens and the stream's longest is %u: start "
			 "it with --tokens %u", e->name, n->max_tokens, max_tokens, max_tokens);
		return false;
	}
	snprintf(n->name, sizeof(n->name), "%s", e->name);
	snprintf(n->uri, sizeof(n->uri), "%s", uri);
	snprintf(n->ctl, sizeof(n->ctl), "%s", ctl);
	n->decode = e->role == KVW_DIR_DECODE;
	return true;
}

/* One list of the pool into nodes[] (prefills, then decodes): 1 when it
 * holds enough of both, 0 not yet, -1 the list failed. */
static int join_list(kvb_join *j, const kvb_opts *o, uint32_t max_tokens, kvw_dir_entry *es,
		     kvb_fl_node *nodes, char *why, size_t len)
{
	size_t n = 0, bad = 0;
	unsigned np = 0, nd = 0;
	es[0].size = sizeof(es[0]);
	kvw_status st = kvw_dir_list(j->dir, o->pool, KVW_DIR_ANY, es, JOIN_MAX, &n, &bad);
	if (st) {
		snprintf(why, len, "%s", kvw_dir_last_error(j->dir));
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		kvb_fl_node x = {.fd = -1};
		bool decode = es[i].role == KVW_DIR_DECODE;
		if ((decode ? nd >= o->decode : np >= o->prefill) || !node_fits(o, max_tokens, &es[i], &x, why, len))
			continue;
		nodes[decode ? o->prefill + nd++ : np++] = x;
	}
	if (np < o->prefill || nd < o->decode) {
		char was[300];
		snprintf(was, sizeof(was), "%s", why);
		snprintf(why, len, "pool %s holds %u of %u prefill and %u of %u decode fleet-nodes that fit%s%s",
			 o->pool, np, o->prefill, nd, o->decode, was[0] ? "; " : "", was);
		return 0;
	}
	return 1;
}

static int join_connect(kvb_fl_node *n, char *err, size_t len)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", n->ctl);
	n->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (n->fd < 0 || connect(n->fd, (struct sockaddr *)&a, sizeof(a))) {
		snprintf(err, len, "cannot reach fleet-node %s at its control socket %s: %s (is it still "
			 "running on this host?)", n->name, n->ctl, strerror(errno));
		return -1;
	}
	return 0;
}

int kvb_join_open(const kvb_opts *o, uint32_t max_tokens, kvb_join **out, kvb_fl_node *nodes, char *err,
		  size_t len)
{
	kvw_dir_opts dopt = {.size = sizeof(dopt)};
	kvb_join *j = calloc(1, sizeof(*j));
	kvw_dir_entry *es = calloc(JOIN_MAX, sizeof(*es));
	int got = -1;
	for (unsigned i = 0; i < o->prefill + o->decode; i++)
		nodes[i].fd = -1;
	if (!j || !es) {
		snprintf(err, len, "out of memory for the directory's entries");
		goto out;
	}
	if (kvw_dir_open(o->dir, &dopt, &j->dir)) {
		snprintf(err, len, "%s", kvw_dir_last_error(NULL));
		goto out;
	}
	if (kvw_dir_watch(j->dir, o->pool, KVW_DIR_ANY)) {
		snprintf(err, len, "%s", kvw_dir_last_error(j->dir));
		goto out;
	}
	uint64_t end = kvb_now_ns() + (uint64_t)o->timeout_ms * 1000000ull;
	while ((got = join_list(j, o, max_tokens, es, nodes, err, len)) == 0 && kvb_now_ns() < end) {
		err[0] = 0;
		kvw_dir_progress(j->dir);
		usleep(100000);
	}
	if (got == 0)
		snprintf(err + strlen(err), len - strlen(err), " after %u ms (--timeout-ms): start more with "
			 "kvwire-bench fleet-node --pool %s", o->timeout_ms, o->pool);
	for (unsigned i = 0; got == 1 && i < o->prefill + o->decode; i++)
		if (join_connect(&nodes[i], err, len))
			got = -1;
out:
	free(es);
	if (got != 1) {
		for (unsigned i = 0; i < o->prefill + o->decode; i++)
			if (nodes[i].fd >= 0)
				close(nodes[i].fd);
		kvb_join_close(j);
		return -1;
	}
	j->t0 = kvb_now_ns();
	*out = j;
	return 0;
}

int kvb_join_next(kvb_join *j, char *name, size_t len)
{
	kvw_dir_event ev = {.size = sizeof(ev)};
	uint64_t now = kvb_now_ns();
	if (now < j->next_ns)
		return 0;
	kvw_status st = kvw_dir_progress(j->dir);
	if (st && !j->warn[0])
		snprintf(j->warn, sizeof(j->warn), "the directory stopped answering %.0f ms after the join "
			 "(transfers went on; leaves after that were not seen): %s", (double)(now - j->t0) / 1e6,
			 kvw_dir_last_error(j->dir));
	while (kvw_dir_next(j->dir, &ev) == KVW_OK)
		if (ev.type == KVW_DIR_LEAVE) {
			snprintf(name, len, "%s", ev.entry.name);
			return 1; /* the rest on the next call */
		}
	j->next_ns = now + JOIN_NEXT_NS;
	return 0;
}

const char *kvb_join_warning(const kvb_join *j)
{
	return j ? j->warn : "";
}

void kvb_join_close(kvb_join *j)
{
	if (!j)
		return;
	if (j->dir)
		kvw_dir_close(j->dir);
	free(j);
}
