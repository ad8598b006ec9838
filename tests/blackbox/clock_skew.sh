#!/usr/bin/env bash
# Black-box test of one flush per message with a node whose wall clock is wrong:
#  node 3 of the local cluster runs with its clock 40 s behind (libfaketime; its monotonic
#  clock untouched), 200 messages are queued while the primary is down, then flushed to a slow
#  smtp-sink (1 s before each DATA reply): every message arrives exactly once, and the leader
#  refused node 3's proposals for its clock (mxraft_clock_skew_refusals_total).
# Uses the local-cluster ports (2525-2527, 7001-7003, 7101-7103, 9101-9103) and 2500.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
bin=$CARGO_TARGET_DIR/release
ctl=$bin/mxraftctl
dir=$(mktemp -d /tmp/mxraft-skew.XXXXXX)
chmod 755 "$dir"
export MXRAFT_LOCAL_DIR=$dir/cluster
smtp_sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
faketime_lib=$(compgen -G '/usr/lib/*/faketime/libfaketime.so.1' | head -n 1 || true)
sink_pid=""

source "$root/tests/blackbox/lib.sh"
trap stop_local EXIT

[[ -n $faketime_lib ]] || fail "libfaketime is missing (scripts/install-deps.sh --test installs it)"
require_free_ports 2500 2525 2526 2527 7001 7002 7003 7101 7102 7103

metric() { # $1 = node, $2 = metric name: its value, 0 when absent
    curl -sf "http://127.0.0.1:910$1/metrics" | awk -v m="$2" '$1 == m { v = $2 } END { print v + 0 }'
}

step "start the local cluster; nothing listens on 127.0.0.1:2500"
local_up "$dir/up.log" "up.sh failed"

step "restart node 3 with its wall clock 40 s behind"
pid=$(<"$MXRAFT_LOCAL_DIR/node3.pid")
kill "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "node 3 did not stop"
(cd "$MXRAFT_LOCAL_DIR" && FAKETIME="-40s" FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD=$faketime_lib \
    exec nohup "$bin/mxraftd" --config "$root/deploy/local/node3.toml" --data-dir "$MXRAFT_LOCAL_DIR/node3" \
    >>"$MXRAFT_LOCAL_DIR/node3.log" 2>&1 </dev/null) &
echo $! >"$MXRAFT_LOCAL_DIR/node3.pid"
for _ in $(seq 1 300); do
    "$ctl" --endpoint 127.0.0.1:7003 cluster status -o json 2>/dev/null | jq -e '.leader_id > 0' >/dev/null && break
    sleep 0.1
done
"$ctl" --endpoint 127.0.0.1:7003 cluster status -o json | jq -e '.leader_id > 0' >/dev/null || fail "node 3 did not rejoin"

step "queue 200 messages through nodes 1 and 2 while the primary is down"
n=200
"$smtp_source" -l 2048 -m $((n / 2)) -s 5 -f bulk@client.test -t user1@example.test 127.0.0.1:2525 >/dev/null &
source_pid=$!
"$smtp_source" -l 2048 -m $((n / 2)) -s 5 -f bulk@client.test -t user1@example.test 127.0.0.1:2526 >/dev/null
wait "$source_pid"
[[ $(queued 7001) -eq $n ]] || fail "expected $n queued messages, found $(queued 7001)"

step "flush to a slow smtp-sink: every message exactly once"
mkdir -p "$dir/sink" && chmod 777 "$dir/sink"
"$smtp_sink" -u nobody -w 1 -d "$dir/sink/%M." 127.0.0.1:2500 256 &
sink_pid=$!
"$ctl" queue flush --domain example.test >/dev/null
wait_empty 300 7001 7002 7003
kill "$sink_pid" 2>/dev/null || true
wait "$sink_pid" 2>/dev/null || true
sink_pid=""
ids=$(dumped_ids "$dir/sink")
total=$(wc -l <<<"$ids")
unique=$(sort -u <<<"$ids" | wc -l)
echo "delivered $total copies of $unique messages"
[[ $unique -eq $n ]] || fail "expected $n messages at the primary, found $unique"
[[ $total -eq $n ]] || fail "$((total - n)) duplicate deliveries"

step "the leader refused node 3's proposals for its clock"
refused=0
for k in 1 2 3; do refused=$((refused + $(metric "$k" mxraft_clock_skew_refusals_total))); done
((refused > 0)) || fail "no proposal was refused for clock skew"
echo "$refused proposals of node 3 refused for its clock; $n messages delivered once"
echo "PASS"
