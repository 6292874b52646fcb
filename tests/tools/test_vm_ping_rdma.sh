# SPDX-License-Identifier: MIT
# kvwire ping against a live kvwire listen on the rdma driver, inside the
# Soft-RoCE VM (tests/vm/run-rxe-vm.sh, 2 rails: rxe0 on 10.78.0.1, rxe1 on
# 10.78.1.1). One VM boot: the guest runs listen + ping and saves output and
# exit codes under $TMP/vm (shared read-write); every check runs here on the
# host afterwards. Exit 77 (skipped) when no VM can boot.
source "$(dirname "$0")/lib.sh" "$@"
RXE_VM=$(cd "$(dirname "$0")/../vm" && pwd)/run-rxe-vm.sh
"$RXE_VM" --check || exit 77

mkdir -p "$TMP/vm"
cat >"$TMP/guest.sh" <<'EOF2'
K=$1 O=$2
run() { n=$1; shift; "$@" >"$O/$n.out" 2>&1; echo $? >"$O/$n.rc"; }
URI=rdma://10.78.0.1:18515
"$K" listen "$URI" >"$O/listen.out" 2>&1 &
LP=$!
i=0
while [ $i -lt 200 ] && ! grep -q '^listening on ' "$O/listen.out"; do sleep 0.1; i=$((i + 1)); done
run ping "$K" ping -c 20 -t 5000 --json "$URI"
run ping2 "$K" ping -c 20 -t 5000 --json "$URI?rails=2"
run text "$K" ping -c 5 -t 5000 "$URI"
kill $LP; wait $LP; echo $? >"$O/listen.rc"
# nobody listens now
run none "$K" ping -c 1 -t 2000 --json "$URI"
EOF2
RXE_VM_SETUP=0 RXE_VM_RAILS=2 RXE_VM_TIMEOUT=150 RXE_VM_RW_DIRS="$TMP/vm" \
	"$RXE_VM" sh "$TMP/guest.sh" "$KVWIRE" "$TMP/vm" >"$TMP/vm.log" 2>&1
vmrc=$?
if [ "$vmrc" != 0 ]; then fail "VM run exited $vmrc"; cat "$TMP/vm.log"; finish; fi

# step NAME WANT_RC: makes the guest's output of NAME the "last output"
step() {
	cp "$TMP/vm/$1.out" "$TMP/out" 2>/dev/null || : >"$TMP/out"
	local rc; rc=$(cat "$TMP/vm/$1.rc" 2>/dev/null)
	if [ "$rc" = "$2" ]; then ok "$1: rc $rc"; else fail "$1: rc '$rc' (want $2)"; cat "$TMP/out"; fi
}

step ping 0
json_check 'd["reachable"] and d["driver"] == "rdma" and d["sent"] == 20 and d["lost"] == 0'
json_check 'd["peer_version"] == "1.4" and d["rails"] == 1'
json_check '0 < d["rtt"]["min_us"] <= d["rtt"]["p50_us"] <= d["rtt"]["p90_us"] <= d["rtt"]["p99_us"] <= d["rtt"]["max_us"]'
step ping2 0
json_check 'd["reachable"] and d["driver"] == "rdma" and d["lost"] == 0 and d["sent"] == 20'
json_check 'd["rails"] == 2 and len(d["rail"]) == 2 and all(r["joined"] for r in d["rail"])'
json_check '0 < d["rtt"]["min_us"] <= d["rtt"]["p50_us"] <= d["rtt"]["p99_us"] <= d["rtt"]["max_us"]'
step text 0
expect_out 'reachable via rdma, protocol 1\.4'
expect_out '5 pings, 0 lost; rtt us min'
cp "$TMP/vm/listen.out" "$TMP/out"
expect_out '^listening on rdma://10\.78\.0\.1:18515'
[ "$(grep -c '^accepted ' "$TMP/out")" -ge 3 ] && ok "listener accepted the three pings" || { fail "listener accepts"; cat "$TMP/out"; }
step none 1
json_check 'd["reachable"] is False and d["error"]'
finish
