#!/usr/bin/env bash
# Builds what the real-cluster test (tests/k8s/cluster.sh) runs, into a cache outside the clone
# that only the first run pays for:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy 1.34.4
#   from the Go module proxy (the wrapper module in tests/k8s/kube), CoreDNS, and the pause
#   binary every pod sandbox runs (from the Kubernetes sources, as a static C program).
#
#   tests/k8s/kube.sh            prints the directory holding the binaries
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kube_version=v1.34.4
coredns_version=v1.12.4
bin=$HOME/.cache/mxraft/kube/$kube_version/bin
say() { echo "kube: $*" >&2; }
mkdir -p "$bin"

missing=()
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    [[ -x $bin/$cmd ]] || missing+=("k8s.io/kubernetes/cmd/$cmd")
done
if ((${#missing[@]})); then
    say "building ${missing[*]##*/} $kube_version (once; about 8 minutes on 2 cores)"
    start=$SECONDS
    (cd "$here/kube" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bin/" "${missing[@]}")
    say "built in $((SECONDS - start)) s"
fi
if [[ ! -x $bin/coredns ]]; then
    say "building coredns $coredns_version"
    GOBIN=$bin CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' "github.com/coredns/coredns@$coredns_version"
fi
if [[ ! -x $bin/pause ]]; then
    src=$(go env GOMODCACHE)/k8s.io/kubernetes@$kube_version/build/pause/linux/pause.c
    [[ -f $src ]] || (cd "$here/kube" && go mod download k8s.io/kubernetes)
    cc -O2 -static -DVERSION="$kube_version" -o "$bin/pause" "$src"
fi
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    "$bin/$cmd" --version >/dev/null || { say "$bin/$cmd does not run"; exit 1; }
done
"$bin/coredns" -version >/dev/null || { say "$bin/coredns does not run"; exit 1; }
echo "$bin"
