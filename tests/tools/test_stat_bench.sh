# SPDX-License-Identifier: MIT
# kvwire stat against a running kvwire-bench transfer (kv --loopback over
# shm): each bench process gets its own stats socket through "%p" in
# KVW_STATS_SOCKET; two snapshots of the client (prefill) process a fraction
# of a second apart show bytes_tx growing, and the server's bytes_rx too.
# Usage: test_stat_bench.sh KVWIRE MKFRAMES STAT_LOAD FIXTURES KVWIRE_BENCH
source "$(dirname "$0")/lib.sh" "$@"
BENCH=$5

KVW_STATS_SOCKET="$TMP/bench-%p.sock" start_bg bench "$BENCH" kv --loopback --driver shm \
	--model llama3-8b --tokens 4096 -n 60 --layer-interval 5000
BPID=$LAST_PID
CSOCK=$TMP/bench-$BPID.sock
for i in $(seq 1 400); do
	[ -S "$CSOCK" ] && [ "$(ls "$TMP"/bench-*.sock 2>/dev/null | wc -l)" -ge 2 ] && break
	kill -0 "$BPID" 2>/dev/null || break
	sleep 0.05
done
[ -S "$CSOCK" ] && ok "client stats socket $CSOCK" || { fail "no stats socket for pid $BPID"; ls "$TMP"; cat "$TMP/bench.out"; finish; }
SSOCK=$(ls "$TMP"/bench-*.sock | grep -v "bench-$BPID.sock" | head -1)
[ -n "$SSOCK" ] && ok "server stats socket $SSOCK" || fail "no stats socket for the forked server"

# snap SOCK FILE: one --json snapshot, kept in FILE
snap() { "$KVWIRE" stat "$1" --json >"$2" 2>&1; }
# grew A B KEY: the sum of KEY over endpoints grew from snapshot A to B
grew() {
	python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
k = sys.argv[3]
tot = lambda d: sum(e["counters"][k] for e in d["endpoints"])
print(k, tot(a), "->", tot(b))
sys.exit(0 if b["t_ns"] > a["t_ns"] and tot(b) > tot(a) else 1)
PY
}

# The transfer starts after the connection is up: wait for bytes to flow.
moving=0
for i in $(seq 1 200); do
	snap "$CSOCK" "$TMP/c0.json" && python3 -c "import json,sys; d=json.load(open('$TMP/c0.json')); sys.exit(0 if sum(e['counters']['bytes_tx'] for e in d['endpoints']) > 0 else 1)" 2>/dev/null && { moving=1; break; }
	kill -0 "$BPID" 2>/dev/null || break
	sleep 0.1
done
[ $moving = 1 ] && ok "client counters show bytes sent" || { fail "no bytes_tx seen in the client"; cat "$TMP/c0.json" "$TMP/bench.out"; finish; }

cp "$TMP/c0.json" "$TMP/out"
json_check 'd["pid"] == '"$BPID"' and len(d["endpoints"]) >= 1 and all(e["driver"] == "shm" for e in d["endpoints"])'
[ -n "$SSOCK" ] && snap "$SSOCK" "$TMP/s1.json"
snap "$CSOCK" "$TMP/c1.json"
sleep 0.3
snap "$CSOCK" "$TMP/c2.json"
[ -n "$SSOCK" ] && snap "$SSOCK" "$TMP/s2.json"
kill -0 "$BPID" 2>/dev/null && ok "bench still running during the snapshots" || fail "bench ended before the second snapshot (make it longer)"
grew "$TMP/c1.json" "$TMP/c2.json" bytes_tx && ok "client bytes_tx grew between snapshots" ||
	{ fail "client bytes_tx did not grow"; cat "$TMP/c1.json" "$TMP/c2.json"; }
if [ -n "$SSOCK" ]; then
	grew "$TMP/s1.json" "$TMP/s2.json" bytes_rx && ok "server bytes_rx grew between snapshots" ||
		{ fail "server bytes_rx did not grow"; cat "$TMP/s1.json" "$TMP/s2.json"; }
fi

# The bench finishes normally with the stats sockets on, and removes them.
wait "$BPID"; rc=$?
[ "$rc" = 0 ] && ok "bench exited 0" || { fail "bench exited $rc"; cat "$TMP/bench.out"; }
[ ! -e "$CSOCK" ] && ok "client stats socket removed" || fail "client stats socket left behind"
finish
