#!/usr/bin/env bash
# Three hosts without Kubernetes: three network namespaces with the addresses of
# deploy/examples (10.0.0.11-13 on one bridge), each running mxraftd with its example
# configuration at /etc/mxraft/mxraftd.toml and the systemd unit's command line, as the unit's
# user (uid 10001) with only CAP_NET_BIND_SERVICE; certificates and the token made as the
# examples' comments say. The nodes join by the documented procedure (node 1 bootstraps once
# nodes 2 and 3 answer). Mail to every node is queued; host 3's link is taken down while mail
# goes on to hosts 1 and 2, and brought back: host 3 catches up, and once the primary
# (mail.example.com, an smtp-sink on the bridge, named by dnsmasq) is up, every acknowledged
# message arrives, none more often than it was sent.
#
# Needs root (network and mount namespaces).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
mxraftd=$target/release/mxraftd
ctl=$target/release/mxraftctl
smtp_sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
dir=$(mktemp -d /tmp/mxraft-hosts.XXXXXX)
tag=mh$$
hub=${tag}hub
pids=()
made_dirs=()
step() { echo "--- $*"; }
fail() {
    echo "FAIL: $*" >&2
    for f in "$dir"/h*/log "$dir"/sink.log; do [[ -f $f ]] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}
cleanup() {
    local rc=$?
    set +e
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    # What a backgrounded function started (the sink, through in_hub) is not in pids.
    for ns in "$tag"1 "$tag"2 "$tag"3 "$hub"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    done
    for h in 1 2 3; do ip netns del "$tag$h" 2>/dev/null; done
    ip netns del "$hub" 2>/dev/null
    for d in "${made_dirs[@]}"; do rmdir "$d" 2>/dev/null; done
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT
[[ $(id -u) == 0 ]] || { echo "multi_host: needs root" >&2; exit 1; }
[[ -x $mxraftd && -x $ctl ]] || fail "build the release binaries first"

step "three hosts on a bridge: 10.0.0.11-13, the primary mail.example.com at 10.0.0.1"
ip netns add "$hub"
ip -n "$hub" link set lo up
ip -n "$hub" link add br0 type bridge
ip -n "$hub" addr add 10.0.0.1/24 dev br0
ip -n "$hub" link set br0 up
for h in 1 2 3; do
    ip netns add "$tag$h"
    ip -n "$tag$h" link set lo up
    ip link add "${tag}v$h" netns "$hub" type veth peer name eth0 netns "$tag$h"
    ip -n "$hub" link set "${tag}v$h" master br0 up
    ip -n "$tag$h" addr add "10.0.0.1$h/24" dev eth0
    ip -n "$tag$h" link set eth0 up
done

step "certificates and the admin token, as the examples' comments say"
"$ctl" cert create-ca --out-dir "$dir/ca" >/dev/null
"$ctl" token create "$dir/admin.token" >/dev/null
names=(mx-a mx-b mx-c)
for h in 1 2 3; do
    etc=$dir/h$h/etc
    mkdir -p "$etc" "$dir/h$h/var"
    "$ctl" cert create-node --id "$h" --dns "${names[h - 1]}.backup.example.net" --ip "10.0.0.1$h" \
        --ca-dir "$dir/ca" --out-dir "$dir/h$h/certs" >/dev/null
    cp "$dir/ca/ca.pem" "$dir/h$h/certs/node$h.pem" "$dir/h$h/certs/node$h-key.pem" "$dir/admin.token" "$etc/"
    cp "$root/deploy/examples/three-nodes-node$h.toml" "$etc/mxraftd.toml"
    chown -R 10001:10001 "$etc" "$dir/h$h/var"
    chmod 0700 "$dir/h$h/var"
done
mkdir -p "$dir/bin"
cp "$mxraftd" "$dir/bin/mxraftd"
echo "nameserver 10.0.0.1" >"$dir/resolv.conf"
for d in /etc/mxraft /var/lib/mxraft /usr/local/bin; do
    [[ -d $d ]] || { mkdir -p "$d"; made_dirs+=("$d"); }
done

# The unit's command lines (ExecStartPre, ExecStart), read from the unit itself.
unit=$root/deploy/systemd/mxraftd.service
check_line=$(sed -n 's/^ExecStartPre=//p' "$unit")
start_line=$(sed -n 's/^ExecStart=//p' "$unit")
[[ $start_line == "/usr/local/bin/mxraftd --config /etc/mxraft/mxraftd.toml" ]] || fail "unexpected ExecStart: $start_line"
start_host() { # $1 = host: its own mount namespace gives it /etc/mxraft, /var/lib/mxraft,
    # /usr/local/bin (the release mxraftd) and a resolv.conf naming the bridge's DNS server
    local h=$1
    ip netns exec "$tag$h" unshare --mount --propagation private bash -c '
        set -e
        mount --bind "$1/etc" /etc/mxraft
        mount --bind "$1/var" /var/lib/mxraft
        mount --bind "$2" /usr/local/bin
        mount --bind "$3" /etc/resolv.conf
        as_unit=(setpriv --reuid 10001 --regid 10001 --clear-groups --inh-caps +net_bind_service --ambient-caps +net_bind_service)
        "${as_unit[@]}" $4
        exec "${as_unit[@]}" $5
    ' _ "$dir/h$h" "$dir/bin" "$dir/resolv.conf" "$check_line" "$start_line" >"$dir/h$h/log" 2>&1 &
    pids+=($!)
}
in_hub() { ip netns exec "$hub" "$@"; }
wait_for() {
    local timeout=$1 what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" >"$dir/wait.out" 2>&1; do
        ((SECONDS < deadline)) || fail "not within ${timeout} s: $what ($(tail -n 3 "$dir/wait.out"))"
        sleep 0.5
    done
}
voters() { in_hub "$ctl" --endpoint "10.0.0.1$1:7001" --ca-file "$dir/ca/ca.pem" --token-file "$dir/admin.token" cluster status -o json | jq -r '[.members[] | select(.role != "learner") | .id] | sort | join(" ")'; }
has_voters() { [[ $(voters "$1") == "$2" ]]; }
queued() { in_hub "$ctl" --endpoint "10.0.0.1$1:7001" --ca-file "$dir/ca/ca.pem" --token-file "$dir/admin.token" queue stats --local -o json | jq .messages; }
all_queued() { # the listed hosts hold the same number of messages, between $1 and $2
    local low=$1 high=$2 h n first="" ok=0
    shift 2
    for h in "$@"; do
        n=$(queued "$h")
        echo "host $h: $n (acknowledged $low, attempts $high)"
        [[ -z $first ]] && first=$n
        [[ $n =~ ^[0-9]+$ && $n == "$first" && $n -ge $low && $n -le $high ]] || ok=1
    done
    return $ok
}
# Acknowledged messages and attempts so far: a sender that got no answer after the data sends
# again, and both copies may have been queued.
counts() { echo "$(wc -l <"$acked") $(wc -l <"$acked.attempts")"; }

# The bridge's DNS server: mail.example.com, the primary of the examples' domains.
in_hub dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=10.0.0.1 \
    --port=53 --host-record=mail.example.com,10.0.0.1 --pid-file="$dir/dnsmasq.pid" >"$dir/dnsmasq.log" 2>&1 &
pids+=($!)

step "start the three hosts with the unit's command lines, in any order"
for h in 3 1 2; do start_host "$h"; done
wait_for 60 "a cluster of three voters" has_voters 2 "1 2 3"
grep -q "bootstrapped a new cluster" "$dir/h1/log" || fail "node 1 did not bootstrap"

step "mail to every host is queued on every host"
# The examples' domains check recipients against the replicated list.
in_hub "$ctl" --endpoint 10.0.0.11:7001 --ca-file "$dir/ca/ca.pem" --token-file "$dir/admin.token" \
    recipients add user@example.com >/dev/null
acked=$dir/acked.txt
for h in 1 2 3; do
    in_hub python3 "$root/tests/k8s/mailer.py" "10.0.0.1$h" 25 "$acked" --prefix "host$h" --count 10 --retries 5 >/dev/null ||
        fail "mail to host $h was not acknowledged"
done
wait_for 30 "the 30 messages on every host" all_queued $(counts) 1 2 3
before=$(queued 1)

step "host 3's link down: hosts 1 and 2 go on taking mail"
ip -n "$hub" link set "${tag}v3" down
for h in 1 2; do
    in_hub python3 "$root/tests/k8s/mailer.py" "10.0.0.1$h" 25 "$acked" --prefix "split$h" --count 10 --retries 10 >/dev/null ||
        fail "mail to host $h during the split was not acknowledged"
done
total=$(wc -l <"$acked")
wait_for 30 "$total messages on hosts 1 and 2" all_queued $(counts) 1 2
[[ $(ip netns exec "$tag"3 "$ctl" --endpoint 10.0.0.13:7001 --ca-file "$dir/ca/ca.pem" --token-file "$dir/admin.token" queue stats --local -o json | jq .messages) == "$before" ]] ||
    fail "host 3, cut off, holds other than the $before messages of before"

step "host 3's link back: it catches up"
ip -n "$hub" link set "${tag}v3" up
wait_for 60 "$total messages on every host" all_queued $(counts) 1 2 3
has_voters 3 "1 2 3" || fail "voters after the heal: $(voters 3)"

step "the primary comes up: every acknowledged message arrives, none more often than it was sent"
chmod 711 "$dir"
mkdir -p "$dir/mail"
chmod 777 "$dir/mail"
in_hub "$smtp_sink" -u nobody -d "$dir/mail/%M." 10.0.0.1:25 64 >"$dir/sink.log" 2>&1 &
pids+=($!)
wait_for 90 "every queue empty" all_queued 0 0 1 2 3
delivered=$(grep -h -o 'Message-ID: <[^@]*@mxraft.test>' "$dir"/mail/* | sed 's/Message-ID: <//; s/@mxraft.test>//' | sort)
# Every acknowledged message arrives; one that arrives more than once was sent more than once
# (a sender that got no answer after the data retries, and both copies may have been queued).
missing=$(comm -23 <(sort -u "$acked") <(echo "$delivered" | sort -u))
[[ -z $missing ]] || fail "acknowledged but never delivered: $(echo "$missing" | head -n 5 | tr '\n' ' ')"
while read -r count id; do
    tries=$(grep -cx "$id" "$acked.attempts")
    ((count <= tries)) || fail "$id delivered $count times but sent $tries times"
done < <(echo "$delivered" | uniq -c)
unknown=$(comm -13 <(sort -u "$acked.attempts") <(echo "$delivered" | sort -u))
[[ -z $unknown ]] || fail "delivered but never sent: $unknown"
echo "multi-host: $total messages acknowledged across a split of host 3; $(echo "$delivered" | wc -l) deliveries, each acknowledged message at least once, none more often than it was sent"
