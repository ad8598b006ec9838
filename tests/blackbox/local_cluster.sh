#!/usr/bin/env bash
# Black-box test of deploy/local with real tools: swaks sends mail to all three nodes, the
# leader is killed with SIGKILL, the survivors must hold every acknowledged message, and the
# node restarted by up.sh must catch up. Uses the documented ports 2525-2527 and 7001-7003.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
ctl=$CARGO_TARGET_DIR/release/mxraftctl
dir=$(mktemp -d /tmp/mxraft-blackbox.XXXXXX)
export MXRAFT_LOCAL_DIR=$dir
sent=$dir/sent.txt

source "$root/tests/blackbox/lib.sh"

cleanup() {
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

require_free_ports 2525 2526 2527 7001 7002 7003 7101 7102 7103

step "deploy/local/up.sh starts three nodes"
local_up "$dir/up.log" "up.sh failed"

# Sends one message with swaks to port $1 (tag $2, to user$3@example.test) and records the
# queue id of the 250 reply.
send() {
    local port=$1 n=$2 out id
    out=$(swaks --server "127.0.0.1:$port" --from "sender$n@client.test" --to "user$3@example.test" \
        --header "Subject: black-box $n" --body "message $n" 2>&1) || fail "swaks to $port failed: $out"
    id=$(sed -n 's/.*<-  250 2\.0\.0 Ok: queued as \([0-9A-Z]*\).*/\1/p' <<<"$out")
    [[ -n $id ]] || fail "no queue id from port $port: $out"
    echo "$id" >>"$sent"
}

step "swaks sends five messages to each node"
for port in 2525 2526 2527; do
    for i in 1 2 3 4 5; do send "$port" "$port$i" "$(((port - 2524) * 10 + i))"; done
done
[[ $(sort -u "$sent" | wc -l) -eq 15 ]] || fail "expected 15 distinct queue ids"

ids() { "$ctl" --endpoint "127.0.0.1:$1" queue list -o json "${@:2}" | jq -r '.[].id' | sort; }

step "every node lists the same 15 messages"
for admin in 7001 7002 7003; do
    diff <(sort -u "$sent") <(ids "$admin") >/dev/null || fail "queue on $admin differs from what was acknowledged"
done

step "cluster status and queue stats have the documented JSON shape"
status=$("$ctl" cluster status -o json)
jq -e '.leader_id != null and (.members | length) == 3 and
       all(.members[]; has("id") and has("role") and has("smtp_addr") and has("admin_addr")) and
       ([.members[] | select(.role == "leader")] | length) == 1' <<<"$status" >/dev/null || fail "status JSON: $status"
stats=$("$ctl" queue stats -o json)
jq -e '.messages == 15 and .bytes > 0 and (.oldest_received_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T"))' <<<"$stats" >/dev/null || fail "stats JSON: $stats"
list=$("$ctl" queue list -o json --limit 1)
jq -e 'length == 1 and (.[0] | has("id") and has("sender") and has("size") and has("received_at") and
       (.recipients[0] | has("address") and has("state")))' <<<"$list" >/dev/null || fail "list JSON: $list"

leader=$(jq -r .leader_id <<<"$status")
step "kill -9 the leader (node $leader, pid $(<"$dir/node$leader.pid"))"
kill -9 "$(<"$dir/node$leader.pid")"
survivors=()
for n in 1 2 3; do [[ $n == "$leader" ]] || survivors+=("$n"); done

new_leader=""
for _ in $(seq 1 200); do
    s=$("$ctl" --endpoint "127.0.0.1:700${survivors[0]}" cluster status -o json 2>/dev/null || true)
    l=$(jq -r '.leader_id // empty' <<<"$s" 2>/dev/null || true)
    if [[ -n $l && $l != "$leader" ]]; then new_leader=$l; break; fi
    sleep 0.1
done
[[ -n $new_leader ]] || fail "no new leader after killing node $leader"
echo "new leader: node $new_leader"

step "the survivors hold every acknowledged message, identically"
for n in "${survivors[@]}"; do
    diff <(sort -u "$sent") <(ids "700$n") >/dev/null || fail "node $n lost acknowledged mail"
    diff <(sort -u "$sent") <(ids "700$n" --local) >/dev/null || fail "node $n's own copy differs"
done

step "new mail is accepted while node $leader is down"
for n in "${survivors[@]}"; do send "252$((4 + n))" "after$n" "$((900 + n))"; done

step "the new leader retries node $leader at its backoff's pace, not in a busy loop"
# Node $leader refuses connections at once; each retry logs a warning. Five seconds of them
# must stay a handful (a busy loop wrote tens of thousands of lines a second).
log=$dir/node$new_leader.log
before=$(wc -l <"$log")
sleep 5
added=$(($(wc -l <"$log") - before))
((added < 100)) || fail "node $new_leader logged $added lines in 5 s while node $leader was down: $(tail -n 2 "$log")"
echo "node $new_leader: $added log lines in 5 s"

step "up.sh restarts the killed node, which catches up"
local_up "$dir/up2.log" "second up.sh failed"
grep -q "started node $leader" "$dir/up2.log" || fail "up.sh did not restart node $leader"
caught_up=0
for _ in $(seq 1 300); do
    if diff <(sort -u "$sent") <(ids "700$leader" --local 2>/dev/null) >/dev/null 2>&1; then caught_up=1; break; fi
    sleep 0.1
done
((caught_up)) || fail "node $leader did not catch up"
for admin in 7001 7002 7003; do
    diff <(sort -u "$sent") <(ids "$admin") >/dev/null || fail "queue on $admin differs after the restart"
done

step "down.sh stops every node"
pids=$(cat "$dir"/node*.pid)
"$root/deploy/local/down.sh" >/dev/null
for pid in $pids; do
    ! kill -0 "$pid" 2>/dev/null || fail "pid $pid still running after down.sh"
done
echo "PASS: local cluster black-box test ($(wc -l <"$sent") messages)"
