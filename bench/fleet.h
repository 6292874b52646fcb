/* SPDX-License-Identifier: MIT */
/* kvwire-bench fleet: a router (the parent) and N prefill + M decode processes.
 * Router and children talk over one SOCK_SEQPACKET socketpair each, in
 * fixed records (kvb_fl_rec); prefills and decodes talk kvwire. */
#ifndef KVB_FLEET_H
#define KVB_FLEET_H

#include "session.h"

enum kvb_fl_type {
	KVB_FL_HELLO = 1, /* child -> router: up, uri = its listener */
	KVB_FL_CONNECT,   /* router -> prefill: connect to decode `peer` at uri */
	KVB_FL_ACCEPT,    /* router -> decode: accept prefill `peer` */
	KVB_FL_LINKED,    /* child -> router: the link to `peer` is up (status) */
	KVB_FL_GRANT,     /* router -> decode: grant request k (tokens) from prefill `peer` */
	KVB_FL_SEND,      /* router -> prefill: send request k (tokens) to decode `peer` */
	KVB_FL_SENT,      /* prefill -> router: request k finished sending (status, t_ns) */
	KVB_FL_LANDED,    /* decode -> router: request k landed and verified (status, t_ns) */
	KVB_FL_QUIT,      /* router -> child */
	KVB_FL_FAILED,    /* child -> router: setup failed, uri = the sentence */
};
/* Router -> child records also carry, in `status`, the incarnation of the
 * decode they name (0 first, +1 per restart): a prefill whose endpoint to that
 * decode is older, or failed, connects afresh before sending. A decode takes
 * an ACCEPT without waiting: it accepts in its loop and answers LINKED. */

/* Status a decode reports when landed bytes differ from the pattern. */
#define KVB_FL_VERIFY_BAD 1000

typedef struct kvb_fl_rec {
	uint32_t type;
	int32_t status;
	uint32_t peer;
	uint32_t tokens;
	uint64_t k;
	uint64_t t_ns;    /* CLOCK_MONOTONIC, shared by the processes of one host */
	char uri[232];
} kvb_fl_rec;

/* One child's life: role decode or prefill, index, its control socket; it
 * listens on uri (a restarted decode: its predecessor's), or picks one when NULL. */
int kvb_fleet_child(const kvb_opts *o, bool decode, unsigned idx, int fd, uint32_t max_tokens,
		    const char *uri);
int kvb_fleet_main(const kvb_opts *o);
/* Blocks a request of `tokens` tokens takes. */
uint32_t kvb_fleet_blocks(const kvb_opts *o, uint32_t tokens);

#endif
