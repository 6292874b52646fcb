/* SPDX-License-Identifier: MIT */
/* fleet-node and fleet --join in a build without libkvwire-dir (no libcurl):
 * a sentence saying so, instead of the directory. */
#include "fleet.h"

#define NODIR "this build has no libkvwire-dir (libcurl was not found when it was configured): " \
	"install libcurl's development package and configure again for fleet-node and fleet --join"

int kvb_fleet_node_main(const kvb_opts *o)
{
	(void)o;
	fprintf(stderr, "kvwire-bench: %s\n", NODIR);
	return 1;
}

int kvb_join_open(const kvb_opts *o, uint32_t max_tokens, kvb_join **j, kvb_fl_node *nodes, char *err,
		  size_t len)
{
	(void)o, (void)max_tokens, (void)j, (void)nodes;
	snprintf(err, len, "%s", NODIR);
	return -1;
}

int kvb_join_next(kvb_join *j, char *name, size_t len)
{
	(void)j, (void)name, (void)len;
	return 0;
}

const char *kvb_join_warning(const kvb_join *j)
{
	(void)j;
	return "";
}

void kvb_join_close(kvb_join *j) { (void)j; }

void kvb_join_geometry(const kvb_opts *o, char *buf, size_t len)
{
	(void)o;
	snprintf(buf, len, "kvb-fleet");
}
