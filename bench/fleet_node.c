/* SPDX-License-Identifier: MIT */
/* kvwire-bench fleet-node: one long-running prefill or decode of a fleet,
 * found through the directory instead of forked by the router.
 * It opens its kvwire context, listener and memory once (bench/fleet_child.c,
 * requests up to --tokens), listens for routers on an AF_UNIX SOCK_SEQPACKET
 * socket (the same fixed records, one per datagram, as the forked children's
 * socketpair: the child's loop runs unchanged; same host only, which the
 * fleet's shared CLOCK_MONOTONIC timestamps need anyway), publishes
 *   uris: its kvwire listener, and kvbctl://<control socket path>
 *   geometry: the KV shape (kvb_join_geometry) max_tokens=N ttl=S pid=P
 *   capacity: the blocks of its pool
 * under its lease, and serves one router at a time (a second one is told it
 * is busy). kvw_dir_progress runs from the data loop's tick and from the
 * wait for a router: it never waits, so etcd cannot stall a transfer. */
#include "fleet.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvwire/dir.h"

#define NODE_PROGRESS_NS 50000000ull /* kvw_dir_progress every 50 ms (leases >= 2 s) */

typedef struct fl_node {
	const kvb_opts *o;
	kvw_dir *dir;
	kvb_fl_child *c;
	int lfd;
	char ctl[108];
	char shm[256];             /* its shm listener's socket file, removed at exit */
	uint64_t next_ns;
	kvw_status dir_st;         /* last kvw_dir_progress status, reported on change */
} fl_node;

static volatile sig_atomic_t node_stop;

static void node_signal(int sig)
{
	(void)sig;
	node_stop = 1;
}

/* false when it is not time yet (the data loop pays one clock read). */
static bool node_progress(fl_node *n)
{
	uint64_t now = kvb_now_ns();
	if (now < n->next_ns)
		return false;
	n->next_ns = now + NODE_PROGRESS_NS;
	kvw_status st = kvw_dir_progress(n->dir);
	if (st != n->dir_st)
		fprintf(stderr, "kvwire-bench: fleet-node %s: %s\n", n->o->name,
			st ? kvw_dir_last_error(n->dir) : "the directory answers again");
	n->dir_st = st;
	return true;
}

/* A router while another is served: told so, and closed. */
static void node_refuse(fl_node *n)
{
	int fd = accept4(n->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	kvb_fl_rec r = {.type = KVB_FL_FAILED, .status = KVW_ERR_BUSY, .t_ns = kvb_now_ns()};
	snprintf(r.uri, sizeof(r.uri), "fleet-node %s serves another router: wait until it ends, or "
		 "start more fleet-nodes", n->o->name);
	(void)!send(fd, &r, sizeof(r), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static int node_tick(void *arg)
{
	fl_node *n = arg;
	if (node_progress(n))
		node_refuse(n);
	return node_stop;
}

static int node_listen(fl_node *n, char *err, size_t len)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(n->ctl, sizeof(n->ctl), "/tmp/kvwire-node-%d.ctl", (int)getpid());
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", n->ctl);
	unlink(n->ctl);
	n->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (n->lfd < 0 || bind(n->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(n->lfd, 8)) {
		snprintf(err, len, "the control socket %s: %s (check that /tmp is writable)", n->ctl, strerror(errno));
		n->ctl[0] = 0;
		return -1;
	}
	return 0;
}

/* First of all: an etcd that is not there ends the node before it sets up. */
static int node_dir_open(fl_node *n, char *err, size_t len)
{
	kvw_dir_opts dopt = {.size = sizeof(dopt), .lease_ttl_s = n->o->ttl_s};
	if (kvw_dir_open(n->o->dir, &dopt, &n->dir)) {
		snprintf(err, len, "%s", kvw_dir_last_error(NULL));
		return -1;
	}
	return 0;
}

static int node_publish(fl_node *n, char *err, size_t len)
{
	const kvb_opts *o = n->o;
	kvw_dir_entry e = {.size = sizeof(e), .role = o->role == 1 ? KVW_DIR_PREFILL : KVW_DIR_DECODE, .n_uris = 2};
	char shape[160];
	kvw_status st;
	snprintf(e.pool, sizeof(e.pool), "%s", o->pool);
	snprintf(e.name, sizeof(e.name), "%s", o->name);
	snprintf(e.uris[0], sizeof(e.uris[0]), "%s", kvb_fl_child_uri(n->c));
	snprintf(e.uris[1], sizeof(e.uris[1]), "kvbctl://%s", n->ctl);
	kvb_join_geometry(o, shape, sizeof(shape));
	snprintf(e.geometry, sizeof(e.geometry), "%s max_tokens=%u ttl=%u pid=%d", shape, o->tokens,
		 o->ttl_s ? o->ttl_s : 10, (int)getpid());
	e.capacity = kvb_fl_child_blocks(n->c);
	if ((st = kvw_dir_publish(n->dir, &e))) {
		snprintf(err, len, "%s", kvw_dir_last_error(n->dir));
		return -1;
	}
	printf("fleet-node %s: %s on %s, control %s, in pool %s at %s\n", o->name, o->role == 1 ? "prefill" : "decode",
	       e.uris[0], n->ctl, o->pool, o->dir);
	fflush(stdout);
	return 0;
}

/* Waits for routers (the lease kept alive meanwhile) and serves each. */
static void node_run(fl_node *n)
{
	struct pollfd pf = {.fd = n->lfd, .events = POLLIN};
	while (!node_stop) {
		node_progress(n);
		if (poll(&pf, 1, 50) <= 0)
			continue;
		int fd = accept4(n->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		fprintf(stderr, "kvwire-bench: fleet-node %s: a router joined\n", n->o->name);
		int rc = kvb_fl_child_serve(n->c, fd, node_tick, n);
		close(fd);
		fprintf(stderr, "kvwire-bench: fleet-node %s: the router %s\n", n->o->name,
			rc == 2 ? "was left (stopping)" : "left");
		if (n->o->once)
			break;
	}
}

static void node_close(fl_node *n)
{
	if (n->dir)
		kvw_dir_close(n->dir); /* revokes the lease: the entry leaves at once */
	if (n->lfd >= 0)
		close(n->lfd);
	if (n->ctl[0])
		unlink(n->ctl);
	kvb_fl_child_close(n->c);
	if (n->shm[0])
		unlink(n->shm);
}

int kvb_fleet_node_main(const kvb_opts *o)
{
	static fl_node n;
	kvb_opts ko = *o;
	char err[300] = "", uri[256];
	int rc = 1;

	if (kvb_kv_resolve(&ko, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench: %s\n", err);
		return 1;
	}
	n = (fl_node){.o = &ko, .lfd = -1};
	if (ko.listen[0])
		snprintf(uri, sizeof(uri), "%s", ko.listen);
	else if (!strcmp(ko.driver, "shm"))
		snprintf(uri, sizeof(uri), "shm:///tmp/kvwire-node-%d.sock", (int)getpid());
	else
		snprintf(uri, sizeof(uri), "tcp://127.0.0.1:0");
	if (!strncmp(uri, "shm://", 6))
		snprintf(n.shm, sizeof(n.shm), "%s", uri + 6);
	struct sigaction sa = {.sa_handler = node_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (!node_dir_open(&n, err, sizeof(err)) &&
	    !kvb_fl_child_open(&ko, ko.role == 2, 0, ko.name, ko.tokens, uri, &n.c, err, sizeof(err)) &&
	    !node_listen(&n, err, sizeof(err)) && !node_publish(&n, err, sizeof(err))) {
		node_run(&n);
		rc = 0;
	}
	if (rc)
		fprintf(stderr, "kvwire-bench: fleet-node %s: %s\n", ko.name, err);
	node_close(&n);
	return rc;
}
