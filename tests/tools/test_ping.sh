# SPDX-License-Identifier: MIT
# kvwire ping against a live kvwire listen, on tcp and shm.
source "$(dirname "$0")/lib.sh" "$@"

# listen_on NAME URI: starts a listener, sets URI to its bound URI
listen_on() {
	start_bg "$1" "$KVWIRE" listen "$2"
	wait_for "$TMP/$1.out" '^listening on ' || return 1
	URI=$(awk '/^listening on /{print $3; exit}' "$TMP/$1.out")
}

listen_on tcp tcp://127.0.0.1:0
expect_rc 0 "$KVWIRE" ping -c 20 "$URI"
expect_out 'reachable via tcp, protocol 1\.4'
expect_out '20 pings, 0 lost; rtt us min'
expect_rc 0 "$KVWIRE" ping -c 5 --json "$URI?rails=2"
json_check 'd["reachable"] and d["driver"] == "tcp" and d["lost"] == 0 and d["sent"] == 5'
json_check 'd["rails"] == 2 and len(d["rail"]) == 2 and all(r["joined"] for r in d["rail"])'
json_check 'd["peer_version"] == "1.4" and 0 < d["rtt"]["min_us"] <= d["rtt"]["p50_us"] <= d["rtt"]["p99_us"] <= d["rtt"]["max_us"]'
wait_for "$TMP/tcp.out" '^accepted ' 5

if "$KVWIRE" devices --json | python3 -c 'import json,sys; sys.exit(0 if "shm" in json.load(sys.stdin)["drivers_built"].split(",") else 1)'; then
	listen_on shm "shm://$TMP/ping.sock"
	expect_rc 0 "$KVWIRE" ping -c 10 --json "$URI"
	json_check 'd["reachable"] and d["driver"] == "shm" and d["lost"] == 0 and d["rtt"]["max_us"] > 0'
else
	fail "the shm driver is not built"
fi

# Nobody listens: unreachable, exit 1, the reason said.
kill "$LAST_PID" 2>/dev/null
expect_rc 1 "$KVWIRE" ping -c 2 -t 1000 tcp://127.0.0.1:1
expect_out 'unreachable: .*(refused|listener)'
expect_rc 1 "$KVWIRE" ping -c 1 --json -t 1000 "shm://$TMP/nobody.sock"
json_check 'd["reachable"] is False and d["error"]'
expect_rc 2 "$KVWIRE" ping
expect_rc 2 "$KVWIRE" ping -c 0 tcp://127.0.0.1:1
finish
