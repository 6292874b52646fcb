/* SPDX-License-Identifier: MIT */
/* publish / unpublish / resolve / list: one or two gateway calls each. */
#include "dir_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *dir_b64_json(const char *s)
{
	char *b = dir_b64(s, strlen(s));
	json_t *j = b ? json_string(b) : NULL;
	free(b);
	return j;
}

kvw_status dir_lease_grant(kvw_dir *d)
{
	json_t *r = NULL;
	kvw_status st = dir_rpc(d, "/v3/lease/grant", json_pack("{s:I}", "TTL", (json_int_t)d->ttl_s), &r);
	if (st != KVW_OK)
		return st;
	int64_t id = dir_jint(r, "ID");
	json_decref(r);
	if (id <= 0) {
		dir_err(d, "etcd at %s granted no lease ID: check that it is etcd v3", d->eps[d->cur]);
		return KVW_ERR_PROTO;
	}
	d->lease = id;
	d->ka_next_ms = dir_now_ms() + d->ttl_s * 1000 / 3;
	d->lease_st = KVW_OK;
	return KVW_OK;
}

static bool dir_entry_ok(kvw_dir *d, const kvw_dir_entry *e)
{
	if (!e || e->size < sizeof(*e)) {
		dir_err(d, "kvw_dir_entry.size is %u: set it to sizeof(kvw_dir_entry)", e ? e->size : 0);
		return false;
	}
	if (!dir_name_ok(e->pool) || !dir_name_ok(e->name) || !dir_role_name(e->role)) {
		dir_err(d, "an entry needs a pool and a name of 1-63 bytes of [A-Za-z0-9._-] and the role "
			"KVW_DIR_PREFILL or KVW_DIR_DECODE");
		return false;
	}
	if (e->n_uris == 0 || e->n_uris > KVW_DIR_MAX_URIS) {
		dir_err(d, "an entry needs 1 to %u URIs (one per driver)", KVW_DIR_MAX_URIS);
		return false;
	}
	for (uint32_t i = 0; i < e->n_uris; i++) {
		const char *c = memchr(e->uris[i], 0, sizeof(e->uris[i])) ? strstr(e->uris[i], "://") : NULL;
		if (!c || c == e->uris[i] || c - e->uris[i] > 8) {
			dir_err(d, "URI %u of the entry is not DRIVER://... under 256 bytes", i);
			return false;
		}
	}
	if (!memchr(e->geometry, 0, sizeof(e->geometry))) {
		dir_err(d, "the entry's geometry is not NUL-terminated");
		return false;
	}
	return true;
}

static kvw_status dir_put(kvw_dir *d, const char *key, const char *value)
{
	char id[24];
	json_t *r = NULL;
	snprintf(id, sizeof(id), "%lld", (long long)d->lease);
	kvw_status st = dir_rpc(d, "/v3/kv/put",
				json_pack("{s:o,s:o,s:s}", "key", dir_b64_json(key), "value", dir_b64_json(value),
					  "lease", id), &r);
	json_decref(r);
	return st;
}

kvw_status kvw_dir_publish(kvw_dir *d, const kvw_dir_entry *e)
{
	char key[256];
	kvw_status st;
	if (!d)
		return KVW_ERR_INVALID;
	d->err[0] = 0;
	if (!dir_entry_ok(d, e))
		return KVW_ERR_INVALID;
	json_t *v = dir_entry_json(e);
	char *val = v ? json_dumps(v, JSON_COMPACT) : NULL;
	json_decref(v);
	dir_key(d, e->pool, e->role, e->name, key, sizeof(key));
	if (!val || strlen(val) > DIR_MAX_VALUE) {
		free(val);
		dir_err(d, "the entry does not fit in %u bytes of JSON (or it contains text that is not UTF-8)",
			DIR_MAX_VALUE);
		return KVW_ERR_INVALID;
	}
	st = d->lease ? KVW_OK : dir_lease_grant(d);
	if (st == KVW_OK && (st = dir_put(d, key, val)) == KVW_ERR_NOT_FOUND) {
		/* the lease expired meanwhile: a new one, and everything again */
		if ((st = dir_lease_grant(d)) == KVW_OK)
			st = dir_put(d, key, val);
	}
	if (st == KVW_OK)
		json_object_set_new(d->published, key, json_string(val));
	free(val);
	return st;
}

kvw_status kvw_dir_unpublish(kvw_dir *d, const char *pool, kvw_dir_role role, const char *name)
{
	char key[256];
	json_t *r = NULL;
	if (!d)
		return KVW_ERR_INVALID;
	d->err[0] = 0;
	if (!dir_name_ok(pool) || !dir_name_ok(name) || !dir_role_name(role)) {
		dir_err(d, "unpublish needs a valid pool, role and name");
		return KVW_ERR_INVALID;
	}
	dir_key(d, pool, role, name, key, sizeof(key));
	json_object_del(d->published, key);
	kvw_status st = dir_rpc(d, "/v3/kv/deleterange", json_pack("{s:o}", "key", dir_b64_json(key)), &r);
	json_decref(r);
	return st;
}

/* A range over [key, end) (end NULL: the one key); *kvs the reply's kvs. */
static kvw_status dir_range(kvw_dir *d, const char *key, const char *end, json_t **reply)
{
	json_t *q = json_pack("{s:o}", "key", dir_b64_json(key));
	if (end)
		json_object_set_new(q, "range_end", dir_b64_json(end));
	kvw_status st = dir_rpc(d, "/v3/kv/range", q, reply);
	if (st == KVW_OK && json_object_get(*reply, "kvs") && !json_is_array(json_object_get(*reply, "kvs"))) {
		dir_err(d, "etcd at %s sent a range reply whose kvs is not an array", d->eps[d->cur]);
		json_decref(*reply);
		st = KVW_ERR_PROTO;
	}
	return st;
}

static bool dir_out_ok(kvw_dir *d, const kvw_dir_entry *out)
{
	if (!out || out->size < sizeof(*out)) {
		dir_err(d, "set out->size = sizeof(kvw_dir_entry) before the call");
		return false;
	}
	return true;
}

kvw_status kvw_dir_resolve(kvw_dir *d, const char *pool, const char *name, kvw_dir_entry *out)
{
	static const kvw_dir_role roles[] = {KVW_DIR_DECODE, KVW_DIR_PREFILL};
	if (!d)
		return KVW_ERR_INVALID;
	d->err[0] = 0;
	if (!dir_out_ok(d, out))
		return KVW_ERR_INVALID;
	if (!dir_name_ok(pool) || !dir_name_ok(name)) {
		dir_err(d, "resolve needs a pool and a name of 1-63 bytes of [A-Za-z0-9._-]");
		return KVW_ERR_INVALID;
	}
	for (size_t i = 0; i < 2; i++) {
		char key[256], why[768];
		json_t *r = NULL;
		dir_key(d, pool, roles[i], name, key, sizeof(key));
		kvw_status st = dir_range(d, key, NULL, &r);
		if (st != KVW_OK)
			return st;
		json_t *kv = json_array_get(json_object_get(r, "kvs"), 0);
		kvw_dir_entry e;
		if (kv && !dir_kv_parse(d, kv, &e, why, sizeof(why))) {
			dir_err(d, "the directory's entry %s", why);
			st = KVW_ERR_PROTO;
		} else if (kv) {
			memcpy(out, &e, sizeof(e));
		}
		json_decref(r);
		if (kv)
			return st;
	}
	dir_err(d, "no instance named '%s' in pool '%s' (kvwire pools --pool %s lists what is there)", name,
		pool, pool);
	return KVW_ERR_NOT_FOUND;
}

static kvw_status dir_list_fill(kvw_dir *d, const json_t *kvs, kvw_dir_role role, kvw_dir_entry *out,
				size_t max, size_t *n, size_t *n_bad)
{
	size_t i, good = 0, bad = 0, stride = out ? out->size : 0;
	const json_t *kv;
	char why[768], first[800] = "";
	kvw_dir_entry e;
	json_array_foreach(kvs, i, kv) {
		if (!dir_kv_parse(d, kv, &e, why, sizeof(why))) {
			if (!bad++)
				snprintf(first, sizeof(first), "%s", why);
			continue;
		}
		if (role != KVW_DIR_ANY && e.role != role)
			continue;
		if (good == max) {
			dir_err(d, "the directory holds more than the %zu entries asked for: pass a larger array",
				max);
			return KVW_ERR_NOMEM;
		}
		memcpy((char *)out + good++ * stride, &e, sizeof(e));
	}
	if (bad)
		dir_err(d, "%zu value(s) skipped, not kvwire entries; the first: %s", bad, first);
	*n = good;
	*n_bad = bad;
	return KVW_OK;
}

kvw_status kvw_dir_list(kvw_dir *d, const char *pool, kvw_dir_role role, kvw_dir_entry *out,
			size_t max, size_t *n, size_t *n_bad)
{
	char key[256], end[256];
	json_t *r = NULL;
	if (!d)
		return KVW_ERR_INVALID;
	d->err[0] = 0;
	if ((max && !dir_out_ok(d, out)) || !n || !n_bad || (role != KVW_DIR_ANY && !dir_role_name(role))) {
		dir_err(d, "kvw_dir_list needs out[0].size = sizeof(kvw_dir_entry), n, n_bad and a valid role");
		return KVW_ERR_INVALID;
	}
	if (pool && !dir_name_ok(pool)) {
		dir_err(d, "pool '%.64s' is not 1-63 bytes of [A-Za-z0-9._-]", pool);
		return KVW_ERR_INVALID;
	}
	dir_key(d, pool, pool ? role : KVW_DIR_ANY, NULL, key, sizeof(key));
	dir_prefix_end(key, end, sizeof(end));
	kvw_status st = dir_range(d, key, end, &r);
	if (st != KVW_OK)
		return st;
	st = dir_list_fill(d, json_object_get(r, "kvs"), role, out, max, n, n_bad);
	json_decref(r);
	return st;
}
