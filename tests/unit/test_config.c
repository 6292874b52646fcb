/* SPDX-License-Identifier: MIT */
/* The configuration table, its defaults, KVW_* overrides and bad values. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvwire/kvwire.h"

TestSuite(config, .timeout = 20);

static const char *const documented[] = {
	"driver", "rails", "timeout_ms", "keepalive_ms", "peer_dead_ms", "connect_timeout_ms",
	"abort_timeout_ms", "max_frag", "window", "secret", "stats_socket", "log_level",
	"dpdk_eal", "dpdk_cancel_ms", "rdma_dev", "rdma_gid", "rdma_qp_depth", "rdma_retry", "rdma_grant_keys", "fault",
};
#define N_DOC (sizeof(documented) / sizeof(documented[0]))

static void env_name(const char *name, char *buf, size_t len)
{
	size_t k = (size_t)snprintf(buf, len, "KVW_");
	for (; *name && k + 1 < len; name++)
		buf[k++] = (char)toupper((unsigned char)*name);
	buf[k] = 0;
}

/* Criterion may inherit KVW_* from CI: every test starts clean. */
static void clear_env(void)
{
	char env[64];
	for (size_t i = 0; i < N_DOC; i++) {
		env_name(documented[i], env, sizeof(env));
		unsetenv(env);
	}
}

/* The drivers' options are served like the core's: by name, defaults, KVW_*;
 * an enumerated one takes only its named values, and its refusal names them. */
static bool in_table(const char *name)
{
	const kvw_config_entry *t;
	size_t n = kvw_config_table(&t);
	for (size_t j = 0; j < n; j++)
		if (!strcmp(t[j].name, name))
			return true;
	return false;
}

/* Options of the drivers (rdma_*, dpdk_*) exist only when that driver is built. */
static bool expected(const char *name)
{
	char drv[16], built[96];
	const char *us = strchr(name, '_');
	if (!us || (strncmp(name, "rdma_", 5) && strncmp(name, "dpdk_", 5)))
		return true;
	snprintf(drv, sizeof(drv), ",%.*s,", (int)(us - name), name);
	snprintf(built, sizeof(built), ",%s,", kvw_drivers_built());
	return strstr(built, drv) != NULL;
}

Test(config, table_is_complete, .init = clear_env)
{
	const kvw_config_entry *t = NULL;
	size_t n = kvw_config_table(&t);
	cr_assert_not_null(t);
	cr_assert_geq(n, N_DOC);
	for (size_t i = 0; i < N_DOC; i++) {
		size_t j = 0;
		if (!expected(documented[i])) {
			cr_assert(!in_table(documented[i]), "%s without its driver", documented[i]);
			continue;
		}
		while (j < n && strcmp(t[j].name, documented[i]))
			j++;
		cr_assert_lt(j, n, "option %s missing from the table", documented[i]);
	}
	for (size_t j = 0; j < n; j++) {
		cr_assert(t[j].name && *t[j].name);
		cr_assert_not_null(t[j].default_value, "%s has no default", t[j].name);
		cr_assert(t[j].help && strlen(t[j].help) > 10, "%s has no help", t[j].name);
		for (size_t k = 0; k < j; k++)
			cr_assert_str_neq(t[j].name, t[k].name, "duplicate option");
	}
}

Test(config, defaults_are_the_table, .init = clear_env)
{
	const kvw_config_entry *t;
	size_t n = kvw_config_table(&t);
	kvw_config *cfg;
	char buf[1024];
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	for (size_t j = 0; j < n; j++) {
		cr_assert_eq(kvw_config_get(cfg, t[j].name, buf, sizeof(buf)), KVW_OK, "%s", t[j].name);
		cr_assert_str_eq(buf, t[j].default_value, "%s", t[j].name);
	}
	/* the defaults make a working context */
	kvw_ctx *ctx;
	cr_assert_eq(kvw_ctx_create(cfg, &ctx), KVW_OK);
	kvw_ctx_destroy(ctx);
	kvw_config_destroy(cfg);
}

Test(config, env_overrides_every_option, .init = clear_env)
{
	/* one legal non-default value per option */
	static const char *const vals[][2] = {
		{ "driver", "shm" }, { "rails", "4" }, { "timeout_ms", "1234" },
		{ "keepalive_ms", "100" }, { "peer_dead_ms", "900" },
		{ "connect_timeout_ms", "777" }, { "abort_timeout_ms", "555" },
		{ "max_frag", "65536" }, { "window", "1048576" }, { "secret", "s3cr3t" },
		{ "log_level", "0" }, { "rdma_dev", "rxe0" }, { "rdma_gid", "3" },
		{ "rdma_qp_depth", "64" }, { "rdma_retry", "5" },
	};
	char env[64], buf[256];
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		env_name(vals[i][0], env, sizeof(env));
		if (expected(vals[i][0]))
			setenv(env, vals[i][1], 1);
	}
	kvw_config *cfg;
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		if (!expected(vals[i][0]))
			continue;
		cr_assert_eq(kvw_config_get(cfg, vals[i][0], buf, sizeof(buf)), KVW_OK);
		cr_assert_str_eq(buf, vals[i][1], "%s from the environment", vals[i][0]);
	}
	/* set() still wins over the environment */
	cr_assert_eq(kvw_config_set(cfg, "timeout_ms", "4321"), KVW_OK);
	cr_assert_eq(kvw_config_get(cfg, "timeout_ms", buf, sizeof(buf)), KVW_OK);
	cr_assert_str_eq(buf, "4321");
	kvw_config_destroy(cfg);
}

/* A bad value is refused by set() (or, at the latest, by ctx_create). */
static kvw_status set_bad(const char *name, const char *value)
{
	kvw_config *cfg;
	char before[256], after[256];
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_get(cfg, name, before, sizeof(before)), KVW_OK);
	kvw_status st = kvw_config_set(cfg, name, value);
	if (st == KVW_OK) {
		kvw_ctx *ctx;
		st = kvw_ctx_create(cfg, &ctx);
		if (st == KVW_OK)
			kvw_ctx_destroy(ctx);
	} else {
		cr_assert_eq(kvw_config_get(cfg, name, after, sizeof(after)), KVW_OK);
		cr_assert_str_eq(after, before, "a refused value must not stick");
	}
	kvw_config_destroy(cfg);
	return st;
}

Test(config, bad_values_invalid, .init = clear_env)
{
	static const char *const bad[][2] = {
		{ "rails", "0" }, { "rails", "17" }, { "rails", "two" }, { "rails", "" },
		{ "rails", "-1" }, { "rails", "3x" },
		{ "timeout_ms", "abc" }, { "timeout_ms", "-5" }, { "timeout_ms", "0" },
		{ "timeout_ms", "99999999999999999999999" },
		{ "keepalive_ms", "1.5" }, { "peer_dead_ms", " " },
		{ "max_frag", "12" }, { "window", "0" }, { "log_level", "9" },
		{ "rdma_gid", "256" }, { "rdma_gid", "-2" }, { "rdma_retry", "8" },
		{ "rdma_qp_depth", "1" }, { "keepalive_ms", "999999" }, /* >= peer_dead_ms */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (expected(bad[i][0]))
			cr_assert_eq(set_bad(bad[i][0], bad[i][1]), KVW_ERR_INVALID,
				     "%s=\"%s\" accepted", bad[i][0], bad[i][1]);
	char longs[600];
	memset(longs, 'x', sizeof(longs) - 1);
	longs[sizeof(longs) - 1] = 0;
	cr_assert_eq(set_bad("secret", longs), KVW_ERR_INVALID, "secret of 599 bytes accepted");
	if (expected("dpdk_eal"))
		cr_assert_eq(set_bad("dpdk_eal", longs), KVW_ERR_INVALID);
}

Test(config, bad_env_refused, .init = clear_env)
{
	kvw_config *cfg = (kvw_config *)(uintptr_t)1;
	setenv("KVW_RAILS", "lots", 1);
	kvw_status st = kvw_config_create(&cfg);
	if (st == KVW_OK) {
		kvw_ctx *ctx;
		st = kvw_ctx_create(cfg, &ctx);
		kvw_config_destroy(cfg);
	} else {
		cr_assert_eq(cfg, (kvw_config *)(uintptr_t)1, "output written on failure");
	}
	cr_assert_eq(st, KVW_ERR_INVALID);
	kvw_ctx *ctx = NULL;
	cr_assert_eq(kvw_ctx_create(NULL, &ctx), KVW_ERR_INVALID, "ctx_create(NULL) ignores env");
	unsetenv("KVW_RAILS");
	cr_assert_eq(kvw_ctx_create(NULL, &ctx), KVW_OK);
	kvw_ctx_destroy(ctx);
}

Test(config, unknown_names_and_bad_args, .init = clear_env)
{
	kvw_config *cfg;
	char buf[64];
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_lt(kvw_config_set(cfg, "no_such_option", "1"), 0);
	cr_assert_lt(kvw_config_get(cfg, "no_such_option", buf, sizeof(buf)), 0);
	cr_assert_lt(kvw_config_set(cfg, "TIMEOUT_MS", "1"), 0);
	cr_assert_lt(kvw_config_set(cfg, NULL, "1"), 0);
	cr_assert_lt(kvw_config_set(cfg, "rails", NULL), 0);
	cr_assert_lt(kvw_config_set(NULL, "rails", "1"), 0);
	cr_assert_lt(kvw_config_get(cfg, "rails", NULL, 8), 0);
	kvw_config_destroy(cfg);
	kvw_config_destroy(NULL);
}

Test(config, get_small_buffer, .init = clear_env)
{
	kvw_config *cfg;
	char buf[8];
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_set(cfg, "secret", "0123456789"), KVW_OK);
	memset(buf, 0x55, sizeof(buf));
	cr_assert_lt(kvw_config_get(cfg, "secret", buf, sizeof(buf)), 0);
	cr_assert_lt(kvw_config_get(cfg, "secret", buf, 0), 0);
	char exact[11];
	cr_assert_eq(kvw_config_get(cfg, "secret", exact, sizeof(exact)), KVW_OK);
	cr_assert_str_eq(exact, "0123456789");
	kvw_config_destroy(cfg);
}

Test(config, ctx_copies_config, .init = clear_env)
{
	kvw_config *cfg;
	kvw_ctx *ctx;
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_set(cfg, "timeout_ms", "2500"), KVW_OK);
	cr_assert_eq(kvw_ctx_create(cfg, &ctx), KVW_OK);
	kvw_config_destroy(cfg); /* the context keeps its own copy */
	cr_assert_eq(kvw_progress(ctx), KVW_OK);
	cr_assert_str_eq(kvw_ctx_last_error(ctx), "");
	cr_assert_geq(kvw_ctx_fd(ctx), 0);
	kvw_ctx_destroy(ctx);
}

Test(config, driver_enum_named_values, .init = clear_env)
{
	static const char *const modes[] = {"auto", "mw", "mr", "mw2", "span"};
	kvw_config *cfg;
	char buf[64];
	if (!in_table("rdma_grant_keys"))
		cr_skip_test("the rdma driver is not built");
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	for (size_t i = 0; i < 5; i++) {
		cr_assert_eq(kvw_config_set(cfg, "rdma_grant_keys", modes[i]), KVW_OK, "%s", modes[i]);
		cr_assert_eq(kvw_config_get(cfg, "rdma_grant_keys", buf, sizeof(buf)), KVW_OK);
		cr_assert_str_eq(buf, modes[i]);
	}
	cr_assert_eq(kvw_config_set(cfg, "rdma_grant_keys", "2"), KVW_ERR_INVALID, "a bare literal");
	cr_assert_eq(kvw_config_set(cfg, "rdma_grant_keys", "MW"), KVW_ERR_INVALID);
	cr_assert(strstr(kvw_ctx_last_error(NULL), "expected auto, mw, mr, span or mw2"), "%s",
		  kvw_ctx_last_error(NULL));
	cr_assert_eq(kvw_config_get(cfg, "rdma_grant_keys", buf, sizeof(buf)), KVW_OK);
	cr_assert_str_eq(buf, "span", "a refused value must not stick");
	kvw_config_destroy(cfg);
	setenv("KVW_RDMA_GRANT_KEYS", "mr", 1);
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_get(cfg, "rdma_grant_keys", buf, sizeof(buf)), KVW_OK);
	cr_assert_str_eq(buf, "mr");
	kvw_config_destroy(cfg);
	setenv("KVW_RDMA_GRANT_KEYS", "banana", 1);
	cr_assert_eq(kvw_config_create(&cfg), KVW_ERR_INVALID);
	cr_assert(strstr(kvw_ctx_last_error(NULL), "rdma_grant_keys"));
	unsetenv("KVW_RDMA_GRANT_KEYS");
}

Test(config, unknown_sentence_names_the_lister, .init = clear_env)
{
	kvw_config *cfg;
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_set(cfg, "zzz_nonsense", "1"), KVW_ERR_INVALID);
	cr_assert(strstr(kvw_ctx_last_error(NULL), "`kvwire config` lists them"));
	/* an option of a driver this build left out says so (-Ddrivers_disabled=rdma) */
	kvw_status st = kvw_config_set(cfg, "rdma_dev", "rxe0");
	if (in_table("rdma_dev")) {
		cr_assert_eq(st, KVW_OK);
	} else {
		cr_assert_eq(st, KVW_ERR_INVALID);
		cr_assert(strstr(kvw_ctx_last_error(NULL), "belong to the rdma driver, which this "
				 "build left out"), "%s", kvw_ctx_last_error(NULL));
	}
	cr_assert_eq(kvw_config_set(cfg, "max_nonsense", "1"), KVW_ERR_INVALID);
	cr_assert(strstr(kvw_ctx_last_error(NULL), "`kvwire config` lists them"), "not a driver's");
	kvw_config_destroy(cfg);
}
