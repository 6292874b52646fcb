/* SPDX-License-Identifier: MIT */
/* libkvwire-dir: open/close and the calls that wait for etcd (each bounded
 * by timeout_ms over all endpoints, tried in turn). */
#include "dir_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static __thread char dir_open_err[768];

void dir_err(kvw_dir *d, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d ? d->err : dir_open_err, sizeof(dir_open_err), fmt, ap);
	va_end(ap);
}

const char *kvw_dir_last_error(const kvw_dir *dir)
{
	return dir ? dir->err : dir_open_err;
}

uint64_t dir_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

bool dir_buf_init(struct dir_buf *b, size_t max)
{
	b->len = 0;
	b->max = max;
	b->over = false;
	if (!b->p) {
		b->cap = 4096;
		b->p = malloc(b->cap);
	}
	return b->p != NULL;
}

void dir_buf_free(struct dir_buf *b)
{
	free(b->p);
	b->p = NULL;
}

static size_t dir_rx(char *p, size_t sz, size_t n, void *arg)
{
	struct dir_buf *b = arg;
	size_t len = sz * n;
	if (b->len + len + 1 > b->max) {
		b->over = true;
		return 0;
	}
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap * 2 > b->len + len + 1 ? b->cap * 2 : b->len + len + 1;
		char *q = realloc(b->p, cap);
		if (!q)
			return 0;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
	b->p[b->len] = 0;
	return len;
}

void dir_easy_setup(kvw_dir *d, CURL *h, size_t ep, const char *path, const char *body,
		    struct curl_slist **hdr, struct dir_buf *rx)
{
	char url[512], auth[1100];
	snprintf(url, sizeof(url), "%s%s", d->eps[ep], path);
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, dir_rx);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, rx);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (d->ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, d->ca);
	if (d->cert)
		curl_easy_setopt(h, CURLOPT_SSLCERT, d->cert);
	if (d->key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, d->key);
	curl_slist_free_all(*hdr);
	*hdr = curl_slist_append(NULL, "Content-Type: application/json");
	if (d->token[0]) {
		snprintf(auth, sizeof(auth), "Authorization: %s", d->token);
		*hdr = curl_slist_append(*hdr, auth);
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdr);
}

/* One request to one endpoint within ms; the sentence is set on failure. */
static kvw_status dir_call_one(kvw_dir *d, size_t ep, const char *path, const char *body,
			       uint64_t ms, json_t **resp)
{
	struct curl_slist *hdr = NULL;
	struct dir_buf rx = {0};
	long code = 0;
	kvw_status st = KVW_ERR_NOMEM;
	if (!dir_buf_init(&rx, DIR_MAX_REPLY))
		goto out;
	dir_easy_setup(d, d->sync, ep, path, body, &hdr, &rx);
	curl_easy_setopt(d->sync, CURLOPT_TIMEOUT_MS, (long)(ms ? ms : 1));
	CURLcode rc = curl_easy_perform(d->sync);
	curl_easy_getinfo(d->sync, CURLINFO_RESPONSE_CODE, &code);
	if (rc != CURLE_OK && rx.over) {
		dir_err(d, "etcd at %s answered %s with more than %u bytes: list a smaller pool "
			"(--pool), or check that this endpoint is etcd", d->eps[ep], path, DIR_MAX_REPLY);
		st = KVW_ERR_PROTO;
	} else if (rc != CURLE_OK) {
		st = rc == CURLE_OPERATION_TIMEDOUT ? KVW_ERR_TIMEDOUT : KVW_ERR_CONNREFUSED;
		if (st == KVW_ERR_TIMEDOUT)
			dir_err(d, "etcd at %s did not answer %s within %llu ms: check that etcd runs there "
				"and is not overloaded, or pass other endpoints", d->eps[ep], path,
				(unsigned long long)ms);
		else
			dir_err(d, "etcd at %s could not be reached for %s (%s): check that etcd runs there "
				"and is reachable from this host, or pass other endpoints", d->eps[ep], path,
				curl_easy_strerror(rc));
	} else {
		json_error_t je;
		json_t *j = json_loadb(rx.p, rx.len, 0, &je);
		const char *msg = json_string_value(json_object_get(j, "error"));
		if (!json_is_object(j)) {
			dir_err(d, "%s%s answered HTTP %ld with something that is not a JSON object: check "
				"that this endpoint is etcd v3 (3.4 or later)", d->eps[ep], path, code);
			st = KVW_ERR_PROTO;
		} else if (code != 200 || msg) {
			int64_t c = dir_jint(j, "code");
			bool auth = c == 16 || c == 7 || (msg && (strstr(msg, "auth") || strstr(msg, "user name") ||
								   strstr(msg, "permission denied")));
			dir_err(d, "etcd at %s refused %s: %.200s%s", d->eps[ep], path, msg ? msg : "(no reason)",
				auth ? " -- check the directory's user and password (kvw_dir_opts.user and "
				       ".password; kvwire pools: --user and KVW_DIR_PASSWORD)" : "");
			st = auth ? KVW_ERR_AUTH : c == 5 ? KVW_ERR_NOT_FOUND : KVW_ERR_IO;
		} else {
			*resp = j;
			j = NULL;
			st = KVW_OK;
		}
		json_decref(j);
	}
out:
	curl_slist_free_all(hdr);
	dir_buf_free(&rx);
	return st;
}

/* path with req (consumed) -> *resp; endpoints tried in turn while the
 * call's deadline allows, starting with the one that answered last. */
kvw_status dir_call(kvw_dir *d, const char *path, json_t *req, json_t **resp)
{
	char *body = json_dumps(req, JSON_COMPACT);
	uint64_t end = dir_now_ms() + d->timeout_ms;
	kvw_status st = KVW_ERR_NOMEM;
	json_decref(req);
	if (!body) {
		dir_err(d, "out of memory building a request for etcd");
		return st;
	}
	for (size_t i = 0; i < d->n_eps; i++) {
		size_t ep = (d->cur + i) % d->n_eps;
		uint64_t now = dir_now_ms();
		if (i > 0 && now >= end)
			break;
		st = dir_call_one(d, ep, path, body, end > now ? end - now : 1, resp);
		if (st == KVW_OK)
			d->cur = ep;
		if (st != KVW_ERR_TIMEDOUT && st != KVW_ERR_CONNREFUSED)
			break;
	}
	free(body);
	return st;
}

static kvw_status dir_authenticate(kvw_dir *d)
{
	json_t *r = NULL;
	d->token[0] = 0;
	kvw_status st = dir_call(d, "/v3/auth/authenticate",
				 json_pack("{s:s,s:s}", "name", d->user, "password", d->password ? d->password : ""), &r);
	if (st != KVW_OK)
		return st;
	const char *t = json_string_value(json_object_get(r, "token"));
	if (!t || strlen(t) >= sizeof(d->token) || strpbrk(t, "\r\n")) {
		dir_err(d, "etcd at %s sent no usable auth token: check its auth setup", d->eps[d->cur]);
		st = KVW_ERR_PROTO;
	} else {
		strcpy(d->token, t);
	}
	json_decref(r);
	return st;
}

/* dir_call that authenticates again once when etcd says the token expired */
kvw_status dir_rpc(kvw_dir *d, const char *path, json_t *req, json_t **resp)
{
	json_incref(req);
	kvw_status st = dir_call(d, path, req, resp);
	if (st == KVW_ERR_AUTH && d->user && dir_authenticate(d) == KVW_OK)
		st = dir_call(d, path, json_incref(req), resp);
	json_decref(req);
	return st;
}

static char *dir_strdup(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

static kvw_status dir_parse_endpoints(kvw_dir *d, const char *endpoints)
{
	char *copy = strdup(endpoints), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t n = strlen(t);
		while (n && t[n - 1] == '/')
			t[--n] = 0;
		if (d->n_eps == DIR_MAX_ENDPOINTS || n > 400 ||
		    (strncmp(t, "http://", 7) && strncmp(t, "https://", 8))) {
			dir_err(NULL, "endpoint '%.64s' is not http://HOST:PORT or https://HOST:PORT (at most %u, "
				"comma separated): fix --endpoints", t, DIR_MAX_ENDPOINTS);
			free(copy);
			return KVW_ERR_INVALID;
		}
		d->eps[d->n_eps++] = strdup(t);
	}
	free(copy);
	if (d->n_eps == 0) {
		dir_err(NULL, "no etcd endpoint given: pass http://HOST:2379");
		return KVW_ERR_INVALID;
	}
	return KVW_OK;
}

static kvw_status dir_opts_take(kvw_dir *d, const kvw_dir_opts *opts)
{
	kvw_dir_opts o = {0};
	if (opts && (opts->size == 0 || opts->size > 4096)) {
		dir_err(NULL, "kvw_dir_opts.size is %u: set it to sizeof(kvw_dir_opts)", opts->size);
		return KVW_ERR_INVALID;
	}
	if (opts)
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
	d->timeout_ms = o.timeout_ms ? o.timeout_ms : 2000;
	d->ttl_s = o.lease_ttl_s ? o.lease_ttl_s : 10;
	if (d->ttl_s < 2 || d->ttl_s > 86400) {
		dir_err(NULL, "lease_ttl_s %u is outside 2..86400 seconds", d->ttl_s);
		return KVW_ERR_INVALID;
	}
	const char *p = o.prefix && *o.prefix ? o.prefix : "/kvwire";
	if (p[0] != '/' || strlen(p) > 128 || p[strlen(p) - 1] == '/') {
		dir_err(NULL, "prefix '%.64s' must start with '/', not end with one, and be under 128 bytes", p);
		return KVW_ERR_INVALID;
	}
	d->prefix = strdup(p);
	d->user = dir_strdup(o.user);
	d->password = dir_strdup(o.password);
	d->ca = dir_strdup(o.ca_file);
	d->cert = dir_strdup(o.cert_file);
	d->key = dir_strdup(o.key_file);
	return KVW_OK;
}

kvw_status kvw_dir_open(const char *endpoints, const kvw_dir_opts *opts, kvw_dir **dir)
{
	static bool curl_ready;
	json_t *r = NULL;
	kvw_status st;
	if (!endpoints || !dir) {
		dir_err(NULL, "kvw_dir_open needs endpoints and an output pointer");
		return KVW_ERR_INVALID;
	}
	if (!curl_ready && curl_global_init(CURL_GLOBAL_DEFAULT) == 0)
		curl_ready = true;
	kvw_dir *d = calloc(1, sizeof(*d));
	if (!d)
		return KVW_ERR_NOMEM;
	d->evq = calloc(DIR_MAX_EVENTS, sizeof(*d->evq));
	d->published = json_object();
	d->sync = curl_easy_init();
	d->multi = curl_multi_init();
	if (!d->evq || !d->published || !d->sync || !d->multi) {
		dir_err(NULL, "out of memory opening the directory");
		st = KVW_ERR_NOMEM;
	} else if ((st = dir_parse_endpoints(d, endpoints)) == KVW_OK && (st = dir_opts_take(d, opts)) == KVW_OK) {
		/* a cheap call that proves etcd answers (and the auth works) */
		st = d->user ? dir_authenticate(d) : KVW_OK;
		if (st == KVW_OK)
			st = dir_call(d, "/v3/kv/range", json_pack("{s:s,s:b}", "key", "AA==", "count_only", 1), &r);
		json_decref(r);
		if (st != KVW_OK)
			dir_err(NULL, "%s", d->err);
	}
	if (st != KVW_OK) {
		kvw_dir_close(d);
		return st;
	}
	d->err[0] = 0;
	*dir = d;
	return KVW_OK;
}

void kvw_dir_close(kvw_dir *d)
{
	json_t *r = NULL;
	if (!d)
		return;
	dir_watch_stop(d);
	dir_async_free(d, &d->la);
	if (d->lease && d->sync) {
		uint32_t t = d->timeout_ms;
		d->timeout_ms = t < 1000 ? t : 1000; /* closing never waits long */
		char id[24];
		snprintf(id, sizeof(id), "%lld", (long long)d->lease);
		if (dir_call(d, "/v3/lease/revoke", json_pack("{s:s}", "ID", id), &r) == KVW_OK)
			json_decref(r);
	}
	for (size_t i = 0; i < d->n_eps; i++)
		free(d->eps[i]);
	if (d->sync)
		curl_easy_cleanup(d->sync);
	if (d->multi)
		curl_multi_cleanup(d->multi);
	json_decref(d->published);
	free(d->evq);
	free(d->prefix);
	free(d->user);
	free(d->password);
	free(d->ca);
	free(d->cert);
	free(d->key);
	free(d);
}
