#!/bin/bash
# The conformance suite over tcp on a loopback that really loses packets:
# a private network namespace (unshare -n, so no remount is needed and it
# works in a chroot) whose lo drops PCT % of all TCP segments, both ways,
# with nftables. TCP's own retransmission must repair every loss; each case
# still holds. Only this namespace's loopback carries traffic.
#   lossy_lo.sh PCT TEST_EXE [criterion args...]      (TAP on stdout)
set -u
pct=$1
shift
if [ "$(id -u)" != 0 ]; then
	echo "1..0 # SKIP needs root (network namespace, nftables)"
	exit 0
fi
for t in unshare nft ip; do
	command -v "$t" >/dev/null || { echo "1..0 # SKIP $t missing"; exit 0; }
done
exec unshare -n -- bash -c '
pct=$1
shift
ip link set lo up || { echo "Bail out! lo up failed in the test namespace"; exit 1; }
nft -f - <<EOF || { echo "Bail out! nftables rule refused"; exit 1; }
table inet kvwlossy {
	chain out {
		type filter hook output priority 0; policy accept;
		meta l4proto tcp numgen random mod 100 < $pct counter drop
	}
}
EOF
# a handshake whose SYN or first segments are lost twice takes 1 + 2 + 4 s of
# TCP backoff, past the listener'"'"'s 5 s default: give it 15 s here
KVW_TEST_DRIVER=tcp KVW_TEST_REAL_LOSS=1 KVW_HANDSHAKE_TIMEOUT_MS=${KVW_HANDSHAKE_TIMEOUT_MS:-15000} "$@"
rc=$?
echo "# nftables dropped $(nft list table inet kvwlossy | grep -o "packets [0-9]*")" 
exit $rc' _ "$pct" "$@"
