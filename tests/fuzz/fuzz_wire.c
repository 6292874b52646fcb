/* SPDX-License-Identifier: MIT */
/* libFuzzer: arbitrary bytes through the wire checkers. The first checker
 * must bound everything the second relies on; the GRANT accessors must
 * only read inside a body the checker accepted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvwire/kvwire.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_body(unsigned type, const uint8_t *body, size_t len)
{
	const char *why = NULL;
	/* an exact-size heap copy, so ASan sees any read past the body */
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return;
	memcpy(copy, body, len);
	int st = kvw_wire_check_body(type, copy, len, &why);
	if (st != KVW_OK && !why)
		abort(); /* a refusal must say why */
	if (st == KVW_OK && type == KVW_T_GRANT) {
		struct kvw_wire_grant g;
		memcpy(&g, copy, sizeof(g));
		if (kvw_wire_grant_len(g.n_layers, g.n_blocks) != len)
			abort();
		volatile uint64_t sink = 0;
		for (uint32_t l = 0; l < g.n_layers; l++)
			sink += kvw_wire_grant_layer_off(copy, l);
		for (uint32_t i = 0; i < g.n_blocks; i++)
			sink += kvw_wire_grant_block(copy, i);
		(void)sink;
	}
	if (st == KVW_OK && type == KVW_T_DATA) {
		struct kvw_wire_data d;
		memcpy(&d, copy, sizeof(d));
		if (sizeof(d) + (uint64_t)d.bytes != len)
			abort();
	}
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvw_wire_hdr h;
	const char *why = NULL;
	/* a stream of frames, as a reader would see it */
	while (size >= sizeof(h)) {
		int st = kvw_wire_check_hdr(data, size, &h, &why);
		if (st != KVW_OK) {
			if (!why)
				abort();
			break;
		}
		if (h.len > KVW_WIRE_MAX_CTRL + KVW_WIRE_MAX_DATA)
			abort(); /* header check let an absurd length through */
		data += sizeof(h);
		size -= sizeof(h);
		size_t len = h.len <= size ? h.len : size;
		fuzz_body(h.type, data, len);
		data += len;
		size -= len;
	}
	/* the same bytes as a body of every type */
	if (size > 0) {
		unsigned type = data[0] % (KVW_T_MAX_ + 2);
		fuzz_body(type, data + 1, size - 1);
	}
	kvw_wire_type_name(size ? data[0] : 0);
	return 0;
}
