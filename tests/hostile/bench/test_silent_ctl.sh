# SPDX-License-Identifier: MIT
# Finding 11a: silent and flooding clients on the kvwire-bench control port.
# The server closes a control client that sends no complete line within
# 2 s, serves control clients side by side (several silent ones do not delay
# an honest run), keeps at most 16 of them (a newcomer evicts the one silent
# longest) and buffers at most 16 KiB of each (a longer line is closed).
# Usage: test_silent_ctl.sh KVWIRE_BENCH KVWIRE
source "$(dirname "$0")/lib.sh" "$@"

start_server tcp tcp tcp://127.0.0.1:0 tcp:127.0.0.1:0

# The honest run alone: the reference time.
honest_kv tcp 60
[ "$RC" = 0 ] && ok "honest kv run alone: ${MS} ms" || { fail "honest kv run alone: rc $RC"; tail -n 15 "$TMP/kv.out"; finish; }
BOUND=$((MS + 3000))

# (a) three silent connections opened first: the honest run still takes
# about the reference time (bound: reference + 3 s; served one by one even
# at the 2 s limit, three silent clients would take 6 s).
silent_bg 3 60
honest_kv tcp 60
[ "$RC" = 0 ] && [ "$MS" -le "$BOUND" ] && ok "honest kv run with 3 silent clients: ${MS} ms (bound $BOUND)" ||
	{ fail "honest kv run with 3 silent clients: rc $RC in ${MS} ms (bound $BOUND ms)"; tail -n 15 "$TMP/kv.out"; }
silent_kill

# The server closes silent clients after 2 s, all of them at once.
silent_bg 3 8
silent_wait
[ "$CLOSED" = "3 of 3" ] && [ "$EOF_MS" -ge 1500 ] && [ "$EOF_MS" -le 3500 ] &&
	ok "3 silent clients closed after ${EOF_MS} ms" ||
	fail "3 silent clients: $CLOSED closed within 8 s, the last after ${EOF_MS} ms (want all after 2 s)"

# A flood of 40 silent connections (more than the 16 the server keeps):
# the honest client still gets in and its run stays within the bound; all
# 40 are closed within 3.5 s.
silent_bg 40 30
honest_kv tcp 60
[ "$RC" = 0 ] && [ "$MS" -le "$BOUND" ] && ok "honest kv run with 40 silent clients: ${MS} ms (bound $BOUND)" ||
	{ fail "honest kv run with 40 silent clients: rc $RC in ${MS} ms (bound $BOUND ms)"; tail -n 15 "$TMP/kv.out"; }
silent_wait
[ "$CLOSED" = "40 of 40" ] && [ "$EOF_MS" -le 3500 ] && ok "40 silent clients closed, the last after ${EOF_MS} ms" ||
	fail "40 silent clients: $CLOSED closed within 30 s, the last after ${EOF_MS} ms (want all within 3.5 s)"

# A client sending 64 KiB without a newline is closed at once (16 KiB kept).
silent_bg 1 8 65536
silent_wait
[ "$CLOSED" = "1 of 1" ] && [ "$EOF_MS" -le 1500 ] && ok "a 64 KiB line was closed after ${EOF_MS} ms" ||
	fail "a 64 KiB line: $CLOSED closed within 8 s, after ${EOF_MS} ms (want within 1.5 s)"

kill -0 "$SRV_PID" 2>/dev/null && ok "the server is still up" || { fail "the server died"; cat "$TMP/tcp.out"; }
honest_kv tcp 60
[ "$RC" = 0 ] && ok "honest kv run afterwards: ${MS} ms" || { fail "honest kv run afterwards: rc $RC"; tail -n 15 "$TMP/kv.out"; }
finish
