# SPDX-License-Identifier: MIT
# Shared by the hostile-cli-* tests. Usage: source lib.sh KVWIRE CLI_PEER
KVWIRE=$1 PEER=$2
# shellcheck source=../common/shlib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../common/shlib.sh" kvwt-hcli
# start_peer NAME ARGS...: starts kvwt_cli_peer ARGS, waits for its "ready"
start_peer() {
	local name=$1 i; shift
	"$PEER" "$@" >"$TMP/$name.out" 2>&1 &
	PIDS+=($!)
	for i in $(seq 1 200); do
		grep -q '^ready' "$TMP/$name.out" && return 0
		sleep 0.05
	done
	fail "peer $name did not start"; cat "$TMP/$name.out"
	return 1
}
# bounded MAX_MB SECS CMD...: runs CMD under the watch (killed past MAX_MB
# of RSS or SECS), stdout in $TMP/out, stderr in $TMP/err; sets RC, RSS_KB,
# WALL_MS, KILLED and prints them
bounded() {
	local max=$1 secs=$2; shift 2
	"$PEER" measure "$max" "$secs" "$TMP/measured" "$@" >"$TMP/out" 2>"$TMP/err"
	local m; m=$(cat "$TMP/measured" 2>/dev/null)
	RC=$(sed -n 's/.*rc=\([0-9]*\).*/\1/p' <<<"$m")
	RSS_KB=$(sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p' <<<"$m")
	WALL_MS=$(sed -n 's/.*wall_ms=\([0-9]*\).*/\1/p' <<<"$m")
	KILLED=$(sed -n 's/.*killed=\([a-z]*\).*/\1/p' <<<"$m")
	echo "measured: $* -> rc $RC, max RSS $((RSS_KB / 1024)) MiB, $WALL_MS ms, killed: $KILLED"
}
# expect_bounded RC MAX_MB MAX_MS: the last bounded run exited RC within
# MAX_MB of RSS and MAX_MS
expect_bounded() {
	if [ "$KILLED" = no ] && [ "$RC" = "$1" ] && [ "$RSS_KB" -le $(($2 * 1024)) ] &&
	   [ "$WALL_MS" -le "$3" ]; then
		ok "rc $RC, RSS $((RSS_KB / 1024)) <= $2 MiB, $WALL_MS <= $3 ms"
	else
		fail "want rc $1 within $2 MiB and $3 ms; got rc $RC, $((RSS_KB / 1024)) MiB, $WALL_MS ms, killed: $KILLED"
		head -c 2000 "$TMP/err"
	fi
}
# expect_in FILE REGEX / expect_not_in FILE REGEX (grep -E on bytes)
expect_in() {
	if LC_ALL=C grep -Eq -- "$2" "$1"; then ok "$(basename "$1") has /$2/"; else
		fail "$(basename "$1") lacks /$2/"; head -c 2000 "$1"; fi
}
expect_not_in() {
	if LC_ALL=C grep -Eq -- "$2" "$1"; then fail "$(basename "$1") has /$2/"; head -c 2000 "$1" | cat -v; else
		ok "$(basename "$1") has no /$2/"; fi
}
# no_controls FILE: no byte outside printable ASCII but newline
no_controls() {
	if LC_ALL=C tr -d '\n -~' <"$1" | LC_ALL=C grep -q .; then
		fail "$(basename "$1") holds control or non-ASCII bytes:"; cat -v "$1" | head -c 2000
	else
		ok "$(basename "$1"): printable ASCII only"
	fi
}
finish() {
	if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
	echo "all checks passed"; exit 0
}
