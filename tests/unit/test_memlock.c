/* SPDX-License-Identifier: MIT */
/* Pinning more than RLIMIT_MEMLOCK without CAP_IPC_LOCK fails with
 * KVW_ERR_MEMLOCK and a sentence naming `ulimit -l`. The limit is lowered
 * and the capability dropped in a forked child, so the test runs the same
 * as root (CI containers) and as a user. */
#include <criterion/criterion.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvwire/kvwire.h"

TestSuite(memlock, .timeout = 30);

#define LIMIT (64u << 10)
#define ASK (4u << 20)

/* Drops CAP_IPC_LOCK from the effective and permitted sets. */
static int drop_ipc_lock(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		return -1;
	d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
	return (int)syscall(SYS_capset, &h, d);
}

/* Child exit codes: 0 ok, 10+ which check failed. */
static int child_reg(int use_alloc)
{
	struct rlimit rl = { LIMIT, LIMIT };
	if (setrlimit(RLIMIT_MEMLOCK, &rl) || drop_ipc_lock())
		return 10;
	if (mlock(&rl, 1) == 0) /* sanity: a page fits the limit */
		munlock(&rl, 1);
	kvw_ctx *ctx;
	if (kvw_ctx_create(NULL, &ctx) != KVW_OK)
		return 11;
	kvw_mem *m = (kvw_mem *)(uintptr_t)1;
	kvw_status st;
	void *buf = NULL;
	if (use_alloc) {
		st = kvw_mem_alloc(ctx, ASK, 0, &m);
	} else {
		if (posix_memalign(&buf, 4096, ASK))
			return 12;
		memset(buf, 1, ASK);
		st = kvw_mem_reg(ctx, buf, ASK, 0, &m);
	}
	if (st != KVW_ERR_MEMLOCK) {
		fprintf(stderr, "registering %u bytes over a %u-byte limit gave %s\n", ASK, LIMIT,
			kvw_strerror(st));
		return 13;
	}
	if (m != (kvw_mem *)(uintptr_t)1)
		return 14;
	if (!strstr(kvw_ctx_last_error(ctx), "ulimit -l")) {
		fprintf(stderr, "last error does not say `ulimit -l`: \"%s\"\n",
			kvw_ctx_last_error(ctx));
		return 15;
	}
	/* the same memory unpinned is fine, and so is pinned memory under the limit */
	st = use_alloc ? kvw_mem_alloc(ctx, ASK, KVW_MEM_NO_PIN, &m)
		       : kvw_mem_reg(ctx, buf, ASK, KVW_MEM_NO_PIN, &m);
	if (st != KVW_OK)
		return 16;
	kvw_mem_dereg(m);
	st = use_alloc ? kvw_mem_alloc(ctx, 8192, 0, &m) : kvw_mem_reg(ctx, buf, 8192, 0, &m);
	if (st != KVW_OK) {
		fprintf(stderr, "8 KiB under a 64 KiB limit: %s: %s\n", kvw_strerror(st),
			kvw_ctx_last_error(ctx));
		return 17;
	}
	kvw_mem_dereg(m);
	kvw_ctx_destroy(ctx);
	free(buf);
	return 0;
}

static void run_child(int use_alloc)
{
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(child_reg(use_alloc));
	int ws;
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	cr_assert(WIFEXITED(ws), "child died of signal %d", WTERMSIG(ws));
	cr_assert_eq(WEXITSTATUS(ws), 0, "child check %d failed (see stderr)", WEXITSTATUS(ws));
}

Test(memlock, reg_over_limit)
{
	run_child(0);
}

Test(memlock, alloc_over_limit)
{
	run_child(1);
}

/* Registration reports how long pinning took. */
Test(memlock, reg_ns_measured)
{
	kvw_ctx *ctx;
	kvw_mem *m;
	cr_assert_eq(kvw_ctx_create(NULL, &ctx), KVW_OK);
	cr_assert_eq(kvw_mem_alloc(ctx, 1 << 20, KVW_MEM_NO_PIN, &m), KVW_OK);
	cr_assert_gt(kvw_mem_reg_ns(m), 0);
	cr_assert_eq(kvw_mem_dereg(m), KVW_OK);
	kvw_ctx_destroy(ctx);
}
