#!/usr/bin/env bash
# mxraft (the local 3-node cluster) next to one Postfix backup MX for the same domain, in one
# run on one machine (prints figures; not a test). Writes docs/benchmarks.md (or OUT).
#
#   acceptance  10 KiB and 1 MiB messages over 1, 20 and 100 sessions, primary down (mail must
#               queue), smtp-source
#   latency     end of data to 250, one session, 10 KiB (tests/bench/latency.py ... dot)
#   drain       10,000 queued messages of 10 KiB, from the primary (smtp-sink) coming up to an
#               empty queue (Postfix: postqueue -f at that moment)
#   at rest     100,000 messages of 10 KiB queued: peak RSS per node, the queue's bytes on disk,
#               and a node restarted (SIGTERM, then started) until it is ready again (Postfix:
#               postfix stop/start until it listens)
#
#   tests/bench/compare.sh [OUT] [QUEUED]     (QUEUED defaults to 100000)
#
# Uses the local-cluster ports, 2500 for the sink and 2600 for Postfix; stop a running local
# cluster first. Postfix's default /etc/postfix/main.cf gets an alternate_config_directories
# line for the run, removed afterwards.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
out=${1:-$root/docs/benchmarks.md}
at_rest=${2:-100000}
drain_messages=10000
ctl=$CARGO_TARGET_DIR/release/mxraftctl
work=$(mktemp -d /tmp/mxraft-compare.XXXXXX)
chmod 755 "$work"   # Postfix daemons run as the postfix user
export MXRAFT_LOCAL_DIR=$work/cluster
source "$root/tests/bench/lib.sh"
sink_pid=""
start=$SECONDS

trap bench_cleanup EXIT

bench_prepare
declare -A fig

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mx_fresh() { # a new local cluster with an empty queue
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$MXRAFT_LOCAL_DIR"
    MXRAFT_PREBUILT=1 "$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
}
# Stops Postfix and forgets it, so that the next pf_start sets it up anew.
pf_forget() { pf_cleanup; rm -rf "$pf" "$main_cf_backup" "$work/main.cf.created"; }
mx_queued() { "$ctl" --endpoint "127.0.0.1:${1:-7001}" queue stats --local -o json | jq .messages; }
mx_pids() { for n in 1 2 3; do cat "$MXRAFT_LOCAL_DIR/node$n.pid"; done; }
pf_pids() { local m; m=$(tr -d ' ' <"$pf/queue/pid/master.pid"); echo "$m" $(pgrep -P "$m"); }
# How many messages of each size and session count.
count() { # size sessions
    if (($1 > 100000)); then case $2 in 1) echo 40 ;; 20) echo 200 ;; *) echo 300 ;; esac
    else case $2 in 1) echo 600 ;; *) echo 3000 ;; esac; fi
}
sizes=(10240 1048576)
sessions=(1 20 100)

echo "== disk: fsync rate (4 KiB O_DSYNC writes in $work)"
fsync_rate=$(disk_fsync_rate)

# --- acceptance and latency -------------------------------------------------------------------
accept_mx() {
    local size sess n t base got ports
    for size in "${sizes[@]}"; do
        for sess in "${sessions[@]}"; do
            n=$(count "$size" "$sess")
            base=$(mx_queued)
            # One session goes to one node; more are spread over the three.
            if ((sess == 1)); then ports=(2525); else ports=(2525 2526 2527); fi
            t=$(run_load "$n" "$size" "$sess" "${ports[@]}")
            got=$(($(mx_queued) - base))
            ((got == n)) || { echo "mxraft queued $got of $n" >&2; exit 1; }
            fig[mx_${size}_$sess]=$(rate "$n" "$t")
            echo "mxraft  $size B, $sess sessions: $n in $t s = ${fig[mx_${size}_$sess]} msg/s"
        done
    done
}
accept_pf() {
    local size sess n t base
    for size in "${sizes[@]}"; do
        for sess in "${sessions[@]}"; do
            n=$(count "$size" "$sess")
            base=$(pf_queued)
            t=$(run_load "$n" "$size" "$sess" 2600)
            for _ in $(seq 1 300); do (($(pf_queued) - base >= n)) && break; sleep 0.1; done
            fig[pf_${size}_$sess]=$(rate "$n" "$t")
            echo "postfix $size B, $sess sessions: $n in $t s = ${fig[pf_${size}_$sess]} msg/s"
        done
    done
}

echo "== mxraft: acceptance and latency"
mx_fresh
run_load 200 10240 20 2525 2526 2527 >/dev/null   # warm-up
accept_mx
read -r fig[mx_p50] _ fig[mx_p99] _ < <(python3 "$root/tests/bench/latency.py" 127.0.0.1 2525 500 10240 dot)
echo "mxraft latency, end of data to 250: p50 ${fig[mx_p50]} ms, p99 ${fig[mx_p99]} ms"

echo "== postfix: acceptance and latency"
pf_start "defer_transports = smtp relay"
run_load 200 10240 20 2600 >/dev/null
accept_pf
read -r fig[pf_p50] _ fig[pf_p99] _ < <(python3 "$root/tests/bench/latency.py" 127.0.0.1 2600 500 10240 dot)
echo "postfix latency, end of data to 250: p50 ${fig[pf_p50]} ms, p99 ${fig[pf_p99]} ms"
pf_forget

# --- drain ------------------------------------------------------------------------------------
echo "== mxraft: drain of $drain_messages messages"
mx_fresh
run_load "$drain_messages" 10240 20 2525 2526 2527 >/dev/null
wait_primary_down
t0=$(now)
start_sink
for port in 7001 7002 7003; do
    while (($(mx_queued "$port") != 0)); do sleep 0.05; done
done
fig[mx_drain]=$(since "$t0")
stop_sink
echo "mxraft: primary up -> every node's queue empty: ${fig[mx_drain]} s"

echo "== postfix: drain of $drain_messages messages"
pf_start "relay_transport = relay:[127.0.0.1]:2500"
run_load "$drain_messages" 10240 20 2600 >/dev/null
for _ in $(seq 1 600); do
    (($("$postqueue_bin" -c "$pf/etc" -j | jq -s '[.[] | select(.queue_name == "deferred")] | length') == drain_messages)) && break
    sleep 0.2
done
t0=$(now)
start_sink
"$postqueue_bin" -c "$pf/etc" -f
while (($(pf_queued) != 0)); do sleep 0.05; done
fig[pf_drain]=$(since "$t0")
stop_sink
pf_forget
echo "postfix: postqueue -f -> queue empty: ${fig[pf_drain]} s"

# --- at rest: memory, disk, restart -----------------------------------------------------------
echo "== mxraft: $at_rest messages queued"
mx_fresh
run_load "$at_rest" 10240 20 2525 2526 2527 >/dev/null
(($(mx_queued) == at_rest)) || { echo "mxraft queued $(mx_queued) of $at_rest" >&2; exit 1; }
mapfile -t pids < <(mx_pids)
fig[mx_rss]=$(for p in "${pids[@]}"; do peak_rss_mib "$p"; done | paste -sd/)
fig[mx_rss_max]=$(for p in "${pids[@]}"; do peak_rss_mib "$p"; done | sort -n | tail -n 1)
fig[mx_disk]=$(du -sm "$MXRAFT_LOCAL_DIR/node1" | cut -f1)
echo "mxraft: peak RSS per node ${fig[mx_rss]} MiB; node 1's data directory ${fig[mx_disk]} MiB"
kill -TERM "${pids[2]}"
while kill -0 "${pids[2]}" 2>/dev/null; do sleep 0.05; done
t0=$(now)
bin=$CARGO_TARGET_DIR/release
(cd "$MXRAFT_LOCAL_DIR" && exec nohup "$bin/mxraftd" --config "$root/deploy/local/node3.toml" \
    --data-dir "$MXRAFT_LOCAL_DIR/node3" >>"$MXRAFT_LOCAL_DIR/node3.log" 2>&1 </dev/null) &
echo $! >"$MXRAFT_LOCAL_DIR/node3.pid"
until curl -sf http://127.0.0.1:9103/readyz >/dev/null 2>&1; do sleep 0.05; done
fig[mx_restart]=$(since "$t0")
echo "mxraft: node 3 restarted with $at_rest messages: ready after ${fig[mx_restart]} s"
"$root/deploy/local/down.sh" >/dev/null

echo "== postfix: $at_rest messages queued"
pf_start "defer_transports = smtp relay"
run_load "$at_rest" 10240 20 2600 >/dev/null
for _ in $(seq 1 600); do (($(pf_queued) >= at_rest)) && break; sleep 0.2; done
# shellcheck disable=SC2046
fig[pf_rss]=$(peak_rss_mib $(pf_pids))
fig[pf_disk]=$(du -sm "$pf/queue" | cut -f1)
echo "postfix: peak RSS (master and live daemons) ${fig[pf_rss]} MiB; queue directory ${fig[pf_disk]} MiB"
"$postfix_bin" -c "$pf/etc" stop >/dev/null
t0=$(now)
"$postfix_bin" -c "$pf/etc" start >/dev/null
until (exec 3<>/dev/tcp/127.0.0.1/2600) 2>/dev/null; do sleep 0.05; done
fig[pf_restart]=$(since "$t0")
echo "postfix: restarted with $at_rest messages: listening after ${fig[pf_restart]} s"
pf_forget

# --- the report -------------------------------------------------------------------------------
{
    echo "# Benchmarks"
    echo
    echo "Written by \`tests/bench/compare.sh\` on $(date +%Y-%m-%d): $(nproc) cores, $(awk '/MemTotal/ { printf "%d", $2 / 1048576 }' /proc/meminfo) GiB,"
    echo "a disk doing $fsync_rate fsyncs/s, commit $(git -C "$root" rev-parse --short HEAD), in $(((SECONDS - start) / 60)) minutes."
    echo "mxraft is the local three-node cluster of \`deploy/local\` (mutual TLS, every \`250\` fsynced on"
    echo "two of three nodes, all three on this one machine); Postfix $(postconf -d mail_version 2>/dev/null | sed 's/.*= //')"
    echo "is one instance as backup MX for the same domain. Both run here side by side, in one run;"
    echo "the ratios are the figures to read. Messages come from Postfix's \`smtp-source\`."
    echo
    echo "## Acceptance, primary down (messages per second)"
    echo
    echo "| size | sessions | mxraft, 3 nodes | Postfix, 1 node | ratio |"
    echo "|---|---|---|---|---|"
    for size in "${sizes[@]}"; do
        for sess in "${sessions[@]}"; do
            label=$( ((size > 100000)) && echo "1 MiB" || echo "10 KiB")
            echo "| $label | $sess | ${fig[mx_${size}_$sess]} | ${fig[pf_${size}_$sess]} | $(ratio "${fig[mx_${size}_$sess]}" "${fig[pf_${size}_$sess]}")× |"
        done
    done
    echo
    echo "## Latency, end of data to \`250\`, one session, 10 KiB (ms)"
    echo
    echo "| | mxraft | Postfix | ratio |"
    echo "|---|---|---|---|"
    echo "| p50 | ${fig[mx_p50]} | ${fig[pf_p50]} | $(ratio "${fig[mx_p50]}" "${fig[pf_p50]}")× |"
    echo "| p99 | ${fig[mx_p99]} | ${fig[pf_p99]} | $(ratio "${fig[mx_p99]}" "${fig[pf_p99]}")× |"
    echo
    echo "## Drain of $drain_messages queued messages of 10 KiB"
    echo
    echo "From the primary (\`smtp-sink\`) coming up to an empty queue: for mxraft on every node, including"
    echo "the wait for the next probe (10 s by default); for Postfix after \`postqueue -f\` at that moment."
    echo
    echo "| | mxraft | Postfix | ratio Postfix / mxraft |"
    echo "|---|---|---|---|"
    echo "| seconds | ${fig[mx_drain]} | ${fig[pf_drain]} | $(ratio "${fig[pf_drain]}" "${fig[mx_drain]}")× |"
    echo
    echo "## $at_rest messages of 10 KiB queued"
    echo
    echo "| | mxraft | Postfix |"
    echo "|---|---|---|"
    echo "| peak RSS (MiB) | ${fig[mx_rss]} per node | ${fig[pf_rss]} (master and live daemons) |"
    echo "| queue on disk (MiB) | ${fig[mx_disk]} per node | ${fig[pf_disk]} |"
    echo "| restart until ready (s) | ${fig[mx_restart]} (one node; \`/readyz\`) | ${fig[pf_restart]} (listening) |"
} >"$out"
cat "$out"
echo "written: $out"
