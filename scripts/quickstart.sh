#!/bin/bash
# The main job: install, build, then move a Llama-3-8B 4,096-token KV cache
# (32 layers x 256 blocks x 64 KiB = 512 MiB) from a prefill process to a
# decode process on the default driver, scattered into the decode pool
# layer by layer, verify every byte, and say how fast it went.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
DRIVER=${KVW_DRIVER:-shm}
exec ./build/bench/kvwire-bench kv --loopback --driver "$DRIVER" --model llama3-8b --tokens 4096 "$@"
