# SPDX-License-Identifier: MIT
# kvwire stat against hostile stats sockets. Bounds: a snapshot larger than
# -m (16 MiB by default) is refused at once; the whole snapshot (connect
# included) must come within -t (2000 ms by default); each case exits 1
# with a sentence within 6 s (2 s + slack for a loaded host) and 256 MiB of
# RSS (the 16 MiB read, its parse, sanitizer overhead). Unbounded, the
# flood took the CLI past 1 GiB in under a second; the trickle and the full
# backlog kept it waiting forever.
source "$(dirname "$0")/lib.sh" "$@"

start_peer flood stats-flood "$TMP/flood.sock"
bounded 256 20 "$KVWIRE" stat "$TMP/flood.sock"
expect_bounded 1 256 6000
expect_in "$TMP/err" 'snapshot is larger than 16777216 bytes.*raise -m'
bounded 256 20 "$KVWIRE" stat --json -m 1M "$TMP/flood.sock"
expect_bounded 1 64 6000
expect_in "$TMP/err" 'larger than 1048576 bytes'
bounded 256 20 "$KVWIRE" stat -w 0.1 -n 3 "$TMP/flood.sock"
expect_bounded 1 256 6000

start_peer trickle stats-trickle "$TMP/trickle.sock"
bounded 256 20 "$KVWIRE" stat "$TMP/trickle.sock"
expect_bounded 1 64 6000
expect_in "$TMP/err" 'no complete snapshot within 2000 ms \([0-9]+ bytes came\).*raise -t'
if [ "$WALL_MS" -ge 1900 ]; then ok "waited the 2000 ms ($WALL_MS)"; else fail "gave up early: $WALL_MS ms"; fi
bounded 256 20 "$KVWIRE" stat -t 300 "$TMP/trickle.sock"
expect_bounded 1 64 3000
expect_in "$TMP/err" 'within 300 ms'

start_peer noaccept stats-noaccept "$TMP/noaccept.sock"
bounded 256 20 "$KVWIRE" stat "$TMP/noaccept.sock"
expect_bounded 1 64 6000
expect_in "$TMP/err" 'takes no connection within 2000 ms \(its backlog is full\)'

# a well-formed snapshot full of escape sequences and a secret: printed
# escaped, the secret never
start_peer evil stats-evil "$TMP/evil.sock"
for mode in "" --json --prom; do
	bounded 64 20 "$KVWIRE" stat $mode "$TMP/evil.sock"
	expect_bounded 0 64 6000
	no_controls "$TMP/out"
	expect_not_in "$TMP/out" 'hunter2'
	expect_in "$TMP/out" 'secret=\*\*\*'
done
expect_in "$TMP/out" 'driver="tcp\\\\xc2\\\\x9b6n"'

for bad in "-t 0" "-t x" "-m 10" "-m 1Q"; do
	bounded 64 20 "$KVWIRE" stat $bad "$TMP/evil.sock"
	expect_bounded 2 64 6000
	expect_in "$TMP/err" "give"
done
finish
