# SPDX-License-Identifier: MIT
# kvwire decode on crafted input. Bounds: FILE up to 256 MiB (a bigger one
# is refused before a byte is read), 64 MiB from hex text with '*' folds
# expanded, 20000 frames listed. Each case exits 3 with a sentence within
# 20 s and the RSS stated per case. Unbounded, the 69-byte fold took 1 GiB
# of RSS and 14 s; the 67-byte one (a 16-byte line of a PING header folded
# to 64 MiB) went past 2.5 GiB in 7 s on its way to millions of frames.
source "$(dirname "$0")/lib.sh" "$@"

# a line of zeros folded to offset 1 GiB: refused without expanding
printf '00000000  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n*\n40000000\n' >"$TMP/zero.hex"
bounded 512 30 "$KVWIRE" decode "$TMP/zero.hex"
expect_bounded 3 64 20000
expect_in "$TMP/err" "line 3: the dump holds more than 64 MiB, the most decode takes from hex text: dump only the part"

# four folds of 1 GiB each (the review's input, in 103 bytes)
printf '00000000  4b 56 57 31 01 00 06 00 10 00 00 00 00 00 00 00\n*\n40000000\n*\n80000000\n*\nc0000000\n*\n100000000\n' >"$TMP/multi.hex"
bounded 512 30 "$KVWIRE" decode --json "$TMP/multi.hex"
expect_bounded 3 64 20000
expect_in "$TMP/err" "more than 64 MiB"

# a fold that stays within 64 MiB but holds 2.8 million frames: the first
# 20000 are listed, the rest is named, output stays small
printf '00000000  4b 56 57 31 01 00 06 00 10 00 00 00 00 00 00 00\n*\n03fffff0\n' >"$TMP/frames.hex"
for mode in "" --json; do
	bounded 512 30 "$KVWIRE" decode $mode "$TMP/frames.hex"
	expect_bounded 3 512 20000
	expect_in "$TMP/err" "stopped after 20000 frames, the most one run lists: the input from byte 480000 on was not decoded"
	size=$(stat -c %s "$TMP/out")
	if [ "$size" -le $((16 << 20)) ]; then ok "output $size bytes <= 16 MiB"; else fail "output $size bytes"; fi
done
expect_in "$TMP/out" '"truncated": true'

# raw binary: 32768 back-to-back PINGs (1.3 MB): the first 20000 listed
printf 'KVW1\x01\x00\x06\x00\x10\x00\x00\x00' >"$TMP/ping.bin"
head -c 28 /dev/zero >>"$TMP/ping.bin"
for i in $(seq 15); do cat "$TMP/ping.bin" "$TMP/ping.bin" >"$TMP/x.bin"; mv "$TMP/x.bin" "$TMP/ping.bin"; done
bounded 512 30 "$KVWIRE" decode "$TMP/ping.bin"
expect_bounded 3 512 20000
expect_in "$TMP/err" "stopped after 20000 frames, the most one run lists: the input from byte 800000 on"
expect_in "$TMP/out" '^20000 frames, 0 malformed$'

# a file over 256 MiB (sparse): refused before reading; on a pipe, after
# 256 MiB + 1 byte
truncate -s 300M "$TMP/big.bin"
bounded 512 30 "$KVWIRE" decode "$TMP/big.bin"
expect_bounded 3 64 20000
expect_in "$TMP/err" "holds more than 256 MiB, the most decode reads: cut it"
bounded 1024 60 "$KVWIRE" decode - < <(head -c 300M /dev/zero)
expect_bounded 3 1024 40000
expect_in "$TMP/err" "holds more than 256 MiB"
finish
