#!/usr/bin/env bash
# The systemd unit deploy/systemd/mxraftd.service: systemd accepts it (systemd-analyze verify),
# its hardening keeps the exposure score low (systemd-analyze security, offline), and its
# ExecStartPre/ExecStart command lines, run as written with the binary and configuration
# paths swapped, accept every shipped multi-host configuration (deploy/examples).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
bin="$target/release/mxraftd"
unit="$root/deploy/systemd/mxraftd.service"
export MXRAFT_LOCAL_DIR=${MXRAFT_LOCAL_DIR:-$(mktemp -d)}
source "$root/tests/blackbox/lib.sh"

[[ -x $bin ]] || fail "$bin is not built (cargo build --release -p mxraftd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "systemd-analyze verify accepts the unit"
sed "s|/usr/local/bin/mxraftd|$bin|g" "$unit" >"$work/mxraftd.service"
systemd-analyze verify "$work/mxraftd.service" >"$work/verify.log" 2>&1 ||
    { cat "$work/verify.log"; fail "systemd-analyze verify refuses the unit"; }

step "its exposure score is at most 2.5 (systemd-analyze security --offline)"
if ! systemd-analyze security --offline=yes --threshold=25 "$work/mxraftd.service" \
    >"$work/security.log" 2>&1; then
    cat "$work/security.log"
    fail "the unit's exposure score is over 2.5"
fi
grep -E "Overall exposure level" "$work/security.log"

step "ExecStartPre and ExecStart, as written, accept each deploy/examples configuration"
pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
start=$(sed -n 's/^ExecStart=//p' "$unit")
[[ $pre == *"--check-config"* ]] || fail "ExecStartPre does not check the configuration: $pre"
[[ $start == "${pre% --check-config}" ]] || fail "ExecStart and ExecStartPre run different command lines"
checked=0
for config in "$root"/deploy/examples/*.toml; do
    cmd=${pre//\/usr\/local\/bin\/mxraftd/$bin}
    cmd=${cmd//\/etc\/mxraft\/mxraftd.toml/$config}
    out=$($cmd 2>&1) || fail "$cmd: $out"
    [[ $out == "$config: ok" ]] || fail "$cmd printed: $out"
    checked=$((checked + 1))
done
((checked >= 3)) || fail "only $checked example configurations found"

step "a configuration with an error stops the unit before it starts"
sed 's/^id = 1$/id = 0/' "$root/deploy/examples/three-nodes-node1.toml" >"$work/bad.toml"
cmd=${pre//\/usr\/local\/bin\/mxraftd/$bin}
cmd=${cmd//\/etc\/mxraft\/mxraftd.toml/$work/bad.toml}
if out=$($cmd 2>&1); then
    fail "an invalid node.id passed the check: $out"
fi
[[ $out == *"node.id must be a positive integer"* ]] || fail "unclear error: $out"

echo "PASS: systemd unit ($checked example configurations)"
