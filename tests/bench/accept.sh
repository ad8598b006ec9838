#!/usr/bin/env bash
# Acceptance benchmark (prints figures; not a test).
#
# Postfix's smtp-source sends messages to the local 3-node mxraft cluster, then, in the same run
# and under the same load, to a throwaway Postfix configured as a backup MX for example.test:
# 10 KiB over 20 sessions and over 1, 1 MiB over 20 sessions (BIG1 messages, 200), 10 MiB over
# 5 sessions (BIG10 messages, 30). Also measures the disk's own fsync rate, since every mxraft 250 waits for an
# fsync on two of three nodes and every Postfix 250 for an fsync of the queue file. Then the
# latency of single messages (p50/p90/p99, tests/bench/latency.py) and the peak RSS of both.
#
#   [BIG1=N] [BIG10=N] tests/bench/accept.sh [MESSAGES]     (default 3000 10 KiB messages)
#
# Uses the documented local-cluster ports (stop a running local cluster first) and port 2600
# for Postfix. Postfix's default /etc/postfix/main.cf gets an alternate_config_directories
# line for the run, removed afterwards.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
messages=${1:-3000}
size=10240
big1=${BIG1:-200}
big10=${BIG10:-30}
latency_messages=500
ctl=$CARGO_TARGET_DIR/release/mxraftctl
work=$(mktemp -d /tmp/mxraft-bench.XXXXXX)
chmod 755 "$work"   # Postfix daemons run as the postfix user
export MXRAFT_LOCAL_DIR=$work/cluster
source "$root/tests/bench/lib.sh"

cleanup() {
    pf_cleanup
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

bench_prepare

echo "== disk: fsync rate (4 KiB O_DSYNC writes in $work)"
fsync_rate=$(disk_fsync_rate)
echo "fsyncs/s: $fsync_rate"

echo "== mxraft: 3-node local cluster"
"$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
queued() { "$ctl" queue stats -o json | jq .messages; }
run_load 200 "$size" 20 2525 2526 2527 >/dev/null   # warm-up
base=$(queued)
mx20=$(run_load "$messages" "$size" 20 2525 2526 2527)
got=$(( $(queued) - base ))
[[ $got -eq $messages ]] || { echo "mxraft queued $got of $messages messages" >&2; exit 1; }
mx20_rate=$(rate "$messages" "$mx20")
echo "20 sessions: $messages messages in ${mx20} s = $mx20_rate msg/s"
base=$(queued)
one=$((messages / 3))
mx1=$(run_load "$one" "$size" 1 2525)
got=$(( $(queued) - base ))
[[ $got -eq $one ]] || { echo "mxraft queued $got of $one messages" >&2; exit 1; }
mx1_rate=$(rate "$one" "$mx1")
echo " 1 session:  $one messages in ${mx1} s = $mx1_rate msg/s"
read -r mx_p50 mx_p90 mx_p99 mx_max < <(python3 "$root/tests/bench/latency.py" 127.0.0.1 2525 "$latency_messages" "$size")
echo "latency, 1 session (ms): p50 $mx_p50  p90 $mx_p90  p99 $mx_p99  max $mx_max"
base=$(queued)
t=$(run_load "$big1" 1048576 20 2525 2526 2527)
got=$(( $(queued) - base ))
[[ $got -eq $big1 ]] || { echo "mxraft queued $got of $big1 messages of 1 MiB" >&2; exit 1; }
mx_1m_rate=$(rate "$big1" "$t")
echo "1 MiB, 20 sessions: $big1 messages in $t s = $mx_1m_rate msg/s"
base=$(queued)
t=$(run_load "$big10" 10485760 5 2525 2526 2527)
got=$(( $(queued) - base ))
[[ $got -eq $big10 ]] || { echo "mxraft queued $got of $big10 messages of 10 MiB" >&2; exit 1; }
mx_10m_rate=$(rate10 "$big10" "$t")
echo "10 MiB, 5 sessions: $big10 messages in $t s = $mx_10m_rate msg/s"
mx_pids=()
for n in 1 2 3; do mx_pids+=("$(cat "$MXRAFT_LOCAL_DIR/node$n.pid")"); done
mx_rss=$(peak_rss_mib "${mx_pids[@]}")
mx_rss_node=$(for p in "${mx_pids[@]}"; do peak_rss_mib "$p"; done | sort -n | tail -n 1)
echo "peak RSS: $mx_rss MiB for 3 nodes, at most $mx_rss_node MiB per node"
"$root/deploy/local/down.sh" >/dev/null

echo "== postfix: one instance as backup MX for example.test"
pf_start "defer_transports = smtp relay
message_size_limit = 52428800"
run_load 200 "$size" 20 2600 >/dev/null   # warm-up
base=$(pf_queued)
pf20=$(run_load "$messages" "$size" 20 2600)
for _ in $(seq 1 100); do [[ $(( $(pf_queued) - base )) -ge $messages ]] && break; sleep 0.1; done
pf20_rate=$(rate "$messages" "$pf20")
echo "20 sessions: $messages messages in ${pf20} s = $pf20_rate msg/s (queued: $(( $(pf_queued) - base )))"
base=$(pf_queued)
pf1=$(run_load "$one" "$size" 1 2600)
pf1_rate=$(rate "$one" "$pf1")
echo " 1 session:  $one messages in ${pf1} s = $pf1_rate msg/s"
read -r pf_p50 pf_p90 pf_p99 pf_max < <(python3 "$root/tests/bench/latency.py" 127.0.0.1 2600 "$latency_messages" "$size")
echo "latency, 1 session (ms): p50 $pf_p50  p90 $pf_p90  p99 $pf_p99  max $pf_max"
base=$(pf_queued)
t=$(run_load "$big1" 1048576 20 2600)
pf_1m_rate=$(rate "$big1" "$t")
echo "1 MiB, 20 sessions: $big1 messages in $t s = $pf_1m_rate msg/s"
t=$(run_load "$big10" 10485760 5 2600)
pf_10m_rate=$(rate10 "$big10" "$t")
for _ in $(seq 1 100); do [[ $(( $(pf_queued) - base )) -ge $((big1 + big10)) ]] && break; sleep 0.1; done
echo "10 MiB, 5 sessions: $big10 messages in $t s = $pf_10m_rate msg/s (queued: $(( $(pf_queued) - base )) of $((big1 + big10)))"
pf_master=$(tr -d ' ' <"$pf/queue/pid/master.pid")
# The master and the daemons it runs (smtpd, cleanup, qmgr, ...), all its children.
pf_rss=$(peak_rss_mib "$pf_master" $(pgrep -P "$pf_master"))
echo "peak RSS: $pf_rss MiB for the master and its live daemons"
pf_cleanup

echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "== summary (messages per second; $(nproc) cores, disk $fsync_rate fsyncs/s)"
printf "%-26s %12s %12s %12s %12s\n" "" "10 KiB, 20" "10 KiB, 1" "1 MiB, 20" "10 MiB, 5"
printf "%-26s %12s %12s %12s %12s\n" "mxraft, 3 nodes" "$mx20_rate" "$mx1_rate" "$mx_1m_rate" "$mx_10m_rate"
printf "%-26s %12s %12s %12s %12s\n" "postfix, 1 node" "$pf20_rate" "$pf1_rate" "$pf_1m_rate" "$pf_10m_rate"
printf "%-26s %12s %12s %12s %12s\n" "ratio mxraft / postfix" "$(ratio "$mx20_rate" "$pf20_rate")" \
    "$(ratio "$mx1_rate" "$pf1_rate")" "$(ratio "$mx_1m_rate" "$pf_1m_rate")" "$(ratio "$mx_10m_rate" "$pf_10m_rate")"
echo
echo "latency of one message, MAIL to 250 after the dot, 1 session, $latency_messages messages (ms)"
printf "%-34s %8s %8s %8s %8s\n" "" p50 p90 p99 max
printf "%-34s %8s %8s %8s %8s\n" "mxraft, 3 nodes" "$mx_p50" "$mx_p90" "$mx_p99" "$mx_max"
printf "%-34s %8s %8s %8s %8s\n" "postfix, 1 node" "$pf_p50" "$pf_p90" "$pf_p99" "$pf_max"
echo
echo "peak RSS after the runs (MiB)"
printf "%-34s %10s\n" "mxraft, largest node" "$mx_rss_node"
printf "%-34s %10s\n" "mxraft, 3 nodes together" "$mx_rss"
printf "%-34s %10s\n" "postfix, master + live daemons" "$pf_rss"
