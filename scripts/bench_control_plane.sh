#!/usr/bin/env bash
# Control-plane benchmark for BENCHMARKS.md: create/update/delete latency and
# gateway CPU per change at each size, change visibility on a second
# gateway, and gateway memory once loaded. See gateway/examples/cp_bench.rs.
#
#   scripts/bench_control_plane.sh [SIZES...]      (default 10 10000 100000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --locked -q -p gateway --example cp_bench
target/release/examples/cp_bench run "$@"
