#!/usr/bin/env bash
# Acceptance benchmark (prints figures; not a test).
#
# Postfix's smtp-source sends 10 KiB messages to the local 3-node mxraft cluster, then, in the
# same run and under the same load, to a throwaway Postfix configured as a backup MX for
# example.test. Also measures the disk's own fsync rate, since every mxraft 250 waits for an
# fsync on two of three nodes and every Postfix 250 for an fsync of the queue file.
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
ctl=$CARGO_TARGET_DIR/release/mxraftctl
work=$(mktemp -d /tmp/mxraft-bench.XXXXXX)
chmod 755 "$work"   # Postfix daemons run as the postfix user
export MXRAFT_LOCAL_DIR=$work/cluster
pf=$work/postfix
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
postfix_bin=$(command -v postfix || echo /usr/sbin/postfix)
postqueue_bin=$(command -v postqueue || echo /usr/sbin/postqueue)
main_cf=/etc/postfix/main.cf
main_cf_backup=$work/main.cf.orig

cleanup() {
    "$postfix_bin" -c "$pf/etc" stop >/dev/null 2>&1 || true
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    if [[ -f $main_cf_backup ]]; then cp "$main_cf_backup" "$main_cf"; elif [[ -f $work/main.cf.created ]]; then rm -f "$main_cf"; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$root/scripts/install-deps.sh" --test
(cd "$root" && cargo build --release --locked -p mxraftd -p mxraftctl) >/dev/null

now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }

# Runs smtp-source with $2 sessions in total against the ports in $3.. and prints the seconds.
# $1 = total messages.
run_load() {
    local total=$1 sessions=$2; shift 2
    local ports=("$@") n=${#ports[@]} i pids=() t0 t1
    t0=$(now)
    for i in "${!ports[@]}"; do
        local s=$((sessions / n + (i < sessions % n ? 1 : 0)))
        local m=$((total / n + (i < total % n ? 1 : 0)))
        ((s > 0 && m > 0)) || continue
        "$smtp_source" -c -l "$size" -m "$m" -s "$s" -f bench@client.test -t user1@example.test \
            "127.0.0.1:${ports[$i]}" >/dev/null &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

echo "== disk: fsync rate (4 KiB O_DSYNC writes in $work)"
dd_out=$(dd if=/dev/zero of="$work/fsync.probe" bs=4k count=2000 oflag=dsync 2>&1 | tail -n 1)
dd_secs=$(sed -E 's/.* copied, ([0-9.,]+) s.*/\1/' <<<"$dd_out" | tr , .)
fsync_rate=$(rate 2000 "$dd_secs")
rm -f "$work/fsync.probe"
echo "fsyncs/s: $fsync_rate"

echo "== mxraft: 3-node local cluster"
"$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
queued() { "$ctl" queue stats -o json | jq .messages; }
run_load 200 20 2525 2526 2527 >/dev/null   # warm-up
base=$(queued)
mx20=$(run_load "$messages" 20 2525 2526 2527)
got=$(( $(queued) - base ))
[[ $got -eq $messages ]] || { echo "mxraft queued $got of $messages messages" >&2; exit 1; }
mx20_rate=$(rate "$messages" "$mx20")
echo "20 sessions: $messages messages in ${mx20} s = $mx20_rate msg/s"
base=$(queued)
one=$((messages / 3))
mx1=$(run_load "$one" 1 2525)
got=$(( $(queued) - base ))
[[ $got -eq $one ]] || { echo "mxraft queued $got of $one messages" >&2; exit 1; }
mx1_rate=$(rate "$one" "$mx1")
echo " 1 session:  $one messages in ${mx1} s = $mx1_rate msg/s"
"$root/deploy/local/down.sh" >/dev/null

echo "== postfix: one instance as backup MX for example.test"
mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
chown postfix "$pf/data"
cat >"$pf/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
myhostname = backup.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 192.0.2.1/32
relay_domains = example.test
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
defer_transports = smtp relay
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 100
CF
sed -E -e 's/^smtp( +)inet( +[^ ]+ +[^ ]+) +y /smtp\1inet\2 n /' -e 's/^([a-z]+ +(unix|fifo|pass|inet) +[^ ]+ +[^ ]+) +y /\1 n /' \
    -e 's/^smtp +inet/127.0.0.1:2600 inet/' /etc/postfix/master.cf >"$pf/etc/master.cf"
if [[ -f $main_cf ]]; then cp "$main_cf" "$main_cf_backup"; else touch "$work/main.cf.created"; fi
echo "alternate_config_directories = $pf/etc" >>"$main_cf"
"$postfix_bin" -c "$pf/etc" check
"$postfix_bin" -c "$pf/etc" start >/dev/null || { echo "postfix did not start" >&2; exit 1; }
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/2600) 2>/dev/null && break; sleep 0.1; done
pf_queued() { "$postqueue_bin" -c "$pf/etc" -j 2>/dev/null | wc -l; }
run_load 200 20 2600 >/dev/null   # warm-up
base=$(pf_queued)
pf20=$(run_load "$messages" 20 2600)
for _ in $(seq 1 100); do [[ $(( $(pf_queued) - base )) -ge $messages ]] && break; sleep 0.1; done
pf20_rate=$(rate "$messages" "$pf20")
echo "20 sessions: $messages messages in ${pf20} s = $pf20_rate msg/s (queued: $(( $(pf_queued) - base )))"
base=$(pf_queued)
pf1=$(run_load "$one" 1 2600)
pf1_rate=$(rate "$one" "$pf1")
echo " 1 session:  $one messages in ${pf1} s = $pf1_rate msg/s"
"$postfix_bin" -c "$pf/etc" stop >/dev/null

echo
echo "== summary (10 KiB messages, $(nproc) cores, disk $fsync_rate fsyncs/s)"
printf "%-34s %10s %10s\n" "" "20 sess." "1 sess."
printf "%-34s %10s %10s\n" "mxraft, 3 nodes (msg/s)" "$mx20_rate" "$mx1_rate"
printf "%-34s %10s %10s\n" "postfix, 1 node (msg/s)" "$pf20_rate" "$pf1_rate"
printf "%-34s %10s %10s\n" "ratio mxraft / postfix" \
    "$(awk -v a="$mx20_rate" -v b="$pf20_rate" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v a="$mx1_rate" -v b="$pf1_rate" 'BEGIN { printf "%.2f", a / b }')"
