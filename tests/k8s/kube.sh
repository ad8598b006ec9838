#!/usr/bin/env bash
# Builds what the real-cluster test (tests/k8s/cluster.sh) runs, into a cache outside the clone
# that only the first run pays for:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl 1.34.4
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

# The version the binaries report (to each other, kubectl and helm) is set at link time, as
# Kubernetes' own build does.
minor=${kube_version#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
version_of() { # what a binary says its version is
    if [[ $1 == kubectl ]]; then
        "$bin/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: /Kubernetes /p'
    else
        "$bin/$1" --version 2>/dev/null
    fi
}
missing=()
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [[ $(version_of "$cmd") == "Kubernetes $kube_version" ]] || missing+=("k8s.io/kubernetes/cmd/$cmd")
done
if ((${#missing[@]})); then
    say "building ${missing[*]##*/} $kube_version (once; about 8 minutes on 2 cores)"
    start=$SECONDS
    (cd "$here/kube" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$bin/" "${missing[@]}")
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
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [[ $(version_of "$cmd") == "Kubernetes $kube_version" ]] || { say "$bin/$cmd does not run or is not $kube_version"; exit 1; }
done
"$bin/coredns" -version >/dev/null || { say "$bin/coredns does not run"; exit 1; }
echo "$bin"
