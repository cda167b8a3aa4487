#!/usr/bin/env bash
# Real-time benchmarks for BENCHMARKS.md. Everything on this machine's cores:
# redis-server, one worker process, one gateway process and the load tool.
#
#   scripts/bench_realtime.sh [SECONDS_PER_RUN]      (default 10)
#
# Per concurrency (1, 16, 64), the digits MLP is driven through the worker
# directly (the baseline) and through the gateway; then the conv net at
# saturation against raw in-process ONNX Runtime at the batch size the
# scheduler formed. Reports land in target/bench/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
. "$root/scripts/bench_common.sh"
cargo build --release --locked -q -p engine --example raw_ort
raw=$root/target/release/examples/raw_ort
rp=$(free_port); wp=$(free_port); gp=$(free_port)
redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >/dev/null &
pids+=($!)
redis=redis://127.0.0.1:$rp
export RUST_LOG=warn SWITCHBOARD_ADMIN_KEY=bench-admin SWITCHBOARD_URL=http://127.0.0.1:$gp
"$bin" worker --listen 127.0.0.1:"$wp" --redis "$redis" \
  --deployment digits/blue="$root/models/digits_mlp.onnx" \
  --deployment conv/a="$root/models/convnet.onnx" >/dev/null &
worker=$!; pids+=($worker)
"$bin" gateway --listen 127.0.0.1:"$gp" --redis "$redis" &
gateway=$!; pids+=($gateway)

deadline=$((SECONDS + 60))
until "$bin" endpoint list >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || { echo "gateway not up" >&2; exit 1; }; sleep 0.1; done
key=$("$bin" endpoint create digits | python3 -c 'import json, sys; print(json.load(sys.stdin)["primary_key"])')
"$bin" deployment create digits blue --model models/digits_mlp.onnx >/dev/null
row=$(python3 -c 'print(",".join(["1"]*64))')
until SWITCHBOARD_KEY=$key "$bin" invoke digits --data "$row" >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || { echo "digits not routable" >&2; exit 1; }; sleep 0.1; done

field() { python3 -c "import json,sys; d=json.load(open('$1')); v=d$2; print(v if not isinstance(v,float) else round(v,1))"; }
echo "| path | concurrency | infer/s | p50 µs | p99 µs | server CPU µs/req | load tool CPU µs/req |"
echo "|---|---|---|---|---|---|---|"
for c in 1 16 64; do
  "$lt" --quiet --url http://127.0.0.1:"$wp" --model digits --concurrency "$c" --duration "$secs" --warmup 2 \
    --server-pids "$worker" --report-json "$out/direct_c$c.json" >/dev/null
  "$lt" --quiet --url http://127.0.0.1:"$gp" --model digits --token "$key" --concurrency "$c" --duration "$secs" --warmup 2 \
    --server-pids "$worker,$gateway" --report-json "$out/gateway_c$c.json" >/dev/null
  for p in direct gateway; do
    f=$out/${p}_c$c.json
    echo "| $p | $c | $(field "$f" "['throughput_per_s']") | $(field "$f" "['latency_us']['p50']") | $(field "$f" "['latency_us']['p99']") | $(field "$f" "['server_cpu_us_per_request']") | $(field "$f" "['client_cpu_us_per_request']") |"
  done
done

# For scale, the floor of one hop on this machine in this run: the same
# load tool against a V2 server that answers at once (plain tonic on a
# one-worker multi-thread runtime: a default tonic hop, the way the issue's
# scale figures were taken). Its p50 and its client + server CPU per
# request are what one gRPC hop costs before any work.
tp=$(free_port)
TOKIO_WORKER_THREADS=1 "$lt" serve-test --listen 127.0.0.1:"$tp" >/dev/null &
trivial=$!; pids+=($trivial)
until "$lt" --quiet --url http://127.0.0.1:"$tp" --model t --concurrency 1 --duration 0.1 --warmup 0 >/dev/null 2>&1; do sleep 0.1; done
for c in 1 16; do
  "$lt" --quiet --url http://127.0.0.1:"$tp" --model t --concurrency "$c" --duration "$secs" --warmup 2 \
    --server-pids "$trivial" --report-json "$out/bare_c$c.json" >/dev/null
  f=$out/bare_c$c.json
  echo "| bare hop (no work) | $c | $(field "$f" "['throughput_per_s']") | $(field "$f" "['latency_us']['p50']") | $(field "$f" "['latency_us']['p99']") | $(field "$f" "['server_cpu_us_per_request']") | $(field "$f" "['client_cpu_us_per_request']") |"
done
kill "$trivial" 2>/dev/null || true

# Compute-bound: the conv net through the worker at saturation, against raw
# ORT (same single thread, no server) at the batch size the scheduler formed.
"$lt" --quiet --url http://127.0.0.1:"$wp" --model conv --concurrency 64 --duration "$secs" --warmup 2 \
  --server-pids "$worker" --report-json "$out/conv_c64.json" >/dev/null
served=$(field "$out/conv_c64.json" "['rows_per_s']")
mean=$(field "$out/conv_c64.json" "['server_mean_batch']")
batch=$(python3 -c "print(max(1, round($mean)))")
kill "$worker" "$gateway" 2>/dev/null || true
"$raw" "$root/models/convnet.onnx" "$batch" 1 "$secs" >"$out/conv_raw.json"
rawrate=$(field "$out/conv_raw.json" "['rows_per_s']")
echo
echo "| conv net | rows/s |"
echo "|---|---|"
echo "| served, 64 clients, batch 1 each (mean batch formed: $mean; sizes: $(field "$out/conv_c64.json" "['server_batches']")) | $served |"
echo "| raw in-process ORT, batch $batch, same thread count | $rawrate |"
echo "| ratio | $(python3 -c "print(f'{$served/$rawrate*100:.0f} %')") |"
