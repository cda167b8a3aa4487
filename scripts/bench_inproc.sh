#!/usr/bin/env bash
# `switchboard up` with its in-process hop (gateway → own worker, no gRPC)
# and without it (--in-process-hop false: loopback gRPC like any worker),
# side by side, for BENCHMARKS.md: digits at concurrency 16, CPU of the up
# process (gateway + worker + batcher; its Redis is a separate process, off
# the request path) per request, from /proc.
#
#   scripts/bench_inproc.sh [SECONDS] [RUNS]   (default 10, 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
runs=${2:-2}
. "$root/scripts/bench_common.sh"
export RUST_LOG=warn SWITCHBOARD_ADMIN_KEY=bench-admin
unset SWITCHBOARD_CA_CERT SWITCHBOARD_KEY SWITCHBOARD_URL SWITCHBOARD_OTLP_ENDPOINT SWITCHBOARD_REDIS

# up_on NAME HOP: sets NAME_url, NAME_pid, NAME_key.
up_on() {
  local name=$1 hop=$2 gp log
  gp=$(free_port); log=$tmp/$name.log
  "$bin" up --listen 127.0.0.1:"$gp" --http-listen off --data-dir "$tmp/$name" --in-process-hop "$hop" >"$log" 2>&1 &
  pids+=($!)
  local pid=$! until=$((SECONDS + 90))
  until grep -q "switchboard is up" "$log"; do
    [ $SECONDS -lt $until ] || { echo "$name: up did not start" >&2; cat "$log" >&2; exit 1; }; sleep 0.2
  done
  local key
  key=$(grep -A1 "endpoint key for 'digits'" "$log" | tail -1 | tr -d ' ')
  printf -v "${name}_url" %s "http://127.0.0.1:$gp"
  printf -v "${name}_pid" %s "$pid"
  printf -v "${name}_key" %s "$key"
}
up_on hop true
up_on grpc false
field() { python3 -c "import json,sys; d=json.load(open('$1')); v=d$2; print(round(v,1) if isinstance(v,float) else v)"; }
echo "| run | up | infer/s | p50 µs | p99 µs | up CPU µs/req |"
echo "|---|---|---|---|---|---|"
names=(hop grpc)
for r in $(seq "$runs"); do
  for i in 0 1; do
    n=${names[$(( (i + r - 1) % 2 ))]}
    url=${n}_url; pid=${n}_pid; key=${n}_key
    f=$out/inproc_${n}_run$r.json
    "$lt" --quiet --url "${!url}" --model digits --token "${!key}" --concurrency 16 \
      --duration "$secs" --warmup 2 --server-pids "${!pid}" --report-json "$f" >/dev/null
    echo "| $r | $n | $(field "$f" "['throughput_per_s']") | $(field "$f" "['latency_us']['p50']") | $(field "$f" "['latency_us']['p99']") | $(field "$f" "['server_cpu_us_per_request']") |"
  done
done
