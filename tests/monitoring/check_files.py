"""Checks the Grafana dashboard and the alert rules against the documented metrics.

Usage: check_files.py DASHBOARD ALERTS OPERATIONS_MD OUT_RULES

Fails (exit 1, one line per problem) when a dashboard panel lacks a query or a data source,
panels overlap or leave the 24-column grid, a query or rule uses an mxraft metric that
docs/operations.md does not list, or an alert names a runbook entry that has no heading.
Writes every dashboard query, with its variables filled in, to OUT_RULES as recording rules
for promtool to parse.
"""

import json
import re
import sys

import yaml

METRIC = re.compile(r"\b(mxraft_[a-z_]+)")


def documented_metrics(operations: str) -> set[str]:
    return set(re.findall(r"^\| `(mxraft_[a-z_]+)", operations, re.M))


def headings(operations: str) -> set[str]:
    return {h.strip() for h in re.findall(r"^#+ (.+)$", operations, re.M)}


def panels_of(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def check_dashboard(dashboard: dict, metrics: set[str], problems: list[str]) -> list[str]:
    exprs = []
    ids = set()
    cells = {}
    for p in panels_of(dashboard):
        title = p.get("title", "?")
        if p.get("id") in ids:
            problems.append(f"panel {title!r}: id {p.get('id')} used twice")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        x, y, w, h = g.get("x", 0), g.get("y", 0), g.get("w", 0), g.get("h", 0)
        if w <= 0 or h <= 0 or x < 0 or x + w > 24:
            problems.append(f"panel {title!r}: gridPos {g} is outside the 24-column grid")
        for cx in range(x, x + w):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    problems.append(f"panel {title!r} overlaps {cells[(cx, cy)]!r}")
                    break
                cells[(cx, cy)] = title
            else:
                continue
            break
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {title!r}: no ${{datasource}} data source")
        targets = p.get("targets", [])
        if not targets or not all(t.get("expr") for t in targets):
            problems.append(f"panel {title!r}: a target without a query")
        for t in targets:
            expr = t.get("expr", "")
            exprs.append(expr)
            for m in METRIC.findall(expr):
                if m not in metrics:
                    problems.append(f"panel {title!r}: {m} is not a documented metric")
    names = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    for needed in ("datasource", "job"):
        if needed not in names:
            problems.append(f"the dashboard has no ${needed} variable")
    return exprs


def check_alerts(alerts: dict, metrics: set[str], sections: set[str], problems: list[str]) -> None:
    for group in alerts["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", "?")
            for m in METRIC.findall(rule["expr"]):
                if m not in metrics:
                    problems.append(f"alert {name}: {m} is not a documented metric")
            text = " ".join(rule.get("annotations", {}).values())
            for entry in re.findall(r'Runbook: "([^"]+)"', text) + re.findall(r'and "([^"]+)"', text):
                if entry not in sections:
                    problems.append(f"alert {name}: no runbook entry {entry!r} in operations.md")
            if not re.search(r"Runbook:", text) and name not in ("MxraftClockSkew", "MxraftTlsRefused"):
                problems.append(f"alert {name}: names no runbook entry")


def main() -> int:
    dashboard_path, alerts_path, operations_path, out_path = sys.argv[1:5]
    with open(operations_path) as f:
        operations = f.read()
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    with open(alerts_path) as f:
        alerts = yaml.safe_load(f)
    metrics = documented_metrics(operations)
    problems: list[str] = []
    if not metrics:
        problems.append("no documented metrics found in operations.md")
    exprs = check_dashboard(dashboard, metrics, problems)
    check_alerts(alerts, metrics, headings(operations), problems)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query_{i}",
                        "expr": e.replace("$__rate_interval", "5m").replace("$job", "mxraft"),
                    }
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    with open(out_path, "w") as f:
        yaml.safe_dump(rules, f)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(exprs)} dashboard queries, {sum(len(g['rules']) for g in alerts['groups'])} alerts, {len(metrics)} documented metrics")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
