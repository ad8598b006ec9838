#!/usr/bin/env bash
# Static tests of the Helm chart (deploy/helm/mxraft), run by tests/run.sh:
#   helm lint --strict with each values file in tests/k8s/values;
#   helm template | kubeconform -strict against the Kubernetes 1.34 schemas (offline, from
#   the kubernetes-validate package; scripts/install-deps.sh --test prepares them);
#   the chart's unit tests (test_chart.py): rendered objects, schema refusals, and every
#   rendered node configuration through `mxraftd --check-config`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$HOME/.cache/mxraft/bin
export HELM=$bin/helm
export MXRAFTD=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}/release/mxraftd
schemas=$HOME/.cache/mxraft/k8s-schemas/v1.34.0
chart=$root/deploy/helm/mxraft
for f in "$HELM" "$bin/kubeconform" "$MXRAFTD"; do
    [[ -x $f ]] || { echo "chart: $f is missing (scripts/install-deps.sh --test; cargo build --release)" >&2; exit 1; }
done
[[ -f $schemas/statefulset-apps-v1.json ]] || { echo "chart: no schemas in $schemas (scripts/install-deps.sh --test)" >&2; exit 1; }

for values in "$root"/tests/k8s/values/*.yaml; do
    name=$(basename "$values")
    "$HELM" lint --strict --kube-version 1.34.0 "$chart" -f "$values" >/dev/null
    # The CRD kinds (cert-manager, Prometheus operator) have no schema in Kubernetes itself.
    "$HELM" template mx "$chart" --kube-version 1.34.0 --namespace mail -f "$values" |
        "$bin/kubeconform" -strict -summary -kubernetes-version 1.34.0 \
            -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            -skip Certificate,Issuer,ServiceMonitor
    echo "chart: $name: lint and kubeconform passed"
done

python3 "$root/tests/k8s/test_chart.py"

# The schemas are really applied: a wrong StatefulSet must fail.
if printf 'apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replicas: "3", serviceName: x, selector: {}, template: {}}\n' |
    "$bin/kubeconform" -strict -kubernetes-version 1.34.0 -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" >/dev/null 2>&1; then
    echo "chart: kubeconform accepted a StatefulSet with a string replica count" >&2
    exit 1
fi
echo "chart: kubeconform refuses a wrong StatefulSet"
