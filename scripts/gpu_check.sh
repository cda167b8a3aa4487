#!/usr/bin/env bash
# Issue 14's GPU check, for a machine with an NVIDIA GPU, its driver, Rust
# and PyPI: installs ONNX Runtime's CUDA provider (setup.sh --cuda), builds
# with `cuda`, runs the GPU tests, then measures the conv net and
# digits_deep (the largest committed model): raw ONNX Runtime in process on
# cuda:0 and on the CPU at batch 1/8/32/128, and a worker on cuda:0 at
# concurrency 1/16/64. Writes target/gpu_check.md and prints it.
#
#   scripts/gpu_check.sh [SECONDS_PER_RUN]      (default 3: ~3 min after the build)
#
# GPU_CHECK_SIMULATE=1 runs the same steps on a simulated GPU
# (SWITCHBOARD_SIMULATED_GPUS; models on the CPU, debug build, no --cuda
# install): it checks this script, and its figures are not GPU figures.
#
# Not measured yet, and said so in the table: TorchScript on CUDA (setup
# does not install libtorch_cuda.so), `auto` mini-batches against device
# memory (device memory is not metered), a ResNet-50-sized model (none is
# made locally yet).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-3}
step() { echo "gpu_check [$SECONDS s]: $*" >&2; }

if [ -n "${GPU_CHECK_SIMULATE:-}" ]; then
  export SWITCHBOARD_SIMULATED_GPUS=1x16GiB
  kind="simulated GPU (models on the CPU: not a GPU figure)"
  profile=debug
  scripts/setup.sh >/dev/null
  cargo_flags=(--locked)
else
  nvidia-smi -L >/dev/null 2>&1 || { echo "gpu_check: no NVIDIA GPU or driver (nvidia-smi -L failed)" >&2; exit 1; }
  kind=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)
  profile=release
  step "installing the CUDA provider"
  scripts/setup.sh --cuda >/dev/null
  cargo_flags=(--locked --release --features engine/cuda,switchboard/cuda)
  step "GPU tests (the driver lists the GPU)"
  cargo test --locked -p engine --features cuda --lib gpus
fi
step "building ($profile)"
cargo build "${cargo_flags[@]}" -q -p engine -p switchboard -p loadtest --example raw_ort --bin switchboard --bin sb-loadtest
bin=$root/target/$profile/switchboard
lt=$root/target/$profile/sb-loadtest
raw=$root/target/$profile/examples/raw_ort
report=$root/target/gpu_check.md
tmp=$(mktemp -d /tmp/gpucheck.XXXXXX)
worker=""
trap '[ -z "$worker" ] || kill "$worker" 2>/dev/null || true; rm -rf "$tmp"' EXIT
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(round($1, 1))"; }

{
  echo "## GPU check: $kind"
  echo
  echo '```'
  "$bin" devices -o table
  echo '```'
  echo
  echo "### Raw ONNX Runtime in process (one session, rows/s)"
  echo
  echo "| model | batch | cuda:0 | cpu | cuda:0 / cpu |"
  echo "|---|---|---|---|---|"
} >"$report"
for model in convnet digits_deep; do
  for b in 1 8 32 128; do
    step "raw $model batch $b"
    g=$("$raw" "models/$model.onnx" "$b" 1 "$secs" cuda:0 | field "d['rows_per_s']")
    c=$("$raw" "models/$model.onnx" "$b" 1 "$secs" cpu | field "d['rows_per_s']")
    echo "| $model | $b | $g | $c | $(python3 -c "print(round($g / max($c, 1e-9), 2))") |" >>"$report"
  done
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$bin" worker --listen 127.0.0.1:"$port" --device cuda:0 --max-batch-size 128 \
  --max-queue-delay-us 200 --deployment conv/a=models/convnet.onnx \
  --deployment deep/a=models/digits_deep.onnx >/dev/null &
worker=$!
deadline=$((SECONDS + 120))
until "$lt" --quiet --url http://127.0.0.1:"$port" --model conv --concurrency 1 --duration 0.1 --warmup 0 >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "gpu_check: the worker did not serve within 120 s" >&2; exit 1; }
  sleep 0.2
done
{
  echo
  echo "### Served by a worker on cuda:0 (max batch 128, queue delay 200 µs)"
  echo
  echo "| model | concurrency | infer/s | p50 µs | p99 µs |"
  echo "|---|---|---|---|---|"
} >>"$report"
for model in conv deep; do
  for c in 1 16 64; do
    step "worker $model concurrency $c"
    "$lt" --quiet --url http://127.0.0.1:"$port" --model "$model" --concurrency "$c" \
      --duration "$secs" --warmup 1 --report-json "$tmp/r.json" >/dev/null
    r=$(python3 -c "import json; d=json.load(open('$tmp/r.json')); l=d['latency_us']; print('| %.0f | %.0f | %.0f' % (d['throughput_per_s'], l['p50'], l['p99']))")
    echo "| $model | $c $r |" >>"$report"
  done
done
cat >>"$report" <<'EOF'

Not measured by this check yet: TorchScript on CUDA against ONNX Runtime on
CUDA (setup installs libtorch's CPU libraries only), `mini_batch_size auto`
against the device's memory (device memory is not metered), and a
ResNet-50-sized model.
EOF
step "done: $report"
cat "$report"
