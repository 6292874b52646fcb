# SPDX-License-Identifier: MIT
# kvwire ping against a server whose REJECT reason carries terminal escape
# sequences (set the title, clear the screen, colours, a fake prompt after
# CR LF, a C1 CSI) and, in the binary variant, bytes that are not UTF-8.
# What ping prints (human or JSON) must hold printable ASCII only, with the
# reason shown as \xNN escapes; unescaped, the sequences reached the
# terminal, and the binary reason vanished from the output.
source "$(dirname "$0")/lib.sh" "$@"
C='(\\+x[0-9a-f]{2}|[?])' # one escaped byte (one or two backslashes: JSON doubles them)

for mode in reject-escape reject-binary; do
	start_peer "$mode" "$mode" || continue
	port=$(awk '/^ready port /{print $3}' "$TMP/$mode.out")
	for json in "" --json; do
		bounded 64 20 "$KVWIRE" ping -c 1 -t 2000 $json "tcp://127.0.0.1:$port"
		expect_bounded 1 64 10000
		no_controls "$TMP/out"
		# each control as \xNN (or as '?' should the library have replaced it)
		expect_in "$TMP/out" "peer refused: $C\\]0;pwned$C$C\\[2J$C\\[31mEVIL$C${C}root@host# $C${C}6n"
	done
	if [ "$mode" = reject-binary ]; then expect_in "$TMP/out" "6n$C$C$C"; fi
done
finish
