#!/usr/bin/env bash
# Starts a three-node mxraft cluster on loopback, or restarts the nodes that are not running.
#
#   SMTP   127.0.0.1:2525  :2526  :2527
#   admin  127.0.0.1:7001  :7002  :7003   (TLS and a bearer token: see the export lines it prints)
#   raft   127.0.0.1:7101  :7102  :7103   (internal, mutual TLS)
#   metrics 127.0.0.1:9101 :9102  :9103   (Prometheus: curl http://127.0.0.1:9101/metrics)
#
# Protects example.test (next hop 127.0.0.1:2500) with the recipients postmaster@example.test
# and user1@ ... user1000@example.test. Data, logs and nodeN.pid files live in
# $MXRAFT_LOCAL_DIR (default .local-cluster/ at the top of the repository).
# Installs what is missing (also swaks and smtp-sink, which the README's "Try it" uses), builds
# in release mode, waits for a leader and three voters.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${MXRAFT_LOCAL_DIR:-$root/.local-cluster}
# Where node1.toml ... node3.toml come from (benchmarks pass variants).
configs=${MXRAFT_LOCAL_CONFIGS:-$root/deploy/local}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
bin=$CARGO_TARGET_DIR/release

"$root/scripts/install-deps.sh" --try
if [[ ${MXRAFT_PREBUILT:-0} == 1 ]]; then
    # tests/fresh-machine.sh runs the black-box tests against binaries built outside its root.
    echo "up: using the binaries already built in $bin"
else
    echo "up: building (release)"
    (cd "$root" && cargo build --release --locked -p mxraftd -p mxraftctl)
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# A self-signed certificate for STARTTLS, made once.
if [[ ! -f $dir/tls/cert.pem || ! -f $dir/tls/key.pem ]]; then
    mkdir -p "$dir/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mxraft.test" \
        -addext "subjectAltName=DNS:node1.mxraft.test,DNS:node2.mxraft.test,DNS:node3.mxraft.test,IP:127.0.0.1" \
        -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" 2>/dev/null
    chmod 600 "$dir/tls/key.pem"
    echo "up: made a self-signed TLS certificate in $dir/tls"
fi

# The cluster CA, a certificate per node, a client certificate with the read role, and the
# admin and read bearer tokens, made once with mxraftctl as a real deployment would.
if [[ ! -f $dir/tls/ca.pem ]]; then
    mkdir -p "$dir/tls"
    rm -f "$dir"/tls/ca-key.pem "$dir"/tls/node[123]*.pem "$dir"/tls/reader*.pem "$dir"/tls/*.token
    "$bin/mxraftctl" cert create-ca --out-dir "$dir/tls" --name "mxraft local cluster CA" >/dev/null
    for n in 1 2 3; do
        "$bin/mxraftctl" cert create-node --id "$n" --dns localhost --dns "node$n.mxraft.test" \
            --ip 127.0.0.1 --ca-dir "$dir/tls" --out-dir "$dir/tls" >/dev/null
    done
    "$bin/mxraftctl" cert create-client --role read --name reader --ca-dir "$dir/tls" --out-dir "$dir/tls" >/dev/null
    "$bin/mxraftctl" token create "$dir/tls/admin.token" >/dev/null
    "$bin/mxraftctl" token create "$dir/tls/read.token" >/dev/null
    echo "up: made the cluster CA, node certificates and admin tokens in $dir/tls"
fi
export MXRAFT_CA_FILE=$dir/tls/ca.pem MXRAFT_TOKEN_FILE=$dir/tls/admin.token

# A node runs when its pid file names a live mxraftd process.
running() {
    local pidfile=$dir/node$1.pid pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q mxraftd
}

# Just started: alive is enough (the child may not have exec'd mxraftd yet).
alive() {
    kill -0 "$(<"$dir/node$1.pid")" 2>/dev/null
}

for n in 1 2 3; do
    if running "$n"; then
        echo "up: node $n already running (pid $(<"$dir/node$n.pid"))"
        continue
    fi
    (cd "$dir" && exec nohup "$bin/mxraftd" --config "$configs/node$n.toml" --data-dir "$dir/node$n" \
        >>"$dir/node$n.log" 2>&1 </dev/null) &
    echo $! >"$dir/node$n.pid"
    echo "up: started node $n (pid $!, log $dir/node$n.log)"
done

# Wait until one node reports a leader and three voters, all of them running. (A node that
# lost its data directory answers too, with no leader: ask the others.)
deadline=$((SECONDS + 120))
via=""
while [[ -z $via ]]; do
    for n in 1 2 3; do
        alive "$n" || { echo "up: node $n exited; see $dir/node$n.log" >&2; tail -n 20 "$dir/node$n.log" >&2; exit 1; }
    done
    for n in 1 2 3; do
        status=$("$bin/mxraftctl" --endpoint "127.0.0.1:700$n" cluster status -o json 2>/dev/null || true)
        if [[ -n $status ]] && jq -e '.leader_id != null and ([.members[] | select(.role == "leader" or .role == "follower")] | length) == 3' \
            <<<"$status" >/dev/null; then
            via=$n
            break
        fi
    done
    if [[ -z $via ]]; then
        if ((SECONDS > deadline)); then
            echo "up: no leader with three voters after 120 s; see the logs in $dir" >&2
            exit 1
        fi
        sleep 0.5
    fi
done

# The recipient table (replicated, so loading it through one node is enough; adding what is
# already there changes nothing).
{ echo "postmaster@example.test"; seq -f "user%g@example.test" 1 1000; } >"$dir/recipients.txt"
"$bin/mxraftctl" --endpoint "127.0.0.1:700$via" recipients import "$dir/recipients.txt" >/dev/null

leader=$(jq -r .leader_id <<<"$status")
cat <<MSG
up: cluster ready, leader is node $leader
  SMTP    127.0.0.1:2525  127.0.0.1:2526  127.0.0.1:2527
  admin   127.0.0.1:7001  127.0.0.1:7002  127.0.0.1:7003  (TLS; admin token $dir/tls/admin.token)
  health  curl http://127.0.0.1:9101/readyz
  try     export PATH=$bin:\$PATH MXRAFT_CA_FILE=$dir/tls/ca.pem MXRAFT_TOKEN_FILE=$dir/tls/admin.token
          swaks --server 127.0.0.1:2525 --to postmaster@example.test
          mxraftctl queue list
  stop    deploy/local/down.sh
MSG
