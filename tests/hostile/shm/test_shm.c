/* SPDX-License-Identifier: MIT */
/*
 * Hostile same-host peers against the shm driver (issue 10, findings 1
 * and 2). The victim (this process) listens on shm; a raw peer passes it
 * fds with MEM frames and names bytes in them with DESC frames.
 *  - Finding 1: only a read-only memfd on shmem sealed against shrinking
 *    and hole punching (F_SEAL_SHRINK + F_SEAL_FUTURE_WRITE or
 *    F_SEAL_WRITE), at least as long as announced, is mapped; anything else
 *    (the truncate-after-MEM attack, an unsealed memfd, a pipe, a regular
 *    file, a writable fd, hugetlbfs) is refused: the DESCs naming it fail
 *    their request with REJECTED and a sentence, nothing is written, the
 *    victim and its endpoint stay up. Caps: 64 arenas and the host's RAM
 *    per endpoint; a duplicate arena id fails the endpoint.
 *  - Finding 2: MEM before READY is refused with a REJECT and not mapped;
 *    a 1 GiB sparse sealed arena after READY raises the victim's RssShmem by
 *    less than HS_RSS_BOUND (it is not populated, and ranges with holes are
 *    read without allocating them), and an honest endpoint of the same
 *    context keeps getting PONGs, no gap longer than HS_GAP_BOUND_MS.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hs.h"
#include "kvw_int.h"
#include "rawpeer.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define HS_ARENA (64 * KiB)
#define HS_RSS_BOUND_KIB (16 * 1024) /* RssShmem growth allowed for a 1 GiB sparse arena */
#define HS_GAP_BOUND_MS 250          /* longest gap between an honest endpoint's PONGs */

static void shm_only(void)
{
	if (strcmp(kvwt_driver()->name, "shm"))
		cr_skip_test("the shm driver's MEM/DESC path (KVW_TEST_DRIVER=shm)");
}

/* Passes fd for arena 1 (announced as len), DESCs for the whole grant from
 * it; the request must be refused with every word of words. */
static void refused(int fd, uint64_t len, const char *const *words)
{
	static struct hs h;

	hs_open(&h, NULL);
	hs_mem(&h, 1, len, fd);
	close(fd);
	hs_desc_all(&h, 0, 1);
	hs_expect_rejected(&h, words);
	kvw_counters c;
	cr_assert_eq(kvw_ep_counters(h.ep, &c), KVW_OK);
	cr_assert_geq(c.rejected, 1);
	hs_close(&h);
}

/* ------------------------------------------------------ sender side */
Test(hostile_shm, sender_arena_sealed)
{
	shm_only();
	kvw_ctx *ctx = kvwt_ctx(NULL);
	struct kvwt_pool p;
	kvwt_pool_make(ctx, &p, 1, 4, 4096, 4096);
	int seals = fcntl(p.mem->memfd, F_GET_SEALS);
	cr_assert_eq(seals & HS_SEALS, HS_SEALS, "kvw_mem_alloc's memfd has seals %#x, not %#x",
		     seals, HS_SEALS);
	cr_assert_neq(ftruncate(p.mem->memfd, 0), 0, "the arena could still be truncated");
	cr_assert_eq(errno, EPERM);
	cr_assert_neq(fallocate(p.mem->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0,
		      "a page could be punched out of the arena");
	memset(p.base, 0x33, 4096); /* its own mapping stays writable */
	kvwt_pool_free(&p);
	kvw_ctx_destroy(ctx);
}

/* ------------------------------------------------------ finding 1 */
/* The attack of the finding: MEM with a memfd, then the memfd truncated
 * to 0, then DESC. Before: the victim died of SIGBUS in its memcpy. */
Test(hostile_shm, truncate_after_mem)
{
	static struct hs h;
	shm_only();
	hs_open(&h, NULL);
	int mfd = hs_memfd("kvwt-hs-trunc", HS_ARENA, 0, 0xee, HS_ARENA);
	hs_mem(&h, 1, HS_ARENA, mfd);
	hs_drive(&h, 50);
	cr_assert_eq(ftruncate(mfd, 0), 0);
	hs_desc_all(&h, 0, 1);
	static const char *const w[] = { "arena 1", "F_SEAL_SHRINK", "kvw_mem_alloc", NULL };
	hs_expect_rejected(&h, w);
	close(mfd);
	hs_close(&h);
}

Test(hostile_shm, unsealed_memfd_refused)
{
	shm_only();
	int mfd = hs_memfd("kvwt-hs-unsealed", HS_ARENA, 0, 0xee, HS_ARENA);
	int ro = hs_ro(mfd);
	close(mfd);
	static const char *const w[] = { "arena 1", "F_SEAL_SHRINK", "nothing written", NULL };
	refused(ro, HS_ARENA, w);
}

/* F_SEAL_SHRINK alone: the sender could still punch pages out. */
Test(hostile_shm, shrink_seal_alone_refused)
{
	shm_only();
	int mfd = hs_memfd("kvwt-hs-shrinkonly", HS_ARENA, F_SEAL_SHRINK | F_SEAL_GROW, 0xee, HS_ARENA);
	int ro = hs_ro(mfd);
	close(mfd);
	static const char *const w[] = { "F_SEAL_FUTURE_WRITE", NULL };
	refused(ro, HS_ARENA, w);
}

Test(hostile_shm, pipe_refused)
{
	shm_only();
	int p[2];
	cr_assert_eq(pipe(p), 0);
	close(p[1]);
	static const char *const w[] = { "not a memfd", "kvw_mem_alloc", NULL };
	refused(p[0], HS_ARENA, w);
}

Test(hostile_shm, regular_file_refused)
{
	shm_only();
	char path[] = "/tmp/kvwt-hs-fileXXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	unlink(path);
	static uint8_t buf[HS_ARENA];
	memset(buf, 0xee, sizeof(buf));
	cr_assert_eq(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	int ro = hs_ro(fd);
	close(fd);
	static const char *const w[] = { "memfd", "kvw_mem_alloc", NULL };
	refused(ro, HS_ARENA, w);
}

Test(hostile_shm, writable_fd_refused)
{
	shm_only();
	int mfd = hs_memfd("kvwt-hs-rw", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
	static const char *const w[] = { "writable", NULL };
	refused(mfd, HS_ARENA, w);
}

Test(hostile_shm, smaller_than_announced_refused)
{
	shm_only();
	int mfd = hs_memfd("kvwt-hs-small", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
	int ro = hs_ro(mfd);
	close(mfd);
	static const char *const w[] = { "smaller than", NULL };
	refused(ro, 2 * HS_ARENA, w);
}

Test(hostile_shm, empty_arena_refused)
{
	shm_only();
	int mfd = hs_memfd("kvwt-hs-empty", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
	int ro = hs_ro(mfd);
	close(mfd);
	static const char *const w[] = { "empty", NULL };
	refused(ro, 0, w);
}

Test(hostile_shm, hugetlbfs_refused)
{
	shm_only();
	int mfd = memfd_create("kvwt-hs-huge", MFD_CLOEXEC | MFD_HUGETLB | MFD_ALLOW_SEALING);
	if (mfd < 0 || ftruncate(mfd, 2 * MiB) != 0 ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE) != 0)
		cr_skip_test("no hugetlbfs memfd here: %s", strerror(errno));
	int ro = hs_ro(mfd);
	close(mfd);
	static const char *const w[] = { "hugetlbfs", NULL };
	refused(ro, HS_ARENA, w);
}

/* A sealed, read-only, honest-looking arena is used: the refusals above
 * are about the fd, not shm as such. */
Test(hostile_shm, sealed_arena_lands)
{
	static struct hs h;
	shm_only();
	hs_open(&h, NULL);
	int mfd = hs_memfd("kvwt-hs-good", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
	int ro = hs_ro(mfd);
	hs_mem(&h, 1, HS_ARENA, ro);
	close(ro);
	close(mfd);
	hs_desc_all(&h, 0, 1);
	cr_assert_eq(hs_expect_ok(&h), 0xee);
	hs_close(&h);
}

/* A source running past the end of an accepted arena fails the request. */
Test(hostile_shm, source_outside_arena_refused)
{
	static struct hs h;
	shm_only();
	hs_open(&h, NULL);
	int mfd = hs_memfd("kvwt-hs-edge", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
	int ro = hs_ro(mfd);
	hs_mem(&h, 1, HS_ARENA, ro);
	close(ro);
	close(mfd);
	hs_desc(&h, 0, 0, 0, HS_BB, HS_ARENA - HS_BB / 2, 1); /* half outside */
	static const char *const w[] = { "outside the sender's shared arena", NULL };
	hs_expect_rejected(&h, w);
	hs_close(&h);
}

Test(hostile_shm, desc_unknown_arena_refused)
{
	static struct hs h;
	shm_only();
	hs_open(&h, NULL);
	hs_desc_all(&h, 0, 9);
	static const char *const w[] = { "never announced", NULL };
	hs_expect_rejected(&h, w);
	hs_close(&h);
}

/* ------------------------------------------------------ caps */
static uint64_t host_ram(void)
{
	return (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* One arena larger than the host's RAM (sparse: it costs the peer nothing). */
Test(hostile_shm, arena_over_ram_refused)
{
	shm_only();
	uint64_t len = host_ram() + GiB;
	int mfd = hs_memfd("kvwt-hs-overram", len, HS_SEALS, 0, 0);
	int ro = hs_ro(mfd);
	close(mfd);
	long before = hs_shmem_kib();
	static const char *const w[] = { "host's RAM", NULL };
	refused(ro, len, w);
	cr_assert_lt(hs_shmem_kib() - before, HS_RSS_BOUND_KIB);
}

/* Two arenas of 60 % of the RAM each: the second is past the cap. */
Test(hostile_shm, arenas_over_ram_in_sum_refused)
{
	static struct hs h;
	shm_only();
	uint64_t len = host_ram() / 10 * 6;
	hs_open(&h, NULL);
	for (uint32_t id = 1; id <= 2; id++) {
		int mfd = hs_memfd("kvwt-hs-sum", len, HS_SEALS, 0, 0);
		int ro = hs_ro(mfd);
		close(mfd);
		hs_mem(&h, id, len, ro);
		close(ro);
	}
	hs_desc_all(&h, 0, 2);
	static const char *const w[] = { "arena 2", "host's RAM", NULL };
	hs_expect_rejected(&h, w);
	hs_close(&h);
}

/* The 65th arena of one endpoint fails the endpoint with a sentence. */
Test(hostile_shm, too_many_arenas)
{
	static struct hs h;
	shm_only();
	hs_open(&h, NULL);
	int mfd = hs_memfd("kvwt-hs-many", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
	for (uint32_t id = 1; id <= 65; id++) {
		int ro = hs_ro(mfd);
		hs_mem(&h, id, HS_ARENA, ro);
		close(ro);
		hs_drive(&h, 2);
	}
	close(mfd);
	hs_drive(&h, 100);
	cr_assert_eq(kvw_ep_status(h.ep), KVW_ERR_REJECTED, "endpoint: %s", kvw_strerror(kvw_ep_status(h.ep)));
	cr_assert(strstr(kvw_ctx_last_error(h.ctx), "more than 64"), "%s", kvw_ctx_last_error(h.ctx));
	cr_assert_eq(memcmp(h.snap, h.dst.base, h.dlen), 0);
	hs_close(&h);
}

Test(hostile_shm, duplicate_arena_id)
{
	static struct hs h;
	shm_only();
	hs_open(&h, NULL);
	int a = hs_memfd("kvwt-hs-dup", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
	for (int i = 0; i < 2; i++) {
		int ro = hs_ro(a);
		hs_mem(&h, 1, HS_ARENA, ro);
		close(ro);
	}
	close(a);
	hs_drive(&h, 100);
	cr_assert_eq(kvw_ep_status(h.ep), KVW_ERR_REJECTED, "endpoint: %s", kvw_strerror(kvw_ep_status(h.ep)));
	cr_assert(strstr(kvw_ctx_last_error(h.ctx), "twice"), "%s", kvw_ctx_last_error(h.ctx));
	hs_close(&h);
}
