/* SPDX-License-Identifier: MIT */
/* kvwire: the operator CLI. Dispatches to one file per subcommand. */
#include "cli.h"
#include "kvwire/kvwire.h"

#include <stdio.h>
#include <string.h>

static const struct cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} cli_cmds[] = {
	{ "devices", cmd_devices, "RDMA devices and ports, DPDK ports, usable kvwire drivers" },
	{ "doctor", cmd_doctor, "check this host for kvwire (memlock, hugepages, GIDs, MTU, NUMA)" },
	{ "ping", cmd_ping, "handshake with a peer and measure round-trip times" },
	{ "listen", cmd_listen, "accept connections and answer pings (a peer for ping)" },
	{ "stat", cmd_stat, "live counters of a running kvwire process" },
	{ "decode", cmd_decode, "decode kvwire frames from a hex dump or a pcap" },
	{ "config", cmd_config, "the configuration table with current values" },
	{ "pools", cmd_pools, "instances in the optional fleet directory on etcd" },
};

static void cli_usage(FILE *f)
{
	fprintf(f, "usage: kvwire COMMAND [OPTIONS]   (kvwire COMMAND --help for its options)\n\n");
	for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++)
		fprintf(f, "  %-8s %s\n", cli_cmds[i].name, cli_cmds[i].summary);
	fprintf(f, "\nEvery command takes --json. Exit status: 0 ok, 1 a check/peer/frame failed,\n"
		"2 bad command line, 3 the tool could not run. See kvwire(1).\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		cli_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	const char *name = argv[1];
	if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
		cli_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(name, "--version") || !strcmp(name, "version")) {
		printf("kvwire %s (drivers: %s)\n", KVW_VERSION_STRING, kvw_drivers_built());
		return CLI_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++)
		if (!strcmp(name, cli_cmds[i].name))
			return cli_cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "kvwire: unknown command '%s'\n\n", name);
	cli_usage(stderr);
	return CLI_EXIT_USAGE;
}
