#!/bin/bash
# SPDX-License-Identifier: MIT
# A peer killed mid-transfer: the survivor's request ends PEER_DEAD within
# peer_dead_ms (1000) plus slack; both directions (sender killed, receiver killed).
# Over af_packet on a veth pair between two namespaces: DPDK 22.11's memif
# PMD can crash the survivor inside rte_eth_rx_burst when the peer vanishes
# (its control thread unmaps the rings; see docs/drivers/dpdk.md).
. "$(dirname "$0")/lib.sh"
need_netns
OUT=$(mktemp -d)
A=${TAG}A; B=${TAG}B
trap 'netns_cleanup "$A" "$B"; rm -rf "$OUT"; rundir_cleanup' EXIT
netns_veth "$A" "$B" "$VA" "$VB" || { fail "veth pair between namespaces $A and $B"; exit 1; }
ARGS="-L 8 -B 64 -b 16384 -n 1000 -w 20 -d 1000 -t 60000"

one() { # one VICTIM(server|client)
	# the last round's files hold "listening on" and "DONE seq=3", and a
	# background job truncates its file only once it runs: start without them
	rm -f "$OUT/server.txt" "$OUT/client.txt"
	nsenter --net="$NETNS_DIR/$A" -- timeout 60 "$XFER" server "dpdk://10.0.0.1:7000" -e "$EAL_BASE --file-prefix=${TAG}s$1 -l 0 --vdev=net_af_packet0,iface=$VA,$AF_ARGS" \
		$ARGS >"$OUT/server.txt" 2>&1 </dev/null &
	local spid=$!
	wait_listen "$OUT/server.txt"
	nsenter --net="$NETNS_DIR/$B" -- timeout 60 "$XFER" client "dpdk://10.0.0.1:7000" -e "$EAL_BASE --file-prefix=${TAG}c$1 -l 1 --vdev=net_af_packet0,iface=$VB,$AF_ARGS" \
		$ARGS >"$OUT/client.txt" 2>&1 </dev/null &
	local cpid=$!
	local i=0
	until grep -q "^DONE seq=3$" "$OUT/server.txt" "$OUT/client.txt" 2>/dev/null; do
		sleep 0.1; i=$((i + 1))
		[ $i -gt 300 ] && { fail "no transfer within 30 s"; cat "$OUT"/*.txt; return; }
	done
	local victim=$cpid survivor=$spid sf=$OUT/server.txt
	if [ "$1" = server ]; then victim=$spid; survivor=$cpid; sf=$OUT/client.txt; fi
	local t0; t0=$(date +%s%N)
	local vchild; vchild=$(pgrep -P "$victim")
	kill -9 $vchild "$victim"
	if ! wait_pid "$survivor" 10; then
		fail "survivor of a killed $1 still running after 10 s"; kill -9 $(pgrep -P "$survivor") "$survivor"
	fi
	local ms=$((($(date +%s%N) - t0) / 1000000))
	if grep -q "PEER_DEAD" "$sf"; then
		if [ $ms -le 3000 ]; then pass "$1 killed: PEER_DEAD after $ms ms"; else fail "$1 killed: PEER_DEAD only after $ms ms"; fi
	else
		fail "$1 killed: no PEER_DEAD"; cat "$sf"
	fi
	wait 2>/dev/null
}
one client
one server
[ $FAILS = 0 ]
