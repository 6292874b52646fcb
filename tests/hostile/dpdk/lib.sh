#!/bin/bash
# SPDX-License-Identifier: MIT
# Shared set-up of the dpdk attack tests (issue 17): a listener (namespace
# A) and its client (B) run dk_xfer over net_af_packet through a bridge
# (namespace M); the attacker (X, attack.py) is a third port of the same
# bridge. It sees what the bridge floods: the client's broadcast HELLO, and
# with TAP=1 (a bridge that learns no address, so it floods every frame)
# everything, as a read-only tap would. Every test prints the figures it
# judges by: honest sequences completed of N, the listener's longest
# progress call and resident memory, bytes written inside and outside grants.
. "$(dirname "$0")/../../dpdk/lib.sh"
ATTACK="$(dirname "$0")/attack.py"
A=${TAG}A; B=${TAG}B; X=${TAG}X; M=${TAG}M
OUT=$(mktemp -d)
SPID= CPID= APID=
hostile_cleanup() {
	[ -n "${APID:-}" ] && kill "$APID" 2>/dev/null
	netns_cleanup "$A" "$B" "$X" "$M"; rm -rf "$OUT"; rundir_cleanup
}
trap hostile_cleanup EXIT

# Probes what the tests need; exits 77 with the reason when it is missing.
hostile_need() {
	need_netns
	command -v python3 >/dev/null || skip "python3 missing"
	command -v nft >/dev/null || skip "nft missing (nftables)"
	[ -x "$XFER" ] || skip "dk_xfer not built ($XFER)"
}

# hostile_net LOSS_PCT TAP: the three namespaces on the bridge
hostile_net() {
	netns_cleanup "$A" "$B" "$X" "$M"
	for n in "$A" "$B" "$X" "$M"; do ip netns add "$n" || return 1; done
	for s in a b x; do
		ip link add "${TAG}$s" type veth peer name "${TAG}${s}2" || return 1
		ip link set "${TAG}${s}2" netns "$M" || return 1
	done
	ip link set "${TAG}a" netns "$A" && ip link set "${TAG}b" netns "$B" && ip link set "${TAG}x" netns "$X" || return 1
	in_ns "$M" ip link add brM type bridge || return 1
	if [ "$2" = 1 ]; then in_ns "$M" ip link set brM type bridge ageing_time 0 || return 1; fi
	for s in a b x; do
		in_ns "$M" ip link set "${TAG}${s}2" master brM && in_ns "$M" ip link set "${TAG}${s}2" up || return 1
	done
	in_ns "$M" ip link set brM up
	in_ns "$A" ip link set "${TAG}a" up && in_ns "$B" ip link set "${TAG}b" up && in_ns "$X" ip link set "${TAG}x" up || return 1
	if [ "$1" -gt 0 ]; then
		printf 'table bridge fault {\n chain fdrop {\n  type filter hook forward priority 0; policy accept;\n  numgen random mod 100 < %d counter drop\n }\n}\n' "$1" |
			in_ns "$M" nft -f - || return 1
	fi
}

# server ARGS... / client ARGS...: dk_xfer in A / B, in the background
# (SPID/CPID: the process, output in $OUT/server.txt / client.txt)
server() {
	rm -f "$OUT/server.txt"
	nsenter --net="$NETNS_DIR/$A" -- timeout "${SRV_TIMEOUT:-150}" "$XFER" server "dpdk://10.0.0.1:7000" \
		-e "$EAL_BASE --file-prefix=${TAG}s -l 0 --vdev=net_af_packet0,iface=${TAG}a,$AF_ARGS" \
		"$@" >"$OUT/server.txt" 2>&1 </dev/null &
	SPID=$!
	wait_listen "$OUT/server.txt"
}
client() {
	rm -f "$OUT/client.txt"
	nsenter --net="$NETNS_DIR/$B" -- timeout "${CLI_TIMEOUT:-150}" "$XFER" client "dpdk://10.0.0.1:7000" \
		-e "$EAL_BASE --file-prefix=${TAG}c -l 1 --vdev=net_af_packet0,iface=${TAG}b,$AF_ARGS" \
		"$@" >"$OUT/client.txt" 2>&1 </dev/null &
	CPID=$!
}
# attack MODE key=value...: attack.py in X, in the background (APID)
attack() {
	rm -f "$OUT/attack.txt"
	nsenter --net="$NETNS_DIR/$X" -- timeout "${ATK_TIMEOUT:-150}" python3 "$ATTACK" "${TAG}x" "$@" \
		>"$OUT/attack.txt" 2>&1 </dev/null &
	APID=$!
	local i=0 # its socket is open before the client's HELLO
	until grep -q "^ATTACK ready" "$OUT/attack.txt" 2>/dev/null; do
		sleep 0.1; i=$((i + 1))
		[ $i -ge 200 ] && { echo "attack.py did not start: $(cat "$OUT/attack.txt")"; return 1; }
	done
}
# wait_all: the honest pair ends, then the attacker is told to stop (SIGTERM:
# it says what it did and exits) instead of running out its secs=
wait_all() {
	local p
	for p in "$CPID" "$SPID"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
	[ -n "${APID:-}" ] && { kill -TERM "$APID" 2>/dev/null; wait "$APID" 2>/dev/null; }
	APID=
}

done_of() { local n; n=$(grep -c '^DONE seq=' "$1" 2>/dev/null); echo "${n:-0}"; } # sequences completed
stat_of() { grep '^STATS' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
written_of() { grep '^WRITTEN' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# figures NAME N: one line with what the test is judged by
figures() {
	local n=$2 mp rs rm st
	mp=$(stat_of "$OUT/server.txt" maxpoll_us); rs=$(stat_of "$OUT/server.txt" rss_start_kb)
	rm=$(stat_of "$OUT/server.txt" rss_max_kb)
	st="listener_maxpoll_ms=$((${mp:-0} / 1000)) listener_rss_mb=$((${rs:-0} / 1024))->$((${rm:-0} / 1024))"
	[ -n "$mp" ] || st="listener_stats=none(killed at its time limit)"
	echo "FIGURES $1: honest_done=$(done_of "$OUT/client.txt")/$n $st" \
		"listener_cpu_s=$(stat_of "$OUT/server.txt" cpu_s)" \
		"written_inside=$(written_of "$OUT/server.txt" inside) written_outside=$(written_of "$OUT/server.txt" outside)" \
		"bad_frames(listener)=$(field "$OUT/server.txt" receiver bad_frames)" \
		"bad_frames(client)=$(field "$OUT/client.txt" sender bad_frames)" \
		"retx=$(field "$OUT/client.txt" sender retransmits)" \
		"$(grep -h '^ATTACK' "$OUT/attack.txt" 2>/dev/null | grep -v 'seen=\|ready=' | tail -1)"
}

# expect_done NAME N: the client completed N sequences and both sides said ok
expect_done() {
	local d; d=$(done_of "$OUT/client.txt")
	if [ "$d" = "$2" ] && result_ok "$OUT/client.txt" && result_ok "$OUT/server.txt"; then
		pass "$1: $d/$2 sequences"
	else
		fail "$1: $d/$2 sequences"
		tail -n 4 "$OUT/server.txt" "$OUT/client.txt" "$OUT/attack.txt"
	fi
}
