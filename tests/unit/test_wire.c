/* SPDX-License-Identifier: MIT */
/* Wire format v1: every message type round-trips through encode + check,
 * and every malformed header or body field is refused. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kvwire/kvwire.h"
#include "wire.h"

#define HDR sizeof(struct kvw_wire_hdr)

/* A valid body of `type` in buf; returns its length. */
static size_t good_body(unsigned type, uint8_t *buf)
{
	switch (type) {
	case KVW_T_HELLO: {
		struct kvw_wire_hello h = { .caps = KVW_CAP_AUTH, .rails = 2 };
		memset(h.nonce, 7, sizeof(h.nonce));
		strcpy(h.driver, "tcp");
		memcpy(buf, &h, sizeof(h));
		return sizeof(h);
	}
	case KVW_T_WELCOME: {
		struct kvw_wire_welcome w = { .rails = 2, .ep_id = 9, .session = 77 };
		memcpy(buf, &w, sizeof(w));
		return sizeof(w);
	}
	case KVW_T_AUTH: {
		struct kvw_wire_auth a = { .ep_id = 3 };
		memcpy(buf, &a, sizeof(a));
		return sizeof(a);
	}
	case KVW_T_READY: {
		struct kvw_wire_ready r = { .ep_id = 4 };
		memcpy(buf, &r, sizeof(r));
		return sizeof(r);
	}
	case KVW_T_REJECT: {
		struct kvw_wire_reject r = { .status = KVW_ERR_AUTH };
		strcpy(r.reason, "bad secret");
		memcpy(buf, &r, sizeof(r));
		return sizeof(r);
	}
	case KVW_T_PING:
	case KVW_T_PONG: {
		struct kvw_wire_ping p = { .t_ns = 1, .cookie = 2 };
		memcpy(buf, &p, sizeof(p));
		return sizeof(p);
	}
	case KVW_T_GRANT: {
		struct kvw_wire_grant g = { .seq_id = 42, .token = 1, .n_blocks = 3, .n_layers = 2,
					    .block_bytes = 4096, .block_stride = 8192,
					    .timeout_us = 1000000, .mem_len = 1 << 20 };
		memcpy(buf, &g, sizeof(g));
		uint64_t offs[2] = { 0, 65536 };
		uint32_t blks[3] = { 5, 0, 7 };
		memcpy(buf + sizeof(g), offs, sizeof(offs));
		memcpy(buf + sizeof(g) + sizeof(offs), blks, sizeof(blks));
		return sizeof(g) + sizeof(offs) + sizeof(blks);
	}
	case KVW_T_DATA: {
		struct kvw_wire_data d = { .token = 1, .layer = 1, .blk_idx = 2, .bytes = 64 };
		memcpy(buf, &d, sizeof(d));
		memset(buf + sizeof(d), 0xab, 64);
		return sizeof(d) + 64;
	}
	case KVW_T_DESC: {
		struct kvw_wire_desc d = { .token = 1, .layer = 1, .blk_idx = 2, .bytes = 4096,
					   .src_off = 8192, .mem_id = 1 };
		memcpy(buf, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_DESCV: {
		struct kvw_wire_descv d = { .token = 1, .layer = 1, .blk_idx = 2, .bytes = 4096,
					    .src_off = 8192, .mem_id = 1, .piece = 256, .src_stride = 2048 };
		memcpy(buf, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_LAYER_DONE: {
		struct kvw_wire_layer_done d = { .seq_id = 42, .layer = 1, .bytes = 12288 };
		memcpy(buf, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_SEQ_DONE: {
		struct kvw_wire_seq_done d = { .seq_id = 42, .bytes = 24576, .status = KVW_OK };
		memcpy(buf, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_ABORT:
	case KVW_T_ABORT_ACK: {
		struct kvw_wire_abort a = { .seq_id = 42, .token = 1, .status = KVW_ERR_ABORTED };
		memcpy(buf, &a, sizeof(a));
		return sizeof(a);
	}
	case KVW_T_MEM: {
		struct kvw_wire_mem m = { .mem_id = 1, .len = 1 << 20 };
		memcpy(buf, &m, sizeof(m));
		return sizeof(m);
	}
	case KVW_T_CLOSE: {
		struct kvw_wire_close c = { .status = KVW_OK };
		memcpy(buf, &c, sizeof(c));
		return sizeof(c);
	}
	case KVW_T_DRV: {
		struct kvw_wire_drv r = { .kind = 1, .len = 0 };
		memcpy(buf, &r, sizeof(r));
		return sizeof(r);
	}
	case KVW_T_ACK: {
		struct kvw_wire_ack a = { .cum_ack = 10, .n_sack = 1, .credits = 64 };
		a.sack[0][0] = 12;
		a.sack[0][1] = 14;
		memcpy(buf, &a, sizeof(a));
		return sizeof(a);
	}
	}
	cr_assert_fail("no body for type %u", type);
	return 0;
}

/* Fixed size of each type's body (GRANT: its fixed part; DATA: its header). */
static size_t fixed_size(unsigned type)
{
	switch (type) {
	case KVW_T_HELLO: return sizeof(struct kvw_wire_hello);
	case KVW_T_WELCOME: return sizeof(struct kvw_wire_welcome);
	case KVW_T_AUTH: return sizeof(struct kvw_wire_auth);
	case KVW_T_READY: return sizeof(struct kvw_wire_ready);
	case KVW_T_REJECT: return sizeof(struct kvw_wire_reject);
	case KVW_T_PING: case KVW_T_PONG: return sizeof(struct kvw_wire_ping);
	case KVW_T_GRANT: return sizeof(struct kvw_wire_grant);
	case KVW_T_DATA: return sizeof(struct kvw_wire_data);
	case KVW_T_DESC: return sizeof(struct kvw_wire_desc);
	case KVW_T_LAYER_DONE: return sizeof(struct kvw_wire_layer_done);
	case KVW_T_SEQ_DONE: return sizeof(struct kvw_wire_seq_done);
	case KVW_T_ABORT: case KVW_T_ABORT_ACK: return sizeof(struct kvw_wire_abort);
	case KVW_T_MEM: return sizeof(struct kvw_wire_mem);
	case KVW_T_CLOSE: return sizeof(struct kvw_wire_close);
	case KVW_T_ACK: return sizeof(struct kvw_wire_ack);
	case KVW_T_DRV: return sizeof(struct kvw_wire_drv);
	}
	return 0;
}

static uint8_t frame[HDR + 8192];

TestSuite(wire, .timeout = 30);

Test(wire, struct_sizes)
{
	cr_assert_eq(sizeof(struct kvw_wire_hdr), 24);
	cr_assert_eq(kvw_wire_grant_len(2, 3), sizeof(struct kvw_wire_grant) + 2 * 8 + 3 * 4);
	cr_assert_eq(kvw_wire_grant_len(0, 0), sizeof(struct kvw_wire_grant));
}

Test(wire, type_names)
{
	for (unsigned t = KVW_T_HELLO; t < KVW_T_MAX_; t++) {
		const char *n = kvw_wire_type_name(t);
		cr_assert(n && *n, "type %u has no name", t);
		for (unsigned u = KVW_T_HELLO; u < t; u++)
			cr_assert_str_neq(n, kvw_wire_type_name(u), "types %u and %u share a name", t, u);
	}
	cr_assert_str_eq(kvw_wire_type_name(KVW_T_GRANT), "GRANT");
	cr_assert_null(kvw_wire_type_name(0));
	cr_assert_null(kvw_wire_type_name(KVW_T_MAX_));
	cr_assert_null(kvw_wire_type_name(255));
	cr_assert_null(kvw_wire_type_name(~0u));
}

Test(wire, roundtrip_every_type)
{
	for (unsigned t = KVW_T_HELLO; t < KVW_T_MAX_; t++) {
		size_t len = good_body(t, frame + HDR);
		kvw_wire_hdr_encode(frame, t, t == KVW_T_ACK ? KVW_WF_ACK_VALID : 0, (uint32_t)len,
				    1000 + t);
		/* the encoded bytes are the documented little-endian layout */
		uint32_t magic;
		memcpy(&magic, frame, 4);
		cr_assert_eq(magic, KVW_WIRE_MAGIC);
		cr_assert_eq(memcmp(frame, "KVW1", 4), 0);
		struct kvw_wire_hdr h;
		const char *why = NULL;
		int st = kvw_wire_check_hdr(frame, HDR + len, &h, &why);
		cr_assert_eq(st, KVW_OK, "type %u header refused: %s", t, why ? why : "?");
		cr_assert_eq(h.magic, KVW_WIRE_MAGIC);
		cr_assert_eq(h.major, KVW_WIRE_MAJOR);
		cr_assert_eq(h.minor, KVW_WIRE_MINOR);
		cr_assert_eq(h.type, t);
		cr_assert_eq(h.len, len);
		cr_assert_eq(h.ep_id, 1000 + t);
		cr_assert_eq(h.flags, t == KVW_T_ACK ? KVW_WF_ACK_VALID : 0);
		why = NULL;
		st = kvw_wire_check_body(t, frame + HDR, len, &why);
		cr_assert_eq(st, KVW_OK, "type %s body refused: %s", kvw_wire_type_name(t),
			     why ? why : "?");
	}
}

Test(wire, hdr_only_needs_24_bytes)
{
	size_t len = good_body(KVW_T_GRANT, frame + HDR);
	kvw_wire_hdr_encode(frame, KVW_T_GRANT, 0, (uint32_t)len, 0);
	struct kvw_wire_hdr h;
	const char *why;
	cr_assert_eq(kvw_wire_check_hdr(frame, HDR, &h, &why), KVW_OK);
}

Test(wire, grant_accessors)
{
	size_t len = good_body(KVW_T_GRANT, frame);
	cr_assert_eq(len, kvw_wire_grant_len(2, 3));
	cr_assert_eq(kvw_wire_grant_layer_off(frame, 0), 0);
	cr_assert_eq(kvw_wire_grant_layer_off(frame, 1), 65536);
	cr_assert_eq(kvw_wire_grant_block(frame, 0), 5);
	cr_assert_eq(kvw_wire_grant_block(frame, 1), 0);
	cr_assert_eq(kvw_wire_grant_block(frame, 2), 7);
}

/* ------------------------------------------------------------ headers */
static int check_hdr_mod(size_t off, const void *val, size_t vlen, const char **why)
{
	size_t len = good_body(KVW_T_PING, frame + HDR);
	kvw_wire_hdr_encode(frame, KVW_T_PING, 0, (uint32_t)len, 1);
	memcpy(frame + off, val, vlen);
	struct kvw_wire_hdr h;
	memset(&h, 0x5a, sizeof(h));
	struct kvw_wire_hdr before = h;
	*why = NULL;
	int st = kvw_wire_check_hdr(frame, HDR + len, &h, why);
	if (st != KVW_OK) {
		cr_assert(*why && **why, "a refused header must name its fault");
		cr_assert_eq(memcmp(&h, &before, sizeof(h)), 0, "out written on failure");
	}
	return st;
}

Test(wire, hdr_bad_magic)
{
	const char *why;
	uint32_t bad[] = { 0, 0x3157564cu, 0x4b565731u, ~0u };
	for (size_t i = 0; i < 4; i++)
		cr_assert_eq(check_hdr_mod(0, &bad[i], 4, &why), KVW_ERR_PROTO, "magic %#x", bad[i]);
	uint8_t one = 'k';
	cr_assert_eq(check_hdr_mod(0, &one, 1, &why), KVW_ERR_PROTO);
}

Test(wire, hdr_wrong_major)
{
	const char *why;
	uint8_t majors[] = { 0, 2, 3, 255 };
	for (size_t i = 0; i < 4; i++)
		cr_assert_eq(check_hdr_mod(4, &majors[i], 1, &why), KVW_ERR_VERSION, "major %u",
			     majors[i]);
	uint8_t minor = 200; /* a newer minor is compatible */
	cr_assert_eq(check_hdr_mod(5, &minor, 1, &why), KVW_OK);
}

Test(wire, hdr_unknown_type)
{
	const char *why;
	uint8_t types[] = { 0, KVW_T_MAX_, KVW_T_MAX_ + 1, 100, 255 };
	for (size_t i = 0; i < 5; i++)
		cr_assert_eq(check_hdr_mod(6, &types[i], 1, &why), KVW_ERR_PROTO, "type %u",
			     types[i]);
}

Test(wire, hdr_oversize_len)
{
	const char *why;
	uint32_t lens[] = { KVW_WIRE_MAX_CTRL + 1, KVW_WIRE_MAX_DATA + 4096, 0x7fffffffu, ~0u };
	for (size_t i = 0; i < 4; i++)
		cr_assert_eq(check_hdr_mod(8, &lens[i], 4, &why), KVW_ERR_PROTO, "len %u", lens[i]);
	/* every type: one byte over its bound is refused */
	for (unsigned t = KVW_T_HELLO; t < KVW_T_MAX_; t++) {
		uint32_t big = (t == KVW_T_DATA) ? KVW_WIRE_MAX_DATA + sizeof(struct kvw_wire_data) + 1
						 : KVW_WIRE_MAX_CTRL + 1;
		kvw_wire_hdr_encode(frame, t, 0, big, 1);
		struct kvw_wire_hdr h;
		cr_assert_lt(kvw_wire_check_hdr(frame, HDR, &h, &why), 0, "type %u len %u", t, big);
	}
}

Test(wire, hdr_unknown_flags)
{
	const char *why;
	uint8_t flags[] = { 0x02, 0x80, 0xff };
	for (size_t i = 0; i < 3; i++)
		cr_assert_eq(check_hdr_mod(7, &flags[i], 1, &why), KVW_ERR_PROTO, "flags %#x",
			     flags[i]);
}

Test(wire, grant_token_zero)
{
	static uint8_t body[256];
	const char *why;
	size_t len = good_body(KVW_T_GRANT, body);
	uint32_t zero = 0;
	memcpy(body + offsetof(struct kvw_wire_grant, token), &zero, 4);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, body, len, &why), 0, "token 0 is no handle");
}

Test(wire, hdr_fixed_types_refuse_short_len)
{
	const char *why;
	for (unsigned t = KVW_T_HELLO; t < KVW_T_MAX_; t++) {
		size_t fixed = fixed_size(t);
		kvw_wire_hdr_encode(frame, t, 0, (uint32_t)(fixed - 1), 1);
		struct kvw_wire_hdr h;
		int st = kvw_wire_check_hdr(frame, HDR, &h, &why);
		if (st == KVW_OK) /* a header may leave this to the body check */
			cr_assert_lt(kvw_wire_check_body(t, frame + HDR, fixed - 1, &why), 0);
	}
}

Test(wire, hdr_short_buffer)
{
	const char *why;
	struct kvw_wire_hdr h;
	kvw_wire_hdr_encode(frame, KVW_T_PING, 0, sizeof(struct kvw_wire_ping), 1);
	for (size_t avail = 0; avail < HDR; avail++)
		cr_assert_neq(kvw_wire_check_hdr(frame, avail, &h, &why), KVW_OK, "avail %zu", avail);
}

/* -------------------------------------------------------------- bodies */
Test(wire, body_short_every_type)
{
	static uint8_t body[8192];
	const char *why;
	for (unsigned t = KVW_T_HELLO; t < KVW_T_MAX_; t++) {
		size_t len = good_body(t, body);
		cr_assert_eq(kvw_wire_check_body(t, body, len, &why), KVW_OK);
		size_t fixed = fixed_size(t);
		for (size_t cut = 0; cut < fixed; cut += (cut < 8 ? 1 : 7)) {
			why = NULL;
			int st = kvw_wire_check_body(t, body, cut, &why);
			cr_assert_lt(st, 0, "type %s body of %zu bytes accepted", kvw_wire_type_name(t),
				     cut);
			cr_assert(why && *why);
		}
		cr_assert_lt(kvw_wire_check_body(t, body, fixed - 1, &why), 0);
	}
}

Test(wire, body_unknown_type)
{
	static uint8_t body[256];
	const char *why;
	cr_assert_lt(kvw_wire_check_body(0, body, 16, &why), 0);
	cr_assert_lt(kvw_wire_check_body(KVW_T_MAX_, body, 16, &why), 0);
	cr_assert_lt(kvw_wire_check_body(999, body, 16, &why), 0);
}

Test(wire, body_fixed_types_refuse_trailing_bytes)
{
	static uint8_t body[8192];
	const char *why;
	unsigned exact[] = { KVW_T_READY, KVW_T_PING, KVW_T_PONG, KVW_T_LAYER_DONE,
			     KVW_T_SEQ_DONE, KVW_T_ABORT, KVW_T_ABORT_ACK, KVW_T_CLOSE, KVW_T_AUTH };
	for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
		size_t len = good_body(exact[i], body);
		cr_assert_lt(kvw_wire_check_body(exact[i], body, len + 1, &why), 0, "%s + 1 byte",
			     kvw_wire_type_name(exact[i]));
	}
}

static uint8_t *grant_body(uint32_t n_layers, uint32_t n_blocks, size_t *len)
{
	*len = kvw_wire_grant_len(n_layers, n_blocks);
	uint8_t *b = calloc(1, *len + 64);
	cr_assert_not_null(b);
	struct kvw_wire_grant g = { .seq_id = 1, .token = 1, .n_blocks = n_blocks,
				    .n_layers = n_layers, .block_bytes = 4096,
				    .block_stride = 4096, .mem_len = 1ull << 30 };
	memcpy(b, &g, sizeof(g));
	for (uint32_t l = 0; l < n_layers; l++) {
		uint64_t off = (uint64_t)l * 4096 * n_blocks;
		memcpy(b + sizeof(g) + 8ull * l, &off, 8);
	}
	for (uint32_t i = 0; i < n_blocks; i++)
		memcpy(b + sizeof(g) + 8ull * n_layers + 4ull * i, &i, 4);
	return b;
}

static void grant_set(uint8_t *b, size_t off, const void *v, size_t vlen)
{
	memcpy(b + off, v, vlen);
}

#define GOFF(f) offsetof(struct kvw_wire_grant, f)

Test(wire, grant_counts_disagree_with_len)
{
	size_t len;
	const char *why;
	uint8_t *b = grant_body(4, 16, &len);
	cr_assert_eq(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), KVW_OK);
	size_t wrong[] = { len - 1, len - 4, len + 4, len + 8, len - 8, sizeof(struct kvw_wire_grant) };
	for (size_t i = 0; i < 6; i++)
		cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, wrong[i], &why), 0, "len %zu",
			     wrong[i]);
	uint32_t v = 17;
	grant_set(b, GOFF(n_blocks), &v, 4);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0);
	v = 16;
	grant_set(b, GOFF(n_blocks), &v, 4);
	v = 3;
	grant_set(b, GOFF(n_layers), &v, 4);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0);
	/* counts so large that the product overflows 32 bits */
	v = 0x40000001u;
	grant_set(b, GOFF(n_blocks), &v, 4);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0);
	free(b);
}

Test(wire, grant_over_limits)
{
	size_t len;
	const char *why;
	uint8_t *b = grant_body(KVW_MAX_LAYERS + 1, 1, &len);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0, "n_layers over limit");
	free(b);
	b = grant_body(KVW_MAX_LAYERS, 1, &len);
	cr_assert_eq(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), KVW_OK, "at the limit: %s", why);
	free(b);
	b = grant_body(1, KVW_MAX_BLOCKS_PER_SEQ + 1, &len);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0, "n_blocks over limit");
	free(b);
	b = grant_body(1, KVW_MAX_BLOCKS_PER_SEQ, &len);
	cr_assert_eq(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), KVW_OK, "at the limit: %s", why);
	free(b);
}

Test(wire, grant_bad_sizes)
{
	size_t len;
	const char *why;
	uint8_t *b = grant_body(2, 4, &len);
	uint64_t v;
	v = 2048; /* stride < block_bytes */
	grant_set(b, GOFF(block_stride), &v, 8);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0, "stride < block bytes");
	v = 4096;
	grant_set(b, GOFF(block_stride), &v, 8);
	v = 0;
	grant_set(b, GOFF(block_bytes), &v, 8);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0, "block_bytes 0");
	grant_set(b, GOFF(block_stride), &v, 8);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0, "both 0");
	free(b);
	b = grant_body(0, 4, &len);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0, "n_layers 0");
	free(b);
	b = grant_body(2, 0, &len);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0, "n_blocks 0");
	free(b);
}

Test(wire, data_bytes_must_match_len)
{
	static uint8_t body[8192];
	const char *why;
	size_t len = good_body(KVW_T_DATA, body);
	struct kvw_wire_data d;
	memcpy(&d, body, sizeof(d));
	d.bytes = 65; /* says one byte more than the frame carries */
	memcpy(body, &d, sizeof(d));
	cr_assert_lt(kvw_wire_check_body(KVW_T_DATA, body, len, &why), 0);
	d.bytes = 0; /* empty fragment */
	memcpy(body, &d, sizeof(d));
	cr_assert_lt(kvw_wire_check_body(KVW_T_DATA, body, sizeof(d), &why), 0);
	d.bytes = ~0u;
	memcpy(body, &d, sizeof(d));
	cr_assert_lt(kvw_wire_check_body(KVW_T_DATA, body, len, &why), 0);
}

Test(wire, desc_zero_bytes)
{
	static uint8_t body[256];
	const char *why;
	size_t len = good_body(KVW_T_DESC, body);
	struct kvw_wire_desc d;
	memcpy(&d, body, sizeof(d));
	d.bytes = 0;
	memcpy(body, &d, sizeof(d));
	cr_assert_lt(kvw_wire_check_body(KVW_T_DESC, body, len, &why), 0);
}

Test(wire, hello_rails_bounds)
{
	static uint8_t body[256];
	const char *why;
	size_t len = good_body(KVW_T_HELLO, body);
	struct kvw_wire_hello h;
	memcpy(&h, body, sizeof(h));
	h.rails = 0;
	memcpy(body, &h, sizeof(h));
	cr_assert_lt(kvw_wire_check_body(KVW_T_HELLO, body, len, &why), 0, "0 rails");
	h.rails = KVW_MAX_RAILS + 1;
	memcpy(body, &h, sizeof(h));
	cr_assert_lt(kvw_wire_check_body(KVW_T_HELLO, body, len, &why), 0, "too many rails");
}

Test(wire, ack_sack_count_bounds)
{
	static uint8_t body[512];
	const char *why;
	size_t len = good_body(KVW_T_ACK, body);
	struct kvw_wire_ack a;
	memcpy(&a, body, sizeof(a));
	a.n_sack = KVW_WIRE_SACK_MAX + 1;
	memcpy(body, &a, sizeof(a));
	cr_assert_lt(kvw_wire_check_body(KVW_T_ACK, body, len, &why), 0);
}

/* Random bytes never crash the checkers (the fuzzer does this at scale). */
Test(wire, random_bytes_never_crash)
{
	static uint8_t buf[4096];
	uint64_t s = 12345;
	for (int i = 0; i < 20000; i++) {
		size_t n = (size_t)(s % sizeof(buf));
		for (size_t j = 0; j < n; j++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			buf[j] = (uint8_t)(s >> 56);
		}
		if (n >= 4 && (i & 1))
			memcpy(buf, "KVW1", 4);
		if (n >= 6 && (i & 2))
			buf[4] = KVW_WIRE_MAJOR;
		struct kvw_wire_hdr h;
		const char *why;
		if (kvw_wire_check_hdr(buf, n, &h, &why) == KVW_OK && h.len <= n - HDR)
			kvw_wire_check_body(h.type, buf + HDR, h.len, &why);
		kvw_wire_check_body(buf[0] % 20, buf, n, &why);
	}
}

/* Wire 1.2: a GEOM grant is the plain one plus exactly one geometry body;
 * unknown flags and a missing or extra body are refused. */
Test(wire, grant_geom_body)
{
	size_t len;
	const char *why;
	uint8_t *b = grant_body(4, 16, &len), *g = calloc(1, len + sizeof(struct kvw_wire_geom) + 8);
	uint32_t f = KVW_GRANT_GEOM;
	struct kvw_wire_geom w = {.n_layers = 2, .n_kv = 2, .t0 = 3, .t1 = 77}, out;

	memcpy(g, b, len);
	memcpy(g + len, &w, sizeof(w));
	grant_set(g, GOFF(flags), &f, 4);
	cr_assert_eq(kvw_wire_check_body(KVW_T_GRANT, g, len + sizeof(w), &why), KVW_OK, "%s", why);
	kvw_wire_grant_geom(g, &out);
	cr_assert_eq(out.t1, 77);
	cr_assert_eq(out.n_kv, 2);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, g, len, &why), 0, "GEOM without its body");
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, g, len + sizeof(w) + 4, &why), 0);
	f = 0;
	grant_set(g, GOFF(flags), &f, 4);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, g, len + sizeof(w), &why), 0, "body without GEOM");
	f = 0x2;
	grant_set(g, GOFF(flags), &f, 4);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, g, len, &why), 0, "unknown flag");
	free(b);
	free(g);
	/* K/V regions: up to twice the layer limit with GEOM, not without */
	b = grant_body(2 * KVW_MAX_LAYERS, 1, &len);
	cr_assert_lt(kvw_wire_check_body(KVW_T_GRANT, b, len, &why), 0);
	g = calloc(1, len + sizeof(w));
	memcpy(g, b, len);
	f = KVW_GRANT_GEOM;
	grant_set(g, GOFF(flags), &f, 4);
	cr_assert_eq(kvw_wire_check_body(KVW_T_GRANT, g, len + sizeof(w), &why), KVW_OK, "%s", why);
	free(b);
	free(g);
}

/* Wire 1.3: a DESCV's pieces must make up its byte count exactly, with a
 * stride past each piece; anything else is a PROTO error with a sentence. */
Test(wire, descv_pieces_must_make_up_the_bytes)
{
	static const struct { uint32_t bytes, piece; uint64_t stride; bool ok; } c[] = {
		{4096, 256, 2048, true}, {4096, 256, 257, true},
		{4096, 0, 2048, false},    /* no piece */
		{4096, 4096, 8192, false}, /* one piece: a DESC */
		{4096, 8192, 8192, false}, /* piece over bytes */
		{4000, 256, 2048, false},  /* not a whole number of pieces */
		{4096, 256, 256, false},   /* contiguous: a DESC */
		{4096, 256, 16, false},    /* pieces overlapping */
		{0, 256, 2048, false}, {KVW_WIRE_MAX_DATA + 256u, 256, 2048, false},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct kvw_wire_descv d = {.token = 1, .bytes = c[i].bytes, .piece = c[i].piece,
					   .src_stride = c[i].stride};
		const char *why = "";
		kvw_status st = kvw_wire_check_body(KVW_T_DESCV, &d, sizeof(d), &why);
		cr_assert_eq(st == KVW_OK, c[i].ok, "case %zu: %s (%s)", i, kvw_strerror(st), why);
		if (!c[i].ok)
			cr_assert(strstr(why, "DESCV"), "case %zu says: %s", i, why);
	}
}

/* WELCOME: 96 bytes (1.4, with the server's incarnation) or 88 (a 1.3
 * peer); nothing in between or beyond */
Test(wire, welcome_incarnation_lengths)
{
	struct kvw_wire_welcome w = {.rails = 1, .incarnation = 42};
	uint8_t body[128] = {0};
	const char *why = NULL;

	memcpy(body, &w, sizeof(w));
	cr_assert_eq(sizeof(w), 96);
	cr_assert_eq(kvw_wire_check_body(KVW_T_WELCOME, body, 96, &why), KVW_OK);
	cr_assert_eq(kvw_wire_check_body(KVW_T_WELCOME, body, KVW_WIRE_WELCOME_13, &why), KVW_OK);
	for (size_t len = 80; len <= 104; len += 4) {
		if (len == 88 || len == 96)
			continue;
		why = NULL;
		cr_assert_eq(kvw_wire_check_body(KVW_T_WELCOME, body, len, &why), KVW_ERR_PROTO, "%zu bytes", len);
		cr_assert_not_null(why);
	}
}
