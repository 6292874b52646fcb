/* SPDX-License-Identifier: MIT */
/*
 * kvwire wire format, version 1 (see docs/wire.md).
 *
 * Every frame: a 24-byte header, then `len` bytes of body. All integers
 * are little endian and fixed width. One struct per message type, each
 * size checked with _Static_assert. Parsers trust nothing from the wire:
 * kvw_wire_check_hdr() and the per-type views below bound every length,
 * count and index before the core looks at it.
 */
#ifndef KVW_WIRE_H
#define KVW_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define KVW_WIRE_MAGIC 0x3157564bu /* "KVW1" as bytes on the wire */
#define KVW_WIRE_MAJOR 1
#define KVW_WIRE_MINOR 4  /* 1: CPace authentication; 2: GRANT geometries; 3: DESCV; 4: incarnations (docs/wire.md) */
#define KVW_WIRE_MAX_CTRL (1u << 22)  /* largest control body (GRANT) */
#define KVW_WIRE_MAX_DATA (1u << 24)  /* largest inline data payload */
#define KVW_WIRE_NONCE 32
#define KVW_WIRE_MAC 32

enum kvw_wire_type {
	KVW_T_HELLO = 1,     /* client -> server: open or join a rail */
	KVW_T_WELCOME = 2,   /* server -> client: caps, nonce, server proof */
	KVW_T_AUTH = 3,      /* client -> server: client proof */
	KVW_T_READY = 4,     /* server -> client: handshake done */
	KVW_T_REJECT = 5,    /* either: refusal with status and reason */
	KVW_T_PING = 6,      /* keepalive request */
	KVW_T_PONG = 7,      /* keepalive answer */
	KVW_T_GRANT = 8,     /* receiver -> sender: blocks for a sequence */
	KVW_T_DATA = 9,      /* sender -> receiver: inline payload (tcp, dpdk) */
	KVW_T_DESC = 10,     /* sender -> receiver: payload by reference (shm) */
	KVW_T_LAYER_DONE = 11, /* receiver -> sender: a layer landed */
	KVW_T_SEQ_DONE = 12, /* receiver -> sender: sequence finished */
	KVW_T_ABORT = 13,    /* either: stop a sequence */
	KVW_T_ABORT_ACK = 14,/* either: abort seen, nothing more will move */
	KVW_T_MEM = 15,      /* sender -> receiver: shared arena (shm, fd attached) */
	KVW_T_CLOSE = 16,    /* either: orderly shutdown */
	KVW_T_ACK = 17,      /* dpdk reliability: cumulative + selective ack */
	KVW_T_DRV = 18,      /* either: driver-private record (ofi: address, keys, fragment names) */
	KVW_T_DESCV = 19,    /* sender -> receiver: gathered payload by reference (shm, wire 1.3) */
	KVW_T_MAX_ = 20
};

/* header flags */
#define KVW_WF_ACK_VALID 0x01u /* hdr.ack carries a cumulative ack */

struct kvw_wire_hdr {
	uint32_t magic;
	uint8_t major, minor, type, flags;
	uint32_t len;   /* body bytes after this header */
	uint32_t ep_id; /* addressee endpoint id (0 before READY) */
	uint32_t psn;   /* packet sequence number (dpdk), 0 on streams */
	uint32_t ack;   /* cumulative ack (dpdk), 0 on streams */
};
_Static_assert(sizeof(struct kvw_wire_hdr) == 24, "wire hdr");

/* HELLO flags */
#define KVW_HELLO_JOIN 0x1u /* extra rail of an existing session */
#define KVW_HELLO_PAKE 0x2u /* nonce carries the client's CPace share */
#define KVW_HELLO_FLAGS (KVW_HELLO_JOIN | KVW_HELLO_PAKE)
#define KVW_WIRE_MAX_PREAUTH 128u /* largest body before READY (REJECT: 104) */

struct kvw_wire_hello {
	uint32_t caps;
	uint32_t rails;     /* rails the client wants */
	uint32_t flags;
	uint32_t rail_idx;  /* for JOIN */
	uint64_t session;   /* JOIN: the session; else (1.4) the client context's incarnation */
	uint8_t nonce[KVW_WIRE_NONCE];
	char driver[16];
};
_Static_assert(sizeof(struct kvw_wire_hello) == 72, "hello");

#define KVW_WELCOME_AUTH 0x1u /* server demands AUTH; mac is valid */

struct kvw_wire_welcome {
	uint32_t caps;
	uint32_t rails;     /* rails the server grants */
	uint32_t flags;
	uint32_t ep_id;     /* server's endpoint id */
	uint64_t session;
	uint8_t nonce[KVW_WIRE_NONCE];
	uint8_t mac[KVW_WIRE_MAC];
	uint64_t incarnation; /* 1.4: the server context's random id (absent from a 1.3 peer) */
};
_Static_assert(sizeof(struct kvw_wire_welcome) == 96, "welcome");
#define KVW_WIRE_WELCOME_13 88u /* a WELCOME from or to a peer of minor < 4 */

struct kvw_wire_auth {
	uint32_t ep_id;     /* client's endpoint id */
	uint32_t rsvd;
	uint8_t mac[KVW_WIRE_MAC];
};
_Static_assert(sizeof(struct kvw_wire_auth) == 40, "auth");

struct kvw_wire_ready {
	uint32_t caps;
	uint32_t ep_id;     /* sender's endpoint id */
};
_Static_assert(sizeof(struct kvw_wire_ready) == 8, "ready");

struct kvw_wire_reject {
	int32_t status;     /* a kvw_status */
	uint32_t rsvd;
	char reason[96];    /* NUL padded, not trusted to be terminated */
};
_Static_assert(sizeof(struct kvw_wire_reject) == 104, "reject");

struct kvw_wire_ping {
	uint64_t t_ns;
	uint64_t cookie;
};
_Static_assert(sizeof(struct kvw_wire_ping) == 16, "ping");

/* GRANT: fixed part, then n_layers x le64 layer offsets, then n_blocks x
 * le32 block indices. Body length must equal exactly that. */
struct kvw_wire_grant {
	uint64_t seq_id;
	uint32_t token;       /* receiver's handle for DATA/DESC/ABORT */
	uint32_t n_blocks;
	uint32_t n_layers;
	uint32_t flags;
	uint64_t block_bytes;
	uint64_t block_stride;
	uint64_t timeout_us;
	uint64_t mem_addr;    /* receiver's arena address (one-sided drivers) */
	uint64_t mem_len;
	uint32_t mem_key;     /* rkey (rdma) */
	uint32_t rsvd;
};
_Static_assert(sizeof(struct kvw_wire_grant) == 72, "grant");

/* GRANT flags (wire 1.2) */
#define KVW_GRANT_GEOM 0x1u /* the receiver's geometry follows the block list */
#define KVW_GRANT_FLAGS KVW_GRANT_GEOM
#define KVW_GRANT_MAX_REGIONS (2u * 1024u) /* n_layers of a GEOM grant: K/V regions */

/* GEOM grants: n_layers counts (layer, K/V) regions (a layer whose K and V
 * share a block is one region), the offsets are the regions' arena bases,
 * block_bytes == block_stride, and this body follows the block indices.
 * DATA/DESC `layer` names a region, `blk_off` includes K->V inside a block. */
#define KVW_WGEOM_KV_OFFSETS 0x1u /* the regions are the caller's kv_offsets */
struct kvw_wire_geom {
	uint32_t n_layers, n_kv, n_blocks, block_tokens;
	uint32_t elem_bytes, head_dim, num_heads;
	uint32_t h0, h1;      /* heads the receiver holds */
	uint32_t gh0, gh1;    /* heads granted, inside [h0, h1) */
	uint32_t flags;       /* KVW_WGEOM_KV_OFFSETS */
	uint64_t token_stride, head_stride, kv_stride, block_stride;
	uint64_t base_offset, layer_stride;
	uint64_t t0, t1;      /* tokens granted */
};
_Static_assert(sizeof(struct kvw_wire_geom) == 112, "grant geometry");

/* DATA: then `bytes` bytes of payload. Destination is named by the
 * receiver's own block list: (layer, index into the grant's list, offset
 * from that block's start); the receiver computes the address. */
struct kvw_wire_data {
	uint32_t token;
	uint32_t layer;
	uint32_t blk_idx;
	uint32_t bytes;
	uint64_t blk_off;
};
_Static_assert(sizeof(struct kvw_wire_data) == 24, "data");

/* DESC: like DATA, payload stays in the sender's shared arena mem_id. */
struct kvw_wire_desc {
	uint32_t token;
	uint32_t layer;
	uint32_t blk_idx;
	uint32_t bytes;
	uint64_t blk_off;
	uint64_t src_off;
	uint32_t mem_id;
	uint32_t rsvd;
};
_Static_assert(sizeof(struct kvw_wire_desc) == 40, "desc");

/* A DESC whose source is gathered: bytes / piece pieces of piece bytes,
 * piece i at src_off + i * src_stride in the sender's arena, landing one
 * after the other at blk_off (contiguous at the receiver). */
struct kvw_wire_descv {
	uint32_t token;
	uint32_t layer;
	uint32_t blk_idx;
	uint32_t bytes;
	uint64_t blk_off;
	uint64_t src_off;
	uint32_t mem_id;
	uint32_t piece;
	uint64_t src_stride;
};
_Static_assert(sizeof(struct kvw_wire_descv) == 48, "descv");

struct kvw_wire_layer_done {
	uint64_t seq_id;
	uint32_t layer;
	uint32_t rsvd;
	uint64_t bytes;
};
_Static_assert(sizeof(struct kvw_wire_layer_done) == 24, "layer done");

struct kvw_wire_seq_done {
	uint64_t seq_id;
	uint64_t bytes;
	int32_t status;
	uint32_t rsvd;
};
_Static_assert(sizeof(struct kvw_wire_seq_done) == 24, "seq done");

#define KVW_ABORT_TO_RECEIVER 0x1u /* names the addressee's grant (else its send) */
struct kvw_wire_abort {
	uint64_t seq_id;
	uint32_t token;       /* receiver's token (0 when the sender had no grant) */
	int32_t status;       /* reason: ABORTED, TIMEDOUT, REJECTED */
	uint32_t flags;       /* KVW_ABORT_TO_RECEIVER */
	uint32_t rsvd;
};
_Static_assert(sizeof(struct kvw_wire_abort) == 24, "abort");

struct kvw_wire_mem {
	uint32_t mem_id;
	uint32_t rsvd;
	uint64_t len;
};
_Static_assert(sizeof(struct kvw_wire_mem) == 16, "mem");

struct kvw_wire_close {
	int32_t status;
	uint32_t rsvd;
};
_Static_assert(sizeof(struct kvw_wire_close) == 8, "close");

/* DRV: a driver's own record on the control stream, after READY only (the
 * stream hands it to the driver's hook; a driver without one refuses it).
 * Then `len` bytes (== body length - 8) the driver parses itself. */
#define KVW_WIRE_MAX_DRV 4096u
struct kvw_wire_drv {
	uint32_t kind;        /* driver-defined */
	uint32_t len;         /* bytes after this head */
};
_Static_assert(sizeof(struct kvw_wire_drv) == 8, "drv");

#define KVW_WIRE_SACK_MAX 16
struct kvw_wire_ack {
	uint32_t cum_ack;     /* every psn < cum_ack received */
	uint32_t n_sack;
	uint32_t credits;     /* receive window, in frames */
	uint32_t dsack;       /* psn + 1 of a duplicate received since the last ACK (0: none) */
	uint64_t echo_t_ns;   /* timestamp echo for RTT */
	uint32_t sack[KVW_WIRE_SACK_MAX][2]; /* [start, end) ranges above cum_ack */
};
_Static_assert(sizeof(struct kvw_wire_ack) == 24 + 8 * KVW_WIRE_SACK_MAX, "ack");

/* --------------------------------------------------------------- helpers */
/* Name of a frame type ("GRANT"), or NULL when unknown. */
const char *kvw_wire_type_name(unsigned type);

/* Encodes a header for a body of body_len bytes into out (24 bytes). */
void kvw_wire_hdr_encode(void *out, unsigned type, unsigned flags, uint32_t body_len,
			 uint32_t ep_id);

/* Checks a received header: magic, major version, known type, body length
 * within the bounds of that type. Returns 0 (kvw_status OK) or a negative
 * kvw_status, and names the fault in *why (static string). Copies the
 * decoded header into *out on success. */
int kvw_wire_check_hdr(const void *buf, size_t avail, struct kvw_wire_hdr *out,
		       const char **why);

/* Checks a body of the given type (length and every field's range).
 * For GRANT also checks the counts against the body length. */
int kvw_wire_check_body(unsigned type, const void *body, size_t len, const char **why);

/* GRANT accessors (valid after kvw_wire_check_body). */
uint64_t kvw_wire_grant_layer_off(const void *body, uint32_t layer);
uint32_t kvw_wire_grant_block(const void *body, uint32_t idx);
size_t kvw_wire_grant_len(uint32_t n_layers, uint32_t n_blocks);
/* Copies a GEOM grant's geometry body (valid after kvw_wire_check_body). */
void kvw_wire_grant_geom(const void *body, struct kvw_wire_geom *out);

/* The structs above are the wire layout on little-endian hosts, which is
 * every host kvwire builds for (checked at compile time). */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kvwire needs a little-endian host");

#endif
