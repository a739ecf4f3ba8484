#!/usr/bin/env bash
# Builds the fuzz targets and runs each for FUZZ_SECONDS (one job at a time),
# growing a scratch corpus under fuzz/target/corpus/ from the committed seeds
# in fuzz/corpus/. Exits non-zero on the first crash; its input is then in
# fuzz/artifacts/<target>/. Usage: fuzz/run.sh [target...] (default: all).
set -euo pipefail
cd "$(dirname "$0")"

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-32768}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(sse_relay request_payload push_protocol manifest_loader translators)
fi

# One in-process job at a time (libFuzzer's default; -jobs would fork and
# log to fuzz-N.log). No sanitizer: the code under test is safe Rust, and
# ASan would halve the speed. Overflow checks and debug assertions stay on.
FLAGS=(-s none -a)
cargo +nightly fuzz build "${FLAGS[@]}"

for target in "${TARGETS[@]}"; do
    scratch=target/corpus/$target
    mkdir -p "$scratch" "corpus/$target"
    echo "== $target: ${FUZZ_SECONDS}s"
    cargo +nightly fuzz run "${FLAGS[@]}" "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len="$FUZZ_MAX_LEN" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
