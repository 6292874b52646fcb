/* SPDX-License-Identifier: MIT */
/* What runs without waiting: the lease's keepalive (every ttl/3; a lost
 * lease is granted again and every entry republished) and the watch stream
 * (reconnected with backoff from the last revision seen). Both are easy
 * handles on one curl multi handle, driven by kvw_dir_progress with
 * curl_multi_perform, which never blocks (non-blocking sockets). */
#include "dir_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dir_async_free(kvw_dir *d, struct dir_async *a)
{
	if (a->h) {
		if (a->busy)
			curl_multi_remove_handle(d->multi, a->h);
		curl_easy_cleanup(a->h);
	}
	curl_slist_free_all(a->hdr);
	dir_buf_free(&a->rx);
	free(a->body);
	memset(a, 0, sizeof(*a));
}

/* Starts path(body) on endpoint ep; timeout_ms 0 = a stream without end. */
static bool dir_async_start(kvw_dir *d, struct dir_async *a, size_t ep, const char *path, json_t *body,
			    uint32_t timeout_ms)
{
	free(a->body);
	a->body = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!a->h)
		a->h = curl_easy_init();
	if (!a->h || !a->body || !dir_buf_init(&a->rx, DIR_MAX_REPLY))
		return false;
	a->ep = ep;
	a->parsed = 0;
	dir_easy_setup(d, a->h, ep, path, a->body, &a->hdr, &a->rx);
	curl_easy_setopt(a->h, CURLOPT_CONNECTTIMEOUT_MS, (long)d->timeout_ms);
	curl_easy_setopt(a->h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	a->busy = curl_multi_add_handle(d->multi, a->h) == CURLM_OK;
	return a->busy;
}

static void dir_async_done(kvw_dir *d, struct dir_async *a)
{
	curl_multi_remove_handle(d->multi, a->h);
	a->busy = false;
}

/* ------------------------------------------------------------------ lease */
static void dir_lease_next(kvw_dir *d);

static void dir_lease_fail(kvw_dir *d, CURLcode rc, const char *what)
{
	d->lease_st = rc == CURLE_OPERATION_TIMEDOUT ? KVW_ERR_TIMEDOUT : KVW_ERR_CONNREFUSED;
	dir_err(d, "etcd at %s did not answer the lease's %s (%s): the entries stay published until "
		"the lease's %u s run out; kvw_dir_progress retries every second -- check that etcd "
		"runs there", d->eps[d->la.ep], what, curl_easy_strerror(rc), d->ttl_s);
	d->cur = (d->la.ep + 1) % d->n_eps;
	d->stage = LEASE_NONE;
	d->ka_next_ms = dir_now_ms() + 1000;
}

static void dir_lease_reply(kvw_dir *d, CURLcode rc)
{
	static const char *const what[] = {"", "keepalive", "grant", "republish"};
	json_t *j = rc == CURLE_OK ? json_loadb(d->la.rx.p, d->la.rx.len, 0, NULL) : NULL;
	enum dir_lease_stage st = d->stage;
	if (!json_is_object(j)) {
		json_decref(j);
		dir_lease_fail(d, rc == CURLE_OK ? CURLE_WEIRD_SERVER_REPLY : rc, what[st]);
		return;
	}
	d->cur = d->la.ep;
	if (st == LEASE_KEEPALIVE) {
		if (dir_jint(json_object_get(j, "result"), "TTL") > 0) {
			d->lease_st = KVW_OK;
			d->stage = LEASE_NONE;
			d->ka_next_ms = dir_now_ms() + d->ttl_s * 1000 / 3;
		} else { /* expired (etcd was away longer than the TTL): again */
			d->lease = 0;
			d->stage = LEASE_NONE;
			d->ka_next_ms = dir_now_ms();
			dir_lease_next(d);
		}
	} else if (json_object_get(j, "error")) { /* refused: again in a second */
		d->lease_st = KVW_ERR_IO;
		dir_err(d, "etcd at %s refused the lease's %s: %.200s; kvw_dir_progress retries every second",
			d->eps[d->la.ep], what[st], json_string_value(json_object_get(j, "error")) ?: "?");
		d->lease = 0;
		d->stage = LEASE_NONE;
		d->ka_next_ms = dir_now_ms() + 1000;
	} else if (st == LEASE_GRANT) {
		d->lease = dir_jint(j, "ID");
		d->ka_next_ms = dir_now_ms() + (d->lease > 0 ? d->ttl_s * 1000 / 3 : 1000);
		d->put_idx = 0;
		d->stage = d->lease > 0 ? LEASE_PUT : LEASE_NONE;
		dir_lease_next(d);
	} else {
		d->put_idx++;
		dir_lease_next(d);
	}
	json_decref(j);
}

/* The next republish put, or the end of the chain. */
static void dir_lease_put_next(kvw_dir *d)
{
	void *it = json_object_iter(d->published);
	for (size_t i = 0; it && i < d->put_idx; i++)
		it = json_object_iter_next(d->published, it);
	if (!it || d->lease <= 0) {
		d->stage = LEASE_NONE;
		d->lease_st = d->lease > 0 ? KVW_OK : d->lease_st;
		return;
	}
	const char *k = json_object_iter_key(it), *v = json_string_value(json_object_iter_value(it));
	char *kb = dir_b64(k, strlen(k)), *vb = dir_b64(v, strlen(v)), id[24];
	snprintf(id, sizeof(id), "%lld", (long long)d->lease);
	dir_async_start(d, &d->la, d->cur, "/v3/kv/put",
			json_pack("{s:s,s:s,s:s}", "key", kb ? kb : "", "value", vb ? vb : "", "lease", id),
			d->timeout_ms);
	free(kb);
	free(vb);
}

static void dir_lease_next(kvw_dir *d)
{
	char id[24];
	if (d->stage == LEASE_PUT) {
		dir_lease_put_next(d);
	} else if (d->lease == 0 && json_object_size(d->published) && dir_now_ms() >= d->ka_next_ms) {
		d->stage = LEASE_GRANT;
		dir_async_start(d, &d->la, d->cur, "/v3/lease/grant",
				json_pack("{s:I}", "TTL", (json_int_t)d->ttl_s), d->timeout_ms);
	} else if (d->lease && dir_now_ms() >= d->ka_next_ms) {
		d->stage = LEASE_KEEPALIVE;
		snprintf(id, sizeof(id), "%lld", (long long)d->lease);
		dir_async_start(d, &d->la, d->cur, "/v3/lease/keepalive", json_pack("{s:s}", "ID", id),
				d->timeout_ms);
	}
}

/* ------------------------------------------------------------------ watch */
static void dir_ev_push(kvw_dir *d, kvw_dir_event_type t, kvw_status st, const kvw_dir_entry *e)
{
	if (d->ev_n == DIR_MAX_EVENTS) {
		d->w_overflow = true;
		return;
	}
	kvw_dir_event *ev = &d->evq[(d->ev_head + d->ev_n++) % DIR_MAX_EVENTS];
	memset(ev, 0, sizeof(*ev));
	ev->size = sizeof(*ev);
	ev->type = t;
	ev->status = st;
	if (e)
		ev->entry = *e;
}

static void dir_watch_event(kvw_dir *d, const json_t *we)
{
	const json_t *kv = json_object_get(we, "kv");
	const char *type = json_string_value(json_object_get(we, "type"));
	const char *k64 = json_string_value(json_object_get(kv, "key"));
	size_t kl;
	char *key = k64 ? dir_unb64(k64, 1024, &kl) : NULL, why[768];
	kvw_dir_entry e;
	int64_t rev = dir_jint(kv, "mod_revision");
	d->w_rev = rev > d->w_rev ? rev : d->w_rev;
	if (key && dir_key_parse(d, key, &e) && (d->w_role == KVW_DIR_ANY || e.role == d->w_role)) {
		if (type && !strcmp(type, "DELETE"))
			dir_ev_push(d, KVW_DIR_LEAVE, KVW_OK, &e);
		else if (dir_kv_parse(d, kv, &e, why, sizeof(why)))
			dir_ev_push(d, KVW_DIR_JOIN, KVW_OK, &e);
		else
			dir_ev_push(d, KVW_DIR_JOIN, KVW_ERR_PROTO, &e);
	}
	free(key);
}

static void dir_watch_msg(kvw_dir *d, const json_t *m)
{
	const json_t *r = json_object_get(m, "result"), *evs = json_object_get(r, "events"), *we;
	size_t i;
	if (!r) {
		d->watch_st = KVW_ERR_PROTO;
		dir_err(d, "etcd at %s ended the watch: %.200s", d->eps[d->wa.ep],
			json_string_value(json_object_get(json_object_get(m, "error"), "message")) ?: "no reason");
		return;
	}
	if (dir_jint(r, "compact_revision") > 0) { /* history gone: from now on */
		d->w_rev = 0;
		dir_ev_push(d, KVW_DIR_RESYNC, KVW_OK, NULL);
		return;
	}
	if (json_is_true(json_object_get(r, "created"))) {
		d->watch_st = KVW_OK;
		d->w_fails = 0;
		int64_t rev = dir_jint(json_object_get(r, "header"), "revision");
		d->w_rev = d->w_rev ? d->w_rev : rev;
	}
	json_array_foreach(evs, i, we)
		dir_watch_event(d, we);
}

/* Hands out every complete line of the stream. */
static void dir_watch_parse(kvw_dir *d)
{
	struct dir_buf *b = &d->wa.rx;
	char *nl;
	while ((nl = memchr(b->p + d->wa.parsed, '\n', b->len - d->wa.parsed))) {
		json_t *m = json_loadb(b->p + d->wa.parsed, nl - (b->p + d->wa.parsed), 0, NULL);
		if (json_is_object(m))
			dir_watch_msg(d, m);
		json_decref(m);
		d->wa.parsed = nl + 1 - b->p;
	}
	memmove(b->p, b->p + d->wa.parsed, b->len - d->wa.parsed);
	b->len -= d->wa.parsed;
	d->wa.parsed = 0;
}

static void dir_watch_start(kvw_dir *d)
{
	char *k = dir_b64(d->w_key, strlen(d->w_key)), *e = dir_b64(d->w_end, strlen(d->w_end));
	json_t *cr = json_pack("{s:s,s:s}", "key", k ? k : "", "range_end", e ? e : "");
	if (d->w_rev)
		json_object_set_new(cr, "start_revision", json_integer(d->w_rev + 1));
	free(k);
	free(e);
	dir_async_start(d, &d->wa, (d->cur + d->w_fails) % d->n_eps, "/v3/watch",
			json_pack("{s:o}", "create_request", cr), 0);
}

static void dir_watch_ended(kvw_dir *d, CURLcode rc)
{
	dir_watch_parse(d);
	if (d->watch_st != KVW_ERR_PROTO || rc != CURLE_OK) {
		d->watch_st = KVW_ERR_CONNREFUSED;
		dir_err(d, "the watch on etcd at %s ended (%s): joins and leaves are not seen until it "
			"is back; kvw_dir_progress reconnects -- check that etcd runs there",
			d->eps[d->wa.ep], rc == CURLE_OK ? "the stream closed" : curl_easy_strerror(rc));
	}
	d->w_fails++;
	unsigned sh = d->w_fails < 5 ? d->w_fails : 5;
	d->w_retry_ms = dir_now_ms() + (125u << sh);
}

kvw_status kvw_dir_watch(kvw_dir *d, const char *pool, kvw_dir_role role)
{
	char key[256], end[256];
	if (!d)
		return KVW_ERR_INVALID;
	d->err[0] = 0;
	if ((pool && !dir_name_ok(pool)) || (role != KVW_DIR_ANY && !dir_role_name(role))) {
		dir_err(d, "kvw_dir_watch needs a valid pool (or NULL) and role");
		return KVW_ERR_INVALID;
	}
	dir_watch_stop(d);
	dir_key(d, pool, pool ? role : KVW_DIR_ANY, NULL, key, sizeof(key));
	dir_prefix_end(key, end, sizeof(end));
	/* the revision now: the watch reports every change after this call */
	char *kb = dir_b64(key, strlen(key));
	json_t *r = NULL;
	kvw_status st = dir_rpc(d, "/v3/kv/range", json_pack("{s:s,s:b}", "key", kb ? kb : "", "count_only", 1), &r);
	free(kb);
	if (st != KVW_OK)
		return st;
	int64_t rev = dir_jint(json_object_get(r, "header"), "revision");
	json_decref(r);
	d->w_key = strdup(key);
	d->w_end = strdup(end);
	d->w_role = role;
	d->w_rev = rev;
	d->watching = true;
	d->watch_st = KVW_INPROGRESS;
	dir_watch_start(d);
	return d->wa.busy ? KVW_OK : KVW_ERR_NOMEM;
}

void dir_watch_stop(kvw_dir *d)
{
	dir_async_free(d, &d->wa);
	free(d->w_key);
	free(d->w_end);
	d->w_key = d->w_end = NULL;
	d->watching = false;
	d->ev_head = d->ev_n = 0;
}

/* --------------------------------------------------------------- progress */
kvw_status kvw_dir_progress(kvw_dir *d)
{
	int running, left;
	CURLMsg *m;
	if (!d)
		return KVW_ERR_INVALID;
	curl_multi_perform(d->multi, &running);
	while ((m = curl_multi_info_read(d->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURLcode rc = m->data.result;
		if (m->easy_handle == d->la.h) {
			dir_async_done(d, &d->la);
			dir_lease_reply(d, rc);
		} else if (m->easy_handle == d->wa.h) {
			dir_async_done(d, &d->wa);
			dir_watch_ended(d, rc);
		}
	}
	if (d->wa.busy)
		dir_watch_parse(d);
	if (!d->la.busy)
		dir_lease_next(d);
	if (d->watching && !d->wa.busy && dir_now_ms() >= d->w_retry_ms)
		dir_watch_start(d);
	if (d->la.busy || d->wa.busy)
		curl_multi_perform(d->multi, &running);
	if (d->lease_st < 0)
		return d->lease_st;
	return d->watching && d->watch_st < 0 ? d->watch_st : KVW_OK;
}

kvw_status kvw_dir_next(kvw_dir *d, kvw_dir_event *ev)
{
	if (!d)
		return KVW_ERR_INVALID;
	if (!ev || ev->size < sizeof(*ev)) {
		dir_err(d, "set ev->size = sizeof(kvw_dir_event) before kvw_dir_next");
		return KVW_ERR_INVALID;
	}
	kvw_dir_progress(d);
	if (d->ev_n == 0 && d->w_overflow) {
		d->w_overflow = false;
		dir_ev_push(d, KVW_DIR_RESYNC, KVW_OK, NULL);
	}
	if (d->ev_n == 0)
		return KVW_INPROGRESS;
	*ev = d->evq[d->ev_head];
	d->ev_head = (d->ev_head + 1) % DIR_MAX_EVENTS;
	d->ev_n--;
	return KVW_OK;
}

kvw_status kvw_dir_wait(kvw_dir *d, int timeout_ms)
{
	if (!d)
		return KVW_ERR_INVALID;
	uint64_t now = dir_now_ms(), until = now + (timeout_ms < 0 ? 0 : (uint64_t)timeout_ms);
	int n;
	if (d->lease && !d->la.busy && d->ka_next_ms < until)
		until = d->ka_next_ms > now ? d->ka_next_ms : now;
	if (d->watching && !d->wa.busy && d->w_retry_ms < until)
		until = d->w_retry_ms > now ? d->w_retry_ms : now;
	if (d->ev_n || until <= now)
		return KVW_OK;
	curl_multi_poll(d->multi, NULL, 0, (int)(until - now), &n);
	return KVW_OK;
}
