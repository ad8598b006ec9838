#!/usr/bin/env bash
# Checks the monitoring files shipped in deploy/: the Prometheus alert rules parse and pass
# their unit tests (promtool test rules), every query of the Grafana dashboard parses, and
# every metric the rules and the dashboard use is one mxraftd documents; every runbook entry
# an alert names exists in docs/operations.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
python3 tests/monitoring/check_files.py deploy/grafana/mxraft.json deploy/prometheus/alerts.yml \
    docs/operations.md "$tmp/dashboard-rules.yml"
# The dashboard's queries, as recording rules: promtool parses every one.
promtool check rules "$tmp/dashboard-rules.yml"
echo "PASS: monitoring files"
