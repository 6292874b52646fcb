#!/bin/sh
# Runs every libFuzzer target for a bounded time with a seed corpus made
# from valid frames. usage: tests/fuzz/run.sh [BUILD_DIR] [SECONDS]
# (BUILD_DIR from: CC=clang meson setup build-fuzz -Dfuzz=true; default
# build-fuzz; SECONDS per target, default $KVW_FUZZ_SECONDS or 60). Exit 1 on a crash;
# crash inputs are left in BUILD_DIR/fuzz-artifacts/.
set -eu
build=${1:-build-fuzz}
secs=${2:-${KVW_FUZZ_SECONDS:-60}}
fz="$build/tests/fuzz"
for t in fuzz_wire fuzz_stream fuzz_handshake gen_corpus; do
	if [ ! -x "$fz/$t" ]; then
		echo "run.sh: $fz/$t missing: CC=clang meson setup $build -Dfuzz=true && ninja -C $build" >&2
		exit 2
	fi
done
corpus="$build/fuzz-corpus"
art="$build/fuzz-artifacts"
mkdir -p "$corpus" "$art"
"$fz/gen_corpus" "$corpus"
status=0
run() { # target corpus-subdir tag [env...]
	t=$1; sub=$2; tag=$3; shift 3
	mkdir -p "$corpus/$sub-run-$tag" "$corpus/$sub"
	echo "== $t ($sub, $tag) for ${secs}s"
	if ! env "$@" "$fz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 \
		-print_final_stats=1 -artifact_prefix="$art/$t-$tag-" \
		"$corpus/$sub-run-$tag" "$corpus/$sub" 2>"$art/$t-$sub-$tag.log"; then
		echo "FAIL: $t crashed; see $art/$t-$sub-$tag.log" >&2
		tail -40 "$art/$t-$sub-$tag.log" >&2
		status=1
	else
		grep -E "stat::number_of_executed_units|stat::new_units_added" "$art/$t-$sub-$tag.log" || true
	fi
}
run fuzz_wire wire check
run fuzz_stream stream tcp KVW_FUZZ_DRIVER=tcp
run fuzz_stream stream shm KVW_FUZZ_DRIVER=shm
run fuzz_handshake handshake cpace
if [ -x "$fz/fuzz_shm" ]; then run fuzz_shm shm mem-desc
else echo "== fuzz_shm not built (the shm driver is disabled): skipped"; fi
exit $status
