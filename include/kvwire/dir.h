/* SPDX-License-Identifier: MIT */
/*
 * kvwire directory -- an optional fleet directory on etcd v3.
 *
 * Nothing in kvwire needs it: peers still connect by URI. Instances that
 * want to be found publish an entry (name, role, URIs per driver, geometry,
 * capacity) under a lease; others resolve a name, list a pool or watch it
 * for joins and leaves. It lives in its own library, libkvwire-dir
 * (`pkg-config --libs kvwire-dir`), which talks to etcd's JSON gateway
 * (/v3/kv/range, /v3/kv/put, /v3/lease/..., /v3/watch) through libcurl, so
 * libkvwire itself never links libcurl.
 *
 * Keys: <prefix>/<pool>/<role>/<name> (prefix "/kvwire" by default);
 * values: a JSON object (docs/fleet.md). Pools and names are 1-63 bytes
 * of [A-Za-z0-9._-].
 *
 * Calls that ask etcd something (open, publish, unpublish, resolve, list,
 * close) wait for its reply at most the options' timeout_ms and then fail
 * with KVW_ERR_TIMEDOUT or KVW_ERR_CONNREFUSED and a sentence naming the
 * endpoint (kvw_dir_last_error). kvw_dir_progress and kvw_dir_next never
 * wait: they drive the lease's keepalive and the watch over non-blocking
 * sockets. The library runs no thread; call kvw_dir_progress at least every
 * lease_ttl_s / 3 seconds (from the same loop that calls kvw_poll) or the
 * lease expires and the entries vanish, as they do when the process dies.
 * One kvw_dir is used from one thread at a time.
 */
#ifndef KVWIRE_DIR_H
#define KVWIRE_DIR_H

#include "kvwire/kvwire.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KVW_BUILDING_DIR) && defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct kvw_dir kvw_dir;

/* Options; set size = sizeof(kvw_dir_opts). NULL or a zero field = the
 * default. Strings are copied. */
typedef struct kvw_dir_opts {
	uint32_t size;
	uint32_t timeout_ms;   /* each call that waits for etcd (2000) */
	uint32_t lease_ttl_s;  /* lease of published entries (10, at least 2) */
	const char *prefix;    /* key prefix ("/kvwire") */
	const char *user;      /* etcd user (auth enabled); with password */
	const char *password;
	const char *ca_file;   /* https endpoints: CA bundle, client cert/key */
	const char *cert_file;
	const char *key_file;
} kvw_dir_opts;

typedef enum kvw_dir_role {
	KVW_DIR_ANY = 0, /* kvw_dir_list, kvw_dir_watch: both roles */
	KVW_DIR_PREFILL = 1,
	KVW_DIR_DECODE = 2,
} kvw_dir_role;

#define KVW_DIR_MAX_URIS 8u
#define KVW_DIR_NAME_MAX 64u  /* pool and name, with the NUL */

/* One instance. Set size = sizeof(kvw_dir_entry) in every struct passed
 * in or out (for arrays: in the first element; it is the array's stride). */
typedef struct kvw_dir_entry {
	uint32_t size;
	char pool[KVW_DIR_NAME_MAX];
	char name[KVW_DIR_NAME_MAX];
	kvw_dir_role role;
	uint32_t n_uris;
	char uris[KVW_DIR_MAX_URIS][256]; /* one per driver: tcp://, shm://, rdma://, dpdk:// */
	char geometry[256];  /* e.g. "llama3-8b layers=32 block=64K blocks=4096" */
	uint64_t capacity;   /* the publisher's unit (free blocks, sequences) */
	int64_t revision;    /* etcd's mod_revision of the entry (out only) */
} kvw_dir_entry;

/* endpoints: "http://host:2379[,http://other:2379...]" (https with the TLS
 * options). Authenticates when opts->user is set, and checks that etcd
 * answers. Makes no lease until the first publish. */
kvw_status kvw_dir_open(const char *endpoints, const kvw_dir_opts *opts, kvw_dir **dir);
/* Revokes the lease (the entries vanish at once; an unreachable etcd lets
 * them expire with the lease) and frees everything. */
void kvw_dir_close(kvw_dir *dir);
/* The sentence about the last failure of this dir ("" if none); dir NULL:
 * the calling thread's last failed kvw_dir_open. */
const char *kvw_dir_last_error(const kvw_dir *dir);

/* Publishes (or updates) an entry under this dir's lease, granted on the
 * first call. KVW_ERR_INVALID for a bad name, pool, role or URI. */
kvw_status kvw_dir_publish(kvw_dir *dir, const kvw_dir_entry *entry);
/* Removes one published entry now. */
kvw_status kvw_dir_unpublish(kvw_dir *dir, const char *pool, kvw_dir_role role, const char *name);

/* The entry named name in pool (either role). KVW_ERR_NOT_FOUND when no
 * such entry; KVW_ERR_PROTO when the stored value is not a kvwire entry
 * (the sentence names the key). */
kvw_status kvw_dir_resolve(kvw_dir *dir, const char *pool, const char *name, kvw_dir_entry *out);
/* Entries of pool (NULL = every pool) with role (KVW_DIR_ANY = both), up to
 * max into out. *n: how many were written; *n_bad: values that were not
 * kvwire entries and were skipped (the sentence names the first). More
 * than max entries: KVW_ERR_NOMEM and nothing written. */
kvw_status kvw_dir_list(kvw_dir *dir, const char *pool, kvw_dir_role role, kvw_dir_entry *out,
			size_t max, size_t *n, size_t *n_bad);

/* Starts watching pool (NULL = all) for joins and leaves; one watch per
 * dir. Events come from kvw_dir_next. */
kvw_status kvw_dir_watch(kvw_dir *dir, const char *pool, kvw_dir_role role);

typedef enum kvw_dir_event_type {
	KVW_DIR_JOIN = 1,   /* an entry appeared or changed (status != 0: bad value) */
	KVW_DIR_LEAVE = 2,  /* an entry went away (only pool, role, name set) */
	KVW_DIR_RESYNC = 3, /* the watch lost history (etcd compacted it): list again */
} kvw_dir_event_type;

typedef struct kvw_dir_event {
	uint32_t size;            /* sizeof(kvw_dir_event), set by the caller */
	kvw_dir_event_type type;
	kvw_status status;        /* KVW_OK, or KVW_ERR_PROTO for a value that is not an entry */
	kvw_dir_entry entry;
} kvw_dir_event;

/* Drives the lease keepalive and the watch; never waits. KVW_OK, or the
 * status of the directory's connection (the lease or the watch cannot
 * reach etcd: retried here, entries republished when the lease was lost;
 * the sentence says what is wrong). Transfers are never affected. */
kvw_status kvw_dir_progress(kvw_dir *dir);
/* kvw_dir_progress, then the next watch event: KVW_OK with *ev filled, or
 * KVW_INPROGRESS when none is waiting. */
kvw_status kvw_dir_next(kvw_dir *dir, kvw_dir_event *ev);
/* Sleeps up to timeout_ms until the keepalive or the watch has something
 * for kvw_dir_progress (for programs with nothing else to wait on). */
kvw_status kvw_dir_wait(kvw_dir *dir, int timeout_ms);

#if defined(KVW_BUILDING_DIR) && defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* KVWIRE_DIR_H */
