#!/usr/bin/env bash
# Builds the CPU image (deploy/docker/Dockerfile, target `prebuilt`) from the
# binary the test build made, on a Debian base made here (no registry needed),
# runs `switchboard up` in it and checks it with tritonclient
# (scripts/compat_tritonclient.py).
#   scripts/image_test.sh [path/to/switchboard]   (default target/debug/switchboard)
# Installs what it needs (Debian: podman, runc, mmdebstrap; the tritonclient
# venv through scripts/compat.sh's location .local/compat-venv). Podman runs
# with runc and no default ulimits (this machine permits neither crun's cgroup
# setup nor setting rlimits). Exits non-zero on any failure; removes the
# container on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${1:-target/debug/switchboard}
[ -x "$bin" ] || { echo "image_test: $bin is not built" >&2; exit 2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for p in podman runc mmdebstrap; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image_test: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" uidmap >/dev/null
fi
scripts/setup.sh   # redis-server and ONNX Runtime (idempotent)
venv="$root/.local/compat-venv"
if ! "$venv/bin/python" -c 'import tritonclient.grpc, numpy' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "tritonclient[grpc]==2.51.0" numpy
fi

tmp=$(mktemp -d /tmp/sbimage.XXXXXX)
conf="$tmp/containers.conf"
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$conf"
export CONTAINERS_CONF="$conf"
name="sb-image-test-$$"
image=localhost/switchboard:test
cleanup() {
  local rc=$?
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman rmi -f "$image" >/dev/null 2>&1 || true   # keeps the base for the next run
  rm -rf "$tmp" "$root/deploy/docker/prebuilt"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

base=localhost/debian-base:bookworm
if ! podman image exists "$base"; then
  echo "image_test: making $base with mmdebstrap" >&2
  mmdebstrap --quiet --variant=minbase --include=redis-server,ca-certificates,passwd bookworm "$tmp/rootfs.tar"
  podman import "$tmp/rootfs.tar" "$base" >/dev/null
fi

prebuilt="$root/deploy/docker/prebuilt"
rm -rf "$prebuilt" && mkdir -p "$prebuilt/onnxruntime"
cp "$bin" "$prebuilt/switchboard"
lib=$(ls "$root"/.local/onnxruntime/onnxruntime/capi/libonnxruntime.so.* | sort | tail -n 1)
cp "$lib" "$prebuilt/onnxruntime/"
ln -s "$(basename "$lib")" "$prebuilt/onnxruntime/libonnxruntime.so"
echo "image_test: building $image" >&2
podman build --quiet --format docker --target prebuilt --build-arg RUNTIME_IMAGE="$base" \
  -f deploy/docker/Dockerfile -t "$image" . >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# No systemd here for podman's healthcheck timers: the HEALTHCHECK's command
# is run by hand below (podman exec … switchboard health).
podman run -d --name "$name" --network=host --health-cmd=none -e SWITCHBOARD_ADMIN_KEY=image-test-admin "$image" \
  up --listen "127.0.0.1:$port" --http-listen off --models /models --data-dir /data >/dev/null
deadline=$((SECONDS + 90))
key=""
until [ -n "$key" ]; do
  [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || { podman logs "$name" >&2; echo "image_test: the container exited" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { podman logs "$name" >&2; echo "image_test: not ready after 90 s" >&2; exit 1; }
  key=$(podman logs "$name" 2>&1 | grep -A1 "endpoint key for 'digits'" | sed -n 2p | tr -d '[:space:]' || true)
  [ -n "$key" ] || sleep 0.2
done
until "$bin" health --url "http://127.0.0.1:$port" --timeout 1 >/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "image_test: health not SERVING" >&2; exit 1; }
  sleep 0.2
done
# The image's own HEALTHCHECK command, inside the container.
podman exec "$name" switchboard health --url "http://127.0.0.1:$port" --timeout 2 >/dev/null
podman exec "$name" id -u | grep -qx 10001 || { echo "image_test: the container does not run as uid 10001" >&2; exit 1; }
"$venv/bin/python" scripts/compat_tritonclient.py --url "127.0.0.1:$port" --key "$key"
echo "image_test: the CPU image runs switchboard up and serves tritonclient" >&2
