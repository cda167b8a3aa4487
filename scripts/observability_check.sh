#!/usr/bin/env bash
# deploy/observability checked by Prometheus' own tool: the scrape config
# (promtool check config), the alerting rules (check rules) and their unit
# tests (test rules), and every dashboard query parsed as PromQL (written
# into a rules file for `check rules`). promtool comes from Debian's
# `prometheus` package, unpacked into .local/prometheus (no service started).
# That every metric they name is one the roles export is tested by
# switchboard/tests/metrics.rs against the running roles.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.local/prometheus
promtool="$dir/usr/bin/promtool"
if [ ! -x "$promtool" ]; then
  echo "observability_check: unpacking Debian's prometheus package into $dir" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || {
    apt-get update -qq && (cd "$tmp" && apt-get download prometheus >/dev/null)
  }
  mkdir -p "$dir"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$dir"
  rm -rf "$tmp"
fi
obs=deploy/observability
"$promtool" check config "$obs/prometheus.yml"
"$promtool" check rules "$obs/alerts.yml"
(cd "$obs" && "$OLDPWD/$promtool" test rules alerts_test.yml)
queries=$(mktemp --suffix=.yml)
python3 - "$obs/dashboard.json" "$queries" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rules = []
for p in d["panels"]:
    for t in p["targets"]:
        expr = t["expr"].replace("$__rate_interval", "5m").replace("$endpoint", ".*")
        rules.append({"record": f"panel_{p['id']}_{t['refId']}", "expr": expr})
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"observability_check: {len(rules)} dashboard queries", file=sys.stderr)
PY
"$promtool" check rules "$queries"
rm -f "$queries"
echo "observability_check: all checks passed" >&2
