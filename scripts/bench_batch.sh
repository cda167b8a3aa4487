#!/usr/bin/env bash
# Batch benchmarks for BENCHMARKS.md: a 1,000,000-row CSV job through the
# Jobs API (gateway + one batcher, release build), for the digits MLP
# (parse- and write-bound) and for digits_deep (compute-bound), against
# baselines measured in the same run on the same file:
#   (a) raw in-process ONNX Runtime at the job's batch size, one thread;
#   (b) arrow alone: read the file and write an output of the same size;
#   (c) a plain Python loop: pandas read_csv in chunks + onnxruntime + to_csv.
#
#   scripts/bench_batch.sh [ROWS]        (default 1000000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${1:-1000000}
scripts/setup.sh
cargo build --release --locked -q -p switchboard
cargo build --release --locked -q -p engine --example raw_ort
cargo build --release --locked -q -p batcher --example arrow_only
venv=$root/.local/bench-venv
if ! "$venv/bin/python" -c 'import pandas, onnxruntime' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q pandas numpy onnxruntime==1.31.1
fi
bin=$root/target/release/switchboard
tmp=$(mktemp -d /tmp/sbbatch.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# The input: the 16 real digits rows of the fixture, repeated, with a header.
python3 - "$tmp/rows.csv" "$rows" <<'EOF'
import json, sys
rows = json.load(open("models/digits_mlp.expected.json"))["inputs"]["input"]["data"]
lines = [",".join(f"{v:g}" for v in rows[i * 64:(i + 1) * 64]) for i in range(16)]
n = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    f.write(",".join(f"f{i}" for i in range(64)) + "\n")
    block = "\n".join(lines) + "\n"
    f.write(block * (n // 16))
    f.write("".join(l + "\n" for l in lines[: n % 16]))
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rp=$(free_port); gp=$(free_port)
redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always --dir "$tmp" >/dev/null &
pids+=($!)
redis=redis://127.0.0.1:$rp
export RUST_LOG=warn SWITCHBOARD_ADMIN_KEY=bench-admin SWITCHBOARD_URL=http://127.0.0.1:$gp
"$bin" gateway --listen 127.0.0.1:"$gp" --redis "$redis" &
pids+=($!)
"$bin" batcher --redis "$redis" >/dev/null &
pids+=($!)
deadline=$((SECONDS + 60))
until "$bin" endpoint list >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || { echo "gateway not up" >&2; exit 1; }; sleep 0.1; done
"$bin" endpoint create bench >/dev/null
"$bin" deployment create bench mlp --model "$root/models/digits_mlp.onnx" >/dev/null
"$bin" deployment create bench deep --model "$root/models/digits_deep.onnx" >/dev/null
"$bin" traffic bench mlp=100 >/dev/null

field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print($1)"; }
# run_job DEPLOYMENT OUTPUT: one job, waited for; sets rate (rows/s over the
# job's own created -> finished time), batch (what it chose) and secs (how
# long to run a baseline).
run_job() {
  local job
  job=$("$bin" job submit --endpoint bench --deployment "$1" --input "$tmp/rows.csv" --output "$2" --wait 2>/dev/null)
  rate=$(echo "$job" | field "round(d['rows_done'] * 1000 / (d['finished_unix_ms'] - d['created_unix_ms']))")
  batch=$(echo "$job" | field "d['batch_size']")
  secs=$(python3 -c "print(max(5, min(30, 2 * $rows / $rate)))")
}
echo "| model | path | rows/s | vs slower of (a),(b) | vs pandas |"
echo "|---|---|---|---|---|"
for m in mlp deep; do
  model=$root/models/digits_$([ $m = mlp ] && echo mlp || echo deep).onnx
  run_job $m "$tmp/out-$m"
  raw=$("$root/target/release/examples/raw_ort" "$model" "$batch" 1 "$secs" | field "round(d['rows_per_s'])")
  arrow=$("$root/target/release/examples/arrow_only" "$tmp/rows.csv" --out "$tmp/arrow-$m" --chunk-rows "$batch" | field "round(d['rows_per_s'])")
  pandas=$("$venv/bin/python" scripts/bench_pandas.py "$model" "$tmp/rows.csv" "$tmp/pandas-$m.csv" "$batch" --header | field "d['rows_per_s']")
  rm -rf "$tmp/out-$m" "$tmp/arrow-$m" "$tmp/pandas-$m.csv"
  slower=$(( raw < arrow ? raw : arrow ))
  echo "| $m | job through the Jobs API (batch $batch) | $rate | $(python3 -c "print(f'{$rate/$slower*100:.0f} %')") | $(python3 -c "print(f'{$rate/$pandas:.1f}x')") |"
  echo "| $m | (a) raw in-process ORT, batch $batch | $raw | | |"
  echo "| $m | (b) arrow alone: read + write | $arrow | | |"
  echo "| $m | (c) pandas + onnxruntime loop, chunks of $batch | $pandas | | |"
done

# Scale-out, compute-bound: a second batcher joins (one job, shards shared),
# against the whole machine's raw ORT (two instances, one per core) and the
# pandas loop with onnxruntime's default threads (one per core).
"$bin" batcher --redis "$redis" >/dev/null &
pids+=($!)
model=$root/models/digits_deep.onnx
run_job deep "$tmp/out-deep2"
raw2=$("$root/target/release/examples/raw_ort" "$model" "$batch" 2 "$secs" | field "round(d['rows_per_s'])")
pandas0=$("$venv/bin/python" scripts/bench_pandas.py "$model" "$tmp/rows.csv" "$tmp/pandas-deep0.csv" "$batch" --header --threads 0 | field "d['rows_per_s']")
echo "| deep | job, two batchers (batch $batch) | $rate | $(python3 -c "print(f'{$rate/$raw2*100:.0f} %')") of (a2) | $(python3 -c "print(f'{$rate/$pandas0:.1f}x')") (c0) |"
echo "| deep | (a2) raw in-process ORT, two instances, batch $batch | $raw2 | | |"
echo "| deep | (c0) pandas loop, onnxruntime default threads | $pandas0 | | |"
