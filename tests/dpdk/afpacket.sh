#!/bin/bash
# SPDX-License-Identifier: MIT
# dpdk driver over net_af_packet on veth pairs in namespaces this script
# creates and removes: plain transfer; real loss on a wire (bridge namespace
# with nftables numgen drop, 1%); a link down for a second mid-transfer;
# garbage and truncated frames injected from a raw socket in the peer namespace.
. "$(dirname "$0")/lib.sh"
need_netns
command -v nft >/dev/null || skip "nft missing"
OUT=$(mktemp -d)
A=${TAG}A; B=${TAG}B; M=${TAG}M
cleanup() { netns_cleanup "$A" "$B" "$M"; rm -rf "$OUT"; rundir_cleanup; }
trap cleanup EXIT
SIZE="-L 8 -B 64 -b 16384 -n 20 -q -t 30000"

report() { # report NAME
	if result_ok "$OUT/server.txt" && result_ok "$OUT/client.txt"; then
		pass "$1: $(grep ^RESULT "$OUT/client.txt") retx=$(field "$OUT/client.txt" sender retransmits) bad_frames(rx)=$(field "$OUT/server.txt" receiver bad_frames)"
		return 0
	fi
	fail "$1"; cat "$OUT/server.txt" "$OUT/client.txt"; return 1
}

# 1. plain veth pair
netns_veth "$A" "$B" "$VA" "$VB" || { fail "veth pair between namespaces $A and $B"; exit 1; }
afp_pair "$A" "$VA" "$B" "$VB" "$SIZE" "$SIZE" "$OUT"
report "af_packet veth" || true

# 2. garbage from a raw socket in the client namespace, during a transfer
inject() { sleep 1.5; in_ns "$B" python3 "$(dirname "$0")/inject.py" "$VB" 7000 600 >"$OUT/inject.txt" 2>&1; }
afp_pair "$A" "$VA" "$B" "$VB" "-L 8 -B 64 -b 16384 -n 60 -w 20 -q" "-L 8 -B 64 -b 16384 -n 60 -w 20 -q" "$OUT" inject
if report "garbage injected"; then
	bad=$(field "$OUT/server.txt" receiver bad_frames)
	[ "${bad:-0}" -gt 0 ] || fail "injected frames were not counted as bad (bad_frames=$bad; $(cat "$OUT/inject.txt"))"
fi

# 3. link down for a second mid-transfer
flap() { sleep 1.5; in_ns "$B" ip link set "$VB" down; sleep 1; in_ns "$B" ip link set "$VB" up; }
afp_pair "$A" "$VA" "$B" "$VB" "-L 8 -B 64 -b 16384 -n 80 -w 25 -q" "-L 8 -B 64 -b 16384 -n 80 -w 25 -q" "$OUT" flap
report "link down 1 s mid-transfer" || true
netns_cleanup "$A" "$B"

# 4. real loss: bridge namespace dropping N% with nftables
for pct in 0 1; do
	netns_bridge "$A" "$M" "$B" $pct || { fail "bridge setup"; break; }
	afp_pair "$A" "${TAG}a" "$B" "${TAG}b" "$SIZE" "$SIZE" "$OUT"
	report "bridge nft loss ${pct}%" || true
	if [ $pct -gt 0 ]; then
		r=$(field "$OUT/client.txt" sender retransmits)
		[ "${r:-0}" -gt 0 ] || fail "1% loss on the wire but no retransmission"
		in_ns "$M" nft list ruleset | grep -o 'packets [0-9]*' | sed 's/^/nft dropped /'
	fi
	netns_cleanup "$A" "$M" "$B"
done
[ $FAILS = 0 ]
