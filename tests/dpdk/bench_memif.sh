#!/bin/bash
# SPDX-License-Identifier: MIT
# Side-by-side, same path, same frame size: dpdk-testpmd txonly -> rxonly over
# net_memif (two processes) against dk_xfer (kvwire dpdk driver, two processes,
# verified transfer). Not a test: prints numbers. Usage: bench_memif.sh [SECONDS]
. "$(dirname "$0")/lib.sh"
need_root
command -v dpdk-testpmd >/dev/null || skip "dpdk-testpmd missing (Debian: dpdk)"
SECS=${1:-8}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"; rundir_cleanup' EXIT
SOCK=/run/kvwire/${TAG}-bench.sock
mkdir -p /run/kvwire
FRAME=2048   # kvwire's default memif frame: one 2048-byte memif buffer

rm -f "$SOCK"
timeout $((SECS + 6)) dpdk-testpmd $EAL_BASE --file-prefix=${TAG}r --lcores=0@0,1@0 \
	--vdev=net_memif0,role=server,socket=$SOCK -- --forward-mode=rxonly --stats-period=1 \
	--auto-start --nb-cores=1 --total-num-mbufs=32768 >"$OUT/rx.txt" 2>&1 </dev/null &
R=$!
sleep 1
timeout $((SECS + 3)) dpdk-testpmd $EAL_BASE --file-prefix=${TAG}t --lcores=0@1,1@1 \
	--vdev=net_memif0,role=client,socket=$SOCK -- --forward-mode=txonly --txpkts=$FRAME \
	--stats-period=1 --auto-start --nb-cores=1 --total-num-mbufs=32768 >"$OUT/tx.txt" 2>&1 </dev/null
wait $R
# mean of the non-zero per-second receive rates after the first two
tp=$(grep -a "Rx-pps:" "$OUT/rx.txt" | awk '{ if ($2 > 0) { n++; if (n > 2) { s += $2; b += $4; k++ } } }
	END { if (k) printf "%.3f Mpps %.2f Gbit/s", s / k / 1e6, b / k / 1e9; else print "no data" }')
echo "testpmd txonly->rxonly memif ${FRAME} B frames: $tp"

memif_pair "" "-L 32 -B 64 -b 16384 -n 40 -q" "-L 32 -B 64 -b 16384 -n 40 -q" "$OUT"
r=$(grep ^RESULT "$OUT/client.txt")
g=$(echo "$r" | sed -n 's/.*gbps=\([0-9.]*\).*/\1/p')
fr=$(awk -v g="${g:-0}" 'BEGIN { printf "%.3f", g * 1e9 / 8 / 1982 / 1e6 }')
echo "kvwire dpdk memif (verified, ${FRAME} B frames): $r  (~$fr Mpps of data frames)"
echo "  $(grep '^COUNTERS sender' "$OUT/client.txt")"
