/* SPDX-License-Identifier: MIT */
/* The configuration table: name, default, help; KVW_<NAME> overrides. */
#include "kvw_int.h"
#include "kvw_config.h"

#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(field) offsetof(struct kvw_cfgv, field), sizeof(((struct kvw_cfgv *)0)->field)
#define OU(n, def, lo, hi, field, help) {n, def, help, KVW_CFG_U64, lo, hi, NULL, F(field)}
#define OS(n, def, field, help) {n, def, help, KVW_CFG_STR, 0, 0, NULL, F(field)}

/* The core's options; each driver declares its own (ops->cfg_opts, in its
 * folder) and kvw_cfg_all() serves both: core first, then every built
 * driver's, in kvw_driver_table order. */
static const struct kvw_cfg_opt kvw_cfg_core[] = {
	OS("driver", "shm", driver, "default driver of the tools (kvwire-bench --driver): shm, tcp, rdma, dpdk"),
	OU("rails", "1", 1, KVW_MAX_RAILS, rails, "rails (streams / QPs / queues) per endpoint, 1..16"),
	OU("timeout_ms", "30000", 1, 86400000, timeout_ms, "default deadline of a request, from its first call"),
	OU("keepalive_ms", "250", 1, 3600000, keepalive_ms, "idle time after which a PING is sent"),
	OU("peer_dead_ms", "5000", 1, 86400000, peer_dead_ms, "silence after which the peer is declared dead (PEER_DEAD)"),
	OU("connect_timeout_ms", "5000", 1, 3600000, connect_timeout_ms, "time allowed for connect + handshake"),
	OU("abort_timeout_ms", "2000", 1, 3600000, abort_timeout_ms, "time an abort waits for the peer's confirmation before failing the endpoint"),
	OU("max_frag", "1048576", 4096, KVW_WIRE_MAX_DATA, max_frag, "largest data fragment in bytes"),
	OU("max_gather", "64", 1, 1024, max_gather, "source pieces one data fragment may gather where the two sides' KV geometries differ (e.g. token-major into head-major) and the driver can (tcp: writev, shm: strided descriptors); 1: a fragment per contiguous piece"),
	OU("window", "16777216", 65536, 1ull << 40, window, "drivers with their own flow control (rdma, dpdk): bytes in flight per endpoint before the sender waits for acks (send window)"),
	OS("secret", "", secret, "shared secret; when set, peers must prove it (CPace password-authenticated key exchange: no offline guessing). Prefer secret_file or KVW_SECRET to a URI's ?secret=, which shows in process listings"),
	OS("secret_file", "", secret_file, "file whose first line is the shared secret (read at context creation; overrides `secret`); keep it mode 0600"),
	OU("handshake_timeout_ms", "5000", 1, 3600000, handshake_timeout_ms, "listener side: time an accepted connection has to finish the handshake before it is dropped"),
	OU("accept_timeout_ms", "30000", 1, 86400000, accept_timeout_ms, "listener side: a READY endpoint that kvw_accept() has not taken within this time is closed"),
	OU("max_handshakes", "256", 1, 1000000, max_handshakes, "listener side: connections allowed in the handshake at once (lowered to a quarter of the fd limit); the oldest silent one is dropped for a new one"),
	OU("max_handshakes_per_addr", "64", 1, 1000000, max_handshakes_per_addr, "listener side: connections in the handshake at once from one peer address (tcp: IP, shm: uid)"),
	OU("max_unaccepted", "256", 1, 1000000, max_unaccepted, "listener side: READY endpoints waiting for kvw_accept(); more are refused with KVW_ERR_BUSY"),
	OU("max_tx_queue", "67108864", 1u << 16, 1ull << 40, max_tx_queue, "bytes of control frames queued to one peer; a peer that stops reading past it (or sends nothing out for peer_dead_ms) is failed PEER_DEAD"),
	OU("max_peer_grants", "1024", 1, 1u << 24, max_peer_grants, "GRANTs a peer may leave waiting for this side's kvw_send_seq, per endpoint"),
	OU("max_peer_grant_bytes", "67108864", 1u << 16, 1ull << 40, max_peer_grant_bytes, "bytes of waiting GRANT bodies a peer may leave per endpoint"),
	OU("max_peer_timeout_ms", "600000", 1, 86400000, max_peer_timeout_ms, "longest deadline a peer's GRANT may ask for; longer ones are cut to it"),
	OU("ep_cache", "0", 0, 1, ep_cache, "1: kvw_connect to a URI this context already has a live endpoint to returns that endpoint (one more reference; kvw_ep_close drops one) instead of a new connection, and first connects still in the handshake share it; an endpoint that failed is never handed out again"),
	OU("ep_idle_close_ms", "60000", 0, 86400000, ep_idle_close_ms, "with ep_cache=1: an endpoint no caller holds any more stays open this long for the next kvw_connect to its URI, then is closed (0: closed at the last kvw_ep_close)"),
	OS("stats_socket", "", stats_socket, "unix socket serving live counters to `kvwire stat` (\"auto\" = /run/kvwire/stats.PID.sock)"),
	OU("spin_us", "50", 0, 10000000, spin_us, "kvw_poll_wait: microseconds to spin before sleeping on the context fd"),
	OU("log_level", "1", 0, 4, log_level, "0 silent, 1 errors, 2 warnings, 3 info, 4 debug (stderr)"),
	OS("fault", "", fault, "fault injection, e.g. \"drop=0.01,dup=0.01,reorder=0.02,delay=200us,seed=7\""),
	{NULL},
};

static struct {
	pthread_once_t once;
	size_t n;
	const struct kvw_cfg_opt *opt[KVW_CFG_MAX];
	const char *owner[KVW_CFG_MAX];
	kvw_config_entry pub[KVW_CFG_MAX];
} kvw_cfg_all_ = {.once = PTHREAD_ONCE_INIT};

static void kvw_cfg_add(const struct kvw_cfg_opt *t, const char *owner)
{
	for (; t && t->name; t++) {
		size_t i = kvw_cfg_all_.n;
		if (i == KVW_CFG_MAX) /* a build-time mistake: raise KVW_CFG_MAX */
			abort();
		kvw_cfg_all_.opt[i] = t;
		kvw_cfg_all_.owner[i] = owner;
		kvw_cfg_all_.pub[i] = (kvw_config_entry){t->name, t->default_value, t->help};
		kvw_cfg_all_.n++;
	}
}

static void kvw_cfg_build(void)
{
	kvw_cfg_add(kvw_cfg_core, "core");
	for (int d = 0; kvw_driver_table[d]; d++)
		kvw_cfg_add(kvw_driver_table[d]->cfg_opts, kvw_driver_table[d]->name);
}

size_t kvw_cfg_all(const struct kvw_cfg_opt *const **opts, const char *const **owners)
{
	pthread_once(&kvw_cfg_all_.once, kvw_cfg_build);
	if (opts)
		*opts = kvw_cfg_all_.opt;
	if (owners)
		*owners = kvw_cfg_all_.owner;
	return kvw_cfg_all_.n;
}

size_t kvw_config_table(const kvw_config_entry **table)
{
	size_t n = kvw_cfg_all(NULL, NULL);

	if (table)
		*table = kvw_cfg_all_.pub;
	return n;
}

static int kvw_cfg_index(const char *name)
{
	size_t n = kvw_cfg_all(NULL, NULL);

	for (size_t i = 0; i < n; i++)
		if (strcmp(kvw_cfg_all_.opt[i]->name, name) == 0)
			return (int)i;
	return -1;
}

static kvw_status kvw_cfg_setval(kvw_config *cfg, int i, const char *value)
{
	char *v = strdup(value);

	if (!v)
		return KVW_ERR_NOMEM;
	free(cfg->val[i]);
	cfg->val[i] = v;
	return KVW_OK;
}

/* Values are checked by parsing a scratch copy of the whole table. */
static kvw_status kvw_cfg_check(const kvw_config *cfg)
{
	struct kvw_cfgv v;
	char err[200];

	if (kvw_cfgv_parse(cfg, &v, err, sizeof(err)) != KVW_OK)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "%s", err);
	return KVW_OK;
}

kvw_status kvw_config_create(kvw_config **out)
{
	kvw_config *cfg;
	char envname[64];

	kvw_err_clear(NULL);
	if (!out)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_config_create: the output pointer is NULL");
	if (!(cfg = calloc(1, sizeof(*cfg))))
		return kvw_set_err(NULL, KVW_ERR_NOMEM, "kvw_config_create: out of memory");
	for (size_t i = 0; i < kvw_cfg_all(NULL, NULL); i++) {
		const char *name = kvw_cfg_all_.opt[i]->name, *env;
		size_t k = 0;

		k = (size_t)snprintf(envname, sizeof(envname), "KVW_");
		for (const char *p = name; *p && k + 1 < sizeof(envname); p++)
			envname[k++] = (char)toupper((unsigned char)*p);
		envname[k] = 0;
		env = getenv(envname);
		if (kvw_cfg_setval(cfg, (int)i, env ? env : kvw_cfg_all_.opt[i]->default_value)) {
			kvw_config_destroy(cfg);
			return KVW_ERR_NOMEM;
		}
	}
	{
		struct kvw_cfgv v;
		char err[200];

		if (kvw_cfgv_parse(cfg, &v, err, sizeof(err)) != KVW_OK) {
			/* a bad KVW_* variable: refuse rather than guess */
			kvw_config_destroy(cfg);
			return kvw_set_err(NULL, KVW_ERR_INVALID, "%s (from the environment: fix or unset "
					   "that KVW_* variable)", err);
		}
	}

	*out = cfg;
	return KVW_OK;
}

/* "rdma_x" in a build without rdma: say whose option it would be. */
static bool kvw_cfg_unbuilt_owner(const char *name, char *drv, size_t len)
{
	const char *us = strchr(name, '_');
	char known[96];

	if (!us || (size_t)(us - name) >= len)
		return false;
	snprintf(drv, len, "%.*s", (int)(us - name), name);
	snprintf(known, sizeof(known), ",%s,", KVW_DRIVERS_KNOWN);
	for (int i = 0; kvw_driver_table[i]; i++)
		if (strcmp(kvw_driver_table[i]->name, drv) == 0)
			return false;
	{
		char key[40];
		snprintf(key, sizeof(key), ",%s,", drv);
		return strstr(known, key) != NULL;
	}
}

static kvw_status kvw_cfg_unknown(const char *name)
{
	char drv[32];

	if (kvw_cfg_unbuilt_owner(name, drv, sizeof(drv)))
		return kvw_set_err(NULL, KVW_ERR_INVALID, "config has no option \"%.64s\": options "
				   "named %s_* belong to the %s driver, which this build left out (built: "
				   "%s; meson's summary says why)", name, drv, drv, kvw_drivers_built());
	return kvw_set_err(NULL, KVW_ERR_INVALID, "config has no option \"%.64s\": `kvwire config` "
			   "lists them", name);
}

kvw_status kvw_config_set(kvw_config *cfg, const char *name, const char *value)
{
	int i;
	char *old;
	kvw_status st;

	kvw_err_clear(NULL);
	if (!cfg || !name || !value)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_config_set: config, name and value must not be NULL");
	if ((i = kvw_cfg_index(name)) < 0)
		return kvw_cfg_unknown(name);
	old = cfg->val[i] ? strdup(cfg->val[i]) : NULL;
	st = kvw_cfg_setval(cfg, i, value);
	if (st == KVW_OK && (st = kvw_cfg_check(cfg)) != KVW_OK) {
		free(cfg->val[i]);
		cfg->val[i] = old;
		return st;
	}
	free(old);
	return st;
}

kvw_status kvw_config_get(const kvw_config *cfg, const char *name, char *buf, size_t len)
{
	int i;

	kvw_err_clear(NULL);
	if (!cfg || !name || !buf)
		return kvw_set_err(NULL, KVW_ERR_INVALID, "kvw_config_get: config, name and buffer must not be NULL");
	if ((i = kvw_cfg_index(name)) < 0)
		return kvw_cfg_unknown(name);
	if (strlen(cfg->val[i]) + 1 > len)
		return kvw_set_err(NULL, KVW_ERR_NOMEM, "config %s: its value needs a buffer of %zu bytes",
				   name, strlen(cfg->val[i]) + 1);
	strcpy(buf, cfg->val[i]);
	return KVW_OK;
}

void kvw_config_destroy(kvw_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < KVW_CFG_MAX; i++)
		free(cfg->val[i]);
	free(cfg);
}

static bool kvw_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool kvw_parse_str(const char *s, char *dst, size_t cap)
{
	if (strlen(s) >= cap)
		return false;
	strcpy(dst, s);
	return true;
}

static void kvw_cfg_names(const char *const *names, char *buf, size_t len)
{
	size_t k = 0;

	buf[0] = 0;
	for (size_t i = 0; names[i] && k < len; i++)
		k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? (names[i + 1] ? ", " : " or ") : "",
				      names[i]);
}

static void kvw_cfg_store_u(void *field, size_t size, uint64_t v)
{
	if (size == sizeof(uint64_t)) {
		memcpy(field, &v, sizeof(v));
	} else {
		unsigned u = (unsigned)v;
		memcpy(field, &u, sizeof(u));
	}
}

static bool kvw_cfg_parse_enum(const struct kvw_cfg_opt *o, const char *s, void *field)
{
	for (int i = 0; o->names[i]; i++)
		if (strcmp(s, o->names[i]) == 0) {
			memcpy(field, &i, sizeof(i));
			return true;
		}
	return false;
}

/* One option's value into its field; false with err set when it is bad. */
static bool kvw_cfg_parse_one(const struct kvw_cfg_opt *o, const char *s, struct kvw_cfgv *out,
			      char *err, size_t errlen)
{
	void *field = (char *)out + o->off;
	char names[160];
	uint64_t v;

	switch (o->kind) {
	case KVW_CFG_STR:
		if (kvw_parse_str(s, field, o->size))
			return true;
		snprintf(err, errlen, "config %s: value longer than %zu characters", o->name, o->size - 1);
		return false;
	case KVW_CFG_ENUM:
		if (kvw_cfg_parse_enum(o, s, field))
			return true;
		kvw_cfg_names(o->names, names, sizeof(names));
		snprintf(err, errlen, "config %s=\"%s\": expected %s", o->name, s, names);
		return false;
	case KVW_CFG_INT:
		if (strcmp(s, "-1") == 0) {
			int m1 = -1;
			memcpy(field, &m1, sizeof(m1));
			return true;
		}
		if (kvw_parse_u64(s, o->lo, o->hi, &v)) {
			int iv = (int)v;
			memcpy(field, &iv, sizeof(iv));
			return true;
		}
		snprintf(err, errlen, "config %s=\"%s\": expected -1 or %llu..%llu", o->name, s,
			 (unsigned long long)o->lo, (unsigned long long)o->hi);
		return false;
	case KVW_CFG_U64:
		break;
	}
	if (kvw_parse_u64(s, o->lo, o->hi, &v)) {
		kvw_cfg_store_u(field, o->size, v);
		return true;
	}
	snprintf(err, errlen, "config %s=\"%s\": expected an integer in [%llu, %llu]", o->name, s,
		 (unsigned long long)o->lo, (unsigned long long)o->hi);
	return false;
}

kvw_status kvw_cfgv_parse(const kvw_config *cfg, struct kvw_cfgv *out, char *err, size_t errlen)
{
	const struct kvw_cfg_opt *const *opt;
	size_t n = kvw_cfg_all(&opt, NULL);

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < n; i++)
		if (!kvw_cfg_parse_one(opt[i], cfg->val[i] ? cfg->val[i] : opt[i]->default_value, out,
				       err, errlen))
			return KVW_ERR_INVALID;
	if (out->keepalive_ms >= out->peer_dead_ms) {
		snprintf(err, errlen, "config keepalive_ms (%u) must be below peer_dead_ms (%u)",
			 out->keepalive_ms, out->peer_dead_ms);
		return KVW_ERR_INVALID;
	}
	return KVW_OK;
}
