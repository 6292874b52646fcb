/* SPDX-License-Identifier: MIT */
/* A raw same-host peer against the shm driver (issue 10, findings 1 and 2):
 * it passes the victim whatever fd it likes with MEM frames and names
 * bytes in it with DESC frames. The victim runs in this process; the
 * peer never blocks it (its writes drive the victim while the socket is
 * full). */
#ifndef HOSTILE_SHM_HS_H
#define HOSTILE_SHM_HS_H

#include "kvwire/kvwire.h"
#include "kvwt.h"
#include "wire.h"
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HS_BB 8192u      /* the victim grants 4 blocks of 8 KiB in each of 2 layers */
#define HS_STRIDE 12288u /* with 4 KiB canary gaps between blocks */
#define HS_SEQ 4242u

struct hs {
	kvw_ctx *ctx;
	kvw_listener *l;
	kvw_ep *ep;             /* the victim's endpoint of the raw peer */
	int fd;                 /* the raw peer's socket */
	uint32_t srv_id;
	struct kvwt_pool dst;   /* the victim's pool */
	uint32_t blk[4];
	kvw_req *rreq;
	struct kvwt_rec rrec;
	uint32_t token;         /* of the victim's GRANT */
	uint8_t *snap;          /* the victim's pool before the attack */
	size_t dlen;
};

/* Victim context (cfg: name, value, ..., NULL) listening on shm; a raw peer
 * connected, through the handshake, accepted; a 2-layer x 4-block grant
 * the peer has received. */
void hs_open(struct hs *h, const char *const *cfg);
/* hs_open in two steps: the victim context and listener; then the peer. */
void hs_listen(struct hs *h, const char *const *cfg);
void hs_join(struct hs *h);
void hs_close(struct hs *h);
/* A memfd named name of size bytes, the first fill_len bytes set to fill,
 * then sealed with seals (0: none; MFD_ALLOW_SEALING only when seals). */
int hs_memfd(const char *name, uint64_t size, unsigned seals, uint8_t fill, uint64_t fill_len);
/* fd reopened read-only (as a kvwire sender passes its arena). */
int hs_ro(int fd);
/* The seals a kvwire sender puts on its arenas. */
#define HS_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)
/* MEM announcing arena mem_id of len bytes with pass_fd attached (-1: none). */
void hs_mem(struct hs *h, uint32_t mem_id, uint64_t len, int pass_fd);
/* DESC for the victim's grant: layer, index into its block list, offset,
 * bytes, from src_off of arena mem_id. */
void hs_desc(struct hs *h, uint32_t layer, uint32_t idx, uint64_t off, uint32_t bytes,
	     uint64_t src_off, uint32_t mem_id);
/* DESCV (wire 1.3): the same, gathered from bytes / piece pieces, piece i
 * at src_off + i * stride. */
void hs_descv(struct hs *h, uint32_t layer, uint32_t idx, uint64_t off, uint32_t bytes,
	      uint64_t src_off, uint32_t piece, uint64_t stride, uint32_t mem_id);
/* DESCs covering the whole grant from src_off on (block by block). */
void hs_desc_all(struct hs *h, uint64_t src_off, uint32_t mem_id);
/* Drives the victim for ms (reading what it sends the peer). */
void hs_drive(struct hs *h, int ms);
/* The grant's request ends REJECTED within 5 s, not one byte of the pool
 * changed, the victim's endpoint is still up, and the sentence in
 * kvw_ctx_last_error holds every word of words (NULL-terminated). */
void hs_expect_rejected(struct hs *h, const char *const *words);
/* The grant's request completes OK within 5 s; returns the pool byte at
 * the start of (layer 0, block blk[0]). */
uint8_t hs_expect_ok(struct hs *h);
/* This process's resident shared memory (RssShmem), KiB. */
long hs_shmem_kib(void);
/* Is a memfd called name mapped in this process? */
bool hs_mapped(const char *name);

#endif
