#!/usr/bin/env bash
# REST against gRPC through the gateway, for BENCHMARKS.md: the digits MLP
# driven by the same load tool over gRPC, over REST with binary tensors and
# over REST with JSON data, at concurrency 1 and 16, each twice (runs
# interleaved, so drift on a shared machine falls on all three alike).
# Everything on this machine's cores: redis-server, one worker process, one
# gateway process (gRPC and --http-listen) and the load tool.
#
#   scripts/bench_rest.sh [SECONDS_PER_RUN]      (default 10)
#
# BENCH_BIN_DIR=target/debug skips the release build (a smoke run of the
# script itself; its numbers mean nothing). Reports land in target/bench/rest/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
scripts/setup.sh
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(ls "$root"/.local/onnxruntime/onnxruntime/capi/libonnxruntime.so* | sort | tail -n 1)
  export ORT_DYLIB_PATH
fi
bindir=${BENCH_BIN_DIR:-}
if [ -z "$bindir" ]; then
  cargo build --release --locked -q -p switchboard -p loadtest
  bindir=target/release
fi
bin=$root/$bindir/switchboard
lt=$root/$bindir/sb-loadtest
[ -x "$lt" ] || lt="$bin loadtest"
out=$root/target/bench/rest
mkdir -p "$out"
tmp=$(mktemp -d /tmp/sbbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rp=$(free_port); wp=$(free_port); gp=$(free_port); hp=$(free_port)
redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >/dev/null &
pids+=($!)
redis=redis://127.0.0.1:$rp
export RUST_LOG=warn SWITCHBOARD_ADMIN_KEY=bench-admin SWITCHBOARD_URL=http://127.0.0.1:$gp
"$bin" worker --listen 127.0.0.1:"$wp" --redis "$redis" \
  --deployment digits/blue="$root/models/digits_mlp.onnx" >/dev/null &
worker=$!; pids+=($worker)
"$bin" gateway --listen 127.0.0.1:"$gp" --http-listen 127.0.0.1:"$hp" --redis "$redis" >/dev/null &
gateway=$!; pids+=($gateway)

deadline=$((SECONDS + 60))
until "$bin" endpoint list >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || { echo "gateway not up" >&2; exit 1; }; sleep 0.1; done
key=$("$bin" endpoint create digits | python3 -c 'import json, sys; print(json.load(sys.stdin)["primary_key"])')
"$bin" deployment create digits blue --model models/digits_mlp.onnx >/dev/null
row=$(python3 -c 'print(",".join(["1"]*64))')
until SWITCHBOARD_KEY=$key "$bin" invoke digits --data "$row" >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || { echo "digits not routable" >&2; exit 1; }; sleep 0.1; done

field() { python3 -c "import json,sys; d=json.load(open('$1')); v=d$2; print(v if not isinstance(v,float) else round(v,1))"; }
load() {  # name, concurrency, extra args...
  local name=$1 c=$2; shift 2
  $lt --quiet --model digits --token "$key" --concurrency "$c" --duration "$secs" --warmup 2 \
    --server-pids "$worker,$gateway" --report-json "$out/$name.json" "$@" >/dev/null
}
echo "| protocol | concurrency | run | infer/s | p50 µs | p99 µs | server CPU µs/req (worker + gateway) | load tool CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|"
for c in 1 16; do
  for run in 1 2; do
    load "grpc_c${c}_r$run" "$c" --url http://127.0.0.1:"$gp"
    load "http-binary_c${c}_r$run" "$c" --url http://127.0.0.1:"$hp" --protocol http
    load "http-json_c${c}_r$run" "$c" --url http://127.0.0.1:"$hp" --protocol http --typed
    for p in grpc http-binary http-json; do
      f=$out/${p}_c${c}_r$run.json
      errors=$(field "$f" "['errors']")
      [ "$errors" = 0 ] || { echo "$p c=$c run $run: $errors errors" >&2; exit 1; }
      echo "| $p | $c | $run | $(field "$f" "['throughput_per_s']") | $(field "$f" "['latency_us']['p50']") | $(field "$f" "['latency_us']['p99']") | $(field "$f" "['server_cpu_us_per_request']") | $(field "$f" "['client_cpu_us_per_request']") |"
    done
  done
done
