#!/bin/bash
# SPDX-License-Identifier: MIT
# Fault injection (transport/fault.c on the dpdk TX path): every byte
# arrives and checks out, no byte outside the grants, no hang.
# Part 1: one process over net_ring (loopback); part 2: two processes over net_memif.
. "$(dirname "$0")/lib.sh"
need_root
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"; rundir_cleanup' EXIT
SIZE="-L 8 -B 64 -b 16384 -n 4 -t 20000"

run_ring() { # run_ring NAME SPEC
	timeout 120 "$XFER" pair "dpdk://10.0.0.1:7000" -e "$EAL_BASE --file-prefix=${TAG}r -l 0 --vdev=net_ring0" \
		$SIZE ${2:+-f "$2"} >"$OUT/r.txt" 2>&1 </dev/null
	local rc=$?
	if [ $rc = 1 ] && grep -q "ctx create\|rte_eal_init" "$OUT/r.txt" && [ "$1" = none ]; then
		cat "$OUT/r.txt"; skip "EAL does not start here"
	fi
	if result_ok "$OUT/r.txt"; then
		pass "ring $1: $(grep ^RESULT "$OUT/r.txt") retx=$(field "$OUT/r.txt" sender retransmits) dups=$(field "$OUT/r.txt" receiver dups)"
	else
		fail "ring $1 (rc $rc)"; cat "$OUT/r.txt"
	fi
	R_RETX=$(field "$OUT/r.txt" sender retransmits)
}

run_ring none ""
run_ring drop1 "drop=0.01,seed=11"
[ "${R_RETX:-0}" -gt 0 ] || fail "drop 1% caused no retransmission"
run_ring drop5 "drop=0.05,seed=12"
[ "${R_RETX:-0}" -gt 0 ] || fail "drop 5% caused no retransmission"
run_ring reorder "reorder=0.05,seed=13"
run_ring dup "dup=0.05,seed=14"
run_ring delay "delay=200us,delay_rate=0.2,seed=15"
run_ring corrupt "corrupt=0.01,seed=16"
run_ring all "drop=0.05,dup=0.01,reorder=0.02,delay=200us,delay_rate=0.05,corrupt=0.001,seed=7"

# two processes over memif, both directions under fault
for spec in "drop=0.01,seed=21" "drop=0.05,dup=0.01,reorder=0.02,delay=200us,delay_rate=0.05,corrupt=0.001,seed=22"; do
	memif_pair "" "$SIZE -f $spec" "$SIZE -f $spec" "$OUT"
	if result_ok "$OUT/server.txt" && result_ok "$OUT/client.txt"; then
		pass "memif $spec: $(grep ^RESULT "$OUT/client.txt") retx=$(field "$OUT/client.txt" sender retransmits)"
	else
		fail "memif $spec"; cat "$OUT/server.txt" "$OUT/client.txt"
	fi
done
[ $FAILS = 0 ]
