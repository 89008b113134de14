"""Demand planner: replay a demand trace against the backlog policies and a clairvoyant bound.

- :mod:`.traces` builds demand traces (built-in ``steady``, ``diurnal``, ``burst``, ``launch``,
  or a CSV ``minute,recipe,attempts``);
- :mod:`.simulation` is a discrete-event model of pools, the job queue and the maintenance pass,
  calling the same :mod:`delula.policies` functions as production;
- :mod:`.oracle` is the clairvoyant upper bound on the hit rate.

:func:`run` ties them together and returns a JSON-serialisable report.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from . import oracle as _oracle
from . import simulation, traces
from .oracle import brute_force, max_served
from .simulation import simulate
from .traces import Trace, make, read_csv

__all__ = ["run", "simulate", "make", "read_csv", "Trace", "brute_force", "max_served",
           "traces", "simulation"]


def run(trace: str = "diurnal", policies: Iterable[str] = ("static", "reactive"), days: float = 7,
        warmup_days: float = 7, seed: int = 1, progress: Callable[[float], None] | None = None,
        **sim_options) -> dict:
    """Simulate each policy on ``trace`` (``warmup_days`` then ``days`` scored) and the oracle."""
    policies = list(policies)
    tr = traces.make(trace, days + warmup_days, seed)
    out: dict = {"trace": trace, "days": days, "policies": {}}
    k = len(policies)
    for j, name in enumerate(policies):
        sub = None
        if progress is not None:
            sub = (lambda f, j=j: progress((j + f) / (k + 0.05)))
        out["policies"][name] = simulate(tr, name, days_scored=days, warmup_days=warmup_days,
                                         seed=seed, progress=sub, **sim_options)
    out["oracle"] = _oracle.oracle(tr, days_scored=days, warmup_days=warmup_days, **sim_options)
    if progress is not None:
        progress(1.0)
    return out
