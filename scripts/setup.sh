#!/usr/bin/env bash
# Installs what cargo cannot: redis-server and redis-sentinel (Debian
# packages; Sentinel for the failover tests) and the ONNX
# Runtime shared library, taken from the `onnxruntime` wheel into the
# project-local folder .local/onnxruntime (no system-wide Python packages).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ORT_VERSION=1.31.1   # the ABI the `ort` crate (2.0.0-rc.15, api-22) loads

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup: installing redis-server" >&2
  apt_install redis-server
fi
if ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "setup: installing redis-sentinel" >&2
  apt_install redis-sentinel
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "setup: installing python3-pip" >&2
  apt_install python3 python3-pip
fi

ort_dir="$root/.local/onnxruntime"
if ! ls "$ort_dir"/onnxruntime/capi/libonnxruntime.so* >/dev/null 2>&1; then
  echo "setup: installing ONNX Runtime $ORT_VERSION into $ort_dir" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --break-system-packages --target "$ort_dir" "onnxruntime==$ORT_VERSION" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$ort_dir" "onnxruntime==$ORT_VERSION"
fi
lib=$(ls "$ort_dir"/onnxruntime/capi/libonnxruntime.so* | sort | tail -n 1)
echo "setup: ONNX Runtime at $lib" >&2
