# SPDX-License-Identifier: MIT
# kvwire ping against a live kvwire listen on the dpdk driver: two processes
# joined by a net_memif pair (listener = memif server role, ping = client
# role), --no-huge --no-pci, each with its own EAL file prefix.
# Exit 77 (skipped) when not root or the dpdk driver is not built.
source "$(dirname "$0")/lib.sh" "$@"
[ "$(id -u)" = 0 ] || { echo "skip: DPDK needs root"; exit 77; }
"$KVWIRE" devices --json | python3 -c 'import json,sys; sys.exit(0 if "dpdk" in json.load(sys.stdin)["drivers_built"].split(",") else 1)' ||
	{ echo "skip: the dpdk driver is not built"; exit 77; }

mkdir -p /run/kvwire
SOCK=/run/kvwire/kvwt-ping-$$.sock
rm -f "$SOCK"
CL=$([ "$(nproc)" -gt 1 ] && echo 1 || echo 0)
EAL="--no-huge --no-pci --no-telemetry -m 512 --log-level=lib.eal:warning"
URI=dpdk://127.0.0.1:7000
KVW_DPDK_EAL="$EAL -l 0 --file-prefix=kvwtPS$$ --vdev=net_memif0,role=server,socket=$SOCK" \
	start_bg listen "$KVWIRE" listen "$URI"
LISTEN=$LAST_PID
wait_for "$TMP/listen.out" '^listening on ' 30 || finish

export KVW_DPDK_EAL="$EAL -l $CL --file-prefix=kvwtPC$$ --vdev=net_memif0,role=client,socket=$SOCK"
# --json: stdout only (DPDK may log to stderr)
"$KVWIRE" ping -c 20 -t 10000 --json "$URI" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ "$rc" = 0 ] && ok "ping --json rc 0" || { fail "ping --json rc $rc"; cat "$TMP/out" "$TMP/err"; }
json_check 'd["reachable"] and d["driver"] == "dpdk" and d["sent"] == 20 and d["lost"] == 0'
json_check 'd["peer_version"] == "1.4" and d["rails"] >= 1'
json_check '0 < d["rtt"]["min_us"] <= d["rtt"]["p50_us"] <= d["rtt"]["p90_us"] <= d["rtt"]["p99_us"] <= d["rtt"]["max_us"]'
json_check 'd["rtt"]["min_us"] <= d["rtt"]["avg_us"] <= d["rtt"]["max_us"]'
wait_for "$TMP/listen.out" '^accepted ' 5
# the text form, a second connection to the same listener
expect_rc 0 "$KVWIRE" ping -c 5 -t 5000 "$URI"
expect_out 'reachable via dpdk, protocol 1\.4'
expect_out '5 pings, 0 lost; rtt us min'
[ "$(grep -c '^accepted ' "$TMP/listen.out")" -ge 2 ] && ok "listener accepted both pings" ||
	{ fail "listener did not accept two connections"; cat "$TMP/listen.out"; }

# Nobody listens any more: unreachable within the timeout, exit 1.
kill "$LISTEN"; wait "$LISTEN" 2>/dev/null
kill -0 "$LISTEN" 2>/dev/null && fail "listener still alive after SIGTERM"
rm -f "$SOCK"
finish
