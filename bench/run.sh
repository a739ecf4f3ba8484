#!/usr/bin/env bash
# Entry point for `make bench`: builds tollgate and the harness in release
# mode and runs mock-direct, nginx and tollgate side by side. Results land in
# ./bench-results/bench.json. Extra args go to tollgate-bench, e.g.
# `bench/run.sh --quick` or `--duration-secs 5`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/sbin/nginx ]; then
  # The baseline is part of the benchmark, not optional.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
  else
    echo "bench/run.sh: nginx is required: sudo apt-get install nginx-light" >&2
    exit 1
  fi
fi
cargo build --release -p tollgate-cli -p tollgate-bench
exec target/release/tollgate-bench --tollgate target/release/tollgate "$@"
