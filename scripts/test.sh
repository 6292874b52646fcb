#!/bin/bash
# The whole test suite: install, build (-Werror), run every suite (unit,
# conformance on shm/tcp/dpdk, bench, tools, the Soft-RoCE VM suites for rdma
# and the CLI, dpdk faults), then unit + shm/tcp conformance + bench + tools
# again under ASan+UBSan, then the fuzzers for a bounded time. Ends with the
# totals alone on the last line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "dependency install failed"; echo "0 passed, 1 failed"; exit 1; }
fail_build=0
logs=()
# run_suite NAME BUILDDIR "MESON-TEST-ARGS" [MESON-SETUP-ARGS...]
run_suite() {
  local name=$1 dir=$2 targs=$3; shift 3
  echo "=== $name: configure + build ($dir)"
  mkdir -p "$(dirname "$dir")"
  if ! { [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >"$dir.setup.log" 2>&1; } ||
     ! ninja -C "$dir" >"$dir.ninja.log" 2>&1; then
    echo "=== $name: BUILD FAILED"; tail -40 "$dir.setup.log" "$dir.ninja.log" 2>/dev/null
    fail_build=$((fail_build + 1)); return
  fi
  echo "=== $name: meson test $targs"
  # shellcheck disable=SC2086
  meson test -C "$dir" --print-errorlogs --num-processes 2 $targs ${KVW_TEST_ARGS:-} || true
  logs+=("$dir/meson-logs/testlog.json")
}
# the Soft-RoCE VMs (kernel + initramfs) once, so the rdma suites do not skip
bash tests/vm/run-rxe-vm.sh --setup || echo "=== Soft-RoCE VM setup failed: rdma suites will skip"
bash tests/vm/run-rxe-pair.sh --setup || echo "=== Soft-RoCE VM pair setup failed: pair suites will skip"
run_suite default build-ci/default ""
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 run_suite asan build-ci/asan "--suite unit --suite shm --suite tcp --suite loop --suite bench --suite tools --suite hostile --suite dpdk-asan --suite dir" \
  -Db_sanitize=address,undefined -Db_lundef=false
CC=clang run_suite fuzz build-ci/fuzz "--suite fuzz" -Dfuzz=true
python3 tests/summarize.py --extra-failed "$fail_build" "${logs[@]}"
