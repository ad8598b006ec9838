#!/usr/bin/env bash
# Black-box test of the secure cluster against deploy/local:
#  1. grpcurl (a gRPC client from the Go module proxy) calls Propose, Vote, AppendEntries,
#     InstallSnapshot and ChangeMembership on every node's cluster port in plain text, over TLS
#     without a client certificate, and with a certificate from another CA: all refused, and
#     the queue and the membership are unchanged; a node certificate for a non-member id from
#     the cluster CA may not propose or add another id;
#  2. the admin API: no token -> UNAUTHENTICATED, the read token and a read client
#     certificate list but may not delete (PERMISSION_DENIED), the admin token may;
#  3. a node whose cluster port is cut off (nftables) answers 451 4.3.0 at RCPT for a recipient
#     added after the cut, never 550, and /readyz says not ready; after the heal, 250;
#  4. the bootstrap node loses its data directory: restarted by up.sh it does not answer 250
#     from a cluster of its own, nothing acknowledged is lost, and the documented replacement
#     (remove the old id, a new node under a new id) brings the cluster back to three;
#  5. a node whose disk fills up stops with a non-zero status and the cause in its log.
# Uses the local-cluster ports (2525-2528, 7001-7004, 7101-7104, 9101-9104). Needs root (nft,
# mount).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
bin=$CARGO_TARGET_DIR/release
ctl=$bin/mxraftctl
grpcurl=${MXRAFT_GRPCURL:-$HOME/.cache/mxraft/bin/grpcurl}
dir=$(mktemp -d /tmp/mxraft-security.XXXXXX)
export MXRAFT_LOCAL_DIR=$dir
node4_pid=""
solo_pid=""
nft_table=""
small=""

source "$root/tests/blackbox/lib.sh"

cleanup() {
    [[ -n $nft_table ]] && nft delete table inet "$nft_table" 2>/dev/null || true
    [[ -n $node4_pid ]] && kill -9 "$node4_pid" 2>/dev/null || true
    [[ -n $solo_pid ]] && kill -9 "$solo_pid" 2>/dev/null || true
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    [[ -n $small ]] && umount "$small" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

require_free_ports 2525 2526 2527 2528 7001 7002 7003 7004 7101 7102 7103 7104 9101 9102 9103 9104
[[ -x $grpcurl ]] || fail "grpcurl is missing at $grpcurl (scripts/install-deps.sh --test builds it)"

step "deploy/local/up.sh starts three nodes with mTLS and admin tokens"
local_up "$dir/up.log" "up.sh failed"
tls=$dir/tls

# Sends one message with swaks to port $1 for $2; prints the queue id, fails otherwise.
send() {
    local out id
    out=$(swaks --server "127.0.0.1:$1" --from "s@client.test" --to "$2" --body "security" 2>&1) ||
        fail "swaks to $1 failed: $out"
    id=$(sed -n 's/.*<-  250 2\.0\.0 Ok: queued as \([0-9A-Z]*\).*/\1/p' <<<"$out")
    [[ -n $id ]] || fail "no queue id from port $1: $out"
    echo "$id"
}
ids() { "$ctl" --endpoint "127.0.0.1:$1" queue list -o json "${@:2}" | jq -r '.[].id' | sort; }
voters() { "$ctl" --endpoint "127.0.0.1:$1" cluster status -o json | jq -c '[.members[].id] | sort'; }

: >"$dir/acked"
for port in 2525 2526 2527; do send "$port" "user$((port - 2500))@example.test" >>"$dir/acked"; done
sort -o "$dir/acked" "$dir/acked"

step "grpcurl: the cluster port refuses callers without a node certificate from the cluster CA"
"$ctl" cert create-ca --out-dir "$dir/evil" --name "another CA" >/dev/null
"$ctl" cert create-node --id 1 --ip 127.0.0.1 --ca-dir "$dir/evil" --out-dir "$dir/evil" >/dev/null
"$ctl" cert create-node --id 9 --ip 127.0.0.1 --ca-dir "$tls" --out-dir "$dir/stranger" >/dev/null
proto=(-import-path "$root/proto" -proto mxraft/v1/cluster.proto)
# Base64 of a few bytes: the payloads never get far enough to be decoded.
payload='{"payload": "AAEC"}'
call() { # $1 = port, $2 = method, $3 = request JSON, then grpcurl's TLS options
    timeout 20 "$grpcurl" "${proto[@]}" "${@:4}" -max-time 10 -d "$3" "127.0.0.1:$1" "mxraft.cluster.v1.Cluster/$2" 2>&1
}
methods=(Propose Vote AppendEntries InstallSnapshot ChangeMembership TransferLeader)
request() {
    case $1 in
        Propose) echo '{"command": "AAEC"}' ;;
        InstallSnapshot) echo '{"header": {}}' ;;
        ChangeMembership) echo '{"join": {"node_id": 9, "addresses": {"cluster_addr": "127.0.0.1:7109"}, "pristine": true}}' ;;
        *) echo "$payload" ;;
    esac
}
refused=0
for port in 7101 7102 7103; do
    for caller in plaintext nocert evil; do
        case $caller in
            plaintext) opts=(-plaintext) ;;
            nocert) opts=(-cacert "$tls/ca.pem") ;;
            evil) opts=(-cacert "$tls/ca.pem" -cert "$dir/evil/node1.pem" -key "$dir/evil/node1-key.pem") ;;
        esac
        for m in "${methods[@]}"; do
            if out=$(call "$port" "$m" "$(request "$m")" "${opts[@]}"); then
                fail "$caller caller: $m on $port was accepted: $out"
            fi
            # Refused at the connection, never by a handler that ran.
            grep -qiE 'tls|certificate|handshake|connection|EOF|transport|Unavailable|reset' <<<"$out" ||
                fail "$caller caller: $m on $port failed, but not at the connection: $out"
            refused=$((refused + 1))
        done
    done
done
echo "$refused calls refused"

step "grpcurl with a cluster-CA certificate for node 9, not a member: no proposals, no joins for others"
member=(-cacert "$tls/ca.pem" -cert "$dir/stranger/node9.pem" -key "$dir/stranger/node9-key.pem")
out=$(call 7101 Propose '{"command": "AAEC"}' "${member[@]}") && fail "node 9 could propose: $out"
grep -q 'PermissionDenied' <<<"$out" && grep -q 'not a member' <<<"$out" || fail "Propose by node 9: $out"
out=$(call 7101 ChangeMembership '{"join": {"node_id": 8, "addresses": {"cluster_addr": "127.0.0.1:7108"}, "pristine": true}}' "${member[@]}") &&
    fail "node 9 could add node 8: $out"
grep -q 'PermissionDenied' <<<"$out" && grep -q 'names node 9' <<<"$out" || fail "join of 8 by node 9: $out"
out=$(call 7101 Identify '{}' "${member[@]}") || fail "Identify by node 9 refused: $out"
jq -e '.initialized == true and (.clusterId | length) == 32' <<<"$out" >/dev/null || fail "Identify: $out"

step "nothing changed: the same three voters and the same queue on every node"
for admin in 7001 7002 7003; do
    [[ $(voters "$admin") == "[1,2,3]" ]] || fail "membership on $admin: $(voters "$admin")"
    diff "$dir/acked" <(ids "$admin") >/dev/null || fail "queue on $admin changed"
done

step "admin API: no token is UNAUTHENTICATED; read may list but not delete; admin may"
victim=$(head -n 1 "$dir/acked")
out=$(env -u MXRAFT_TOKEN_FILE "$ctl" queue list 2>&1) && fail "listed without a token: $out"
grep -q 'Unauthenticated' <<<"$out" && grep -q 'needs the read role' <<<"$out" || fail "no token: $out"
MXRAFT_TOKEN_FILE=$tls/read.token "$ctl" queue list -o json | jq -e 'length == 3' >/dev/null || fail "read token cannot list"
out=$(MXRAFT_TOKEN_FILE=$tls/read.token "$ctl" queue delete "$victim" 2>&1) && fail "the read token deleted: $out"
grep -q 'PermissionDenied' <<<"$out" && grep -q 'queue delete needs the admin role' <<<"$out" || fail "read delete: $out"
env -u MXRAFT_TOKEN_FILE "$ctl" --cert "$tls/reader.pem" --key "$tls/reader-key.pem" queue list -o json |
    jq -e 'length == 3' >/dev/null || fail "the read client certificate cannot list"
out=$(env -u MXRAFT_TOKEN_FILE "$ctl" --cert "$tls/reader.pem" --key "$tls/reader-key.pem" recipients add x@example.test 2>&1) &&
    fail "the read certificate changed the recipient table: $out"
grep -q 'PermissionDenied' <<<"$out" || fail "read certificate add: $out"
out=$(env -u MXRAFT_CA_FILE "$ctl" --endpoint http://127.0.0.1:7001 queue list 2>&1) && fail "plain text admin call answered: $out"
"$ctl" queue delete "$victim" >/dev/null || fail "the admin token cannot delete"
grep -v "$victim" "$dir/acked" >"$dir/acked.new" && mv "$dir/acked.new" "$dir/acked"
curl -fsS http://127.0.0.1:9101/readyz >/dev/null || fail "node 1 is not ready"

step "node 3's cluster port cut off: RCPT for a recipient added after the cut is 451, never 550"
nft_table=mxraft_security_$$
nft add table inet "$nft_table"
nft "add chain inet $nft_table input { type filter hook input priority 0; }"
nft add rule inet "$nft_table" input tcp dport 7103 drop
"$ctl" --endpoint 127.0.0.1:7001 recipients add after-cut@example.test >/dev/null
ready=1
for _ in $(seq 1 200); do
    curl -fsS http://127.0.0.1:9103/readyz >/dev/null 2>&1 || { ready=0; break; }
    sleep 0.1
done
((ready == 0)) || fail "node 3 still ready 20 s after the cut"
curl -sS http://127.0.0.1:9103/readyz | grep -q 'not ready' || fail "/readyz gives no reason"
out=$(swaks --server 127.0.0.1:2527 --from s@client.test --to after-cut@example.test --quit-after RCPT 2>&1 || true)
grep -q '^<\*\* 451 4\.3\.0' <<<"$out" || fail "RCPT on the cut-off node: expected 451 4.3.0: $out"
out=$(swaks --server 127.0.0.1:2525 --from s@client.test --to after-cut@example.test --quit-after RCPT 2>&1 || true)
grep -q '^<-  250 2\.1\.5' <<<"$out" || fail "RCPT on node 1: expected 250: $out"
nft delete table inet "$nft_table"
nft_table=""
healed=0
for _ in $(seq 1 300); do
    if curl -fsS http://127.0.0.1:9103/readyz >/dev/null 2>&1; then healed=1; break; fi
    sleep 0.1
done
((healed)) || fail "node 3 not ready 30 s after the heal"
send 2527 after-cut@example.test >>"$dir/acked"
sort -o "$dir/acked" "$dir/acked"

step "kill -9 node 1 (the bootstrap node), delete its data, up.sh: no cluster of its own"
kill -9 "$(<"$dir/node1.pid")"
rm -rf "$dir/node1"
log_before=$(wc -l <"$dir/node1.log")
local_up "$dir/up2.log" "up.sh after the wipe failed"
grep -q "started node 1" "$dir/up2.log" || fail "up.sh did not restart node 1"
refusal=0
for _ in $(seq 1 300); do
    if grep -q 'must not rejoin under its old id' "$dir/node1.log"; then refusal=1; break; fi
    sleep 0.1
done
((refusal)) || fail "node 1's log does not say why it is refused"
grep -q 'bootstrapped a new cluster' <<<"$(tail -n +$((log_before + 1)) "$dir/node1.log")" &&
    fail "the wiped node bootstrapped a cluster of its own"
out=$(swaks --server 127.0.0.1:2525 --from s@client.test --to user1@example.test 2>&1 || true)
grep -q '<-  250 2\.0\.0' <<<"$out" && fail "the wiped node acknowledged a message: $out"
grep -qE '^<\*\* 4[0-9][0-9] ' <<<"$out" || fail "the wiped node did not answer 4xx: $out"
[[ $(voters 7002) == "[1,2,3]" ]] || fail "membership changed: $(voters 7002)"
diff "$dir/acked" <(ids 7002) >/dev/null || fail "acknowledged mail lost after the wipe"

step "the documented replacement: stop node 1, remove id 1, start node 4 with its own certificate"
kill "$(<"$dir/node1.pid")"
rm -f "$dir/node1.pid"
"$ctl" --endpoint 127.0.0.1:7002 cluster remove 1 >/dev/null || fail "cluster remove 1"
"$ctl" cert create-node --id 4 --dns localhost --ip 127.0.0.1 --ca-dir "$tls" --out-dir "$tls" >/dev/null
sed -e 's/^id = 1$/id = 4/' -e 's/2525/2528/; s/7001/7004/; s/7101/7104/; s/9101/9104/' \
    -e 's/node1/node4/g' -e '/^bootstrap = true$/d' \
    -e 's/^peers = .*/peers = ["127.0.0.1:7102", "127.0.0.1:7103"]/' \
    "$root/deploy/local/node1.toml" >"$dir/node4.toml"
(cd "$dir" && exec "$bin/mxraftd" --config "$dir/node4.toml" --data-dir "$dir/node4" >>"$dir/node4.log" 2>&1) &
node4_pid=$!
fail_logs+=("$dir/node4.log")
joined=0
for _ in $(seq 1 600); do
    if [[ $(voters 7002 2>/dev/null) == "[2,3,4]" ]] && diff "$dir/acked" <(ids 7004 --local 2>/dev/null) >/dev/null 2>&1; then
        joined=1
        break
    fi
    sleep 0.1
done
((joined)) || fail "node 4 did not join and catch up: $(voters 7002)"
send 2528 user4@example.test >>"$dir/acked"
sort -o "$dir/acked" "$dir/acked"
for admin in 7002 7003 7004; do
    diff "$dir/acked" <(ids "$admin") >/dev/null || fail "queue on $admin differs after the replacement"
done

step "cluster remove --above 3 removes node 4, the only member above 3, and never every member"
out=$("$ctl" --endpoint 127.0.0.1:7002 cluster remove --above 3) || fail "cluster remove --above 3"
[[ $out == "node 4 removed from the cluster" ]] || fail "cluster remove --above 3 said: $out"
for _ in $(seq 1 100); do [[ $(voters 7002) == "[2,3]" ]] && break; sleep 0.1; done
[[ $(voters 7002) == "[2,3]" ]] || fail "voters after remove --above 3: $(voters 7002)"
out=$("$ctl" --endpoint 127.0.0.1:7002 cluster remove --above 3) || fail "a second remove --above 3"
[[ $out == "no member has an id above 3" ]] || fail "a second remove --above 3 said: $out"
out=$("$ctl" --endpoint 127.0.0.1:7002 cluster remove --above 1 2>&1) && fail "remove --above 1 removed every member"
grep -q "nothing would be left" <<<"$out" || fail "remove --above 1 said: $out"
kill "$node4_pid"
wait "$node4_pid" 2>/dev/null || true
node4_pid=""
"$root/deploy/local/down.sh" >/dev/null

step "a node whose disk fills up exits non-zero with the cause in its log"
small=$dir/small
mkdir -p "$small"
mount -t tmpfs -o size=48m tmpfs "$small"
cat >"$dir/solo.toml" <<EOF
[node]
id = 1
data_dir = "$small/data"

[smtp]
listen = "127.0.0.1:2525"
hostname = "solo.mxraft.test"

[tls]
ca_file = "$tls/ca.pem"
cert_file = "$tls/node1.pem"
key_file = "$tls/node1-key.pem"

[admin]
listen = "127.0.0.1:7001"
token_files = [{ path = "$tls/admin.token", role = "admin" }]

[cluster]
listen = "127.0.0.1:7101"
bootstrap = true

[queue]
min_free_disk = 0

[[domains]]
name = "example.test"
primary = "127.0.0.1:9"
recipients = "any"
EOF
"$bin/mxraftd" --config "$dir/solo.toml" >"$dir/solo.log" 2>&1 &
solo_pid=$!
fail_logs+=("$dir/solo.log")
for _ in $(seq 1 300); do
    "$ctl" cluster status -o json 2>/dev/null | jq -e '.leader_id == 1' >/dev/null && break
    kill -0 "$solo_pid" 2>/dev/null || fail "the single node exited at startup"
    sleep 0.1
done
avail=$(df --output=avail -B1 "$small" | tail -n 1)
head -c $((avail - 3 * 1024 * 1024)) /dev/zero >"$small/filler" 2>/dev/null || true
head -c 4000000 /dev/urandom | base64 -w 76 >"$dir/big.txt"
status=""
for i in $(seq 1 10); do
    swaks --server 127.0.0.1:2525 --from "full$i@client.test" --to user1@example.test --body @"$dir/big.txt" \
        --timeout 30 >/dev/null 2>&1 || true
    if ! kill -0 "$solo_pid" 2>/dev/null; then
        wait "$solo_pid" && status=0 || status=$?
        break
    fi
done
solo_pid_was=$solo_pid
solo_pid=""
[[ -n $status ]] || { kill -9 "$solo_pid_was"; fail "the node with a full disk kept running"; }
((status != 0)) || fail "the node with a full disk exited with status 0"
grep -q 'raft stopped on a fatal error' "$dir/solo.log" || fail "the cause is not in the log"
echo "the node stopped with status $status: $(grep -o 'raft stopped on a fatal error.*' "$dir/solo.log" | head -c 200)"
echo "PASS: security black-box test"
