/* SPDX-License-Identifier: MIT */
/* ofi driver (libfabric, the path to AWS EFA), internals shared by ofi.c
 * (provider, domain, memory, connections, ops) and ofi_data.c (records on
 * the control stream, grants and their keys, writes, completions).
 * See docs/drivers/ofi.md.
 *
 * Control: a TCP stream per endpoint (drivers/common sock.c, stream.c, as
 * the tcp driver) carries the core's frames in order, plus the driver's own DRV
 * records: the receiver's fabric address (before its first GRANT), one
 * remote key per grant (before that GRANT), the sender's fragment names.
 * Data: fi_writedata (FI_EP_RDM) from the sender's registered arena into an
 * MR over exactly the grant's span; the 8 bytes of CQ data name the write as
 * (token << 32 | fragment number). The receiver joins a write's remote
 * completion with its name, whichever comes first, and only then reports
 * it landed: completion by count, never by order. */
#ifndef KVW_OFI_INT_H
#define KVW_OFI_INT_H

#include "fault.h"
#include "sock.h"

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#define OFI_API FI_VERSION(1, 17) /* the lowest API this code needs */
#define OFI_OPS 256             /* writes in flight per endpoint */
#define OFI_MAX_IOV 16          /* source pieces one write gathers, at most the provider's iov_limit */
#define OFI_ADDR_MAX 256        /* largest fabric address we accept */
#define OFI_CQ_BATCH 32
#define OFI_PEND_MAX (1u << 20) /* names / completions waiting for their other half */

enum ofi_rec_kind {
	OFI_R_ADDR = 1, /* receiver's fabric address (fi_getname) */
	OFI_R_KEY = 2,  /* struct ofi_key_rec + ofi_run[]: the keys of one grant, a key per run */
	OFI_R_DESC = 3, /* struct ofi_desc_rec[]: names of writes just posted */
	OFI_R_DROP = 4, /* u32 token: that grant's key is gone */
	OFI_R_FENCE = 5, /* u32 token: stop writing it; once its writes completed, mark it */
};
#define OFI_N_MARK 0xffffffffu  /* fragment number of a fence's zero-byte marker write */
#define OFI_STASH 1024          /* remote completions kept outside progress (kvw_mem_dereg) */

/* KEY: one MR per run of granted blocks (contiguous in the receiver's
 * arena), runs sorted by address, n_here of them from run `first` on. */
struct ofi_key_rec {
	uint32_t token, n_runs, first, n_here;
};
struct ofi_run {
	uint64_t addr, len;     /* receiver's virtual address of the run */
	uint64_t key;
};
_Static_assert(sizeof(struct ofi_key_rec) == 16 && sizeof(struct ofi_run) == 24, "ofi key rec");
#define OFI_RUNS_PER_REC ((KVW_WIRE_MAX_DRV - sizeof(struct ofi_key_rec)) / sizeof(struct ofi_run))
#define OFI_MAX_RUNS (1u << 22)

struct ofi_desc_rec {
	uint32_t n, rsvd;       /* fragment number in the CQ data's low 32 bits */
	struct kvw_wire_data d;
};
_Static_assert(sizeof(struct ofi_desc_rec) == 32, "ofi desc rec");

/* One table entry (open addressing by id): sender keys by token, receiver
 * half-joined writes by token << 32 | n. */
#define OFI_HAVE_DESC 0x1u
#define OFI_HAVE_CQ 0x2u
struct ofi_ent {
	uint64_t id;
	bool used;
	uint8_t have;
	uint32_t next_n;        /* sender: next fragment number of this grant */
	bool fenced;            /* sender: the receiver fenced it, its fragments are dropped */
	struct ofi_run *run;    /* sender: the grant's runs (owned), n_got of n_runs known */
	uint32_t n_runs, n_got;
	struct kvw_wire_data d;
};

struct ofi_tab {
	struct ofi_ent *e;
	uint32_t cap, used;
};

struct ofi_mem;

struct ofi_op {                 /* one write in flight */
	struct fi_context2 fctx;        /* first: the provider's scratch */
	kvw_req *req;                   /* sender request (may be freed once it ended) */
	const struct ofi_mem *om;       /* its source arena (NULL: a fence marker) */
	uint32_t token, bytes;
	int next_free;
	bool used;
	bool cancelled;                 /* req was aborted: it waits for this write (ofi_cancel) */
	bool held;                      /* fault layer: not posted yet (hf, n: what to post) */
	uint32_t n;
	kvw_frag hf;
};

struct ofi_grant {
	uint32_t token;
	struct fid_mr **mr;     /* one per run */
	uint32_t n_mr;
	kvw_req *fence_req;     /* abort fence: FENCE sent, its marker not seen yet (ofi_revoke) */
	uint64_t fence_t0;
	bool fence_local;       /* the sender is an endpoint of this context: no marker */
	struct ofi_grant *next;
};

struct ofi_drv;

struct ofi_ep {
	struct ofi_drv *od;
	kvw_ep *ep;
	struct fid_ep *fep;
	struct fid_cq *cq;
	struct fid_av *av;
	fi_addr_t peer;
	bool peer_known, addr_sent;
	struct ofi_op op[OFI_OPS];
	int free_op;
	uint32_t n_inflight;
	struct ofi_tab keys;    /* sender: the peer's grant keys */
	struct ofi_tab pend;    /* receiver: writes half joined */
	struct ofi_grant *grants;
	/* fences: the receiver's end when their marker lands (grant->fence_req);
	 * the sender serves FENCE records (their tokens here) */
	uint8_t name[OFI_ADDR_MAX], peer_name[OFI_ADDR_MAX];
	size_t name_len, peer_name_len;
	uint32_t *fences, n_fences, cap_fences;
	uint32_t n_local_fences; /* grants whose fence a sender in this context serves */
	struct fi_cq_data_entry stash[OFI_STASH];
	uint32_t n_stash;
	/* config fault: writes held and posted later, each on its own (SRD's
	 * reliable but unordered delivery); the control stream gets stream.c's */
	struct kvw_fault *fault;
	struct ofi_ep *next;
};

struct ofi_drv {
	struct kvw_socklist sl;  /* first: drivers/common's endpoints and listeners */
	kvw_drv *d;
	char prov[64];          /* provider of the domain ("" until one is opened) */
	struct fi_info *info;
	struct fid_fabric *fab;
	struct fid_domain *dom;
	bool virt_addr, prov_key, mr_local, delivery;
	uint64_t next_key;      /* requested keys of arena MRs (no remote access) */
	uint64_t key_mask;      /* the bits a requested key may have (mr_key_size) */
	uint64_t rand[32];      /* random bits for grant keys, used from the end */
	uint32_t n_rand;
	uint64_t max_msg;
	struct ofi_ep *eps;
	struct ofi_mem *mems;   /* every arena of the context (mem_reg), registered once dom opens */
};

/* An arena's state: set by mem_reg for every arena, mr once the domain is open. */
struct ofi_mem {
	kvw_mem *m;
	struct fid_mr *mr;
	void *desc;
	struct ofi_mem *next;
};

static inline struct ofi_drv *ofi_of(kvw_drv *d) { return d->priv; }
static inline struct ofi_drv *ofi_of_ep(const kvw_ep *ep) { return ofi_of(kvw_core_ep_drv(ep)); }
static inline kvw_ctx *ofi_ctx(const struct ofi_ep *oe) { return kvw_core_ep_ctx(oe->ep); }
static inline struct ofi_ep *ofi_ep_of(const kvw_ep *ep)
{
	return kvw_sockep(ep) ? kvw_sockep(ep)->priv : NULL;
}

/* ofi.c */
struct ofi_ep *ofi_ep_get(kvw_ep *ep);
kvw_status ofi_err(kvw_ctx *ctx, kvw_status st, const char *what, int rc);

/* ofi_data.c */
struct ofi_ent *ofi_tab_find(struct ofi_tab *t, uint64_t id, bool add);
void ofi_tab_del(struct ofi_tab *t, uint64_t id);
void ofi_keys_free(struct ofi_ep *oe);
kvw_status ofi_on_frame(struct kvw_stream *s, const struct kvw_wire_hdr *h, const void *body);
kvw_status ofi_grant_keys(kvw_ep *ep, kvw_req *req, const void *body, size_t len, uint32_t *mem_key);
size_t ofi_post_frags(kvw_ep *ep, const kvw_frag *f, size_t n);
void ofi_cq_poll(struct ofi_ep *oe, bool stash);
kvw_status ofi_fault_open(struct ofi_ep *oe);
void ofi_fault_release(struct ofi_ep *oe, bool all);
void ofi_fault_close(struct ofi_ep *oe);
void ofi_fences_serve(struct ofi_ep *oe);
void ofi_fences_local(struct ofi_ep *oe);
kvw_status ofi_cancel(kvw_ep *ep, kvw_req *req);
kvw_status ofi_revoke(kvw_ep *ep, kvw_req *req);
void ofi_grant_done(kvw_ep *ep, kvw_req *req);
void ofi_grants_free(struct ofi_ep *oe);
void ofi_mem_quiesce(struct ofi_drv *od, const struct ofi_mem *om);

#endif
