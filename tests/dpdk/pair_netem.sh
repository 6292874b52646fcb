#!/bin/bash
# SPDX-License-Identifier: MIT
# The dpdk driver over the real virtio wire between two qemu VMs
# (tests/vm/run-rxe-pair.sh), each VM running dk_xfer on its own eth0 through
# net_af_packet (qdisc_bypass=0, so the kernel qdisc -- netem -- sees every
# frame). A = decode side (dk_xfer server, listens on dpdk://$RXE_SELF_IP:7000),
# B = prefill side (dk_xfer client). Every sequence is checked byte by byte.
#   1. clean wire
#   2. netem "loss 1% delay 1ms reorder 25% 50% duplicate 1%" on both VMs' eth0
#      (DKP_NETEM overrides); must retransmit, must still verify every byte.
# Usage: pair_netem.sh [BUILD_DIR]   (or env XFER=path/to/dk_xfer)
# Knobs: DKP_SIZE (dk_xfer size options), DKP_MEM (per-VM memory, default 1024M),
#   DKP_EAL_MEM (DPDK -m in the guest, MB, default 256), DKP_CASES ("clean netem").
# Exit: 0 pass, 1 fail, 77 skip (the VMs cannot boot here: run-rxe-pair.sh --check).
# Inside a guest the script runs itself as: pair_netem.sh guest A|B XFER SIZE EALMEM
set -u
here=$(cd "$(dirname "$0")" && pwd)
self=$here/$(basename "$0")

# ---- guest side --------------------------------------------------------------
guest() { # guest ROLE XFER SIZE EALMEM
	local role=$1 xfer=$2 size=$3 m=$4 out=/tmp/dk.txt rc
	local eal="--no-huge --no-pci -m $m --log-level=3 --file-prefix=dk$role -l 0"
	eal="$eal --vdev=net_af_packet0,iface=$RXE_NETDEV,blocksz=4096,framesz=2048,framecnt=2048,qdisc_bypass=0"
	if [ "$role" = A ]; then
		# the kernel owns 10.79.0.1 too: keep it from answering every kvwire
		# frame with ICMP port unreachable (af_packet still sees them)
		nft -f - <<-'EOF' 2>&1 | sed 's/^/note: nft: /'
		add table inet dkp
		add chain inet dkp in { type filter hook input priority 0 ; }
		add rule inet dkp in udp dport 7000 drop
		EOF
		# shellcheck disable=SC2086
		timeout -k 5 300 "$xfer" server "dpdk://$RXE_SELF_IP:7000" -e "$eal" $size \
			>"$out" 2>&1 </dev/null &
		local pid=$! i=0
		until grep -q '^listening on' "$out" 2>/dev/null; do
			if ! kill -0 $pid 2>/dev/null || [ $i -ge 600 ]; then break; fi
			sleep 0.1; i=$((i + 1))
		done
		rxe-signal srv
		wait $pid; rc=$?
	else
		rxe-wait srv 120 || { echo "B: server never signalled"; return 1; }
		local t0 t1
		t0=$(date +%s.%N)
		# shellcheck disable=SC2086
		timeout -k 5 300 "$xfer" client "dpdk://$RXE_PEER_IP:7000" -e "$eal" $size \
			>"$out" 2>&1 </dev/null
		rc=$?
		t1=$(date +%s.%N)
		echo "WALL client_s=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")"
	fi
	sed "s/^/DK$role /" "$out"
	echo "QDISC$role $(tc -s qdisc show dev "$RXE_NETDEV" | tr '\n' ' ')"
	echo "LINK$role $(ip -s link show "$RXE_NETDEV" | tr '\n' ' ')"
	echo "UDP$role $(grep '^Udp:' /proc/net/snmp | tr '\n' ' ')"
	return $rc
}
if [ "${1:-}" = guest ]; then
	shift
	guest "$@"
	exit $?
fi

# ---- host side ---------------------------------------------------------------
XFER=${XFER:-${1:+$1/tests/dpdk/dk_xfer}}
if [ -z "$XFER" ] || [ ! -x "$XFER" ]; then echo "usage: $0 BUILD_DIR (or XFER=dk_xfer)"; exit 2; fi
XFER=$(cd "$(dirname "$XFER")" && pwd)/$(basename "$XFER")
pair=$here/../vm/run-rxe-pair.sh
"$pair" --check >/dev/null 2>&1 || { echo "SKIP: run-rxe-pair.sh --check: the VMs cannot boot here"; exit 77; }

SIZE=${DKP_SIZE:--L 8 -B 32 -b 16384 -n 4 -t 60000}
EALMEM=${DKP_EAL_MEM:-256}
NETEM=${DKP_NETEM:-loss 1% delay 1ms reorder 25% 50% duplicate 1%}
# TCG guests on a busy 2-core host: the handshake can take longer than 5 s
export KVW_CONNECT_TIMEOUT_MS=${KVW_CONNECT_TIMEOUT_MS:-30000}
export RXE_VM_MEM=${DKP_MEM:-1024M} RXE_PAIR_GRACE=${RXE_PAIR_GRACE:-30} RXE_VM_TIMEOUT=${RXE_VM_TIMEOUT:-480}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
FAILS=0

val() { # val FILE PREFIX NAME -> NAME=value from the first line starting with PREFIX
	grep "^$2" "$1" | head -1 | tr ' ' '\n' | sed -n "s/^$3=//p" | head -1
}

run_case() { # run_case NAME NETEM
	local name=$1 d=$OUT/$1 rc
	mkdir -p "$d"
	echo "== $name: RXE_PAIR_NETEM='$2' mem=$RXE_VM_MEM size='$SIZE'"
	RXE_PAIR_NETEM=$2 RXE_PAIR_OUT=$d "$pair" \
		"bash '$self' guest A '$XFER' '$SIZE' $EALMEM" \
		"bash '$self' guest B '$XFER' '$SIZE' $EALMEM" >"$d/pair.log" 2>&1
	rc=$?
	local a=$d/A.out b=$d/B.out
	grep -h -E '^(DK[AB] (RESULT|COUNTERS)|WALL|QDISC|LINK|UDP|note)' "$a" "$b" 2>/dev/null
	grep -h '^RXE-PAIR' "$d/pair.log"
	if [ $rc = 0 ] && grep -q '^DKA RESULT ok=1' "$a" && grep -q '^DKB RESULT ok=1' "$b"; then
		local retx; retx=$(val "$b" 'DKB COUNTERS sender' retransmits)
		echo "PASS: $name: $(grep '^DKB RESULT' "$b" | cut -d' ' -f2-) retransmits=$retx" \
			"(receiver: $(grep '^DKA COUNTERS' "$a" | cut -d' ' -f4-))"
		if [ -n "$2" ] && [ "${retx:-0}" -le 0 ]; then
			echo "FAIL: $name: netem on the wire but no retransmission"; FAILS=$((FAILS + 1))
		fi
		return 0
	fi
	echo "FAIL: $name (pair rc=$rc); outputs:"
	tail -n 30 "$a" "$b" "$d/pair.log" 2>/dev/null
	FAILS=$((FAILS + 1))
}

for c in ${DKP_CASES:-clean netem}; do
	case $c in
	clean) run_case clean "" ;;
	netem) run_case netem "$NETEM" ;;
	esac
done
[ $FAILS = 0 ]
