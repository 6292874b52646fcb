/* SPDX-License-Identifier: MIT */
/* kvwire-bench fleet: the router. Forks N prefill and M decode processes,
 * links every prefill to every decode (kvwire, one pair at a time), then
 * replays the request stream: per request it picks a (prefill, decode) pair
 * (round-robin or least outstanding), tells the decode to grant and the
 * prefill to send, and closes the request when both have answered.
 * --restart-ms: the killed decode is forked again on its URI; the router picks
 * it again once it says HELLO, and relinks each prefill to it on that pair's
 * first request (one prefill at a time, so the decode knows whom it accepts).
 * --idle-baseline: after the replay, the same requests again one at a time.
 * --join: the processes are running fleet-nodes taken from the directory
 * (bench/fleet_join.c); a node whose entry leaves is treated as killed. */
#include "fleet.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FL_MAXP 128
#define FL_CAUSES 18  /* -status 0..16, and the verify mismatch */

typedef struct fl_proc {
	pid_t pid;
	int fd;
	bool decode, dead, listening;
	unsigned idx, outstanding;
	uint32_t gen;                /* incarnation: +1 per restart */
	bool joined, left;           /* --join: a fleet-node; its entry left the directory */
	uint64_t t_left, t_gone;     /* when the router saw it leave, and its socket close */
	unsigned ttl_s;              /* --join: its lease */
	char name[64];               /* p0, d1 or a fleet-node's name */
	char ctl[108];
	int relinking;               /* prefill this decode is accepting, -1 none */
	uint64_t given, ok, failed;  /* requests dispatched to it, and how they ended */
	int64_t last_k;              /* the last request dispatched to it, -1 none */
	char uri[232];
} fl_proc;

typedef struct fl_req {
	uint32_t p, d, tokens, gen;  /* gen: the decode's incarnation at dispatch */
	bool dispatched, sent, landed, closed, orphan; /* orphan: no decode was up */
	int32_t st_send, st_land;
	uint64_t t_sent, t_land, t_disp;
} fl_req;

typedef struct fl_idle {
	kvb_samples lat_us;
	uint64_t ok, failed, skipped;
	int32_t first_cause;
} fl_idle;

typedef struct fl_router {
	const kvb_opts *o;
	kvb_stream st;
	fl_proc proc[FL_MAXP];
	unsigned n_proc;
	fl_req *req;
	uint64_t next, closed, t0, t_end;
	unsigned rr_p, rr_d;        /* round-robin positions */
	uint64_t ok, failed, unexpected, bytes, failed_bytes, cause[FL_CAUSES];
	uint64_t *pair_bytes, *pair_reqs;
	uint32_t *linked_gen;       /* [p * M + d]: the incarnation of d that p is linked to */
	uint32_t max_tokens;
	bool killed, restarted;
	uint64_t t_kill, t_restart, t_listen, ok_after, failed_held, failed_down, relinks;
	uint64_t failed_gone;       /* --join: PEER_DEAD of a request whose node went away */
	kvb_samples lat_us;
	fl_idle idle;
	kvb_join *join;
	char err[600];
} fl_router;

uint32_t kvb_fleet_blocks(const kvb_opts *o, uint32_t tokens)
{
	return (tokens + o->block_tokens - 1) / o->block_tokens;
}

static fl_proc *prefill(fl_router *r, unsigned i) { return &r->proc[i]; }
static fl_proc *decode(fl_router *r, unsigned j) { return &r->proc[r->o->prefill + j]; }

static int rfail(fl_router *r, const char *fmt, const char *a, const char *b)
{
	if (!r->err[0])
		snprintf(r->err, sizeof(r->err), fmt, a, b);
	return -1;
}

static int to_child(fl_proc *c, uint32_t type, uint32_t peer, uint64_t k, uint32_t tokens, uint32_t gen,
		    const char *uri)
{
	kvb_fl_rec m = {.type = type, .status = (int32_t)gen, .peer = peer, .k = k, .tokens = tokens};
	if (uri)
		snprintf(m.uri, sizeof(m.uri), "%s", uri);
	return send(c->fd, &m, sizeof(m), MSG_NOSIGNAL) == (ssize_t)sizeof(m) ? 0 : -1;
}

static int spawn(fl_router *r, fl_proc *c, const char *uri)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return rfail(r, "socketpair: %s%s", strerror(errno), "");
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return rfail(r, "fork: %s%s", strerror(errno), "");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (unsigned i = 0; i < r->n_proc; i++)
			if (&r->proc[i] != c && r->proc[i].fd > 0)
				close(r->proc[i].fd);
		close(sv[0]);
		_exit(kvb_fleet_child(r->o, c->decode, c->idx, sv[1], r->max_tokens, uri));
	}
	close(sv[1]);
	c->pid = pid;
	c->fd = sv[0];
	return 0;
}

/* One record from child c, waiting up to ms; 0 ok, 1 timeout, -1 EOF. */
static int from_child(fl_proc *c, kvb_fl_rec *m, int ms)
{
	struct pollfd pf = {.fd = c->fd, .events = POLLIN};
	if (poll(&pf, 1, ms) <= 0)
		return 1;
	ssize_t n = recv(c->fd, m, sizeof(*m), 0);
	return n == (ssize_t)sizeof(*m) ? 0 : -1;
}

static int await(fl_router *r, fl_proc *c, uint32_t type, kvb_fl_rec *m)
{
	int rc = from_child(c, m, 30000);
	if (rc == 0 && m->type == KVB_FL_FAILED)
		return rfail(r, "%s%s", m->uri, "");
	if (rc == 1)
		return rfail(r, "%s (%s) did not answer within 30 s", c->name, c->decode ? "decode" : "prefill");
	if (rc < 0 || m->type != type)
		return rfail(r, "%s (%s) ended during setup (its message is in its output)", c->name,
			     c->decode ? "decode" : "prefill");
	return 0;
}

/* --join: the fleet-nodes' control sockets instead of forked children. */
static int fleet_join(fl_router *r)
{
	kvb_fl_node nodes[FL_MAXP];
	if (kvb_join_open(r->o, r->max_tokens, &r->join, nodes, r->err, sizeof(r->err)))
		return -1;
	for (unsigned i = 0; i < r->n_proc; i++) {
		fl_proc *c = &r->proc[i];
		c->joined = true;
		c->fd = nodes[i].fd;
		c->pid = nodes[i].pid;
		c->ttl_s = nodes[i].ttl_s;
		memcpy(c->name, nodes[i].name, sizeof(c->name));
		memcpy(c->ctl, nodes[i].ctl, sizeof(c->ctl));
	}
	fprintf(stderr, "kvwire-bench: fleet: joined %u prefill and %u decode fleet-nodes of pool %s\n",
		r->o->prefill, r->o->decode, r->o->pool);
	return 0;
}

static int fleet_start(fl_router *r)
{
	kvb_fl_rec m;
	r->max_tokens = kvb_stream_max_tokens(&r->st);
	r->n_proc = r->o->prefill + r->o->decode;
	for (unsigned i = 0; i < r->n_proc; i++) {
		fl_proc *c = &r->proc[i];
		c->decode = i >= r->o->prefill;
		c->idx = c->decode ? i - r->o->prefill : i;
		c->last_k = -1;
		c->relinking = -1;
		c->fd = -1;
		snprintf(c->name, sizeof(c->name), "%c%u", c->decode ? 'd' : 'p', c->idx);
		if (!r->o->join && spawn(r, c, NULL))
			return -1;
	}
	if (r->o->join && fleet_join(r))
		return -1;
	for (unsigned i = 0; i < r->n_proc; i++) {
		if (await(r, &r->proc[i], KVB_FL_HELLO, &m))
			return -1;
		snprintf(r->proc[i].uri, sizeof(r->proc[i].uri), "%s", m.uri);
		r->proc[i].listening = true;
	}
	/* every pair, one at a time: the decode knows which prefill it accepts */
	for (unsigned i = 0; i < r->o->prefill; i++)
		for (unsigned j = 0; j < r->o->decode; j++) {
			to_child(decode(r, j), KVB_FL_ACCEPT, i, 0, 0, 0, NULL);
			to_child(prefill(r, i), KVB_FL_CONNECT, j, 0, 0, 0, decode(r, j)->uri);
			if (await(r, prefill(r, i), KVB_FL_LINKED, &m))
				return -1;
			int32_t s1 = m.status;
			if (await(r, decode(r, j), KVB_FL_LINKED, &m))
				return -1;
			if (s1 || m.status)
				return rfail(r, "linking a prefill to %s failed: %s", decode(r, j)->uri,
					     kvw_strerror(s1 ? s1 : m.status));
		}
	return 0;
}

/* Prefill i is up (--join: a node may go), decode j is up and listening,
 * and i is linked to this incarnation of j or may relink now (no other
 * prefill is relinking to it). */
static bool usable(fl_router *r, unsigned i, unsigned j)
{
	fl_proc *d = decode(r, j);
	if (d->dead || !d->listening || prefill(r, i)->dead)
		return false;
	return r->linked_gen[i * r->o->decode + j] == d->gen || d->relinking < 0 || d->relinking == (int)i;
}

/* Least outstanding usable decode for prefill i (ties: the next after the last picked). */
static int pick_least_decode(fl_router *r, unsigned i)
{
	int best = -1;
	for (unsigned n = 0; n < r->o->decode; n++) {
		unsigned j = (r->rr_d + n) % r->o->decode;
		if (usable(r, i, j) && (best < 0 || decode(r, j)->outstanding < decode(r, (unsigned)best)->outstanding))
			best = (int)j;
	}
	if (best >= 0)
		r->rr_d = (unsigned)best + 1;
	return best;
}

/* A (prefill, decode) pair: round-robin over all N x M pairs with a live
 * decode, or the least outstanding prefill and decode. -1: no decode left. */
static int pick_pair(fl_router *r, uint32_t *p)
{
	unsigned n = r->o->prefill, m = r->o->decode;
	if (r->o->pick_least) {
		unsigned best = r->rr_p % n;
		for (unsigned t = 0; t < n; t++) {
			unsigned i = (r->rr_p + t) % n;
			if (!prefill(r, i)->dead && (prefill(r, best)->dead ||
						     prefill(r, i)->outstanding < prefill(r, best)->outstanding))
				best = i;
		}
		r->rr_p = best + 1;
		*p = best;
		return pick_least_decode(r, best);
	}
	for (unsigned t = 0; t < n * m; t++) {
		unsigned c = r->rr_p++ % (n * m);
		if (usable(r, c % n, (c / n) % m)) {
			*p = c % n;
			return (int)((c / n) % m);
		}
	}
	*p = 0;
	return -1;
}

static unsigned cause_idx(int32_t st)
{
	if (st == KVB_FL_VERIFY_BAD || st >= 0 || -st >= FL_CAUSES - 1)
		return FL_CAUSES - 1;
	return (unsigned)-st;
}

static const char *cause_name(unsigned i, char *buf, size_t len)
{
	if (i == FL_CAUSES - 1)
		return "VERIFY_MISMATCH";
	snprintf(buf, len, "%s", kvw_strerror(-(int)i));
	char *colon = strchr(buf, ':');
	if (colon)
		*colon = '\0';
	return buf;
}

static uint64_t req_bytes(fl_router *r, uint32_t tokens)
{
	return (uint64_t)kvb_fleet_blocks(r->o, tokens) * r->o->layers * kvb_kv_block_bytes(r->o);
}

/* The later of landing and send completion. */
static uint64_t req_done_ns(const fl_req *q)
{
	return q->t_land > q->t_sent ? q->t_land : q->t_sent;
}

static void req_ok(fl_router *r, uint64_t k)
{
	fl_req *q = &r->req[k];
	uint64_t b = req_bytes(r, q->tokens), t = req_done_ns(q);
	decode(r, q->d)->ok++;
	r->ok++;
	r->bytes += b;
	r->pair_bytes[q->p * r->o->decode + q->d] += b;
	r->pair_reqs[q->p * r->o->decode + q->d]++;
	if ((int)q->d == r->o->kill_decode && q->gen > 0)
		r->ok_after++;
	kvb_samples_add(&r->lat_us, (double)(t - (r->t0 + r->st.r[k].t_ns)) / 1e3);
	if (t > r->t_end)
		r->t_end = t;
}

/* Expected: PEER_DEAD of a request the killed decode's first incarnation held,
 * or of one that came while no decode was up after the kill; --join: also of
 * one whose prefill or decode node went away (a node is not the router's to
 * keep alive: it is treated as killed, and reported). */
static void req_failed(fl_router *r, fl_req *q, int32_t cause)
{
	bool dead = cause == KVW_ERR_PEER_DEAD && r->killed;
	bool held = dead && !q->orphan && (int)q->d == r->o->kill_decode && q->gen == 0;
	bool gone = cause == KVW_ERR_PEER_DEAD && r->o->join && !held && !(dead && q->orphan) &&
		    (q->orphan || decode(r, q->d)->dead || prefill(r, q->p)->dead);
	r->failed_gone += gone;
	r->failed++;
	r->failed_bytes += req_bytes(r, q->tokens);
	r->cause[cause_idx(cause)]++;
	if (!q->orphan)
		decode(r, q->d)->failed++;
	r->failed_held += held;
	r->failed_down += dead && q->orphan;
	if (!held && !(dead && q->orphan) && !gone)
		r->unexpected++;
}

/* A request of the idle baseline (k >= the stream's n). */
static void idle_close(fl_router *r, fl_req *q, int32_t cause)
{
	if (cause) {
		if (!r->idle.failed++)
			r->idle.first_cause = cause;
		r->unexpected++;
		return;
	}
	r->idle.ok++;
	kvb_samples_add(&r->idle.lat_us, (double)(req_done_ns(q) - q->t_disp) / 1e3);
}

static void req_close(fl_router *r, uint64_t k, int32_t cause)
{
	fl_req *q = &r->req[k];
	q->closed = true;
	prefill(r, q->p)->outstanding--;
	decode(r, q->d)->outstanding--;
	if (k >= r->st.n) {
		idle_close(r, q, cause);
		return;
	}
	r->closed++;
	if (cause)
		req_failed(r, q, cause);
	else
		req_ok(r, k);
}

/* Closes k once both sides answered, or once its decode incarnation is gone
 * and the prefill answered. */
static void req_check(fl_router *r, uint64_t k)
{
	fl_req *q = &r->req[k];
	fl_proc *d = decode(r, q->d);
	if (q->closed || !q->sent)
		return;
	if (q->landed)
		req_close(r, k, q->st_land ? q->st_land : q->st_send);
	else if (d->dead || d->gen != q->gen)
		req_close(r, k, q->st_send ? q->st_send : KVW_ERR_PEER_DEAD);
}

static void child_gone(fl_router *r, fl_proc *c)
{
	c->dead = true;
	c->listening = false;
	close(c->fd);
	c->fd = -1;
	c->t_gone = kvb_now_ns();
	if (!c->joined)
		waitpid(c->pid, NULL, 0);
	for (uint64_t k = 0; k < r->next; k++) {
		fl_req *q = &r->req[k];
		if (q->closed)
			continue;
		if (!c->decode && q->p == c->idx)
			req_close(r, k, KVW_ERR_PEER_DEAD); /* no prefill left to say */
		else if (c->decode && q->d == c->idx)
			req_check(r, k);
	}
}

/* HELLO of a restarted decode, LINKED of a relink, FAILED of a restart. */
static void on_ctl(fl_router *r, fl_proc *c, const kvb_fl_rec *m)
{
	if (m->type == KVB_FL_HELLO) {
		c->listening = true;
		r->t_listen = kvb_now_ns();
	} else if (m->type == KVB_FL_FAILED) {
		fprintf(stderr, "kvwire-bench: fleet: the restarted decode %u did not start: %s\n", c->idx, m->uri);
	} else if (m->type == KVB_FL_LINKED && c->decode && c->relinking == (int)m->peer) {
		if (!m->status)
			r->linked_gen[m->peer * r->o->decode + c->idx] = c->gen;
		r->relinks += !m->status;
		c->relinking = -1;
	}
}

static void on_rec(fl_router *r, fl_proc *c, const kvb_fl_rec *m)
{
	if (m->type == KVB_FL_HELLO || m->type == KVB_FL_FAILED || m->type == KVB_FL_LINKED) {
		on_ctl(r, c, m);
		return;
	}
	if (m->k >= r->next || (m->type != KVB_FL_SENT && m->type != KVB_FL_LANDED))
		return;
	fl_req *q = &r->req[m->k];
	if (m->type == KVB_FL_SENT) {
		q->sent = true;
		q->st_send = m->status;
		q->t_sent = m->t_ns;
	} else {
		q->landed = true;
		q->st_land = m->status;
		q->t_land = m->t_ns;
	}
	req_check(r, m->k);
}

/* --join: entries that left the directory; a node still linked is treated
 * as killed (its requests end PEER_DEAD, it is not picked again). */
static void join_poll(fl_router *r)
{
	char name[64];
	while (r->join && kvb_join_next(r->join, name, sizeof(name)) == 1)
		for (unsigned i = 0; i < r->n_proc; i++) {
			fl_proc *c = &r->proc[i];
			if (strcmp(c->name, name) || c->left)
				continue;
			c->left = true;
			c->t_left = kvb_now_ns();
			if (!c->dead)
				child_gone(r, c);
		}
}

/* Waits for child records up to until_ns (0 = just what is there). */
static void drain(fl_router *r, uint64_t until_ns)
{
	struct pollfd pf[FL_MAXP];
	kvb_fl_rec m;
	uint64_t now = kvb_now_ns();
	int64_t wait = until_ns > now ? (int64_t)(until_ns - now) : 0;
	struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
	for (unsigned i = 0; i < r->n_proc; i++)
		pf[i] = (struct pollfd){.fd = r->proc[i].fd, .events = POLLIN};
	int ready = ppoll(pf, r->n_proc, &ts, NULL);
	join_poll(r);
	for (unsigned i = 0; ready > 0 && i < r->n_proc; i++) {
		if (r->proc[i].dead || !pf[i].revents)
			continue;
		ssize_t n;
		while ((n = recv(r->proc[i].fd, &m, sizeof(m), MSG_DONTWAIT)) == (ssize_t)sizeof(m))
			on_rec(r, &r->proc[i], &m);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			child_gone(r, &r->proc[i]);
	}
}

/* Tells the decode to grant and the prefill to send request k (pair set);
 * a pair not linked to this incarnation of the decode relinks first. */
static void req_post(fl_router *r, uint64_t k)
{
	fl_req *q = &r->req[k];
	fl_proc *d = decode(r, q->d);
	q->gen = d->gen;
	q->t_disp = kvb_now_ns();
	d->outstanding++;
	prefill(r, q->p)->outstanding++;
	if (r->linked_gen[q->p * r->o->decode + q->d] != d->gen && d->relinking < 0) {
		d->relinking = (int)q->p;
		to_child(d, KVB_FL_ACCEPT, q->p, 0, 0, d->gen, NULL);
	}
	to_child(d, KVB_FL_GRANT, q->p, k, q->tokens, d->gen, NULL);
	to_child(prefill(r, q->p), KVB_FL_SEND, q->d, k, q->tokens, d->gen, NULL);
}

static void dispatch(fl_router *r, uint64_t k)
{
	fl_req *q = &r->req[k];
	int d = pick_pair(r, &q->p);
	q->tokens = r->st.r[k].tokens;
	q->dispatched = true;
	r->next = k + 1;
	if (d < 0) { /* no decode up */
		q->d = 0;
		q->orphan = true;
		prefill(r, q->p)->outstanding++;
		decode(r, 0)->outstanding++;
		req_close(r, k, KVW_ERR_PEER_DEAD);
		return;
	}
	q->d = (uint32_t)d;
	decode(r, q->d)->given++;
	decode(r, q->d)->last_k = (int64_t)k;
	req_post(r, k);
	if (r->o->kill_decode >= 0 && k == r->o->kill_at) {
		kill(decode(r, (unsigned)r->o->kill_decode)->pid, SIGKILL);
		/* not picked again from now: its socket closes only once the kernel
		 * has torn its memory down, which a loaded host makes slow */
		decode(r, (unsigned)r->o->kill_decode)->listening = false;
		r->killed = true;
		r->t_kill = kvb_now_ns();
	}
}

/* --restart-ms: fork the killed decode again on its URI once it is reaped. */
static uint64_t restart_at(fl_router *r)
{
	if (r->o->restart_ms < 0 || !r->killed || r->restarted)
		return UINT64_MAX;
	return r->t_kill + (uint64_t)r->o->restart_ms * 1000000ull;
}

static void restart_due(fl_router *r)
{
	fl_proc *c = decode(r, (unsigned)(r->o->kill_decode >= 0 ? r->o->kill_decode : 0));
	if (!c->dead || kvb_now_ns() < restart_at(r))
		return;
	if (!strncmp(c->uri, "shm://", 6))
		unlink(c->uri + 6); /* the killed one's socket file */
	c->gen++;
	c->dead = false;
	c->listening = false;
	c->relinking = -1;
	r->restarted = true;
	r->t_restart = kvb_now_ns();
	if (spawn(r, c, c->uri)) {
		c->dead = true;
		fprintf(stderr, "kvwire-bench: fleet: restarting decode %u: %s\n", c->idx, r->err);
	}
}

/* The replay also waits for a restart it was asked for (and its HELLO). */
static bool restart_pending(fl_router *r)
{
	fl_proc *c = decode(r, (unsigned)(r->o->kill_decode >= 0 ? r->o->kill_decode : 0));
	if (r->o->restart_ms < 0 || !r->killed)
		return false;
	if (!r->restarted)
		return true;
	if (kvb_now_ns() - r->t_restart > 30000000000ull) { /* no HELLO: give up waiting */
		if (!c->listening && !c->dead)
			fprintf(stderr, "kvwire-bench: fleet: the restarted decode %u did not say it listens "
				"within 30 s; see its message above\n", c->idx);
		return false;
	}
	return !c->listening && !c->dead;
}

static void replay_timeout(fl_router *r)
{
	snprintf(r->err, sizeof(r->err), "%llu requests had no answer within 2 x --timeout-ms; "
		 "counted as TIMEDOUT", (unsigned long long)(r->st.n - r->closed));
	for (uint64_t k = 0; k < r->next; k++)
		if (!r->req[k].closed)
			req_close(r, k, KVW_ERR_TIMEDOUT);
}

static int replay(fl_router *r)
{
	uint64_t last = kvb_now_ns(), seen = 0;
	r->t0 = kvb_now_ns() + 10000000ull;
	while (r->closed < r->st.n || restart_pending(r)) {
		uint64_t due = r->next < r->st.n ? r->t0 + r->st.r[r->next].t_ns : UINT64_MAX;
		uint64_t now = kvb_now_ns(), wake = now + 100000000ull;
		if (now >= due) {
			dispatch(r, r->next);
			continue;
		}
		restart_due(r);
		if (due < wake)
			wake = due;
		if (restart_at(r) < wake)
			wake = restart_at(r);
		drain(r, wake);
		if (r->closed != seen)
			seen = r->closed, last = kvb_now_ns();
		if (kvb_now_ns() - last > (uint64_t)r->o->timeout_ms * 2000000ull && r->next == r->st.n &&
		    r->closed < r->st.n)
			replay_timeout(r);
	}
	return 0;
}

/* --idle-baseline: request k of the stream again (as request n + k), alone
 * on the fleet, on the same pair; waits until it closed. */
static void idle_one(fl_router *r, uint64_t k)
{
	uint64_t kk = r->st.n + k;
	fl_req *o = &r->req[k], *q = &r->req[kk];
	if (!o->dispatched || o->orphan || !usable(r, o->p, o->d)) {
		r->idle.skipped++;
		return;
	}
	q->p = o->p;
	q->d = o->d;
	q->tokens = o->tokens;
	q->dispatched = true;
	r->next = kk + 1;
	req_post(r, kk);
	uint64_t limit = kvb_now_ns() + (uint64_t)r->o->timeout_ms * 2000000ull;
	while (!q->closed && kvb_now_ns() < limit)
		drain(r, kvb_now_ns() + 100000000ull < limit ? kvb_now_ns() + 100000000ull : limit);
	if (!q->closed)
		req_close(r, kk, KVW_ERR_TIMEDOUT);
}

static void idle_baseline(fl_router *r)
{
	for (uint64_t k = 0; k < r->st.n; k++)
		idle_one(r, k);
}

/* --join: a node the router killed leaves when its lease runs out; waits
 * for that (up to its TTL + 3 s) so the report can say when. */
static void join_await_leaves(fl_router *r)
{
	for (unsigned i = 0; r->join && i < r->n_proc; i++) {
		fl_proc *c = &r->proc[i];
		uint64_t end = c->t_gone + (c->ttl_s + 3) * 1000000000ull;
		while (c->dead && !c->left && !kvb_join_warning(r->join)[0] && kvb_now_ns() < end)
			drain(r, kvb_now_ns() + 50000000ull);
	}
}

/* --join: QUIT to each node that is still there (it waits for the next
 * router); the files of one that is gone (its entry left, or no process has
 * its pid: it was killed) are removed, as it could not. */
static void join_stop(fl_router *r)
{
	for (unsigned i = 0; i < r->n_proc; i++) {
		fl_proc *c = &r->proc[i];
		if (!c->dead) {
			to_child(c, KVB_FL_QUIT, 0, 0, 0, 0, NULL);
			close(c->fd);
		} else if (c->left || (c->pid > 0 && kill(c->pid, 0) && errno == ESRCH)) {
			if (!strncmp(c->uri, "shm://", 6))
				unlink(c->uri + 6);
			if (c->ctl[0])
				unlink(c->ctl);
		}
	}
}

static void fleet_stop(fl_router *r)
{
	if (r->o->join) {
		join_stop(r);
		return;
	}
	for (unsigned i = 0; i < r->n_proc; i++)
		if (r->proc[i].pid > 0 && !r->proc[i].dead)
			to_child(&r->proc[i], KVB_FL_QUIT, 0, 0, 0, 0, NULL);
	for (unsigned i = 0; i < r->n_proc; i++) {
		fl_proc *c = &r->proc[i];
		if (c->pid <= 0 || c->dead)
			continue;
		for (int t = 0; t < 500 && waitpid(c->pid, NULL, WNOHANG) == 0; t++)
			usleep(10000);
		if (waitpid(c->pid, NULL, WNOHANG) == 0) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, NULL, 0);
		}
		close(c->fd);
	}
	/* a killed child leaves its shm listener's socket file */
	for (unsigned i = 0; i < r->n_proc; i++)
		if (!strncmp(r->proc[i].uri, "shm://", 6))
			unlink(r->proc[i].uri + 6);
}

static int load_stream(fl_router *r)
{
	const kvb_opts *o = r->o;
	if (o->trace[0]) {
		if (kvb_stream_load(&r->st, o->trace, o->trace_format, r->err, sizeof(r->err)))
			return -1;
	} else {
		kvb_mix m;
		if (kvb_mix_parse(o->mix[0] ? o->mix : "128:0.5,1024:0.3,4096:0.2", &m, r->err, sizeof(r->err)) ||
		    kvb_stream_poisson(&r->st, o->rate, &m, o->requests ? o->requests : 200, o->seed))
			return -1;
	}
	kvb_stream_shape(&r->st, o->time_scale, o->requests);
	uint64_t need = (uint64_t)kvb_fleet_blocks(o, kvb_stream_max_tokens(&r->st)) * o->layers *
			kvb_kv_block_bytes(o) * (2 * o->pool_factor * o->decode + o->prefill);
	if (need > (32ull << 30))
		return rfail(r, "the fleet would need %s MiB for its pools: lower the longest prompt, "
			     "--layers, --pool-factor or the process counts%s", "over 32768", "");
	r->req = calloc(r->st.n * (o->idle_baseline ? 2 : 1), sizeof(*r->req));
	r->pair_bytes = calloc((size_t)o->prefill * o->decode, sizeof(uint64_t));
	r->pair_reqs = calloc((size_t)o->prefill * o->decode, sizeof(uint64_t));
	r->linked_gen = calloc((size_t)o->prefill * o->decode, sizeof(uint32_t));
	if (!r->req || !r->pair_bytes || !r->pair_reqs || !r->linked_gen)
		return rfail(r, "out of memory for %s requests%s", "the", "");
	return 0;
}

static json_t *fleet_json(fl_router *r);
static void fleet_text(fl_router *r);

int kvb_fleet_main(const kvb_opts *o)
{
	static fl_router r;
	kvb_opts ko = *o;
	char err[256];

	if (kvb_kv_resolve(&ko, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench: %s\n", err);
		return 1;
	}
	r.o = &ko;
	int rc = load_stream(&r);
	if (!rc)
		rc = fleet_start(&r);
	if (!rc)
		rc = replay(&r);
	if (!rc && ko.idle_baseline)
		idle_baseline(&r);
	if (!rc)
		join_await_leaves(&r);
	fleet_stop(&r);
	if (rc) {
		fprintf(stderr, "kvwire-bench: fleet: %s\n", r.err);
		kvb_join_close(r.join);
		return 1;
	}
	if (ko.json) {
		json_t *j = fleet_json(&r);
		json_dumpf(j, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(j);
	} else {
		fleet_text(&r);
	}
	if (kvb_join_warning(r.join)[0])
		fprintf(stderr, "kvwire-bench: fleet: warning: %s\n", kvb_join_warning(r.join));
	kvb_join_close(r.join);
	if (r.unexpected)
		fprintf(stderr, "kvwire-bench: fleet: %llu requests failed (causes above)\n",
			(unsigned long long)r.unexpected);
	return r.unexpected ? 1 : 0;
}

/* ------------------------------------------------------------------ report */
typedef struct fl_sum {
	kvb_stats lat;
	double p90, seconds, goodput_gbit, offered_gbit;
	uint64_t offered_bytes;
} fl_sum;

static void fleet_sum(fl_router *r, fl_sum *s)
{
	memset(s, 0, sizeof(*s));
	kvb_stats_compute(&r->lat_us, &s->lat);
	s->p90 = kvb_percentile_sorted(r->lat_us.v, r->lat_us.n, 90);
	s->seconds = r->t_end > r->t0 ? (double)(r->t_end - r->t0) / 1e9 : 0;
	s->goodput_gbit = s->seconds > 0 ? (double)r->bytes * 8 / s->seconds / 1e9 : 0;
	for (size_t k = 0; k < r->st.n; k++)
		s->offered_bytes += (uint64_t)kvb_fleet_blocks(r->o, r->st.r[k].tokens) * r->o->layers *
				    kvb_kv_block_bytes(r->o);
	double span = r->st.n ? (double)r->st.r[r->st.n - 1].t_ns / 1e9 : 0;
	s->offered_gbit = span > 0 ? (double)s->offered_bytes * 8 / span / 1e9 : 0;
}

static const char *stream_name(const kvb_opts *o)
{
	if (!o->trace[0])
		return "poisson";
	if (o->trace_format[0])
		return o->trace_format;
	size_t n = strlen(o->trace);
	return n > 4 && !strcmp(o->trace + n - 4, ".csv") ? "azure" : "mooncake";
}

static json_t *fleet_peers_json(fl_router *r)
{
	json_t *a = json_array();
	for (unsigned i = 0; i < r->o->prefill; i++)
		for (unsigned j = 0; j < r->o->decode; j++) {
			json_t *e = json_object();
			json_object_set_new(e, "prefill", json_integer(i));
			json_object_set_new(e, "decode", json_integer(j));
			json_object_set_new(e, "prefill_name", json_string(prefill(r, i)->name));
			json_object_set_new(e, "decode_name", json_string(decode(r, j)->name));
			json_object_set_new(e, "requests", json_integer((json_int_t)r->pair_reqs[i * r->o->decode + j]));
			json_object_set_new(e, "bytes", json_integer((json_int_t)r->pair_bytes[i * r->o->decode + j]));
			json_array_append_new(a, e);
		}
	return a;
}

static json_t *fleet_decodes_json(fl_router *r)
{
	json_t *a = json_array();
	for (unsigned j = 0; j < r->o->decode; j++) {
		fl_proc *c = decode(r, j);
		json_t *e = json_object();
		json_object_set_new(e, "decode", json_integer(j));
		json_object_set_new(e, "name", json_string(c->name));
		json_object_set_new(e, "requests", json_integer((json_int_t)c->given));
		json_object_set_new(e, "ok", json_integer((json_int_t)c->ok));
		json_object_set_new(e, "failed", json_integer((json_int_t)c->failed));
		json_object_set_new(e, "last_request", json_integer((json_int_t)c->last_k));
		json_object_set_new(e, "dead", json_boolean(c->dead));
		json_array_append_new(a, e);
	}
	return a;
}

static double ms_since_kill(fl_router *r, uint64_t t)
{
	return t > r->t_kill ? (double)(t - r->t_kill) / 1e6 : 0;
}

static json_t *fleet_killed_json(fl_router *r)
{
	json_t *k = json_object();
	json_object_set_new(k, "decode", json_integer(r->o->kill_decode));
	json_object_set_new(k, "at_request", json_integer((json_int_t)r->o->kill_at));
	json_object_set_new(k, "failed_held", json_integer((json_int_t)r->failed_held));
	json_object_set_new(k, "failed_no_decode_up", json_integer((json_int_t)r->failed_down));
	json_object_set_new(k, "restarted", json_boolean(r->restarted && r->t_listen));
	if (r->o->restart_ms < 0)
		return k;
	json_object_set_new(k, "restart_ms", json_integer(r->o->restart_ms));
	/* kill -> fork of the new decode, kill -> its HELLO (listening) */
	json_object_set_new(k, "forked_after_ms", json_real(ms_since_kill(r, r->t_restart)));
	json_object_set_new(k, "listening_after_ms", json_real(ms_since_kill(r, r->t_listen)));
	json_object_set_new(k, "ok_after_restart", json_integer((json_int_t)r->ok_after));
	json_object_set_new(k, "prefills_relinked", json_integer((json_int_t)r->relinks));
	return k;
}

/* Idle percentiles in ms (p = 50, 90, 99, 100). */
static double idle_pct(fl_router *r, double p)
{
	kvb_samples *x = &r->idle.lat_us;
	kvb_stats st;
	if (!x->n)
		return 0;
	kvb_stats_compute(x, &st); /* sorts */
	return kvb_percentile_sorted(x->v, x->n, p) / 1e3;
}

static double p99_vs_idle(fl_router *r, const fl_sum *s)
{
	double idle = idle_pct(r, 99);
	return idle > 0 ? s->lat.p99 / 1e3 / idle : 0;
}

static json_t *fleet_idle_json(fl_router *r)
{
	json_t *i = json_object();
	char buf[96];
	json_object_set_new(i, "requests", json_integer((json_int_t)(r->idle.ok + r->idle.failed)));
	json_object_set_new(i, "ok", json_integer((json_int_t)r->idle.ok));
	json_object_set_new(i, "failed", json_integer((json_int_t)r->idle.failed));
	json_object_set_new(i, "skipped", json_integer((json_int_t)r->idle.skipped));
	if (r->idle.failed)
		json_object_set_new(i, "first_failure",
				    json_string(cause_name(cause_idx(r->idle.first_cause), buf, sizeof(buf))));
	json_object_set_new(i, "p50_ms", json_real(idle_pct(r, 50)));
	json_object_set_new(i, "p90_ms", json_real(idle_pct(r, 90)));
	json_object_set_new(i, "p99_ms", json_real(idle_pct(r, 99)));
	json_object_set_new(i, "max_ms", json_real(idle_pct(r, 100)));
	return i;
}

/* Whether c is the decode the router killed (--kill-decode). */
static bool left_killed(fl_router *r, fl_proc *c)
{
	return r->killed && c->decode && (int)c->idx == r->o->kill_decode;
}

/* ms from the kill (or from c's socket closing) to its entry leaving. */
static double left_ms(fl_router *r, fl_proc *c)
{
	uint64_t from = left_killed(r, c) ? r->t_kill : c->t_gone;
	return from && c->t_left > from ? (double)(c->t_left - from) / 1e6 : 0;
}

/* --join: the pool, the nodes that left (ms from the kill, or from their
 * socket's close, to the leave) and the directory's warning. */
static void fleet_join_json(fl_router *r, json_t *j)
{
	json_t *left = json_array();
	json_object_set_new(j, "joined", json_string(r->o->pool));
	for (unsigned i = 0; i < r->n_proc; i++) {
		fl_proc *c = &r->proc[i];
		if (!c->left)
			continue;
		json_t *e = json_object();
		json_object_set_new(e, "name", json_string(c->name));
		json_object_set_new(e, "role", json_string(c->decode ? "decode" : "prefill"));
		json_object_set_new(e, left_killed(r, c) ? "ms_from_kill" : "ms_from_socket_close",
				    json_real(left_ms(r, c)));
		json_object_set_new(e, "ttl_s", json_integer(c->ttl_s));
		json_array_append_new(left, e);
	}
	json_object_set_new(j, "left", left);
	json_object_set_new(j, "failed_node_gone", json_integer((json_int_t)r->failed_gone));
	if (kvb_join_warning(r->join)[0])
		json_object_set_new(j, "warning", json_string(kvb_join_warning(r->join)));
}

static json_t *fleet_json(fl_router *r)
{
	fl_sum s;
	char buf[96];
	fleet_sum(r, &s);
	json_t *j = json_object(), *lat = json_object(), *causes = json_object();
	json_object_set_new(j, "test", json_string("fleet"));
	json_object_set_new(j, "driver", json_string(r->o->driver));
	json_object_set_new(j, "prefill", json_integer(r->o->prefill));
	json_object_set_new(j, "decode", json_integer(r->o->decode));
	json_object_set_new(j, "model", json_string(r->o->model));
	json_object_set_new(j, "stream", json_string(stream_name(r->o)));
	json_object_set_new(j, "pick", json_string(r->o->pick_least ? "least" : "rr"));
	json_object_set_new(j, "requests", json_integer((json_int_t)r->st.n));
	json_object_set_new(j, "ok", json_integer((json_int_t)r->ok));
	json_object_set_new(j, "failed", json_integer((json_int_t)r->failed));
	json_object_set_new(j, "unexpected_failures", json_integer((json_int_t)r->unexpected));
	for (unsigned i = 0; i < FL_CAUSES; i++)
		if (r->cause[i])
			json_object_set_new(causes, cause_name(i, buf, sizeof(buf)), json_integer((json_int_t)r->cause[i]));
	json_object_set_new(j, "failures", causes);
	/* every request that landed was hashed; verified: none differed */
	json_object_set_new(j, "verified", json_boolean(r->ok && !r->cause[FL_CAUSES - 1]));
	json_object_set_new(j, "all_ok", json_boolean(r->ok == r->st.n));
	json_object_set_new(j, "bytes", json_integer((json_int_t)r->bytes));
	json_object_set_new(j, "offered_bytes", json_integer((json_int_t)s.offered_bytes));
	json_object_set_new(j, "failed_bytes", json_integer((json_int_t)r->failed_bytes));
	json_object_set_new(j, "seconds", json_real(s.seconds));
	json_object_set_new(j, "goodput_gbit", json_real(s.goodput_gbit));
	json_object_set_new(j, "offered_gbit", json_real(s.offered_gbit));
	json_object_set_new(lat, "p50", json_real(s.lat.p50));
	json_object_set_new(lat, "p90", json_real(s.p90));
	json_object_set_new(lat, "p99", json_real(s.lat.p99));
	json_object_set_new(lat, "max", json_real(s.lat.max));
	json_object_set_new(lat, "avg", json_real(s.lat.avg));
	json_object_set_new(j, "lat_us", lat);
	json_object_set_new(j, "peers", fleet_peers_json(r));
	json_object_set_new(j, "decodes", fleet_decodes_json(r));
	if (r->o->kill_decode >= 0)
		json_object_set_new(j, "killed", fleet_killed_json(r));
	if (r->o->idle_baseline) {
		json_object_set_new(j, "idle", fleet_idle_json(r));
		json_object_set_new(j, "p99_vs_idle", json_real(p99_vs_idle(r, &s)));
	}
	if (r->o->join)
		fleet_join_json(r, j);
	return j;
}

/* The kill/restart and idle-baseline lines. */
static void fleet_text_extra(fl_router *r, const fl_sum *s)
{
	if (r->o->kill_decode >= 0 && r->killed)
		printf("  decode %d killed at request %llu: %llu requests it held ended PEER_DEAD", r->o->kill_decode,
		       (unsigned long long)r->o->kill_at, (unsigned long long)r->failed_held);
	if (r->killed && r->restarted && r->t_listen)
		printf("; restarted %d ms later, listening %.1f ms after the kill, %llu requests ok on it since",
		       r->o->restart_ms, ms_since_kill(r, r->t_listen), (unsigned long long)r->ok_after);
	else if (r->killed && r->o->restart_ms >= 0)
		printf("; the restart did not come up");
	if (r->killed)
		printf("\n");
	if (!r->o->idle_baseline)
		return;
	printf("  idle baseline (%llu requests again one at a time, same pairs; %llu skipped, %llu failed): "
	       "p50 %.2f ms  p99 %.2f ms; p99 under the stream / idle %.2f\n",
	       (unsigned long long)r->idle.ok, (unsigned long long)r->idle.skipped,
	       (unsigned long long)r->idle.failed, idle_pct(r, 50), idle_pct(r, 99), p99_vs_idle(r, s));
}

static void fleet_text(fl_router *r)
{
	fl_sum s;
	char buf[96];
	fleet_sum(r, &s);
	printf("fleet %ux%u over %s, %s, stream %s (%zu requests), pick %s\n", r->o->prefill, r->o->decode,
	       r->o->driver, r->o->model, stream_name(r->o), r->st.n, r->o->pick_least ? "least" : "rr");
	printf("  ok %llu  failed %llu", (unsigned long long)r->ok, (unsigned long long)r->failed);
	for (unsigned i = 0; i < FL_CAUSES; i++)
		if (r->cause[i])
			printf("  %s %llu", cause_name(i, buf, sizeof(buf)), (unsigned long long)r->cause[i]);
	printf("\n  goodput %.3f Gb/s (%.1f MiB verified in %.3f s), offered %.3f Gb/s\n", s.goodput_gbit,
	       (double)r->bytes / 1048576, s.seconds, s.offered_gbit);
	printf("  transfer latency us: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", s.lat.p50, s.p90,
	       s.lat.p99, s.lat.max);
	fleet_text_extra(r, &s);
	for (unsigned i = 0; i < r->n_proc; i++)
		if (r->proc[i].left)
			printf("  %s left the directory %.0f ms after %s\n", r->proc[i].name, left_ms(r, &r->proc[i]),
			       left_killed(r, &r->proc[i]) ? "the kill" : "its socket closed");
	if (kvb_join_warning(r->join)[0])
		printf("  warning: %s\n", kvb_join_warning(r->join));
	printf("  bytes prefill -> decode:\n");
	for (unsigned i = 0; i < r->o->prefill; i++)
		for (unsigned j = 0; j < r->o->decode; j++)
			printf("    %s -> %s  %6llu requests  %14llu bytes\n", prefill(r, i)->name, decode(r, j)->name,
			       (unsigned long long)r->pair_reqs[i * r->o->decode + j],
			       (unsigned long long)r->pair_bytes[i * r->o->decode + j]);
}
