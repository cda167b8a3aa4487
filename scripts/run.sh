#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs `switchboard up`
# (gateway + worker + its own Redis) with the demo models. Extra arguments go
# to `switchboard up` (e.g. --listen 0.0.0.0:8001).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo build --release --locked -p switchboard
exec target/release/switchboard up "$@"
