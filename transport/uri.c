/* SPDX-License-Identifier: MIT */
/* scheme://host:port/path?k=v&k2=v2  and  shm:///abs/path?k=v */
#include "kvw_int.h"

#include <stdlib.h>
#include <string.h>

static kvw_status kvw_uri_hostport(const char *s, size_t n, struct kvw_uri *u)
{
	const char *colon;
	char port[8];
	char *end;
	unsigned long p;

	if (n && s[0] == '[') { /* [v6]:port */
		const char *rb = memchr(s, ']', n);
		if (!rb || (size_t)(rb - s - 1) >= sizeof(u->host))
			return KVW_ERR_INVALID;
		memcpy(u->host, s + 1, (size_t)(rb - s - 1));
		colon = rb + 1 < s + n && rb[1] == ':' ? rb + 1 : NULL;
	} else {
		colon = memchr(s, ':', n);
		size_t hl = colon ? (size_t)(colon - s) : n;
		if (hl >= sizeof(u->host))
			return KVW_ERR_INVALID;
		memcpy(u->host, s, hl);
	}
	if (!colon)
		return KVW_OK;
	n -= (size_t)(colon + 1 - s);
	if (n == 0 || n >= sizeof(port))
		return KVW_ERR_INVALID;
	memcpy(port, colon + 1, n);
	port[n] = 0;
	p = strtoul(port, &end, 10);
	if (*end || p > 65535)
		return KVW_ERR_INVALID;
	u->port = (unsigned)p;
	return KVW_OK;
}

kvw_status kvw_uri_parse(const char *s, struct kvw_uri *u)
{
	const char *sep, *rest, *q, *slash;
	size_t n;

	if (!s || !u)
		return KVW_ERR_INVALID;
	memset(u, 0, sizeof(*u));
	sep = strstr(s, "://");
	if (!sep || sep == s || (size_t)(sep - s) >= sizeof(u->scheme))
		return KVW_ERR_INVALID;
	memcpy(u->scheme, s, (size_t)(sep - s));
	rest = sep + 3;
	q = strchr(rest, '?');
	n = q ? (size_t)(q - rest) : strlen(rest);
	if (q && strlen(q + 1) >= sizeof(u->query))
		return KVW_ERR_INVALID;
	if (q)
		strcpy(u->query, q + 1);
	slash = memchr(rest, '/', n);
	if (slash) {
		size_t pl = n - (size_t)(slash - rest);
		if (pl >= sizeof(u->path))
			return KVW_ERR_INVALID;
		memcpy(u->path, slash, pl);
		n = (size_t)(slash - rest);
	}
	return kvw_uri_hostport(rest, n, u);
}

bool kvw_uri_param(const struct kvw_uri *u, const char *key, char *buf, size_t len)
{
	size_t kl = strlen(key);
	const char *p = u->query;

	while (*p) {
		const char *amp = strchr(p, '&');
		size_t seg = amp ? (size_t)(amp - p) : strlen(p);
		if (seg > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t vl = seg - kl - 1;
			if (vl >= len)
				return false;
			memcpy(buf, p + kl + 1, vl);
			buf[vl] = 0;
			return true;
		}
		p += seg + (amp ? 1 : 0);
	}
	return false;
}

/* Copies uri with the value of every secret= parameter replaced by "***",
 * so that log lines, counters and CLI output never show a shared secret. */
void kvw_uri_redact(const char *uri, char *out, size_t len)
{
	const char *q = uri ? strchr(uri, '?') : NULL;
	size_t o = 0;

	if (!len)
		return;
	if (!uri)
		uri = "";
	for (const char *p = uri; *p && o + 1 < len; p++) {
		out[o++] = *p;
		if (q && p >= q && (*p == '?' || *p == '&') && strncmp(p + 1, "secret=", 7) == 0) {
			for (const char *r = "secret=***"; *r && o + 1 < len; r++)
				out[o++] = *r;
			p += 7;
			while (p[1] && p[1] != '&')
				p++;
		}
	}
	out[o] = 0;
}
