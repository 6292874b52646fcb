# SPDX-License-Identifier: MIT
# kvwire devices: exit 0 and a clear line when there is no RDMA device.
source "$(dirname "$0")/lib.sh" "$@"

expect_rc 0 "$KVWIRE" devices
if [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
	expect_out '^RDMA devices: none$'
	expect_out 'no RDMA devices'
	expect_out '^  rdma +NO '
else
	expect_out '^RDMA devices:$'
	expect_out 'port [0-9]+ '
fi
expect_out '^  tcp +usable'
if "$KVWIRE" devices --json | python3 -c 'import json,sys; sys.exit(0 if "loop" in json.load(sys.stdin)["drivers_built"].split(",") else 1)'; then
	expect_out '^  loop +usable +listener came up on loop://'
fi
expect_out '^DPDK ports'
expect_rc 0 "$KVWIRE" devices --json
json_check 'isinstance(d["rdma"]["devices"], list) and {x["name"] for x in d["drivers"]} == {"tcp","shm","rdma","dpdk","ofi","loop"}'
json_check '[x for x in d["drivers"] if x["name"] == "tcp"][0]["usable"] == ("tcp" in d["drivers_built"].split(","))'
json_check 'len(d["rdma"]["devices"]) > 0 or d["rdma"]["why"].startswith("no RDMA devices")'
# ofi: the driver's probe lists libfabric's providers (tcp;ofi_rxm and shm
# run on any Debian host with libfabric1), each with its verdict
if "$KVWIRE" devices --json | python3 -c 'import json,sys; sys.exit(0 if "ofi" in json.load(sys.stdin)["drivers_built"].split(",") else 1)'; then
	json_check '[x for x in d["drivers"] if x["name"] == "ofi"][0]["usable"]'
	json_check 'any(e["name"].startswith("tcp;ofi_rxm domain ") and e["usable"] and "?provider=tcp;ofi_rxm" in e["reason"] for e in [x for x in d["drivers"] if x["name"] == "ofi"][0]["devices"])'
	json_check 'any(e["name"] == "shm domain shm" and e["usable"] for e in [x for x in d["drivers"] if x["name"] == "ofi"][0]["devices"])'
	expect_rc 0 env FI_PROVIDER=nosuchprovider "$KVWIRE" devices --json
	json_check '[x for x in d["drivers"] if x["name"] == "ofi"][0]["usable"] == False and "fi_info -l" in [x for x in d["drivers"] if x["name"] == "ofi"][0]["why"]'
fi
expect_rc 2 "$KVWIRE" devices --bogus
expect_rc 2 "$KVWIRE" nosuchcommand
expect_rc 0 "$KVWIRE" --help
finish
