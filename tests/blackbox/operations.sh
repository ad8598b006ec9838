#!/usr/bin/env bash
# Black-box test of the operator's commands against deploy/local, with swaks and smtp-sink:
#  - queue list filters (sender, recipient, domain, state, age, held) and paging with --after;
#  - queue hold/release/delete/bounce by filter: --dry-run counts, delete asks for --yes
#    without a terminal, the read token may count but not act, every node agrees after;
#  - queue body (to stdout and to a file) and queue shape;
#  - destinations suspend/resume/probe: nothing is delivered while suspended, though the
#    primary answers; everything once resumed;
#  - cluster status with lag, last contact and disk free; cluster transfer-leader;
#  - events watch through one node: every message's way from queued to delivered, the
#    administrator's actions, leader changes, and the refusals of all three nodes; the
#    --kind filter and its error; one log line per transaction and per delivery attempt,
#    found on the nodes by the queue id;
#  - dns records (table, zone lines, JSON, the read token) and dns check against real dnsmasq
#    servers: a good zone passes; a broken one fails with each problem named (null MX, the
#    primary not lowest, a node missing, unequal preferences, an address, a CNAME and a name
#    without addresses as MX hosts, a node name resolving elsewhere); name servers that
#    disagree; no MX at all.
# Uses the local-cluster ports (2525-2527, 7001-7003, 7101-7103) and 2500 (the primary).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
ctl=$CARGO_TARGET_DIR/release/mxraftctl
dir=$(mktemp -d /tmp/mxraft-ops.XXXXXX)
chmod 755 "$dir"
export MXRAFT_LOCAL_DIR=$dir/cluster
smtp_sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
sink_pid=""
watch_pid=""
dns_pids=()
stop_all() {
    [[ -n $watch_pid ]] && kill "$watch_pid" 2>/dev/null
    for pid in "${dns_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_local
}

source "$root/tests/blackbox/lib.sh"
trap stop_all EXIT

require_free_ports 2500 2525 2526 2527 7001 7002 7003 7101 7102 7103

# Sends one message: $1 port, $2 sender, $3 recipient, $4 subject; prints the queue id.
send() {
    local out id
    out=$(swaks --server "127.0.0.1:$1" --from "$2" --to "$3" --header "Subject: $4" --body "body of $4" 2>&1) ||
        fail "swaks to $1 failed: $out"
    id=$(sed -n 's/.*<-  250 2\.0\.0 Ok: queued as \([0-9A-Z]*\).*/\1/p' <<<"$out")
    [[ -n $id ]] || fail "no queue id: $out"
    echo "$id"
}
ids() { "$ctl" queue list -o json "$@" | jq -r '.[].id'; }
count() { ids "$@" | wc -l; }

step "start the local cluster; nothing listens on 127.0.0.1:2500"
local_up "$dir/up.log" "up.sh failed"

step "events watch through node 2 sees the refusals of every node"
"$ctl" --endpoint 127.0.0.1:7002 events watch -o json >"$dir/events.jsonl" 2>"$dir/events.err" &
watch_pid=$!
fail_logs+=("$dir/events.err")
# A relay attempt at each node until the watch has its refusal: then it is connected to all.
seen_refusals() { jq -r 'select(.kind == "refused") | .reporter' "$dir/events.jsonl" | sort -u | tr -d '\n'; }
for _ in $(seq 1 50); do
    [[ $(seen_refusals) == 123 ]] && break
    for port in 2525 2526 2527; do
        swaks --server "127.0.0.1:$port" --from a@client.test --to someone@elsewhere.test \
            --quit-after RCPT >/dev/null 2>&1 || true
    done
    sleep 0.2
done
[[ $(seen_refusals) == 123 ]] || fail "the watch did not see a refusal from every node: $(cat "$dir/events.jsonl")"
jq -e 'select(.kind == "refused") | .client == "127.0.0.1" and (.detail | startswith("relay: 554 5.7.1"))' \
    "$dir/events.jsonl" >/dev/null || fail "refusal events: $(cat "$dir/events.jsonl")"
out=$("$ctl" events watch --kind deliverd 2>&1) && fail "an unknown kind was accepted"
grep -q 'unknown event kind "deliverd"; known: queued' <<<"$out" || fail "unknown kind: $out"

step "queue 6 messages from a@client.test, 3 from spam.test and 1 from the null sender"
: >"$dir/all"
for i in 1 2 3 4 5 6; do send $((2525 + i % 3)) a@client.test "user$i@example.test" "ops $i" >>"$dir/all"; done
for i in 7 8 9; do send 2526 "x$i@spam.test" "user$i@example.test" "spam $i" >"$dir/spam$i"; done
cat "$dir"/spam[789] >"$dir/spam"
cat "$dir/spam" >>"$dir/all"
send 2527 '<>' user10@example.test "bounce report" >>"$dir/all"
first=$(head -n 1 "$dir/all")
[[ $(sort -u "$dir/all" | wc -l) -eq 10 ]] || fail "expected 10 queue ids"

step "list filters: sender, recipient, domain, state, age"
diff <(sort "$dir/spam") <(ids --sender @spam.test | sort) >/dev/null || fail "--sender @spam.test: $(ids --sender @spam.test)"
[[ $(count --sender '<>') -eq 1 ]] || fail "--sender '<>' should match the one null-sender message"
[[ $(ids --recipient user1@EXAMPLE.test) == "$first" ]] || fail "--recipient user1@example.test should match $first"
[[ $(count --domain example.test) -eq 10 ]] || fail "--domain example.test should match all 10"
[[ $(count --domain other.test) -eq 0 ]] || fail "--domain other.test should match none"
[[ $(count --older-than 1h) -eq 0 ]] || fail "nothing is older than an hour"
[[ $(count --state active) -eq 0 ]] || fail "nothing can be delivering while the primary is down"
out=$("$ctl" queue list --state frozen 2>&1) && fail "--state frozen accepted"
grep -q "invalid value 'frozen'" <<<"$out" || fail "unclear error for --state frozen: $out"
out=$("$ctl" queue list --sender 'bob@' 2>&1) && fail "--sender bob@ accepted"
grep -q 'not an address pattern' <<<"$out" || fail "unclear error for --sender bob@: $out"

step "paging: --limit 4 and --after give every message once, in order"
: >"$dir/paged"
after=()
for _ in 1 2 3 4; do
    page=$(ids --limit 4 "${after[@]}")
    [[ -n $page ]] || break
    echo "$page" >>"$dir/paged"
    after=(--after "$(tail -n 1 <<<"$page")")
done
diff <(ids) "$dir/paged" >/dev/null || fail "pages differ from the full listing"
grep -q -- "-- more may follow: add --after" <<<"$("$ctl" queue list --limit 4)" || fail "no paging hint in the table"

step "hold by filter: --dry-run counts, the read token may count but not act"
out=$("$ctl" queue hold --sender @spam.test --dry-run)
[[ $out == "3 message(s) would be held" ]] || fail "dry run: $out"
out=$("$ctl" --token-file "$MXRAFT_LOCAL_DIR/tls/read.token" queue hold --sender @spam.test --dry-run -o json)
[[ $(jq .matched <<<"$out") == 3 ]] || fail "read-token dry run: $out"
out=$("$ctl" --token-file "$MXRAFT_LOCAL_DIR/tls/read.token" queue hold --sender @spam.test 2>&1) && fail "the read token held mail"
grep -q PermissionDenied <<<"$out" || fail "read token: $out"
out=$("$ctl" queue hold 2>&1) && fail "hold without an id or filter accepted"
grep -q -- '--all' <<<"$out" || fail "hold without a target: $out"
out=$("$ctl" queue hold --sender @spam.test -o json)
[[ $(jq -c '[.matched, .changed]' <<<"$out") == "[3,3]" ]] || fail "hold: $out"
for port in 7001 7002 7003; do
    diff <(sort "$dir/spam") <(ids --held --local --endpoint "127.0.0.1:$port" | sort) >/dev/null ||
        fail "node $port does not hold the same 3 messages"
done
[[ $(count --state held) -eq 3 ]] || fail "--state held"

step "queue shape counts what waits per destination and age"
shape=$("$ctl" queue shape -o json)
jq -e '.bucket_minutes[0] == 5 and (.rows | length) == 1 and .rows[0].destination == "example.test"
       and .rows[0].total == 10 and .rows[0].counts[0] == 10' <<<"$shape" >/dev/null || fail "shape: $shape"
"$ctl" queue shape | grep -Eq '^example\.test +10 +10 ' || fail "shape table: $("$ctl" queue shape)"
[[ $("$ctl" queue shape --held -o json | jq '.rows[0].total') == 3 ]] || fail "shape --held"

step "queue body: to stdout and to a file, trace header first"
"$ctl" queue body "$first" >"$dir/body.out"
head -n 1 "$dir/body.out" | grep -q '^Received: from ' || fail "body does not start with the trace header: $(head -n 2 "$dir/body.out")"
grep -q '^Subject: ops 1' "$dir/body.out" || fail "body lacks the subject"
"$ctl" queue body "$first" --to "$dir/body.eml"
cmp "$dir/body.out" "$dir/body.eml" || fail "the file differs from stdout"
out=$("$ctl" queue body 00000000000000000000000000 2>&1) && fail "body of an unknown id"
grep -q NotFound <<<"$out" || fail "unknown id: $out"

step "delete by filter asks for --yes without a terminal; bounce and release act on the rest"
out=$("$ctl" queue delete --sender @spam.test </dev/null 2>&1) && fail "delete of 3 without --yes"
grep -q -- '--yes' <<<"$out" || fail "delete without --yes: $out"
[[ $(count) -eq 10 ]] || fail "a refused delete removed mail"
out=$("$ctl" queue delete --sender @spam.test --yes)
[[ $out == "3 message(s) matched, 3 deleted" ]] || fail "delete: $out"
[[ $(count) -eq 7 && $(count --sender @spam.test) -eq 0 ]] || fail "delete left the wrong queue"
# The null-sender message bounces without a DSN (nobody to send it to).
out=$("$ctl" queue bounce --sender '<>' -o json)
[[ $(jq .changed <<<"$out") == 1 && $(count) -eq 6 ]] || fail "bounce of the null-sender message: $out"
out=$("$ctl" queue release --all -o json)
[[ $(jq -c '[.matched, .changed]' <<<"$out") == "[6,0]" ]] || fail "release of nothing held: $out"

step "destinations probe says the primary is down, and exits non-zero"
out=$("$ctl" destinations probe example.test 2>&1) && fail "probe of a down primary succeeded: $out"
grep -q 'example.test: down' <<<"$out" || fail "probe: $out"

step "suspend example.test, start the primary: a probe finds it up, nothing is delivered"
out=$("$ctl" destinations suspend example.test)
[[ $out == "delivery to example.test suspended" ]] || fail "suspend: $out"
[[ $("$ctl" destinations suspend example.test) == "delivery to example.test was already suspended" ]] || fail "suspend twice"
for port in 7001 7002 7003; do
    "$ctl" --endpoint "127.0.0.1:$port" destinations list --local -o json |
        jq -e '.[] | select(.name == "example.test") | .suspended_since != null' >/dev/null ||
        fail "node $port does not show example.test suspended"
done
mkdir -p "$dir/sink" && chmod 777 "$dir/sink"
"$smtp_sink" -u nobody -d "$dir/sink/%M." 127.0.0.1:2500 64 &
sink_pid=$!
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/2500) 2>/dev/null && break; sleep 0.1; done
out=$("$ctl" destinations probe example.test) || fail "probe of a listening primary: $out"
grep -q 'example.test: up' <<<"$out" || fail "probe: $out"
"$ctl" queue flush >/dev/null
# The leader grants claims within a fraction of a second of mail being due; three seconds
# without any delivery, with the primary up and every message due, is the suspension working.
sleep 3
[[ -z $(ls "$dir/sink") ]] || fail "mail was delivered to a suspended destination"
[[ $(count) -eq 6 && $(count --state active) -eq 0 ]] || fail "suspended mail left the queue or is being delivered"

step "resume: everything arrives"
[[ $("$ctl" destinations resume example.test) == "delivery to example.test resumed" ]] || fail "resume"
wait_empty 30 7001 7002 7003
[[ $(find "$dir/sink" -type f | wc -l) -eq 6 ]] || fail "expected 6 deliveries, found $(find "$dir/sink" -type f | wc -l)"

step "cluster status: lag, last contact and disk free of every member"
status=$("$ctl" --endpoint 127.0.0.1:7002 cluster status -o json)
jq -e '(.members | length) == 3 and all(.members[]; .lag != null and .last_contact_ms != null
       and .data_free_bytes > 0 and .data_total_bytes >= .data_free_bytes)' <<<"$status" >/dev/null ||
    fail "status JSON: $status"
grep -q 'DISK FREE' <<<"$("$ctl" cluster status)" || fail "status table lacks DISK FREE"

step "cluster transfer-leader: to a named node, then to the most up-to-date one"
leader=$(jq -r .leader_id <<<"$status")
target=$((leader % 3 + 1))
out=$("$ctl" --endpoint "127.0.0.1:700$target" cluster transfer-leader "$target")
[[ $out == "leadership moved from node $leader to node $target" ]] || fail "transfer: $out"
for port in 7001 7002 7003; do
    [[ $("$ctl" --endpoint "127.0.0.1:$port" cluster status -o json | jq .leader_id) == "$target" ]] ||
        fail "node $port does not see node $target leading"
done
out=$("$ctl" cluster transfer-leader -o json)
next=$(jq .leader_id <<<"$out")
[[ $(jq .previous_leader_id <<<"$out") == "$target" && $next != "$target" ]] || fail "transfer without a target: $out"
out=$("$ctl" cluster transfer-leader 99 2>&1) && fail "transfer to a non-member"
grep -q 'not a voter' <<<"$out" || fail "transfer to 99: $out"
last=$(send 2525 a@client.test user1@example.test "after transfer")
wait_empty 30 7001 7002 7003

step "events: each message queued, claimed and delivered once; held, deleted, failed; leaders"
# The last delivery is told by node 2 once it applied the report; wait for it there.
for _ in $(seq 1 50); do
    jq -e --arg id "$last" 'select(.kind == "delivered" and .queue_id == $id)' "$dir/events.jsonl" >/dev/null && break
    sleep 0.1
done
kill "$watch_pid"
watch_pid=""
ev() { jq -r "$1" "$dir/events.jsonl"; }
delivered=$(sort -u "$dir/all" | grep -v -F -f "$dir/spam" | grep -v -F "$(tail -n 1 "$dir/all")")
echo "$last" >>"$dir/delivered-ids"
echo "$delivered" >>"$dir/delivered-ids"
# Each: queued first; attempts while the primary was down (claimed, deferred); delivered
# once, last, right after the claim it was made under.
for id in $(cat "$dir/delivered-ids"); do
    ev "select(.queue_id == \"$id\")" | jq -e -s '.[0].kind == "queued"
        and ([.[] | select(.kind == "delivered")] | length) == 1
        and .[-1].kind == "delivered" and .[-2].kind == "claimed"
        and .[-1].node == .[-2].node and .[-1].log_index > .[-2].log_index' >/dev/null ||
        fail "events of $id: $(ev "select(.queue_id == \"$id\") | .kind" | tr '\n' ' ')"
done
ev "select(.queue_id == \"$first\")" | jq -e -s '.[0].node != null and .[0].reporter == 2
    and (.[0].detail | startswith("from=<a@client.test> rcpts=1"))
    and .[-1].recipient == "user1@example.test" and .[-1].destination == "example.test"
    and (.[-1].detail | startswith("250"))' >/dev/null ||
    fail "events of $first: $(ev "select(.queue_id == \"$first\")")"
[[ $(ev 'select(.kind == "held") | .queue_id' | sort) == $(sort "$dir/spam") ]] || fail "held events"
[[ $(ev 'select(.kind == "deleted") | .queue_id' | sort) == $(sort "$dir/spam") ]] || fail "deleted events"
nullsender=$(tail -n 1 "$dir/all")
ev "select(.queue_id == \"$nullsender\")" | jq -e -s '.[0].kind == "queued" and .[-1].kind == "failed"
    and all(.[]; .kind != "delivered" and .kind != "bounced")' >/dev/null ||
    fail "the bounced null-sender message: $(ev "select(.queue_id == \"$nullsender\")")"
grep -qx "$target" <<<"$(ev 'select(.kind == "leader") | .node')" || fail "no leader event for node $target"
[[ $(ev 'select(.kind == "lagged")') == "" ]] || fail "the watch lagged"
# --kind filters on the node, --id here: one event, then --count ends the watch.
"$ctl" events watch --kind queued --count 1 -o json >"$dir/one.jsonl" &
one_pid=$!
for _ in $(seq 1 50); do
    send 2526 b@client.test user2@example.test "one more" >"$dir/one.id"
    sleep 0.2
    [[ -s $dir/one.jsonl ]] && break
done
wait "$one_pid" || fail "events watch --count 1 failed"
jq -e -s 'length == 1 and .[0].kind == "queued"' "$dir/one.jsonl" >/dev/null || fail "--kind queued --count 1: $(cat "$dir/one.jsonl")"

step "logs: one line per transaction and per delivery attempt, found by the queue id"
logs=("$MXRAFT_LOCAL_DIR"/node*.log)
first_lines=$(grep -h -F "queue_id=$first" "${logs[@]}")
grep -q ' queued .*from=a@client.test to=user1@example.test rcpts=1' <<<"$first_lines" ||
    fail "no transaction line for $first: $(grep -h -F "$first" "${logs[@]}")"
grep -q 'delivery attempt.*delivered=1 deferred=0 failed=0' <<<"$first_lines" ||
    fail "no delivery line for $first: $(grep -h -F "$first" "${logs[@]}")"

step "dns records: the primary at 10 and every node at 20, with their addresses"
"$ctl" dns records --zone | grep -v '^;' >"$dir/zone"
diff - "$dir/zone" <<'EOF' || fail "dns records --zone differs"
example.test.	IN	MX	10 mx.example.test.
example.test.	IN	MX	20 node1.mxraft.test.
example.test.	IN	MX	20 node2.mxraft.test.
example.test.	IN	MX	20 node3.mxraft.test.
node1.mxraft.test.	IN	A	127.0.0.1
node2.mxraft.test.	IN	A	127.0.0.1
node3.mxraft.test.	IN	A	127.0.0.1
EOF
out=$("$ctl" --token-file "$MXRAFT_LOCAL_DIR/tls/read.token" --endpoint 127.0.0.1:7003 dns records --domain EXAMPLE.test -o json)
jq -e '(.records | length) == 7 and .problems == [] and .records[0].role == "primary"
    and ([.records[] | select(.type == "MX" and .role == "node") | .preference] == [20, 20, 20])' <<<"$out" >/dev/null ||
    fail "dns records -o json: $out"
"$ctl" dns records | grep -Eq '^example\.test +MX +20 +node2\.mxraft\.test +node 2$' || fail "dns records table: $("$ctl" dns records)"
out=$("$ctl" dns records --domain other.test 2>&1) && fail "dns records of an unprotected domain succeeded"
grep -q 'other.test is not a protected domain of this cluster (it protects: example.test)' <<<"$out" || fail "unprotected domain: $out"

# Serves a zone with dnsmasq on a free loopback port, authoritative for example.test and
# mxraft.test: $1 a name for its log, $2 the SOA serial, the rest dnsmasq options. Sets
# dns_port.
serve_zone() {
    local name=$1 serial=$2 pid
    shift 2
    for _ in 1 2 3 4 5; do
        dns_port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
            --listen-address=127.0.0.1 --port="$dns_port" --pid-file= --user=root \
            --auth-server=ns.example.test,127.0.0.1 --auth-zone=example.test --auth-zone=mxraft.test \
            --auth-soa="$serial,hostmaster.example.test" "$@" >"$dir/dns-$name.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            if ss -lun | grep -q "127.0.0.1:$dns_port " && ss -ltn | grep -q "127.0.0.1:$dns_port "; then
                dns_pids+=("$pid")
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
    done
    fail "dnsmasq did not start: $(cat "$dir/dns-$name.log")"
}
addresses=(--host-record=mx.example.test,127.0.0.1 --host-record=node1.mxraft.test,127.0.0.1
    --host-record=node2.mxraft.test,127.0.0.1 --host-record=node3.mxraft.test,127.0.0.1)
check() { "$ctl" dns check example.test -o json "$@"; }
# Fails unless the check named $1 has a problem whose detail contains $2, in the JSON in $out.
has_problem() {
    jq -e --arg c "$1" --arg d "$2" 'any(.checks[]; .check == $c and .verdict == "problem" and (.detail | contains($d)))' <<<"$out" >/dev/null ||
        fail "no $1 problem with \"$2\": $out"
}

step "dns check: the zone dns records printed passes every check"
serve_zone good 2026120401 --mx-host=example.test,mx.example.test,10 --mx-host=example.test,node1.mxraft.test,20 \
    --mx-host=example.test,node2.mxraft.test,20 --mx-host=example.test,node3.mxraft.test,20 "${addresses[@]}"
good_port=$dns_port
out=$(check --nameserver "127.0.0.1:$good_port") || fail "dns check of the good zone failed: $out"
jq -e '.ok and .problems == 0 and .warnings == 0 and all(.checks[]; .verdict == "ok")
    and (.mx | length) == 4 and .servers[0].serial == 2026120401' <<<"$out" >/dev/null || fail "good zone: $out"
table=$("$ctl" dns check example.test --nameserver "127.0.0.1:$good_port") || fail "table check failed: $table"
grep -q '^ok: 0 problem(s), 0 warning(s)$' <<<"$table" || fail "dns check table: $table"
grep -Eq '^node addresses +ok +node 3 \(node3\.mxraft\.test\) resolves to 127\.0\.0\.1$' <<<"$table" || fail "dns check table: $table"

step "dns check: a broken zone fails, and names each problem"
serve_zone broken 2026120401 --dns-rr=example.test,15,000000 --mx-host=example.test,mx.example.test,10 \
    --mx-host=example.test,node1.mxraft.test,5 --mx-host=example.test,node3.mxraft.test,20 \
    --mx-host=example.test,127.0.0.9,20 --mx-host=example.test,gone.example.test,20 \
    --cname=node3.mxraft.test,mx.example.test --host-record=mx.example.test,127.0.0.1 \
    --host-record=node1.mxraft.test,127.0.0.2
out=$(check --nameserver "127.0.0.1:$dns_port") && fail "the broken zone passed: $out"
jq -e '.ok == false and .problems >= 8' <<<"$out" >/dev/null || fail "broken zone: $out"
has_problem "null mx" 'RFC 7505'
has_problem primary 'the primary mx.example.test at 10 is not the lowest preference: node1.mxraft.test is at 5'
has_problem backups 'node 2 (node2.mxraft.test) is not published: add MX 20 node2.mxraft.test'
has_problem backups 'different preferences (5, 20)'
has_problem "mx host" '127.0.0.9 is an address'
has_problem "mx host" 'node3.mxraft.test is a CNAME (to mx.example.test)'
has_problem "mx host" 'gone.example.test does not exist'
has_problem "node addresses" 'node 1 (node1.mxraft.test) resolves to 127.0.0.2, but is at 127.0.0.1'
"$ctl" dns check example.test --nameserver "127.0.0.1:$dns_port" >/dev/null 2>"$dir/dns.err" && fail "the table check passed"
grep -q 'example.test: .* problem(s) in its DNS setup' "$dir/dns.err" || fail "dns check error: $(cat "$dir/dns.err")"

step "dns check: name servers that disagree (a stale serial, a node missing), and no MX at all"
serve_zone stale 2026120300 --mx-host=example.test,mx.example.test,10 --mx-host=example.test,node1.mxraft.test,20 \
    --mx-host=example.test,node2.mxraft.test,20 "${addresses[@]}"
out=$(check --nameserver "127.0.0.1:$good_port" --nameserver "127.0.0.1:$dns_port") && fail "disagreeing servers passed: $out"
[[ $(jq '.problems' <<<"$out") == 2 ]] || fail "disagreeing servers: $out"
has_problem "name servers" "127.0.0.1:$good_port 2026120401, 127.0.0.1:$dns_port 2026120300"
has_problem "name servers" "127.0.0.1:$dns_port says 10 mx.example.test, 20 node1.mxraft.test, 20 node2.mxraft.test"
serve_zone nomx 1 --host-record=example.test,127.0.0.1 "${addresses[@]}"
out=$(check --nameserver "127.0.0.1:$dns_port") && fail "a domain without MX records passed: $out"
has_problem "mx records" 'no MX records'
out=$("$ctl" dns check other.test --nameserver "127.0.0.1:$good_port" 2>&1) && fail "dns check of an unprotected domain succeeded"
grep -q 'other.test is not a protected domain' <<<"$out" || fail "unprotected domain: $out"

echo "PASS: operations black-box test"
