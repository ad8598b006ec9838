#!/usr/bin/env bash
# Black-box test of the SMTP front door (DESIGN §5) with real clients: swaks for whole
# transactions, tests/blackbox/rawsmtp.py for byte sequences swaks cannot send, mxraftctl to
# see what was queued and to manage recipients, curl for the metrics.
#
# Part 1 runs against deploy/local (documented ports 2525-2527, 7001-7003, 9101-9103) with a
# TLS certificate made here. Part 2 runs a single-node cluster on ports chosen by the kernel,
# with a small quota, size limit and timeouts, for the rows that need other settings.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
bin=$CARGO_TARGET_DIR/release
ctl=$bin/mxraftctl
raw=(python3 "$root/tests/blackbox/rawsmtp.py")
dir=$(mktemp -d /tmp/mxraft-front-door.XXXXXX)
export MXRAFT_LOCAL_DIR=$dir
solo_pid=""

source "$root/tests/blackbox/lib.sh"
fail_logs=("$dir/solo/solo.log")

cleanup() {
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    [[ -n $solo_pid ]] && kill "$solo_pid" 2>/dev/null && wait "$solo_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

require_free_ports 2525 2526 2527 7001 7002 7003 7101 7102 7103 9101 9102 9103

# A test certificate, made before up.sh (which keeps a certificate it finds).
make_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
        -addext "subjectAltName=IP:127.0.0.1" -keyout "$2/key.pem.new" -out "$2/cert.pem.new" 2>/dev/null
    mv "$2/key.pem.new" "$2/key.pem"
    mv "$2/cert.pem.new" "$2/cert.pem"
}
mkdir -p "$dir/tls" "$dir/ca"
make_cert front-door.test "$dir/tls"
cp "$dir/tls/cert.pem" "$dir/ca/first.pem"

step "deploy/local/up.sh starts three nodes"
local_up "$dir/up.log" "up.sh failed"

# The reply to RCPT TO:<$2> on port $1 (sender $3, default a@client.test). swaks exits
# non-zero on a refusal: the reply is what is checked.
rcpt_reply() {
    { swaks --server "127.0.0.1:$1" --from "${3-a@client.test}" --to "$2" --quit-after RCPT 2>&1 || true; } |
        sed -n '/ -> RCPT TO:/{n;s/^<[-*~]* *//p}' | tail -n 1
}
expect_rcpt() {
    local got
    got=$(rcpt_reply "$1" "$2" "${4-a@client.test}")
    [[ $got == "$3"* ]] || fail "RCPT TO:<$2> on port $1: expected '$3', got '$got'"
}
# The reply at the end of the data: swaks on port $1 with the remaining arguments.
data_reply() {
    local port=$1
    shift
    { swaks --server "127.0.0.1:$port" -n "$@" 2>&1 || true; } |
        awk '/^<[-~]  354 /{f=1; next} f && /^<[-*~]/{sub(/^<[-*~]+ +/, ""); print; exit}'
}
# How many queued messages have envelope sender $1.
queued_from() {
    "$ctl" queue list -o json | jq --arg s "$1" '[.[] | select(.sender == $s)] | length'
}
# Polls (up to 10 s) until RCPT TO:<$2> on port $1 is answered with $3.
wait_rcpt() {
    local got
    for _ in $(seq 1 100); do
        got=$(rcpt_reply "$1" "$2")
        [[ $got == "$3"* ]] && return 0
        sleep 0.1
    done
    fail "RCPT TO:<$2> on port $1: expected '$3' within 10 s, got '$got'"
}

###############################################################################################
step "relay attempts in every form are refused on every node"
relay_forms=(
    'user@other.test'
    'user1@example.test.other.test'
    '@relay.test:user1@example.test'
    'user1%other.test@example.test'
    'other.test!user1@example.test'
    '"user1@other.test"@example.test'
    'user1@example.test@other.test'
    'user1@[127.0.0.1]'
)
for port in 2525 2526 2527; do
    for to in "${relay_forms[@]}"; do
        expect_rcpt "$port" "$to" "554 5.7.1"
    done
done

step "protected domain: any case, trailing dot, null sender"
expect_rcpt 2525 'USER1@EXAMPLE.TEST' "250 2.1.5"
expect_rcpt 2526 'user1@Example.Test.' "250 2.1.5"
expect_rcpt 2527 'postmaster@example.test' "250 2.1.5" ""

step "known and unknown recipients on every node (list mode)"
for port in 2525 2526 2527; do
    expect_rcpt "$port" user1@example.test "250 2.1.5"
    expect_rcpt "$port" user1000@example.test "250 2.1.5"
    expect_rcpt "$port" user1001@example.test "550 5.1.1"
    expect_rcpt "$port" nobody@example.test "550 5.1.1"
done

step "mxraftctl recipients add on node 2 is enforced by every node"
"$ctl" --endpoint 127.0.0.1:7002 recipients add newcomer@example.test >/dev/null
for port in 2525 2526 2527; do wait_rcpt "$port" newcomer@example.test "250 2.1.5"; done
step "mxraftctl recipients remove on node 3 is enforced by every node"
"$ctl" --endpoint 127.0.0.1:7003 recipients remove newcomer@example.test >/dev/null
for port in 2525 2526 2527; do wait_rcpt "$port" newcomer@example.test "550 5.1.1"; done

step "mxraftctl recipients import: a bad line changes nothing; --replace with the same table changes nothing"
printf 'extra@example.test\nnot-an-address\n' >"$dir/bad-recipients.txt"
if out=$("$ctl" recipients import "$dir/bad-recipients.txt" 2>&1); then
    fail "import of a file with a bad line succeeded: $out"
fi
grep -q 'bad-recipients.txt:2:' <<<"$out" || fail "the import error does not name the line: $out"
expect_rcpt 2525 extra@example.test "550 5.1.1"
{ echo "# the local cluster's table"; echo "Postmaster@Example.Test.  OK"; seq -f "user%g@example.test" 1 1000; } >"$dir/same-recipients.txt"
out=$("$ctl" recipients import --replace "$dir/same-recipients.txt")
[[ $out == "1001 entries in the file: 0 added, 0 removed" ]] || fail "re-import of the same table: $out"

step "more than 1000 recipients: 452 4.5.3 for the 1001st, the first 1000 are queued"
many=$(printf 'user%d@example.test,' $(seq 1 1000))postmaster@example.test
out=$(swaks --server 127.0.0.1:2526 --from many@client.test --to "$many" --h-To "undisclosed-recipients:;" 2>&1)
grep -q '^<\*\* 452 4\.5\.3' <<<"$out" || fail "no 452 4.5.3 for the 1001st recipient"
grep -q '^<-  250 2\.0\.0 Ok: queued as' <<<"$out" || fail "the message with 1000 recipients was not queued"
n=$("$ctl" queue list -o json | jq '[.[] | select(.sender == "many@client.test") | .recipients | length] | .[0]')
[[ $n == 1000 ]] || fail "expected 1000 queued recipients, got $n"

step "message size: SIZE= over 50 MiB at MAIL, and 51 MiB of data, get 552 5.3.4"
"${raw[@]}" mail-size 127.0.0.1 2525 52428801 || fail "SIZE= at MAIL"
head -c $((51 * 1024 * 1024)) /dev/zero | tr '\0' 'a' | fold -w 76 >"$dir/big.txt"
got=$(data_reply 2527 --from big@client.test --to user1@example.test --body @"$dir/big.txt")
rm -f "$dir/big.txt"
[[ $got == "552 5.3.4"* ]] || fail "51 MiB message: got '$got'"
[[ $(queued_from big@client.test) == 0 ]] || fail "an over-size message was queued"

step "bare LF, bare CR, NUL and over-long lines in DATA are refused; nothing is queued"
printf 'Subject: bare LF\r\n\r\nline one\nline two\r\n.' >"$dir/bare-lf.eml"
printf 'Subject: bare CR\r\n\r\nline one\rline two\r\n.' >"$dir/bare-cr.eml"
printf 'Subject: NUL\r\n\r\nline \x00 one\r\n.' >"$dir/nul.eml"
{ printf 'Subject: long\r\n\r\n'; head -c 1200 /dev/zero | tr '\0' 'x'; printf '\r\n.'; } >"$dir/long.eml"
for f in bare-lf:550\ 5.5.2 bare-cr:550\ 5.5.2 nul:550\ 5.6.0 long:500\ 5.5.2; do
    name=${f%%:*} want=${f#*:}
    got=$(data_reply 2525 --from "$name@client.test" --to user1@example.test -ndf --data @"$dir/$name.eml")
    [[ $got == "$want"* ]] || fail "$name: expected '$want', got '$got'"
    [[ $(queued_from "$name@client.test") == 0 ]] || fail "$name: message queued"
done

step "a Received: count over 100 is refused as a loop (554 5.4.6)"
{ for i in $(seq 1 101); do printf 'Received: from hop%d.test by hop%d.test; Thu, 26 Nov 2026 10:00:00 +0000\r\n' "$i" "$i"; done
  printf 'Subject: loop\r\n\r\nround and round\r\n.'; } >"$dir/loop.eml"
got=$(data_reply 2526 --from loop@client.test --to user1@example.test -ndf --data @"$dir/loop.eml")
[[ $got == "554 5.4.6"* ]] || fail "101 Received: fields: got '$got'"

step "SMTP smuggling: each end-of-data look-alike followed by a second transaction queues nothing"
sequences=('\n.\n' '\r.\r' '\r.\n' '\n.\r' '\n.\r\n' '\r\n.\n' '\r.\r\n' '\r\n.\r' '\r\n\x00.\r\n')
i=0
for seq in "${sequences[@]}"; do
    i=$((i + 1))
    port=$((2525 + i % 3))
    printf "Subject: smuggle $i\r\n\r\nfirst part$seq""MAIL FROM:<evil$i@client.test>\r\nRCPT TO:<user2@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond part\r\n." \
        >"$dir/smuggle$i.eml"
    got=$(data_reply "$port" --from "smuggler$i@client.test" --to user1@example.test -ndf --data @"$dir/smuggle$i.eml")
    [[ $got == 5* ]] || fail "smuggling sequence $seq: expected a 5xx refusal, got '$got'"
    for s in "smuggler$i@client.test" "evil$i@client.test"; do
        [[ $(queued_from "$s") == 0 ]] || fail "smuggling sequence $seq: a message from $s was queued"
    done
done
step "the same transaction with a clean body is queued whole (the harness itself is sound)"
printf 'Subject: clean\r\n\r\nfirst part\r\nsecond line\r\n.' >"$dir/clean.eml"
got=$(data_reply 2525 --from clean@client.test --to user1@example.test -ndf --data @"$dir/clean.eml")
[[ $got == "250 2.0.0 Ok: queued as"* ]] || fail "clean message: got '$got'"
[[ $(queued_from clean@client.test) == 1 ]] || fail "clean message not listed"
body=$("$ctl" queue show --body "${got##* }")
grep -q '^second line' <<<"$body" || fail "the clean message's body is not whole: $body"

step "DATA with the message in the same write (before 354): 554 5.5.0 and disconnect"
"${raw[@]}" pipelined-data 127.0.0.1 2526 || fail "pipelined DATA"
[[ $(queued_from pipe@client.test) == 0 ]] || fail "the early message was queued"

step "command line over 512 octets: 500 5.5.2"
"${raw[@]}" long-command 127.0.0.1 2527 || fail "long command"

step "STARTTLS with swaks: the test certificate verifies and the message is queued"
out=$(swaks --server 127.0.0.1:2525 --from tls@client.test --to user3@example.test \
    --tls --tls-verify --tls-ca-path "$dir/ca/first.pem" 2>&1) || fail "swaks --tls: $out"
grep -q 'TLS started' <<<"$out" || fail "TLS not started: $out"
grep -q 'CN=front-door.test' <<<"$out" || fail "not the test certificate: $out"
grep -q '^<~  250 2\.0\.0 Ok: queued as' <<<"$out" || fail "not queued over TLS: $out"

step "STARTTLS injection: commands in the same write as STARTTLS are discarded"
"${raw[@]}" starttls-injection 127.0.0.1 2526 "$dir/ca/first.pem" || fail "STARTTLS injection"
[[ $(queued_from inject@client.test) == 0 ]] || fail "injected transaction queued"

step "SIGHUP reloads a replaced certificate"
make_cert reloaded.test "$dir/tls"
cp "$dir/tls/cert.pem" "$dir/ca/second.pem"
kill -HUP "$(<"$dir/node1.pid")"
reloaded=0
for _ in $(seq 1 100); do
    if swaks --server 127.0.0.1:2525 --from tls@client.test --to user3@example.test --quit-after EHLO \
        --tls --tls-verify --tls-ca-path "$dir/ca/second.pem" 2>&1 | grep -q 'CN=reloaded.test'; then
        reloaded=1
        break
    fi
    sleep 0.1
done
((reloaded)) || fail "node 1 still presents the old certificate after SIGHUP"

step "rejections are logged with client, rule and reply, and counted in the metrics"
grep -q 'rule="relay".*reply=554 5.7.1' "$dir/node1.log" || fail "no relay rejection in node 1's log"
grep -q 'client=127.0.0.1:' <<<"$(grep 'rule="relay"' "$dir/node1.log")" || fail "relay rejection logged without the client"
grep -q 'rule="unknown_recipient".*reply=550 5.1.1' "$dir/node2.log" || fail "no unknown-recipient rejection in node 2's log"
for n in 1 2 3; do
    metrics=$(curl -fsS "http://127.0.0.1:910$n/metrics") || fail "no metrics on node $n"
    relay=$(awk '/^mxraft_smtp_rejections_total\{rule="(relay|routed_address)"\}/ {n += $2} END {print n + 0}' <<<"$metrics")
    ((relay >= ${#relay_forms[@]})) ||
        fail "node $n counts $relay relay rejections, expected at least ${#relay_forms[@]}"
    grep -q '^mxraft_smtp_rejections_total{rule="unknown_recipient"} [1-9]' <<<"$metrics" ||
        fail "node $n: no unknown_recipient count"
done
metrics=$(curl -fsS http://127.0.0.1:9101/metrics)
grep -q '^mxraft_smtp_messages_queued_total [1-9]' <<<"$metrics" || fail "node 1: no queued-message count"
grep -q '^mxraft_queue_messages [1-9]' <<<"$metrics" || fail "node 1: no queue gauge"

step "no quorum: with two nodes stopped, node 1 answers 451 4.3.0 at the end of data"
kill -KILL "$(<"$dir/node2.pid")" "$(<"$dir/node3.pid")"
got=$(data_reply 2525 --from quorum@client.test --to user1@example.test --timeout 60)
[[ $got == "451 4.3.0"* ]] || fail "without quorum: got '$got'"
local_up "$dir/up2.log" "up.sh did not restart the nodes"
got=$(data_reply 2526 --from quorum2@client.test --to user1@example.test)
[[ $got == "250 2.0.0"* ]] || fail "after the restart: got '$got'"

"$root/deploy/local/down.sh" >/dev/null

###############################################################################################
# Part 2: one node with a quota of two messages, a 64 KiB size limit and 3-second timeouts.
solo=$dir/solo
mkdir -p "$solo"
write_solo_config() {
    cat >"$solo/solo.toml" <<EOF
[node]
id = 1
data_dir = "$solo/data"

[smtp]
listen = "127.0.0.1:0"
hostname = "solo.mxraft.test"
max_message_size = 65536
command_timeout = "3s"
data_timeout = "3s"
min_data_rate = 500

# The local cluster's CA, node 1's certificate and the admin token (made by up.sh).
[tls]
ca_file = "$dir/tls/ca.pem"
cert_file = "$dir/tls/node1.pem"
key_file = "$dir/tls/node1-key.pem"

[admin]
listen = "127.0.0.1:0"
token_files = [{ path = "$dir/tls/admin.token", role = "admin" }]

[cluster]
listen = "127.0.0.1:0"
bootstrap = true

[queue]
max_messages = 2
min_free_disk = $1

[[domains]]
name = "example.test"
primary = "127.0.0.1:9"
recipients = "any"
EOF
}
# Starts the single node and sets solo_smtp and solo_admin from its log.
start_solo() {
    : >"$solo/solo.log"
    "$bin/mxraftd" --config "$solo/solo.toml" >>"$solo/solo.log" 2>&1 &
    solo_pid=$!
    for _ in $(seq 1 300); do
        grep -q 'SMTP accepting' "$solo/solo.log" && break
        kill -0 "$solo_pid" 2>/dev/null || fail "the single node exited"
        sleep 0.1
    done
    grep -q 'SMTP accepting' "$solo/solo.log" || fail "the single node did not start"
    solo_smtp=$(grep -o 'smtp=127\.0\.0\.1:[0-9]*' "$solo/solo.log" | head -n 1 | cut -d: -f2)
    solo_admin=$(grep -o 'admin=127\.0\.0\.1:[0-9]*' "$solo/solo.log" | head -n 1 | cut -d: -f2)
}
stop_solo() {
    kill "$solo_pid"
    wait "$solo_pid" || true
    solo_pid=""
}

step "single node: the 64 KiB size limit at MAIL and during DATA"
write_solo_config 0
start_solo
"${raw[@]}" mail-size 127.0.0.1 "$solo_smtp" 70000 || fail "SIZE= at MAIL on the single node"
head -c 100000 /dev/zero | tr '\0' 'b' | fold -w 76 >"$dir/medium.txt"
got=$(data_reply "$solo_smtp" --from medium@client.test --to user1@example.test --body @"$dir/medium.txt")
[[ $got == "552 5.3.4"* ]] || fail "100 KB message on the single node: got '$got'"

step "single node: an idle client gets 421 4.4.2 after command_timeout"
"${raw[@]}" idle 127.0.0.1 "$solo_smtp" 10 || fail "idle client"

step "single node: a client trickling one byte per second is cut off by the minimum rate"
"${raw[@]}" trickle 127.0.0.1 "$solo_smtp" 20 || fail "trickling client"
grep -q 'rule="min_data_rate"' "$solo/solo.log" || fail "the trickling client was not cut off by the min_data_rate rule"
grep -q 'rule="command_timeout"' "$solo/solo.log" || fail "the idle client was not cut off by the command_timeout rule"

step "single node: over the queue quota, MAIL gets 452 4.3.1; after a delete, mail is taken again"
sctl=("$ctl" --endpoint "127.0.0.1:$solo_admin")
for i in 1 2; do
    got=$(data_reply "$solo_smtp" --from "quota$i@client.test" --to user1@example.test)
    [[ $got == "250 2.0.0"* ]] || fail "message $i under the quota: got '$got'"
done
out=$(swaks --server "127.0.0.1:$solo_smtp" --from quota3@client.test --to user1@example.test 2>&1 || true)
grep -q '^<\*\* 452 4\.3\.1' <<<"$out" || fail "over the quota: expected 452 4.3.1 at MAIL: $out"
[[ $("${sctl[@]}" queue stats -o json | jq .messages) == 2 ]] || fail "the queue does not hold exactly 2 messages"
"${sctl[@]}" queue delete "$("${sctl[@]}" queue list -o json | jq -r '.[0].id')" >/dev/null
got=$(data_reply "$solo_smtp" --from quota4@client.test --to user1@example.test)
[[ $got == "250 2.0.0"* ]] || fail "after a delete: got '$got'"
stop_solo

step "single node: free disk below min_free_disk gives 452 4.3.1 at MAIL"
write_solo_config $((1 << 60))
start_solo
out=$(swaks --server "127.0.0.1:$solo_smtp" --from disk@client.test --to user1@example.test 2>&1 || true)
grep -q '^<\*\* 452 4\.3\.1' <<<"$out" || fail "disk floor: expected 452 4.3.1 at MAIL: $out"
stop_solo

echo "PASS: front-door black-box test"
