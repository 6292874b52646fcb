#!/bin/sh
# Reproduces bench/RESULTS.md "Fleet join": a throwaway etcd (temporary data
# dir, loopback ports PORT and PORT+10), 2 prefill + 2 decode fleet-nodes per
# driver, the same Poisson stream forked and joined, and one joined kill run.
# Usage: bench/fleet-join-results.sh [BUILD_DIR] [OUT_DIR] [PORT]
set -eu
BUILD=${1:-build}
OUT=${2:-bench/results/fleet-join}
PORT=${3:-23795}
B="$BUILD/bench/kvwire-bench"
E="http://127.0.0.1:$PORT"
P="http://127.0.0.1:$((PORT + 10))"
DATA=$(mktemp -d /tmp/kvb-join-etcd.XXXXXX)
LOAD="--model llama3-8b --layers 8 --rate 10 --mix 128:0.5,1024:0.3,4096:0.2 --requests 120"
mkdir -p "$OUT"
command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
etcd --name t --data-dir "$DATA/data" --listen-client-urls "$E" --advertise-client-urls "$E" \
	--listen-peer-urls "$P" --initial-advertise-peer-urls "$P" --initial-cluster "t=$P" \
	--log-level warn > "$DATA/log" 2>&1 &
EP=$!
trap 'kill $EP 2>/dev/null || true; wait $EP 2>/dev/null || true; rm -rf "$DATA"' EXIT
sleep 2
echo "load before: $(cat /proc/loadavg)" > "$OUT/machine.txt"
for d in shm tcp; do
	pids=""
	for n in p0 p1 d0 d1; do
		role=prefill; [ "${n#d}" != "$n" ] && role=decode
		"$B" fleet-node --role $role --dir "$E" --pool "m$d" --name $n --driver $d \
			--model llama3-8b --layers 8 --ttl 2 > "$OUT/$d-$n.log" 2>&1 &
		pids="$pids $!"
	done
	"$B" fleet --driver $d --prefill 2 --decode 2 $LOAD --json > "$OUT/$d-fork.json" || true
	"$B" fleet --join --dir "$E" --pool "m$d" --driver $d --prefill 2 --decode 2 $LOAD --json \
		> "$OUT/$d-join.json" || true
	[ $d = tcp ] && { "$B" fleet --join --dir "$E" --pool "m$d" --driver $d --prefill 2 --decode 2 \
		--trace bench/traces/mooncake-synthetic.jsonl --time-scale 0.5 --kill-decode 1@20 \
		--model llama3-8b --layers 8 --json > "$OUT/$d-kill.json" || true; }
	kill $pids 2>/dev/null || true
	wait $pids 2>/dev/null || true
done
echo "load after: $(cat /proc/loadavg)" >> "$OUT/machine.txt"
