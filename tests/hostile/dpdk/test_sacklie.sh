#!/bin/bash
# SPDX-License-Identifier: MIT
# Issue 17 finding 4, SACK lies: a flood of ACKs with false SACK ranges to
# the sender while the bridge drops 1 % of the frames. Blind (the issue's
# attacker: the (IP, port) from the HELLO), then with a tap that learns the
# live ids and psns (no secret: the lies reach the sender and may cost
# resends, never the sequence), then with the tap and a secret. Judged by:
# 40/40 sequences each time (a run without the attacker first, to compare
# the resends with).
. "$(dirname "$0")/lib.sh"
hostile_need
hostile_net 1 0 || { fail "bridge with three namespaces"; exit 1; }
ARGS="-L 8 -B 64 -b 16384 -n 40 -W 20 -q -t 30000"
server $ARGS; client $ARGS; wait_all
figures "control: 1 % loss, no attacker" 40
expect_done "control: 1 % loss, no attacker" 40

server $ARGS; attack sacklie secs=30 rate=90000; client $ARGS; wait_all
figures "false SACKs, blind, 1 % loss" 40
expect_done "false SACKs, blind, 1 % loss" 40

hostile_net 1 1 || { fail "bridge as a tap"; exit 1; }
server $ARGS; attack sacklie secs=30 rate=90000 tap=1; client $ARGS; wait_all
figures "false SACKs from a tap, no secret, 1 % loss" 40
expect_done "false SACKs from a tap, no secret, 1 % loss" 40

export KVW_SECRET=hostile-dpdk-secret-0123456789
server $ARGS; attack sacklie secs=30 rate=90000 tap=1; client $ARGS; wait_all
figures "false SACKs from a tap, secret, 1 % loss" 40
expect_done "false SACKs from a tap, secret, 1 % loss" 40
[ $FAILS = 0 ]
