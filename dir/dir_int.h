/* SPDX-License-Identifier: MIT */
/* libkvwire-dir internals: the etcd JSON gateway over libcurl. dir.c holds
 * open/close and the blocking calls, dir_entry.c the key and value codec,
 * dir_async.c the non-blocking keepalive and watch. */
#ifndef KVW_DIR_INT_H
#define KVW_DIR_INT_H

#include "kvwire/dir.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define DIR_MAX_REPLY (4u << 20)   /* one reply of etcd (a range of many entries) */
#define DIR_MAX_VALUE (64u << 10)  /* one entry's JSON value */
#define DIR_MAX_EVENTS 4096u       /* watch events waiting for kvw_dir_next */
#define DIR_MAX_ENDPOINTS 8u

struct dir_buf {
	char *p;
	size_t len, cap, max;
	bool over;
};

/* One non-blocking exchange on the multi handle. */
struct dir_async {
	CURL *h;
	struct curl_slist *hdr;
	struct dir_buf rx;
	char *body;
	bool busy;
	size_t ep;     /* endpoint it went to */
	size_t parsed; /* watch: bytes of rx already handed out */
};

enum dir_lease_stage { LEASE_NONE, LEASE_KEEPALIVE, LEASE_GRANT, LEASE_PUT };

struct kvw_dir {
	char *eps[DIR_MAX_ENDPOINTS];
	size_t n_eps, cur;
	uint32_t timeout_ms, ttl_s;
	char *prefix, *user, *password, *ca, *cert, *key;
	char token[1024];
	char err[768];
	CURL *sync;
	CURLM *multi;
	/* lease */
	int64_t lease;
	enum dir_lease_stage stage;
	uint64_t ka_next_ms;
	json_t *published; /* key -> value text, republished after a lost lease */
	size_t put_idx;      /* LEASE_PUT: entries republished so far */
	struct dir_async la;
	kvw_status lease_st;
	/* watch */
	bool watching;
	char *w_key, *w_end;
	kvw_dir_role w_role;
	int64_t w_rev;     /* last revision seen */
	uint64_t w_retry_ms;
	unsigned w_fails;
	bool w_overflow;    /* events were dropped: a RESYNC is due */
	struct dir_async wa;
	kvw_status watch_st;
	kvw_dir_event *evq;
	size_t ev_head, ev_n;
};

/* dir.c */
void dir_err(kvw_dir *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t dir_now_ms(void);
void dir_easy_setup(kvw_dir *d, CURL *h, size_t ep, const char *path, const char *body,
		    struct curl_slist **hdr, struct dir_buf *rx);
kvw_status dir_call(kvw_dir *d, const char *path, json_t *req, json_t **resp);
/* dir_call (req consumed) that authenticates again once if the token expired */
kvw_status dir_rpc(kvw_dir *d, const char *path, json_t *req, json_t **resp);
/* dir_kv.c: grants the lease */
kvw_status dir_lease_grant(kvw_dir *d);
bool dir_buf_init(struct dir_buf *b, size_t max);
void dir_buf_free(struct dir_buf *b);

/* dir_entry.c */
char *dir_b64(const void *p, size_t n);
/* decoded bytes + NUL; NULL when s is not base64 or decodes past max */
char *dir_unb64(const char *s, size_t max, size_t *n);
bool dir_name_ok(const char *s);
const char *dir_role_name(kvw_dir_role r);
/* "<prefix>/<pool>/<role>/<name>" or a prefix "<prefix>/<pool>/[<role>/]" */
bool dir_key(const kvw_dir *d, const char *pool, kvw_dir_role role, const char *name, char *out,
	     size_t len);
/* the key right after every key that starts with p (etcd's range_end) */
void dir_prefix_end(const char *p, char *out, size_t len);
json_t *dir_entry_json(const kvw_dir_entry *e);
/* key and value (as etcd gave them, base64) -> entry; false with why */
bool dir_entry_parse(const kvw_dir *d, const char *key, const char *val, size_t vlen,
		     kvw_dir_entry *out, char *why, size_t whylen);
bool dir_key_parse(const kvw_dir *d, const char *key, kvw_dir_entry *out);
/* a kv object of a reply -> entry; false with why (the key in it) */
bool dir_kv_parse(const kvw_dir *d, const json_t *kv, kvw_dir_entry *out, char *why, size_t whylen);
int64_t dir_jint(const json_t *o, const char *k);

/* dir_async.c */
void dir_async_free(kvw_dir *d, struct dir_async *a);
void dir_watch_stop(kvw_dir *d);

#endif
