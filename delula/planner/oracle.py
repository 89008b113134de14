"""A clairvoyant upper bound on the hit rate of any backlog policy.

The oracle knows every scored attempt in advance and builds one item per attempt it serves,
as late as it can (earliest deadline first), on the same ``concurrency`` slots. Where it relaxes
a constraint it relaxes it optimistically, so that its hit rate bounds the policies from above
and its generations from below: every job takes the *mean* lead time ``(lo + hi) / 2`` (the
cap's long-run throughput, without the spread), nothing fails, no fallback jobs occupy slots,
the pool — empty at the start of the warm-up — may be filled during the warm-up, the item
lifetime is dropped, and the per-recipe stock bound ``max_backlog`` is kept only in total: at
no time may more than ``recipes × max_backlog`` items wait (plus ``concurrency``, the most that
whole jobs can beat a fluid rate by). It serves an attempt or not and never needs more than one
generation per attempt served, so its generations are its hits.

Two bounds, each a relaxation, and the oracle takes the lower:

- :func:`max_served`: EDF on the slots with unbounded stock (exact for that relaxation);
- :func:`max_served_stocked`: the fluid schedule built as late as it can, backwards from the
  end at ``concurrency / L`` items a second, dropping an attempt whenever the items that would
  have to wait at some moment exceed the stock bound.

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


def max_served_stocked(deadlines, c: int, L: float, stock: float, t0: float = 0.0) -> int:
    """How many of ``deadlines`` a fluid production of ``c / L`` items a second from ``t0`` can
    serve if at most ``stock`` items may ever wait: a backward sweep that builds each item as
    late as it can and drops an attempt when the items owed before a moment exceed ``stock``."""
    rate = c / L if L > 0 else float("inf")
    owed = 0.0          # items that must be built before the current moment, for later attempts
    dropped = 0
    later = None
    for d in sorted((float(x) for x in deadlines), reverse=True):
        if later is not None:
            owed = max(0.0, owed - rate * (later - d))
        later = d
        owed += 1.0
        if owed > stock + 1e-9:
            owed -= 1.0
            dropped += 1
    if later is not None:   # nothing was built before t0 (whole items only: the optimistic rounding)
        owed = max(0.0, owed - rate * (later - t0))
        dropped += int(owed + 1e-9)
    n = len(deadlines) if hasattr(deadlines, "__len__") else 0
    return max(0, n - dropped)


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
           lead_time: tuple[float, float] = (5.0, 40.0), max_backlog: int = 30, **_ignored) -> dict:
    """``{"hitRate", "generations"}`` of the clairvoyant schedule over the scored days."""
    start = float(warmup_days) * DAY
    end = start + float(days_scored) * DAY
    times = np.asarray(trace.times, dtype=float)
    scored = times[(times >= start) & (times < end)]
    mean_lead = (float(lead_time[0]) + float(lead_time[1])) / 2.0
    deadlines = scored.tolist()
    stock = len(trace.recipes) * max_backlog + concurrency
    served = min(max_served(deadlines, concurrency, mean_lead, 0.0),
                 max_served_stocked(deadlines, concurrency, mean_lead, stock, 0.0))
    n = len(scored)
    return {"hitRate": served / n if n else 0.0, "generations": int(served)}
