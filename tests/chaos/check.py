"""The checker of the fault tests: what was acknowledged against what the primary received.

    lost        acknowledged (250 after the dot) but never delivered        must be 0
    unexpected  delivered but never sent                                    must be 0
    duplicates  deliveries beyond the first of a message; each must be explained by a
                delivery in flight at a fault: the primary went down before its 250, or
                the node that made the earlier delivery was killed, paused, cut off, lost
                power or its disk around then (so it could not commit the result)
    recovered   no answer after the dot (unknown) but delivered: allowed
    concurrent  two deliveries of one message from different nodes overlapping in time

Deliveries are the recorder's "got" events; faults are the harness's event list.
"""
from collections import Counter, defaultdict

# Faults after which a node may not have committed the result of a delivery it made.
NODE_FAULTS = {"kill", "power", "pause", "partition", "isolate-primary", "disk-full", "wipe",
               "skew"}


def explains(fault, node, t, window):
    """Whether `fault` hit `node` while a delivery it made at `t` could still be unreported."""
    if fault["kind"] not in NODE_FAULTS or node not in fault["nodes"]:
        return False
    start, end = fault["t"], fault.get("until", fault["t"])
    return start <= t + window and end >= t - 2


def check(history, deliveries, faults, peers, window):
    """Returns the figures; `peers` maps a node's address to its id, `window` is how long
    after a delivery a fault can still keep its result from being committed (the claim
    lease plus the clock-skew allowance)."""
    attempts = {}
    for h in history:
        attempts[h["id"]] = h
    ok = {i for i, h in attempts.items() if h["outcome"] == "ok"}
    info = {i for i, h in attempts.items() if h["outcome"] == "info"}
    failed_after_dot = {i for i, h in attempts.items()
                        if h["outcome"] == "fail" and h.get("stage") == "dot"}
    got = [d for d in deliveries if d.get("ev") == "got"]
    acked = Counter((d["id"], d["peer"]) for d in deliveries if d.get("ev") == "acked")
    by_id = defaultdict(list)
    for d in got:
        by_id[d["id"]].append(d)
    delivered = set(by_id)
    lost = sorted(ok - delivered)
    unexpected = sorted(i for i in delivered if i not in attempts)

    duplicates = 0
    unexplained = []
    concurrent = []
    for chaos_id, copies in by_id.items():
        if len(copies) < 2:
            continue
        copies.sort(key=lambda d: d["t"])
        duplicates += len(copies) - 1
        seen_acks = Counter()
        for i, earlier in enumerate(copies[:-1]):
            key = (chaos_id, earlier["peer"])
            seen_acks[key] += 1
            not_acked = seen_acks[key] > acked[key]
            node = peers.get(earlier["peer"])
            hit = any(explains(f, node, earlier["t"], window) for f in faults)
            if not (not_acked or hit):
                unexplained.append({"id": chaos_id, "peer": earlier["peer"], "t": earlier["t"]})
            later = copies[i + 1]
            if later["peer"] != earlier["peer"] and later["started"] < earlier["t"]:
                concurrent.append(chaos_id)
    return {
        "attempts": len(attempts),
        "acknowledged": len(ok),
        "refused": sum(1 for h in attempts.values() if h["outcome"] == "fail"),
        "unknown": len(info),
        "delivered": len(delivered),
        "deliveries": len(got),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "unexpected": len(unexpected),
        "unexpected_ids": unexpected[:20],
        "duplicates": duplicates,
        "duplicates_unexplained": len(unexplained),
        "unexplained": unexplained[:20],
        "recovered": len(info & delivered),
        "refused_then_delivered": len(failed_after_dot & delivered),
        "concurrent": len(concurrent),
    }


def verdict(figures, divergence):
    """The failures, as sentences; empty when the run upholds the guarantees."""
    problems = []
    if figures["lost"]:
        problems.append(f"{figures['lost']} acknowledged messages were never delivered "
                        f"(e.g. {', '.join(figures['lost_ids'][:5])})")
    if figures["unexpected"]:
        problems.append(f"{figures['unexpected']} delivered messages were never sent")
    if figures["duplicates_unexplained"]:
        problems.append(f"{figures['duplicates_unexplained']} duplicate deliveries with no "
                        f"fault to explain them: {figures['unexplained'][:3]}")
    problems.extend(divergence)
    return problems
