#!/usr/bin/env bash
# Large messages at once against a node with little memory (prints figures; not a test).
#
# The local 3-node cluster, node 1 in a memory cgroup capped at CAP_MIB (1024) MiB. SESSIONS
# (200) sessions each send one SIZE_MIB (20) MiB message to node 1 at once, without SIZE=.
# Run twice, on fresh clusters: with node 1's smtp.max_message_memory at BUDGET_MIB (128) and
# at the default (1 GiB, as much as the cap). Prints per run the replies (accepted, deferred,
# refused, sessions that got none), whether node 1 survived, and its peak memory (the cgroup's
# high-water mark). With the budget every message gets a 250 or a 4xx and the node lives.
#
#   tests/bench/memory.sh [SESSIONS] [SIZE_MIB] [CAP_MIB] [BUDGET_MIB]
#
# Needs root (cgroup v1 memory controller). Uses the documented local-cluster ports.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
sessions=${1:-200}
size_mib=${2:-20}
cap_mib=${3:-1024}
budget_mib=${4:-128}
work=$(mktemp -d /tmp/mxraft-bench-memory.XXXXXX)
chmod 755 "$work"
export MXRAFT_LOCAL_DIR=$work/cluster
cg=/sys/fs/cgroup/memory/mxraft-bench-$$
source "$root/tests/bench/lib.sh"

cleanup() {
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    if [[ -d $cg ]]; then
        while read -r p; do echo "$p" >/sys/fs/cgroup/memory/cgroup.procs 2>/dev/null || true; done <"$cg/cgroup.procs"
        rmdir "$cg" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

[[ -d /sys/fs/cgroup/memory ]] || { echo "memory.sh needs the cgroup v1 memory controller" >&2; exit 1; }
bench_prepare

# One run: $1 is node 1's max_message_memory in bytes, or "default".
measure() {
    local budget=$1 configs=$work/configs pid counts alive peak
    rm -rf "$MXRAFT_LOCAL_DIR" "$configs"
    mkdir -p "$configs"
    cp "$root"/deploy/local/node[123].toml "$configs/"
    if [[ $budget != default ]]; then
        sed -i "s/^\[smtp\]$/[smtp]\nmax_message_memory = $budget/" "$configs/node1.toml"
    fi
    # All sessions come from 127.0.0.1.
    sed -i "s/^\[smtp\]$/[smtp]\nmax_sessions_per_client = $((sessions + 10))/" "$configs/node1.toml"
    MXRAFT_LOCAL_CONFIGS=$configs "$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
    pid=$(<"$MXRAFT_LOCAL_DIR/node1.pid")
    mkdir -p "$cg"
    echo $((cap_mib * 1024 * 1024)) >"$cg/memory.limit_in_bytes"
    echo 0 >"$cg/memory.max_usage_in_bytes"
    echo "$pid" >"$cg/cgroup.procs"
    counts=$(python3 "$root/tests/bench/bigmail.py" 127.0.0.1 2525 "$sessions" $((size_mib * 1024 * 1024)))
    peak=$(awk '{ printf "%.0f", $1 / 1048576 }' "$cg/memory.max_usage_in_bytes")
    if kill -0 "$pid" 2>/dev/null; then alive=yes; else alive=no; fi
    alive="$alive oom_kills=$(awk '/^oom_kill /{ print $2 }' "$cg/memory.oom_control")"
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    echo "$pid" >/sys/fs/cgroup/memory/cgroup.procs 2>/dev/null || true
    rmdir "$cg" 2>/dev/null || true
    echo "$counts alive=$alive peak_mib=$peak"
}

echo "$sessions sessions x $size_mib MiB at once to node 1, capped at $cap_mib MiB"
echo "budget ${budget_mib} MiB:   $(measure $((budget_mib * 1024 * 1024)))"
echo "budget default (1 GiB): $(measure default)"
