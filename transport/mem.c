/* SPDX-License-Identifier: MIT */
/* Memory registration: pinning, shareable arenas with guard pages. */
#include "kvw_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Straight to the kernel: sanitizer runtimes intercept mlock() as a no-op,
 * and the memlock limit must hold in every build. */
static int kvw_sys_mlock(const void *p, size_t len) { return (int)syscall(SYS_mlock, p, len); }
static int kvw_sys_munlock(const void *p, size_t len) { return (int)syscall(SYS_munlock, p, len); }

static kvw_status kvw_mem_pin(kvw_ctx *ctx, kvw_mem *m)
{
	struct rlimit rl;

	if (m->flags & KVW_MEM_NO_PIN)
		return KVW_OK;
	if (kvw_sys_mlock(m->addr, m->len) == 0) {
		m->pinned = true;
		return KVW_OK;
	}
	if (errno != EPERM && errno != ENOMEM && errno != EAGAIN)
		return kvw_set_err(ctx, KVW_ERR_IO, "mlock(%zu bytes): %s", m->len, strerror(errno));
	getrlimit(RLIMIT_MEMLOCK, &rl);
	return kvw_set_err(ctx, KVW_ERR_MEMLOCK,
			   "cannot pin %zu bytes: the memlock limit is %llu bytes. Raise it with "
			   "`ulimit -l unlimited` (or LimitMEMLOCK=infinity in a systemd unit, "
			   "`--ulimit memlock=-1` in docker), or run with CAP_IPC_LOCK",
			   m->len, (unsigned long long)rl.rlim_cur);
}

static kvw_status kvw_mem_register(kvw_ctx *ctx, kvw_mem *m)
{
	uint64_t t0 = kvw_now_ns();
	kvw_status st = kvw_mem_pin(ctx, m);

	if (st != KVW_OK)
		return st;
	m->id = ctx->next_mem_id++;
	for (int i = 0; i < KVW_DRV_MAX; i++) {
		kvw_drv *d = &ctx->drv[i];
		if (!d->open)
			continue;
		st = d->ops->mem_reg(d, m);
		if (st != KVW_OK) {
			for (int j = 0; j < i; j++)
				if (ctx->drv[j].open)
					ctx->drv[j].ops->mem_dereg(&ctx->drv[j], m);
			if (m->pinned)
				kvw_sys_munlock(m->addr, m->len);
			return st;
		}
	}
	m->reg_ns = kvw_now_ns() - t0;
	m->next = ctx->mems;
	ctx->mems = m;
	return KVW_OK;
}

kvw_status kvw_mem_reg(kvw_ctx *ctx, void *addr, size_t len, unsigned flags, kvw_mem **out)
{
	kvw_mem *m;
	kvw_status st;

	if (!ctx || !addr || !len || !out || (flags & ~KVW_MEM_NO_PIN))
		return ctx ? kvw_set_err(ctx, KVW_ERR_INVALID, "kvw_mem_reg: NULL address, zero length or unknown flags")
			   : KVW_ERR_INVALID;
	m = calloc(1, sizeof(*m));
	if (!m)
		return KVW_ERR_NOMEM;
	m->ctx = ctx;
	m->addr = addr;
	m->len = len;
	m->flags = flags;
	m->memfd = -1;
	st = kvw_mem_register(ctx, m);
	if (st != KVW_OK) {
		free(m);
		return st;
	}
	*out = m;
	return KVW_OK;
}

/* Seals the arena's memfd once its one writable mapping exists: its size
 * never changes again and no page can be taken out of it (F_SEAL_FUTURE_WRITE
 * refuses hole punching, write(2) and new writable mappings; ours keeps
 * working). The shm driver hands the memfd to peers, who map it and rely on
 * that: a shrunk file kills a reader with SIGBUS, a punched page makes the
 * reader allocate it. Receivers refuse memfds without these seals. */
static kvw_status kvw_mem_seal(kvw_ctx *ctx, int memfd)
{
	if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) == 0)
		return KVW_OK;
	return kvw_set_err(ctx, KVW_ERR_IO, "cannot seal the arena's memfd (F_ADD_SEALS): %s; "
			   "kvw_mem_alloc needs memfd sealing with F_SEAL_FUTURE_WRITE (Linux 5.1+)",
			   strerror(errno));
}

kvw_status kvw_mem_alloc(kvw_ctx *ctx, size_t len, unsigned flags, kvw_mem **out)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), rlen;
	kvw_mem *m;
	kvw_status st = KVW_ERR_NOMEM;

	if (!ctx || !len || !out || (flags & ~KVW_MEM_NO_PIN))
		return KVW_ERR_INVALID;
	rlen = (len + pg - 1) / pg * pg;
	m = calloc(1, sizeof(*m));
	if (!m)
		return KVW_ERR_NOMEM;
	m->ctx = ctx;
	m->flags = flags;
	m->len = len;
	m->memfd = memfd_create("kvwire-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (m->memfd < 0 || ftruncate(m->memfd, (off_t)rlen) != 0) {
		st = kvw_set_err(ctx, KVW_ERR_NOMEM, "memfd for %zu bytes: %s", len, strerror(errno));
		goto err_close_memfd;
	}
	m->map_len = rlen + 2 * pg; /* a PROT_NONE guard page on each side */
	m->map_base = mmap(NULL, m->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m->map_base == MAP_FAILED)
		goto err_close_memfd;
	m->addr = mmap(m->map_base + pg, rlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		       m->memfd, 0);
	if (m->addr == MAP_FAILED)
		goto err_unmap;
	if ((st = kvw_mem_seal(ctx, m->memfd)) != KVW_OK)
		goto err_unmap;
	st = kvw_mem_register(ctx, m);
	if (st != KVW_OK)
		goto err_unmap;
	*out = m;
	return KVW_OK;

err_unmap:
	munmap(m->map_base, m->map_len);
err_close_memfd:
	if (m->memfd >= 0)
		close(m->memfd);
	free(m);
	return st;
}

kvw_status kvw_mem_dereg(kvw_mem *m)
{
	kvw_ctx *ctx;

	if (!m)
		return KVW_ERR_INVALID;
	ctx = m->ctx;
	if (m->users)
		return kvw_set_err(ctx, KVW_ERR_BUSY,
				   "memory %u still has %u layouts/requests using it: destroy the "
				   "layouts and free the requests first", m->id, m->users);
	for (int i = 0; i < KVW_DRV_MAX; i++)
		if (ctx->drv[i].open)
			ctx->drv[i].ops->mem_dereg(&ctx->drv[i], m);
	for (kvw_mem **pp = &ctx->mems; *pp; pp = &(*pp)->next) {
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	}
	if (m->pinned)
		kvw_sys_munlock(m->addr, m->len);
	if (m->map_base) {
		munmap(m->map_base, m->map_len);
		close(m->memfd);
	}
	free(m);
	return KVW_OK;
}

void *kvw_mem_addr(const kvw_mem *m) { return m ? m->addr : NULL; }
size_t kvw_mem_len(const kvw_mem *m) { return m ? m->len : 0; }
uint64_t kvw_mem_reg_ns(const kvw_mem *m) { return m ? m->reg_ns : 0; }
