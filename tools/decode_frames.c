/* SPDX-License-Identifier: MIT */
/* kvwire decode: a byte stream of kvwire frames into named fields, with
 * every malformation named (checked with kvw_wire_check_hdr/_body). */
#include "decode.h"
#include "wire.h"

#include <stdio.h>
#include <string.h>

static json_t *dec_hex(const uint8_t *p, size_t n)
{
	char buf[2 * 64 + 1];
	size_t k = n < 64 ? n : 64;
	for (size_t i = 0; i < k; i++)
		snprintf(buf + 2 * i, 3, "%02x", p[i]);
	buf[2 * k] = 0;
	return json_string(buf);
}

static json_t *dec_cstr(const char *s, size_t max)
{
	char buf[128];
	size_t n = 0;
	for (; n < max && n + 1 < sizeof(buf) && s[n]; n++)
		buf[n] = (s[n] >= 0x20 && s[n] < 0x7f) ? s[n] : '?';
	buf[n] = 0;
	return json_string(buf);
}

static const char *dec_status(kvw_status st)
{
	const char *s = kvw_strerror(st);
	return s ? s : "unknown status";
}

#define U(v) json_integer((json_int_t)(v))

/* The receiver's geometry of a GEOM grant (wire 1.2). */
static json_t *dec_geom(const uint8_t *b)
{
	struct kvw_wire_geom w;
	kvw_wire_grant_geom(b, &w);
	return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:[o,o],s:[o,o],s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:[o,o]}",
		"n_layers", U(w.n_layers), "n_kv", U(w.n_kv), "n_blocks", U(w.n_blocks),
		"block_tokens", U(w.block_tokens), "elem_bytes", U(w.elem_bytes), "head_dim", U(w.head_dim),
		"num_heads", U(w.num_heads), "heads_held", U(w.h0), U(w.h1), "heads_granted", U(w.gh0),
		U(w.gh1), "flags", U(w.flags), "token_stride", U(w.token_stride), "head_stride",
		U(w.head_stride), "kv_stride", U(w.kv_stride), "block_stride", U(w.block_stride),
		"base_offset", U(w.base_offset), "layer_stride", U(w.layer_stride), "tokens", U(w.t0),
		U(w.t1));
}

static json_t *dec_grant(const uint8_t *b, size_t len)
{
	struct kvw_wire_grant g;
	memcpy(&g, b, sizeof(g));
	json_t *o = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "seq_id", U(g.seq_id),
		"token", U(g.token), "n_blocks", U(g.n_blocks), "n_layers", U(g.n_layers), "flags",
		U(g.flags), "block_bytes", U(g.block_bytes), "block_stride", U(g.block_stride),
		"timeout_us", U(g.timeout_us), "mem_addr", U(g.mem_addr), "mem_len", U(g.mem_len),
		"mem_key", U(g.mem_key));
	size_t lists = kvw_wire_grant_len(g.n_layers, g.n_blocks);
	bool geo = g.flags & KVW_GRANT_GEOM;
	if (len != lists + (geo ? sizeof(struct kvw_wire_geom) : 0))
		return o; /* lists not trustworthy; the check names why */
	if (geo)
		json_object_set_new(o, "geometry", dec_geom(b));
	json_t *lo = json_array(), *bl = json_array();
	for (uint32_t i = 0; i < g.n_layers && i < 16; i++)
		json_array_append_new(lo, U(kvw_wire_grant_layer_off(b, i)));
	for (uint32_t i = 0; i < g.n_blocks && i < 64; i++)
		json_array_append_new(bl, U(kvw_wire_grant_block(b, i)));
	json_object_set_new(o, "layer_offsets", lo);
	json_object_set_new(o, "blocks", bl);
	json_object_set_new(o, "lists_truncated", json_boolean(g.n_layers > 16 || g.n_blocks > 64));
	return o;
}

static json_t *dec_body_a(unsigned type, const uint8_t *b, size_t len)
{
	switch (type) {
	case KVW_T_HELLO: {
		struct kvw_wire_hello h;
		memcpy(&h, b, sizeof(h));
		return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "caps", U(h.caps), "rails", U(h.rails),
				 "flags", U(h.flags), "rail_idx", U(h.rail_idx), "session", U(h.session),
				 "nonce", dec_hex(h.nonce, sizeof(h.nonce)), "driver",
				 dec_cstr(h.driver, sizeof(h.driver)));
	}
	case KVW_T_WELCOME: {
		struct kvw_wire_welcome w;
		memcpy(&w, b, sizeof(w));
		return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "caps", U(w.caps), "rails", U(w.rails),
				 "flags", U(w.flags), "ep_id", U(w.ep_id), "session", U(w.session),
				 "nonce", dec_hex(w.nonce, sizeof(w.nonce)), "mac", dec_hex(w.mac, sizeof(w.mac)));
	}
	case KVW_T_AUTH: {
		struct kvw_wire_auth a;
		memcpy(&a, b, sizeof(a));
		return json_pack("{s:o,s:o}", "ep_id", U(a.ep_id), "mac", dec_hex(a.mac, sizeof(a.mac)));
	}
	case KVW_T_READY: {
		struct kvw_wire_ready r;
		memcpy(&r, b, sizeof(r));
		return json_pack("{s:o,s:o}", "caps", U(r.caps), "ep_id", U(r.ep_id));
	}
	case KVW_T_REJECT: {
		struct kvw_wire_reject r;
		memcpy(&r, b, sizeof(r));
		return json_pack("{s:i,s:s,s:o}", "status", r.status, "status_name",
				 dec_status((kvw_status)r.status), "reason", dec_cstr(r.reason, sizeof(r.reason)));
	}
	case KVW_T_PING:
	case KVW_T_PONG: {
		struct kvw_wire_ping p;
		memcpy(&p, b, sizeof(p));
		return json_pack("{s:o,s:o}", "t_ns", U(p.t_ns), "cookie", U(p.cookie));
	}
	case KVW_T_GRANT:
		return dec_grant(b, len);
	}
	return NULL;
}

static json_t *dec_body_b(unsigned type, const uint8_t *b, size_t len)
{
	switch (type) {
	case KVW_T_DATA: {
		struct kvw_wire_data d;
		memcpy(&d, b, sizeof(d));
		return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "token", U(d.token), "layer", U(d.layer),
				 "blk_idx", U(d.blk_idx), "bytes", U(d.bytes), "blk_off", U(d.blk_off),
				 "payload_present", U(len - sizeof(d)), "payload_head",
				 dec_hex(b + sizeof(d), len - sizeof(d) < 16 ? len - sizeof(d) : 16));
	}
	case KVW_T_DESC: {
		struct kvw_wire_desc d;
		memcpy(&d, b, sizeof(d));
		return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "token", U(d.token), "layer", U(d.layer),
				 "blk_idx", U(d.blk_idx), "bytes", U(d.bytes), "blk_off", U(d.blk_off),
				 "src_off", U(d.src_off), "mem_id", U(d.mem_id));
	}
	case KVW_T_DESCV: {
		struct kvw_wire_descv d;
		memcpy(&d, b, sizeof(d));
		return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "token", U(d.token), "layer",
				 U(d.layer), "blk_idx", U(d.blk_idx), "bytes", U(d.bytes), "blk_off",
				 U(d.blk_off), "src_off", U(d.src_off), "mem_id", U(d.mem_id), "piece",
				 U(d.piece), "src_stride", U(d.src_stride));
	}
	case KVW_T_LAYER_DONE: {
		struct kvw_wire_layer_done d;
		memcpy(&d, b, sizeof(d));
		return json_pack("{s:o,s:o,s:o}", "seq_id", U(d.seq_id), "layer", U(d.layer), "bytes",
				 U(d.bytes));
	}
	case KVW_T_SEQ_DONE: {
		struct kvw_wire_seq_done d;
		memcpy(&d, b, sizeof(d));
		return json_pack("{s:o,s:o,s:i,s:s}", "seq_id", U(d.seq_id), "bytes", U(d.bytes),
				 "status", d.status, "status_name", dec_status((kvw_status)d.status));
	}
	case KVW_T_ABORT:
	case KVW_T_ABORT_ACK: {
		struct kvw_wire_abort a;
		memcpy(&a, b, sizeof(a));
		return json_pack("{s:o,s:o,s:i,s:s}", "seq_id", U(a.seq_id), "token", U(a.token),
				 "status", a.status, "status_name", dec_status((kvw_status)a.status));
	}
	case KVW_T_MEM: {
		struct kvw_wire_mem m;
		memcpy(&m, b, sizeof(m));
		return json_pack("{s:o,s:o}", "mem_id", U(m.mem_id), "len", U(m.len));
	}
	case KVW_T_CLOSE: {
		struct kvw_wire_close c;
		memcpy(&c, b, sizeof(c));
		return json_pack("{s:i,s:s}", "status", c.status, "status_name",
				 dec_status((kvw_status)c.status));
	}
	case KVW_T_ACK: {
		struct kvw_wire_ack a;
		memcpy(&a, b, sizeof(a));
		json_t *sk = json_array();
		for (uint32_t i = 0; i < a.n_sack && i < KVW_WIRE_SACK_MAX; i++)
			json_array_append_new(sk, json_pack("[o,o]", U(a.sack[i][0]), U(a.sack[i][1])));
		return json_pack("{s:o,s:o,s:o,s:o,s:o}", "cum_ack", U(a.cum_ack), "n_sack", U(a.n_sack),
				 "credits", U(a.credits), "echo_t_ns", U(a.echo_t_ns), "sack", sk);
	}
	}
	return NULL;
}

/* Fixed part of a body is present: decode fields; json null otherwise. */
static json_t *dec_body(unsigned type, const uint8_t *b, size_t len, uint32_t min)
{
	if (len < min)
		return json_null();
	json_t *o = dec_body_a(type, b, len);
	if (!o)
		o = dec_body_b(type, b, len);
	return o ? o : json_null();
}

static json_t *dec_hdr_json(const struct kvw_wire_hdr *h)
{
	const char *tn = kvw_wire_type_name(h->type);
	return json_pack("{s:o,s:i,s:i,s:i,s:s,s:i,s:o,s:o,s:o,s:o}", "magic", U(h->magic), "major",
			 h->major, "minor", h->minor, "type", h->type, "type_name", tn ? tn : "?",
			 "flags", h->flags, "len", U(h->len), "ep_id", U(h->ep_id), "psn", U(h->psn),
			 "ack", U(h->ack));
}

/* Min body size of a type, from the structs (0 if unknown). */
static uint32_t dec_min_len(unsigned type)
{
	static const uint32_t min[KVW_T_MAX_] = {
		[KVW_T_HELLO] = sizeof(struct kvw_wire_hello), [KVW_T_WELCOME] = sizeof(struct kvw_wire_welcome),
		[KVW_T_AUTH] = sizeof(struct kvw_wire_auth), [KVW_T_READY] = sizeof(struct kvw_wire_ready),
		[KVW_T_REJECT] = sizeof(struct kvw_wire_reject), [KVW_T_PING] = sizeof(struct kvw_wire_ping),
		[KVW_T_PONG] = sizeof(struct kvw_wire_ping), [KVW_T_GRANT] = sizeof(struct kvw_wire_grant),
		[KVW_T_DATA] = sizeof(struct kvw_wire_data), [KVW_T_DESC] = sizeof(struct kvw_wire_desc),
		[KVW_T_DESCV] = sizeof(struct kvw_wire_descv), [KVW_T_LAYER_DONE] = sizeof(struct kvw_wire_layer_done),
		[KVW_T_SEQ_DONE] = sizeof(struct kvw_wire_seq_done), [KVW_T_ABORT] = sizeof(struct kvw_wire_abort),
		[KVW_T_ABORT_ACK] = sizeof(struct kvw_wire_abort), [KVW_T_MEM] = sizeof(struct kvw_wire_mem),
		[KVW_T_CLOSE] = sizeof(struct kvw_wire_close), [KVW_T_ACK] = sizeof(struct kvw_wire_ack),
	};
	return type < KVW_T_MAX_ ? min[type] : 0;
}

static size_t dec_find_magic(const uint8_t *buf, size_t len, size_t from)
{
	static const uint8_t m[4] = { 0x4b, 0x56, 0x57, 0x31 };
	for (size_t i = from; i + 4 <= len; i++)
		if (!memcmp(buf + i, m, 4))
			return i;
	return len;
}

static json_t *dec_frame_new(const char *origin, size_t off)
{
	return json_pack("{s:s,s:I,s:b,s:[]}", "origin", origin, "offset", (json_int_t)off, "ok", 1,
			 "errors");
}

static void dec_fault(json_t *fr, struct dec_result *r, const char *why)
{
	json_object_set_new(fr, "ok", json_false());
	json_array_append_new(json_object_get(fr, "errors"), json_string(why));
	r->bad++;
}

/* One frame at buf[off]; returns the offset of the next one. */
static size_t dec_one(const uint8_t *buf, size_t len, size_t off, const char *origin,
		      struct dec_result *r)
{
	json_t *fr = dec_frame_new(origin, off);
	json_array_append_new(r->frames, fr);
	size_t avail = len - off;
	struct kvw_wire_hdr h;
	const char *why = NULL;
	memcpy(&h, buf + off, avail < sizeof(h) ? avail : sizeof(h));
	if (avail < sizeof(h)) {
		char msg[96];
		snprintf(msg, sizeof(msg), "truncated header: %zu of 24 bytes present", avail);
		dec_fault(fr, r, msg);
		return len;
	}
	json_object_set_new(fr, "header", dec_hdr_json(&h));
	if (kvw_wire_check_hdr(buf + off, avail, &h, &why) != KVW_OK) {
		dec_fault(fr, r, why ? why : "bad header");
		bool skippable = h.magic == KVW_WIRE_MAGIC && h.len <= avail - sizeof(h);
		return skippable ? off + sizeof(h) + h.len : dec_find_magic(buf, len, off + 1);
	}
	size_t body = avail - sizeof(h);
	if (h.len > body) {
		char msg[128];
		snprintf(msg, sizeof(msg), "truncated body: header says %u bytes, %zu present", h.len, body);
		dec_fault(fr, r, msg);
		json_object_set_new(fr, "body", dec_body(h.type, buf + off + 24, body, dec_min_len(h.type)));
		return len;
	}
	json_object_set_new(fr, "body", dec_body(h.type, buf + off + 24, h.len, dec_min_len(h.type)));
	if (kvw_wire_check_body(h.type, buf + off + 24, h.len, &why) != KVW_OK)
		dec_fault(fr, r, why ? why : "bad body");
	return off + sizeof(h) + h.len;
}

void dec_note(struct dec_result *r, const char *msg)
{
	if (json_array_size(r->notes) < DEC_MAX_NOTES)
		json_array_append_new(r->notes, json_string(msg));
	else
		r->notes_dropped++;
}

/* Room for one more frame; at DEC_MAX_FRAMES says where decoding stops. */
static bool dec_room(struct dec_result *r, const char *origin, size_t off)
{
	if (json_array_size(r->frames) < DEC_MAX_FRAMES)
		return true;
	if (!r->truncated)
		snprintf(r->stop, sizeof(r->stop), "%s%sbyte %zu", origin, *origin ? ", stream " : "", off);
	r->truncated = true;
	return false;
}

void dec_stream(const uint8_t *buf, size_t len, const char *origin, struct dec_result *r)
{
	size_t off = 0;
	if (!dec_room(r, origin, 0))
		return;
	if (len >= 4 && dec_find_magic(buf, len, 0) != 0) {
		size_t m = dec_find_magic(buf, len, 0);
		char msg[256];
		snprintf(msg, sizeof(msg), "%s%sbad magic: %zu leading bytes hold no kvwire magic "
			 "(\"KVW1\"); not a kvwire frame", origin, *origin ? ": " : "", m);
		if (r->lenient_lead) {
			dec_note(r, msg);
		} else {
			json_t *fr = dec_frame_new(origin, 0);
			json_array_append_new(r->frames, fr);
			dec_fault(fr, r, msg);
		}
		off = m;
	}
	while (off < len && dec_room(r, origin, off)) {
		size_t next = dec_one(buf, len, off, origin, r);
		if (next < len && next > off && dec_find_magic(buf, len, next) != next &&
		    dec_room(r, origin, next)) {
			size_t m = dec_find_magic(buf, len, next);
			char msg[128];
			snprintf(msg, sizeof(msg), "%zu bytes of garbage after the frame", m - next);
			json_t *fr = dec_frame_new(origin, next);
			json_array_append_new(r->frames, fr);
			dec_fault(fr, r, msg);
			next = m;
		}
		off = next > off ? next : len;
	}
}
