#!/bin/bash
# The whole test suite: install, build (-Werror), run every suite, then the
# same under ASan+UBSan, then the fuzzers for a bounded time. Ends with the
# totals alone on the last line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "dependency install failed"; echo "0 passed, 1 failed"; exit 1; }
fail_build=0
logs=()
run_suite() { # name builddir meson-args...
  local name=$1 dir=$2; shift 2
  echo "=== $name: configure + build ($dir)"
  if ! { [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >"$dir.setup.log" 2>&1; } ||
     ! ninja -C "$dir" >"$dir.ninja.log" 2>&1; then
    echo "=== $name: BUILD FAILED"; tail -40 "$dir.setup.log" "$dir.ninja.log" 2>/dev/null
    fail_build=$((fail_build + 1)); return
  fi
  echo "=== $name: meson test"
  meson test -C "$dir" --print-errorlogs --num-processes 2 ${KVW_TEST_ARGS:-} || true
  logs+=("$dir/meson-logs/testlog.json")
}
mkdir -p build-ci
run_suite default build-ci/default
run_suite asan build-ci/asan -Db_sanitize=address,undefined -Db_lundef=false
if [ -x tests/fuzz/run.sh ]; then
  echo "=== fuzz"
  CC=clang run_suite fuzz build-ci/fuzz -Dfuzz=true
fi
python3 tests/summarize.py --extra-failed "$fail_build" "${logs[@]}"
