#!/bin/bash
# Two VMs, two kernels, one virtual wire (tests/vm/run-rxe-pair.sh):
#   pair.sh kv    BUILD   kvwire-bench kv (Llama-3-8B shape, verified) A <- B
#   pair.sh netem BUILD   the same with netem loss 2% delay 1ms on both NICs
#   pair.sh kill  BUILD   B killed mid-sequence: A's grant ends PEER_DEAD in time
# Exit: the pair's exit code (77 = VMs not set up: skipped).
set -euo pipefail
what=$1 build=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")/../vm" && pwd)
bench=$build/bench/kvwire-bench peer=$build/tests/rdma/rdma_peer
export RXE_VM_MEM=${RXE_VM_MEM:-512M} RXE_PAIR_GRACE=${RXE_PAIR_GRACE:-30}
uri='rdma://$RXE_SELF_IP:7471' peer_uri='rdma://$RXE_PEER_IP:7471'
kv="--model llama3-8b --tokens ${KV_TOKENS:-256} --seqs ${KV_SEQS:-1}"
case "$what" in
kv|netem)
	# a lossy, slow link: a smaller window keeps control messages (PONG)
	# from queueing behind seconds of writes on the same QP. One lost
	# rdma_cm MAD costs the CM's response timeout (~4.3 s) before its retry:
	# the handshake and liveness limits leave room for a few (on 5 s, 3 runs
	# in 12 failed here, and one in CI). Grant keys are MRs: under loss the
	# guests' rxe (Linux 6.1) now and then wedges a send queue at a grant's
	# window binds for good (6 runs of 25 with mw2; no stall in 14 with mr;
	# docs/drivers/rdma.md "A send queue stalled at its binds"); windows
	# have their own suites (rdma-verbs*)
	[ "$what" = netem ] && export RXE_PAIR_NETEM="loss 2% delay 1ms" KVW_WINDOW=2097152 \
		KV_TOKENS=${KV_TOKENS:-128} KVW_CONNECT_TIMEOUT_MS=30000 \
		KVW_HANDSHAKE_TIMEOUT_MS=30000 KVW_PEER_DEAD_MS=15000 KVW_RDMA_GRANT_KEYS=mr
	kv="--model llama3-8b --tokens ${KV_TOKENS:-256} --seqs ${KV_SEQS:-1}"
	exec "$here/run-rxe-pair.sh" \
		"$bench server --driver rdma --listen $uri --once & rxe-wait-listen 7472 60 && rxe-signal srv; wait \$!" \
		"rxe-wait srv && $bench kv --driver rdma --connect $peer_uri $kv" ;;
kill)
	# 3 s: two TCG guests on a loaded 2-core host once went 2 s without a frame
	export KVW_KEEPALIVE_MS=250 KVW_PEER_DEAD_MS=3000
	exec "$here/run-rxe-pair.sh" "$peer recv $uri" "$peer send $peer_uri" ;;
*)	echo "usage: $0 kv|netem|kill BUILD_DIR" >&2; exit 2 ;;
esac
