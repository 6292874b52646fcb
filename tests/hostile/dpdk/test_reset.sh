#!/bin/bash
# SPDX-License-Identifier: MIT
# Issue 17 finding 2, blind resets: forged CLOSE frames over the psn space
# (256 to the listener, psn 1..1M step 4096, and 2047 to the client), one
# ACK with credits=0 to both ends at idle, and a credits=0 flood
# mid-transfer. The attacker knows the (IP, port) of both ends from the
# client's broadcast HELLO and nothing else. Judged by: every sequence done.
. "$(dirname "$0")/lib.sh"
hostile_need
hostile_net 0 0 || { fail "bridge with three namespaces"; exit 1; }
ARGS="-L 8 -B 64 -b 16384 -n 40 -W 50 -q -t 30000"

server $ARGS; attack closeflood delay=2; client $ARGS; wait_all
figures "forged CLOSE over the psn space" 40
expect_done "forged CLOSE over the psn space" 40

# idle: 9 s between sequences (peer_dead_ms is 5 s); the forged ACK comes 3 s in
IDLE="-L 8 -B 64 -b 16384 -n 3 -W 9000 -q -t 30000"
server $IDLE; attack credits0 delay=3 count=1; client $IDLE; wait_all
figures "one credits=0 ACK at idle" 3
expect_done "one credits=0 ACK at idle" 3

server $ARGS; attack credits0 delay=1 count=100000 rate=10000; client $ARGS; wait_all
figures "credits=0 flood mid-transfer" 40
expect_done "credits=0 flood mid-transfer" 40
[ $FAILS = 0 ]
