#!/usr/bin/env bash
# Black-box test of the flush to a recovered primary, with Postfix's smtp-sink as the primary:
#  1. mail queued while nothing listens on 127.0.0.1:2500 arrives exactly once after smtp-sink
#     starts, within the probe interval plus the drain time, and every node's queue is empty;
#  2. kill -9 of a node holding delivery claims in the middle of a large flush: every queued
#     message still arrives, and the duplicates are no more than the messages that node held
#     under live claims at the kill.
#  3. a primary answering 4xx: the recipient is retried (here after `queue flush`); a primary
#     answering 5xx: the sender gets a DSN at its own route (a second smtp-sink), the null
#     sender gets none.
# Uses the local-cluster ports (2525-2527, 7001-7003, 7101-7103), 2500 and 2501.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
ctl=$CARGO_TARGET_DIR/release/mxraftctl
dir=$(mktemp -d /tmp/mxraft-flush.XXXXXX)
chmod 755 "$dir"
export MXRAFT_LOCAL_DIR=$dir/cluster
smtp_sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
sink_pid=""

source "$root/tests/blackbox/lib.sh"
trap stop_local EXIT

require_free_ports 2500 2501 2525 2526 2527 7001 7002 7003 7101 7102 7103

start_sink() { # $1 = dump directory, then smtp-sink options
    mkdir -p "$1"
    chmod 777 "$1"
    "$smtp_sink" -u nobody -d "$1/%M." "${@:2}" 127.0.0.1:2500 256 &
    sink_pid=$!
}
stop_sink() { kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; sink_pid=""; }
wait_down() {
    for _ in $(seq 1 300); do
        "$ctl" destinations list -o json | jq -e '.[] | select(.name == "example.test" and .state == "down")' >/dev/null && return 0
        sleep 0.1
    done
    fail "example.test never marked down"
}

step "start the local cluster; nothing listens on 127.0.0.1:2500"
local_up "$dir/up.log" "up.sh failed"

step "queue 30 messages with swaks while the primary is down"
: >"$dir/acked"
for i in $(seq 1 30); do
    port=$((2525 + i % 3))
    out=$(swaks --server "127.0.0.1:$port" --from "s$i@client.test" --to "user$i@example.test" --body "flush $i" 2>&1) ||
        fail "swaks failed: $out"
    sed -n 's/.*<-  250 2\.0\.0 Ok: queued as \([0-9A-Z]*\).*/\1/p' <<<"$out" >>"$dir/acked"
done
[[ $(sort -u "$dir/acked" | wc -l) -eq 30 ]] || fail "expected 30 acknowledged messages"
wait_down

step "start smtp-sink: everything arrives exactly once, promptly"
t0=$SECONDS
start_sink "$dir/sink1"
wait_empty 60 7001 7002 7003
elapsed=$((SECONDS - t0))
((elapsed <= 10 + 20)) || fail "flush took $elapsed s (probe interval 10 s)"
diff <(sort "$dir/acked") <(dumped_ids "$dir/sink1") >/dev/null || {
    diff <(sort "$dir/acked") <(dumped_ids "$dir/sink1") | head >&2
    fail "the delivered set differs from the acknowledged set"
}
echo "30 messages delivered exactly once in ${elapsed} s"
stop_sink

step "a primary answering 4xx: the recipient stays pending and is retried"
start_sink "$dir/sink-4xx" -r RCPT
out=$(swaks --server 127.0.0.1:2526 --from soft@client.test --to user7@example.test --body soft 2>&1) || fail "swaks: $out"
soft_id=$(sed -n 's/.*<-  250 2\.0\.0 Ok: queued as \([0-9A-Z]*\).*/\1/p' <<<"$out")
"$ctl" queue flush --domain example.test >/dev/null
for _ in $(seq 1 300); do
    "$ctl" queue show "$soft_id" -o json 2>/dev/null |
        jq -e '.recipients[0] | .state == "pending" and .attempts >= 1 and (.reply | startswith("450"))' >/dev/null && break
    sleep 0.1
done
"$ctl" queue show "$soft_id" -o json | jq -e '.recipients[0].attempts >= 1' >/dev/null || fail "no 4xx attempt recorded"
stop_sink
start_sink "$dir/sink-retry"
"$ctl" queue flush "$soft_id" >/dev/null
wait_empty 60 7001 7002 7003
[[ $(dumped_ids "$dir/sink-retry") == "$soft_id" ]] || fail "the retried message did not arrive once"
stop_sink

step "a primary answering 5xx: a DSN to the sender's route, none for the null sender"
start_sink "$dir/sink-5xx" -f RCPT -B "550 5.1.1 No such user"
mkdir -p "$dir/dsn" && chmod 777 "$dir/dsn"
"$smtp_sink" -u nobody -d "$dir/dsn/%M." 127.0.0.1:2501 16 &
dsn_pid=$!
swaks --server 127.0.0.1:2525 --from hard@client.test --to user8@example.test \
    --header "Subject: will bounce" --body hard >/dev/null 2>&1 || fail "swaks failed"
swaks --server 127.0.0.1:2527 --from '<>' --to user9@example.test --body nullsender >/dev/null 2>&1 || fail "swaks failed"
"$ctl" queue flush --domain example.test >/dev/null
wait_empty 60 7001 7002 7003
kill "$dsn_pid" 2>/dev/null || true
wait "$dsn_pid" 2>/dev/null || true
stop_sink
dsn_files=("$dir"/dsn/*)
[[ ${#dsn_files[@]} -eq 1 && -f ${dsn_files[0]} ]] || fail "expected exactly one DSN, found ${#dsn_files[@]}"
grep -q '^X-Rcpt-Args: <hard@client.test>' "${dsn_files[0]}" || fail "the DSN is not addressed to the sender"
grep -q '^X-Mail-Args: <>' "${dsn_files[0]}" || fail "the DSN does not have the null sender"
grep -q 'Content-Type: multipart/report; report-type=delivery-status' "${dsn_files[0]}" || fail "not an RFC 3464 DSN"
grep -q '^Final-Recipient: rfc822; user8@example.test' "${dsn_files[0]}" || fail "DSN without the failed recipient"
grep -q '^Status: 5.1.1' "${dsn_files[0]}" || fail "DSN without the primary's status"
grep -q '^Subject: will bounce' "${dsn_files[0]}" || fail "DSN without the original headers"
echo "one DSN to hard@client.test; none for the null sender"

step "queue 2000 messages while the primary is down again"
n=2000
for port in 2525 2526 2527; do
    "$smtp_source" -l 2048 -m $((n / 4)) -s 5 -f bulk@client.test -t user1@example.test "127.0.0.1:$port" >/dev/null &
done
"$smtp_source" -l 2048 -m $((n - 3 * (n / 4))) -s 5 -f bulk@client.test -t user1@example.test 127.0.0.1:2525 >/dev/null
wait
"$ctl" queue list -o json | jq -r '.[].id' | sort >"$dir/queued"
[[ $(wc -l <"$dir/queued") -eq $n ]] || fail "expected $n queued messages, found $(wc -l <"$dir/queued")"
wait_down

step "start smtp-sink, then kill -9 a node holding claims in the middle of the flush"
start_sink "$dir/sink2"
victim=""
for _ in $(seq 1 400); do
    done_count=$(find "$dir/sink2" -type f | wc -l)
    if ((done_count >= n / 10)); then
        victim=$("$ctl" queue list -o json | jq -r '[.[] | select(.claim_node != null) | .claim_node] | group_by(.) | max_by(length) | .[0] // empty')
        [[ -n $victim ]] && break
    fi
    sleep 0.05
done
[[ -n $victim ]] || fail "no node held claims during the flush"
kill -9 "$(<"$MXRAFT_LOCAL_DIR/node$victim.pid")"
survivors=()
for k in 1 2 3; do [[ $k == "$victim" ]] || survivors+=("700$k"); done
# Everything the victim may have delivered without reporting is under its live claims now.
in_flight=$("$ctl" --endpoint "127.0.0.1:${survivors[0]}" queue list --local -o json |
    jq --argjson v "$victim" '[.[] | select(.claim_node == $v)] | length')
echo "killed node $victim after $done_count deliveries; it held $in_flight messages under claims"

step "the survivors finish the flush after the claims expire"
wait_empty 120 "${survivors[@]}"
local_up "$dir/up2.log" "restart failed"
wait_empty 60 7001 7002 7003

total=$(dumped_ids "$dir/sink2" | wc -l)
unique=$(dumped_ids "$dir/sink2" | sort -u | wc -l)
missing=$(comm -23 "$dir/queued" <(dumped_ids "$dir/sink2" | sort -u) | wc -l)
duplicates=$((total - unique))
echo "delivered $total, unique $unique, missing $missing, duplicates $duplicates (bound $in_flight)"
((missing == 0)) || fail "$missing acknowledged messages never arrived"
((duplicates <= in_flight)) || fail "$duplicates duplicates exceed the $in_flight messages in flight at the kill"
stop_sink
echo "PASS: flush black-box test"
