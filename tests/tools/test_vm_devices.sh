# SPDX-License-Identifier: MIT
# kvwire devices inside the Soft-RoCE VM (tests/vm/run-rxe-vm.sh, 2 rails:
# rxe0 on dummy0 10.78.0.1, rxe1 on dummy1 10.78.1.1, MTU 9000). One VM boot:
# the guest only runs the commands and saves output + exit code under $TMP/vm
# (shared read-write); every check runs here on the host afterwards.
# Exit 77 (skipped) when no VM can boot.
source "$(dirname "$0")/lib.sh" "$@"
RXE_VM=$(cd "$(dirname "$0")/../vm" && pwd)/run-rxe-vm.sh
"$RXE_VM" --check || exit 77

mkdir -p "$TMP/vm"
cat >"$TMP/guest.sh" <<'EOF'
K=$1 O=$2
run() { n=$1; shift; "$@" >"$O/$n.out" 2>&1; echo $? >"$O/$n.rc"; }
run devices "$K" devices
run json "$K" devices --json
run devinfo ibv_devinfo -v -d rxe0
run rdmalink rdma link show
run onlyrxe1 env KVW_RDMA_DEV=rxe1 "$K" devices --json
# no IPv4 address, so no IPv4 RoCE v2 GID anywhere: the rdma driver has no port
ip addr del 10.78.0.1/24 dev dummy0
ip addr del 10.78.1.1/24 dev dummy1
run noaddr "$K" devices --json
EOF
RXE_VM_SETUP=0 RXE_VM_RAILS=2 RXE_VM_TIMEOUT=100 RXE_VM_RW_DIRS="$TMP/vm" \
	"$RXE_VM" sh "$TMP/guest.sh" "$KVWIRE" "$TMP/vm" >"$TMP/vm.log" 2>&1
vmrc=$?
if [ "$vmrc" != 0 ]; then fail "VM run exited $vmrc"; cat "$TMP/vm.log"; finish; fi

# step NAME WANT_RC: makes the guest's output of NAME the "last output"
step() {
	cp "$TMP/vm/$1.out" "$TMP/out" 2>/dev/null || : >"$TMP/out"
	local rc; rc=$(cat "$TMP/vm/$1.rc" 2>/dev/null)
	if [ "$rc" = "$2" ]; then ok "$1: rc $rc"; else fail "$1: rc '$rc' (want $2)"; cat "$TMP/out"; fi
}

# The independent view first: what rdma-core itself says (guards the checks below).
step devinfo 0
expect_out 'state:[[:space:]]+PORT_ACTIVE'
expect_out 'active_mtu:[[:space:]]+4096'
expect_out 'GID\[ *1\]:[[:space:]]+::ffff:10\.78\.0\.1, RoCE v2'
step rdmalink 0
expect_out 'link rxe0/1 state ACTIVE .*netdev dummy0'
expect_out 'link rxe1/1 state ACTIVE .*netdev dummy1'

step devices 0
expect_out '^RDMA devices:$'
for i in 0 1; do
	expect_out "^  rxe$i  driver rdma_rxe \\(software\\)"
	expect_out "^    port 1  ACTIVE \\(LinkUp\\)  Ethernet  mtu 4096  .*  netdev dummy$i$"
	expect_out "^      gid\\[1\\] ::ffff:10\\.78\\.$i\\.1  RoCE v2  dummy$i$"
done
expect_out '^  rdma +usable +rxe0 port 1 is ACTIVE with IPv4 RoCE v2 GID 1 \(10\.78\.0\.1\)'
if grep -q 'not seen by libibverbs' "$TMP/out"; then fail "a device is not seen by libibverbs"; fi

step json 0
json_check 'd["rdma"]["libibverbs"] is True and d["rdma"]["why"] == ""'
json_check 'sorted(x["name"] for x in d["rdma"]["devices"]) == ["rxe0", "rxe1"]'
for i in 0 1; do
	dev="[x for x in d['rdma']['devices'] if x['name'] == 'rxe$i'][0]"
	json_check "$dev['driver'] == 'rdma_rxe' and $dev['software'] and $dev['verbs']"
	json_check "[p['port'] for p in $dev['ports']] == [1]"
	port="$dev['ports'][0]"
	json_check "$port['state'] == 'ACTIVE' and $port['phys_state'] == 'LinkUp'"
	json_check "$port['link_layer'] == 'Ethernet' and $port['active_mtu'] == 4096"
	json_check "$port['netdev'] == 'dummy$i'"
	json_check "$port['ipv4_gid_index'] == 1 and $port['ipv4'] == '10.78.$i.1'"
	json_check "[(g['gid'], g['addr'], g['type'], g['netdev'], g['ipv4']) for g in $port['gids'] if g['index'] == 1] == [('0000:0000:0000:0000:0000:ffff:0a4e:0${i}01', '::ffff:10.78.$i.1', 'RoCE v2', 'dummy$i', True)]"
	# the other GID is the link-local one from the MAC, also RoCE v2 on dummy<i>
	json_check "all(g['netdev'] == 'dummy$i' and g['type'] == 'RoCE v2' for g in $port['gids'])"
	json_check "any(g['addr'].startswith('fe80::') and not g['ipv4'] for g in $port['gids'])"
done
rdma="[x for x in d['drivers'] if x['name'] == 'rdma'][0]"
json_check "$rdma['built'] and $rdma['usable'] and 'rdma://10.78.0.1:PORT' in $rdma['why']"
json_check '[x["usable"] for x in d["drivers"] if x["name"] in ("tcp", "shm")] == [True, True]'
# the driver's own probe (ops->probe) lists both devices, usable, keyed by type 2 windows (mw2) on rxe
json_check "sorted((x['name'], x['usable']) for x in $rdma['devices']) == [('rxe0 port 1', True), ('rxe1 port 1', True)]"
json_check "all('grant keys mw2' in x['details'] and 'active mtu 4096' in x['details'] for x in $rdma['devices'])"

# config rdma_dev narrows the driver to one device: the probe says so for the other
step onlyrxe1 0
json_check "$rdma['usable'] and 'rdma://10.78.1.1:PORT' in $rdma['why']"
json_check "[x['usable'] for x in $rdma['devices'] if x['name'].startswith('rxe0')] == [False]"
json_check "all('config rdma_dev' in x['reason'] for x in $rdma['devices'] if not x['usable'])"

# Ports stay ACTIVE but have no IPv4 RoCE v2 GID: the rdma driver cannot use
# them, and devices must not call it usable.
step noaddr 0
json_check "all(p['state'] == 'ACTIVE' and p['ipv4_gid_index'] == -1 and p['ipv4'] == '' for x in d['rdma']['devices'] for p in x['ports'])"
json_check "not any(g['ipv4'] for x in d['rdma']['devices'] for p in x['ports'] for g in p['gids'])"
json_check "not $rdma['usable'] and 'IPv4 RoCE v2 GID' in $rdma['why'] and 'kvwire doctor' in $rdma['why']"
json_check "len($rdma['devices']) == 2 and not any(x['usable'] for x in $rdma['devices'])"
json_check "all('IPv4 address' in x['reason'] for x in $rdma['devices'])"
finish
