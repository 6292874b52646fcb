/* SPDX-License-Identifier: MIT */
/* kvwire doctor: host checks, each with a verdict (ok/warn/fail) and a fix.
 * Exit 1 when any check fails (with --strict also on warnings), else 0. */
#include "cli.h"
#include "kvwire/kvwire.h"
#include "kvw_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <unistd.h>

#define CLI_DEFAULT_POOL (1ull << 30)

static void doc_add(json_t *checks, const char *name, const char *verdict, const char *fix,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void doc_add(json_t *checks, const char *name, const char *verdict, const char *fix,
		    const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	json_array_append_new(checks, json_pack("{s:s,s:s,s:s,s:s}", "check", name, "verdict", verdict,
						"detail", detail, "fix", fix ? fix : ""));
}

/* CAP_IPC_LOCK in the effective set (/proc/self/status CapEff, bit 14). */
static bool doc_cap_ipc_lock(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	unsigned long long eff = 0;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "CapEff:", 7))
			eff = strtoull(line + 7, NULL, 16);
	if (f)
		fclose(f);
	return eff & (1ull << 14);
}

static long long doc_meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	long long v = -1;
	size_t kl = strlen(key);
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			v = strtoll(line + kl + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

static void doc_memlock(json_t *checks, uint64_t pool)
{
	struct rlimit rl;
	char a[32], b[32], fix[256];
	getrlimit(RLIMIT_MEMLOCK, &rl);
	bool cap = doc_cap_ipc_lock();
	long long avail_kb = doc_meminfo("MemAvailable");
	snprintf(fix, sizeof(fix), "raise the limit to at least the pool: `ulimit -l unlimited`, "
		 "LimitMEMLOCK=infinity (systemd), `--ulimit memlock=-1` (docker), or grant CAP_IPC_LOCK");
	cli_fmt_bytes(pool, b, sizeof(b));
	if (rl.rlim_cur == RLIM_INFINITY)
		snprintf(a, sizeof(a), "unlimited");
	else
		cli_fmt_bytes(rl.rlim_cur, a, sizeof(a));
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= pool)
		doc_add(checks, "memlock", "ok", NULL, "RLIMIT_MEMLOCK %s covers the pool of %s", a, b);
	else if (cap)
		doc_add(checks, "memlock", "ok", NULL, "RLIMIT_MEMLOCK %s is below the pool of %s, but "
			"CAP_IPC_LOCK lifts the limit", a, b);
	else
		doc_add(checks, "memlock", "fail", fix, "RLIMIT_MEMLOCK %s is below the pool of %s and "
			"CAP_IPC_LOCK is absent: pinning fails with KVW_ERR_MEMLOCK", a, b);
	if (avail_kb >= 0 && pool / 1024 > (uint64_t)avail_kb)
		doc_add(checks, "memory", "warn", "use a smaller pool (--pool-bytes) or free memory",
			"the pool of %s exceeds MemAvailable (%lld KiB)", b, avail_kb);
}

static bool doc_built(const char *drv)
{
	return strstr(kvw_drivers_built(), drv) != NULL;
}

static void doc_hugepages(json_t *checks)
{
	long long total = doc_meminfo("HugePages_Total"), fre = doc_meminfo("HugePages_Free");
	long long sz = doc_meminfo("Hugepagesize");
	const char *fix = "reserve hugepages: `echo 1024 > /sys/kernel/mm/hugepages/"
			  "hugepages-2048kB/nr_hugepages` (or hugepages= on the kernel command line)";
	if (total > 0 && fre > 0)
		doc_add(checks, "hugepages", "ok", NULL, "%lld of %lld hugepages of %lld KiB free",
			fre, total, sz);
	else if (!doc_built("dpdk"))
		doc_add(checks, "hugepages", "ok", NULL, "no free hugepages (%lld total); only the "
			"dpdk driver needs them and it is not built", total);
	else
		doc_add(checks, "hugepages", "warn", fix, "no free hugepages (%lld total, %lld free): "
			"the dpdk driver needs them unless its EAL runs with --no-huge", total, fre);
}

static void doc_rdma_ports(json_t *checks, const json_t *devs, const char *why)
{
	const json_t *d, *p;
	size_t i, j;
	if (!json_array_size(devs)) {
		doc_add(checks, "rdma-devices", "warn", "for Soft-RoCE: `modprobe rdma_rxe && rdma link "
			"add rxe0 type rxe netdev IFACE`; for hardware, load its driver (mlx5_ib, ...)",
			"%s; the rdma driver is unusable (tcp and shm still work)", why);
		return;
	}
	json_array_foreach(devs, i, d) {
		const char *name = cli_jstr(d, "name");
		if (json_is_true(json_object_get(d, "software")))
			doc_add(checks, "soft-rdma", "warn", "fine for tests; use a hardware RNIC for speed",
				"%s is software RDMA (%s): CPU-bound, expect far below line rate", name,
				cli_jstr(d, "driver"));
		if (cli_have_verbs() && !json_is_true(json_object_get(d, "verbs")))
			doc_add(checks, "verbs-provider", "fail", "install the userspace provider "
				"(Debian: ibverbs-providers)", "%s exists in the kernel but libibverbs "
				"cannot open it", name);
		json_array_foreach(json_object_get(d, "ports"), j, p) {
			if (!strcmp(cli_jstr(p, "state"), "ACTIVE"))
				doc_add(checks, "port-state", "ok", NULL, "%s port %lld ACTIVE", name,
					cli_jint(p, "port"));
			else {
				const char *nd = cli_jstr(p, "netdev");
				char fix[256];
				snprintf(fix, sizeof(fix), "bring the link up: `ip link set %s up` (RoCE/rxe) "
					 "or check cable and subnet manager (IB)", *nd ? nd : "NETDEV");
				doc_add(checks, "port-state", "fail", fix, "%s port %lld is %s (%s), netdev "
					"'%s'", name, cli_jint(p, "port"), cli_jstr(p, "state"),
					cli_jstr(p, "phys_state"), nd);
			}
		}
	}
}

/* RoCE v2 headers around a payload of the active MTU. Fail: the largest
 * (IPv6 40 + UDP 8 + BTH 12 + RETH 16 + ICRC 4 = 80, rxe's RXE_MAX_HDR_LENGTH)
 * no longer fits. Warn: a larger MTU fits even by the most conservative rule
 * a kernel driver applies (iboe_get_mtu: 40 + 8 + 12 + 4 + 28 + 4 = 96). */
#define DOC_ROCE_HDR_MAX 80
#define DOC_ROCE_HDR_IBOE 96

/* Largest RoCE payload MTU that fits the netdev MTU (room for headers). */
static void doc_mtu(json_t *checks, const json_t *devs)
{
	const json_t *d, *p;
	size_t i, j;
	json_array_foreach(devs, i, d) json_array_foreach(json_object_get(d, "ports"), j, p) {
		const char *nd = cli_jstr(p, "netdev");
		long long amtu = cli_jint(p, "active_mtu");
		if (!*nd || strcmp(cli_jstr(p, "link_layer"), "Ethernet"))
			continue;
		char path[300];
		snprintf(path, sizeof(path), "/sys/class/net/%s/mtu", nd);
		long long nmtu = cli_read_ll(path, -1);
		long long best = 256;
		while (best * 2 <= 4096 && best * 2 + DOC_ROCE_HDR_IBOE <= nmtu)
			best *= 2;
		if (amtu <= 0 || nmtu < 0)
			doc_add(checks, "mtu", "warn", "build kvwire with libibverbs to read the active MTU",
				"%s port %lld: cannot compare MTUs (netdev %s mtu %lld)",
				cli_jstr(d, "name"), cli_jint(p, "port"), nd, nmtu);
		else if (amtu + DOC_ROCE_HDR_MAX > nmtu)
			doc_add(checks, "mtu", "fail", "raise the netdev MTU (`ip link set NETDEV mtu 9000`) "
				"or recreate the RDMA link after changing it",
				"%s port %lld active MTU %lld plus %d bytes of RoCE v2 headers does not "
				"fit %s MTU %lld", cli_jstr(d, "name"), cli_jint(p, "port"), amtu,
				DOC_ROCE_HDR_MAX, nd, nmtu);
		else if (amtu < best)
			doc_add(checks, "mtu", "warn", "recreate the rxe link or reset the port after "
				"changing the netdev MTU", "%s port %lld active MTU %lld, but %s MTU %lld "
				"allows %lld", cli_jstr(d, "name"), cli_jint(p, "port"), amtu, nd, nmtu, best);
		else
			doc_add(checks, "mtu", "ok", NULL, "%s port %lld active MTU %lld fits %s MTU %lld",
				cli_jstr(d, "name"), cli_jint(p, "port"), amtu, nd, nmtu);
	}
}

/* The GID an address must appear as: IPv4-mapped or the IPv6 itself. */
static void doc_addr_gid(const struct sockaddr *sa, char *gid, size_t len, char *txt, size_t tlen)
{
	uint8_t b[16] = { 0 };
	if (sa->sa_family == AF_INET) {
		b[10] = b[11] = 0xff;
		memcpy(b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, txt, (socklen_t)tlen);
	} else {
		memcpy(b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		inet_ntop(AF_INET6, b, txt, (socklen_t)tlen);
	}
	snprintf(gid, len, "%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

static bool doc_has_gid(const json_t *devs, const char *nd, const char *gid)
{
	const json_t *d, *p, *g;
	size_t i, j, k;
	json_array_foreach(devs, i, d) json_array_foreach(json_object_get(d, "ports"), j, p)
		json_array_foreach(json_object_get(p, "gids"), k, g)
			if (!strcmp(cli_jstr(g, "netdev"), nd) && !strcmp(cli_jstr(g, "gid"), gid) &&
			    !strcmp(cli_jstr(g, "type"), "RoCE v2"))
				return true;
	return false;
}

static bool doc_is_rdma_netdev(const json_t *devs, const char *nd)
{
	const json_t *d, *p;
	size_t i, j;
	json_array_foreach(devs, i, d) json_array_foreach(json_object_get(d, "ports"), j, p)
		if (!strcmp(cli_jstr(p, "netdev"), nd))
			return true;
	return false;
}

/* The rdma driver uses a port only through an IPv4 RoCE v2 GID; the kernel
 * makes one per IPv4 address of the netdev, so an address-less netdev leaves
 * its port unusable (nothing in the address loop below notices that). */
static void doc_port_ipv4_gid(json_t *checks, const json_t *devs)
{
	const json_t *d, *p;
	size_t i, j;
	json_array_foreach(devs, i, d) json_array_foreach(json_object_get(d, "ports"), j, p) {
		const char *nd = cli_jstr(p, "netdev");
		char fix[256];
		if (strcmp(cli_jstr(p, "link_layer"), "Ethernet") || cli_jint(p, "ipv4_gid_index") >= 0)
			continue;
		snprintf(fix, sizeof(fix), "give %s an IPv4 address (`ip addr add ADDR/PREFIX dev %s`): "
			 "the kernel adds its RoCE v2 GID at once", *nd ? nd : "the netdev",
			 *nd ? nd : "NETDEV");
		doc_add(checks, "roce-gid", "fail", fix, "%s port %lld (netdev '%s') has no IPv4 RoCE "
			"v2 GID: the rdma driver cannot use it", cli_jstr(d, "name"),
			cli_jint(p, "port"), nd);
	}
}

static void doc_gids(json_t *checks, const json_t *devs)
{
	struct ifaddrs *ifa0 = NULL;
	if (!json_array_size(devs) || getifaddrs(&ifa0))
		return;
	for (struct ifaddrs *ifa = ifa0; ifa; ifa = ifa->ifa_next) {
		if (!ifa->ifa_addr || (ifa->ifa_addr->sa_family != AF_INET &&
				       ifa->ifa_addr->sa_family != AF_INET6))
			continue;
		if (!doc_is_rdma_netdev(devs, ifa->ifa_name))
			continue;
		char gid[64], txt[64];
		doc_addr_gid(ifa->ifa_addr, gid, sizeof(gid), txt, sizeof(txt));
		if (doc_has_gid(devs, ifa->ifa_name, gid))
			doc_add(checks, "roce-gid", "ok", NULL, "%s %s has RoCE v2 GID %s", ifa->ifa_name,
				txt, gid);
		else
			doc_add(checks, "roce-gid", "fail", "the GID table follows netdev addresses: check "
				"`ip addr`, bring the netdev up, or delete and re-add the rxe link; set "
				"rdma_gid explicitly if the index moved", "%s address %s has no RoCE v2 GID "
				"(%s)", ifa->ifa_name, txt, gid);
	}
	freeifaddrs(ifa0);
}

static int doc_count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return d ? n : -1;
}

/* The rdma driver's own verdict on each device (ops->probe through the
 * library, the rule kvw_ctx_create applies), next to the sysfs checks that
 * explain it: ok for a device it would use, warn with its reason else. */
static void doc_rdma_driver(json_t *checks, const json_t *devs)
{
	struct kvw_probe_entry e[16];
	size_t n = 0;
	if (!json_array_size(devs) || !doc_built("rdma"))
		return;
	if (kvw_driver_probe("rdma", e, 16, &n) != KVW_OK) {
		doc_add(checks, "rdma-driver", "warn", "see the sentence", "the rdma driver's probe "
			"failed: %s", kvw_ctx_last_error(NULL));
		return;
	}
	for (size_t i = 0; i < n && i < 16; i++) {
		if (e[i].usable)
			doc_add(checks, "rdma-driver", "ok", NULL, "%s is usable by the rdma driver: %s",
				e[i].name, e[i].details);
		else if (e[i].by_config)
			doc_add(checks, "rdma-driver", "ok", NULL, "%s", e[i].reason);
		else
			doc_add(checks, "rdma-driver", "warn", e[i].reason, "%s is not usable by the "
				"rdma driver", e[i].name);
	}
}

/* The ofi driver's verdict (ops->probe: libfabric's providers with RDM
 * endpoints and RMA writes): ok naming the usable ones, warn when none is. */
static void doc_ofi_driver(json_t *checks)
{
	struct kvw_probe_entry e[32];
	char names[512] = "";
	size_t n = 0, len = 0, usable = 0;
	if (!doc_built("ofi"))
		return;
	if (kvw_driver_probe("ofi", e, 32, &n) != KVW_OK) {
		doc_add(checks, "ofi-providers", "warn", "see the sentence", "%s", kvw_ctx_last_error(NULL));
		return;
	}
	for (size_t i = 0; i < n && i < 32; i++) {
		if (!e[i].usable)
			continue;
		usable++;
		if (len < sizeof(names) - 1)
			len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", len ? ", " : "",
						e[i].name);
	}
	if (usable)
		doc_add(checks, "ofi-providers", "ok", NULL, "%zu libfabric provider domain(s) usable by "
			"the ofi driver: %s", usable, names);
	else
		doc_add(checks, "ofi-providers", "warn", n ? e[0].reason : "see `fi_info -l`",
			"libfabric lists %zu provider domain(s), none usable by the ofi driver", n);
}

static void doc_iommu(json_t *checks)
{
	int groups = doc_count_dir("/sys/kernel/iommu_groups");
	int vfio = doc_count_dir("/dev/vfio");
	bool noiommu = cli_read_ll("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", 0) ||
		       false;
	const char *fix = "enable the IOMMU (intel_iommu=on / amd_iommu=on), `modprobe vfio-pci`, "
			  "or use vdevs (net_memif, net_af_packet) that need no bound NIC";
	if (!doc_built("dpdk"))
		doc_add(checks, "iommu-vfio", "ok", NULL, "dpdk driver not built; %d IOMMU groups, "
			"/dev/vfio %s", groups < 0 ? 0 : groups, vfio < 0 ? "absent" : "present");
	else if (groups > 0 && vfio >= 0)
		doc_add(checks, "iommu-vfio", "ok", NULL, "%d IOMMU groups, /dev/vfio present", groups);
	else
		doc_add(checks, "iommu-vfio", "warn", fix, "%d IOMMU groups, /dev/vfio %s%s: physical "
			"NICs cannot be bound to vfio-pci", groups < 0 ? 0 : groups,
			vfio < 0 ? "absent" : "present", noiommu ? " (no-IOMMU mode on)" : "");
}

/* Whether any CPU of a "0-3,8,10-11" list is in set. */
static bool doc_cpulist_hits(const char *list, const cpu_set_t *set)
{
	const char *p = list;
	while (*p) {
		char *end;
		long a = strtol(p, &end, 10), b = a;
		if (end == p)
			break;
		if (*end == '-')
			b = strtol(end + 1, &end, 10);
		for (long c = a; c <= b && c < CPU_SETSIZE; c++)
			if (c >= 0 && CPU_ISSET(c, set))
				return true;
		p = *end == ',' ? end + 1 : end;
	}
	return false;
}

/* NUMA nodes whose CPUs this process may run on, as a bit mask. */
static unsigned long long doc_my_nodes(void)
{
	cpu_set_t set;
	unsigned long long mask = 0;
	if (sched_getaffinity(0, sizeof(set), &set))
		return 0;
	for (int n = 0; n < 64; n++) {
		char p[96], list[1024];
		snprintf(p, sizeof(p), "/sys/devices/system/node/node%d/cpulist", n);
		if (cli_read_line(p, list, sizeof(list)) && doc_cpulist_hits(list, &set))
			mask |= 1ull << n;
	}
	return mask;
}

static void doc_numa(json_t *checks, const json_t *devs, const json_t *dpdk)
{
	int nodes = 0;
	for (int n = 0; n < 64; n++) {
		char p[64];
		snprintf(p, sizeof(p), "/sys/devices/system/node/node%d", n);
		nodes += !access(p, F_OK);
	}
	if (nodes <= 1) {
		doc_add(checks, "numa", "ok", NULL, "%d NUMA node: placement cannot go wrong", nodes ? nodes : 1);
		return;
	}
	unsigned long long mine = doc_my_nodes();
	const json_t *d;
	size_t i;
	int seen = 0;
	for (int pass = 0; pass < 2; pass++) json_array_foreach(pass ? dpdk : devs, i, d) {
		long long node = cli_jint(d, "numa_node");
		const char *name = pass ? cli_jstr(d, "pci") : cli_jstr(d, "name");
		seen++;
		if (node < 0 || (mine & (1ull << node)) == mine)
			doc_add(checks, "numa", "ok", NULL, "%s on node %lld; this process runs on its "
				"node's CPUs only", name, node);
		else
			doc_add(checks, "numa", "warn", "run the process and allocate the pool on the NIC's "
				"node: `numactl --cpunodebind=N --membind=N`", "%s is on NUMA node %lld but "
				"this process may run on other nodes (mask 0x%llx)", name, node, mine);
	}
	if (!seen)
		doc_add(checks, "numa", "ok", NULL, "%d NUMA nodes, no RDMA or DPDK NIC to place", nodes);
}

static void doc_human(const json_t *doc)
{
	const json_t *c;
	size_t i;
	json_array_foreach(json_object_get(doc, "checks"), i, c) {
		const char *v = cli_jstr(c, "verdict");
		printf("[%-4s] %-14s %s\n", v, cli_jstr(c, "check"), cli_jstr(c, "detail"));
		if (strcmp(v, "ok"))
			printf("       %-14s fix: %s\n", "", cli_jstr(c, "fix"));
	}
	printf("\n%lld ok, %lld warn, %lld fail\n", cli_jint(doc, "ok"), cli_jint(doc, "warn"),
	       cli_jint(doc, "fail"));
}

static int doc_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire doctor [--pool-bytes N] [--strict] [--json]\n"
		"  --pool-bytes N  size of the KV pool to pin (K/M/G/T suffixes; default 1G)\n"
		"  --strict        exit 1 on warnings too\n");
	return rc;
}

int cmd_doctor(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "pool-bytes", required_argument, 0, 'p' },
		{ "strict", no_argument, 0, 's' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
	bool as_json = false, strict = false;
	uint64_t pool = CLI_DEFAULT_POOL;
	int c;
	while ((c = getopt_long(argc, argv, "jp:sh", opts, NULL)) != -1) {
		if (c == 'j')
			as_json = true;
		else if (c == 's')
			strict = true;
		else if (c == 'p' && cli_parse_size(optarg, &pool))
			continue;
		else if (c == 'p')
			return cli_err("doctor", CLI_EXIT_USAGE, "--pool-bytes '%s': give a size such as "
				       "4096, 64M or 2G", optarg);
		else
			return doc_usage(c == 'h' ? stdout : stderr, c == 'h' ? CLI_EXIT_OK : CLI_EXIT_USAGE);
	}
	if (optind != argc)
		return doc_usage(stderr, CLI_EXIT_USAGE);
	char why[256];
	json_t *devs = cli_rdma_scan(why, sizeof(why)), *dpdk = cli_dpdk_scan();
	json_t *checks = json_array();
	doc_memlock(checks, pool);
	doc_hugepages(checks);
	doc_rdma_ports(checks, devs, why);
	doc_mtu(checks, devs);
	doc_gids(checks, devs);
	doc_port_ipv4_gid(checks, devs);
	doc_rdma_driver(checks, devs);
	doc_ofi_driver(checks);
	doc_iommu(checks);
	doc_numa(checks, devs, dpdk);
	json_decref(devs);
	json_decref(dpdk);
	long long n[3] = { 0 };
	const json_t *x;
	size_t i;
	json_array_foreach(checks, i, x) {
		const char *v = cli_jstr(x, "verdict");
		n[!strcmp(v, "warn") ? 1 : !strcmp(v, "fail") ? 2 : 0]++;
	}
	int rc = (n[2] || (strict && n[1])) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	json_t *doc = json_pack("{s:I,s:I,s:I,s:I,s:o}", "pool_bytes", (json_int_t)pool, "ok",
				(json_int_t)n[0], "warn", (json_int_t)n[1], "fail", (json_int_t)n[2],
				"checks", checks);
	return cli_emit(doc, as_json, doc_human, rc);
}
