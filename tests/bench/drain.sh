#!/usr/bin/env bash
# Drain benchmark (prints figures; not a test).
#
# Queues MESSAGES (default 10000) 10 KiB messages while the primary (127.0.0.1:2500) is down,
# starts Postfix's smtp-sink there, and measures the time from the primary coming up to an
# empty queue: first for the local 3-node mxraft cluster (which notices the primary within its
# 10 s probe interval), then, in the same run, for a throwaway Postfix backup MX holding the
# same number of deferred messages, flushed with `postqueue -f` at the moment the sink starts.
#
#   tests/bench/drain.sh [MESSAGES]
#
# Uses the local-cluster ports, 2500 for the sink and 2600 for Postfix.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
messages=${1:-10000}
size=10240
ctl=$CARGO_TARGET_DIR/release/mxraftctl
work=$(mktemp -d /tmp/mxraft-drain.XXXXXX)
chmod 755 "$work"
export MXRAFT_LOCAL_DIR=$work/cluster
source "$root/tests/bench/lib.sh"
sink_pid=""

trap bench_cleanup EXIT

bench_prepare

echo "== mxraft: 3-node local cluster, $messages messages queued while the primary is down"
"$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
run_load "$messages" "$size" 20 2525 2526 2527 >/dev/null
queued() { "$ctl" --endpoint "127.0.0.1:$1" queue stats --local -o json | jq .messages; }
[[ $(queued 7001) -eq $messages ]] || { echo "mxraft queued $(queued 7001) of $messages" >&2; exit 1; }
wait_primary_down
t0=$(now)
start_sink
first=""
while :; do
    left=$(queued 7001)
    if [[ -z $first && $left -lt $messages ]]; then first=$(since "$t0"); fi
    [[ $left -eq 0 ]] && break
    sleep 0.05
done
mx_total=$(since "$t0")
for port in 7002 7003; do
    while [[ $(queued "$port") -ne 0 ]]; do sleep 0.05; done
done
mx_drain=$(awk -v a="$mx_total" -v b="$first" 'BEGIN { printf "%.3f", a - b }')
echo "primary up → first delivery: ${first} s (probe interval 10 s)"
echo "first delivery → queue empty: ${mx_drain} s = $(rate "$messages" "$mx_drain") msg/s"
echo "primary up → queue empty:     ${mx_total} s = $(rate "$messages" "$mx_total") msg/s"
stop_sink
"$root/deploy/local/down.sh" >/dev/null

echo "== postfix: one backup MX, $messages messages deferred while the primary is down"
pf_start "relay_transport = relay:[127.0.0.1]:2500"
run_load "$messages" "$size" 20 2600 >/dev/null
# Wait until every message has had its failed attempt and sits in the deferred queue.
for _ in $(seq 1 600); do
    [[ $("$postqueue_bin" -c "$pf/etc" -j | jq -s '[.[] | select(.queue_name == "deferred")] | length') -eq $messages ]] && break
    sleep 0.2
done
t0=$(now)
start_sink
"$postqueue_bin" -c "$pf/etc" -f
while [[ $(pf_queued) -ne 0 ]]; do sleep 0.05; done
pf_total=$(since "$t0")
echo "postqueue -f → queue empty:   ${pf_total} s = $(rate "$messages" "$pf_total") msg/s"
stop_sink
pf_cleanup

echo
echo "== summary ($messages messages of 10 KiB, $(nproc) cores)"
printf "%-44s %10s\n" "mxraft, 3 nodes, drain (msg/s)" "$(rate "$messages" "$mx_drain")"
printf "%-44s %10s\n" "mxraft, 3 nodes, incl. probe wait (msg/s)" "$(rate "$messages" "$mx_total")"
printf "%-44s %10s\n" "postfix, postqueue -f (msg/s)" "$(rate "$messages" "$pf_total")"
printf "%-44s %10s\n" "ratio mxraft drain / postfix" "$(awk -v a="$mx_drain" -v b="$pf_total" 'BEGIN { printf "%.2f", b / a }')"
