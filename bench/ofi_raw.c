/* SPDX-License-Identifier: MIT */
/* kvwire-ofi-raw: the provider's own ceiling for `kvwire-bench compare
 * --driver ofi`, measured as fabtests' fi_rma_bw measures it (-o writedata):
 * two processes, FI_EP_RDM, registered buffers, fi_writemsg with remote CQ
 * data, a window of writes in flight, the receiver counting its remote
 * completions. The same hints as drivers/ofi (FI_RMA, FI_CONTEXT modes, the
 * same mr_mode bits, FI_DELIVERY_COMPLETE when the provider has it, else
 * transmit completion, as the driver falls back), so the two differ only in
 * what kvwire adds on top. Address, key and base travel over a TCP socket
 * (the out-of-band exchange, as fabtests do it).
 *
 *   receiver: kvwire-ofi-raw -P PORT [-p PROVIDER]              (one run, then exits)
 *   sender:   kvwire-ofi-raw -P PORT [-p PROVIDER] -s SIZE -n ITERS -w WINDOW HOST
 *
 * The sender prints one line "ofi-raw ok provider=... gbit=..." (or
 * "ofi-raw failed: sentence"); the receiver checks every byte of its buffer
 * (a fixed pattern) once the count is reached. Not part of libkvwire. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sched.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RAW_API FI_VERSION(1, 17)
#define RAW_MAX_WINDOW 1024
#define RAW_TIMEOUT_NS (120ull * 1000000000ull)

struct raw_params {
	uint64_t size, iters, warm;
	uint32_t window, rsvd;
};

struct raw_target {
	uint64_t base, key;
	uint32_t addr_len, delivery;
	uint8_t addr[256];
};

struct raw {
	struct fi_info *info;
	struct fid_fabric *fab;
	struct fid_domain *dom;
	struct fid_ep *ep;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_mr *mr;
	bool delivery;
	uint8_t *buf;
	size_t len;
	struct fi_context2 *ctx;
};

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int fail(const char *what, int rc)
{
	printf("ofi-raw failed: %s: %s\n", what, rc ? fi_strerror(rc < 0 ? -rc : rc) : "see above");
	fflush(stdout);
	return 1;
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 131u + 7u + (i >> 12));
}

/* ------------------------------------------------------------- OOB socket */
static int xfer(int fd, void *p, size_t n, bool out)
{
	uint8_t *b = p;
	while (n) {
		ssize_t k = out ? write(fd, b, n) : read(fd, b, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

static int oob_listen_accept(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
		return -1;
	int fd = accept(l, NULL, NULL);
	close(l);
	return fd;
}

static int oob_connect(const char *host, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return -1;
	for (int i = 0; i < 500; i++) { /* the receiver may still be starting */
		int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		if (fd >= 0 && !connect(fd, (struct sockaddr *)&a, sizeof(a))) {
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return fd;
		}
		if (fd >= 0)
			close(fd);
		usleep(10000);
	}
	return -1;
}

/* ---------------------------------------------------------------- fabric */
/* drivers/ofi's ofi_hints, word for word. */
static struct fi_info *raw_hints(const char *prov, bool delivery)
{
	struct fi_info *h = fi_allocinfo();
	if (!h)
		return NULL;
	h->ep_attr->type = FI_EP_RDM;
	h->caps = FI_RMA | FI_WRITE | FI_REMOTE_WRITE;
	h->mode = FI_CONTEXT | FI_CONTEXT2;
	h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	h->domain_attr->threading = FI_THREAD_DOMAIN;
	h->tx_attr->op_flags = delivery ? FI_DELIVERY_COMPLETE : 0;
	if (prov && *prov)
		h->fabric_attr->prov_name = strdup(prov);
	return h;
}

static int raw_open(struct raw *r, const char *prov)
{
	struct fi_cq_attr ca = {.format = FI_CQ_FORMAT_DATA, .size = 4 * RAW_MAX_WINDOW, .wait_obj = FI_WAIT_NONE};
	struct fi_av_attr aa = {.type = FI_AV_UNSPEC, .count = 4};
	int rc = -FI_ENODATA;

	for (int pass = 0; pass < 2 && rc; pass++) {
		struct fi_info *h = raw_hints(prov, pass == 0);
		rc = h ? fi_getinfo(RAW_API, NULL, NULL, 0, h, &r->info) : -FI_ENOMEM;
		fi_freeinfo(h);
		r->delivery = pass == 0;
	}
	if (rc)
		return fail("fi_getinfo (no provider offers RDM + RMA writes with these hints)", rc);
	if ((rc = fi_fabric(r->info->fabric_attr, &r->fab, NULL)) ||
	    (rc = fi_domain(r->fab, r->info, &r->dom, NULL)) || (rc = fi_cq_open(r->dom, &ca, &r->cq, NULL)) ||
	    (rc = fi_av_open(r->dom, &aa, &r->av, NULL)) || (rc = fi_endpoint(r->dom, r->info, &r->ep, NULL)) ||
	    (rc = fi_ep_bind(r->ep, &r->av->fid, 0)) ||
	    (rc = fi_ep_bind(r->ep, &r->cq->fid, FI_TRANSMIT | FI_RECV)) || (rc = fi_enable(r->ep)))
		return fail("opening the fabric, domain, CQ, AV and endpoint", rc);
	return 0;
}

static int raw_buf(struct raw *r, size_t len, uint64_t access)
{
	r->len = len;
	if (!(r->buf = aligned_alloc(4096, (len + 4095) & ~(size_t)4095)))
		return fail("out of memory for the buffer", 0);
	int rc = fi_mr_reg(r->dom, r->buf, len, access, 0, 1, 0, &r->mr, NULL);
	return rc ? fail("fi_mr_reg", rc) : 0;
}

static void raw_close(struct raw *r)
{
	struct fid *f[] = {r->mr ? &r->mr->fid : NULL, r->ep ? &r->ep->fid : NULL, r->av ? &r->av->fid : NULL,
			   r->cq ? &r->cq->fid : NULL, r->dom ? &r->dom->fid : NULL, r->fab ? &r->fab->fid : NULL};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (f[i])
			fi_close(f[i]);
	if (r->info)
		fi_freeinfo(r->info);
	free(r->buf);
	free(r->ctx);
}

/* Reads the CQ once: entries (of which *remote were remote CQ data), or -1 on an error entry. */
static int raw_reap(struct raw *r, uint64_t *remote)
{
	struct fi_cq_data_entry e[32];
	ssize_t n = fi_cq_read(r->cq, e, 32);
	if (n == -FI_EAGAIN)
		return 0;
	if (n == -FI_EAVAIL) {
		struct fi_cq_err_entry ee = {0};
		fi_cq_readerr(r->cq, &ee, 0);
		printf("ofi-raw failed: a completion in error: %s (%s)\n", fi_strerror(ee.err),
		       fi_cq_strerror(r->cq, ee.prov_errno, ee.err_data, NULL, 0));
		return -1;
	}
	if (n < 0)
		return fail("fi_cq_read", (int)n) ? -1 : -1;
	for (ssize_t i = 0; i < n; i++)
		if (e[i].flags & FI_REMOTE_CQ_DATA)
			(*remote)++;
	return (int)n;
}

/* An empty CQ read: yields the core when -y was given (fabtests' -c yield),
 * else spins (their default). True every 4096th time: look at the clock. */
static bool g_yield;
static bool raw_idle(unsigned *idle)
{
	if (g_yield)
		sched_yield();
	return (++*idle & 4095) == 0;
}

/* -------------------------------------------------------------- receiver */
static int receiver(int port, const char *prov)
{
	struct raw r = {0};
	struct raw_params pr;
	struct raw_target t = {0};
	size_t alen = sizeof(t.addr);
	uint64_t got = 0;
	int fd = oob_listen_accept(port), rc = 1;

	if (fd < 0)
		return fail("listening for the sender on TCP", errno);
	if (xfer(fd, &pr, sizeof(pr), false) || pr.window == 0 || pr.window > RAW_MAX_WINDOW || !pr.size)
		return fail("reading the sender's parameters", 0);
	if (raw_open(&r, prov) || raw_buf(&r, pr.size * pr.window, FI_REMOTE_WRITE))
		goto out;
	memset(r.buf, 0, r.len);
	if ((rc = fi_getname(&r.ep->fid, t.addr, &alen))) {
		rc = fail("fi_getname", rc);
		goto out;
	}
	t.addr_len = (uint32_t)alen;
	t.key = fi_mr_key(r.mr);
	t.base = r.info->domain_attr->mr_mode & FI_MR_VIRT_ADDR ? (uint64_t)(uintptr_t)r.buf : 0;
	t.delivery = r.delivery;
	rc = 1;
	if (xfer(fd, &t, sizeof(t), true))
		goto out;
	uint64_t want = pr.warm + pr.iters, end = now_ns() + RAW_TIMEOUT_NS;
	for (unsigned idle = 0; got < want; ) {
		int n = raw_reap(&r, &got);
		if (n < 0)
			goto out;
		if (n == 0 && raw_idle(&idle) && now_ns() > end)
			break;
	}
	if (xfer(fd, &got, sizeof(got), true)) /* first, so the sender's clock stops here */
		goto out;
	uint64_t bad = got < want;
	for (size_t i = 0; !bad && i < r.len; i++)
		bad = r.buf[i] != pattern(i % pr.size);
	rc = xfer(fd, &bad, sizeof(bad), true) ? 1 : (int)bad;
out:
	close(fd);
	raw_close(&r);
	return rc;
}

/* ---------------------------------------------------------------- sender */
/* Posts writes [*posted, upto) keeping at most window in flight; reaps. */
static int pump(struct raw *r, const struct raw_params *pr, const struct raw_target *t, fi_addr_t peer,
		uint64_t upto, uint64_t *posted, uint64_t *done)
{
	uint64_t flags = FI_REMOTE_CQ_DATA | FI_COMPLETION | (r->delivery ? FI_DELIVERY_COMPLETE : 0), rem = 0;
	void *desc = fi_mr_desc(r->mr);
	uint64_t end = now_ns() + RAW_TIMEOUT_NS;
	unsigned idle = 0;

	while (*done < upto) {
		while (*posted < upto && *posted - *done < pr->window) {
			uint64_t slot = *posted % pr->window;
			struct iovec iov = {.iov_base = r->buf + slot * pr->size, .iov_len = pr->size};
			struct fi_rma_iov rma = {.addr = t->base + slot * pr->size, .len = pr->size, .key = t->key};
			struct fi_msg_rma m = {.msg_iov = &iov, .desc = &desc, .iov_count = 1, .addr = peer,
					       .rma_iov = &rma, .rma_iov_count = 1, .context = &r->ctx[slot],
					       .data = *posted};
			ssize_t rc = fi_writemsg(r->ep, &m, flags);
			if (rc == -FI_EAGAIN)
				break;
			if (rc)
				return fail("fi_writemsg", (int)rc);
			(*posted)++;
		}
		int n = raw_reap(r, &rem);
		if (n < 0)
			return 1;
		*done += (uint64_t)n - rem;
		rem = 0;
		if (n == 0 && raw_idle(&idle) && now_ns() > end)
			return fail("the writes did not complete within 120 s", 0);
	}
	return 0;
}

static int sender(const char *host, int port, const char *prov, struct raw_params pr)
{
	struct raw r = {0};
	struct raw_target t;
	fi_addr_t peer;
	uint64_t posted = 0, done = 0, reply[2];
	int fd = oob_connect(host, port), rc = 1;

	if (fd < 0)
		return fail("connecting to the receiver over TCP", errno);
	if (xfer(fd, &pr, sizeof(pr), true) || xfer(fd, &t, sizeof(t), false)) {
		rc = fail("the receiver ended before its address came", 0);
		goto out;
	}
	if (raw_open(&r, prov) || raw_buf(&r, pr.size * pr.window, FI_WRITE | FI_READ))
		goto out;
	if (!(r.ctx = calloc(pr.window, sizeof(*r.ctx)))) {
		rc = fail("out of memory", 0);
		goto out;
	}
	for (size_t i = 0; i < r.len; i++)
		r.buf[i] = pattern(i % pr.size);
	if (fi_av_insert(r.av, t.addr, 1, &peer, 0, NULL) != 1) {
		rc = fail("fi_av_insert of the receiver's address", 0);
		goto out;
	}
	if (pump(&r, &pr, &t, peer, pr.warm, &posted, &done)) /* connection set-up, caches */
		goto out;
	uint64_t t0 = now_ns();
	if (pump(&r, &pr, &t, peer, pr.warm + pr.iters, &posted, &done))
		goto out;
	if (xfer(fd, &reply[0], sizeof(reply[0]), false)) { /* the receiver's count reached its total */
		rc = fail("the receiver ended before its count was reached", 0);
		goto out;
	}
	double sec = (double)(now_ns() - t0) / 1e9;
	if (xfer(fd, &reply[1], sizeof(reply[1]), false)) { /* its check of every byte, after the clock */
		rc = fail("the receiver ended before its byte check", 0);
		goto out;
	}
	if (reply[0] != pr.warm + pr.iters || reply[1]) {
		printf("ofi-raw failed: the receiver counted %llu of %llu remote completions%s\n",
		       (unsigned long long)reply[0], (unsigned long long)(pr.warm + pr.iters),
		       reply[1] && reply[0] == pr.warm + pr.iters ? ", and its bytes differ" : "");
		goto out;
	}
	printf("ofi-raw ok provider=%s fabric=%s completion=%s size=%llu iters=%llu window=%u seconds=%.6f "
	       "gbit=%.4f verified=yes\n", r.info->fabric_attr->prov_name, r.info->fabric_attr->name,
	       r.delivery ? "FI_DELIVERY_COMPLETE" : "FI_TRANSMIT_COMPLETE", (unsigned long long)pr.size,
	       (unsigned long long)pr.iters, pr.window, sec, (double)pr.iters * (double)pr.size * 8 / sec / 1e9);
	rc = 0;
out:
	close(fd);
	raw_close(&r);
	return rc;
}

static void usage(void)
{
	fprintf(stderr, "usage: kvwire-ofi-raw -P PORT [-p PROVIDER]   (receiver)\n"
			"       kvwire-ofi-raw -P PORT [-p PROVIDER] -s SIZE -n ITERS [-w WINDOW] HOST   (sender)\n");
}

int main(int argc, char **argv)
{
	struct raw_params pr = {.size = 65536, .iters = 1000, .window = 16};
	const char *prov = getenv("FI_PROVIDER");
	int port = 0, c;

	while ((c = getopt(argc, argv, "P:p:s:n:w:y")) != -1) {
		switch (c) {
		case 'P': port = atoi(optarg); break;
		case 'p': prov = optarg; break;
		case 's': pr.size = strtoull(optarg, NULL, 0); break;
		case 'n': pr.iters = strtoull(optarg, NULL, 0); break;
		case 'w': pr.window = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'y': g_yield = true; break;
		default: usage(); return 2;
		}
	}
	if (port <= 0 || !pr.size || !pr.iters || !pr.window || pr.window > RAW_MAX_WINDOW) {
		usage();
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	pr.warm = pr.window;
	if (optind < argc)
		return sender(argv[optind], port, prov, pr);
	return receiver(port, prov);
}
