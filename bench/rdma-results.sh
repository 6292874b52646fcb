#!/bin/sh
# The RDMA figures of bench/RESULTS.md, side by side with perftest on one
# Soft-RoCE device (run inside the VM):
#   tests/vm/run-rxe-vm.sh bench/rdma-results.sh BUILD_DIR OUT_DIR
# bw: kvwire-bench vs ib_write_bw -n at 64 KiB and 1 MiB; lat: vs
# ib_write_lat at 64 B, with the default spin-then-sleep wait and with
# busy polling (spin_us = 1 s), which is what ib_write_lat does.
set -eu
b=$1/bench/kvwire-bench out=$2
mkdir -p "$out"
$b compare bw --driver rdma -s 64K -n 1000 --repeat 3 > "$out/rdma-bw-64k.txt" 2>&1
$b compare bw --driver rdma -s 1M -n 100 --repeat 3 > "$out/rdma-bw-1m.txt" 2>&1
$b compare lat --driver rdma -s 64 -n 1000 --repeat 3 > "$out/rdma-lat-64.txt" 2>&1
KVW_SPIN_US=1000000 $b compare lat --driver rdma -s 64 -n 1000 --repeat 3 > "$out/rdma-lat-64-spin.txt" 2>&1
cat "$out"/rdma-*.txt
