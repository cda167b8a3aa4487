#!/usr/bin/env bash
# Installs what cargo cannot: redis-server and redis-sentinel (Debian
# packages; Sentinel for the failover tests) and the ONNX
# Runtime shared library, taken from the `onnxruntime` wheel into the
# project-local folder .local/onnxruntime (no system-wide Python packages).
# `--torch` also installs what the `torch` feature (TorchScript through tch)
# links against into .local/libtorch. `--cuda` installs ONNX Runtime's CUDA
# provider and the CUDA/cuDNN libraries it loads into .local/onnxruntime-gpu
# (about 2 GB; for builds with the `cuda` feature on a GPU machine).
set -euo pipefail
torch=""
cuda=""
for arg in "$@"; do
  case "$arg" in
    --torch) torch=1 ;;
    --cuda) cuda=1 ;;
    *) echo "setup: unknown option $arg (known: --torch, --cuda)" >&2; exit 2 ;;
  esac
done
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

# libtorch for the `torch` feature, from the `torch` wheel that matches tch
# 0.26 (2.13). Only what the CPU path needs is unpacked: torch-sys links
# `-ltorch` and adds `-ltorch_cuda` when it finds libtorch_cuda.so, so the
# folder holds libtorch_cpu.so, libc10.so and libgomp, an empty libtorch.so
# linker script, and the two CUDA runtime libraries libtorch_cpu.so names
# as needed even on a machine without CUDA (from the small nvidia wheels
# torch pins). .cargo/config.toml points LIBTORCH/LIBTORCH_LIB here, and
# the crates' build scripts give the binaries an rpath to lib/.
TORCH_VERSION=2.13.0
torch_dir="$root/.local/libtorch"
if [ -n "$torch" ] && [ ! -f "$torch_dir/lib/libtorch_cpu.so" ]; then
  echo "setup: installing libtorch $TORCH_VERSION (CPU libraries) into $torch_dir" >&2
  wheels=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85"
  rm -rf "$torch_dir.partial"
  python3 - "$wheels" "$torch_dir.partial" "$TORCH_VERSION" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, out, version = sys.argv[1:]
lib = os.path.join(out, "lib")
os.makedirs(lib)
def unpack(pattern, wanted):
    [wheel] = glob.glob(os.path.join(wheels, pattern))
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith("/"):
                continue
            if name.startswith("torch/include/"):
                dest = os.path.join(out, name[len("torch/"):])
            elif os.path.basename(name) in wanted and "/lib/" in name:
                dest = os.path.join(lib, os.path.basename(name))
            else:
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
unpack(f"torch-{version}-*.whl", {"libtorch_cpu.so", "libc10.so", "libgomp.so.1"})
unpack("nvidia_cuda_runtime-*.whl", {"libcudart.so.13"})
unpack("nvidia_cuda_cupti-*.whl", {"libcupti.so.13"})
with open(os.path.join(lib, "libtorch.so"), "w") as f:
    f.write("/* empty: the CPU build links libtorch_cpu.so directly */\n")
with open(os.path.join(out, "build-version"), "w") as f:
    f.write(version + "\n")
PY
  mv "$torch_dir.partial" "$torch_dir"
  rm -rf "$wheels"
fi
if [ -n "$torch" ]; then
  echo "setup: libtorch at $torch_dir" >&2
fi

# ONNX Runtime on CUDA for builds with the `cuda` feature: the
# `onnxruntime-gpu` wheel's libraries and those of the CUDA 13 and cuDNN 9
# wheels its `cuda`/`cudnn` extras name, pinned to CUDA 13.0's releases
# (torch 2.13's, so a driver that runs one runs the other), in one flat
# folder. Each
# library gets the runpath $ORIGIN (patchelf), so the CUDA provider that
# libonnxruntime loads from its own folder finds cuBLAS, cuDNN, … beside it
# without LD_LIBRARY_PATH (Python's onnxruntime preloads them instead). The
# engine of a `cuda` build prefers this folder's libonnxruntime. Only the
# driver (libcuda.so.1) comes from the machine.
ort_gpu_dir="$root/.local/onnxruntime-gpu"
if [ -n "$cuda" ] && [ ! -f "$ort_gpu_dir/lib/libonnxruntime_providers_cuda.so" ]; then
  echo "setup: installing ONNX Runtime $ORT_VERSION (CUDA provider, CUDA 13, cuDNN 9) into $ort_gpu_dir" >&2
  command -v patchelf >/dev/null 2>&1 || apt_install patchelf
  wheels=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
    "onnxruntime-gpu==$ORT_VERSION" "nvidia-cuda-runtime==13.0.96" \
    "nvidia-cublas==13.1.0.3" "nvidia-curand==10.4.0.35" "nvidia-cufft==12.0.0.61" \
    "nvidia-cuda-nvrtc==13.0.88" "nvidia-cudnn-cu13==9.20.0.48"
  rm -rf "$ort_gpu_dir.partial"
  python3 - "$wheels" "$ort_gpu_dir.partial/lib" <<'PY'
import glob, os, re, shutil, sys, zipfile
wheels, lib = sys.argv[1:]
os.makedirs(lib)
for wheel in glob.glob(os.path.join(wheels, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            ours = name.startswith("onnxruntime/capi/lib") or re.match(r"nvidia/.*/lib/", name)
            if ours and re.search(r"\.so(\.|$)", base):
                with z.open(name) as src, open(os.path.join(lib, base), "wb") as dst:
                    shutil.copyfileobj(src, dst)
PY
  for so in "$ort_gpu_dir.partial"/lib/*.so*; do
    chmod 755 "$so"
    patchelf --set-rpath '$ORIGIN' "$so"
  done
  missing=$(ldd "$ort_gpu_dir.partial/lib/libonnxruntime_providers_cuda.so" | grep "not found" | grep -v "libcuda.so.1" || true)
  if [ -n "$missing" ]; then
    echo "setup: the CUDA provider still lacks:" >&2
    echo "$missing" >&2
    exit 1
  fi
  mv "$ort_gpu_dir.partial" "$ort_gpu_dir"
  rm -rf "$wheels"
fi
if [ -n "$cuda" ]; then
  echo "setup: ONNX Runtime CUDA provider at $ort_gpu_dir/lib" >&2
fi
