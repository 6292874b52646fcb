#!/bin/bash
# Side by side on ONE Soft-RoCE device in one VM (run inside
# tests/vm/run-rxe-vm.sh): kvwire-bench vs perftest on the same rxe0, same
# sizes, same iteration counts, server and client as two processes each.
#   tests/vm/run-rxe-vm.sh tests/rdma/perf.sh BUILD_DIR
set -u
b=$1/bench/kvwire-bench ip=${RXE_IP:-10.78.0.1} dev=${RXE_DEV:-rxe0} gid=${RXE_GID:-1}
port=7471
kv() { # kvwire-bench TEST SIZE ITERS
	port=$((port + 2))
	$b server --driver rdma --listen rdma://$ip:$port --once >/dev/null 2>&1 &
	sleep 2
	echo "### kvwire-bench $1 --driver rdma -s $2 -n $3"
	$b "$1" --driver rdma --connect rdma://$ip:$port -s "$2" -n "$3" 2>&1
	wait
}
pt() { # perftest TOOL SIZE ITERS
	echo "### $1 -d $dev -x $gid -s $2 -n $3"
	$1 -d "$dev" -x "$gid" -s "$2" -n "$3" >/dev/null 2>&1 &
	sleep 1
	$1 -d "$dev" -x "$gid" -s "$2" -n "$3" 127.0.0.1 2>&1 | grep -v "^ *$\|WARNING\|Correlation"
	wait
}
for rep in 1 2; do
	echo "======== round $rep"
	pt ib_write_bw 65536 2000;   kv bw 64K 2000
	pt ib_write_bw 1048576 100;  kv bw 1M 100
	pt ib_write_lat 64 2000;     kv lat 64 2000
done
