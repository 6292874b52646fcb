/* SPDX-License-Identifier: MIT */
/*
 * Hostile same-host peers against the shm driver, finding 1 of issue 10
 * (a memfd truncated under the victim's copies killed it with SIGBUS). The
 * victim (this process) listens on shm; a raw peer passes it fds with MEM
 * frames and names bytes in them with DESC frames. Only a read-only memfd
 * on shmem sealed against shrinking and hole punching (F_SEAL_SHRINK +
 * F_SEAL_FUTURE_WRITE or F_SEAL_WRITE), at least as long as announced, is
 * mapped; anything else (the truncate-after-MEM attack, an unsealed memfd,
 * a pipe, a regular file, a writable fd, hugetlbfs, empty, too short) is
 * refused: the DESCs naming it fail their request with REJECTED and a
 * sentence, nothing is written, the victim and its endpoint stay up. Caps:
 * 64 arenas and the host's RAM per endpoint; a duplicate arena id fails
 * the endpoint. Finding 2 (MEM before READY, MAP_POPULATE) is in
 * test_shm_map.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hs.h"
#include "kvw_int.h"
#include "rawpeer.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define HS_ARENA (64 * KiB)
#define HS_RSS_BOUND_KIB (16 * 1024) /* RssShmem growth allowed for a refused sparse arena */

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
	kvw_counters c = {.size = sizeof(c)};
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

/* The sender shares at most the 64 arenas a receiver maps: a sequence from
 * a 65th pool fails at once with a sentence (it used to wait for its
 * deadline, never posted). */
Test(hostile_shm, sender_65th_arena_refused, .timeout = 120)
{
	static struct kvwt_pool src[65];
	struct kvwt_pool dst;
	struct kvwt_pair p;
	uint32_t blk = 0;
	shm_only();
	kvw_ctx *ctx = kvwt_ctx(NULL);
	kvwt_pair_open(ctx, &p);
	kvwt_pool_make(ctx, &dst, 1, 1, 4096, 4096);
	for (uint64_t k = 0; k < 65; k++) {
		struct kvwt_rec rr, sr;
		kvw_req *rq, *sq;
		kvwt_pool_make(ctx, &src[k], 1, 1, 4096, 4096);
		kvwt_rec_init(&rr);
		kvwt_rec_init(&sr);
		cr_assert_eq(kvw_recv_seq(p.server, k + 1, dst.lay, &blk, 1, 10000000, &rq), KVW_OK);
		kvw_req_set_user_data(rq, &rr);
		cr_assert_geq(kvw_send_seq(p.client, k + 1, src[k].lay, &blk, 1, 0, 1, KVW_SEND_LAST, &sq), 0);
		kvw_req_set_user_data(sq, &sr);
		cr_assert(kvwt_drive1(ctx, 5000, kvwt_rec_done, &sr), "sequence %llu from pool %llu did "
			  "not end within 5 s", (unsigned long long)k + 1, (unsigned long long)k + 1);
		if (k < 64) {
			cr_assert_eq(sr.status, KVW_OK, "pool %llu: %s", (unsigned long long)k + 1,
				     kvw_ctx_last_error(ctx));
		} else {
			cr_assert_eq(sr.status, KVW_ERR_UNSUPPORTED, "%s", kvw_strerror(sr.status));
			cr_assert(strstr(kvw_ctx_last_error(ctx), "at most 64 arenas"), "%s",
				  kvw_ctx_last_error(ctx));
		}
		kvwt_drive1(ctx, 5000, kvwt_rec_done, &rr);
		kvw_req_free(sq);
		kvw_req_free(rq);
	}
	cr_assert_eq(kvw_ep_status(p.server), KVW_OK, "%s", kvw_ctx_last_error(ctx));
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

/* Gathered descriptors (DESCV, wire 1.3): each block of the grant from 16
 * pieces of 512 bytes at a 1 KiB stride of a patterned arena lands piece by
 * piece, in order; the bytes between the pieces are never read into it. */
Test(hostile_shm, descv_gathered_lands_in_order)
{
	static struct hs h;
	shm_only();
	hs_open(&h, NULL);
	int mfd = memfd_create("kvwt-hs-gather", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(mfd, 0);
	uint8_t *pat = malloc(HS_ARENA * 4);
	cr_assert_not_null(pat);
	for (size_t i = 0; i < HS_ARENA * 4; i++)
		pat[i] = (uint8_t)(i * 7 + i / 512);
	cr_assert_eq(pwrite(mfd, pat, HS_ARENA * 4, 0), (ssize_t)(HS_ARENA * 4));
	cr_assert_eq(fcntl(mfd, F_ADD_SEALS, HS_SEALS), 0);
	int ro = hs_ro(mfd);
	hs_mem(&h, 1, HS_ARENA * 4, ro);
	close(ro);
	close(mfd);
	for (uint32_t l = 0; l < 2; l++)
		for (uint32_t i = 0; i < 4; i++)
			hs_descv(&h, l, i, 0, HS_BB, (l * 4 + i) * 2 * HS_BB, 512, 1024, 1);
	hs_expect_ok(&h);
	for (uint32_t l = 0; l < 2; l++)
		for (uint32_t i = 0; i < 4; i++) {
			const uint8_t *b = kvwt_page(&h.dst, l, h.blk[i]);
			for (uint32_t k = 0; k < HS_BB / 512; k++)
				cr_assert_eq(memcmp(b + k * 512, pat + (l * 4 + i) * 2 * HS_BB + k * 1024, 512), 0,
					     "layer %u block %u piece %u is not the source's", l, i, k);
		}
	free(pat);
	hs_close(&h);
}

/* A DESCV whose last piece (or, by a stride that wraps, any piece) lies
 * past the arena fails the request, and nothing is copied. */
Test(hostile_shm, descv_source_outside_arena_refused)
{
	static const uint64_t strides[] = {4400, 1ull << 63, UINT64_MAX / 8};

	shm_only();
	for (size_t k = 0; k < sizeof(strides) / sizeof(strides[0]); k++) {
		static struct hs h;
		hs_open(&h, NULL);
		int mfd = hs_memfd("kvwt-hs-gedge", HS_ARENA, HS_SEALS, 0xee, HS_ARENA);
		int ro = hs_ro(mfd);
		hs_mem(&h, 1, HS_ARENA, ro);
		close(ro);
		close(mfd);
		/* 16 pieces of 512: at stride 4400 the last one ends 976 bytes past the end */
		hs_descv(&h, 0, 0, 0, HS_BB, 0, 512, strides[k], 1);
		static const char *const w[] = { "gathered source runs outside the sender's shared arena",
						 NULL };
		hs_expect_rejected(&h, w);
		hs_close(&h);
	}
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
