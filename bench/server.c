/* SPDX-License-Identifier: MIT */
/* kvwire-bench server: serves one session at a time until stopped. */
#include "session.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

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
	kvw_counters cn;
	memset(&cn, 0, sizeof(cn));
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

/* After the result: keep the endpoint alive until the client says bye. */
static void server_linger(kvw_ctx *ctx, kvb_ctl *c)
{
	uint64_t end = kvb_now_ns() + 10000000000ull;
	while (kvb_now_ns() < end) {
		json_t *m;
		kvw_progress(ctx);
		int r = kvb_ctl_recv(c, 1, &m);
		if (r < 0)
			return;
		if (r == 0) {
			const char *t = json_string_value(json_object_get(m, "type"));
			bool bye = t && !strcmp(t, "bye");
			json_decref(m);
			if (bye)
				return;
		}
	}
}

static int server_session(kvw_ctx *ctx, kvw_listener *l, kvb_ctl *c, const kvb_opts *p)
{
	kvb_sess s;
	char err[256];
	int rc = kvb_sess_setup(&s, ctx, p, false);
	s.ctl = c;
	if (rc) {
		send_error(c, s.err);
		goto free_sess;
	}
	json_t *m = json_object();
	json_object_set_new(m, "type", json_string("ready"));
	json_object_set_new(m, "reg_ns", json_integer((json_int_t)kvw_mem_reg_ns(s.mem)));
	json_object_set_new(m, "pinned", json_boolean(s.pinned));
	kvb_ctl_send(c, m);
	kvw_status st = kvw_accept(l, 15000, &s.ep);
	if (st) {
		snprintf(err, sizeof(err), "the server accepted no kvwire connection: %s %s",
			 kvw_strerror(st), kvw_ctx_last_error(ctx));
		send_error(c, err);
		rc = -1;
		goto free_sess;
	}
	if (p->test == KVB_T_LAT) {
		kvb_sess_lat(&s);
	} else {
		kvb_sess_flows(&s);
		kvb_sess_run(&s);
	}
	kvb_ctl_send(c, server_result(&s));
	server_linger(ctx, c);
free_sess:
	kvb_sess_free(&s);
	return rc;
}

/* Returns 1 when told to quit. */
static int server_serve(kvw_ctx *ctx, kvw_listener *l, kvb_ctl *c, const kvb_opts *o)
{
	json_t *m;
	kvb_opts p;
	char err[256];
	if (kvb_ctl_recv(c, 10000, &m))
		return 0;
	const char *t = json_string_value(json_object_get(m, "type"));
	if (t && !strcmp(t, "quit")) {
		json_decref(m);
		return 1;
	}
	int rc = kvb_params_parse(m, &p, err, sizeof(err));
	json_decref(m);
	if (rc) {
		send_error(c, err);
		return 0;
	}
	if (!o->quiet)
		fprintf(stderr, "kvwire-bench server: %s test, %llu B\n", kvb_test_name(p.test),
			(unsigned long long)p.size);
	server_session(ctx, l, c, &p);
	return 0;
}

int kvb_server_main(const kvb_opts *o, int ready_fd)
{
	kvw_ctx *ctx;
	kvw_listener *l;
	char err[256], ctl[300], bound[300];
	int lfd, rc = 1;

	if (kvb_ctx_open(o, 0, &ctx, err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench server: %s\n", err);
		return 1;
	}
	kvw_status st = kvw_listen(ctx, o->listen, &l);
	if (st) {
		fprintf(stderr, "kvwire-bench server: cannot listen on %s: %s %s\n", o->listen,
			kvw_strerror(st), kvw_ctx_last_error(ctx));
		goto destroy_ctx;
	}
	const char *uri = kvw_listener_uri(l);
	if (o->ctl[0])
		snprintf(ctl, sizeof(ctl), "%s", o->ctl);
	else if (kvb_ctl_addr_for(uri, o->ctl_port, ctl, sizeof(ctl))) {
		fprintf(stderr, "kvwire-bench server: cannot derive a control address from %s; pass -p PORT\n", uri);
		goto close_listener;
	}
	if (kvb_ctl_listen(ctl, &lfd, bound, sizeof(bound), err, sizeof(err))) {
		fprintf(stderr, "kvwire-bench server: %s\n", err);
		goto close_listener;
	}
	if (ready_fd >= 0) {
		dprintf(ready_fd, "%s %s\n", uri, bound);
		close(ready_fd);
	} else if (!o->quiet) {
		printf("kvwire-bench server: listening on %s (control %s)\n", uri, bound);
		fflush(stdout);
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	while (!server_stop) {
		kvb_ctl c;
		int r = kvb_ctl_accept(lfd, 200, &c);
		if (r)
			continue;
		r = server_serve(ctx, l, &c, o);
		kvb_ctl_close(&c);
		if (r == 1 || o->once)
			break;
	}
	rc = 0;
	close(lfd);
	if (!strncmp(bound, "unix:", 5))
		unlink(bound + 5);
close_listener:
	kvw_listener_close(l);
destroy_ctx:
	kvw_ctx_destroy(ctx);
	return rc;
}
