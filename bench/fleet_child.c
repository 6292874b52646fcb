/* SPDX-License-Identifier: MIT */
/* A prefill or decode process of kvwire-bench fleet. Its own kvwire context
 * and listener; one endpoint per peer of the other role.
 * Data: page (layer, i) of every request is kvb_pattern_fill(seed, layer, i),
 * written once into the prefill's source blocks [0, max blocks). A decode
 * grants scattered blocks from a shuffled free list, flips the first byte of
 * each granted page (so a page that is not written cannot pass), and on
 * landing hashes every byte of every page against the pattern's xxh3.
 * Links: a prefill connects when told (CONNECT) and again, to the same URI,
 * on its first SEND to a newer incarnation of that decode (a restarted one);
 * the endpoint it held is retired, never used again, and closed at exit. */
#include "fleet.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#define FL_JOBS 512
#define FL_GONE 256         /* retired endpoints kept until exit */
#define FL_ACCEPT_NS 10000000000ull

typedef struct fl_job {
	bool used;
	uint64_t k;
	uint32_t nblk, peer;
	uint32_t *blocks;   /* decode: its granted blocks */
	kvw_req *req;
} fl_job;

struct kvb_fl_child {
	const kvb_opts *o;
	bool decode;
	unsigned idx;
	char name[64];        /* in sentences: "decode 2" or a fleet-node's name */
	int fd;
	kvb_fl_tick tick;     /* fleet-node: its directory and control listener */
	void *tick_arg;
	kvw_ctx *ctx;
	kvw_listener *l;
	kvw_mem *mem;
	kvw_layout *layout;
	kvw_ep *eps[64];
	uint32_t ep_gen[64];  /* prefill: the incarnation of the decode eps[i] reaches */
	char peer_uri[64][232];
	kvw_ep *gone[FL_GONE];
	unsigned n_gone;
	uint32_t acc[64];     /* decode: prefills to accept, in order */
	unsigned n_acc;
	uint64_t acc_deadline;
	uint8_t *base;
	uint64_t bb, layer_stride;
	uint32_t layers, nblk_max, pool;
	uint32_t *free_blk, n_free;
	uint32_t *src;        /* prefill: 0 .. nblk_max-1 */
	uint64_t *want;       /* decode: xxh3 of page (layer, i) */
	fl_job jobs[FL_JOBS];
	kvb_fl_rec *pend;     /* records waiting for blocks or send credit */
	size_t n_pend, cap_pend;
	char err[232];
};
typedef struct kvb_fl_child fl_child;

static void rec_send(fl_child *c, uint32_t type, int32_t st, uint32_t peer, uint64_t k)
{
	kvb_fl_rec r = {.type = type, .status = st, .peer = peer, .k = k, .t_ns = kvb_now_ns()};
	if (type == KVB_FL_FAILED || type == KVB_FL_HELLO)
		snprintf(r.uri, sizeof(r.uri), "%s", c->err);
	(void)!send(c->fd, &r, sizeof(r), MSG_NOSIGNAL);
}

static int child_fail(fl_child *c, const char *what, kvw_status st)
{
	snprintf(c->err, sizeof(c->err), "%s: %s: %s %s", c->name, what, kvw_strerror(st),
		 c->ctx ? kvw_ctx_last_error(c->ctx) : "");
	return -1;
}

static uint8_t *fl_page(const fl_child *c, uint32_t layer, uint32_t blk)
{
	return c->base + (uint64_t)layer * c->layer_stride + (uint64_t)blk * c->bb;
}

/* The decode's free list: a seeded permutation, so grants scatter as in kv. */
static void shuffle_free(fl_child *c)
{
	uint64_t x = c->o->seed ^ 0x7065726dull ^ ((uint64_t)c->idx << 40);
	for (uint32_t i = 0; i < c->pool; i++)
		c->free_blk[i] = i;
	for (uint32_t i = c->pool - 1; i > 0; i--) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		uint32_t j = (uint32_t)((x >> 33) % (i + 1)), t = c->free_blk[i];
		c->free_blk[i] = c->free_blk[j];
		c->free_blk[j] = t;
	}
	c->n_free = c->pool;
}

static int child_data(fl_child *c)
{
	if (!c->decode) {
		for (uint32_t i = 0; i < c->nblk_max; i++)
			c->src[i] = i;
		for (uint32_t l = 0; l < c->layers; l++)
			for (uint32_t i = 0; i < c->nblk_max; i++)
				kvb_pattern_fill(fl_page(c, l, i), c->bb, c->o->seed, l, i);
		return 0;
	}
	uint8_t *scratch = malloc(c->bb);
	if (!scratch)
		return -1;
	for (uint32_t l = 0; l < c->layers; l++)
		for (uint32_t i = 0; i < c->nblk_max; i++) {
			kvb_pattern_fill(scratch, c->bb, c->o->seed, l, i);
			c->want[(uint64_t)l * c->nblk_max + i] = XXH3_64bits(scratch, c->bb);
		}
	free(scratch);
	shuffle_free(c);
	for (unsigned j = 0; j < FL_JOBS; j++)
		c->jobs[j].blocks = &c->src[(uint64_t)j * c->nblk_max];
	return 0;
}

static int child_mem(fl_child *c)
{
	bool pinned;
	c->pool = c->decode ? c->o->pool_factor * 2 * c->nblk_max : c->nblk_max;
	c->layer_stride = (uint64_t)c->pool * c->bb;
	uint64_t bytes = c->layer_stride * c->layers;
	c->free_blk = calloc(c->pool, sizeof(uint32_t));
	c->src = calloc((size_t)(c->decode ? FL_JOBS : 1) * c->nblk_max, sizeof(uint32_t));
	c->want = c->decode ? calloc((size_t)c->layers * c->nblk_max, sizeof(uint64_t)) : NULL;
	if (!c->free_blk || !c->src || (c->decode && !c->want))
		return child_fail(c, "block lists", KVW_ERR_NOMEM);
	kvw_status st = kvb_mem_get(c->ctx, bytes, c->o->no_pin, &c->mem, &pinned);
	if (st)
		return child_fail(c, "kvw_mem_alloc", st);
	c->base = kvw_mem_addr(c->mem);
	kvw_layout_desc d = {
		.n_layers = c->layers, .n_blocks = c->pool, .block_bytes = c->bb,
		.block_stride = c->bb, .layer_stride = c->layer_stride,
	};
	if ((st = kvw_layout_create(c->mem, &d, &c->layout)))
		return child_fail(c, "kvw_layout_create", st);
	return child_data(c) ? child_fail(c, "pattern buffer", KVW_ERR_NOMEM) : 0;
}

static int child_setup(fl_child *c, uint32_t max_tokens, const char *given)
{
	char uri[232];
	kvw_status st = kvb_ctx_open(c->o, 1, &c->ctx, c->err, sizeof(c->err));
	if (st)
		return -1;
	if (given)
		snprintf(uri, sizeof(uri), "%s", given);
	else if (!strcmp(c->o->driver, "shm"))
		snprintf(uri, sizeof(uri), "shm:///tmp/kvwire-fleet-%d-%c%u.sock", (int)getppid(),
			 c->decode ? 'd' : 'p', c->idx);
	else
		snprintf(uri, sizeof(uri), "tcp://127.0.0.1:0");
	if ((st = kvw_listen(c->ctx, uri, &c->l)))
		return child_fail(c, "kvw_listen", st);
	c->layers = c->o->layers;
	c->bb = kvb_kv_block_bytes(c->o);
	c->nblk_max = kvb_fleet_blocks(c->o, max_tokens);
	return child_mem(c);
}

static fl_job *job_new(fl_child *c)
{
	for (unsigned j = 0; j < FL_JOBS; j++)
		if (!c->jobs[j].used)
			return &c->jobs[j];
	return NULL;
}

/* Puts eps[peer] aside: never used again, closed at exit (its requests may
 * still be ending). */
static void ep_retire(fl_child *c, uint32_t peer)
{
	if (!c->eps[peer])
		return;
	if (c->n_gone < FL_GONE)
		c->gone[c->n_gone++] = c->eps[peer];
	else
		kvw_ep_close(c->eps[peer]);
	c->eps[peer] = NULL;
}

/* Prefill: a fresh endpoint when the decode is a newer incarnation than the
 * one eps[peer] reaches (its old endpoint failed with the old process). */
static kvw_status prefill_relink(fl_child *c, const kvb_fl_rec *r)
{
	if (c->eps[r->peer] && c->ep_gen[r->peer] >= (uint32_t)r->status)
		return KVW_OK;
	if (!c->peer_uri[r->peer][0])
		return KVW_ERR_NOT_FOUND;
	ep_retire(c, r->peer);
	kvw_status st = kvw_connect(c->ctx, c->peer_uri[r->peer], 10000, &c->eps[r->peer]);
	if (st)
		c->eps[r->peer] = NULL;
	else
		c->ep_gen[r->peer] = (uint32_t)r->status;
	return st;
}

static bool acc_waiting(const fl_child *c, uint32_t peer)
{
	for (unsigned i = 0; i < c->n_acc; i++)
		if (c->acc[i] == peer)
			return true;
	return false;
}

/* The endpoint for r: 0 *ep set, 1 not yet (decode: its accept is queued),
 * -1 failed (reported). */
static int job_ep(fl_child *c, const kvb_fl_rec *r, kvw_ep **ep)
{
	kvw_status st = r->peer < 64 ? KVW_OK : KVW_ERR_NOT_FOUND;
	if (!st && c->decode && !c->eps[r->peer] && acc_waiting(c, r->peer))
		return 1;
	if (!st && !c->decode)
		st = prefill_relink(c, r);
	if (!st && !c->eps[r->peer])
		st = KVW_ERR_NOT_FOUND;
	if (st) {
		rec_send(c, c->decode ? KVB_FL_LANDED : KVB_FL_SENT, st, r->peer, r->k);
		return -1;
	}
	*ep = c->eps[r->peer];
	return 0;
}

/* 0 posted, 1 not now (blocks, credit, accept), -1 failed (reported). */
static int job_post(fl_child *c, const kvb_fl_rec *r)
{
	fl_job *j = job_new(c);
	uint32_t n = kvb_fleet_blocks(c->o, r->tokens);
	kvw_ep *ep = NULL;
	kvw_status st;

	if (!j || (c->decode && c->n_free < n))
		return 1;
	int e = job_ep(c, r, &ep);
	if (e)
		return e;
	if (c->decode) {
		for (uint32_t i = 0; i < n; i++) {
			j->blocks[i] = c->free_blk[--c->n_free];
			for (uint32_t l = 0; l < c->layers; l++)
				fl_page(c, l, j->blocks[i])[0] ^= 0xff;
		}
		st = kvw_recv_seq(ep, r->k + 1, c->layout, j->blocks, n,
				  (uint64_t)c->o->timeout_ms * 1000, &j->req);
	} else {
		st = kvw_send_seq(ep, r->k + 1, c->layout, c->src, n, 0, c->layers, KVW_SEND_LAST, &j->req);
		if (!st)
			kvw_req_set_timeout(j->req, (uint64_t)c->o->timeout_ms * 1000);
	}
	if (st == KVW_ERR_NOMEM || st == KVW_ERR_BUSY) {
		if (c->decode)
			c->n_free += n;
		return 1;
	}
	if (st) {
		if (c->decode)
			c->n_free += n;
		rec_send(c, c->decode ? KVB_FL_LANDED : KVB_FL_SENT, st, r->peer, r->k);
		return -1;
	}
	j->used = true;
	j->k = r->k;
	j->nblk = n;
	j->peer = r->peer;
	kvw_req_set_user_data(j->req, j);
	return 0;
}

static bool job_verify(fl_child *c, const fl_job *j)
{
	for (uint32_t l = 0; l < c->layers; l++)
		for (uint32_t i = 0; i < j->nblk; i++)
			if (XXH3_64bits(fl_page(c, l, j->blocks[i]), c->bb) !=
			    c->want[(uint64_t)l * c->nblk_max + i])
				return false;
	return true;
}

static void job_done(fl_child *c, fl_job *j, kvw_status st)
{
	int32_t s = st;
	if (c->decode && !st && !job_verify(c, j))
		s = KVB_FL_VERIFY_BAD;
	rec_send(c, c->decode ? KVB_FL_LANDED : KVB_FL_SENT, s, j->peer, j->k);
	if (c->decode)
		for (uint32_t i = 0; i < j->nblk; i++)
			c->free_blk[c->n_free++] = j->blocks[i];
	kvw_req_free(j->req);
	j->req = NULL;
	j->used = false;
}

static int pend_push(fl_child *c, const kvb_fl_rec *r)
{
	if (c->n_pend == c->cap_pend) {
		size_t cap = c->cap_pend ? c->cap_pend * 2 : 64;
		kvb_fl_rec *p = realloc(c->pend, cap * sizeof(*p));
		if (!p)
			return -1;
		c->pend = p;
		c->cap_pend = cap;
	}
	c->pend[c->n_pend++] = *r;
	return 0;
}

/* Posts waiting requests in arrival order; stops at the first that must wait. */
static void pend_run(fl_child *c)
{
	size_t i = 0;
	while (i < c->n_pend && job_post(c, &c->pend[i]) != 1)
		i++;
	if (i) {
		memmove(c->pend, c->pend + i, (c->n_pend - i) * sizeof(*c->pend));
		c->n_pend -= i;
	}
}

/* CONNECT: connect now and answer; ACCEPT: queue it for child_accept. */
static void child_link(fl_child *c, const kvb_fl_rec *r)
{
	kvw_ep *ep = NULL;
	kvw_status st;
	if (r->peer >= 64) {
		rec_send(c, KVB_FL_LINKED, KVW_ERR_INVALID, r->peer, 0);
		return;
	}
	if (r->type == KVB_FL_ACCEPT) {
		if (!c->n_acc)
			c->acc_deadline = kvb_now_ns() + FL_ACCEPT_NS;
		c->acc[c->n_acc++] = r->peer;
		return;
	}
	snprintf(c->peer_uri[r->peer], sizeof(c->peer_uri[r->peer]), "%s", r->uri);
	st = kvw_connect(c->ctx, r->uri, 10000, &ep);
	ep_retire(c, r->peer);
	if (!st) {
		c->eps[r->peer] = ep;
		c->ep_gen[r->peer] = (uint32_t)r->status;
	}
	rec_send(c, KVB_FL_LINKED, st, r->peer, 0);
}

/* Decode: takes the next handshaken peer as the first queued prefill; answers
 * LINKED (TIMEDOUT when none came within 10 s). */
static void child_accept(fl_child *c)
{
	kvw_ep *ep = NULL;
	kvw_status st = kvw_accept(c->l, 0, &ep);
	if (st == KVW_INPROGRESS && kvb_now_ns() < c->acc_deadline)
		return;
	uint32_t peer = c->acc[0];
	if (st == KVW_INPROGRESS)
		st = KVW_ERR_TIMEDOUT;
	if (!st) {
		ep_retire(c, peer);
		c->eps[peer] = ep;
	}
	rec_send(c, KVB_FL_LINKED, st, peer, 0);
	memmove(c->acc, c->acc + 1, --c->n_acc * sizeof(c->acc[0]));
	c->acc_deadline = kvb_now_ns() + FL_ACCEPT_NS;
}

/* 1 on QUIT or a closed control socket. */
static int child_ctl(fl_child *c)
{
	kvb_fl_rec r;
	ssize_t n;
	while ((n = recv(c->fd, &r, sizeof(r), MSG_DONTWAIT)) == (ssize_t)sizeof(r)) {
		switch (r.type) {
		case KVB_FL_CONNECT: case KVB_FL_ACCEPT:
			child_link(c, &r);
			break;
		case KVB_FL_GRANT: case KVB_FL_SEND:
			if (c->n_pend || job_post(c, &r) == 1)
				pend_push(c, &r);
			break;
		case KVB_FL_QUIT:
			return 1;
		}
	}
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ? 1 : 0;
}

/* 1 on QUIT or a closed control socket, 2 when the tick said stop. */
static int child_loop(fl_child *c)
{
	kvw_event ev[64];
	struct pollfd pf[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = kvw_ctx_fd(c->ctx), .events = POLLIN}};
	for (;;) {
		poll(pf, 2, 1);
		if (child_ctl(c))
			return 1;
		if (c->tick && c->tick(c->tick_arg))
			return 2;
		if (c->n_acc)
			child_accept(c);
		int n = kvw_poll(c->ctx, ev, 64);
		for (int i = 0; i < n; i++)
			if (ev[i].type == KVW_EV_SEQ && ev[i].user_data)
				job_done(c, ev[i].user_data, ev[i].status);
		if (c->n_pend)
			pend_run(c);
	}
}

/* Ends one router's session: requests aborted (a decode's blocks back on its
 * free list), endpoints closed; the context, listener and memory stay. */
static void child_session_end(fl_child *c)
{
	kvw_event ev[64];
	for (unsigned j = 0; j < FL_JOBS; j++) {
		fl_job *jb = &c->jobs[j];
		if (!jb->used)
			continue;
		kvw_req_set_user_data(jb->req, NULL); /* its event, if one comes, is dropped */
		kvw_req_abort(jb->req);
		kvw_req_free(jb->req);
		jb->req = NULL;
		jb->used = false;
		if (c->decode)
			for (uint32_t i = 0; i < jb->nblk; i++)
				c->free_blk[c->n_free++] = jb->blocks[i];
	}
	for (unsigned i = 0; i < 64; i++)
		if (c->eps[i])
			kvw_ep_close(c->eps[i]);
	for (unsigned i = 0; i < c->n_gone; i++)
		kvw_ep_close(c->gone[i]);
	while (c->ctx && kvw_poll(c->ctx, ev, 64) > 0)
		;
	memset(c->eps, 0, sizeof(c->eps));
	memset(c->ep_gen, 0, sizeof(c->ep_gen));
	memset(c->peer_uri, 0, sizeof(c->peer_uri));
	c->n_gone = c->n_acc = 0;
	c->n_pend = 0;
}

static void child_free(fl_child *c)
{
	child_session_end(c);
	if (c->layout)
		kvw_layout_destroy(c->layout);
	if (c->mem)
		kvw_mem_dereg(c->mem);
	if (c->l)
		kvw_listener_close(c->l);
	if (c->ctx)
		kvw_ctx_destroy(c->ctx);
	free(c->free_blk);
	free(c->src);
	free(c->want);
	free(c->pend);
	free(c);
}

int kvb_fl_child_open(const kvb_opts *o, bool decode, unsigned idx, const char *name, uint32_t max_tokens,
		      const char *uri, kvb_fl_child **out, char *err, size_t len)
{
	fl_child *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, len, "out of memory for a %s process", decode ? "decode" : "prefill");
		return -1;
	}
	*c = (fl_child){.o = o, .decode = decode, .idx = idx, .fd = -1};
	if (name)
		snprintf(c->name, sizeof(c->name), "%s", name);
	else
		snprintf(c->name, sizeof(c->name), "%s %u", decode ? "decode" : "prefill", idx);
	if (child_setup(c, max_tokens, uri)) {
		snprintf(err, len, "%s", c->err);
		child_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

const char *kvb_fl_child_uri(const kvb_fl_child *c) { return kvw_listener_uri(c->l); }
uint32_t kvb_fl_child_blocks(const kvb_fl_child *c) { return c->pool; }

int kvb_fl_child_serve(kvb_fl_child *c, int fd, kvb_fl_tick tick, void *arg)
{
	c->fd = fd;
	c->tick = tick;
	c->tick_arg = arg;
	snprintf(c->err, sizeof(c->err), "%s", kvw_listener_uri(c->l));
	rec_send(c, KVB_FL_HELLO, 0, 0, 0);
	int rc = child_loop(c);
	child_session_end(c);
	c->fd = -1;
	return rc;
}

void kvb_fl_child_close(kvb_fl_child *c)
{
	if (c)
		child_free(c);
}

int kvb_fleet_child(const kvb_opts *o, bool decode, unsigned idx, int fd, uint32_t max_tokens,
		    const char *uri)
{
	kvb_fl_child *c;
	char err[232];
	if (kvb_fl_child_open(o, decode, idx, NULL, max_tokens, uri, &c, err, sizeof(err))) {
		kvb_fl_rec r = {.type = KVB_FL_FAILED, .status = KVW_ERR_IO, .t_ns = kvb_now_ns()};
		snprintf(r.uri, sizeof(r.uri), "%s", err);
		(void)!send(fd, &r, sizeof(r), MSG_NOSIGNAL);
		close(fd);
		return 1;
	}
	kvb_fl_child_serve(c, fd, NULL, NULL);
	kvb_fl_child_close(c);
	close(fd);
	return 0;
}
