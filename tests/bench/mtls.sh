#!/usr/bin/env bash
# What mutual TLS between the nodes costs (prints figures; not a test).
#
# The local 3-node cluster as shipped (mTLS on the cluster port) and the same cluster with
# cluster.insecure_plaintext = true (loopback only), measured alternately in one run, ROUNDS
# times each: smtp-source with 10 KiB messages over 20 sessions and over one session, and the
# latency of single messages (MAIL to the 250 after the dot, tests/bench/latency.py). Prints
# each figure and the ratio mTLS / plain text.
#
#   tests/bench/mtls.sh [MESSAGES] [ROUNDS]        (default 3000 messages, 2 rounds)
#
# Uses the documented local-cluster ports (stop a running local cluster first).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
messages=${1:-3000}
rounds=${2:-2}
size=10240
latency_messages=300
ctl=$CARGO_TARGET_DIR/release/mxraftctl
work=$(mktemp -d /tmp/mxraft-bench-mtls.XXXXXX)
chmod 755 "$work"
export MXRAFT_LOCAL_DIR=$work/cluster
source "$root/tests/bench/lib.sh"

cleanup() {
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

bench_prepare

# The plain-text variant: the shipped configurations with insecure_plaintext on the cluster
# port (the admin port keeps TLS, it is not on the path of a message).
mkdir -p "$work/plain"
for n in 1 2 3; do
    sed 's/^\[cluster\]$/[cluster]\ninsecure_plaintext = true/' "$root/deploy/local/node$n.toml" >"$work/plain/node$n.toml"
done

queued() { "$ctl" queue stats -o json | jq .messages; }

# One round against a freshly started cluster: prints "rate20 rate1 p50 p99".
measure() {
    local configs=$1 base t20 t1 one p50 p90 p99 max
    rm -rf "$MXRAFT_LOCAL_DIR"/node[123]
    MXRAFT_LOCAL_CONFIGS=$configs "$root/deploy/local/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
    run_load 200 "$size" 20 2525 2526 2527 >/dev/null   # warm-up
    base=$(queued)
    t20=$(run_load "$messages" "$size" 20 2525 2526 2527)
    [[ $(( $(queued) - base )) -eq $messages ]] || { echo "not every message was queued" >&2; exit 1; }
    one=$((messages / 3))
    t1=$(run_load "$one" "$size" 1 2525)
    read -r p50 p90 p99 max < <(python3 "$root/tests/bench/latency.py" 127.0.0.1 2525 "$latency_messages" "$size")
    "$root/deploy/local/down.sh" >/dev/null
    echo "$(rate "$messages" "$t20") $(rate "$one" "$t1") $p50 $p99"
}

declare -a tls20 tls1 tlsp50 tlsp99 pl20 pl1 plp50 plp99
for r in $(seq 1 "$rounds"); do
    read -r a b c d < <(measure "$root/deploy/local")
    tls20+=("$a"); tls1+=("$b"); tlsp50+=("$c"); tlsp99+=("$d")
    echo "round $r, mTLS:       20 sessions $a msg/s, 1 session $b msg/s, latency p50 $c ms, p99 $d ms"
    read -r a b c d < <(measure "$work/plain")
    pl20+=("$a"); pl1+=("$b"); plp50+=("$c"); plp99+=("$d")
    echo "round $r, plain text: 20 sessions $a msg/s, 1 session $b msg/s, latency p50 $c ms, p99 $d ms"
done

mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.1f", s / NR }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "== mean of $rounds rounds ($messages × 10 KiB at 20 sessions, $((messages / 3)) at 1, $latency_messages for latency)"
printf '%-22s %10s %12s %8s\n' "" "mTLS" "plain text" "ratio"
for row in "20 sessions (msg/s)|tls20|pl20" "1 session (msg/s)|tls1|pl1" "latency p50 (ms)|tlsp50|plp50" "latency p99 (ms)|tlsp99|plp99"; do
    IFS='|' read -r label t p <<<"$row"
    declare -n tv=$t pv=$p
    a=$(mean "${tv[@]}")
    b=$(mean "${pv[@]}")
    printf '%-22s %10s %12s %8s\n' "$label" "$a" "$b" "$(ratio "$a" "$b")"
done
