#!/bin/bash
# SPDX-License-Identifier: MIT
# Issue 17 finding 6, held out-of-order control frames: 20 flows from
# made-up sources (each answers a cookie challenge if one comes) send 8191
# control frames of 1400 bytes above a psn they leave missing, while an
# honest endpoint idles between sequences. The listener's
# handshake_timeout_ms is 30 s here, so that the attacker's flows live as
# long as it sends (as in the issue). Judged by: the listener's memory
# grows < 32 MiB, the honest sequences complete.
. "$(dirname "$0")/lib.sh"
hostile_need
hostile_net 0 0 || { fail "bridge with three namespaces"; exit 1; }
ARGS="-L 8 -B 64 -b 16384 -n 2 -W 20000 -q -t 30000"
KVW_HANDSHAKE_TIMEOUT_MS=30000 server $ARGS; client $ARGS
sleep 4 # the honest endpoint is up
attack heldflood n=20 frames=8191 size=1400
wait_all
figures "held control frames" 2
expect_done "held control frames" 2
rs=$(stat_of "$OUT/server.txt" rss_start_kb); rm=$(stat_of "$OUT/server.txt" rss_max_kb)
if [ -n "$rm" ] && [ $(( (rm - rs) / 1024 )) -lt 32 ]; then pass "listener memory +$(( (rm - rs) / 1024 )) MiB"
else fail "listener memory +$(( (${rm:-0} - ${rs:-0}) / 1024 )) MiB"; fi
[ $FAILS = 0 ]
