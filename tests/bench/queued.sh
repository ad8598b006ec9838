#!/usr/bin/env bash
# Memory with a full queue, and after it drained (prints figures; not a test).
#
# The local 3-node cluster with its primary (127.0.0.1:2500) down: MESSAGES (100000) messages
# of 10 KiB are queued over 20 sessions, then Postfix's smtp-sink starts as the primary and the
# queue drains. Prints each node's resident memory (VmRSS) when idle, with the queue full, and
# 10 s after the drain, and its peak (VmHWM); the leader is marked.
#
#   tests/bench/queued.sh [MESSAGES]
#
# Uses the local-cluster ports and 2500 for the sink; stop a running local cluster first.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
messages=${1:-100000}
ctl=$CARGO_TARGET_DIR/release/mxraftctl
work=$(mktemp -d /tmp/mxraft-queued.XXXXXX)
chmod 755 "$work"
export MXRAFT_LOCAL_DIR=$work/cluster
source "$root/tests/bench/lib.sh"
sink_pid=""
trap bench_cleanup EXIT

bench_prepare
"$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
pids=()
for n in 1 2 3; do pids+=("$(cat "$MXRAFT_LOCAL_DIR/node$n.pid")"); done
rss_mib() { awk '/^VmRSS:/ { printf "%.0f\n", $2 / 1024 }' "/proc/$1/status"; }
rss_all() { for p in "${pids[@]}"; do rss_mib "$p"; done | paste -sd/; }
# Where a node's memory is, from its gauges (MiB): heap allocated/resident, then RocksDB's
# memtables, block caches and table readers over both databases.
parts() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '
        /^mxraft_heap_bytes\{kind="allocated"/ { a = $2 }
        /^mxraft_heap_bytes\{kind="resident"/ { r = $2 }
        /^mxraft_rocksdb_memory_bytes.*kind="memtables"/ { m += $2 }
        /^mxraft_rocksdb_memory_bytes.*kind="block_cache"/ { c += $2 }
        /^mxraft_rocksdb_memory_bytes.*kind="table_readers"/ { t += $2 }
        END { printf "heap %.0f/%.0f, memtables %.0f, block cache %.0f, table readers %.0f\n",
              a / 1048576, r / 1048576, m / 1048576, c / 1048576, t / 1048576 }'
}
# The gauges are set every 5 s.
parts_all() { sleep 6; for port in 9101 9102 9103; do echo "  node $((port - 9100)): $(parts "$port")"; done; }
queued_on() { "$ctl" --endpoint "127.0.0.1:$1" queue stats --local -o json | jq .messages; }

idle=$(rss_all)
echo "idle: RSS $idle MiB"
run_load "$messages" 10240 20 2525 2526 2527 >/dev/null
got=$("$ctl" queue stats -o json | jq .messages)
[[ $got -eq $messages ]] || { echo "queued $got of $messages" >&2; exit 1; }
full=$(rss_all)
peak=$(for p in "${pids[@]}"; do peak_rss_mib "$p"; done | paste -sd/)
echo "$messages queued: RSS $full MiB, peak $peak MiB"
full_parts=$(parts_all)

wait_primary_down
start_sink
for port in 7001 7002 7003; do
    until [[ $(queued_on "$port") == 0 ]]; do sleep 0.2; done
done
sleep 10
drained=$(rss_all)
drained_parts=$(parts_all)
stop_sink
echo "drained, 10 s later: RSS $drained MiB"

leader=$("$ctl" cluster status -o json | jq -r '.leader_id')
echo
echo "== resident memory per node (MiB), node 1/2/3; leader: node $leader"
printf "%-28s %s\n" "idle" "$idle" "$messages messages queued" "$full" "peak" "$peak" \
    "10 s after the drain" "$drained"
echo
echo "== where it is (MiB), with the queue full"
echo "$full_parts"
echo "== and after the drain"
echo "$drained_parts"
