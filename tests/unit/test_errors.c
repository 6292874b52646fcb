/* SPDX-License-Identifier: MIT */
/* The error contract of the public header: a failing call leaves a
 * sentence in kvw_ctx_last_error() (the context's, or the thread's for
 * calls without one) that is current -- cleared when the next call starts
 * -- and leaves its output arguments alone; log lines go to the callback. */
#include "kvwire/kvwire.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define SENTINEL ((void *)0x5a5a5a5a)

static void has_sentence(const kvw_ctx *ctx, const char *what)
{
	const char *e = kvw_ctx_last_error(ctx);
	cr_expect(e && e[0], "no sentence after %s", what);
	cr_expect(strlen(e) > 20, "too short to say what to do after %s: \"%s\"", what, e);
}

static kvw_ctx *quiet_ctx(void)
{
	kvw_config *cfg;
	kvw_ctx *c;

	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_set(cfg, "log_level", "0"), KVW_OK);
	cr_assert_eq(kvw_ctx_create(cfg, &c), KVW_OK);
	kvw_config_destroy(cfg);
	return c;
}

Test(errors, config_reasons)
{
	kvw_config *cfg;
	char buf[4];

	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_expect_eq(kvw_config_set(cfg, "no_such_option", "1"), KVW_ERR_INVALID);
	cr_expect_not_null(strstr(kvw_ctx_last_error(NULL), "no_such_option"), "%s", kvw_ctx_last_error(NULL));
	cr_expect_eq(kvw_config_set(cfg, "rails", "99"), KVW_ERR_INVALID);
	cr_expect_not_null(strstr(kvw_ctx_last_error(NULL), "rails"), "%s", kvw_ctx_last_error(NULL));
	cr_expect_eq(kvw_config_set(cfg, "rails", "2"), KVW_OK);
	cr_expect_str_empty(kvw_ctx_last_error(NULL), "stale sentence: %s", kvw_ctx_last_error(NULL));
	cr_expect_eq(kvw_config_get(cfg, "nope", buf, sizeof(buf)), KVW_ERR_INVALID);
	has_sentence(NULL, "config_get of an unknown option");
	cr_expect_eq(kvw_config_get(cfg, "connect_timeout_ms", buf, 2), KVW_ERR_NOMEM);
	has_sentence(NULL, "config_get into a short buffer");
	cr_expect_eq(kvw_config_set(NULL, "rails", "1"), KVW_ERR_INVALID);
	has_sentence(NULL, "config_set(NULL)");
	kvw_config_destroy(cfg);
}

Test(errors, ctx_create_says_why_and_keeps_output)
{
	kvw_config *cfg;
	kvw_ctx *c = SENTINEL;

	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_set(cfg, "secret_file", "/nonexistent/kvw-secret"), KVW_OK);
	cr_expect_eq(kvw_ctx_create(cfg, &c), KVW_ERR_INVALID);
	cr_expect_eq(c, SENTINEL, "output written on failure");
	cr_expect_not_null(strstr(kvw_ctx_last_error(NULL), "secret_file"), "%s", kvw_ctx_last_error(NULL));
	kvw_config_destroy(cfg);
	cr_expect_eq(kvw_ctx_create(NULL, NULL), KVW_ERR_INVALID);
	has_sentence(NULL, "ctx_create(NULL out)");
}

Test(errors, endpoint_calls)
{
	kvw_ctx *c = quiet_ctx();
	kvw_listener *l = SENTINEL, *ok;
	kvw_ep *ep = SENTINEL;
	kvw_ep_info info = {.size = sizeof(info)};
	uint64_t rtt = 7;

	cr_expect_neq(kvw_listen(c, "bogus://nowhere", &l), KVW_OK);
	cr_expect_eq(l, SENTINEL);
	has_sentence(c, "listen on a bad URI");
	cr_assert_eq(kvw_listen(c, "tcp://127.0.0.1:0", &ok), KVW_OK);
	cr_expect_str_empty(kvw_ctx_last_error(c), "stale after a good listen: %s", kvw_ctx_last_error(c));
	cr_expect_eq(kvw_connect(c, "tcp://127.0.0.1:1", 2000, &ep), KVW_ERR_CONNREFUSED);
	cr_expect_eq(ep, SENTINEL);
	has_sentence(c, "connect to a closed port");
	cr_expect_eq(kvw_connect(c, NULL, 100, &ep), KVW_ERR_INVALID);
	has_sentence(c, "connect(NULL uri)");
	cr_expect_eq(kvw_accept(ok, 0, &ep), KVW_INPROGRESS);
	cr_expect_eq(ep, SENTINEL);
	cr_expect_eq(kvw_ep_query(NULL, &info), KVW_ERR_INVALID);
	has_sentence(NULL, "ep_query(NULL)");
	cr_expect_eq(kvw_ep_ping(NULL, 10, &rtt), KVW_ERR_INVALID);
	cr_expect_eq(rtt, 7u);
	kvw_listener_close(ok);
	kvw_ctx_destroy(c);
}

Test(errors, layout_outside_memory)
{
	kvw_ctx *c = quiet_ctx();
	kvw_mem *m;
	kvw_layout *lay = SENTINEL;
	kvw_layout_desc d = {.n_layers = 4, .n_blocks = 4, .block_bytes = 4096, .block_stride = 4096,
			     .layer_stride = 1 << 20};

	cr_assert_eq(kvw_mem_alloc(c, 1 << 20, KVW_MEM_NO_PIN, &m), KVW_OK);
	cr_expect_eq(kvw_layout_create(m, &d, &lay), KVW_ERR_REJECTED);
	cr_expect_eq(lay, SENTINEL);
	has_sentence(c, "a layout beyond its memory");
	d.n_layers = 1;
	cr_assert_eq(kvw_layout_create(m, &d, &lay), KVW_OK);
	cr_expect_str_empty(kvw_ctx_last_error(c), "stale: %s", kvw_ctx_last_error(c));
	cr_expect_eq(kvw_layout_create(NULL, &d, &lay), KVW_ERR_INVALID);
	has_sentence(NULL, "layout_create(NULL mem)");
	kvw_layout_destroy(lay);
	kvw_mem_dereg(m);
	kvw_ctx_destroy(c);
}

struct logrec {
	unsigned n, worst;
	char last[256];
};

static void on_log(void *user, unsigned level, const char *line)
{
	struct logrec *r = user;
	r->n++;
	r->worst = level;
	snprintf(r->last, sizeof(r->last), "%s", line);
}

Test(errors, log_callback)
{
	kvw_config *cfg;
	kvw_ctx *c;
	kvw_ep *ep;
	struct logrec r = {0};

	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_set(cfg, "log_level", "2"), KVW_OK);
	cr_assert_eq(kvw_ctx_create(cfg, &c), KVW_OK);
	kvw_config_destroy(cfg);
	kvw_ctx_set_log(c, on_log, &r);
	cr_expect_neq(kvw_connect(c, "tcp://127.0.0.1:1", 1000, &ep), KVW_OK);
	cr_expect_gt(r.n, 0u, "no log line reached the callback");
	cr_expect_leq(r.worst, 2u);
	cr_expect(r.last[0]);
	kvw_ctx_destroy(c);
}
