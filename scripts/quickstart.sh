#!/bin/bash
# The main job: install, build, then move a Llama-3-8B 4,096-token KV cache
# (32 layers x 256 blocks x 64 KiB = 512 MiB) from a prefill process to a
# decode process, scattered into the decode pool layer by layer, verify
# every byte, and say how fast it went. Default driver: dpdk over net_memif
# (kernel bypass, no NIC and no hugepages needed); where DPDK cannot start,
# it says why and falls back to the shm driver. KVW_DRIVER=shm|tcp|dpdk picks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
DRIVER=${KVW_DRIVER:-dpdk}
run() { ./build/bench/kvwire-bench kv --loopback --driver "$1" --model llama3-8b --tokens 4096 "${@:2}"; }
built=$(./build/tools/kvwire devices --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["drivers_built"])' 2>/dev/null || true)
if [ "$DRIVER" = dpdk ] && [[ ",$built," != *,dpdk,* ]]; then
  echo "kvwire: this build has no dpdk driver (libdpdk-dev missing?); using the shm driver" >&2
  DRIVER=shm
fi
if [ "$DRIVER" = dpdk ]; then
  rc=0
  run dpdk "$@" || rc=$?
  [ "$rc" = 0 ] && exit 0
  [ "$rc" = 2 ] && exit 2   # a --min-bw/--max-lat threshold was missed: not a start failure
  echo "kvwire: the dpdk driver could not run here (its message is above: DPDK needs root," \
       "/run and /var/run/dpdk writable, and memif); falling back to the shm driver" >&2
  DRIVER=shm
fi
exec ./build/bench/kvwire-bench kv --loopback --driver "$DRIVER" --model llama3-8b --tokens 4096 "$@"
