# SPDX-License-Identifier: MIT
# kvwire config: the table, environment overrides, the secret never shown.
source "$(dirname "$0")/lib.sh" "$@"

expect_rc 0 "$KVWIRE" config
expect_out '^NAME +DEFAULT +CURRENT +HELP'
expect_out '^stats_socket '
KVW_RAILS=3 KVW_SECRET=hunter2 expect_rc 0 "$KVWIRE" config --json
json_check '{"driver","rails","timeout_ms","stats_socket","secret","fault"} <= {o["name"] for o in d["options"]}'
json_check '[o for o in d["options"] if o["name"] == "rails"][0]["current"] == "3" and [o for o in d["options"] if o["name"] == "rails"][0]["env"] == "KVW_RAILS"'
json_check '[o for o in d["options"] if o["name"] == "timeout_ms"][0]["env"] == ""'
grep -q hunter2 "$TMP/out" && fail "the secret was printed" || ok "the secret is not printed"
KVW_RAILS=banana expect_rc 3 "$KVWIRE" config
expect_out 'fix or unset it'
finish
