#!/usr/bin/env python3
"""Turns the JSON lines of a `tests/chaos/run.sh --long` run into the Markdown report.

    report.py RESULTS.jsonl SECONDS [FAILED_RUNS_FILE] > docs/chaos-report.md
"""
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict


def machine():
    cores = os.cpu_count()
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // (1024 * 1024)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = "?"
    return f"{cores} cores, {mem} GiB, Linux {platform.release()}, commit {commit or '?'}"


def row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main():
    results = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    seconds = int(sys.argv[2])
    failed = []
    if len(sys.argv) > 3 and os.path.exists(sys.argv[3]):
        failed = [line.strip() for line in open(sys.argv[3]) if line.strip()]
    mx = [r for r in results if r.get("system") != "postfix" and not r.get("unsafe")]
    controls = [r for r in results if r.get("unsafe")]
    postfix = [r for r in results if r.get("system") == "postfix"]

    out = ["# Fault-injection report", "",
           f"Written by `tests/chaos/run.sh --long` on {time.strftime('%Y-%m-%d')} "
           f"({machine()}), in {seconds // 60} minutes. How the harness works and what each "
           "figure means: [guarantees.md](guarantees.md#how-the-guarantees-are-tested).", ""]

    total = defaultdict(int)
    for r in mx:
        for k in ("attempts", "acknowledged", "lost", "unexpected", "duplicates",
                  "duplicates_unexplained", "recovered", "faults", "power_cuts", "concurrent"):
            total[k] += r[k]
    diverged = sum(1 for r in mx if not r["digests_equal"])
    out += ["## mxraft", "",
            f"{len(mx)} runs, {total['faults']} faults ({total['power_cuts']} power cuts), "
            f"{total['acknowledged']} messages acknowledged: **{total['lost']} lost**, "
            f"{total['unexpected']} unexpected, {total['duplicates']} duplicates "
            f"({total['duplicates_unexplained']} unexplained), {total['concurrent']} concurrent "
            f"deliveries, {diverged} runs whose nodes' states differed after the heal.", ""]
    out.append(row(["scenario", "nodes", "seeds", "faults", "acknowledged", "refused",
                    "unknown", "lost", "unexpected", "duplicates (unexplained)", "recovered",
                    "concurrent", "states equal", "drain, s (max)"]))
    out.append(row(["---"] * 14))
    groups = defaultdict(list)
    for r in mx:
        groups[(r["scenario"], r["nodes"])].append(r)
    for (scenario, nodes), rs in groups.items():
        s = lambda k: sum(r[k] for r in rs)  # noqa: E731
        out.append(row([scenario, nodes, ", ".join(str(r["seed"]) for r in rs), s("faults"),
                        s("acknowledged"), s("refused"), s("unknown"), s("lost"),
                        s("unexpected"), f"{s('duplicates')} ({s('duplicates_unexplained')})",
                        s("recovered"), s("concurrent"),
                        "yes" if all(r["digests_equal"] for r in rs) else "**no**",
                        max(r["drain_seconds"] for r in rs)]))
    kinds = sorted({k for r in mx for k in r.get("fault_kinds", [])})
    out += ["", f"Fault kinds injected: {', '.join(f'`{k}`' for k in kinds)}.", ""]

    out += ["## Negative controls", "",
            "The same harness against builds told to be unsafe (`--unsafe-testing`): each must "
            "report lost mail, or the harness could not see a loss.", "",
            row(["scenario", "unsafe mode", "seed", "faults", "acknowledged", "lost"]),
            row(["---"] * 6)]
    for r in controls:
        mode = {"ack": "`testing.ack_before_commit`", "fsync": "`testing.skip_log_fsync`"}
        out.append(row([r["scenario"], mode.get(r["unsafe"], r["unsafe"]), r["seed"],
                        r["faults"], r["acknowledged"], f"**{r['lost']}**"]))

    if postfix:
        out += ["", "## One Postfix as the backup MX", "",
                "Debian's Postfix on one box, its queue on the same chaosfs, the same load with "
                "the primary down, the same checker. `disk-lost` is the box dying for good: "
                "its replacement starts with an empty queue (for mxraft, `wipe` replaces a node "
                "the same way).", "",
                row(["fault", "faults", "attempts", "acknowledged", "refused", "unknown",
                     "lost", "duplicates"]), row(["---"] * 8)]
        for r in postfix:
            out.append(row([r["scenario"].removeprefix("postfix-"), r["faults"], r["attempts"],
                            r["acknowledged"], r["refused"], r["unknown"], f"**{r['lost']}**",
                            r["duplicates"]]))
    out += ["", "## Runs that failed", ""]
    if failed:
        out += ["- `python3 tests/chaos/postfix_baseline.py`" if f.startswith("postfix")
                else f"- `tests/chaos/run.sh --scenario {f}`" for f in failed]
    else:
        out.append("None.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
