#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs the conformance suite (argv: exe args...) over net_af_packet: one
# namespace holding both ends of a veth pair, port 0 on one end (listener),
# port 1 on the other (clients, ?cport=1). TAP output passes through.
. "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ] || ! ip netns add "${TAG}C" 2>/dev/null; then
	echo "1..0 # SKIP needs root and network namespaces"; exit 0
fi
trap 'ip netns del "${TAG}C" 2>/dev/null; rundir_cleanup' EXIT
ip link add "${TAG}x" type veth peer name "${TAG}y" &&
	ip link set "${TAG}x" netns "${TAG}C" && ip link set "${TAG}y" netns "${TAG}C" &&
	ip -n "${TAG}C" link set "${TAG}x" up && ip -n "${TAG}C" link set "${TAG}y" up ||
	{ echo "1..0 # SKIP cannot build a veth pair"; exit 0; }
exe=$1; shift
KVW_TEST_DRIVER=dpdk KVW_TEST_LISTEN_URI="dpdk://10.0.0.1:0?port=0&cport=1" \
KVW_DPDK_EAL="${EAL_BASE/-m 512/-m 256} --file-prefix=${TAG}%p --vdev=net_af_packet0,iface=${TAG}x,$AF_ARGS --vdev=net_af_packet1,iface=${TAG}y,$AF_ARGS" \
	ip netns exec "${TAG}C" "$exe" "$@"
