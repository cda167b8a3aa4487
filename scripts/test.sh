#!/usr/bin/env bash
# The test command: installs what is missing, checks device code compiles,
# then runs every test (real redis-server, real ONNX Runtime, real gRPC).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh --torch
# Device code must compile even though no machine here has a GPU, with and
# without TorchScript.
cargo check --locked -p engine -p gpu-worker -p switchboard --features engine/cuda,gpu-worker/cuda,switchboard/cuda
cargo check --locked -p engine -p gpu-worker -p switchboard --features switchboard/cuda,switchboard/torch
cargo check --locked -p batcher --features cloud
# Unmodified Triton clients (tritonclient, perf_analyzer) against `switchboard up`.
cargo build --locked -p switchboard
scripts/compat.sh target/debug/switchboard
# deploy/k8s: every overlay rendered and validated offline, and the cpu
# overlay's roles started with the manifests' own command/args/env.
scripts/deploy_check.sh target/debug/switchboard
# deploy/observability: scrape config, alerting rules and their unit tests,
# and the dashboard's queries, checked by promtool.
scripts/observability_check.sh
# The CPU image (deploy/docker) built with podman on a local Debian base from
# this binary, `switchboard up` run in it, tritonclient against it.
scripts/image_test.sh target/debug/switchboard
log=$(mktemp)
cargo test --workspace --locked 2>&1 | tee "$log"
# TorchScript through libtorch on the CPU, checked against ONNX Runtime.
cargo test --locked -p engine -p gpu-worker --features gpu-worker/torch --test torchscript 2>&1 | tee -a "$log"
# A CUDA build on this GPU-less machine says there is no driver (cudarc
# would panic if it were asked first).
cargo test --locked -p engine --features cuda --lib gpus 2>&1 | tee -a "$log"
# The GPU check's steps, on a simulated GPU (checks the script; no figure).
GPU_CHECK_SIMULATE=1 scripts/gpu_check.sh 1 >/dev/null
# One closing line for all the test binaries (cargo prints one per binary,
# and the last ones are doc-test runs with nothing in them).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
rm -f "$log"
