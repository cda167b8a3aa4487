#!/usr/bin/env bash
# Prints the objects `kubectl kustomize deploy/k8s/overlays/OVERLAY` renders,
# as one JSON array: switchboard/tests/fleet.rs starts the roles from them.
# Usage: scripts/render_overlay.sh OVERLAY
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deploy_tools.sh >&2
"$kubectl" kustomize "deploy/k8s/overlays/$1" |
  PYTHONPATH="$py" python3 -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)'
