# Shared by the black-box scripts; source it after setting MXRAFT_LOCAL_DIR (where the local
# cluster keeps its data and node logs). Extra log files to show on failure go in fail_logs.

fail_logs=()

step() { echo "--- $*"; }

# Prints the reason and the end of every node log (and of fail_logs), then exits.
fail() {
    echo "FAIL: $*" >&2
    local f
    for f in "$MXRAFT_LOCAL_DIR"/node*.log "${fail_logs[@]}"; do
        [[ -f $f ]] && { echo "== $f" >&2; tail -n 30 "$f" >&2; }
    done
    exit 1
}

# Fails unless every given loopback port is free.
require_free_ports() {
    local port
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fail "port $port is in use (is a local cluster running? stop it with deploy/local/down.sh)"
        fi
    done
}

# Runs deploy/local/up.sh with its output in $1; on failure shows it and fails with $2.
local_up() {
    "$root/deploy/local/up.sh" >"$1" 2>&1 || { cat "$1"; fail "$2"; }
}

# mxraftctl reaches the local cluster's admin API over TLS with its admin token (up.sh makes
# both on first start).
export MXRAFT_CA_FILE=$MXRAFT_LOCAL_DIR/tls/ca.pem MXRAFT_TOKEN_FILE=$MXRAFT_LOCAL_DIR/tls/admin.token

# For scripts that set $dir (their scratch directory) and may run an smtp-sink ($sink_pid):
# stops it and the local cluster and removes $dir. Use as the EXIT trap.
stop_local() {
    [[ -n ${sink_pid:-} ]] && kill "$sink_pid" 2>/dev/null || true
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$dir"
}

# Messages in the queue of the node whose admin port is $1, as that node has it.
queued() { "$ctl" --endpoint "127.0.0.1:$1" queue stats --local -o json | jq .messages; }

# Waits up to $1 s until the own copy of the queue of every node whose admin port follows is
# empty.
wait_empty() {
    local deadline=$((SECONDS + $1)) port
    for port in "${@:2}"; do
        while [[ $(queued "$port" 2>/dev/null || echo x) != 0 ]]; do
            ((SECONDS < deadline)) || fail "queue on $port not empty after $1 s"
            sleep 0.1
        done
    done
}

# The queue ids in the mxraft Received: headers of the messages smtp-sink dumped into $1, one
# line per message, sorted.
dumped_ids() { grep -h -o '(mxraft) with [A-Z0-9]* id [0-9A-Z]\{26\}' "$1"/* 2>/dev/null | awk '{print $NF}' | sort; }
