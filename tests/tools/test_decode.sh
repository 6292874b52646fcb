# SPDX-License-Identifier: MIT
# kvwire decode: good frames in every dump format and in pcaps; each
# malformation named with exit 1; unreadable input exit 3.
source "$(dirname "$0")/lib.sh" "$@"

"$MKFRAMES" good >"$TMP/good.bin"
check_good() { # FILE: 5 well-formed frames of the known types
	expect_rc 0 "$KVWIRE" decode --json "$1"
	json_check 'd["malformed"] == 0 and [f["header"]["type_name"] for f in d["frames"]] == ["HELLO","PING","GRANT","DATA","SEQ_DONE"]'
	json_check 'd["frames"][2]["body"]["blocks"] == [4,5,9] and d["frames"][2]["body"]["layer_offsets"] == [0,1048576] and d["frames"][3]["body"]["payload_head"] == "4b56504147452121"'
}
check_good "$TMP/good.bin"
check_good "$FIXTURES/good.xxd"
check_good "$FIXTURES/good.od"
check_good "$FIXTURES/good.hexdump"
for tool in "xxd" "xxd -p" "od -x" "od -A x -t x1z" "hexdump -C"; do
	if command -v "${tool%% *}" >/dev/null; then
		$tool <"$TMP/good.bin" >"$TMP/good.txt"
		check_good "$TMP/good.txt"
	fi
done
expect_rc 0 "$KVWIRE" decode - <"$TMP/good.bin"
expect_out '^frame 2 @136 GRANT v1\.4 .* OK$'
expect_out '^5 frames, 0 malformed$'

bad() { # MODE REGEX
	"$MKFRAMES" "$1" >"$TMP/bad.bin"
	expect_rc 1 "$KVWIRE" decode "$TMP/bad.bin"
	expect_out "MALFORMED"
	expect_out "error: $2"
}
bad bad-magic 'bad magic'
bad bad-version 'unsupported protocol major version'
bad bad-type 'unknown frame type'
bad bad-flags 'unknown header flags'
bad short-body 'body shorter than its type requires'
bad grant-counts 'GRANT length disagrees with its counts'
bad data-count 'DATA byte count disagrees'
bad truncated 'truncated body: header says 16 bytes, 10 present'
bad garbage '8 bytes of garbage after the frame'
expect_rc 1 "$KVWIRE" decode "$FIXTURES/bad-grant.hex"
expect_out 'GRANT length disagrees'

"$MKFRAMES" pcap-udp >"$TMP/u.pcap"
check_good "$TMP/u.pcap"
json_check 'all(f["origin"].startswith("udp 127.0.0.1:40000 > 127.0.0.1:7471") for f in d["frames"]) and any("1 packets skipped" in n for n in d["notes"])'
"$MKFRAMES" pcap-tcp >"$TMP/t.pcap"
check_good "$TMP/t.pcap"
json_check 'd["frames"][4]["offset"] == 316 and d["frames"][0]["origin"].startswith("tcp ")'

printf 'this is not hex\n' >"$TMP/text"
expect_rc 3 "$KVWIRE" decode "$TMP/text"
expect_out 'not hex'
expect_rc 3 "$KVWIRE" decode "$TMP/nonexistent"
: >"$TMP/empty"
expect_rc 3 "$KVWIRE" decode "$TMP/empty"
expect_rc 2 "$KVWIRE" decode
finish
