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

/* The same process in pieces, for kvwire-bench fleet-node (bench/fleet_node.c),
 * which keeps one context, listener and memory for one router after another.
 * open: context, listener on uri (NULL: a fresh one), memory for requests up
 * to max_tokens; name (NULL: "decode 2") in its sentences. */
typedef struct kvb_fl_child kvb_fl_child;
/* Called from the data loop about every millisecond; nonzero ends serve. It
 * must not block (fleet-node: kvw_dir_progress, a second router refused). */
typedef int (*kvb_fl_tick)(void *arg);
int kvb_fl_child_open(const kvb_opts *o, bool decode, unsigned idx, const char *name, uint32_t max_tokens,
		      const char *uri, kvb_fl_child **c, char *err, size_t len);
const char *kvb_fl_child_uri(const kvb_fl_child *c);
/* Blocks of its pool (a decode's grants; a prefill's source). */
uint32_t kvb_fl_child_blocks(const kvb_fl_child *c);
/* Says HELLO on fd and runs the records of one router until QUIT (1), the
 * router's socket closed (1) or tick said stop (2); then aborts what is in
 * flight and closes its endpoints. fd stays open. */
int kvb_fl_child_serve(kvb_fl_child *c, int fd, kvb_fl_tick tick, void *arg);
void kvb_fl_child_close(kvb_fl_child *c);

/* kvwire-bench fleet-node: one long-running instance in the directory. */
int kvb_fleet_node_main(const kvb_opts *o);

/* fleet --join (bench/fleet_join.c): the router's side of the directory. */
typedef struct kvb_fl_node {
	char name[64];
	bool decode;
	int fd;                 /* its control socket, connected */
	int pid;                /* as it published it (same host: --kill-decode) */
	uint32_t max_tokens;
	unsigned ttl_s;         /* its lease */
	char uri[232];          /* its kvwire listener for --driver */
	char ctl[108];          /* its control socket (AF_UNIX path) */
} kvb_fl_node;
typedef struct kvb_join kvb_join;
/* Watches the pool, then lists it until it holds o->prefill prefill and
 * o->decode decode entries (at most o->timeout_ms), takes that many of each
 * (by name), connects to their control sockets: nodes[] holds the prefills,
 * then the decodes. -1 with a sentence in err. */
int kvb_join_open(const kvb_opts *o, uint32_t max_tokens, kvb_join **j, kvb_fl_node *nodes, char *err,
		  size_t len);
/* Never waits: 1 with the name of an entry that left, 0 when none. */
int kvb_join_next(kvb_join *j, char *name, size_t len);
/* "" or why the directory stopped answering (transfers go on). */
const char *kvb_join_warning(const kvb_join *j);
void kvb_join_close(kvb_join *j);
/* The geometry string a fleet-node publishes, without its own part. */
void kvb_join_geometry(const kvb_opts *o, char *buf, size_t len);
/* Blocks a request of `tokens` tokens takes. */
uint32_t kvb_fleet_blocks(const kvb_opts *o, uint32_t tokens);

#endif
