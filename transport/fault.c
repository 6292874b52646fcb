/* SPDX-License-Identifier: MIT */
/* Seeded fault injection for packet drivers (see fault.h). */
#include "fault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KVW_FAULT_HOLD_CAP 4096u

struct kvw_fault_held {
	void *frame;
	uint64_t due_ns;
};

struct kvw_fault {
	struct kvw_fault_spec spec;
	uint64_t rng;
	struct kvw_fault_stats st;
	struct kvw_fault_held *held;  /* unordered; n_held entries */
	size_t n_held;
};

static uint64_t kvw_fault_next(struct kvw_fault *f)
{
	/* xorshift64* */
	uint64_t x = f->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	f->rng = x;
	return x * 0x2545F4914F6CDD1Dull;
}

double kvw_fault_rand(struct kvw_fault *f)
{
	return (double)(kvw_fault_next(f) >> 11) * (1.0 / 9007199254740992.0);
}

static kvw_status kvw_fault_time(const char *v, uint64_t *ns)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || x < 0 || x > 60e9)
		return KVW_ERR_INVALID;
	double mul = 1000.0; /* bare numbers are microseconds */
	if (!strcmp(end, "ns"))
		mul = 1.0;
	else if (!strcmp(end, "us") || !*end)
		mul = 1000.0;
	else if (!strcmp(end, "ms"))
		mul = 1e6;
	else if (!strcmp(end, "s"))
		mul = 1e9;
	else
		return KVW_ERR_INVALID;
	*ns = (uint64_t)(x * mul);
	return KVW_OK;
}

static kvw_status kvw_fault_rate(const char *v, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || *end || !(x >= 0.0 && x <= 1.0))
		return KVW_ERR_INVALID;
	*out = x;
	return KVW_OK;
}

static kvw_status kvw_fault_kv(struct kvw_fault_spec *s, const char *k, const char *v)
{
	if (!strcmp(k, "drop"))
		return kvw_fault_rate(v, &s->drop);
	if (!strcmp(k, "dup"))
		return kvw_fault_rate(v, &s->dup);
	if (!strcmp(k, "reorder"))
		return kvw_fault_rate(v, &s->reorder);
	if (!strcmp(k, "corrupt"))
		return kvw_fault_rate(v, &s->corrupt);
	if (!strcmp(k, "delay_rate"))
		return kvw_fault_rate(v, &s->delay_rate);
	if (!strcmp(k, "delay"))
		return kvw_fault_time(v, &s->delay_ns);
	if (!strcmp(k, "reorder_delay"))
		return kvw_fault_time(v, &s->reorder_ns);
	if (!strcmp(k, "rto"))
		return kvw_fault_time(v, &s->rto_ns);
	if (!strcmp(k, "seed")) {
		char *end;
		errno = 0;
		s->seed = strtoull(v, &end, 0);
		return (errno || end == v || *end) ? KVW_ERR_INVALID : KVW_OK;
	}
	return KVW_ERR_NOT_FOUND;
}

kvw_status kvw_fault_parse(const char *spec, struct kvw_fault_spec *out, char *err, size_t errlen)
{
	struct kvw_fault_spec s = { .delay_rate = 1.0, .reorder_ns = 50000, .rto_ns = 1000000, .seed = 1 };
	char buf[256];

	if (!spec)
		spec = "";
	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errlen, "fault spec longer than %zu characters", sizeof(buf) - 1);
		return KVW_ERR_INVALID;
	}
	strcpy(buf, spec);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			snprintf(err, errlen, "fault spec item \"%s\" is not key=value "
				 "(e.g. drop=0.05,dup=0.01,reorder=0.02,delay=200us,corrupt=0.001,seed=7)", tok);
			return KVW_ERR_INVALID;
		}
		*eq = 0;
		kvw_status st = kvw_fault_kv(&s, tok, eq + 1);
		if (st == KVW_ERR_NOT_FOUND) {
			snprintf(err, errlen, "fault spec: unknown key \"%s\" (drop, dup, reorder, delay, "
				 "delay_rate, reorder_delay, corrupt, rto, seed)", tok);
			return KVW_ERR_INVALID;
		}
		if (st != KVW_OK) {
			snprintf(err, errlen, "fault spec: bad value \"%s\" for %s (rates are 0..1, "
				 "times like 200us, 1ms)", eq + 1, tok);
			return KVW_ERR_INVALID;
		}
	}
	*out = s;
	return KVW_OK;
}

kvw_status kvw_fault_create_salted(const char *spec, uint64_t salt, struct kvw_fault **out,
				   char *err, size_t errlen)
{
	struct kvw_fault_spec s;
	kvw_status st;

	if (!spec || !*spec) {
		*out = NULL;
		return KVW_OK;
	}
	st = kvw_fault_parse(spec, &s, err, errlen);
	if (st != KVW_OK)
		return st;
	struct kvw_fault *f = calloc(1, sizeof(*f));
	if (!f || !(f->held = calloc(KVW_FAULT_HOLD_CAP, sizeof(*f->held)))) {
		free(f);
		snprintf(err, errlen, "out of memory for the fault injector");
		return KVW_ERR_NOMEM;
	}
	f->spec = s;
	/* splitmix64 of (seed, salt): distinct seeds give distinct streams */
	uint64_t z = s.seed + 0x9E3779B97F4A7C15ull * (salt + 1);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z ^= z >> 31;
	f->rng = z ? z : 1;
	*out = f;
	return KVW_OK;
}

kvw_status kvw_fault_create(const char *spec, struct kvw_fault **out, char *err, size_t errlen)
{
	return kvw_fault_create_salted(spec, 0, out, err, errlen);
}

void kvw_fault_destroy(struct kvw_fault *f)
{
	if (!f)
		return;
	free(f->held);
	free(f);
}

const struct kvw_fault_spec *kvw_fault_get_spec(const struct kvw_fault *f)
{
	return &f->spec;
}

void kvw_fault_decide(struct kvw_fault *f, size_t frame_len, size_t corrupt_min,
		      struct kvw_fault_action *a)
{
	const struct kvw_fault_spec *s = &f->spec;

	memset(a, 0, sizeof(*a));
	a->copies = 1;
	f->st.frames++;
	if (s->drop > 0 && kvw_fault_rand(f) < s->drop) {
		a->copies = 0;
		f->st.dropped++;
		return;
	}
	if (s->dup > 0 && kvw_fault_rand(f) < s->dup) {
		a->copies = 2;
		f->st.duplicated++;
	}
	if (s->corrupt > 0 && frame_len > corrupt_min && kvw_fault_rand(f) < s->corrupt) {
		a->corrupt = true;
		a->corrupt_off = corrupt_min + (size_t)(kvw_fault_next(f) % (frame_len - corrupt_min));
		a->corrupt_bit = (uint8_t)(kvw_fault_next(f) & 7);
		f->st.corrupted++;
	}
	if (s->reorder > 0 && kvw_fault_rand(f) < s->reorder) {
		a->hold_ns = s->reorder_ns;
		f->st.reordered++;
	} else if (s->delay_ns > 0 && (s->delay_rate >= 1.0 || kvw_fault_rand(f) < s->delay_rate)) {
		a->hold_ns = s->delay_ns;
		f->st.delayed++;
	}
}

bool kvw_fault_hold(struct kvw_fault *f, void *frame, uint64_t now_ns, uint64_t hold_ns)
{
	if (f->n_held >= KVW_FAULT_HOLD_CAP)
		return false;
	f->held[f->n_held].frame = frame;
	f->held[f->n_held].due_ns = now_ns + hold_ns;
	f->n_held++;
	return true;
}

/* Earliest due entry first, so delayed frames keep their order. */
static void *kvw_fault_take(struct kvw_fault *f, uint64_t now_ns, bool any)
{
	size_t best = SIZE_MAX;

	for (size_t i = 0; i < f->n_held; i++)
		if ((any || f->held[i].due_ns <= now_ns) &&
		    (best == SIZE_MAX || f->held[i].due_ns < f->held[best].due_ns))
			best = i;
	if (best == SIZE_MAX)
		return NULL;
	void *fr = f->held[best].frame;
	memmove(&f->held[best], &f->held[best + 1], (f->n_held - best - 1) * sizeof(*f->held));
	f->n_held--;
	return fr;
}

void *kvw_fault_due(struct kvw_fault *f, uint64_t now_ns)
{
	if (!f->n_held)
		return NULL;
	return kvw_fault_take(f, now_ns, false);
}

void *kvw_fault_drain(struct kvw_fault *f)
{
	return kvw_fault_take(f, 0, true);
}

size_t kvw_fault_held(const struct kvw_fault *f)
{
	return f->n_held;
}

void kvw_fault_get_stats(const struct kvw_fault *f, struct kvw_fault_stats *out)
{
	*out = f->st;
}

uint64_t kvw_fault_reliable(struct kvw_fault *f, size_t len, kvw_counters *c)
{
	struct kvw_fault_action a;
	uint64_t reordered = f->st.reordered, hold;

	kvw_fault_decide(f, len, 0, &a);
	hold = a.hold_ns;
	if (a.copies == 0 || a.corrupt) { /* lost, or failed the transport's checksum */
		c->drops++;
		c->retransmits++;
		hold += f->spec.rto_ns;
	}
	if (a.copies == 2)
		c->dups++; /* discarded by the transport below */
	if (f->st.reordered > reordered)
		c->out_of_order++; /* other rails overtake it */
	return hold;
}
