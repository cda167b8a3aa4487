#!/usr/bin/env bash
# SLO-adaptive batching against fixed queue delays, for BENCHMARKS.md: the
# conv net on one worker process (one instance, batches up to 8), driven
# directly by the load tool (no gateway: the worker's own latency is what
# the SLO is about). Its capacity is measured closed loop at concurrency
# 16, then each configuration is offered open-loop Poisson load at three
# fractions of it. Latency is from the intended send time.
#
#   scripts/bench_adaptive.sh [SECONDS] [RUNS] [SLO_MS]   (default 10, 2, 10)
#
# Reports land in target/bench/adaptive_*.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
runs=${2:-2}
slo=${3:-10}
. "$root/scripts/bench_common.sh"
export RUST_LOG=error

# worker DELAY [SLO_MS]: a stand-alone conv-net worker; sets url, worker.
start_worker() {
  local wp; wp=$(free_port)
  local extra=()
  [ $# -gt 1 ] && extra=(--slo-p99-ms "$2")
  "$bin" worker --listen 127.0.0.1:"$wp" --max-batch-size 8 --max-queue-delay-us "$1" "${extra[@]}" \
    --deployment conv/a="$root/models/convnet.onnx" >/dev/null &
  worker=$!; pids+=($worker)
  url=http://127.0.0.1:$wp
  local until=$((SECONDS + 60))
  until "$lt" --quiet --url "$url" --model conv --duration 0.2 --warmup 0 >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || { echo "worker not up" >&2; exit 1; }; sleep 0.2
  done
}
stop_worker() { kill "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true; pids=(); }

field() { python3 -c "import json,sys; d=json.load(open('$1')); v=d$2; print(round(v,1) if isinstance(v,float) else v)"; }
echo "| run | load | offered/s | delay | answered/s | p50 ms | p99 ms | mean batch | worker CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$runs"); do
  start_worker 0
  cap=$out/adaptive_capacity_run$r.json
  "$lt" --quiet --url "$url" --model conv --concurrency 16 --duration 5 --warmup 2 --report-json "$cap" >/dev/null
  capacity=$(field "$cap" "['throughput_per_s']")
  stop_worker
  echo "| $r | capacity (closed loop, c=16) | - | 0 | $capacity | | | | |"
  for load in 0.3 0.7 0.95; do
    rate=$(python3 -c "print(round($capacity * $load))")
    for delay in 0 100 1000 auto; do
      if [ "$delay" = auto ]; then start_worker auto "$slo"; label="auto (SLO $slo ms)"; else start_worker "$delay"; label="$delay µs"; fi
      f=$out/adaptive_${load}_${delay}_run$r.json
      "$lt" --quiet --url "$url" --model conv --rate "$rate" --poisson --duration "$secs" --warmup 2 \
        --server-pids "$worker" --report-json "$f" >/dev/null
      stop_worker
      python3 - "$f" "$r" "$load" "$label" <<'PY'
import json, sys
f, run, load, label = sys.argv[1:]
d = json.load(open(f)); lat = d["latency_us"]
batch = d.get("server_mean_batch") or 0
cpu = d.get("server_cpu_us_per_request") or 0
err = f" ({d['errors']} errors)" if d["errors"] else ""
print(f"| {run} | {float(load)*100:.0f} % | {d['offered_per_s']:.0f} | {label} | {d['throughput_per_s']:.0f}{err} | {lat['p50']/1e3:.2f} | {lat['p99']/1e3:.2f} | {batch:.2f} | {cpu:.1f} |")
PY
    done
  done
done
