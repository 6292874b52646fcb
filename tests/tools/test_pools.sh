# SPDX-License-Identifier: MIT
# kvwire pools against a real etcd of its own (free loopback ports, a
# temporary data dir): entries listed (human, --json, --pool, --role), a
# value that is not an entry skipped with a sentence, an unreachable
# directory is exit 1 with a sentence, bad endpoints exit 2. Skipped (77)
# without etcd.
source "$(dirname "$0")/lib.sh" "$@"
command -v etcd >/dev/null && command -v etcdctl >/dev/null || { echo "etcd not installed: skipped"; exit 77; }
read -r CP PP < <(python3 -c 'import socket
s=[socket.socket() for _ in (0,1)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
EP=http://127.0.0.1:$CP
start_bg etcd etcd --name t --data-dir "$TMP/etcd" --listen-client-urls "$EP" --advertise-client-urls "$EP" \
	--listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
	--initial-cluster "t=http://127.0.0.1:$PP" --log-level warn
ctl() { ETCDCTL_API=3 timeout 10 etcdctl --dial-timeout=500ms --command-timeout=5s --endpoints="$EP" "$@" >/dev/null; }
echo "etcd starting on $EP (peer port $PP)"
ETCD_PID=$LAST_PID up=0 t_end=$((SECONDS + 20))
while ((SECONDS < t_end)) && kill -0 "$ETCD_PID" 2>/dev/null; do
	ETCDCTL_API=3 timeout 2 etcdctl --dial-timeout=300ms --command-timeout=1s --endpoints="$EP" \
		endpoint health >/dev/null 2>&1 && { up=1; break; }
	sleep 0.25
done
[ "$up" = 1 ] || { fail "etcd did not start within 20 s"; cat "$TMP/etcd.out"; finish; }
echo "etcd up"
ctl put /kvwire/llama/decode/d0 '{"v":1,"name":"d0","role":"decode","uris":{"tcp":"tcp://10.0.0.1:7471","rdma":"rdma://10.0.1.1:7471"},"geometry":"llama3-8b layers=32","capacity":4096}'
ctl put /kvwire/llama/prefill/p0 '{"v":1,"name":"p0","role":"prefill","uris":{"tcp":"tcp://10.0.0.2:7471"},"capacity":0}'
ctl put /kvwire/other/decode/x '{"v":1,"name":"x","role":"decode","uris":{"shm":"shm:///run/kvwire/x.sock"}}'

expect_rc 0 "$KVWIRE" pools --endpoints "$EP"
expect_out '^POOL +ROLE +NAME +CAPACITY'
expect_out '^llama +decode +d0 +4096 .*tcp://10.0.0.1:7471'
expect_out 'llama3-8b layers=32'
expect_out '^other +decode +x '
KVW_DIR_ENDPOINTS=$EP expect_rc 0 "$KVWIRE" pools --pool llama --json
json_check 'sorted(e["name"] for e in d["entries"]) == ["d0", "p0"] and d["skipped"] == 0'
json_check '[e for e in d["entries"] if e["name"] == "d0"][0]["capacity"] == 4096'
json_check 'sorted([e for e in d["entries"] if e["name"] == "d0"][0]["uris"]) == ["rdma://10.0.1.1:7471", "tcp://10.0.0.1:7471"]'
expect_rc 0 "$KVWIRE" pools --endpoints "$EP" --role prefill --json
json_check '[e["name"] for e in d["entries"]] == ["p0"]'
expect_rc 0 "$KVWIRE" pools --endpoints "$EP" --pool empty
expect_out 'no instances in pool empty'

# a hostile value: skipped with a sentence naming its key; the escape never printed raw
ctl put /kvwire/llama/decode/evil "$(printf '{"v":1,"name":"evil","role":"decode","uris":{"tcp":"tcp://a:1"},"geometry":"\033[2J"}')"
expect_rc 0 "$KVWIRE" pools --endpoints "$EP" --pool llama
expect_out '1 value\(s\) skipped: .*/kvwire/llama/decode/evil.*etcdctl del'
grep -q $'\033' "$TMP/out" && fail "an escape sequence reached the output" || ok "no escape sequence in the output"
expect_rc 0 "$KVWIRE" pools --endpoints "$EP" --pool llama --json
json_check 'd["skipped"] == 1 and "evil" in d["skipped_why"] and len(d["entries"]) == 2'

# failures
expect_rc 2 "$KVWIRE" pools --endpoints etcd:2379
expect_out 'http://HOST:PORT'
expect_rc 2 "$KVWIRE" pools --endpoints "$EP" --role middle
kill "$ETCD_PID"; wait "$ETCD_PID" 2>/dev/null
expect_rc 1 "$KVWIRE" pools --endpoints "$EP" --timeout 500
expect_out "etcd at $EP could not be reached.*check that etcd runs there"
finish
