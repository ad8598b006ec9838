#!/usr/bin/env bash
# Leader elections under 1 MiB messages (prints figures; not a test).
#
# The local 3-node cluster, primary down so all mail queues; smtp-source sends MESSAGES
# (600) messages of 1 MiB over 20 sessions spread over the three nodes, ROUNDS (2) times.
# Prints per round the rate and the elections during the load (the rise of the highest Raft
# term, from /metrics), as elections per minute. Blocking storage work on the async threads
# delays heartbeats and shows up here as elections.
#
#   tests/bench/elections.sh [MESSAGES] [ROUNDS]
#
# MXRAFT_PREBUILT=1 with CARGO_TARGET_DIR pointing at other binaries measures those.
# Uses the documented local-cluster ports (stop a running local cluster first).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
messages=${1:-600}
rounds=${2:-2}
work=$(mktemp -d /tmp/mxraft-bench-elections.XXXXXX)
chmod 755 "$work"
export MXRAFT_LOCAL_DIR=$work/cluster
source "$root/tests/bench/lib.sh"

cleanup() {
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

[[ ${MXRAFT_PREBUILT:-} == 1 ]] || bench_prepare

term() { # the highest Raft term any node reports
    local k t max=0
    for k in 1 2 3; do
        t=$(curl -sf "http://127.0.0.1:910$k/metrics" | awk '$1 == "mxraft_raft_term" { print int($2) }')
        ((${t:-0} > max)) && max=$t
    done
    echo "$max"
}

for r in $(seq 1 "$rounds"); do
    rm -rf "$MXRAFT_LOCAL_DIR"/node[123]
    "$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
    sleep 6 # gauges are exported every 5 s
    before=$(term)
    t=$(run_load "$messages" 1048576 20 2525 2526 2527)
    sleep 6
    after=$(term)
    "$root/deploy/local/down.sh" >/dev/null
    awk -v m="$messages" -v t="$t" -v e=$((after - before)) -v r="$r" \
        'BEGIN { printf "round %d: %d x 1 MiB in %.1f s (%.1f msg/s), %d elections, %.2f per minute\n", r, m, t, m / t, e, e * 60 / t }'
done
