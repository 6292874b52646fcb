/* SPDX-License-Identifier: MIT */
/* Writes seed corpora of valid frames: DIR/wire (one frame per file, every
 * type) and DIR/stream (client byte streams: a full handshake followed by
 * each kind of post-handshake frame). usage: gen_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvwire/kvwire.h"
#include "wire.h"

/* the first grant of a fresh endpoint (generation 1, slot 1): what the
 * fuzz_stream harness grants, so DATA/DESC/ABORT seeds reach it */
#define FIRST_TOKEN ((1u << 20) | 1u)

static uint8_t buf[1 << 16];

static size_t put(size_t at, unsigned type, const void *body, size_t len)
{
	kvw_wire_hdr_encode(buf + at, type, 0, (uint32_t)len, 1);
	memcpy(buf + at + sizeof(struct kvw_wire_hdr), body, len);
	return at + sizeof(struct kvw_wire_hdr) + len;
}

static void save(const char *dir, const char *sub, const char *name, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len) {
		perror(path);
		exit(1);
	}
	fclose(f);
}

static size_t body_of(unsigned t, uint8_t *b)
{
	switch (t) {
	case KVW_T_HELLO: {
		struct kvw_wire_hello h = { .rails = 1 };
		strcpy(h.driver, "tcp");
		memcpy(b, &h, sizeof(h));
		return sizeof(h);
	}
	case KVW_T_WELCOME: {
		struct kvw_wire_welcome w = { .rails = 1, .ep_id = 1, .session = 9 };
		memcpy(b, &w, sizeof(w));
		return sizeof(w);
	}
	case KVW_T_AUTH: {
		struct kvw_wire_auth a = { .ep_id = 7 };
		memcpy(b, &a, sizeof(a));
		return sizeof(a);
	}
	case KVW_T_READY: {
		struct kvw_wire_ready r = { .ep_id = 7 };
		memcpy(b, &r, sizeof(r));
		return sizeof(r);
	}
	case KVW_T_REJECT: {
		struct kvw_wire_reject r = { .status = KVW_ERR_AUTH };
		strcpy(r.reason, "no");
		memcpy(b, &r, sizeof(r));
		return sizeof(r);
	}
	case KVW_T_PING:
	case KVW_T_PONG: {
		struct kvw_wire_ping p = { .t_ns = 1, .cookie = 2 };
		memcpy(b, &p, sizeof(p));
		return sizeof(p);
	}
	case KVW_T_GRANT: {
		struct kvw_wire_grant g = { .seq_id = 1, .token = 1, .n_blocks = 4, .n_layers = 2,
					    .block_bytes = 4096, .block_stride = 8192 };
		uint64_t off[2] = { 0, 65536 };
		uint32_t blk[4] = { 1, 2, 5, 7 };
		memcpy(b, &g, sizeof(g));
		memcpy(b + sizeof(g), off, sizeof(off));
		memcpy(b + sizeof(g) + sizeof(off), blk, sizeof(blk));
		return sizeof(g) + sizeof(off) + sizeof(blk);
	}
	case KVW_T_DATA: {
		struct kvw_wire_data d = { .token = FIRST_TOKEN, .layer = 1, .blk_idx = 2, .bytes = 256,
					   .blk_off = 1024 };
		memcpy(b, &d, sizeof(d));
		memset(b + sizeof(d), 0xee, 256);
		return sizeof(d) + 256;
	}
	case KVW_T_DESC: {
		struct kvw_wire_desc d = { .token = FIRST_TOKEN, .layer = 0, .blk_idx = 0, .bytes = 4096,
					   .mem_id = 1 };
		memcpy(b, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_DESCV: {
		struct kvw_wire_descv d = { .token = FIRST_TOKEN, .layer = 0, .blk_idx = 0, .bytes = 4096,
					    .mem_id = 1, .piece = 256, .src_stride = 2048 };
		memcpy(b, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_LAYER_DONE: {
		struct kvw_wire_layer_done d = { .seq_id = 1, .layer = 0, .bytes = 16384 };
		memcpy(b, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_SEQ_DONE: {
		struct kvw_wire_seq_done d = { .seq_id = 1, .bytes = 32768 };
		memcpy(b, &d, sizeof(d));
		return sizeof(d);
	}
	case KVW_T_ABORT:
	case KVW_T_ABORT_ACK: {
		struct kvw_wire_abort a = { .seq_id = 1, .token = FIRST_TOKEN, .status = KVW_ERR_ABORTED };
		memcpy(b, &a, sizeof(a));
		return sizeof(a);
	}
	case KVW_T_MEM: {
		struct kvw_wire_mem m = { .mem_id = 1, .len = 65536 };
		memcpy(b, &m, sizeof(m));
		return sizeof(m);
	}
	case KVW_T_CLOSE: {
		struct kvw_wire_close c = { .status = KVW_ERR_CLOSED };
		memcpy(b, &c, sizeof(c));
		return sizeof(c);
	}
	case KVW_T_ACK: {
		struct kvw_wire_ack a = { .cum_ack = 3, .n_sack = 1, .credits = 8 };
		a.sack[0][0] = 5;
		a.sack[0][1] = 6;
		memcpy(b, &a, sizeof(a));
		return sizeof(a);
	}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static uint8_t body[8192];
	char dir[512], name[64];
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/wire", argv[1]);
	mkdir(argv[1], 0755);
	mkdir(dir, 0755);
	snprintf(dir, sizeof(dir), "%s/stream", argv[1]);
	mkdir(dir, 0755);
	for (unsigned t = KVW_T_HELLO; t < KVW_T_MAX_; t++) {
		size_t n = put(0, t, body, body_of(t, body));
		snprintf(name, sizeof(name), "%02u-%s", t, kvw_wire_type_name(t));
		save(argv[1], "wire", name, n);
	}
	/* client streams: HELLO, HELLO+AUTH, then HELLO+AUTH+X for every X */
	size_t hs = put(0, KVW_T_HELLO, body, body_of(KVW_T_HELLO, body));
	save(argv[1], "stream", "hello", hs);
	hs = put(hs, KVW_T_AUTH, body, body_of(KVW_T_AUTH, body));
	save(argv[1], "stream", "hello-auth", hs);
	for (unsigned t = KVW_T_REJECT; t < KVW_T_MAX_; t++) {
		size_t n = put(hs, t, body, body_of(t, body));
		if (t == KVW_T_GRANT || t == KVW_T_PING)
			n = put(n, KVW_T_DATA, body, body_of(KVW_T_DATA, body));
		snprintf(name, sizeof(name), "hs-%s", kvw_wire_type_name(t));
		save(argv[1], "stream", name, n);
	}
	/* several DATA frames for the harness's grant (token 1) */
	size_t n = hs;
	for (int i = 0; i < 4; i++)
		n = put(n, KVW_T_DATA, body, body_of(KVW_T_DATA, body));
	save(argv[1], "stream", "hs-data4", n);
	return 0;
}
