#!/usr/bin/env bash
# Installs what building, trying and testing mxraft needs on Debian, then checks that each
# capability works, failing with one line that names the package when one does not.
#
#   scripts/install-deps.sh          building: a C/C++ compiler, make (jemalloc), clang/libclang (RocksDB's
#                                    bindings), jq, openssl
#   scripts/install-deps.sh --try    also what the README's "Try it" uses: swaks with its TLS
#                                    modules (swaks --tls), Postfix's smtp-sink and smtp-source,
#                                    curl
#   scripts/install-deps.sh --test   also what tests/run.sh uses: dnsmasq, iproute2, python3,
#                                    nftables, libfaketime (clock skew), FUSE (the fault
#                                    harness's chaosfs), promtool (Prometheus, for the
#                                    alert rules and the dashboard), systemd-analyze (the
#                                    unit file), umoci and runc (the image), the nightly toolchain
#                                    and cargo-fuzz for the fuzz targets, grpcurl, helm and
#                                    kubeconform (built with Go into ~/.cache/mxraft/bin), the
#                                    Kubernetes 1.34 JSON schemas (from PyPI's
#                                    kubernetes-validate) and PyYAML for the chart's tests
#   scripts/install-deps.sh --k8s    also what the real-cluster test (tests/k8s/cluster.sh)
#                                    uses: containerd, the CNI plugins, etcd, conntrack (the
#                                    Kubernetes binaries are built by tests/k8s/kube.sh);
#                                    tests/run.sh installs this level
#
# Packages already present are left alone; nothing is started (Postfix is installed with the
# "No configuration" answer, for its tools only; services are kept from starting by a
# policy-rc.d for the length of the install). Needs root or sudo when something is missing.
set -euo pipefail

level=0
case "${1:-}" in
    "") ;;
    --try) level=1 ;;
    --test) level=2 ;;
    --k8s) level=3 ;;
    *) echo "install-deps: unknown option ${1}; use --try, --test or --k8s" >&2; exit 2 ;;
esac

say() { echo "install-deps: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found; install Rust 1.95 or newer (rustup) and retry"
    exit 1
fi

# One capability per line: the level that needs it, the Debian packages that provide it, and
# the check that proves it works. Checks run before installing (to find what is missing) and
# again after (to prove the install gave what the scripts use).
caps=(
    "0|gcc libc6-dev|command -v cc"
    "0|g++|command -v c++"
    "0|make|command -v make"
    "0|clang|command -v clang"
    "0|libclang-dev|compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' || compgen -G '/usr/lib/*/libclang*.so*'"
    "0|jq|command -v jq"
    "0|openssl|command -v openssl"
    "1|swaks|command -v swaks"
    "1|libnet-ssleay-perl libio-socket-ssl-perl|perl -MNet::SSLeay -MIO::Socket::SSL -e1"
    "1|postfix|command -v smtp-sink || test -x /usr/sbin/smtp-sink"
    "1|postfix|command -v smtp-source || test -x /usr/sbin/smtp-source"
    "1|curl|command -v curl"
    "2|dnsmasq|command -v dnsmasq || test -x /usr/sbin/dnsmasq"
    "2|iproute2|command -v ip || test -x /usr/sbin/ip || test -x /sbin/ip"
    "2|python3|command -v python3"
    "2|systemd|systemd-analyze --version && systemd-analyze security --help | grep -q -- --offline"
    "2|umoci|d=\$(mktemp -d) && umoci init --layout \$d/l && umoci new --image \$d/l:t; r=\$?; rm -rf \$d; exit \$r"
    "2|runc|runc --version && runc list"
    "2|binutils|command -v strip"
    "2|nftables|nft list tables"
    "2|fuse3|test -c /dev/fuse && grep -qw fuse /proc/filesystems"
    "2|prometheus|d=\$(mktemp -d) && printf 'groups: [{name: g, rules: [{alert: A, expr: up == 0}]}]\\n' >\$d/r.yml && promtool check rules \$d/r.yml; r=\$?; rm -rf \$d; exit \$r"
    "3|containerd|ctr --version && grep -q 'io.containerd.grpc.v1.cri' <<<\"\$(containerd config default)\""
    "3|containernetworking-plugins|for p in bridge host-local portmap loopback; do CNI_COMMAND=VERSION /usr/lib/cni/\$p | grep -q 1.0.0 || exit 1; done"
    "3|etcd-server|etcd --version"
    "3|conntrack|command -v conntrack || test -x /usr/sbin/conntrack"
    "2|util-linux|command -v nsenter && command -v unshare && command -v setpriv"
    "2|faketime|lib=\$(compgen -G '/usr/lib/*/faketime/libfaketime.so.1' | head -n 1) && [[ \$(FAKETIME=-1d FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD=\$lib date +%s) -lt \$((\$(date +%s) - 3600)) ]]"
)

check() { bash -c "$1" >/dev/null 2>&1; }

missing=()
for cap in "${caps[@]}"; do
    IFS='|' read -r need packages test <<<"$cap"
    ((need <= level)) || continue
    check "$test" && continue
    for p in $packages; do
        [[ " ${missing[*]} " == *" $p "* ]] || missing+=("$p")
    done
done

if ((${#missing[@]} > 0)); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { say "need root (or sudo) to install: ${missing[*]}"; exit 1; }
        sudo=(sudo)
    fi
    say "installing ${missing[*]}"
    if [[ " ${missing[*]} " == *" postfix "* ]]; then
        # Postfix comes only for its tools: answer "No configuration" and never start it.
        echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
    fi
    # Nothing installed here may start as a service (Prometheus would): without a policy that
    # says so already, one refuses every start for the length of the install.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        own_policy=1
    fi
    rc=0
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
        rc=$?
    ((own_policy == 0)) || "${sudo[@]}" rm -f "$policy"
    ((rc == 0)) || { say "apt-get failed (status $rc) installing ${missing[*]}"; exit 1; }
fi

failed=0
for cap in "${caps[@]}"; do
    IFS='|' read -r need packages test <<<"$cap"
    ((need <= level)) || continue
    if ! check "$test"; then
        say "still missing after the install: '$test' fails; install Debian's $packages"
        failed=1
    fi
done
((failed == 0)) || exit 1

if ((level >= 2)); then
    # The fuzz targets (fuzz/) build with a nightly compiler and cargo-fuzz.
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || { say "the fuzz targets need a nightly Rust toolchain, and rustup is not installed"; exit 1; }
        say "installing the nightly Rust toolchain"
        rustup toolchain install nightly --profile minimal
    fi
    rustup run nightly rustc --version >/dev/null 2>&1 || { say "the nightly Rust toolchain does not run: rustup toolchain install nightly"; exit 1; }
    if ! cargo fuzz --version >/dev/null 2>&1; then
        say "installing cargo-fuzz"
        cargo install cargo-fuzz --locked --version 0.13.2
    fi
    cargo fuzz --version >/dev/null 2>&1 || { say "cargo fuzz does not run: cargo install cargo-fuzz --locked --version 0.13.2"; exit 1; }
    # grpcurl, a gRPC client nobody here wrote, for the black-box tests of the cluster port.
    grpcurl=$HOME/.cache/mxraft/bin/grpcurl
    if ! "$grpcurl" -version >/dev/null 2>&1; then
        command -v go >/dev/null 2>&1 || { say "grpcurl is built with Go, which is not installed"; exit 1; }
        say "building grpcurl into $HOME/.cache/mxraft/bin"
        GOBIN=$HOME/.cache/mxraft/bin go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
    fi
    "$grpcurl" -version >/dev/null 2>&1 || { say "grpcurl does not run: GOBIN=$HOME/.cache/mxraft/bin go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"; exit 1; }
    # The chart's tools: helm and kubeconform, from the Go module proxy.
    # helm's default Kubernetes version (for `helm template` and `helm install --dry-run`) is
    # set at link time, as its own Makefile does: 1.34, the release the suite tests against.
    helm_ldflags="-s -w"
    for v in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        helm_ldflags+=" -X $v.k8sVersionMajor=1 -X $v.k8sVersionMinor=34"
    done
    for tool in "helm|helm.sh/helm/v3/cmd/helm@v3.22.0|version --short|$helm_ldflags" \
        "kubeconform|github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0|-v|-s -w"; do
        IFS='|' read -r name module probe ldflags <<<"$tool"
        # shellcheck disable=SC2086
        if ! "$HOME/.cache/mxraft/bin/$name" $probe >/dev/null 2>&1; then
            say "building $name into $HOME/.cache/mxraft/bin"
            GOBIN=$HOME/.cache/mxraft/bin go install -ldflags "$ldflags" "$module"
        fi
        # shellcheck disable=SC2086
        "$HOME/.cache/mxraft/bin/$name" $probe >/dev/null 2>&1 || { say "$name does not run: GOBIN=$HOME/.cache/mxraft/bin go install $module"; exit 1; }
    done
    # Offline Kubernetes schemas for kubeconform.
    schemas=$HOME/.cache/mxraft/k8s-schemas/v1.34.0
    if [[ ! -f $schemas/statefulset-apps-v1.json ]]; then
        say "preparing the Kubernetes 1.34 schemas (kubernetes-validate from PyPI)"
        wheels=$(mktemp -d)
        python3 -m pip download -q --no-deps kubernetes-validate==1.37.0 -d "$wheels"
        python3 "$(dirname "${BASH_SOURCE[0]}")/../tests/k8s/prepare_schemas.py" "$wheels"/kubernetes_validate-*.whl 1.34.0 "$schemas"
        rm -rf "$wheels"
    fi
    [[ -f $schemas/statefulset-apps-v1.json ]] || { say "no Kubernetes schemas in $schemas"; exit 1; }
    if ! python3 -c 'import yaml' >/dev/null 2>&1; then
        say "installing PyYAML"
        python3 -m pip install -q PyYAML==6.0.3
    fi
    python3 -c 'import yaml' >/dev/null 2>&1 || { say "PyYAML does not import: python3 -m pip install PyYAML"; exit 1; }
fi
exit 0
