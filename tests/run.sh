#!/usr/bin/env bash
# Installs what is missing and runs the whole mxraft test suite:
#   formatting and lints, unit tests, openraft's storage suite, in-process cluster tests,
#   the black-box tests of deploy/local with swaks, smtp-source and smtp-sink, short runs of
#   the cargo-fuzz targets, the operator's commands, the alert rules and the dashboard, the
#   systemd unit and the image, three hosts in network namespaces,
#   the fault-injection harness (tests/chaos), the Helm chart's static tests, and the chart on
#   a real Kubernetes control plane.
# Builds in release mode into $CARGO_TARGET_DIR (default ~/.cache/mxraft/target), shared with
# deploy/local/up.sh, so RocksDB is compiled once.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
start=$SECONDS

section() { echo; echo "=== $* ($((SECONDS - start)) s)"; }

section "dependencies"
scripts/install-deps.sh --k8s

section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

section "cargo test (release)"
# The cluster tests start three nodes each; one test at a time keeps elections honest on
# small machines.
cargo test --release --locked --workspace -- --test-threads=1

section "cargo fuzz: command parser and DATA decoder, ${MXRAFT_FUZZ_SECONDS:-30} s each"
# A short run of each target on every test run keeps them building and catches regressions;
# run them longer by hand (docs/operations.md, "Fuzzing").
cargo fmt --manifest-path fuzz/Cargo.toml --check
(cd fuzz && CARGO_TARGET_DIR=${MXRAFT_FUZZ_TARGET_DIR:-$HOME/.cache/mxraft/fuzz-target}/clippy \
    cargo +nightly clippy --locked --all-targets -- -D warnings)
fuzz_log=$(mktemp)
for target in command data; do
    if ! (cd fuzz && CARGO_TARGET_DIR=${MXRAFT_FUZZ_TARGET_DIR:-$HOME/.cache/mxraft/fuzz-target} \
        cargo +nightly fuzz run "$target" -- -max_total_time="${MXRAFT_FUZZ_SECONDS:-30}") >"$fuzz_log" 2>&1; then
        tail -n 80 "$fuzz_log"
        echo "fuzz target $target failed" >&2
        exit 1
    fi
    echo "$target: $(grep -E '^Done' "$fuzz_log")"
done
rm -f "$fuzz_log"

section "black-box: deploy/local"
cargo build --release --locked -p mxraftd -p mxraftctl -p mxraft-chaosfs
tests/blackbox/local_cluster.sh

section "black-box: flush to the primary (smtp-sink)"
tests/blackbox/flush.sh

section "black-box: a node whose clock is 40 s behind (libfaketime): one delivery per message"
tests/blackbox/clock_skew.sh

section "black-box: the SMTP front door (relay, recipients, limits, TLS, hostile input)"
tests/blackbox/front_door.sh

section "the systemd unit (systemd-analyze verify and security, its command lines)"
tests/blackbox/systemd_unit.sh

section "the runtime image (umoci, run with runc: non-root, a one-node cluster takes mail)"
tests/blackbox/image.sh

section "black-box: the secure cluster (mTLS, admin roles, partitions, a wiped bootstrap node, a full disk)"
tests/blackbox/security.sh

section "black-box: the operator's commands (queue filters and bulk actions, shape, body, suspended destinations, leadership, events, DNS records and checks against dnsmasq)"
tests/blackbox/operations.sh

section "the alert rules and the dashboard (promtool check and test rules, every query, every metric)"
tests/monitoring/check.sh

section "three hosts in network namespaces: deploy/examples, the unit's command line, a host cut off and back"
tests/blackbox/multi_host.sh

section "fault injection: kills, pauses, partitions, power cuts, clock jumps, a full disk, a replaced node; the negative controls"
MXRAFT_PREBUILT=1 tests/chaos/run.sh

section "the Helm chart (helm lint, kubeconform, unit tests, rendered configs through mxraftd --check-config)"
tests/k8s/chart.sh

section "the chart on a real Kubernetes 1.34 control plane (its first run builds Kubernetes, ~9 min)"
tests/k8s/cluster.sh

section "all tests passed in $((SECONDS - start)) s"
