#!/bin/sh
# Reproduces the numbers in bench/RESULTS.md: kvwire-bench compare runs for
# shm and tcp, kv scattered vs contiguous, and the bandwidth-vs-size sweep
# plotted by plot.py. Usage: bench/run-results.sh [BUILD_DIR] [OUT_DIR]
set -eu
BUILD=${1:-build-bench}
OUT=${2:-bench/results}
B="$BUILD/bench/kvwire-bench"
mkdir -p "$OUT"
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "mem: $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
	echo "kvwire-bench: $($B --version)"
	echo "load before: $(cat /proc/loadavg)"
} > "$OUT/machine.txt"
run() { # name, args...
	name=$1; shift
	echo "+ kvwire-bench $*" > "$OUT/$name.txt"
	"$B" "$@" >> "$OUT/$name.txt" 2>&1 || echo "(exit $?)" >> "$OUT/$name.txt"
	echo "  load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/$name.txt"
}
run shm-1m compare --driver shm -s 1M -D 3 --repeat 3
run shm-64k compare --driver shm -s 64K -D 3 --repeat 3
run tcp-1m compare --driver tcp -s 1M -D 3 --repeat 3
run tcp-1m-q2 compare --driver tcp -s 1M -D 3 -q 2 --repeat 3
run dpdk-1m compare --driver dpdk -s 1M -D 3 --repeat 3
run kv-dpdk kv --loopback --driver dpdk --model llama3-8b --tokens 4096
run kv-shm compare kv --driver shm --model llama3-8b --tokens 4096 -n 3 --repeat 3
run kv-tcp compare kv --driver tcp --model llama3-8b --tokens 4096 -n 3 --repeat 3
run lat-shm lat --loopback --driver shm -s 64 -n 5000
run lat-tcp lat --loopback --driver tcp -s 64 -n 5000
"$B" compare -a --driver shm -n 500 --csv > "$OUT/sweep-shm.csv" 2>/dev/null || true
"$B" compare -a --driver tcp -n 500 --csv > "$OUT/sweep-tcp.csv" 2>/dev/null || true
python3 "$(dirname "$0")/plot.py" "$OUT/sweep-shm.csv" "$OUT/sweep-tcp.csv" -o "$OUT/bw-vs-size.svg"
echo "load after: $(cat /proc/loadavg)" >> "$OUT/machine.txt"
