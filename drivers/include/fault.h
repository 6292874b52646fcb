/* SPDX-License-Identifier: MIT */
/* Fault injection: seeded drop / duplicate / reorder / delay / corrupt of
 * frames, by rate. Spec string (config `fault`, bench --fault):
 * "drop=0.05,dup=0.01,reorder=0.02,delay=200us,corrupt=0.001,rto=1ms,seed=7".
 *
 * Where it acts, per driver:
 *  - packet drivers (dpdk): on the wire frames themselves, below kvwire's own
 *    reliability (dk_rel.c), which must recover every loss.
 *  - stream drivers (tcp rails, shm's control socket; stream.c) and rdma
 *    (per RC rail, rdma_data.c rd_fault_gate): below the reliable transport,
 *    as a lossy link under TCP / RC looks from above: a dropped or corrupted
 *    frame (rdma: message or write batch) is resent by the transport `rto`
 *    later and everything later on its rail waits behind it (head-of-line
 *    blocking); a duplicate is discarded by the transport (counted); delay
 *    and reorder hold it and its rail, so other rails overtake it.
 *
 * Frame-level API for packet drivers:
 *   kvw_fault_decide() says what happens to one outgoing frame;
 *   frames to delay or reorder go into the fault's hold queue with
 *   kvw_fault_hold() and come back from kvw_fault_due() when their time
 *   has come. The queue stores opaque pointers (mbufs, buffers); the driver
 *   owns them and frees what kvw_fault_drain() hands back on close.
 * Every decision comes from one xorshift generator seeded by `seed` (and
 * the salt given at creation), so a run is reproducible. */
#ifndef KVW_FAULT_H
#define KVW_FAULT_H
#include "driver.h"

struct kvw_fault;

struct kvw_fault_spec {
	double drop, dup, reorder, corrupt, delay_rate;
	uint64_t delay_ns;      /* delay=200us: held this long (rate: delay_rate, default 1) */
	uint64_t reorder_ns;    /* how long a reordered frame is held (default 50us) */
	uint64_t rto_ns;        /* streams: a lost frame's resend delay (default 1ms) */
	uint64_t seed;
};

struct kvw_fault_stats {
	uint64_t frames, dropped, duplicated, reordered, delayed, corrupted;
};

/* What happens to one frame. copies: 0 = drop, 1 = send, 2 = send twice.
 * hold_ns > 0: hold it that long before sending (delay or reorder).
 * corrupt: flip bit corrupt_bit of byte corrupt_off (< the frame length). */
struct kvw_fault_action {
	unsigned copies;
	uint64_t hold_ns;
	bool corrupt;
	size_t corrupt_off;
	uint8_t corrupt_bit;
};

/* Parses spec; *out NULL when spec is empty. */
kvw_status kvw_fault_create(const char *spec, struct kvw_fault **out, char *err, size_t errlen);
/* Same, with a salt mixed into the seed (one fault per endpoint). */
kvw_status kvw_fault_create_salted(const char *spec, uint64_t salt, struct kvw_fault **out,
				   char *err, size_t errlen);
/* Parses only (no allocation); for checking a spec up front. */
kvw_status kvw_fault_parse(const char *spec, struct kvw_fault_spec *out, char *err, size_t errlen);
void kvw_fault_destroy(struct kvw_fault *f);
const struct kvw_fault_spec *kvw_fault_get_spec(const struct kvw_fault *f);

/* Decides the fate of one frame of frame_len bytes. corrupt_min is the
 * first byte that may be corrupted (e.g. past a header the driver cannot
 * rewrite); corruption is skipped when frame_len <= corrupt_min. */
void kvw_fault_decide(struct kvw_fault *f, size_t frame_len, size_t corrupt_min,
		      struct kvw_fault_action *a);
/* Holds frame until now_ns + hold_ns. false when the queue is full (the
 * caller then sends or drops the frame itself). */
bool kvw_fault_hold(struct kvw_fault *f, void *frame, uint64_t now_ns, uint64_t hold_ns);
/* Next held frame whose time has come, or NULL. */
void *kvw_fault_due(struct kvw_fault *f, uint64_t now_ns);
/* Next held frame regardless of time (close, cancel), or NULL. */
void *kvw_fault_drain(struct kvw_fault *f);
size_t kvw_fault_held(const struct kvw_fault *f);
void kvw_fault_get_stats(const struct kvw_fault *f, struct kvw_fault_stats *out);
/* Drivers over a reliable transport (stream.c, rdma): the fate of one unit
 * of len bytes as seen above that transport, counted in c (drops,
 * retransmits, dups, out_of_order). Returns how long the unit, and its rail
 * behind it, is held (0: it goes now): rto for a loss or a corruption,
 * the delay or reorder hold otherwise. */
uint64_t kvw_fault_reliable(struct kvw_fault *f, size_t len, kvw_counters *c);
/* A uniform random number in [0, 1) from the fault's generator. */
double kvw_fault_rand(struct kvw_fault *f);

#endif
