/* SPDX-License-Identifier: MIT */
/* Keys and values of the directory. Everything read from etcd is hostile
 * until checked here: bounded sizes, printable ASCII, exact types. */
#include "dir_int.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *dir_b64(const void *p, size_t n)
{
	size_t len = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(len);
	if (s)
		sodium_bin2base64(s, len, p, n, sodium_base64_VARIANT_ORIGINAL);
	return s;
}

char *dir_unb64(const char *s, size_t max, size_t *n)
{
	size_t sl = strlen(s), bl;
	if (sl / 4 * 3 > max + 3)
		return NULL;
	char *b = malloc(sl / 4 * 3 + 4);
	if (!b)
		return NULL;
	if (sodium_base642bin((unsigned char *)b, sl / 4 * 3 + 3, s, sl, NULL, &bl, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0 || bl > max) {
		free(b);
		return NULL;
	}
	b[bl] = 0;
	*n = bl;
	return b;
}

bool dir_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n >= KVW_DIR_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return strcmp(s, ".") && strcmp(s, "..");
}

static bool dir_text_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n >= max)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

const char *dir_role_name(kvw_dir_role r)
{
	return r == KVW_DIR_PREFILL ? "prefill" : r == KVW_DIR_DECODE ? "decode" : NULL;
}

static kvw_dir_role dir_role_parse(const char *s)
{
	return !strcmp(s, "prefill") ? KVW_DIR_PREFILL : !strcmp(s, "decode") ? KVW_DIR_DECODE : KVW_DIR_ANY;
}

bool dir_key(const kvw_dir *d, const char *pool, kvw_dir_role role, const char *name, char *out,
	     size_t len)
{
	int n;
	if (!pool)
		n = snprintf(out, len, "%s/", d->prefix);
	else if (!dir_role_name(role))
		n = snprintf(out, len, "%s/%s/", d->prefix, pool);
	else if (!name)
		n = snprintf(out, len, "%s/%s/%s/", d->prefix, pool, dir_role_name(role));
	else
		n = snprintf(out, len, "%s/%s/%s/%s", d->prefix, pool, dir_role_name(role), name);
	return n > 0 && (size_t)n < len;
}

void dir_prefix_end(const char *p, char *out, size_t len)
{
	snprintf(out, len, "%s", p);
	size_t n = strlen(out);
	out[n - 1]++; /* every prefix here ends in '/', whose successor is '0' */
}

int64_t dir_jint(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

json_t *dir_entry_json(const kvw_dir_entry *e)
{
	json_t *uris = json_object();
	for (uint32_t i = 0; i < e->n_uris; i++) {
		char drv[16];
		const char *c = strstr(e->uris[i], "://");
		snprintf(drv, sizeof(drv), "%.*s", (int)(c - e->uris[i]), e->uris[i]);
		json_object_set_new(uris, drv, json_string(e->uris[i]));
	}
	return json_pack("{s:i,s:s,s:s,s:o,s:s,s:I}", "v", 1, "name", e->name, "role",
			 dir_role_name(e->role), "uris", uris, "geometry", e->geometry, "capacity",
			 (json_int_t)e->capacity);
}

/* "<prefix>/<pool>/<role>/<name>" -> out's pool, role, name */
bool dir_key_parse(const kvw_dir *d, const char *key, kvw_dir_entry *out)
{
	size_t pl = strlen(d->prefix);
	char buf[3 * KVW_DIR_NAME_MAX + 4], *role, *name;
	if (strncmp(key, d->prefix, pl) || key[pl] != '/' || strlen(key + pl + 1) >= sizeof(buf))
		return false;
	strcpy(buf, key + pl + 1);
	if (!(role = strchr(buf, '/')) || !(name = strchr(role + 1, '/')))
		return false;
	*role++ = 0;
	*name++ = 0;
	if (!dir_name_ok(buf) || !dir_name_ok(name) || !dir_role_parse(role))
		return false;
	memset(out, 0, sizeof(*out));
	out->size = sizeof(*out);
	strcpy(out->pool, buf);
	strcpy(out->name, name);
	out->role = dir_role_parse(role);
	return true;
}

static bool dir_uris_parse(const json_t *uris, kvw_dir_entry *out, char *why, size_t wl)
{
	const char *drv;
	json_t *u;
	if (!json_is_object(uris) || json_object_size(uris) == 0 || json_object_size(uris) > KVW_DIR_MAX_URIS) {
		snprintf(why, wl, "\"uris\" is not an object of 1 to %u URIs", KVW_DIR_MAX_URIS);
		return false;
	}
	json_object_foreach((json_t *)uris, drv, u) {
		const char *s = json_string_value(u);
		size_t dl = strlen(drv);
		if (!s || !dir_text_ok(s, sizeof(out->uris[0])) || dl == 0 || dl > 8 ||
		    strncmp(s, drv, dl) || strncmp(s + dl, "://", 3)) {
			snprintf(why, wl, "\"uris\".\"%.8s\" is not a printable URI of that scheme (under 256 bytes)",
				 dir_text_ok(drv, 9) ? drv : "?");
			return false;
		}
		strcpy(out->uris[out->n_uris++], s);
	}
	return true;
}

static bool dir_value_parse(const json_t *v, kvw_dir_entry *out, char *why, size_t wl)
{
	const json_t *name = json_object_get(v, "name"), *role = json_object_get(v, "role");
	const json_t *geo = json_object_get(v, "geometry"), *cap = json_object_get(v, "capacity");
	if (!json_is_object(v)) {
		snprintf(why, wl, "the value is not a JSON object");
		return false;
	}
	if (!json_is_integer(json_object_get(v, "v")) || json_integer_value(json_object_get(v, "v")) != 1) {
		snprintf(why, wl, "\"v\" is not 1 (not a kvwire entry, or a newer version)");
		return false;
	}
	if (!json_is_string(name) || strcmp(json_string_value(name), out->name) ||
	    !json_is_string(role) || dir_role_parse(json_string_value(role)) != out->role) {
		snprintf(why, wl, "\"name\" or \"role\" is missing or differs from the key");
		return false;
	}
	if (geo && (!json_is_string(geo) || !dir_text_ok(json_string_value(geo), sizeof(out->geometry)))) {
		snprintf(why, wl, "\"geometry\" is not printable text under 256 bytes");
		return false;
	}
	if (cap && (!json_is_integer(cap) || json_integer_value(cap) < 0)) {
		snprintf(why, wl, "\"capacity\" is not a non-negative integer");
		return false;
	}
	if (!dir_uris_parse(json_object_get(v, "uris"), out, why, wl))
		return false;
	if (geo)
		strcpy(out->geometry, json_string_value(geo));
	out->capacity = cap ? (uint64_t)json_integer_value(cap) : 0;
	return true;
}

bool dir_entry_parse(const kvw_dir *d, const char *key, const char *val, size_t vlen,
		     kvw_dir_entry *out, char *why, size_t wl)
{
	json_error_t je;
	kvw_dir_entry e;
	if (!dir_key_parse(d, key, &e)) {
		snprintf(why, wl, "the key is not <prefix>/<pool>/<prefill|decode>/<name>");
		return false;
	}
	if (vlen > DIR_MAX_VALUE) {
		snprintf(why, wl, "the value holds %zu bytes, over the %u a kvwire entry may have", vlen,
			 DIR_MAX_VALUE);
		return false;
	}
	json_t *v = json_loadb(val, vlen, JSON_REJECT_DUPLICATES, &je);
	if (!v) {
		snprintf(why, wl, "the value is not JSON (%s at byte %d)", je.text, je.position);
		return false;
	}
	bool ok = dir_value_parse(v, &e, why, wl);
	json_decref(v);
	if (ok)
		memcpy(out, &e, sizeof(e));
	return ok;
}

/* Shows a key in a sentence: printable, bounded. */
static void dir_key_show(const char *k, char *out, size_t len)
{
	size_t j = 0;
	for (size_t i = 0; k[i] && j + 5 < len && i < 200; i++)
		j += (unsigned char)k[i] >= 0x20 && (unsigned char)k[i] < 0x7f
			     ? (size_t)snprintf(out + j, len - j, "%c", k[i])
			     : (size_t)snprintf(out + j, len - j, "\\x%02x", (unsigned char)k[i]);
	out[j] = 0;
}

bool dir_kv_parse(const kvw_dir *d, const json_t *kv, kvw_dir_entry *out, char *why, size_t wl)
{
	const char *k64 = json_string_value(json_object_get(kv, "key"));
	const char *v64 = json_string_value(json_object_get(kv, "value"));
	size_t kl = 0, vl = 0;
	char *key = k64 ? dir_unb64(k64, 1024, &kl) : NULL, shown[256] = "?", inner[384];
	char *val = key && v64 ? dir_unb64(v64, DIR_MAX_VALUE + 1, &vl) : NULL;
	bool ok = false;
	if (key)
		dir_key_show(key, shown, sizeof(shown));
	if (!key)
		snprintf(inner, sizeof(inner), "etcd sent a key that is not base64 or over 1024 bytes");
	else if (!val && v64 && strlen(v64) / 4 * 3 > DIR_MAX_VALUE)
		snprintf(inner, sizeof(inner), "the value holds about %zu bytes, over the %u a kvwire entry may have",
			 strlen(v64) / 4 * 3, DIR_MAX_VALUE);
	else if (!val)
		snprintf(inner, sizeof(inner), "the value is missing or not base64");
	else
		ok = dir_entry_parse(d, key, val, vl, out, inner, sizeof(inner));
	if (ok)
		out->revision = dir_jint(kv, "mod_revision");
	else
		snprintf(why, wl, "%s: %s; delete it (etcdctl del '%s') or let its owner publish it again",
			 shown, inner, shown);
	free(key);
	free(val);
	return ok;
}
