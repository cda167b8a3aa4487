#!/usr/bin/env bash
# Benchmarks of the load tool itself, for BENCHMARKS.md:
#  1. the generator's own ceiling against a trivial V2 server (no work per
#     request), server and generator on the same cores;
#  2. sb-loadtest and Triton's perf_analyzer against `switchboard up`, same
#     concurrency: do they agree on throughput?
#   scripts/bench_loadtest.sh [SECONDS]     (default 10)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
scripts/setup.sh
cargo build --release --locked -q -p switchboard -p loadtest
lt=$root/target/release/sb-loadtest
sb=$root/target/release/switchboard
tmp=$(mktemp -d /tmp/sbltbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
field() { python3 -c "import json; d=json.load(open('$1')); print(round(d$2, 1))"; }

if [ -z "${SKIP_CEILING:-}" ]; then  # SKIP_CEILING=1: only the perf_analyzer comparison
tp=$(free_port)
"$lt" serve-test --listen 127.0.0.1:"$tp" >/dev/null &
pids+=($!)
until "$lt" --quiet --url http://127.0.0.1:"$tp" --model t --concurrency 1 --duration 0.1 --warmup 0 >/dev/null 2>&1; do sleep 0.1; done
echo "| generator vs trivial server | requests/s | p50 µs | p99 µs |"
echo "|---|---|---|---|"
for c in 64 128; do
  "$lt" --quiet --url http://127.0.0.1:"$tp" --model t --concurrency "$c" --connections 4 --duration "$secs" --warmup 2 --report-json "$tmp/trivial_c$c.json" >/dev/null
  echo "| closed loop, $c in flight, 4 connections | $(field "$tmp/trivial_c$c.json" "['throughput_per_s']") | $(field "$tmp/trivial_c$c.json" "['latency_us']['p50']") | $(field "$tmp/trivial_c$c.json" "['latency_us']['p99']") |"
done
"$lt" --quiet --url http://127.0.0.1:"$tp" --model t --rate 25000 --connections 4 --duration "$secs" --warmup 2 --report-json "$tmp/trivial_open.json" >/dev/null
echo "| open loop at 25,000/s, 4 connections | $(field "$tmp/trivial_open.json" "['throughput_per_s']") | $(field "$tmp/trivial_open.json" "['latency_us']['p50']") | $(field "$tmp/trivial_open.json" "['latency_us']['p99']") |"
fi

# perf_analyzer from the tritonclient wheel (scripts/compat.sh installs it).
venv=$root/.local/compat-venv
[ -x "$venv/bin/perf_analyzer" ] || COMPAT_SKIP_PERF=1 scripts/compat.sh "$sb" >/dev/null
cudart=$(dirname "$(ls "$venv"/lib/python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12 | head -n 1)")
gp=$(free_port)
SWITCHBOARD_ADMIN_KEY=bench-admin "$sb" up --listen 127.0.0.1:"$gp" --http-listen off --data-dir "$tmp/data" >"$tmp/up.log" 2>&1 &
pids+=($!)
# Two models: the digits MLP, where a request costs the server little, so
# each tool's own cost per request shows in what it measures; and the conv
# net (~0.3-0.6 ms a sample), where the server's work sets the rate, which
# is the case a load tool must measure the same as any other.
keys() { # $1: up's log, $2: gateway port, $3: placement prefix; sets key (digits) and ckey (conv)
  key=""
  until [ -n "$key" ]; do key=$(grep -A1 "endpoint key for 'digits'" "$1" 2>/dev/null | sed -n 2p | tr -d '[:space:]' || true); sleep 0.2; done
  # `up` serves the demo models; the conv net gets a worker of its own on
  # up's Redis, placed with the server.
  redis=$(sed -n 's/^started redis-server at \([^ ]*\).*/\1/p' "$1")
  RUST_LOG=warn $3 "$sb" worker --listen 127.0.0.1:0 --redis "$redis" --deployment conv/a="$root/models/convnet.onnx" >/dev/null 2>&1 &
  pids+=($!)
  export SWITCHBOARD_URL=http://127.0.0.1:$2 SWITCHBOARD_ADMIN_KEY=bench-admin
  ckey=$("$sb" endpoint create conv | python3 -c 'import json, sys; print(json.load(sys.stdin)["primary_key"])')
  "$sb" deployment create conv a --model "$root/models/convnet.onnx" >/dev/null
  until "$lt" --quiet --url http://127.0.0.1:"$2" --model conv --token "$ckey" --concurrency 1 --duration 0.1 --warmup 0 >/dev/null 2>&1; do sleep 0.2; done
}
compare() { # $1: label, $2: gateway port, $3: prefix that places the load tools
  echo
  echo "$1"
  echo
  echo "| model | concurrency | sb-loadtest infer/s | perf_analyzer infer/s | difference |"
  echo "|---|---|---|---|---|"
  for m in digits conv; do
    k=$([ $m = digits ] && echo "$key" || echo "$ckey")
    for c in 1 16; do
      $3 "$lt" --quiet --url http://127.0.0.1:"$2" --model $m --token "$k" --concurrency "$c" --duration "$secs" --warmup 2 --report-json "$tmp/sb_c$c.json" >/dev/null
      LD_LIBRARY_PATH=$cudart $3 "$venv/bin/perf_analyzer" -m $m -u 127.0.0.1:"$2" -i grpc -H "authorization:Bearer $k" \
        --concurrency-range "$c:$c" --measurement-interval $((secs * 1000)) --stability-percentage 25 --max-trials 6 >"$tmp/pa_c$c.txt" 2>&1
      pa=$(sed -n 's/.*Throughput: \([0-9.]*\) infer\/sec.*/\1/p' "$tmp/pa_c$c.txt" | tail -n 1)
      ours=$(field "$tmp/sb_c$c.json" "['throughput_per_s']")
      echo "| $m | $c | $ours | $pa | $(python3 -c "print(f'{($ours-$pa)/$pa*100:+.1f} %')") |"
    done
  done
}
keys "$tmp/up.log" "$gp" ""
compare "Shared: server and load tool on the same 2 cores" "$gp" ""
for p in "${pids[@]: -2}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
# Pinned: the whole server (gateway, worker, ORT, its Redis) on core 0, each
# load tool alone on core 1, so neither tool's own cost takes CPU from the
# server: what separate machines would show, as far as one box can.
gp=$(free_port)
SWITCHBOARD_ADMIN_KEY=bench-admin taskset -c 0 "$sb" up --listen 127.0.0.1:"$gp" --http-listen off --data-dir "$tmp/data2" >"$tmp/up2.log" 2>&1 &
pids+=($!)
keys "$tmp/up2.log" "$gp" "taskset -c 0"
compare "Pinned: server on core 0, load tool on core 1" "$gp" "taskset -c 1"
