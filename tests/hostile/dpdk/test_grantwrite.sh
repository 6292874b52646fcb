#!/bin/bash
# SPDX-License-Identifier: MIT
# Issue 17 finding 3, writing into a grant. The attacker has a read-only tap
# (the bridge floods every frame) and forges DATA frames from what it sees:
# the ids, the psn a little ahead of the newest, the live token, block 0.
# With a secret every frame carries an authenticator: judged by 0 bytes
# written inside or outside the grants and every sequence done. Without a
# secret a host that sees the frames can forge them (docs/drivers/dpdk.md);
# one forged frame outside the grant is refused, and the sentence must
# name a forged frame, not blame the peer or claim that nothing was written.
. "$(dirname "$0")/lib.sh"
hostile_need
hostile_net 0 1 || { fail "bridge with three namespaces"; exit 1; }
ARGS="-L 8 -B 64 -b 16384 -n 20 -W 100 -c -t 20000"

export KVW_SECRET=hostile-dpdk-secret-0123456789
server $ARGS; client $ARGS; attack grantwrite blk=0 count=40 every=0.05 secs=40; wait_all
figures "forged DATA into a grant, with a secret" 20
expect_done "forged DATA into a grant, with a secret" 20
in=$(written_of "$OUT/server.txt" inside); outb=$(written_of "$OUT/server.txt" outside)
if [ "${in:-x}" = 0 ] && [ "${outb:-x}" = 0 ]; then pass "with a secret: nothing of the attacker's landed"
else fail "with a secret: bytes written inside=${in:-?} outside=${outb:-?}"; fi
unset KVW_SECRET

server $ARGS; client $ARGS; attack grantwrite blk=1000000 count=3 secs=40; wait_all
figures "forged DATA outside the grant, no secret" 20
why=$(grep -h '^RESULT ok=0' "$OUT/server.txt" | head -1)
if echo "$why" | grep -q "forged" && ! echo "$why" | grep -q "nothing written"; then
	pass "the refusal names a forged frame: $why"
else
	fail "the refusal must name a forged frame and not claim nothing was written: ${why:-no refusal}"
	tail -n 3 "$OUT/server.txt" "$OUT/attack.txt"
fi

server $ARGS; client $ARGS; attack grantwrite blk=0 count=40 every=0.05 secs=40; wait_all
figures "forged DATA into a grant, no secret (not defended: set a secret)" 20
[ $FAILS = 0 ]
