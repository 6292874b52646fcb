/* SPDX-License-Identifier: MIT */
/* kvwire-bench runtime: control channel, data flows, sessions, compare. */
#ifndef KVB_RUN_H
#define KVB_RUN_H

#include "bench.h"

#include <kvwire/kvwire.h>

/* ------------------------------------------------------------ control link */
/* Newline-delimited JSON over TCP ("tcp:HOST:PORT") or a unix socket
 * ("unix:PATH"), client to server, one session per connection. A peer can
 * make one connection buffer at most KVB_CTL_BUF bytes: a longer line is an
 * error. */
#define KVB_CTL_BUF 16384
typedef struct kvb_ctl {
	int fd;
	size_t len;
	char buf[KVB_CTL_BUF];
} kvb_ctl;

/* The listening socket is non-blocking. */
int kvb_ctl_listen(const char *addr, int *lfd, char *bound, size_t boundlen, char *err, size_t errlen);
/* Takes one pending connection, non-blocking: 0 ok, 1 none pending, -1 error */
int kvb_ctl_accept(int lfd, kvb_ctl *c);
/* One read of what the peer sent: bytes read (0 none yet), -1 EOF, error or
 * a full buffer without a complete line. */
int kvb_ctl_fill(kvb_ctl *c);
/* The next complete line from the buffer: 0 ok (*msg set), 1 none yet, -1 not a JSON object */
int kvb_ctl_take(kvb_ctl *c, json_t **msg);
int kvb_ctl_connect(const char *addr, int timeout_ms, kvb_ctl *c, char *err, size_t errlen);
int kvb_ctl_send(kvb_ctl *c, json_t *msg); /* takes the reference */
/* 0 ok (*msg set), 1 timeout, -1 EOF/error */
int kvb_ctl_recv(kvb_ctl *c, int timeout_ms, json_t **msg);
void kvb_ctl_close(kvb_ctl *c);
/* Control address beside a kvwire URI: tcp port + 1 (or ctl_port), shm path + ".ctl". */
int kvb_ctl_addr_for(const char *uri, int ctl_port, char *out, size_t len);

/* ------------------------------------------------------------------- rdma */
/* The RDMA port to use, as perftest picks it: -d DEV or the first device,
 * -x GID or the port's IPv4 RoCE GID; ipv4 gets that GID's address ("" when
 * the GID is not IPv4-mapped). 0 on success, -1 when there is no device. */
int kvb_rdma_pick(const kvb_opts *o, char *dev, size_t dlen, int *gid, char *ipv4, size_t iplen);

/* --------------------------------------------------------------- sessions */

/* Runs the server until stopped (or one session with --once). Exit status. */
int kvb_server_main(const kvb_opts *o, int ready_fd);
/* Runs one test (one size) as the client; fills r. 0 ok, -1 failure (r->error). */
int kvb_client_run(const kvb_opts *o, const char *uri, const char *ctl, kvb_result *r);

/* Loopback: forks a server, returns its pid and addresses. */
typedef struct kvb_loop {
	int pid;
	char uri[300];
	char ctl[300];
} kvb_loop;
int kvb_loop_start(const kvb_opts *o, kvb_loop *lp, char *err, size_t errlen);
void kvb_loop_stop(kvb_loop *lp);

/* Runs TEST (sweep included) and prints results; returns the exit status. */
int kvb_client_main(const kvb_opts *o);
int kvb_compare_main(const kvb_opts *o);

#endif
