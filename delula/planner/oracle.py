"""A clairvoyant upper bound on the hit rate of any backlog policy.

The oracle knows every scored attempt in advance and builds one item per attempt it serves,
as late as it can (earliest deadline first), on the same ``concurrency`` slots. Where it relaxes
a constraint it relaxes it optimistically, so that its hit rate bounds the policies from above
and its generations from below: every job takes the *mean* lead time ``(lo + hi) / 2`` (the
cap's long-run throughput, without the spread), nothing fails, no fallback jobs occupy slots,
and the per-recipe stock bound and the item lifetime are dropped (an item built as late as it
can be waits only as long as the cap makes it), and the pool — empty at the start of the
warm-up — may be filled during the warm-up. It serves an attempt or not; it never needs more
than one generation per attempt served, so its generations are its hits.

With identical job lengths ``L`` and ``c`` slots, the most attempts served by their deadlines is
found greedily: take attempts in deadline order, give each the earliest free slot; if that job
would end after the attempt, drop the attempt (all jobs are alike, so dropping the newcomer is as
good as dropping any earlier one). :func:`brute_force` checks this on small cases.
"""
from __future__ import annotations

import heapq
from itertools import combinations

import numpy as np

from .traces import Trace

DAY = 86400.0


def max_served(deadlines, c: int, L: float, t0: float = 0.0) -> int:
    """How many of ``deadlines`` can each get an item of length ``L`` done by then, on ``c`` slots from ``t0``."""
    slots = [float(t0)] * int(c)
    served = 0
    for d in sorted(float(x) for x in deadlines):
        f = slots[0]
        if f + L <= d:
            heapq.heapreplace(slots, f + L)
            served += 1
    return served


def feasible(deadlines, c: int, L: float, t0: float = 0.0) -> bool:
    """Whether all ``deadlines`` can be met: EDF on the earliest free slot."""
    slots = [float(t0)] * int(c)
    for d in sorted(deadlines):
        f = heapq.heappop(slots)
        if f + L > d:
            return False
        heapq.heappush(slots, f + L)
    return True


def brute_force(attempt_times, c: int, L: float, t0: float = 0.0) -> int:
    """The largest feasible subset of ``attempt_times``, by enumeration (small cases only)."""
    times = list(attempt_times)
    for k in range(len(times), 0, -1):
        if any(feasible(sub, c, L, t0) for sub in combinations(times, k)):
            return k
    return 0


def oracle(trace: Trace, *, days_scored: float, warmup_days: float, concurrency: int = 3,
           lead_time: tuple[float, float] = (5.0, 40.0), **_ignored) -> dict:
    """``{"hitRate", "generations"}`` of the clairvoyant schedule over the scored days."""
    start = float(warmup_days) * DAY
    end = start + float(days_scored) * DAY
    times = np.asarray(trace.times, dtype=float)
    scored = times[(times >= start) & (times < end)]
    mean_lead = (float(lead_time[0]) + float(lead_time[1])) / 2.0
    served = max_served(scored.tolist(), concurrency, mean_lead, 0.0)
    n = len(scored)
    return {"hitRate": served / n if n else 0.0, "generations": int(served)}
