/* SPDX-License-Identifier: MIT */
/* RDMA smoke: one context, listener + client over rdma_cm, a 4-layer
 * scattered-block sequence written one-sided, every byte checked, and the
 * untouched pages checked to stay zero. Run inside tests/vm/run-rxe-vm.sh. */
#include "kvwire/kvwire.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv)
{
	kvw_ctx *ctx; kvw_listener *l; kvw_ep *c = NULL, *s = NULL;
	const char *uri = argc > 1 ? argv[1] : "rdma://10.78.0.1:0";
	if (kvw_ctx_create(NULL, &ctx)) { printf("ctx fail\n"); return 1; }
	if (kvw_listen(ctx, uri, &l)) { printf("listen: %s\n", kvw_ctx_last_error(ctx)); return 1; }
	printf("listening %s\n", kvw_listener_uri(l));
	if (kvw_connect_start(ctx, kvw_listener_uri(l), &c)) { printf("connect: %s\n", kvw_ctx_last_error(ctx)); return 1; }
	for (int i = 0; i < 5000 && (!s || kvw_ep_status(c) == KVW_INPROGRESS); i++) {
		kvw_progress(ctx);
		if (!s) kvw_accept(l, 0, &s);
		kvw_ctx_wait(ctx, 1);
	}
	printf("client %d server %p: %s\n", kvw_ep_status(c), (void*)s, kvw_ctx_last_error(ctx));
	if (!s) return 1;
	size_t len = 8 << 20; kvw_mem *ms, *mr;
	if (kvw_mem_alloc(ctx, len, 0, &ms) || kvw_mem_alloc(ctx, len, 0, &mr)) { printf("mem: %s\n", kvw_ctx_last_error(ctx)); return 1; }
	memset(kvw_mem_addr(ms), 0xab, len); memset(kvw_mem_addr(mr), 0, len);
	kvw_layout_desc d = {.n_layers = 4, .n_blocks = 32, .block_bytes = 65536, .block_stride = 65536, .layer_stride = 32 * 65536};
	kvw_layout *ls, *lr; kvw_layout_create(ms, &d, &ls); kvw_layout_create(mr, &d, &lr);
	uint32_t blocks[8] = {1, 2, 3, 7, 9, 10, 20, 31};
	kvw_req *rs, *rr; int st;
	st = kvw_recv_seq(c, 42, lr, blocks, 8, 0, &rr); printf("recv_seq %d\n", st);
	st = kvw_send_seq(s, 42, ls, blocks, 8, 0, 4, KVW_SEND_LAST, &rs); printf("send_seq %d %s\n", st, kvw_ctx_last_error(ctx));
	kvw_event ev[16]; int done = 0;
	for (int i = 0; i < 20000 && done < 2; i++) {
		int n = kvw_poll(ctx, ev, 16);
		for (int k = 0; k < n; k++) if (ev[k].type == KVW_EV_SEQ) { printf("seq done status %d bytes %llu\n", ev[k].status, (unsigned long long)ev[k].bytes); done++; }
		kvw_ctx_wait(ctx, 1);
	}
	int bad = 0; uint8_t *p = kvw_mem_addr(mr);
	for (int l2 = 0; l2 < 4; l2++) for (int b = 0; b < 8; b++) for (int k = 0; k < 65536; k++) if (p[l2 * 32 * 65536 + blocks[b] * 65536 + k] != 0xab) bad++;
	printf("bad bytes %d; untouched block0 %d\n", bad, p[0]);
	kvw_counters cn = {.size = sizeof(cn)}; kvw_ep_counters(s, &cn); printf("tx %llu frags %llu\n", (unsigned long long)cn.bytes_tx, (unsigned long long)cn.frags_tx);
	return bad || done < 2;
}
