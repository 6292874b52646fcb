#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs the conformance suite (argv: exe args...) over net_af_packet: one
# namespace holding both ends of a veth pair, port 0 on one end (listener),
# port 1 on the other (clients, ?cport=1). TAP output passes through.
. "$(dirname "$0")/lib.sh"
why=$(netns_probe)
[ -z "$why" ] || { echo "1..0 # SKIP $why"; exit 0; }
# from here on the machine can do it: a failure to set up is a failure
err=$(ip netns add "${TAG}C" 2>&1) || { echo "Bail out! cannot create namespace ${TAG}C: $err"; exit 1; }
trap 'ip netns del "${TAG}C" 2>/dev/null; rundir_cleanup' EXIT
# ifindexes far apart in their bits: DPDK 22.11's af_packet PMD joins each
# socket to PACKET_FANOUT group (pid ^ ifindex) & 0xffff, and in one
# namespace two processes whose pid ^ ifindex agree (the parent's or a forked
# child's on x, another's on y: consecutive pids and ifindexes do, one fork
# in two) share a group: the second port fails to probe or takes the other
# device's frames. x ^ y = 0x5000 takes pids 20480 apart to collide.
r=$(( $$ % 4096 ))
err=$({ ip link add "${TAG}x" index $((0x1000 + r)) type veth peer name "${TAG}y" index $((0x4000 + r)) &&
	ip link set "${TAG}x" netns "${TAG}C" && ip link set "${TAG}y" netns "${TAG}C" &&
	in_ns "${TAG}C" ip link set "${TAG}x" up && in_ns "${TAG}C" ip link set "${TAG}y" up; } 2>&1) ||
	{ echo "Bail out! cannot build a veth pair in namespace ${TAG}C: $err"; exit 1; }
exe=$1; shift
KVW_TEST_DRIVER=dpdk KVW_TEST_LISTEN_URI="dpdk://10.0.0.1:0?port=0&cport=1" \
KVW_DPDK_EAL="${EAL_BASE/-m 512/-m 256} --file-prefix=${TAG}%p --vdev=net_af_packet0,iface=${TAG}x,$AF_ARGS --vdev=net_af_packet1,iface=${TAG}y,$AF_ARGS" \
	in_ns "${TAG}C" "$exe" "$@"
