#!/bin/bash
# SPDX-License-Identifier: MIT
# Issue 17 finding 5, HELLO flood: HELLOs from new made-up sources at
# 20 k/s while an honest client connects three times in turn. Judged by:
# 3/3 connections served, the listener's memory grows < 64 MiB. Then a
# source that answers cookies holds a connection in the handshake of a
# listener with max_handshakes=1: the listener's limits apply to dpdk, and
# the honest client is refused at once with the listener's sentence.
. "$(dirname "$0")/lib.sh"
hostile_need
hostile_net 0 0 || { fail "bridge with three namespaces"; exit 1; }
R=3
ARGS="-L 8 -B 64 -b 16384 -n 2 -q -t 20000"
server $ARGS -r $R
attack helloflood secs=45 rate=20000
sleep 3
ok=0
for i in $(seq $R); do
	client $ARGS; wait "$CPID"
	if result_ok "$OUT/client.txt"; then ok=$((ok + 1)); else tail -n 2 "$OUT/client.txt"; fi
done
kill "$APID" 2>/dev/null; wait_all
rs=$(stat_of "$OUT/server.txt" rss_start_kb); rm=$(stat_of "$OUT/server.txt" rss_max_kb)
echo "FIGURES HELLO flood: honest_connects=$ok/$R listener_rss_mb=$((${rs:-0} / 1024))->$((${rm:-0} / 1024)) $(grep -h '^ATTACK hellos' "$OUT/attack.txt" | tail -1)"
if [ $ok = $R ]; then pass "HELLO flood: $ok/$R honest connections"; else fail "HELLO flood: $ok/$R honest connections"; fi
if [ -n "$rm" ] && [ $(( (rm - rs) / 1024 )) -lt 64 ]; then pass "listener memory +$(( (rm - rs) / 1024 )) MiB"
else fail "listener memory +$(( (${rm:-0} - ${rs:-0}) / 1024 )) MiB"; fi

KVW_MAX_HANDSHAKES=1 KVW_HANDSHAKE_TIMEOUT_MS=30000 server $ARGS -r 1
attack hold n=1 secs=15
i=0; until grep -q "^ATTACK held_flows" "$OUT/attack.txt" || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
t0=$(date +%s%N); client $ARGS; wait "$CPID"; ms=$((($(date +%s%N) - t0) / 1000000))
kill "$APID" "$SPID" 2>/dev/null; wait_all
echo "FIGURES handshake limit: $(grep -h '^ATTACK held' "$OUT/attack.txt") client: $(grep -h '^RESULT' "$OUT/client.txt") after $ms ms"
if grep -q "limit of connections in the handshake" "$OUT/client.txt"; then pass "max_handshakes=1 held: the client was refused with the listener's sentence"
else fail "max_handshakes=1 held: no refusal with the listener's sentence"; tail -n 3 "$OUT/client.txt"; fi
[ $FAILS = 0 ]
