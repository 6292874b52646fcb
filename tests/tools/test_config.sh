# SPDX-License-Identifier: MIT
# kvwire config: the table, environment overrides, the secret never shown.
source "$(dirname "$0")/lib.sh" "$@"

expect_rc 0 "$KVWIRE" config
expect_out '^NAME +DEFAULT +CURRENT +HELP'
expect_out '^stats_socket '
expect_out '^# core$'
KVW_RAILS=3 KVW_SECRET=hunter2 expect_rc 0 "$KVWIRE" config --json
json_check '{"driver","rails","timeout_ms","stats_socket","secret","fault"} <= {o["name"] for o in d["options"]}'
json_check '[o for o in d["options"] if o["name"] == "rails"][0]["current"] == "3" and [o for o in d["options"] if o["name"] == "rails"][0]["env"] == "KVW_RAILS"'
json_check '[o for o in d["options"] if o["name"] == "timeout_ms"][0]["env"] == ""'
# each option has an owner: the core, or the driver whose name prefixes it
json_check '[o["owner"] for o in d["options"] if o["name"] == "rails"] == ["core"]'
json_check 'all(o["owner"] == o["name"].split("_")[0] for o in d["options"] if o["owner"] != "core")'
json_check 'not [o for o in d["options"] if o["owner"] == "core" and o["name"].startswith(("rdma_", "dpdk_", "shm_", "tcp_"))]'
grep -q hunter2 "$TMP/out" && fail "the secret was printed" || ok "the secret is not printed"
KVW_RAILS=banana expect_rc 3 "$KVWIRE" config
expect_out 'fix or unset it'
finish
