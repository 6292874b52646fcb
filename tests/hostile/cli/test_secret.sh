# SPDX-License-Identifier: MIT
# No kvwire CLI output shows a shared secret, and the secret need not be on
# the command line: kvwire listen / ping with ?secret=hunter2 print
# secret=***, and /proc/PID/cmdline of the running listener no longer holds
# it; --secret-file FILE (first line) authenticates like ?secret=; kvwire
# stat of the listener shows none; a bad secret file is a sentence, exit 2.
source "$(dirname "$0")/lib.sh" "$@"
SECRET=hunter2

# listen_on NAME ARGS...: kvwire listen in the background; URI = bound URI
listen_on() {
	local name=$1 i; shift
	KVW_STATS_SOCKET="$TMP/$name.stats" "$KVWIRE" listen "$@" >"$TMP/$name.out" 2>&1 &
	PIDS+=($!)
	LPID=$!
	for i in $(seq 1 200); do
		grep -q 'listening' "$TMP/$name.out" && break
		sleep 0.05
	done
	URI=$(sed -n -e 's/^listening on \([^?]*\).*/\1/p' \
		-e 's/^{"event":"listening","uri":"\([^?"]*\).*/\1/p' "$TMP/$name.out")
	[ -n "$URI" ] || { fail "$name: no 'listening' line"; cat "$TMP/$name.out"; }
}

listen_on uri "tcp://127.0.0.1:0?secret=$SECRET&rails=2"
tr '\0' ' ' <"/proc/$LPID/cmdline" >"$TMP/cmdline"
expect_not_in "$TMP/cmdline" "$SECRET"
expect_in "$TMP/cmdline" 'secret=\*\*\*&rails=2'
for json in "" --json; do
	bounded 64 20 "$KVWIRE" ping -c 2 $json "$URI?secret=$SECRET"
	expect_bounded 0 64 10000
	expect_not_in "$TMP/out" "$SECRET"
	expect_in "$TMP/out" 'secret=\*\*\*'
	bounded 64 20 "$KVWIRE" ping -c 1 $json "$URI?secret=wrong-$SECRET"
	expect_bounded 1 64 10000
	expect_not_in "$TMP/out" "$SECRET"
done
for mode in "" --json --prom; do
	bounded 64 20 "$KVWIRE" stat $mode "$TMP/uri.stats"
	expect_bounded 0 64 10000
	expect_not_in "$TMP/out" "$SECRET"
done
expect_in "$TMP/out" 'kvwire_endpoint_up'
listen_on json --json "tcp://127.0.0.1:0?secret=$SECRET"
sleep 0.2
expect_not_in "$TMP/json.out" "$SECRET"
expect_in "$TMP/json.out" '"event":"listening"'
sleep 0.3
expect_not_in "$TMP/uri.out" "$SECRET"
expect_in "$TMP/uri.out" '^accepted .*AUTH'

# --secret-file: the same secret, never on the command line
printf '%s\nsecond line ignored\n' "$SECRET" >"$TMP/secret"
chmod 600 "$TMP/secret"
listen_on file --secret-file "$TMP/secret" tcp://127.0.0.1:0
bounded 64 20 "$KVWIRE" ping -c 2 --json --secret-file "$TMP/secret" "$URI"
expect_bounded 0 64 10000
expect_in "$TMP/out" '"authenticated": true'
expect_not_in "$TMP/err" 'warning'
bounded 64 20 "$KVWIRE" ping -c 1 "$URI?secret=$SECRET"
expect_bounded 0 64 10000
bounded 64 20 "$KVWIRE" ping -c 1 "$URI"
expect_bounded 1 64 10000
expect_in "$TMP/out" 'requires a shared secret'
printf 'other\n' >"$TMP/other"
chmod 644 "$TMP/other"
bounded 64 20 "$KVWIRE" ping -c 1 --secret-file "$TMP/other" "$URI"
expect_bounded 1 64 10000
expect_in "$TMP/err" "warning: other users can read the secret file $TMP/other: chmod 600"
expect_not_in "$TMP/out" 'other'

# bad secret files: exit 2 with a sentence
: >"$TMP/empty"
head -c 200 /dev/zero | tr '\0' x >"$TMP/long"
for f in "$TMP/nonexistent" "$TMP/empty" "$TMP/long" "$TMP"; do
	chmod 600 "$f" 2>/dev/null
	bounded 64 20 "$KVWIRE" ping -c 1 --secret-file "$f" "$URI"
	expect_bounded 2 64 10000
	expect_in "$TMP/err" 'secret file .*: (give a readable file|put the secret on it|use a shorter secret)'
done
bounded 64 20 "$KVWIRE" listen -d 1 --secret-file "$TMP/empty" tcp://127.0.0.1:0
expect_bounded 2 64 10000
expect_in "$TMP/err" 'put the secret on it'
finish
