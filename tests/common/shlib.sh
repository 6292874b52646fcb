# SPDX-License-Identifier: MIT
# The prologue of the shell test libraries (tests/tools/lib.sh,
# tests/hostile/cli/lib.sh). Usage: source shlib.sh TMP_PREFIX
# A scratch dir $TMP, background PIDS killed at exit, ok/fail counting FAILS.
set -u
TMP=$(mktemp -d "/tmp/$1.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$TMP"
}
trap cleanup EXIT
FAILS=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
