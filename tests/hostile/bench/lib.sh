# SPDX-License-Identifier: MIT
# Shared by the hostile bench tests. Usage: source lib.sh KVWIRE_BENCH KVWIRE
set -u
BENCH=$1 KVWIRE=$2
TMP=$(mktemp -d /tmp/kvwt-hbench.XXXXXX)
PIDS=()
FAILS=0
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$TMP"
}
trap cleanup EXIT
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
finish() {
	if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
	echo "all checks passed"; exit 0
}

# start_server NAME DRIVER LISTEN CTL: a kvwire-bench server on fresh
# loopback addresses; sets URI, CTL (tcp:HOST:PORT or unix:PATH), CTLPORT.
start_server() {
	local name=$1 i
	"$BENCH" server --driver "$2" --listen "$3" --ctl "$4" >"$TMP/$name.out" 2>&1 &
	PIDS+=($!)
	SRV_PID=$!
	for i in $(seq 1 200); do
		grep -q 'listening on' "$TMP/$name.out" && break
		sleep 0.05
	done
	URI=$(awk '/listening on/{print $5; exit}' "$TMP/$name.out")
	CTL=$(sed -n 's/.*(control \(.*\))$/\1/p' "$TMP/$name.out")
	CTLPORT=${CTL##*:}
	[ -n "$URI" ] && [ -n "$CTL" ] && ok "server $name on $URI, control $CTL" ||
		{ fail "server $name did not start"; cat "$TMP/$name.out"; finish; }
}

# honest_kv DRIVER LIMIT_S: one kv run (8 MiB a transfer, 4 transfers) against
# URI/CTL; sets RC and MS (wall time). Killed after LIMIT_S seconds (RC 124).
honest_kv() {
	local t0
	t0=$(now_ms)
	timeout "$2" "$BENCH" kv --driver "$1" --connect "$URI" --ctl "$CTL" --model llama3-8b \
		--tokens 64 -n 4 --json >"$TMP/kv.out" 2>&1
	RC=$?
	MS=$(($(now_ms) - t0))
}

# silent_bg N HOLD_S [SEND]: N connections to the control port (none sends a
# line; each sends SEND bytes without a newline when given), held by
# silent.py in the background until the server closes them or HOLD_S pass.
# Returns once all are opened (connects do not wait for the server).
silent_bg() {
	local i
	python3 "$(dirname "${BASH_SOURCE[0]}")/silent.py" 127.0.0.1 "$CTLPORT" "$@" >"$TMP/silent.out" 2>&1 &
	SIL_PID=$!
	PIDS+=($SIL_PID)
	for i in $(seq 1 100); do
		grep -q '^opened' "$TMP/silent.out" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "silent.py did not open its connections"; cat "$TMP/silent.out"
}
# silent_wait: waits for silent.py; sets CLOSED ("C of N") and EOF_MS (when
# the server closed the last one, -1 when some stayed open)
silent_wait() {
	wait "$SIL_PID"
	CLOSED=$(sed -n 's/^closed \([0-9]* of [0-9]*\),.*/\1/p' "$TMP/silent.out")
	EOF_MS=$(sed -n 's/.*last after \(-\{0,1\}[0-9]*\) ms/\1/p' "$TMP/silent.out")
	[ -n "$EOF_MS" ] || EOF_MS=-1
}
silent_kill() {
	kill "$SIL_PID" 2>/dev/null
	wait "$SIL_PID" 2>/dev/null
}
