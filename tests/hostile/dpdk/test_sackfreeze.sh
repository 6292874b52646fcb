#!/bin/bash
# SPDX-License-Identifier: MIT
# Issue 17 finding 1: one ACK froze the listener before any handshake. The
# attacker opens a flow from a made-up source (a HELLO; it answers a cookie
# challenge if one comes) and sends ACKs whose 16 SACK ranges wrap (start
# una + 2^31 - 1, end una - 2) while an honest client moves 40 sequences.
# Judged by: 40/40 sequences, the listener's longest progress call < 2 s (it
# was 65 s; on a loaded 2-CPU host a descheduled poller alone shows 0.3-0.8 s).
. "$(dirname "$0")/lib.sh"
hostile_need
hostile_net 0 0 || { fail "bridge with three namespaces"; exit 1; }
ARGS="-L 8 -B 64 -b 16384 -n 40 -W 50 -q -t 30000"
server $ARGS
attack sackfreeze acks=16
client $ARGS
wait_all
figures "sack ranges that wrap" 40
expect_done "sack ranges that wrap" 40
mp=$(stat_of "$OUT/server.txt" maxpoll_us)
if [ -n "$mp" ] && [ "$mp" -lt 2000000 ]; then pass "listener's longest progress call ${mp} us"
else fail "listener's longest progress call ${mp:-?} us (froze)"; fi
[ $FAILS = 0 ]
