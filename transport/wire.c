/* SPDX-License-Identifier: MIT */
/* Wire format v1: header encode, and checks that trust nothing. */
#include "kvw_int.h"

#include <string.h>

struct kvw_wire_rule {
	const char *name;
	uint32_t min, max; /* body length bounds */
};

static const struct kvw_wire_rule kvw_wire_rules[KVW_T_MAX_] = {
	[KVW_T_HELLO] = {"HELLO", sizeof(struct kvw_wire_hello), sizeof(struct kvw_wire_hello)},
	[KVW_T_WELCOME] = {"WELCOME", KVW_WIRE_WELCOME_13, sizeof(struct kvw_wire_welcome)},
	[KVW_T_AUTH] = {"AUTH", sizeof(struct kvw_wire_auth), sizeof(struct kvw_wire_auth)},
	[KVW_T_READY] = {"READY", sizeof(struct kvw_wire_ready), sizeof(struct kvw_wire_ready)},
	[KVW_T_REJECT] = {"REJECT", sizeof(struct kvw_wire_reject), sizeof(struct kvw_wire_reject)},
	[KVW_T_PING] = {"PING", sizeof(struct kvw_wire_ping), sizeof(struct kvw_wire_ping)},
	[KVW_T_PONG] = {"PONG", sizeof(struct kvw_wire_ping), sizeof(struct kvw_wire_ping)},
	[KVW_T_GRANT] = {"GRANT", sizeof(struct kvw_wire_grant), KVW_WIRE_MAX_CTRL},
	[KVW_T_DATA] = {"DATA", sizeof(struct kvw_wire_data),
			sizeof(struct kvw_wire_data) + KVW_WIRE_MAX_DATA},
	[KVW_T_DESC] = {"DESC", sizeof(struct kvw_wire_desc), sizeof(struct kvw_wire_desc)},
	[KVW_T_LAYER_DONE] = {"LAYER_DONE", sizeof(struct kvw_wire_layer_done),
			      sizeof(struct kvw_wire_layer_done)},
	[KVW_T_SEQ_DONE] = {"SEQ_DONE", sizeof(struct kvw_wire_seq_done),
			    sizeof(struct kvw_wire_seq_done)},
	[KVW_T_ABORT] = {"ABORT", sizeof(struct kvw_wire_abort), sizeof(struct kvw_wire_abort)},
	[KVW_T_ABORT_ACK] = {"ABORT_ACK", sizeof(struct kvw_wire_abort), sizeof(struct kvw_wire_abort)},
	[KVW_T_MEM] = {"MEM", sizeof(struct kvw_wire_mem), sizeof(struct kvw_wire_mem)},
	[KVW_T_CLOSE] = {"CLOSE", sizeof(struct kvw_wire_close), sizeof(struct kvw_wire_close)},
	[KVW_T_ACK] = {"ACK", sizeof(struct kvw_wire_ack), sizeof(struct kvw_wire_ack)},
	[KVW_T_DESCV] = {"DESCV", sizeof(struct kvw_wire_descv), sizeof(struct kvw_wire_descv)},
	[KVW_T_DRV] = {"DRV", sizeof(struct kvw_wire_drv), sizeof(struct kvw_wire_drv) + KVW_WIRE_MAX_DRV},
};

const char *kvw_wire_type_name(unsigned type)
{
	return type < KVW_T_MAX_ ? kvw_wire_rules[type].name : NULL;
}

void kvw_wire_hdr_encode(void *out, unsigned type, unsigned flags, uint32_t body_len,
			 uint32_t ep_id)
{
	struct kvw_wire_hdr h = {
		.magic = KVW_WIRE_MAGIC,
		.major = KVW_WIRE_MAJOR,
		.minor = KVW_WIRE_MINOR,
		.type = (uint8_t)type,
		.flags = (uint8_t)flags,
		.len = body_len,
		.ep_id = ep_id,
	};
	memcpy(out, &h, sizeof(h));
}

#define WHY(s) do { if (why) *why = (s); } while (0)

int kvw_wire_check_hdr(const void *buf, size_t avail, struct kvw_wire_hdr *out, const char **why)
{
	struct kvw_wire_hdr h;

	if (!buf || avail < sizeof(h)) {
		WHY("truncated header: fewer than 24 bytes");
		return KVW_ERR_PROTO;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.magic != KVW_WIRE_MAGIC) {
		WHY("bad magic: not a kvwire frame");
		return KVW_ERR_PROTO;
	}
	if (h.major != KVW_WIRE_MAJOR) {
		WHY("unsupported protocol major version");
		return KVW_ERR_VERSION;
	}
	if (h.type == 0 || h.type >= KVW_T_MAX_ || !kvw_wire_rules[h.type].name) {
		WHY("unknown frame type");
		return KVW_ERR_PROTO;
	}
	if (h.len < kvw_wire_rules[h.type].min) {
		WHY("body shorter than its type requires");
		return KVW_ERR_PROTO;
	}
	if (h.len > kvw_wire_rules[h.type].max) {
		WHY("body longer than its type allows");
		return KVW_ERR_PROTO;
	}
	if (h.flags & ~KVW_WF_ACK_VALID) {
		WHY("unknown header flags");
		return KVW_ERR_PROTO;
	}
	if (out)
		*out = h;
	return KVW_OK;
}

size_t kvw_wire_grant_len(uint32_t n_layers, uint32_t n_blocks)
{
	return sizeof(struct kvw_wire_grant) + (size_t)n_layers * 8 + (size_t)n_blocks * 4;
}

uint64_t kvw_wire_grant_layer_off(const void *body, uint32_t layer)
{
	uint64_t v;
	memcpy(&v, (const uint8_t *)body + sizeof(struct kvw_wire_grant) + (size_t)layer * 8, 8);
	return v;
}

uint32_t kvw_wire_grant_block(const void *body, uint32_t idx)
{
	struct kvw_wire_grant g;
	uint32_t v;

	memcpy(&g, body, sizeof(g));
	memcpy(&v, (const uint8_t *)body + sizeof(g) + (size_t)g.n_layers * 8 + (size_t)idx * 4, 4);
	return v;
}

void kvw_wire_grant_geom(const void *body, struct kvw_wire_geom *out)
{
	struct kvw_wire_grant g;

	memcpy(&g, body, sizeof(g));
	memcpy(out, (const uint8_t *)body + kvw_wire_grant_len(g.n_layers, g.n_blocks), sizeof(*out));
}

static int kvw_wire_check_grant(const void *body, size_t len, const char **why)
{
	struct kvw_wire_grant g;
	bool geom;

	memcpy(&g, body, sizeof(g));
	geom = g.flags & KVW_GRANT_GEOM;
	if (g.flags & ~KVW_GRANT_FLAGS) {
		WHY("GRANT has unknown flags");
		return KVW_ERR_PROTO;
	}
	if (g.n_layers == 0 || g.n_layers > (geom ? KVW_GRANT_MAX_REGIONS : KVW_MAX_LAYERS)) {
		WHY("GRANT n_layers out of range");
		return KVW_ERR_PROTO;
	}
	if (g.n_blocks == 0 || g.n_blocks > KVW_MAX_BLOCKS_PER_SEQ) {
		WHY("GRANT n_blocks out of range");
		return KVW_ERR_PROTO;
	}
	if (len != kvw_wire_grant_len(g.n_layers, g.n_blocks) + (geom ? sizeof(struct kvw_wire_geom) : 0)) {
		WHY("GRANT length disagrees with its counts");
		return KVW_ERR_PROTO;
	}
	if (g.block_bytes == 0 || g.block_bytes > (1ull << 32) || g.block_stride < g.block_bytes) {
		WHY("GRANT block size or stride invalid");
		return KVW_ERR_PROTO;
	}
	if (g.token == 0) {
		WHY("GRANT token zero");
		return KVW_ERR_PROTO;
	}
	return KVW_OK;
}

int kvw_wire_check_body(unsigned type, const void *body, size_t len, const char **why)
{
	if (type == 0 || type >= KVW_T_MAX_ || !kvw_wire_rules[type].name) {
		WHY("unknown frame type");
		return KVW_ERR_PROTO;
	}
	if (!body || len < kvw_wire_rules[type].min || len > kvw_wire_rules[type].max) {
		WHY("body length out of bounds for its type");
		return KVW_ERR_PROTO;
	}
	switch (type) {
	case KVW_T_GRANT:
		return kvw_wire_check_grant(body, len, why);
	case KVW_T_DATA: {
		struct kvw_wire_data d;
		memcpy(&d, body, sizeof(d));
		if (d.bytes == 0 || len != sizeof(d) + d.bytes) {
			WHY("DATA byte count disagrees with the frame length");
			return KVW_ERR_PROTO;
		}
		return KVW_OK;
	}
	case KVW_T_DESC: {
		struct kvw_wire_desc d;
		memcpy(&d, body, sizeof(d));
		if (d.bytes == 0 || d.bytes > KVW_WIRE_MAX_DATA) {
			WHY("DESC byte count out of range");
			return KVW_ERR_PROTO;
		}
		return KVW_OK;
	}
	case KVW_T_DESCV: {
		struct kvw_wire_descv d;
		memcpy(&d, body, sizeof(d));
		if (d.bytes == 0 || d.bytes > KVW_WIRE_MAX_DATA || d.piece == 0 || d.piece >= d.bytes ||
		    d.bytes % d.piece || d.src_stride <= d.piece) {
			WHY("DESCV pieces do not make up its byte count (piece, stride or bytes out of range)");
			return KVW_ERR_PROTO;
		}
		return KVW_OK;
	}
	case KVW_T_DRV: {
		struct kvw_wire_drv r;
		memcpy(&r, body, sizeof(r));
		if (len != sizeof(r) + r.len) {
			WHY("DRV length disagrees with the frame length");
			return KVW_ERR_PROTO;
		}
		return KVW_OK;
	}
	case KVW_T_ACK: {
		struct kvw_wire_ack a;
		memcpy(&a, body, sizeof(a));
		if (a.n_sack > KVW_WIRE_SACK_MAX) {
			WHY("ACK has too many SACK ranges");
			return KVW_ERR_PROTO;
		}
		return KVW_OK;
	}
	case KVW_T_HELLO: {
		struct kvw_wire_hello h;
		memcpy(&h, body, sizeof(h));
		if (h.rails == 0 || h.rails > KVW_MAX_RAILS || h.rail_idx >= KVW_MAX_RAILS) {
			WHY("HELLO rail count or index out of range");
			return KVW_ERR_PROTO;
		}
		if (h.flags & ~KVW_HELLO_FLAGS) {
			WHY("HELLO has unknown flags");
			return KVW_ERR_PROTO;
		}
		return KVW_OK;
	}
	case KVW_T_WELCOME: {
		struct kvw_wire_welcome w = {0};
		if (len != KVW_WIRE_WELCOME_13 && len != sizeof(w)) {
			WHY("WELCOME length is neither 88 (wire 1.3) nor 96 bytes");
			return KVW_ERR_PROTO;
		}
		memcpy(&w, body, len);
		if (w.rails == 0 || w.rails > KVW_MAX_RAILS) {
			WHY("WELCOME rail count out of range");
			return KVW_ERR_PROTO;
		}
		if (w.flags & ~KVW_WELCOME_AUTH) {
			WHY("WELCOME has unknown flags");
			return KVW_ERR_PROTO;
		}
		return KVW_OK;
	}
	default:
		return KVW_OK;
	}
}
