#!/usr/bin/env bash
# Past capacity with deadlines, for BENCHMARKS.md: the conv net behind a
# gateway and a worker (separate processes, one instance, batches up to
# 8), its capacity measured closed loop at concurrency 16, then three
# times that offered open loop with a 50 ms deadline on every request
# (grpc-timeout), with and without the worker's deadline-aware admission.
# Reports goodput (OK within the deadline), p99 of what was answered,
# refusals by status and how fast they came, and the roles' resident
# memory idle and at its peak during the run.
#
#   scripts/bench_overload.sh [SECONDS] [RUNS] [DEADLINE_MS] [FACTOR]   (default 20, 2, 50, 3)
#
# Reports land in target/bench/overload_*.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-20}
runs=${2:-2}
deadline=${3:-50}
factor=${4:-3}
. "$root/scripts/bench_common.sh"
export RUST_LOG=error SWITCHBOARD_ADMIN_KEY=bench-admin
unset SWITCHBOARD_CA_CERT SWITCHBOARD_KEY SWITCHBOARD_URL SWITCHBOARD_OTLP_ENDPOINT
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# fleet ADMISSION: Redis, a conv-net worker and a gateway; sets url, key,
# worker, gateway.
fleet() {
  local rp wp gp
  rp=$(free_port); wp=$(free_port); gp=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >/dev/null &
  pids+=($!)
  "$bin" worker --listen 127.0.0.1:"$wp" --redis redis://127.0.0.1:"$rp" --max-batch-size 8 \
    --deadline-admission "$1" --deployment conv/a="$root/models/convnet.onnx" >/dev/null &
  pids+=($!); worker=$!
  "$bin" gateway --listen 127.0.0.1:"$gp" --redis redis://127.0.0.1:"$rp" >/dev/null &
  pids+=($!); gateway=$!
  url=http://127.0.0.1:$gp
  local until=$((SECONDS + 60))
  until "$bin" endpoint list --url "$url" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || { echo "gateway not up" >&2; exit 1; }; sleep 0.1
  done
  key=$("$bin" endpoint create conv --url "$url" | python3 -c 'import json, sys; print(json.load(sys.stdin)["primary_key"])')
  "$bin" deployment create conv a --model models/convnet.onnx --url "$url" >/dev/null
  until "$lt" --quiet --url "$url" --model conv --token "$key" --duration 0.2 --warmup 0 >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || { echo "conv not routable" >&2; exit 1; }; sleep 0.2
  done
}
stop_fleet() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

field() { python3 -c "import json,sys; d=json.load(open('$1')); v=d$2; print(round(v,1) if isinstance(v,float) else v)"; }
echo "| run | admission | capacity/s | offered/s | goodput/s (% of capacity) | p99 answered ms | refused (RESOURCE_EXHAUSTED) | refusal p50 / p99 ms | expired (DEADLINE_EXCEEDED + CANCELLED) | other | worker RSS idle → peak MiB | gateway RSS idle → peak MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$runs"); do
  for adm in true false; do
    fleet "$adm"
    cap=$out/overload_capacity_${adm}_run$r.json
    "$lt" --quiet --url "$url" --model conv --token "$key" --concurrency 16 --duration 5 --warmup 2 --report-json "$cap" >/dev/null
    capacity=$(field "$cap" "['throughput_per_s']")
    rate=$(python3 -c "print(round($capacity * $factor))")
    w0=$(rss_kb "$worker"); g0=$(rss_kb "$gateway"); wmax=$w0; gmax=$g0
    f=$out/overload_${adm}_run$r.json
    "$lt" --quiet --url "$url" --model conv --token "$key" --rate "$rate" --deadline-ms "$deadline" \
      --duration "$secs" --warmup 2 --report-json "$f" >/dev/null &
    load=$!
    while kill -0 "$load" 2>/dev/null; do
      w=$(rss_kb "$worker"); g=$(rss_kb "$gateway")
      [ "$w" -gt "$wmax" ] && wmax=$w; [ "$g" -gt "$gmax" ] && gmax=$g
      sleep 0.5
    done
    wait "$load"
    python3 - "$f" "$capacity" "$adm" "$r" "$w0" "$wmax" "$g0" "$gmax" <<'PY'
import json, sys
f, cap, adm, run, w0, wmax, g0, gmax = sys.argv[1:]
d = json.load(open(f)); cap = float(cap)
codes = d["errors_by_code"]; lat = d["error_latency_us"]
refused = codes.get("ResourceExhausted", 0)
expired = codes.get("DeadlineExceeded", 0) + codes.get("Cancelled", 0)
other = {k: v for k, v in codes.items() if k not in ("ResourceExhausted", "DeadlineExceeded", "Cancelled")}
rl = lat.get("ResourceExhausted")
ref = f"{rl['p50']/1e3:.2f} / {rl['p99']/1e3:.2f}" if rl else "-"
mib = lambda kb: f"{int(kb)/1024:.0f}"
g = d["goodput_per_s"]
print(f"| {run} | {'on' if adm == 'true' else 'off'} | {cap:.0f} | {d['offered_per_s']:.0f} | {g:.0f} ({100*g/cap:.0f} %) | {d['latency_us']['p99']/1e3:.1f} | {refused} | {ref} | {expired} | {other or '-'} | {mib(w0)} → {mib(wmax)} | {mib(g0)} → {mib(gmax)} |")
PY
    stop_fleet
  done
done
