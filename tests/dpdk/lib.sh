#!/bin/bash
# SPDX-License-Identifier: MIT
# Shared helpers of the dpdk test scripts. Every script exits 77 (skip)
# when it lacks root, network namespaces or a working EAL.
set -u

XFER=${XFER:-$(dirname "$0")/dk_xfer}
EAL_BASE="--no-huge --no-pci -m 512 --log-level=3"
TAG="dk$$"
VA="${TAG}a" VB="${TAG}b" # veth names: unique, so concurrent runs do not collide
FAILS=0

# EAL leaves a runtime folder per --file-prefix; every prefix here starts with $TAG
rundir_cleanup() { rm -rf /var/run/dpdk/"${TAG}"* 2>/dev/null; return 0; }

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "PASS: $*"; }

need_root() {
	[ "$(id -u)" = 0 ] || skip "needs root (DPDK --no-huge, netns)"
}

# Namespaces are created with `ip netns add` (pinned under NETNS_DIR, the
# iproute2 default) and entered with nsenter --net: `ip netns exec` and
# `ip -n` also remount /sys, which fails where / is not a mount point (a
# chroot such as CI's fresh-debian) although namespaces work there.
NETNS_DIR=/run/netns
in_ns() { # in_ns NS CMD [ARG...]: CMD in the network namespace NS
	nsenter --net="$NETNS_DIR/$1" -- "${@:2}"
}

# netns_probe: empty output when this machine can run the namespace tests,
# else the reason (missing tool, no namespaces, no veth); callers skip on it
netns_probe() {
	local p="${TAG}probe" err
	[ "$(id -u)" = 0 ] || { echo "needs root (DPDK --no-huge, netns)"; return; }
	for t in ip nsenter; do
		command -v $t >/dev/null || { echo "$t missing (iproute2, util-linux)"; return; }
	done
	err=$(ip netns add "$p" 2>&1) || { echo "cannot create network namespaces: $err"; return; }
	if ! err=$(in_ns "$p" ip link add "${TAG}p0" type veth peer name "${TAG}p1" 2>&1); then
		echo "cannot create a veth pair in a namespace: $err"
	fi
	ip netns del "$p"
}

need_netns() {
	need_root
	local why; why=$(netns_probe)
	[ -z "$why" ] || skip "$why"
}

# result FILE: prints the RESULT line, true when ok=1
result_ok() {
	grep -q '^RESULT ok=1' "$1"
}

field() { # field FILE WHO NAME -> counter value from a COUNTERS line
	grep "^COUNTERS $2 " "$1" | tr ' ' '\n' | sed -n "s/^$3=//p" | head -1
}

wait_listen() { # wait_listen FILE: until the server printed its URI (30 s)
	local i=0
	until grep -q "^listening on" "$1" 2>/dev/null; do
		sleep 0.1; i=$((i + 1))
		[ $i -ge 300 ] && return 1
	done
	return 0
}

wait_pid() { # wait_pid PID SECONDS -> true when it ended in time
	local i=0
	while kill -0 "$1" 2>/dev/null; do
		[ $i -ge $(($2 * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
	return 0
}

# Two processes over net_memif: memif_pair "QUERY" "SERVER_ARGS" "CLIENT_ARGS" OUTDIR
memif_pair() {
	local q=$1 sargs=$2 cargs=$3 out=$4 sock=/run/kvwire/${TAG}-memif.sock
	mkdir -p /run/kvwire
	rm -f "$sock" "$out/server.txt" "$out/client.txt" # no stale "listening on"
	# shellcheck disable=SC2086
	timeout 120 "$XFER" server "dpdk://10.0.0.1:7000$q" \
		-e "$EAL_BASE --file-prefix=${TAG}s -l 0 --vdev=net_memif0,role=server,socket=$sock" \
		$sargs >"$out/server.txt" 2>&1 </dev/null &
	local spid=$!
	wait_listen "$out/server.txt"
	# shellcheck disable=SC2086
	timeout 120 "$XFER" client "dpdk://10.0.0.1:7000$q" \
		-e "$EAL_BASE --file-prefix=${TAG}c -l 1 --vdev=net_memif0,role=client,socket=$sock" \
		$cargs >"$out/client.txt" 2>&1 </dev/null
	wait $spid
	rm -f "$sock"
}

# veth pair between namespaces A and B (no IP addresses: DPDK owns them)
AF_ARGS="blocksz=4096,framesz=2048,framecnt=2048"
netns_veth() { # netns_veth NSA NSB IFA IFB
	ip netns add "$1" && ip netns add "$2" || return 1
	ip link add "$3" type veth peer name "$4" || return 1
	ip link set "$3" netns "$1" && ip link set "$4" netns "$2" || return 1
	in_ns "$1" ip link set "$3" up && in_ns "$2" ip link set "$4" up || return 1
	in_ns "$1" ip link set lo up; in_ns "$2" ip link set lo up
}

# A - bridge namespace M - B, with nftables loss PCT (percent, per direction) in M
netns_bridge() { # netns_bridge NSA NSM NSB PCT
	ip netns add "$1" && ip netns add "$2" && ip netns add "$3" || return 1
	ip link add "${TAG}a" type veth peer name "${TAG}a2"
	ip link add "${TAG}b" type veth peer name "${TAG}b2"
	ip link set "${TAG}a" netns "$1"; ip link set "${TAG}a2" netns "$2"
	ip link set "${TAG}b" netns "$3"; ip link set "${TAG}b2" netns "$2"
	in_ns "$2" ip link add brM type bridge
	in_ns "$2" ip link set "${TAG}a2" master brM; in_ns "$2" ip link set "${TAG}b2" master brM
	for l in "${TAG}a2" "${TAG}b2" brM; do in_ns "$2" ip link set "$l" up; done
	in_ns "$1" ip link set "${TAG}a" up; in_ns "$3" ip link set "${TAG}b" up
	if [ "$4" -gt 0 ]; then
		printf 'table bridge fault {\n chain fdrop {\n  type filter hook forward priority 0; policy accept;\n  numgen random mod 100 < %d counter drop\n }\n}\n' "$4" |
			in_ns "$2" nft -f - || return 1
	fi
}

netns_cleanup() {
	for n in "$@"; do ip netns del "$n" 2>/dev/null; done
	return 0
}

# af_packet pair: afp_pair NSA IFA NSB IFB "SERVER_ARGS" "CLIENT_ARGS" OUTDIR [background-hook]
afp_pair() {
	local nsa=$1 ifa=$2 nsb=$3 ifb=$4 sargs=$5 cargs=$6 out=$7 hook=${8:-}
	# a background job truncates its output file only once it runs: remove
	# the last round's, or wait_listen could read its "listening on"
	rm -f "$out/server.txt" "$out/client.txt"
	# nsenter (not the in_ns function) so that $! is the process itself
	# shellcheck disable=SC2086
	nsenter --net="$NETNS_DIR/$nsa" -- timeout 120 "$XFER" server "dpdk://10.0.0.1:7000" \
		-e "$EAL_BASE --file-prefix=${TAG}s -l 0 --vdev=net_af_packet0,iface=$ifa,$AF_ARGS" \
		$sargs >"$out/server.txt" 2>&1 </dev/null &
	SPID=$!
	wait_listen "$out/server.txt"
	# shellcheck disable=SC2086
	nsenter --net="$NETNS_DIR/$nsb" -- timeout 120 "$XFER" client "dpdk://10.0.0.1:7000" \
		-e "$EAL_BASE --file-prefix=${TAG}c -l 1 --vdev=net_af_packet0,iface=$ifb,$AF_ARGS" \
		$cargs >"$out/client.txt" 2>&1 </dev/null &
	CPID=$!
	if [ -n "$hook" ]; then $hook; fi
	wait $CPID
	wait $SPID
}
