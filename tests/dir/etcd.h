/* SPDX-License-Identifier: MIT */
/* A real etcd for the 'dir' suite: its own loopback ports and a temporary
 * data dir; stopped (and the dir removed) by etcd_stop. */
#ifndef KVWT_ETCD_H
#define KVWT_ETCD_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct etcd {
	pid_t pid;
	int cport, pport;
	char dir[64];
	char url[64];
};
/* Whether an etcd binary is on PATH (the suite skips without one). */
bool etcd_installed(void);
/* Starts etcd and waits until it answers (false after 20 s). */
bool etcd_start(struct etcd *e);
/* The same member again (same ports and data) after etcd_kill. */
bool etcd_restart(struct etcd *e);
/* SIGTERM and reap (the data stays for etcd_restart). */
void etcd_kill(struct etcd *e);
/* etcd_kill and remove the data. */
void etcd_stop(struct etcd *e);
/* etcdctl put KEY < value (raw bytes, for hostile values); true on success. */
bool etcd_put_raw(const struct etcd *e, const char *key, const void *value, size_t len);
/* etcdctl ARGS... with this etcd's endpoint (a shell command line). */
int etcd_ctl(const struct etcd *e, const char *args);
#endif
