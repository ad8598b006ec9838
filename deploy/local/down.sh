#!/usr/bin/env bash
# Stops the local cluster started by deploy/local/up.sh, by the pids in $MXRAFT_LOCAL_DIR.
# Data is kept; up.sh starts the same cluster again.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${MXRAFT_LOCAL_DIR:-$root/.local-cluster}

for n in 1 2 3; do
    pidfile=$dir/node$n.pid
    [[ -f $pidfile ]] || continue
    pid=$(<"$pidfile")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q mxraftd; then
        kill -TERM "$pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "down: node $n (pid $pid) did not stop in 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "down: stopped node $n (pid $pid)"
    fi
    rm -f "$pidfile"
done
