#!/usr/bin/env bash
# The cost of metrics and of traces on the real-time path, for
# BENCHMARKS.md: the digits MLP through a gateway to a worker at
# concurrency 16, gateway + worker CPU per request, in four set-ups run
# side by side (each its own Redis, gateway and worker), the order
# rotating between runs:
#   off      no --metrics-listen, no --otlp-endpoint
#   metrics  --metrics-listen on both roles
#   trace1   metrics + OTLP export, 1 % of traces sampled
#   trace    metrics + OTLP export, every trace sampled
# Spans go to a local sink (switchboard's otlp_sink example) that counts
# and drops them.
#
#   scripts/bench_observability.sh [SECONDS_PER_RUN] [RUNS] [CONCURRENCY]   (default 10, 2, 16)
#
# Reports land in target/bench/obs_*.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
runs=${2:-2}
conc=${3:-16}
. "$root/scripts/bench_common.sh"
cargo build --release --locked -q -p switchboard --example otlp_sink
sink=$root/target/release/examples/otlp_sink
export RUST_LOG=warn SWITCHBOARD_ADMIN_KEY=bench-admin
unset SWITCHBOARD_CA_CERT SWITCHBOARD_KEY SWITCHBOARD_URL SWITCHBOARD_OTLP_ENDPOINT
sp=$(free_port)
"$sink" 127.0.0.1:"$sp" >"$tmp/sink.log" &
pids+=($!)
otlp=http://127.0.0.1:$sp

# fleet NAME ARGS...: Redis, a worker and a gateway, both given ARGS (each
# "@" in them becomes a free port); sets NAME_url, NAME_pids, NAME_key.
fleet() {
  local name=$1; shift
  local rp wp gp
  rp=$(free_port); wp=$(free_port); gp=$(free_port)
  mkdir -p "$tmp/$name"
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/$name" >/dev/null &
  pids+=($!)
  local role args=() a
  for role in worker gateway; do
    args=()
    for a in "$@"; do [ "$a" = @ ] && a=127.0.0.1:$(free_port); args+=("$a"); done
    if [ $role = worker ]; then
      "$bin" worker --listen 127.0.0.1:"$wp" --redis redis://127.0.0.1:"$rp" \
        --deployment digits/blue="$root/models/digits_mlp.onnx" "${args[@]}" >/dev/null &
    else
      "$bin" gateway --listen 127.0.0.1:"$gp" --redis redis://127.0.0.1:"$rp" "${args[@]}" &
    fi
    pids+=($!)
  done
  local worker=${pids[-2]} gateway=${pids[-1]} url=http://127.0.0.1:$gp
  local deadline=$((SECONDS + 60))
  until "$bin" endpoint list --url "$url" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "$name gateway not up" >&2; exit 1; }; sleep 0.1
  done
  local key row
  key=$("$bin" endpoint create digits --url "$url" | python3 -c 'import json, sys; print(json.load(sys.stdin)["primary_key"])')
  "$bin" deployment create digits blue --model models/digits_mlp.onnx --url "$url" >/dev/null
  row=$(python3 -c 'print(",".join(["1"]*64))')
  until SWITCHBOARD_KEY=$key "$bin" invoke digits --data "$row" --url "$url" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "$name: digits not routable" >&2; exit 1; }; sleep 0.1
  done
  printf -v "${name}_url" %s "$url"
  printf -v "${name}_pids" %s "$worker,$gateway"
  printf -v "${name}_key" %s "$key"
}
fleet off
fleet metrics --metrics-listen @
fleet trace1 --metrics-listen @ --otlp-endpoint "$otlp" --otlp-sample-ratio 0.01
fleet trace --metrics-listen @ --otlp-endpoint "$otlp" --otlp-sample-ratio 1

field() { python3 -c "import json,sys; d=json.load(open('$1')); v=d$2; print(v if not isinstance(v,float) else round(v,1))"; }
spans() { tail -n 1 "$tmp/sink.log" | awk '{ print $2 + 0 }'; }
measure() {  # name run
  local name=$1 r=$2 url pids key before after
  url=${name}_url; pids=${name}_pids; key=${name}_key
  local f=$out/obs_${name}_c${conc}_run$r.json
  before=$(spans)
  "$lt" --quiet --url "${!url}" --model digits --token "${!key}" --concurrency "$conc" \
    --duration "$secs" --warmup 2 --server-pids "${!pids}" --report-json "$f" >/dev/null
  sleep 2 # the exporters' last batches (only the span count below waits on it)
  after=$(spans)
  echo "| $r | $name | $conc | $(field "$f" "['throughput_per_s']") | $(field "$f" "['latency_us']['p50']") | $(field "$f" "['latency_us']['p99']") | $(field "$f" "['server_cpu_us_per_request']") | $((after - before)) |"
}
echo "| run | set-up | concurrency | infer/s | p50 µs | p99 µs | gateway + worker CPU µs/req | spans exported |"
echo "|---|---|---|---|---|---|---|---|"
names=(off metrics trace1 trace)
for r in $(seq "$runs"); do
  for i in 0 1 2 3; do measure "${names[$(( (i + r - 1) % 4 ))]}" "$r"; done
done
