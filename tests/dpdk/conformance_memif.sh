#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs the whole conformance suite (argv: exe args...) over net_memif with
# no hugepages and no PCI. Each test process holds three memif ports on one
# socket of its own: port 0 (server role, id 0) and port 1 (client role,
# id 0) link the process to itself for the one-process cases, port 2
# (server role, id 1) waits for a forked peer. The listener answers on
# ports 0 and 2 (?port=0,2), the process's own clients use port 1
# (?cport=1). A forked peer gets KVW_TEST_CHILD_EAL (tests/common/kvwt.c):
# a placeholder net_ring port 0 and, as port 1, the client role of id 1 on
# its parent's socket (%P = the parent's pid). TAP output passes through.
. "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then
	echo "1..0 # SKIP needs root (DPDK --no-huge)"; exit 0
fi
trap 'rundir_cleanup' EXIT
# memif sockets are abstract (DPDK 22.11 default): no file to clean up
sock="/run/kvwire/${TAG}m%p.sock"
psock="/run/kvwire/${TAG}m%P.sock"
KVW_TEST_DRIVER=dpdk KVW_TEST_LISTEN_URI="dpdk://10.0.0.1:0?port=0,2&cport=1" \
KVW_DPDK_EAL="$EAL_BASE --file-prefix=${TAG}%p --vdev=net_memif0,role=server,socket=$sock,id=0 --vdev=net_memif1,role=client,socket=$sock,id=0 --vdev=net_memif2,role=server,socket=$sock,id=1" \
KVW_TEST_CHILD_EAL="${EAL_BASE/-m 512/-m 256} --file-prefix=${TAG}%p --vdev=net_ring0 --vdev=net_memif0,role=client,socket=$psock,id=1" \
KVW_TEST_SKIP="${KVW_TEST_SKIP:-conf_proc::sender_killed_mid_transfer conf_proc::receiver_killed_mid_transfer}" \
KVW_TEST_SKIP_WHY="DPDK 22.11's memif PMD unmaps its rings from its control thread when a peer is SIGKILLed, and the survivor's rte_eth_rx_burst can segfault (about 1 run in 5 with dk_xfer); this case runs on af_packet (conformance-dpdk-afpacket)" \
	"$@"
