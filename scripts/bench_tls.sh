#!/usr/bin/env bash
# The cost of TLS on the real-time path, for BENCHMARKS.md: the digits MLP
# through a gateway to a worker, plaintext against TLS on both hops (client
# → gateway TLS, gateway → worker mTLS), at concurrency 1 and 16. Two fleets
# run side by side (each its own Redis, gateway and worker), so both are
# measured in the same minutes; the order alternates between runs.
#
#   scripts/bench_tls.sh [SECONDS_PER_RUN] [RUNS]      (default 10, 2)
#
# Reports land in target/bench/tls_*.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
runs=${2:-2}
. "$root/scripts/bench_common.sh"

# --- certificates -------------------------------------------------------------
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=bench-ca -keyout "$tmp/ca.key" -out "$tmp/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' >"$tmp/ext"
for n in gateway worker; do
  openssl req "${ec[@]}" -subj "/CN=$n" -keyout "$tmp/$n.key" -out "$tmp/$n.csr" 2>/dev/null
  openssl x509 -req -days 2 -in "$tmp/$n.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -set_serial "$RANDOM" -extfile "$tmp/ext" -out "$tmp/$n.pem" 2>/dev/null
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export RUST_LOG=warn SWITCHBOARD_ADMIN_KEY=bench-admin
unset SWITCHBOARD_CA_CERT SWITCHBOARD_KEY SWITCHBOARD_URL
# fleet NAME TLS(0|1): starts Redis, a worker and a gateway; sets NAME_url,
# NAME_pids (worker,gateway) and NAME_key.
fleet() {
  local name=$1 tls=$2 rp wp gp url
  rp=$(free_port); wp=$(free_port); gp=$(free_port)
  mkdir -p "$tmp/$name"
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/$name" >/dev/null &
  pids+=($!)
  local wtls=() gtls=() ca=()
  url=http://127.0.0.1:$gp
  if [ "$tls" = 1 ]; then
    wtls=(--tls-cert "$tmp/worker.pem" --tls-key "$tmp/worker.key" --tls-client-ca "$tmp/ca.pem")
    gtls=(--tls-cert "$tmp/gateway.pem" --tls-key "$tmp/gateway.key"
          --worker-tls-ca "$tmp/ca.pem" --worker-tls-cert "$tmp/gateway.pem" --worker-tls-key "$tmp/gateway.key")
    ca=(--ca-cert "$tmp/ca.pem")
    url=https://localhost:$gp
  fi
  "$bin" worker --listen 127.0.0.1:"$wp" --advertise localhost:"$wp" --redis redis://127.0.0.1:"$rp" \
    --deployment digits/blue="$root/models/digits_mlp.onnx" "${wtls[@]}" >/dev/null &
  local worker=$!; pids+=($worker)
  "$bin" gateway --listen 127.0.0.1:"$gp" --redis redis://127.0.0.1:"$rp" "${gtls[@]}" &
  local gateway=$!; pids+=($gateway)
  local deadline=$((SECONDS + 60))
  until "$bin" endpoint list --url "$url" "${ca[@]}" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "$name gateway not up" >&2; exit 1; }; sleep 0.1
  done
  local key
  key=$("$bin" endpoint create digits --url "$url" "${ca[@]}" | python3 -c 'import json, sys; print(json.load(sys.stdin)["primary_key"])')
  "$bin" deployment create digits blue --model models/digits_mlp.onnx --url "$url" "${ca[@]}" >/dev/null
  local row
  row=$(python3 -c 'print(",".join(["1"]*64))')
  until SWITCHBOARD_KEY=$key "$bin" invoke digits --data "$row" --url "$url" "${ca[@]}" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "$name: digits not routable" >&2; exit 1; }; sleep 0.1
  done
  printf -v "${name}_url" %s "$url"
  printf -v "${name}_pids" %s "$worker,$gateway"
  printf -v "${name}_key" %s "$key"
}
fleet plain 0
fleet tls 1

field() { python3 -c "import json,sys; d=json.load(open('$1')); v=d$2; print(v if not isinstance(v,float) else round(v,1))"; }
measure() {  # name concurrency run
  local name=$1 c=$2 r=$3 url pids key
  url=${name}_url; pids=${name}_pids; key=${name}_key
  local f=$out/tls_${name}_c${c}_run$r.json
  "$lt" --quiet --url "${!url}" --ca-cert "$tmp/ca.pem" --model digits --token "${!key}" --concurrency "$c" \
    --duration "$secs" --warmup 2 --server-pids "${!pids}" --report-json "$f" >/dev/null
  echo "| $r | $name | $c | $(field "$f" "['throughput_per_s']") | $(field "$f" "['latency_us']['p50']") | $(field "$f" "['latency_us']['p99']") | $(field "$f" "['server_cpu_us_per_request']") | $(field "$f" "['client_cpu_us_per_request']") |"
}
echo "| run | path | concurrency | infer/s | p50 µs | p99 µs | gateway + worker CPU µs/req | load tool CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq "$runs"); do
  order=(plain tls); [ $((r % 2)) = 0 ] && order=(tls plain)
  for c in 1 16; do
    for name in "${order[@]}"; do measure "$name" "$c" "$r"; done
  done
done
