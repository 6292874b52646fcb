/* SPDX-License-Identifier: MIT */
/* What the dir suite's tests share: one etcd per test, entries, events. */
#ifndef KVWT_DIRT_H
#define KVWT_DIRT_H
#include "etcd.h"
#include "kvwire/dir.h"
#include <stdbool.h>

extern struct etcd etcd;
/* .init / .fini: starts this test's etcd (skips without one) / stops it */
void up(void);
void down(void);
kvw_dir *open_dir(uint32_t timeout_ms, uint32_t ttl_s);
/* an entry with two URIs and a geometry */
kvw_dir_entry mk(const char *pool, kvw_dir_role role, const char *name, uint64_t cap);
/* Drives d until an event of type t for name comes (false after ms). */
bool wait_event(kvw_dir *d, kvw_dir_event_type t, const char *name, int ms, kvw_dir_event *out);
#endif
