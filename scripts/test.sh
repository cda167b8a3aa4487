#!/usr/bin/env bash
# The test command: installs what is missing, checks device code compiles,
# then runs every test (real redis-server, real ONNX Runtime, real gRPC).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
# Device code must compile even though no machine here has a GPU.
cargo check --locked -p gpu-worker -p switchboard --features switchboard/cuda,gpu-worker/cuda
# Unmodified Triton clients (tritonclient, perf_analyzer) against `switchboard up`.
cargo build --locked -p switchboard
scripts/compat.sh target/debug/switchboard
cargo test --workspace --locked 2>&1
