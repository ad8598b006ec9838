#!/usr/bin/env bash
# Acceptance benchmark (prints figures; not a test).
#
# Postfix's smtp-source sends 10 KiB messages to the local 3-node mxraft cluster, then, in the
# same run and under the same load, to a throwaway Postfix configured as a backup MX for
# example.test. Also measures the disk's own fsync rate, since every mxraft 250 waits for an
# fsync on two of three nodes and every Postfix 250 for an fsync of the queue file. Then the
# latency of single messages (p50/p90/p99, tests/bench/latency.py) and the peak RSS of both.
#
#   tests/bench/accept.sh [MESSAGES]        (default 3000 per run)
#
# Uses the documented local-cluster ports (stop a running local cluster first) and port 2600
# for Postfix. Postfix's default /etc/postfix/main.cf gets an alternate_config_directories
# line for the run, removed afterwards.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
messages=${1:-3000}
size=10240
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
mx_pids=()
for n in 1 2 3; do mx_pids+=("$(cat "$MXRAFT_LOCAL_DIR/node$n.pid")"); done
mx_rss=$(peak_rss_mib "${mx_pids[@]}")
mx_rss_node=$(for p in "${mx_pids[@]}"; do peak_rss_mib "$p"; done | sort -n | tail -n 1)
echo "peak RSS: $mx_rss MiB for 3 nodes, at most $mx_rss_node MiB per node"
"$root/deploy/local/down.sh" >/dev/null

echo "== postfix: one instance as backup MX for example.test"
pf_start "defer_transports = smtp relay"
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
pf_master=$(tr -d ' ' <"$pf/queue/pid/master.pid")
# The master and the daemons it runs (smtpd, cleanup, qmgr, ...), all its children.
pf_rss=$(peak_rss_mib "$pf_master" $(pgrep -P "$pf_master"))
echo "peak RSS: $pf_rss MiB for the master and its live daemons"
pf_cleanup

echo
echo "== summary (10 KiB messages, $(nproc) cores, disk $fsync_rate fsyncs/s)"
printf "%-34s %10s %10s\n" "" "20 sess." "1 sess."
printf "%-34s %10s %10s\n" "mxraft, 3 nodes (msg/s)" "$mx20_rate" "$mx1_rate"
printf "%-34s %10s %10s\n" "postfix, 1 node (msg/s)" "$pf20_rate" "$pf1_rate"
printf "%-34s %10s %10s\n" "ratio mxraft / postfix" \
    "$(awk -v a="$mx20_rate" -v b="$pf20_rate" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v a="$mx1_rate" -v b="$pf1_rate" 'BEGIN { printf "%.2f", a / b }')"
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
