/* SPDX-License-Identifier: MIT */
/* Data flows: the engine under bw and kv. Request k uses slot k % n_slots;
 * the sender stamps every page of a request with (seed, k, page) before the
 * first send, the receiver checks those stamps when the request lands and
 * hashes every page's bytes against the seeded pattern at the end. */
#include "flow.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int kvb_flow_init(kvb_flow *f, unsigned n_slots)
{
	f->n_slots = n_slots;
	f->slot = calloc(n_slots, sizeof(*f->slot));
	if (!f->slot)
		return -1;
	for (unsigned i = 0; i < n_slots; i++) {
		f->slot[i].flow = f;
		f->slot[i].idx = i;
		f->slot[i].last_k = -1;
	}
	f->rng = f->seed ^ 0x9e3779b97f4a7c15ull;
	return 0;
}

void kvb_flow_free(kvb_flow *f)
{
	for (unsigned i = 0; f->slot && i < f->n_slots; i++)
		if (f->slot[i].req) {
			kvw_req_abort(f->slot[i].req);
			kvw_req_free(f->slot[i].req);
		}
	free(f->slot);
	f->slot = NULL;
	kvb_samples_free(&f->lat_us);
	kvb_samples_free(&f->ttll_us);
}

uint8_t *kvb_flow_page(const kvb_flow *f, uint32_t layer, uint32_t block)
{
	return f->base + (uint64_t)layer * f->layer_stride + (uint64_t)block * f->block_bytes;
}

/* Page identity: the pattern depends on (layer, position in the slot's list). */
static uint64_t page_id(const kvb_flow *f, uint32_t layer, unsigned slot, uint32_t i)
{
	return ((uint64_t)layer << 32) | ((uint64_t)slot * f->nblk + i);
}

void kvb_flow_fill(kvb_flow *f)
{
	if (f->geo) {
		for (unsigned s = 0; s < f->n_slots; s++)
			kvb_geo_fill(f->geo, f->base, &f->blocks[s * f->nblk], f->tokens, f->seed, s);
		return;
	}
	for (uint32_t l = 0; l < f->n_layers; l++)
		for (unsigned s = 0; s < f->n_slots; s++)
			for (uint32_t i = 0; i < f->nblk; i++)
				kvb_pattern_fill(kvb_flow_page(f, l, f->blocks[s * f->nblk + i]),
						 f->block_bytes, f->seed, l, (uint64_t)s * f->nblk + i);
}

static void flow_fail(kvb_flow *f, const char *what, kvw_status st)
{
	if (f->failed)
		return;
	f->failed = true;
	snprintf(f->err, sizeof(f->err), "%s: %s", what, kvw_strerror(st));
}

static uint8_t *geo_stamp(const kvb_flow *f, const kvb_slot *s, uint32_t l)
{
	return kvb_geo_stamp_at(f->geo, f->base, &f->blocks[s->idx * f->nblk], f->tokens, l, f->vh0);
}

static void stamp_pages(kvb_flow *f, kvb_slot *s)
{
	if (f->geo) {
		for (uint32_t l = 0; kvb_has_stamp(f->geo->unit) && l < f->n_layers; l++) {
			uint64_t st = kvb_stamp(f->seed, s->k, ((uint64_t)l << 32) | s->idx);
			memcpy(geo_stamp(f, s, l), &st, 8);
		}
		return;
	}
	if (!kvb_has_stamp(f->block_bytes))
		return;
	for (uint32_t l = 0; l < f->n_layers; l++)
		for (uint32_t i = 0; i < f->nblk; i++) {
			uint64_t st = kvb_stamp(f->seed, s->k, page_id(f, l, s->idx, i));
			memcpy(kvb_flow_page(f, l, f->blocks[s->idx * f->nblk + i]), &st, 8);
		}
}

static bool check_stamps(kvb_flow *f, kvb_slot *s)
{
	if (f->geo) {
		for (uint32_t l = 0; kvb_has_stamp(f->geo->unit) && l < f->n_layers; l++) {
			uint64_t want = kvb_stamp(f->seed, s->k, ((uint64_t)l << 32) | s->idx), got;
			memcpy(&got, geo_stamp(f, s, l), 8);
			if (got != want)
				return false;
		}
		return true;
	}
	if (!kvb_has_stamp(f->block_bytes))
		return true;
	for (uint32_t l = 0; l < f->n_layers; l++)
		for (uint32_t i = 0; i < f->nblk; i++) {
			uint64_t want = kvb_stamp(f->seed, s->k, page_id(f, l, s->idx, i)), got;
			memcpy(&got, kvb_flow_page(f, l, f->blocks[s->idx * f->nblk + i]), 8);
			if (got != want)
				return false;
		}
	return true;
}

/* ------------------------------------------------------------------ sender */
static void sender_start(kvb_flow *f, kvb_slot *s, uint64_t arrival, uint64_t now)
{
	s->busy = true;
	s->k = f->next_k++;
	s->t_arrival = arrival;
	s->t_start = now;
	s->next_layer = 0;
	s->req = NULL;
	stamp_pages(f, s);
	if (f->corrupt_once && f->geo) {
		/* the first token's K of the first shared head, its last byte */
		f->base[kvb_geo_off(&f->geo->g, &f->blocks[s->idx * f->nblk], 0, 0, 0, f->vh0) +
			f->geo->unit - 1] ^= 0x10;
		f->corrupt_once = false;
	}
	if (f->corrupt_once) {
		uint8_t *pg = kvb_flow_page(f, 0, f->blocks[s->idx * f->nblk]);
		pg[f->block_bytes - 1] ^= 0x10; /* past the stamp: only the hash can see it */
		f->corrupt_once = false;
	}
	f->active++;
	if (!f->t_first)
		f->t_first = now;
}

static double exp_sample(kvb_flow *f)
{
	f->rng = f->rng * 6364136223846793005ull + 1442695040888963407ull;
	double u = ((double)(f->rng >> 11) + 0.5) / 9007199254740992.0;
	return -log(u);
}

static void sender_admit(kvb_flow *f, uint64_t now)
{
	switch (f->arrival) {
	case KVB_ARR_SATURATE:
		while (f->next_k < f->limit && !f->slot[f->next_k % f->n_slots].busy)
			sender_start(f, &f->slot[f->next_k % f->n_slots], now, now);
		break;
	case KVB_ARR_BATCH:
		if (f->active)
			break;
		for (unsigned i = 0; i < f->n_slots && f->next_k < f->limit; i++)
			sender_start(f, &f->slot[f->next_k % f->n_slots], now, now);
		break;
	case KVB_ARR_POISSON:
		if (!f->next_arrival)
			f->next_arrival = now;
		while (f->next_k < f->limit && f->next_arrival <= now &&
		       !f->slot[f->next_k % f->n_slots].busy) {
			sender_start(f, &f->slot[f->next_k % f->n_slots], f->next_arrival, now);
			f->next_arrival += (uint64_t)(exp_sample(f) / f->rate * 1e9);
		}
		break;
	}
}

/* Sends the layers of slot s that are due; 0, or -1 on failure. */
static int sender_layers(kvb_flow *f, kvb_slot *s, uint64_t now)
{
	while (s->next_layer < f->n_layers) {
		uint32_t l = s->next_layer;
		if (f->layer_interval_ns && now < s->t_start + l * f->layer_interval_ns)
			return 0;
		kvw_req *req = NULL;
		unsigned flags = l + 1 == f->n_layers ? KVW_SEND_LAST : 0;
		kvw_seq_range rg = {.size = sizeof(rg), .t1 = f->tokens};
		kvw_status st = f->geo ?
			kvw_send_seq_range(f->ep, f->id_base + s->k, f->layout, &f->blocks[s->idx * f->nblk],
					   f->nblk, &rg, l, l + 1, flags, &req) :
			kvw_send_seq(f->ep, f->id_base + s->k, f->layout,
				     &f->blocks[s->idx * f->nblk], f->nblk, l, l + 1, flags, &req);
		if (st == KVW_ERR_NOMEM || st == KVW_ERR_BUSY)
			return 0; /* pools full: retry after progress */
		if (st < 0) {
			flow_fail(f, "kvw_send_seq", st);
			return -1;
		}
		if (!s->req) {
			s->req = req;
			kvw_req_set_user_data(req, s);
		}
		s->next_layer++;
		if (s->next_layer == f->n_layers)
			s->t_last_layer = kvb_now_ns();
	}
	return 0;
}

/* ---------------------------------------------------------------- receiver */
static int receiver_grant(kvb_flow *f)
{
	while (f->next_k < f->limit && !f->slot[f->next_k % f->n_slots].busy) {
		kvb_slot *s = &f->slot[f->next_k % f->n_slots];
		kvw_req *req;
		kvw_seq_range rg = {.size = sizeof(rg), .h0 = f->vh0, .h1 = f->vh1, .t1 = f->tokens};
		kvw_status st = f->geo ?
			kvw_recv_seq_range(f->ep, f->id_base + f->next_k, f->layout,
					   &f->blocks[s->idx * f->nblk], f->nblk, &rg, f->timeout_us, &req) :
			kvw_recv_seq(f->ep, f->id_base + f->next_k, f->layout,
				     &f->blocks[s->idx * f->nblk], f->nblk, f->timeout_us, &req);
		if (st == KVW_ERR_NOMEM || st == KVW_ERR_BUSY)
			return 0;
		if (st < 0) {
			flow_fail(f, "kvw_recv_seq", st);
			return -1;
		}
		s->busy = true;
		s->k = f->next_k++;
		s->req = req;
		s->t_arrival = kvb_now_ns();
		kvw_req_set_user_data(req, s);
		f->active++;
	}
	return 0;
}

int kvb_flow_step(kvb_flow *f, uint64_t now)
{
	if (f->failed)
		return -1;
	if (!f->is_send)
		return receiver_grant(f);
	sender_admit(f, now);
	for (unsigned i = 0; i < f->n_slots; i++) {
		kvb_slot *s = &f->slot[i];
		if (s->busy && s->next_layer < f->n_layers && sender_layers(f, s, now))
			return -1;
	}
	return 0;
}

static void slot_done(kvb_flow *f, kvb_slot *s, kvw_status st, uint64_t now)
{
	if (st != KVW_OK) {
		char what[64];
		snprintf(what, sizeof(what), "request %llu finished", (unsigned long long)s->k);
		flow_fail(f, what, st);
	} else {
		f->done++;
		f->bytes += f->geo ? f->seq_bytes : (uint64_t)f->n_layers * f->nblk * f->block_bytes;
		f->t_last = now;
		if (f->is_send) {
			kvb_samples_add(&f->lat_us, (double)(now - s->t_arrival) / 1e3);
			kvb_samples_add(&f->ttll_us, (double)(now - s->t_last_layer) / 1e3);
		} else {
			if (!f->t_first)
				f->t_first = s->t_arrival;
			if (!check_stamps(f, s))
				f->stamp_bad++;
			s->last_k = (int64_t)s->k;
		}
	}
	kvw_req_free(s->req);
	s->req = NULL;
	s->busy = false;
	f->active--;
}

void kvb_flow_event(const kvw_event *ev)
{
	kvb_slot *s = ev->user_data;
	if (!s)
		return;
	if (ev->type == KVW_EV_LAYER) {
		s->flow->layer_events++;
		return;
	}
	if (ev->type == KVW_EV_SEQ && s->busy && ev->req == s->req)
		slot_done(s->flow, s, ev->status, kvb_now_ns());
}

bool kvb_flow_finished(const kvb_flow *f)
{
	if (f->failed)
		return true;
	if (f->is_send)
		return f->limit != UINT64_MAX && f->next_k >= f->limit && !f->active;
	return f->limit != UINT64_MAX && f->done >= f->limit;
}

void kvb_flow_cancel_rest(kvb_flow *f)
{
	for (unsigned i = 0; i < f->n_slots; i++) {
		kvb_slot *s = &f->slot[i];
		if (!s->busy || !s->req)
			continue;
		kvw_req_abort(s->req);
		kvw_req_free(s->req);
		s->req = NULL;
		s->busy = false;
		f->active--;
	}
}

/* Every byte of the heads both sides hold, by logical coordinate. */
static bool flow_verify_geo(kvb_flow *f, char *note, size_t len)
{
	uint8_t *scratch = malloc(f->geo->unit);
	uint64_t bad = 0, units = 0;
	char first[96] = "";

	if (!scratch) {
		snprintf(note, len, "no memory for the verify buffer");
		return false;
	}
	for (unsigned s = 0; s < f->n_slots; s++) {
		if (f->slot[s].last_k < 0)
			continue;
		bad += kvb_geo_check(f->geo, f->base, &f->blocks[s * f->nblk], f->tokens, f->seed, s,
				     f->vh0, f->vh1, scratch, bad ? NULL : first, bad ? 0 : sizeof(first));
		units += (uint64_t)f->n_layers * f->geo->g.n_kv * f->tokens * (f->vh1 - f->vh0);
	}
	free(scratch);
	if (f->stamp_bad || bad || f->failed || (f->limit && !units)) {
		snprintf(note, len, "%llu of %llu units (layer, kv, token, head) differ%s%s, %llu requests "
			 "with stale stamps%s%s", (unsigned long long)bad, (unsigned long long)units,
			 bad ? ", " : "", first, (unsigned long long)f->stamp_bad, f->failed ? "; " : "",
			 f->failed ? f->err : "");
		return false;
	}
	snprintf(note, len, "%llu units checked by coordinate, %llu requests stamp-checked",
		 (unsigned long long)units, (unsigned long long)f->done);
	return true;
}

bool kvb_flow_verify(kvb_flow *f, char *note, size_t len)
{
	if (f->geo)
		return flow_verify_geo(f, note, len);
	uint8_t *scratch = malloc(f->block_bytes);
	uint64_t bad = 0, pages = 0;

	if (!scratch) {
		snprintf(note, len, "no memory for the verify buffer");
		return false;
	}
	for (unsigned s = 0; s < f->n_slots; s++) {
		if (f->slot[s].last_k < 0)
			continue;
		for (uint32_t l = 0; l < f->n_layers; l++)
			for (uint32_t i = 0; i < f->nblk; i++) {
				const uint8_t *pg = kvb_flow_page(f, l, f->blocks[s * f->nblk + i]);
				uint64_t want = kvb_pattern_hash(f->block_bytes, f->seed, l,
								 (uint64_t)s * f->nblk + i, scratch);
				pages++;
				if (kvb_page_hash(pg, f->block_bytes) != want)
					bad++;
			}
	}
	free(scratch);
	if (f->stamp_bad || bad || f->failed || (f->limit && !pages)) {
		snprintf(note, len, "%llu of %llu pages differ, %llu requests with stale stamps%s%s",
			 (unsigned long long)bad, (unsigned long long)pages,
			 (unsigned long long)f->stamp_bad, f->failed ? "; " : "", f->failed ? f->err : "");
		return false;
	}
	snprintf(note, len, "%llu pages hashed, %llu requests stamp-checked", (unsigned long long)pages,
		 (unsigned long long)f->done);
	return true;
}
