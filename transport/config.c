/* SPDX-License-Identifier: MIT */
/* The configuration table: name, default, help; KVW_<NAME> overrides. */
#include "kvw_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const kvw_config_entry kvw_cfg_table[] = {
	{"driver", "shm", "default driver of the tools (kvwire-bench --driver): shm, tcp, rdma, dpdk"},
	{"rails", "1", "rails (streams / QPs / queues) per endpoint, 1..16"},
	{"timeout_ms", "30000", "default deadline of a request, from its first call"},
	{"keepalive_ms", "250", "idle time after which a PING is sent"},
	{"peer_dead_ms", "5000", "silence after which the peer is declared dead (PEER_DEAD)"},
	{"connect_timeout_ms", "5000", "time allowed for connect + handshake"},
	{"abort_timeout_ms", "2000", "time an abort waits for the peer's confirmation before failing the endpoint"},
	{"max_frag", "1048576", "largest data fragment in bytes"},
	{"window", "16777216", "dpdk: bytes in flight per endpoint before the sender waits for acks (send window)"},
	{"secret", "", "shared secret; when set, peers must prove it (CPace password-authenticated key exchange: no offline guessing). Prefer secret_file or KVW_SECRET to a URI's ?secret=, which shows in process listings"},
	{"secret_file", "", "file whose first line is the shared secret (read at context creation; overrides `secret`); keep it mode 0600"},
	{"handshake_timeout_ms", "5000", "listener side: time an accepted connection has to finish the handshake before it is dropped"},
	{"accept_timeout_ms", "30000", "listener side: a READY endpoint that kvw_accept() has not taken within this time is closed"},
	{"max_handshakes", "256", "listener side: connections allowed in the handshake at once (lowered to a quarter of the fd limit); the oldest silent one is dropped for a new one"},
	{"max_handshakes_per_addr", "64", "listener side: connections in the handshake at once from one peer address (tcp: IP, shm: uid)"},
	{"max_unaccepted", "256", "listener side: READY endpoints waiting for kvw_accept(); more are refused with KVW_ERR_BUSY"},
	{"max_tx_queue", "67108864", "bytes of control frames queued to one peer; a peer that stops reading past it (or sends nothing out for peer_dead_ms) is failed PEER_DEAD"},
	{"max_peer_grants", "1024", "GRANTs a peer may leave waiting for this side's kvw_send_seq, per endpoint"},
	{"max_peer_grant_bytes", "67108864", "bytes of waiting GRANT bodies a peer may leave per endpoint"},
	{"max_peer_timeout_ms", "600000", "longest deadline a peer's GRANT may ask for; longer ones are cut to it"},
	{"stats_socket", "", "unix socket serving live counters to `kvwire stat` (\"auto\" = /run/kvwire/stats.PID.sock)"},
	{"spin_us", "50", "kvw_poll_wait: microseconds to spin before sleeping on the context fd"},
	{"log_level", "1", "0 silent, 1 errors, 2 warnings, 3 info, 4 debug (stderr)"},
	{"dpdk_eal", "", "EAL arguments for the dpdk driver, e.g. \"--no-huge --no-pci --vdev=net_memif0,...\""},
	{"rdma_dev", "", "RDMA device (default: first with an active port)"},
	{"rdma_gid", "-1", "GID index (default: the port's IPv4 RoCE v2 GID)"},
	{"rdma_qp_depth", "512", "send queue depth per QP"},
	{"rdma_retry", "6", "RC retry count (7 means forever on rxe: kept below)"},
	{"rdma_grant_keys", "auto", "remote keys of a grant: mw = a memory window per run of granted blocks, mr = an MR per run (both: the NIC refuses any other byte), span = one MR over the grant's span (fastest; holes between blocks unprotected), auto = mw where the device enforces window bounds, else mr"},
	{"fault", "", "fault injection, e.g. \"drop=0.01,dup=0.01,reorder=0.02,delay=200us,seed=7\""},
};
_Static_assert(KVW_ARRAY_SIZE(kvw_cfg_table) <= KVW_CFG_MAX, "config table too big");

size_t kvw_config_table(const kvw_config_entry **table)
{
	*table = kvw_cfg_table;
	return KVW_ARRAY_SIZE(kvw_cfg_table);
}

static int kvw_cfg_index(const char *name)
{
	for (size_t i = 0; i < KVW_ARRAY_SIZE(kvw_cfg_table); i++)
		if (strcmp(kvw_cfg_table[i].name, name) == 0)
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
	for (size_t i = 0; i < KVW_ARRAY_SIZE(kvw_cfg_table); i++) {
		const char *name = kvw_cfg_table[i].name, *env;
		size_t k = 0;

		k = (size_t)snprintf(envname, sizeof(envname), "KVW_");
		for (const char *p = name; *p && k + 1 < sizeof(envname); p++)
			envname[k++] = (char)toupper((unsigned char)*p);
		envname[k] = 0;
		env = getenv(envname);
		if (kvw_cfg_setval(cfg, (int)i, env ? env : kvw_cfg_table[i].default_value)) {
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

static kvw_status kvw_cfg_unknown(const char *name)
{
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

#define U(name, field, lo, hi)                                                        \
	do {                                                                          \
		uint64_t t_;                                                          \
		if (!kvw_parse_u64(cfg->val[kvw_cfg_index(name)], lo, hi, &t_)) {     \
			snprintf(err, errlen, "config %s=\"%s\": expected an integer in [%llu, %llu]", \
				 name, cfg->val[kvw_cfg_index(name)], (unsigned long long)(lo), \
				 (unsigned long long)(hi));                           \
			return KVW_ERR_INVALID;                                       \
		}                                                                     \
		out->field = t_;                                                      \
	} while (0)
#define S(name, field)                                                                \
	do {                                                                          \
		if (!kvw_parse_str(cfg->val[kvw_cfg_index(name)], out->field, sizeof(out->field))) { \
			snprintf(err, errlen, "config %s: value longer than %zu characters", name, \
				 sizeof(out->field) - 1);                             \
			return KVW_ERR_INVALID;                                       \
		}                                                                     \
	} while (0)

kvw_status kvw_cfgv_parse(const kvw_config *cfg, struct kvw_cfgv *out, char *err, size_t errlen)
{
	const char *gid;

	memset(out, 0, sizeof(*out));
	S("driver", driver);
	U("rails", rails, 1, KVW_MAX_RAILS);
	U("timeout_ms", timeout_ms, 1, 86400000);
	U("keepalive_ms", keepalive_ms, 1, 3600000);
	U("peer_dead_ms", peer_dead_ms, 1, 86400000);
	U("connect_timeout_ms", connect_timeout_ms, 1, 3600000);
	U("abort_timeout_ms", abort_timeout_ms, 1, 3600000);
	U("max_frag", max_frag, 4096, KVW_WIRE_MAX_DATA);
	U("window", window, 65536, 1ull << 40);
	S("secret", secret);
	S("secret_file", secret_file);
	U("handshake_timeout_ms", handshake_timeout_ms, 1, 3600000);
	U("accept_timeout_ms", accept_timeout_ms, 1, 86400000);
	U("max_handshakes", max_handshakes, 1, 1000000);
	U("max_handshakes_per_addr", max_handshakes_per_addr, 1, 1000000);
	U("max_unaccepted", max_unaccepted, 1, 1000000);
	U("max_tx_queue", max_tx_queue, 1u << 16, 1ull << 40);
	U("max_peer_grants", max_peer_grants, 1, 1u << 24);
	U("max_peer_grant_bytes", max_peer_grant_bytes, 1u << 16, 1ull << 40);
	U("max_peer_timeout_ms", max_peer_timeout_ms, 1, 86400000);
	S("stats_socket", stats_socket);
	U("spin_us", spin_us, 0, 10000000);
	U("log_level", log_level, 0, 4);
	S("dpdk_eal", dpdk_eal);
	S("rdma_dev", rdma_dev);
	gid = cfg->val[kvw_cfg_index("rdma_gid")];
	if (strcmp(gid, "-1") == 0) {
		out->rdma_gid = -1;
	} else {
		uint64_t g;
		if (!kvw_parse_u64(gid, 0, 255, &g)) {
			snprintf(err, errlen, "config rdma_gid=\"%s\": expected -1 or 0..255", gid);
			return KVW_ERR_INVALID;
		}
		out->rdma_gid = (int)g;
	}
	U("rdma_qp_depth", rdma_qp_depth, 16, 32768);
	U("rdma_retry", rdma_retry, 0, 7);
	{
		const char *k = cfg->val[kvw_cfg_index("rdma_grant_keys")];
		static const char *const modes[] = {"auto", "mw", "mr", "span"};
		out->rdma_grant_keys = -1;
		for (int i = 0; i < 4; i++)
			if (strcmp(k, modes[i]) == 0)
				out->rdma_grant_keys = i;
		if (out->rdma_grant_keys < 0) {
			snprintf(err, errlen, "config rdma_grant_keys=\"%s\": expected auto, mw, mr or span", k);
			return KVW_ERR_INVALID;
		}
	}
	S("fault", fault);
	if (out->keepalive_ms >= out->peer_dead_ms) {
		snprintf(err, errlen, "config keepalive_ms (%u) must be below peer_dead_ms (%u)",
			 out->keepalive_ms, out->peer_dead_ms);
		return KVW_ERR_INVALID;
	}
	return KVW_OK;
}
