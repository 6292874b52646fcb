#!/bin/sh
# Issue 12's goals side by side: kv over shm and tcp (--loopback), the
# same-geometry run (today's path, no geometry options) alternated round by
# round with the same geometry given through the options (the geometry
# path), a block-size mismatch (16 -> 64) and NHD -> HND, so every run sees
# the same machine. Prints per round each run's Gb/s and fragments a
# sequence and its ratio to that round's same-geometry run, then the median
# ratio. With BASE (a build directory of the commit before, e.g. main), its
# same-geometry run joins each round as "base": same/base is the
# no-regression figure. "nhd-hnd-g1" is NHD -> HND with max_gather=1 (one
# fragment per contiguous piece, as before gathering): nhd-hnd/nhd-hnd-g1 is
# what gathered fragments buy. DRIVERS (default "shm tcp") may also name
# ofi-tcp, ofi-shm (libfabric tcp;ofi_rxm, shm on 127.0.0.1) and rdma (in
# the Soft-RoCE VM: tests/vm/run-rxe-vm.sh -- env DRIVERS=rdma ...).
# Usage: [BASE=dir] [SHAPE="..."] [DRIVERS="..."] bench/geom-results.sh BUILD [OUT_DIR] [ROUNDS]
set -euf # -f: the ofi URIs hold a "?"
BUILD=$1
OUT=${2:-bench/results/geom}
ROUNDS=${3:-3}
SHAPE=${SHAPE:---model llama3-8b --tokens 2048 -n 4}
DRIVERS=${DRIVERS:-shm tcp}
# the kvwire-bench options that pick a DRIVERS entry
drv_args() {
	case $1 in
	ofi-tcp) echo "--driver ofi --listen ofi://127.0.0.1:0?provider=tcp;ofi_rxm" ;;
	ofi-shm) echo "--driver ofi --listen ofi://127.0.0.1:0?provider=shm" ;;
	*) echo "--driver $1" ;;
	esac
}
mkdir -p "$OUT"
runs="same:
geom-same:--src-layout nhd --dst-layout nhd
bt-16-64:--src-block-tokens 16 --dst-block-tokens 64
nhd-hnd:--src-layout nhd --dst-layout hnd
nhd-hnd-g1:--src-layout nhd --dst-layout hnd"
{
	echo "build: $BUILD ($(cd "$BUILD" 2>/dev/null && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
	[ -n "${BASE:-}" ] && echo "base: $BASE ($(cd "$BASE" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
	echo "shape: $SHAPE"
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
for drv in $DRIVERS; do
	r=1
	while [ "$r" -le "$ROUNDS" ]; do
		{ [ -n "${BASE:-}" ] && echo "base:"; echo "$runs"; } | while IFS=: read -r name args; do
			bin=$BUILD/bench/kvwire-bench
			[ "$name" = base ] && bin=$BASE/bench/kvwire-bench
			f="$OUT/$drv.$name.$r.json"
			g=64
			case $name in *-g1) g=1 ;; esac
			# shellcheck disable=SC2086
			KVW_MAX_GATHER=$g "$bin" kv --loopback $(drv_args "$drv") $SHAPE $args --json > "$f" 2> "$f.err" ||
				echo "(exit $?) kvwire-bench kv $(drv_args "$drv") $SHAPE $args" >> "$f.err"
			echo "KVW_MAX_GATHER=$g kvwire-bench kv --loopback $(drv_args "$drv") $SHAPE $args --json" > "$f.cmd"
		done
		r=$((r + 1))
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
python3 - "$OUT" "$ROUNDS" "${BASE:+base}" "$DRIVERS" <<'PY'
import json, statistics, sys
out, rounds, base = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "base"
drivers = sys.argv[4].split()
names = (["base"] if base else []) + ["same", "geom-same", "bt-16-64", "nhd-hnd", "nhd-hnd-g1"]
print(open(f"{out}/machine.txt").read().rstrip())
for drv in drivers:
    print(f"\n{drv}: Gb/s (fragments a sequence) and ratio to the round's same-geometry run")
    ratios = {n: [] for n in names}
    for r in range(1, rounds + 1):
        res = {}
        for n in names:
            try:
                j = json.load(open(f"{out}/{drv}.{n}.{r}.json"))
                res[n] = (j["gbit_per_s"] if j.get("verified") else 0.0, j.get("frags_per_seq", 0))
            except (OSError, ValueError, KeyError):
                res[n] = (0.0, 0)
        same = res["same"][0]
        cells = []
        for n in names:
            g, fr = res[n]
            q = g / same if same else 0.0
            ratios[n].append(q)
            cells.append(f"{n} {g:7.2f} ({fr:.0f}) {q:.3f}x")
        print(f"  round {r}: " + " | ".join(cells))
    print("  median: " + " | ".join(f"{n} {statistics.median(ratios[n]):.3f}x" for n in names))
    g1 = [a / b for a, b in zip(ratios["nhd-hnd"], ratios["nhd-hnd-g1"]) if b]
    if g1:
        print("  nhd-hnd gathered / one fragment a piece: %.2fx" % statistics.median(g1))
    if base:
        print("  same/base (no regression, >= 0.97): %.3f" %
              statistics.median([1 / q if q else 0 for q in ratios["base"]]))
PY
