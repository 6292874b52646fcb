# SPDX-License-Identifier: MIT
# Finding 11b: `kvwire ping` against a running `kvwire-bench server` — the
# server drives kvwire progress while it waits for control clients, so the
# handshake and the pings are answered, also while a silent control client
# is connected and while a ping overlaps an honest run (whose endpoint must
# still be the run's, not the ping's).
# Usage: test_ping_server.sh KVWIRE_BENCH KVWIRE
source "$(dirname "$0")/lib.sh" "$@"

start_server tcp tcp tcp://127.0.0.1:0 tcp:127.0.0.1:0

"$KVWIRE" ping -c 5 -t 2000 "$URI" >"$TMP/ping.out" 2>&1
rc=$?
[ "$rc" = 0 ] && grep -q '5 pings, 0 lost' "$TMP/ping.out" && ok "ping an idle bench server" ||
	{ fail "ping an idle bench server: rc $rc"; cat "$TMP/ping.out"; }

silent_bg 1 30
"$KVWIRE" ping -c 5 -t 2000 "$URI" >"$TMP/ping.out" 2>&1
rc=$?
[ "$rc" = 0 ] && grep -q '5 pings, 0 lost' "$TMP/ping.out" && ok "ping while a silent control client is connected" ||
	{ fail "ping while a silent control client is connected: rc $rc"; cat "$TMP/ping.out"; }
silent_kill

# A ping lasting about 2 s, and an honest run started while it goes on (5 s a
# ping: a loaded CI machine may stall the server that long, a blocked one 15 s).
"$KVWIRE" ping -c 100 -i 20 -t 5000 "$URI" >"$TMP/ping-long.out" 2>&1 &
PPID_=$!
sleep 0.3
honest_kv tcp 60
[ "$RC" = 0 ] && ok "honest kv run during a ping: ${MS} ms" || { fail "honest kv run during a ping: rc $RC"; tail -n 15 "$TMP/kv.out"; }
wait "$PPID_"
rc=$?
[ "$rc" = 0 ] && grep -q '100 pings, 0 lost' "$TMP/ping-long.out" && ok "the long ping lost nothing" ||
	{ fail "the long ping: rc $rc"; cat "$TMP/ping-long.out"; }
honest_kv tcp 60
[ "$RC" = 0 ] && ok "honest kv run after the ping: ${MS} ms" || { fail "honest kv run after the ping: rc $RC"; tail -n 15 "$TMP/kv.out"; }

# shm: the control link is a unix socket beside the listener's socket.
start_server shm shm "shm://$TMP/bench.sock" "unix:$TMP/bench.ctl"
"$KVWIRE" ping -c 5 -t 2000 "$URI" >"$TMP/ping.out" 2>&1
rc=$?
[ "$rc" = 0 ] && grep -q '5 pings, 0 lost' "$TMP/ping.out" && ok "ping an idle bench server over shm" ||
	{ fail "ping an idle bench server over shm: rc $rc"; cat "$TMP/ping.out"; }
honest_kv shm 60
[ "$RC" = 0 ] && ok "honest kv run over shm after the ping: ${MS} ms" || { fail "honest kv run over shm: rc $RC"; tail -n 15 "$TMP/kv.out"; }
finish
