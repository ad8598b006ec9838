# Shared by the benchmarks: a throwaway Postfix configured as a backup MX for example.test,
# and helpers to time smtp-source runs. Source it after setting $work (a scratch directory).
#
# Postfix is started with `postfix -c DIR`, which requires DIR in alternate_config_directories
# of the default /etc/postfix/main.cf; pf_cleanup puts that file back as it was.

smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
smtp_sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
postfix_bin=$(command -v postfix || echo /usr/sbin/postfix)
postqueue_bin=$(command -v postqueue || echo /usr/sbin/postqueue)
pf=$work/postfix
main_cf=/etc/postfix/main.cf
main_cf_backup=$work/main.cf.orig

# Installs what is missing and builds the binaries (needs $root); with MXRAFT_PREBUILT=1 it
# takes the binaries already in $CARGO_TARGET_DIR/release, e.g. an older build to compare with.
bench_prepare() {
    "$root/scripts/install-deps.sh" --test
    [[ ${MXRAFT_PREBUILT:-0} == 1 ]] && return 0
    (cd "$root" && cargo build --release --locked -p mxraftd -p mxraftctl) >/dev/null
}

now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }
# The same with one decimal, for rates of a few messages per second.
rate10() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
# The sum of the peak resident set sizes (VmHWM) of the given pids, in MiB.
peak_rss_mib() {
    local kb=0 p v
    for p in "$@"; do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        kb=$((kb + ${v:-0}))
    done
    awk -v k="$kb" 'BEGIN { printf "%.0f\n", k / 1024 }'
}

# Runs smtp-source: $1 messages of $2 bytes over $3 sessions in total, spread over the ports
# that follow; prints the seconds it took.
run_load() {
    local total=$1 size=$2 sessions=$3; shift 3
    local ports=("$@") n=${#ports[@]} i pids=() t0
    t0=$(now)
    for i in "${!ports[@]}"; do
        local s=$((sessions / n + (i < sessions % n ? 1 : 0)))
        local m=$((total / n + (i < total % n ? 1 : 0)))
        ((s > 0 && m > 0)) || continue
        "$smtp_source" -c -l "$size" -m "$m" -s "$s" -f bench@client.test -t user1@example.test \
            "127.0.0.1:${ports[$i]}" >/dev/null &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    since "$t0"
}

# The disk's own fsync rate: 4 KiB O_DSYNC writes in $work, per second.
disk_fsync_rate() {
    local out secs
    out=$(dd if=/dev/zero of="$work/fsync.probe" bs=4k count=2000 oflag=dsync 2>&1 | tail -n 1)
    secs=$(sed -E 's/.* copied, ([0-9.,]+) s.*/\1/' <<<"$out" | tr , .)
    rm -f "$work/fsync.probe"
    rate 2000 "$secs"
}

# The EXIT trap of a benchmark: stops the sink, Postfix and the local cluster, removes $work.
bench_cleanup() {
    [[ -n ${sink_pid:-} ]] && kill "$sink_pid" 2>/dev/null || true
    pf_cleanup
    "$root/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$work"
}

# The primary of the local cluster's domain: smtp-sink on 127.0.0.1:2500 ($sink_pid).
start_sink() {
    "$smtp_sink" -u nobody 127.0.0.1:2500 256 &
    sink_pid=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/2500) 2>/dev/null && return 0; sleep 0.05; done
}
stop_sink() { kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; sink_pid=""; }

# Waits (up to 30 s) until a delivery attempt has marked example.test down, so that a timed
# drain starts from mail that waits for the primary. Needs $ctl.
wait_primary_down() {
    for _ in $(seq 1 300); do
        "$ctl" destinations list -o json | jq -e '.[] | select(.name == "example.test" and .state == "down")' >/dev/null && return 0
        sleep 0.1
    done
}

# Starts Postfix as a backup MX for example.test on 127.0.0.1:2600. $1 is extra main.cf text.
pf_start() {
    mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
    chown postfix "$pf/data"
    cat >"$pf/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
myhostname = backup.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 192.0.2.1/32
relay_domains = example.test
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 100
$1
CF
    sed -E -e 's/^([a-z]+ +(unix|fifo|pass|inet) +[^ ]+ +[^ ]+) +y /\1 n /' \
        -e 's/^smtp +inet/127.0.0.1:2600 inet/' /etc/postfix/master.cf >"$pf/etc/master.cf"
    if [[ ! -f $main_cf_backup && ! -f $work/main.cf.created ]]; then
        if [[ -f $main_cf ]]; then cp "$main_cf" "$main_cf_backup"; else touch "$work/main.cf.created"; fi
        echo "alternate_config_directories = $pf/etc" >>"$main_cf"
    fi
    "$postfix_bin" -c "$pf/etc" check
    "$postfix_bin" -c "$pf/etc" start >/dev/null || { echo "postfix did not start" >&2; return 1; }
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/2600) 2>/dev/null && return 0; sleep 0.1; done
    echo "postfix does not listen on 2600" >&2
    return 1
}

pf_queued() { "$postqueue_bin" -c "$pf/etc" -j 2>/dev/null | wc -l; }

pf_cleanup() {
    "$postfix_bin" -c "$pf/etc" stop >/dev/null 2>&1 || true
    if [[ -f $main_cf_backup ]]; then cp "$main_cf_backup" "$main_cf"; elif [[ -f $work/main.cf.created ]]; then rm -f "$main_cf"; fi
}

# mxraftctl reaches the local cluster's admin API over TLS with its admin token (made by up.sh).
export MXRAFT_CA_FILE=$MXRAFT_LOCAL_DIR/tls/ca.pem MXRAFT_TOKEN_FILE=$MXRAFT_LOCAL_DIR/tls/admin.token
