# SPDX-License-Identifier: MIT
# Shared by the tools-* tests. Usage: source lib.sh KVWIRE MKFRAMES STAT_LOAD FIXTURES
KVWIRE=$1 MKFRAMES=$2 STAT_LOAD=$3 FIXTURES=$4
# shellcheck source=../common/shlib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/shlib.sh" kvwt-tools
# expect_rc WANT CMD...: runs CMD, output in $TMP/out, checks the exit code
expect_rc() {
	local want=$1; shift
	"$@" >"$TMP/out" 2>&1
	local rc=$?
	if [ "$rc" = "$want" ]; then ok "rc $rc: $*"; else fail "rc $rc (want $want): $*"; cat "$TMP/out"; fi
}
# expect_out REGEX: the last command's output matches
expect_out() {
	if grep -Eq -- "$1" "$TMP/out"; then ok "output has /$1/"; else fail "output lacks /$1/"; cat "$TMP/out"; fi
}
# json_check PY_EXPR: evaluates a Python expression on d = the last output's JSON
json_check() {
	if python3 -c "import json,sys; d=json.load(open('$TMP/out')); sys.exit(0 if ($1) else 1)"; then
		ok "json: $1"
	else
		fail "json: $1"; cat "$TMP/out"
	fi
}
# start_bg NAME CMD...: starts CMD in the background, output in $TMP/NAME.out
start_bg() {
	local name=$1; shift
	"$@" >"$TMP/$name.out" 2>&1 &
	PIDS+=($!)
	LAST_PID=$!
}
# wait_for FILE REGEX [SECONDS]
wait_for() {
	local i
	for i in $(seq 1 $((${3:-10} * 20))); do
		grep -Eq -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "timed out waiting for /$2/ in $1"; cat "$1"
	return 1
}
finish() {
	if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
	echo "all checks passed"; exit 0
}
