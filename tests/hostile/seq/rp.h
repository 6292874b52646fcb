/* SPDX-License-Identifier: MIT */
/* A raw wire peer attached to one victim context, for the sequence cases
 * of the hostile suite: it writes frames without ever blocking the victim
 * (the victim runs in this process) and reads back whatever the victim
 * answers, counting the ABORTs by sequence and status. */
#ifndef HOSTILE_SEQ_RP_H
#define HOSTILE_SEQ_RP_H

#include "kvwire/kvwire.h"
#include "wire.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RP_SEQS 4096u           /* sequence ids the peer keeps a record of */

struct rp {
	kvw_ctx *ctx;
	kvw_listener *l;
	kvw_ep *ep;             /* the victim's endpoint of this peer */
	int fd;
	uint32_t srv_id;
	bool shm;               /* DESC through a shared arena, else DATA */
	uint8_t *arena;         /* shm: the peer's shared arena (mapped here) */
	uint64_t arena_used;
	uint8_t *rx;
	size_t rx_len;
	uint32_t n_abort, n_abort_busy, n_abort_timedout;
	int32_t abort_status[RP_SEQS]; /* 0: no ABORT for this seq id (yet) */
	uint32_t n_layer_done, n_seq_done;
	struct kvw_wire_ping ping; /* the victim's last PING, to answer */
	bool ping_due;
};

/* A context with cfg (name, value, ..., NULL), a listener, the raw peer
 * connected, through the handshake and accepted. */
void rp_open(struct rp *p, const char *const *cfg);
void rp_close(struct rp *p);
/* Writes one frame, driving the victim and reading its answers meanwhile. */
void rp_frame(struct rp *p, unsigned type, const void *body, size_t len);
/* Reads whatever the victim sent so far (no wait). */
void rp_drain(struct rp *p);
/* Drives the victim (and reads its answers) for ms, or until pred holds. */
bool rp_drive(struct rp *p, int ms, bool (*pred)(struct rp *p, void *arg), void *arg);
/* A GRANT of n_layers x n_blocks (block i = i) asking for timeout_us. */
void rp_grant(struct rp *p, uint64_t seq_id, uint32_t token, uint32_t n_layers, uint32_t n_blocks,
	      uint64_t block_bytes, uint64_t timeout_us);
/* One fragment for the victim's grant: DATA (tcp) or DESC over the shared
 * arena (shm); its payload is bytes of payload. */
void rp_frag(struct rp *p, uint32_t token, uint32_t layer, uint32_t idx, uint64_t off,
	     const void *payload, uint32_t bytes);
/* Resets this process's peak resident set; returns the resident set, KiB. */
long rp_rss_mark(void);
/* Peak resident set since the last mark, KiB. */
long rp_rss_peak_kib(void);

#endif
