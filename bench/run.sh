#!/usr/bin/env bash
# Entry point for `make bench`: builds the tollgate CLI (gateway + mock) and
# the harness in release mode, then runs the harness from the repo root so
# results land in ./bench-results/bench.json. Extra args go to
# tollgate-bench, e.g. `bench/run.sh --quick` or `--duration-secs 5`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p tollgate-bench
# A broken gateway build must not hide the baseline numbers: the harness
# reports a missing/failed tollgate target as SKIPPED.
if ! cargo build --release -p tollgate-cli; then
    echo "bench/run.sh: WARNING: tollgate-cli did not build; using any existing target/release/tollgate" >&2
fi
if [ ! -x /usr/sbin/nginx ]; then
    echo "bench/run.sh: NOTE: /usr/sbin/nginx missing (apt-get install nginx-light); the nginx baseline will be skipped" >&2
fi
exec target/release/tollgate-bench "$@"
