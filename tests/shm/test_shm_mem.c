/* SPDX-License-Identifier: MIT */
/* shm and memory it cannot share: kvw_mem_reg caller memory registers
 * (another driver of the context could move it), shm records why it cannot
 * share it, and the first send over shm from it fails with that sentence
 * before any byte moves; kvw_mem_alloc memory goes through. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvwire/kvwire.h"
#include "kvwt.h"

#define BB 4096u
#define NB 4u

static char logged[8][512];
static int n_logged;

static void grab(void *user, unsigned level, const char *line)
{
	(void)user;
	(void)level;
	if (n_logged < 8)
		snprintf(logged[n_logged++], sizeof(logged[0]), "%s", line);
}

static bool was_logged(const char *what)
{
	for (int i = 0; i < n_logged; i++)
		if (strstr(logged[i], what))
			return true;
	return false;
}

struct pair {
	kvw_ctx *ctx;
	kvw_listener *l;
	kvw_ep *c, *s;
	char uri[128];
};

static void pair_open(struct pair *p)
{
	kvw_config *cfg;
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	cr_assert_eq(kvw_config_set(cfg, "log_level", "3"), KVW_OK);
	cr_assert_eq(kvw_ctx_create(cfg, &p->ctx), KVW_OK);
	kvw_config_destroy(cfg);
	kvw_ctx_set_log(p->ctx, grab, NULL);
	snprintf(p->uri, sizeof(p->uri), "shm:///tmp/kvw-shm-mem.%ld.sock", (long)getpid());
	cr_assert_eq(kvw_listen(p->ctx, p->uri, &p->l), KVW_OK, "%s", kvw_ctx_last_error(p->ctx));
	cr_assert_eq(kvwt_connect2(p->ctx, kvw_listener_uri(p->l), p->l, 5000, &p->c, &p->s), KVW_OK);
}

static kvw_layout *lay_of(kvw_mem *m)
{
	kvw_layout_desc d = {.n_layers = 1, .n_blocks = NB, .block_bytes = BB, .block_stride = BB};
	kvw_layout *lay;
	cr_assert_eq(kvw_layout_create(m, &d, &lay), KVW_OK);
	return lay;
}

static bool send_ended(void *arg)
{
	return kvw_req_status(arg) != KVW_INPROGRESS;
}

/* One sequence of NB blocks from src into a fresh kvw_mem_alloc arena;
 * returns the sender's final status and its bytes landed. */
static kvw_status xfer(struct pair *p, kvw_mem *src, uint64_t seq, uint64_t *bytes)
{
	static const uint32_t blk[NB] = {0, 1, 2, 3};
	kvw_mem *dst;
	kvw_req *rr, *sr;
	kvw_req_info ri = {.size = sizeof(ri)};
	cr_assert_eq(kvw_mem_alloc(p->ctx, BB * NB, KVW_MEM_NO_PIN, &dst), KVW_OK);
	kvw_layout *sl = lay_of(src), *dl = lay_of(dst);
	cr_assert_eq(kvw_recv_seq(p->s, seq, dl, blk, NB, 0, &rr), KVW_OK);
	cr_assert_eq(kvw_send_seq(p->c, seq, sl, blk, NB, 0, 1, KVW_SEND_LAST, &sr), KVW_OK);
	cr_assert(kvwt_drive1(p->ctx, 10000, send_ended, sr), "the send never ended");
	kvw_status st = kvw_req_status(sr);
	cr_assert_eq(kvw_req_query(sr, &ri), KVW_OK);
	*bytes = ri.bytes;
	if (st == KVW_OK)
		cr_assert_eq(memcmp(kvw_mem_addr(dst), kvw_mem_addr(src), BB * NB), 0, "bytes differ");
	kvw_req_abort(rr);
	kvwt_drive1(p->ctx, 2000, send_ended, rr);
	kvw_req_free(sr);
	kvw_req_free(rr);
	kvw_layout_destroy(sl);
	kvw_layout_destroy(dl);
	kvw_mem_dereg(dst);
	return st;
}

TestSuite(shm_mem, .timeout = 30);

Test(shm_mem, caller_memory_fails_first_send_with_the_fix)
{
	struct pair p;
	uint64_t bytes = 1;
	void *buf = aligned_alloc(4096, BB * NB);
	kvw_mem *m;
	cr_assert_not_null(buf);
	kvwt_fill(buf, BB * NB, 5);
	pair_open(&p);
	cr_assert_eq(kvw_mem_reg(p.ctx, buf, BB * NB, KVW_MEM_NO_PIN, &m), KVW_OK,
		     "registration must succeed: tcp or rdma could move this arena");
	cr_assert(was_logged("shm: arena"), "registration did not note that shm cannot share it");
	n_logged = 0;
	cr_assert_eq(xfer(&p, m, 1, &bytes), KVW_ERR_UNSUPPORTED);
	cr_assert_eq(bytes, 0, "bytes moved before the refusal");
	cr_assert(was_logged("allocate it with kvw_mem_alloc()"), "no sentence saying what to do");
	/* the endpoint still serves memory shm can share */
	kvw_mem *ok;
	cr_assert_eq(kvw_mem_alloc(p.ctx, BB * NB, KVW_MEM_NO_PIN, &ok), KVW_OK);
	kvwt_fill(kvw_mem_addr(ok), BB * NB, 6);
	cr_assert_eq(xfer(&p, ok, 2, &bytes), KVW_OK, "%s", kvw_ctx_last_error(p.ctx));
	cr_assert_eq(bytes, BB * NB);
	kvw_mem_dereg(ok);
	kvw_mem_dereg(m);
	kvw_ctx_destroy(p.ctx);
	free(buf);
}

Test(shm_mem, alloc_memory_is_not_flagged)
{
	struct pair p;
	kvw_mem *m;
	pair_open(&p);
	n_logged = 0;
	cr_assert_eq(kvw_mem_alloc(p.ctx, BB * NB, KVW_MEM_NO_PIN, &m), KVW_OK);
	cr_assert(!was_logged("cannot share"), "%s", logged[0]);
	kvw_mem_dereg(m);
	kvw_ctx_destroy(p.ctx);
}
