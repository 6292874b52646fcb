/* SPDX-License-Identifier: MIT */
/* kvwire-bench: perftest-like benchmarks of kvwire, KV-cache shaped. */
#include "fleet.h"

#include <signal.h>
#include <string.h>

int main(int argc, char **argv)
{
	kvb_opts o;
	char err[256];

	signal(SIGPIPE, SIG_IGN);
	if (argc == 2 && !strcmp(argv[1], "--version")) {
		printf("kvwire-bench %s (drivers: %s)\n", KVW_VERSION_STRING, kvw_drivers_built());
		return 0;
	}
	kvb_opts_init(&o);
	int r = kvb_opts_parse(argc, argv, &o, err, sizeof(err));
	if (r == 1) {
		kvb_usage(stdout);
		return 0;
	}
	if (r < 0) {
		fprintf(stderr, "kvwire-bench: %s\n", err);
		return 1;
	}
	switch (o.test) {
	case KVB_T_SERVER:
		return kvb_server_main(&o, -1);
	case KVB_T_COMPARE:
		return kvb_compare_main(&o);
	case KVB_T_FLEET:
		return kvb_fleet_main(&o);
	case KVB_T_FLEET_NODE:
		return kvb_fleet_node_main(&o);
	default:
		return kvb_client_main(&o);
	}
}
