"""Demand planner: replay a demand trace against the backlog policies and a clairvoyant bound.

- :mod:`.traces` builds demand traces (built-in ``steady``, ``diurnal``, ``burst``, ``launch``,
  ``choices``, or a CSV ``minute,recipe,attempts[,choices]``);
- :mod:`.simulation` is a discrete-event model of pools, the job queue and the maintenance pass,
  calling the same :mod:`delula.policies` functions as production;
- :mod:`.oracle` is the clairvoyant upper bound on the hit rate.

:func:`run` ties them together and returns a JSON-serialisable report. On a trace with choices
each policy runs twice: with the maintenance pass's joint sampler (its result) and with the
per-field baseline (its ``"marginal"`` figures beside).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from . import oracle as _oracle
from . import simulation, traces
from .oracle import brute_force, max_served
from .simulation import simulate
from .traces import Trace, make, read_csv

MARGINAL_KEYS = ("hits", "hitRate", "choiceAttempts", "choiceHits", "choiceHitRate", "generations", "work",
                 "expired", "meanStock")

__all__ = ["run", "tradeoff", "simulate", "make", "read_csv", "Trace", "brute_force", "max_served",
           "traces", "simulation"]


def run(trace: str | Trace = "diurnal", policies: Iterable[str] = ("static", "reactive", "forecast"),
        days: float = 7, warmup_days: float = 7, seed: int = 1,
        progress: Callable[[float], None] | None = None, **sim_options) -> dict:
    """Simulate each policy on ``trace`` (a built-in name, a CSV path or a :class:`Trace`;
    ``warmup_days`` then ``days`` scored) and the oracle; the ``--json`` document of
    ``python -m delula simulate``, plus ``demandSeries``: ``[hour, attempts]`` per scored hour.
    ``policies`` is a list of names, one name, or ``"all"``. On a trace with choices each
    policy's result has ``choiceAttempts``, ``choiceHits`` and ``choiceHitRate`` (the joint
    sampler's) and ``marginal``: the same policy's :data:`MARGINAL_KEYS` with the per-field
    sampler."""
    from delula.policies import POLICIES

    if isinstance(policies, str):
        policies = POLICIES if policies == "all" else [policies]
    names = list(policies)
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown backlog policy {name!r}; one of {', '.join(POLICIES)} or all")
    tr = trace if isinstance(trace, Trace) else traces.make(trace, days + warmup_days, seed)
    out: dict = {"trace": tr.name, "days": days, "policies": {}}
    samplers = ("joint", "marginal") if tr.has_choices else ("joint",)
    runs = [(name, sampler) for name in names for sampler in samplers]
    k = len(runs)
    for j, (name, sampler) in enumerate(runs):
        sub = None
        if progress is not None:
            sub = (lambda f, j=j: progress((j + f) / (k + 0.05)))
        result = simulate(tr, name, days_scored=days, warmup_days=warmup_days, seed=seed, progress=sub,
                          choice_sampler=sampler, series=sampler == "joint", **sim_options)
        if sampler == "joint":
            out["policies"][name] = result
        else:
            out["policies"][name]["marginal"] = {key: result[key] for key in MARGINAL_KEYS}
    out["oracle"] = _oracle.oracle(tr, days_scored=days, warmup_days=warmup_days, **sim_options)
    out["demandSeries"] = demand_series(tr, days, warmup_days)
    if progress is not None:
        progress(1.0)
    return out


def tradeoff(trace: str | Trace, levels: Iterable[float], *, policy: str = "forecast",
             done: dict | None = None, days: float = 7, warmup_days: float = 7, seed: int = 1,
             progress: Callable[[float], None] | None = None, **sim_options) -> list[dict]:
    """``[{"serviceLevel", "hitRate", "generations"}]`` of ``policy`` at each service level of
    ``levels``: the trade-off of hit rate against generations. ``done`` maps a level to a result
    already simulated (``run``'s per-policy document), which is reused."""
    levels = list(levels)
    done = done or {}
    tr = trace if isinstance(trace, Trace) else traces.make(trace, days + warmup_days, seed)
    out = []
    for i, level in enumerate(levels):
        result = next((r for lv, r in done.items() if abs(lv - level) < 1e-9), None)
        if result is None:
            sub = None if progress is None else (lambda f, i=i: progress((i + f) / len(levels)))
            result = simulate(tr, policy, days_scored=days, warmup_days=warmup_days, seed=seed,
                              service_level=level, progress=sub, series=False, **sim_options)
        if progress is not None:
            progress((i + 1) / len(levels))
        out.append({"serviceLevel": level, "hitRate": result["hitRate"], "generations": result["generations"]})
    return out


def demand_series(trace: Trace, days: float, warmup_days: float) -> list[list[float]]:
    """``[hour, attempts in the hour before it]`` per scored hour, as the policies' ``series``."""
    import numpy as np

    start = float(warmup_days) * 86400.0
    hours = int(round(float(days) * 24))
    scored = trace.times[(trace.times >= start) & (trace.times < start + hours * 3600.0)]
    counts = np.bincount(((scored - start) // 3600.0).astype(np.int64), minlength=hours)[:hours]
    return [[float(h + 1), int(c)] for h, c in enumerate(counts)]
