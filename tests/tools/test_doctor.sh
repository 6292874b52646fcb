# SPDX-License-Identifier: MIT
# kvwire doctor: verdicts, fixes, exit status; memlock fails under a tiny limit.
source "$(dirname "$0")/lib.sh" "$@"

"$KVWIRE" doctor --json >"$TMP/out" 2>&1
rc=$?
json_check 'all(c["verdict"] in ("ok","warn","fail") for c in d["checks"])'
json_check 'all(c["fix"] for c in d["checks"] if c["verdict"] != "ok")'
json_check '{"memlock","hugepages","iommu-vfio","numa"} <= {c["check"] for c in d["checks"]}'
python3 -c "import json,sys; d=json.load(open('$TMP/out')); sys.exit(0 if (d['fail'] > 0) == ($rc == 1) else 1)" \
	&& ok "exit status $rc matches the fail count" || fail "exit status $rc disagrees with the fail count"
if [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
	json_check '[c for c in d["checks"] if c["check"] == "rdma-devices"][0]["verdict"] == "warn"'
fi
# ofi: libfabric's tcp;ofi_rxm is there wherever the driver is built
if "$KVWIRE" devices --json | python3 -c 'import json,sys; sys.exit(0 if "ofi" in json.load(sys.stdin)["drivers_built"].split(",") else 1)'; then
	"$KVWIRE" doctor --json >"$TMP/out" 2>&1
	json_check '[c for c in d["checks"] if c["check"] == "ofi-providers"][0]["verdict"] == "ok" and "tcp;ofi_rxm" in [c for c in d["checks"] if c["check"] == "ofi-providers"][0]["detail"]'
	FI_PROVIDER=nosuchprovider "$KVWIRE" doctor --json >"$TMP/out" 2>&1
	json_check '[c for c in d["checks"] if c["check"] == "ofi-providers"][0]["verdict"] == "warn" and "fi_info" in [c for c in d["checks"] if c["check"] == "ofi-providers"][0]["fix"] + [c for c in d["checks"] if c["check"] == "ofi-providers"][0]["detail"]'
fi

# A 64 KiB memlock limit without CAP_IPC_LOCK cannot pin a 1 GiB pool.
NOCAP=()
if [ "$(id -u)" = 0 ]; then
	NOCAP=(setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock)
fi
expect_rc 1 prlimit --memlock=65536 "${NOCAP[@]}" "$KVWIRE" doctor --pool-bytes 1G
expect_out '^\[fail\] memlock .*CAP_IPC_LOCK is absent'
expect_out 'fix: raise the limit'
expect_rc 1 prlimit --memlock=65536 "${NOCAP[@]}" "$KVWIRE" doctor --pool-bytes 1G --json
json_check '[c for c in d["checks"] if c["check"] == "memlock"][0]["verdict"] == "fail" and d["fail"] >= 1'
# ... and the same limit is enough for a 32 KiB pool.
expect_rc 0 prlimit --memlock=65536 "${NOCAP[@]}" "$KVWIRE" doctor --pool-bytes 32K --json
json_check '[c for c in d["checks"] if c["check"] == "memlock"][0]["verdict"] == "ok"'
# --strict turns warnings into a failing exit status when there are any.
"$KVWIRE" doctor --pool-bytes 32K --json >"$TMP/out" 2>&1
warns=$(python3 -c "import json; print(json.load(open('$TMP/out'))['warn'])")
fails=$(python3 -c "import json; print(json.load(open('$TMP/out'))['fail'])")
want=0; [ "$warns" != 0 ] || [ "$fails" != 0 ] && want=1
expect_rc $want "$KVWIRE" doctor --pool-bytes 32K --strict
expect_rc 2 "$KVWIRE" doctor --pool-bytes lots
finish
