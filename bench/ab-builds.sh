#!/bin/sh
# Two builds of kvwire side by side: the compare commands of run-results.sh,
# run alternately on build A and build B (A, B, A, B, ...) so both see the
# same machine, and each run's kvwire figure divided by its own peer's (the
# peer is the same binary for both builds: it absorbs the machine's drift).
# Prints per test the median over the rounds of kvwire/peer for A and for B
# and B/A. Usage: [ONLY="name ..."] bench/ab-builds.sh BUILD_A BUILD_B [OUT_DIR] [ROUNDS]
set -eu
A=$1
B=$2
OUT=${3:-bench/results/ab}
ROUNDS=${4:-3}
mkdir -p "$OUT"
tests="shm-1m:compare --driver shm -s 1M -D 2
shm-64k:compare --driver shm -s 64K -D 2
tcp-1m:compare --driver tcp -s 1M -D 2
tcp-1m-q2:compare --driver tcp -s 1M -D 2 -q 2
kv-shm:compare kv --driver shm --model llama3-8b --tokens 4096 -n 2
kv-tcp:compare kv --driver tcp --model llama3-8b --tokens 4096 -n 2"
if [ -n "${ONLY:-}" ]; then # ONLY="shm-1m tcp-1m": just those
	tests=$(echo "$tests" | while IFS=: read -r name args; do
		case " $ONLY " in *" $name "*) echo "$name:$args" ;; esac
	done)
fi
echo "$tests" > "$OUT/tests.txt"
{
	echo "A: $A ($(cd "$(dirname "$A")" 2>/dev/null && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
	echo "B: $B ($(cd "$(dirname "$B")" 2>/dev/null && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
r=1
while [ "$r" -le "$ROUNDS" ]; do
	echo "$tests" | while IFS=: read -r name args; do
		for side in A B; do
			if [ "$side" = A ]; then dir=$A; else dir=$B; fi
			f="$OUT/$name.$side.$r.txt"
			echo "+ kvwire-bench $args --repeat 1" > "$f"
			# shellcheck disable=SC2086
			"$dir/bench/kvwire-bench" $args --repeat 1 >> "$f" 2>&1 || echo "(exit $?)" >> "$f"
		done
	done
	r=$((r + 1))
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
python3 - "$OUT" "$ROUNDS" <<'EOF'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
tests = [l.split(":", 1)[0] for l in open(f"{out}/tests.txt") if l.strip()]
def ratio(path):
    """compare bw: kvwire / the table's first peer (memcpy, iperf3), which is the same
    binary for both builds; compare kv (no peer): the scattered run's Gb/s itself."""
    rows = []
    for line in open(path):
        m = re.search(r"kv scattered / contiguous .*?: ([0-9.]+) / ([0-9.]+) Gb/s", line)
        if m:
            return float(m.group(1)), [("kvwire", float(m.group(1))), ("(Gb/s, scattered)", 0.0)]
        m = re.match(r"\s*(\S.*?)\s{2,}([0-9.]+)\s+(\S+)\s+([0-9.]+)\s+(\S.*)$", line)
        if m:
            rows.append((m.group(1), float(m.group(2))))
    if len(rows) < 2 or rows[1][1] == 0:
        return None, rows
    return rows[0][1] / rows[1][1], rows
print(f"{'test':<10} {'kvwire vs':<28} {'A':>18} {'B':>18} {'B/A':>6}")
for t in tests:
    ra, rb, peer = [], [], ""
    for r in range(1, rounds + 1):
        a, rows = ratio(f"{out}/{t}.A.{r}.txt")
        b, rows_b = ratio(f"{out}/{t}.B.{r}.txt")
        if a: ra.append(a)
        if b: rb.append(b)
        if rows: peer = rows[1][0]
    if not ra or not rb:
        print(f"{t:<10} (no figures: see {out}/{t}.*.txt)")
        continue
    ma, mb = statistics.median(ra), statistics.median(rb)
    print(f"{t:<10} {peer[:28]:<28} {ma:>8.2f} ({min(ra):.2f}-{max(ra):.2f}) "
          f"{mb:>6.2f} ({min(rb):.2f}-{max(rb):.2f}) {mb / ma:>6.2f}")
EOF
