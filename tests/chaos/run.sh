#!/usr/bin/env bash
# The fault-injection harness (see docs/guarantees.md, "How the guarantees are tested").
#
#   tests/chaos/run.sh                   the short seeded matrix that tests/run.sh runs (~6 min)
#   tests/chaos/run.sh --long [--seeds N] [--report FILE]
#                                        every scenario with N seeds (default 2), 60 s of
#                                        faults each (~45 min), the negative controls and the
#                                        lone-Postfix baseline; writes a Markdown report
#   tests/chaos/run.sh --scenario NAME --seed N [chaos.py options]
#                                        one run, as a failure prints it
#
# MXRAFT_CHAOS_SEED sets the first seed of the matrices (default 1). Needs root; builds the
# release binaries it needs (mxraftd, mxraftctl, chaosfs) unless MXRAFT_PREBUILT=1.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
chaos=$root/tests/chaos
[[ $(id -u) == 0 ]] || { echo "chaos: needs root (network namespaces, FUSE mounts)" >&2; exit 1; }

if [[ ${MXRAFT_PREBUILT:-0} != 1 ]]; then
    (cd "$root" && cargo build --release --locked -p mxraftd -p mxraftctl -p mxraft-chaosfs)
fi
for tool in nsenter nft faketime; do
    command -v "$tool" >/dev/null || { echo "chaos: $tool is missing (scripts/install-deps.sh --test installs it)" >&2; exit 1; }
done

if [[ ${1:-} == --scenario ]]; then
    exec python3 "$chaos/chaos.py" "$@"
fi

long=0 seeds=2 report=""
while (($#)); do
    case $1 in
        --long) long=1 ;;
        --seeds) seeds=$2; shift ;;
        --report) report=$2; shift ;;
        *) echo "chaos: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
base=${MXRAFT_CHAOS_SEED:-1}
results=$(mktemp /tmp/mxraft-chaos-results.XXXXXX)
start=$SECONDS

echo "--- the checker's own tests (each feeds it a history with one flaw)"
(cd "$chaos" && python3 -m unittest -q test_check)

failed=()
one() { # scenario seed duration [chaos.py options]; a failure is counted, the matrix goes on
    local scenario=$1 seed=$2 duration=$3
    shift 3
    echo "--- $scenario, seed $seed, ${duration} s of faults $*"
    python3 "$chaos/chaos.py" --scenario "$scenario" --seed "$seed" --duration "$duration" \
        --json "$results" "$@" || failed+=("$scenario --seed $seed --duration $duration $*")
}

if ((long)); then
    scenarios=(kill pause partition isolate-leader primary-flap power-one power-all power skew
        disk wipe pause-kill part-kill mixed)
    for ((i = 0; i < seeds; i++)); do
        for s in "${scenarios[@]}"; do one "$s" $((base + i)) 60; done
    done
    one mixed $((base + seeds)) 60 --nodes 5
    one isolate-leader "$base" 60 --unsafe ack --expect-loss
    one power-all "$base" 60 --unsafe fsync --expect-loss
    one power-one "$base" 60 --unsafe fsync --expect-loss
    python3 "$chaos/postfix_baseline.py" --seed "$base" --json "$results" || failed+=("postfix baseline")
    printf '%s\n' "${failed[@]}" >"$results.failed"
    python3 "$chaos/report.py" "$results" "$((SECONDS - start))" "$results.failed" \
        >"${report:-$root/docs/chaos-report.md}"
    rm -f "$results.failed"
    echo "report: ${report:-$root/docs/chaos-report.md}"
else
    one kill "$base" 25
    one partition "$base" 25
    one power "$base" 25
    one mixed "$base" 40
    one isolate-leader "$base" 20 --unsafe ack --expect-loss
    one power-all "$base" 20 --unsafe fsync --expect-loss
fi
rm -f "$results"
if ((${#failed[@]})); then
    echo "chaos: ${#failed[@]} runs failed; rerun each with tests/chaos/run.sh --scenario ...:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "chaos: all runs passed in $((SECONDS - start)) s"
