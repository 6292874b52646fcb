/* SPDX-License-Identifier: MIT */
/* kvwire-bench server: one event loop over the control listener, the
 * control clients and the kvwire context. Control clients are served side by
 * side (each must send its start line within SRV_FIRST_MS), test sessions run
 * one at a time in arrival order, and kvwire progress never waits on a
 * control client: `kvwire ping` reaches the listener at any time. */
#include "session.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SRV_CLIENTS 16            /* control clients held at once, KVB_CTL_BUF each */
#define SRV_FIRST_MS 2000         /* a new client's start line must come within this */
#define SRV_STRAYS 32             /* kvwire endpoints of no session (pings) held */
#define SRV_STRAY_NS 30000000000ull /* ... for at most 30 s, like accept_timeout_ms */
#define SRV_ACCEPT_MS 15000       /* after "ready": the client's kvwire connection */
#define SRV_LINGER_NS 10000000000ull /* after the result: until the client's "bye" */
#define SRV_IDLE_MS 10            /* idle: control clients looked at this often */
#define SRV_STR_(x) #x
#define SRV_STR(x) SRV_STR_(x)

enum srv_state { CL_FREE, CL_NEW, CL_QUEUED, CL_ACTIVE };

typedef struct srv_client {
	enum srv_state state;
	uint64_t since;               /* when accepted (NEW) or queued (QUEUED) */
	kvb_ctl c;
	kvb_opts p;                   /* the test asked for, once QUEUED */
} srv_client;

typedef struct srv {
	const kvb_opts *o;
	kvw_ctx *ctx;
	kvw_listener *l;
	int lfd;
	bool quit, served;
	srv_client cl[SRV_CLIENTS];
	kvw_ep *stray[SRV_STRAYS];
	uint64_t stray_t[SRV_STRAYS];
} srv;

static volatile sig_atomic_t server_stop;

static void on_signal(int sig)
{
	(void)sig;
	server_stop = 1;
}

kvw_status kvb_ctx_open(const kvb_opts *o, unsigned rails, kvw_ctx **ctx, char *err, size_t errlen)
{
	kvw_config *cfg;
	char rs[16];
	kvw_status st = kvw_config_create(&cfg);
	if (st) {
		snprintf(err, errlen, "kvw_config_create: %s", kvw_strerror(st));
		return st;
	}
	snprintf(rs, sizeof(rs), "%u", rails);
	const char *set[][2] = {
		{"driver", o->driver}, {"rails", rails ? rs : ""}, {"secret", o->secret},
		{"fault", o->fault}, {"rdma_dev", o->rdma_dev}, {"rdma_gid", o->rdma_gid},
	};
	for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
		if (!set[i][1][0])
			continue;
		st = kvw_config_set(cfg, set[i][0], set[i][1]);
		if (st) {
			snprintf(err, errlen, "config %s=%s: %s", set[i][0], set[i][1], kvw_strerror(st));
			kvw_config_destroy(cfg);
			return st;
		}
	}
	st = kvw_ctx_create(cfg, ctx);
	kvw_config_destroy(cfg);
	if (st)
		snprintf(err, errlen, "kvw_ctx_create: %s (drivers built: %s)", kvw_strerror(st),
			 kvw_drivers_built());
	return st;
}

static void send_error(kvb_ctl *c, const char *msg)
{
	json_t *m = json_object();
	json_object_set_new(m, "type", json_string("error"));
	json_object_set_new(m, "msg", json_string(msg));
	kvb_ctl_send(c, m);
}

static json_t *server_result(kvb_sess *s)
{
	json_t *m = json_object();
	kvw_counters cn = {.size = sizeof(cn)};
	cn = (kvw_counters){.size = sizeof(cn)};
	if (s->ep)
		kvw_ep_counters(s->ep, &cn);
	json_object_set_new(m, "type", json_string("result"));
	json_object_set_new(m, "verified", json_boolean(s->verified && !s->err[0]));
	json_object_set_new(m, "note", json_string(s->note));
	json_object_set_new(m, "error", json_string(s->err));
	json_object_set_new(m, "cpu_pct", json_real(s->cpu_pct));
	json_object_set_new(m, "reg_ns", json_integer((json_int_t)(s->mem ? kvw_mem_reg_ns(s->mem) : 0)));
	json_object_set_new(m, "pinned", json_boolean(s->pinned));
	json_object_set_new(m, "bytes_tx", json_integer((json_int_t)cn.bytes_tx));
	json_object_set_new(m, "bytes_rx", json_integer((json_int_t)cn.bytes_rx));
	json_object_set_new(m, "retransmits", json_integer((json_int_t)cn.retransmits));
	json_object_set_new(m, "drops", json_integer((json_int_t)cn.drops));
	json_object_set_new(m, "runs_per_layer", json_integer((json_int_t)s->runs_per_layer));
	json_object_set_new(m, "recv_done", json_integer((json_int_t)s->recv.done));
	return m;
}

static void srv_drop(srv_client *cl, const char *why)
{
	if (why)
		send_error(&cl->c, why);
	kvb_ctl_close(&cl->c);
	cl->state = CL_FREE;
}

/* A free slot; when all are taken, the client silent longest makes room. */
static srv_client *srv_slot(srv *sv)
{
	srv_client *old = NULL;
	for (int i = 0; i < SRV_CLIENTS; i++) {
		srv_client *cl = &sv->cl[i];
		if (cl->state == CL_FREE)
			return cl;
		if (cl->state == CL_NEW && (!old || cl->since < old->since))
			old = cl;
	}
	if (old)
		srv_drop(old, "closed: the bench server holds " SRV_STR(SRV_CLIENTS) " control clients "
			 "and this one was silent longest; send the start line as soon as you connect");
	return old;
}

/* A new client's first line: "start" queues its test, "quit" stops the server. */
static void srv_first_line(srv *sv, srv_client *cl, json_t *m, uint64_t now)
{
	char err[256];
	const char *t = json_string_value(json_object_get(m, "type"));
	if (t && !strcmp(t, "quit")) {
		sv->quit = true;
		srv_drop(cl, NULL);
		return;
	}
	if (kvb_params_parse(m, &cl->p, err, sizeof(err))) {
		srv_drop(cl, err);
		sv->served = true;
		return;
	}
	cl->state = CL_QUEUED;
	cl->since = now;
}

static void srv_read(srv *sv, srv_client *cl, uint64_t now)
{
	json_t *m;
	int r = kvb_ctl_fill(&cl->c);
	if (cl->state == CL_NEW) {
		int t = kvb_ctl_take(&cl->c, &m);
		if (t == 0) {
			srv_first_line(sv, cl, m, now);
			json_decref(m);
		} else if (t < 0) {
			srv_drop(cl, "closed: the control message is not a JSON object on one line; send the "
				 "start message as kvwire-bench does");
		}
	}
	if (r >= 0 || cl->state == CL_FREE)
		return;
	srv_drop(cl, cl->c.len >= KVB_CTL_BUF - 1 ?
		 "closed: a control line is longer than " SRV_STR(KVB_CTL_BUF) " bytes; send the "
		 "start message as one JSON line" : NULL);
}

static void srv_accept_all(srv *sv, uint64_t now)
{
	kvb_ctl *tmp = malloc(sizeof(*tmp));
	for (int i = 0; tmp && i < SRV_CLIENTS; i++) {
		if (kvb_ctl_accept(sv->lfd, tmp))
			break;
		srv_client *cl = srv_slot(sv);
		if (!cl) {
			send_error(tmp, "the bench server has " SRV_STR(SRV_CLIENTS) " runs waiting; "
				   "try again when they are done");
			kvb_ctl_close(tmp);
			continue;
		}
		cl->c.fd = tmp->fd;
		cl->c.len = 0;
		cl->state = CL_NEW;
		cl->since = now;
		srv_read(sv, cl, now); /* the start line often came with the connection */
	}
	free(tmp);
}

/* New clients that sent no start line within SRV_FIRST_MS are closed. */
static int srv_expire(srv *sv, uint64_t now)
{
	uint64_t lim = SRV_FIRST_MS * 1000000ull, next = UINT64_MAX;
	for (int i = 0; i < SRV_CLIENTS; i++) {
		srv_client *cl = &sv->cl[i];
		if (cl->state != CL_NEW)
			continue;
		if (now - cl->since >= lim)
			srv_drop(cl, "closed: no start line within " SRV_STR(SRV_FIRST_MS) " ms; send "
				 "it as soon as you connect (kvwire-bench bw|lat|kv --connect URI does)");
		else if (cl->since + lim - now < next)
			next = cl->since + lim - now;
	}
	return next == UINT64_MAX ? -1 : (int)((next + 999999) / 1000000);
}

static void srv_strays_check(srv *sv, uint64_t now)
{
	for (int i = 0; i < SRV_STRAYS; i++) {
		kvw_ep *ep = sv->stray[i];
		if (ep && (kvw_ep_status(ep) != KVW_OK || now - sv->stray_t[i] >= SRV_STRAY_NS)) {
			kvw_ep_close(ep);
			sv->stray[i] = NULL;
		}
	}
}

/* Before "ready": every kvwire endpoint already up is not the client's
 * (a ping): take them, so that the next one accepted is the session's. */
static void srv_strays_take(srv *sv)
{
	kvw_ep *ep;
	uint64_t now = kvb_now_ns();
	srv_strays_check(sv, now);
	while (kvw_accept(sv->l, 0, &ep) == KVW_OK) {
		int k = 0;
		for (int i = 0; i < SRV_STRAYS; i++)
			if (!sv->stray[i] || (sv->stray[k] && sv->stray_t[i] < sv->stray_t[k]))
				k = i;
		if (sv->stray[k])
			kvw_ep_close(sv->stray[k]);
		sv->stray[k] = ep;
		sv->stray_t[k] = now;
	}
}

/* The control side, without waiting: new connections, lines, deadlines. */
static void srv_poll(srv *sv)
{
	struct pollfd pf[SRV_CLIENTS + 1];
	int who[SRV_CLIENTS + 1], n = 0;
	uint64_t now = kvb_now_ns();
	srv_expire(sv, now);
	pf[n] = (struct pollfd){.fd = sv->lfd, .events = POLLIN};
	who[n++] = -1;
	for (int i = 0; i < SRV_CLIENTS; i++) {
		if (sv->cl[i].state != CL_NEW && sv->cl[i].state != CL_QUEUED)
			continue;
		pf[n] = (struct pollfd){.fd = sv->cl[i].c.fd, .events = POLLIN};
		who[n++] = i;
	}
	if (poll(pf, (nfds_t)n, 0) <= 0)
		n = 0;
	for (int k = 1; k < n; k++)
		if (pf[k].revents && sv->cl[who[k]].state != CL_FREE)
			srv_read(sv, &sv->cl[who[k]], now);
	if (n && pf[0].revents)
		srv_accept_all(sv, now);
	srv_strays_check(sv, now);
}

/* The idle loop and every wait of a session: the control side, then kvwire
 * (its events belong to no session here), then a sleep in kvwire's own wait
 * (timers, drivers without fds) of at most timeout_ms, so that control
 * clients are looked at again within that time. */
static void srv_step(srv *sv, int timeout_ms)
{
	kvw_event evs[16];
	srv_poll(sv);
	int exp = srv_expire(sv, kvb_now_ns());
	if (exp >= 0 && exp < timeout_ms)
		timeout_ms = exp;
	while (kvw_poll(sv->ctx, evs, 16) == 16)
		;
	kvw_ctx_wait(sv->ctx, timeout_ms);
}

/* Run from inside a session's own loop (which drives kvwire itself). */
static void srv_tick(void *arg)
{
	srv_poll(arg);
}

/* After the result: keep the endpoint alive until the client says bye. */
static void server_linger(srv *sv, kvb_ctl *c)
{
	uint64_t end = kvb_now_ns() + SRV_LINGER_NS;
	while (kvb_now_ns() < end) {
		json_t *m;
		int r = kvb_ctl_recv(c, 0, &m);
		if (r < 0)
			return;
		if (r == 0) {
			const char *t = json_string_value(json_object_get(m, "type"));
			bool bye = t && !strcmp(t, "bye");
			json_decref(m);
			if (bye)
				return;
			continue;
		}
		srv_step(sv, 1);
	}
}

/* Waits for the session's kvwire connection, serving everything else. */
static kvw_status srv_accept_ep(srv *sv, kvw_ep **ep)
{
	uint64_t end = kvb_now_ns() + SRV_ACCEPT_MS * 1000000ull;
	for (;;) {
		kvw_status st = kvw_accept(sv->l, 0, ep);
		if (st != KVW_INPROGRESS || kvb_now_ns() >= end)
			return st;
		srv_step(sv, 1);
	}
}

static void send_ready(kvb_sess *s)
{
	json_t *m = json_object();
	json_object_set_new(m, "type", json_string("ready"));
	json_object_set_new(m, "reg_ns", json_integer((json_int_t)kvw_mem_reg_ns(s->mem)));
	json_object_set_new(m, "pinned", json_boolean(s->pinned));
	kvb_ctl_send(s->ctl, m);
}

static void server_session(srv *sv, kvb_ctl *c, const kvb_opts *p)
{
	kvb_sess s;
	char err[256];
	int rc = kvb_sess_setup(&s, sv->ctx, p, false);
	s.ctl = c;
	s.tick = srv_tick;
	s.tick_arg = sv;
	if (rc) {
		send_error(c, s.err);
		goto free_sess;
	}
	srv_strays_take(sv);
	send_ready(&s);
	kvw_status st = srv_accept_ep(sv, &s.ep);
	if (st) {
		snprintf(err, sizeof(err), "the server accepted no kvwire connection: %s %s",
			 kvw_strerror(st), kvw_ctx_last_error(sv->ctx));
		send_error(c, err);
		goto free_sess;
	}
	if (p->test == KVB_T_LAT) {
		kvb_sess_lat(&s);
	} else {
		kvb_sess_flows(&s);
		kvb_sess_run(&s);
	}
	kvb_ctl_send(c, server_result(&s));
	server_linger(sv, c);
free_sess:
	kvb_sess_free(&s);
}

/* The queued client that came first, NULL when none waits. */
static srv_client *srv_next(srv *sv)
{
	srv_client *next = NULL;
	for (int i = 0; i < SRV_CLIENTS; i++) {
		srv_client *cl = &sv->cl[i];
		if (cl->state == CL_QUEUED && (!next || cl->since < next->since))
			next = cl;
	}
	return next;
}

static void srv_run_one(srv *sv, srv_client *cl)
{
	cl->state = CL_ACTIVE;
	if (!sv->o->quiet)
		fprintf(stderr, "kvwire-bench server: %s test, %llu B\n", kvb_test_name(cl->p.test),
			(unsigned long long)cl->p.size);
	server_session(sv, &cl->c, &cl->p);
	srv_drop(cl, NULL);
	sv->served = true;
}

static void srv_loop(srv *sv)
{
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	while (!server_stop && !sv->quit && !(sv->o->once && sv->served)) {
		srv_client *cl = srv_next(sv);
		if (cl)
			srv_run_one(sv, cl);
		else
			srv_step(sv, SRV_IDLE_MS);
	}
	for (int i = 0; i < SRV_CLIENTS; i++)
		if (sv->cl[i].state != CL_FREE)
			srv_drop(&sv->cl[i], "the bench server stopped before this run; start it again");
	for (int i = 0; i < SRV_STRAYS; i++)
		if (sv->stray[i])
			kvw_ep_close(sv->stray[i]);
}

static int srv_open_ctl(const kvb_opts *o, const char *uri, int *lfd, char *bound, size_t blen)
{
	char ctl[300], err[256];
	if (o->ctl[0])
		snprintf(ctl, sizeof(ctl), "%s", o->ctl);
	else if (kvb_ctl_addr_for(uri, o->ctl_port, ctl, sizeof(ctl))) {
		fprintf(stderr, "kvwire-bench server: cannot derive a control address from %s; pass -p PORT\n", uri);
		return -1;
	}
	if (kvb_ctl_listen(ctl, lfd, bound, blen, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench server: %s\n", err);
		return -1;
	}
	return 0;
}

int kvb_server_main(const kvb_opts *o, int ready_fd)
{
	srv *sv = calloc(1, sizeof(*sv));
	char err[256], bound[300];
	int rc = 1;

	if (!sv || kvb_ctx_open(o, 0, &sv->ctx, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench server: %s\n", sv ? err : "out of memory");
		free(sv);
		return 1;
	}
	sv->o = o;
	kvw_status st = kvw_listen(sv->ctx, o->listen, &sv->l);
	if (st) {
		fprintf(stderr, "kvwire-bench server: cannot listen on %s: %s %s\n", o->listen,
			kvw_strerror(st), kvw_ctx_last_error(sv->ctx));
		goto destroy_ctx;
	}
	const char *uri = kvw_listener_uri(sv->l);
	if (srv_open_ctl(o, uri, &sv->lfd, bound, sizeof(bound)))
		goto close_listener;
	if (ready_fd >= 0) {
		dprintf(ready_fd, "%s %s\n", uri, bound);
		close(ready_fd);
	} else if (!o->quiet) {
		printf("kvwire-bench server: listening on %s (control %s)\n", uri, bound);
		fflush(stdout);
	}
	srv_loop(sv);
	rc = 0;
	close(sv->lfd);
	if (!strncmp(bound, "unix:", 5))
		unlink(bound + 5);
close_listener:
	kvw_listener_close(sv->l);
destroy_ctx:
	kvw_ctx_destroy(sv->ctx);
	free(sv);
	return rc;
}
