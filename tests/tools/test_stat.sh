# SPDX-License-Identifier: MIT
# kvwire stat against a process moving sequences: counters move between
# two snapshots; in-flight requests, per-rail counters, --prom and -w.
source "$(dirname "$0")/lib.sh" "$@"

SOCK=$TMP/stats.sock
KVW_STATS_SOCKET=$SOCK start_bg load "$STAT_LOAD" tcp://127.0.0.1:0 20
LOAD=$LAST_PID
wait_for "$TMP/load.out" '^ready' 10

expect_rc 0 "$KVWIRE" stat "$SOCK" --json
cp "$TMP/out" "$TMP/s1.json"
json_check 'len(d["endpoints"]) == 2 and all(e["driver"] == "tcp" and e["state"] == "ready" for e in d["endpoints"])'
json_check 'len(d["listeners"]) == 1 and d["listeners"][0]["uri"].startswith("tcp://127.0.0.1:")'
json_check 'sum(e["counters"]["bytes_rx"] for e in d["endpoints"]) > 0 and all(len(e["counters"]["rail"]) == e["counters"]["rails"] for e in d["endpoints"])'
sleep 0.5
expect_rc 0 "$KVWIRE" stat "$SOCK" --json
python3 - "$TMP/s1.json" "$TMP/out" <<'PY' && ok "bytes and sequences moved between snapshots" || fail "counters did not move"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
tot = lambda d, k: sum(e["counters"][k] for e in d["endpoints"])
sys.exit(0 if b["t_ns"] > a["t_ns"] and tot(b, "bytes_rx") > tot(a, "bytes_rx")
         and tot(b, "seqs_ok") > tot(a, "seqs_ok") else 1)
PY
# A request is in flight almost always; look in a few snapshots.
seen=0
for i in 1 2 3 4 5 6 7 8 9 10; do
	"$KVWIRE" stat "$SOCK" --json >"$TMP/out" 2>&1
	python3 -c "import json,sys; d=json.load(open('$TMP/out')); sys.exit(0 if any(r['role'] in ('send','recv') and r['bytes_total'] > 0 and r['n_layers'] == 4 for e in d['endpoints'] for r in e['requests']) else 1)" && { seen=1; break; }
done
[ $seen = 1 ] && ok "in-flight requests listed with role, bytes and layers" || fail "no in-flight request seen in 10 snapshots"

expect_rc 0 "$KVWIRE" stat "$SOCK"
expect_out '^EP +DRV +STATE'
expect_out 'rail 0: tx'
expect_rc 0 "$KVWIRE" stat "$SOCK" --prom
expect_out '^# TYPE kvwire_bytes_rx_total counter$'
expect_out '^kvwire_bytes_rx_total\{pid="[0-9]+",ep="[0-9]+",driver="tcp",uri="tcp://127\.0\.0\.1:[0-9]+"\} [1-9][0-9]*$'
expect_out '^kvwire_rail_bytes_tx_total\{.*rail="0"\} '
expect_rc 0 "$KVWIRE" stat "$SOCK" -w 0.2 -n 3
[ "$(grep -c '^EP ' "$TMP/out")" = 3 ] && ok "-w -n 3 printed 3 samples" || fail "-w -n 3 sample count"
expect_out 'GiB/s|MiB/s|KiB/s'
PID=$(python3 -c "import json; print(json.load(open('$TMP/s1.json'))['pid'])")
[ "$PID" = "$LOAD" ] && ok "snapshot names the pid" || fail "snapshot pid $PID, want $LOAD"

kill -TERM "$LOAD"; wait "$LOAD" 2>/dev/null
[ ! -e "$SOCK" ] && ok "socket removed by kvw_ctx_destroy" || fail "socket left behind"
expect_rc 1 "$KVWIRE" stat "$SOCK"
expect_out 'cannot connect'
expect_rc 1 "$KVWIRE" stat 999999999
expect_rc 2 "$KVWIRE" stat "$SOCK" --json --prom

# A killed process leaves its socket; the next one on that path takes it over.
KVW_STATS_SOCKET=$SOCK start_bg load2 "$STAT_LOAD" tcp://127.0.0.1:0 20
wait_for "$TMP/load2.out" '^ready' 10
kill -KILL "$LAST_PID"; wait "$LAST_PID" 2>/dev/null
[ -S "$SOCK" ] && ok "SIGKILL leaves a stale socket" || fail "no stale socket after SIGKILL"
KVW_STATS_SOCKET=$SOCK start_bg load3 "$STAT_LOAD" tcp://127.0.0.1:0 20
wait_for "$TMP/load3.out" '^ready' 10
expect_rc 0 "$KVWIRE" stat "$SOCK" --json
json_check 'd["pid"] == '"$LAST_PID"
# ... but a live one is never stolen: a second process on the same path fails to start.
KVW_STATS_SOCKET=$SOCK expect_rc 1 "$STAT_LOAD" tcp://127.0.0.1:0 1
expect_out 'in use by another process'

# A plain `kvwire listen` with the stats socket shows the pinging peer.
KVW_STATS_SOCKET=$TMP/listen.sock start_bg listen "$KVWIRE" listen tcp://127.0.0.1:0
wait_for "$TMP/listen.out" '^listening on '
URI=$(awk '/^listening on /{print $3; exit}' "$TMP/listen.out")
start_bg ping "$KVWIRE" ping -c 50 -i 20 "$URI"
wait_for "$TMP/listen.out" '^accepted '
expect_rc 0 "$KVWIRE" stat "$TMP/listen.sock" --json
json_check 'len(d["endpoints"]) >= 1 and d["endpoints"][0]["counters"]["frames_rx"] > 0'
finish
