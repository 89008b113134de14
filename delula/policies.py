"""Backlog policies: how many items a recipe's pool should hold, as pure functions.

A policy reads a :class:`RecipeState` (what the pool holds, what is on its way, the recent
demand and lead time) and returns the recipe's **target**. The live maintenance pass
(``backlog.maintain``) and the demand simulator (``delula.planner``) call the very same
functions, so what the simulator scores is what production runs.

- ``static``: the recipe's minimum only (the seed design's service);
- ``reactive``: ``max(minimum, min(max_backlog, ceil(rate × lead × 1.5)))`` (SPEC §5), where
  ``rate`` is the recipe's instant attempts per minute over the last hour — hits and misses
  alike: demand is attempts, so a recipe that ran dry does not look less wanted.
- ``forecast`` (the default): see :func:`forecast`. It plans all recipes of a pass together,
  because they share the global cap.

:func:`plan` is what a pass calls: every recipe's target and the jobs to create now.
:func:`deficit` is how many new jobs a target asks for: the target less what is claimable and
what is already on its way.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from . import forecast as _forecast

SAFETY_FACTOR = 1.5
DEFAULT_LEAD_TIME_MIN = 2.0     # a recipe's lead time before any backlog job of the day completed


@dataclass(frozen=True)
class RecipeState:
    """What a policy knows of one recipe at the time of a pass."""
    minimum: int                    # the recipe's own minimum, else DELULA_MIN_BACKLOG
    completed: int = 0              # claimable items now
    in_flight: int = 0              # backlog jobs pending or processing
    rate_per_min: float = 0.0       # instant attempts per minute over the last hour
    lead_time_min: float = DEFAULT_LEAD_TIME_MIN  # median minutes from a backlog job's creation to its completion
    forecast: tuple[float, ...] = ()  # forecast attempts/min per bucket of PassContext.bucket_min, from now
    policy: str | None = None       # the recipe's own policy, else the pass's


@dataclass(frozen=True)
class PassContext:
    """What a policy knows of the whole pass: the bounds and the shared capacity."""
    max_backlog: int
    service_level: float = 0.98
    concurrency: int = 3            # DELULA_MAX_CONCURRENT_JOBS: jobs running at once, users' first
    run_time_min: float = DEFAULT_LEAD_TIME_MIN / 4  # mean minutes a job runs (start to end)
    interval_min: float = 1.0       # minutes between maintenance passes
    bucket_min: float = _forecast.BUCKET_MIN  # the forecast's bucket


@dataclass(frozen=True)
class Order:
    """A policy's answer for one recipe: its target, and the backlog jobs to create now."""
    target: int
    jobs: int
    policy: str = field(default="")


def static(state: RecipeState, max_backlog: int) -> int:
    """The minimum only."""
    return state.minimum


def reactive(state: RecipeState, max_backlog: int) -> int:
    """Enough to cover the attempts expected while a refill is on its way, never below the
    minimum, never above ``max_backlog`` unless the minimum is."""
    demand = max(0.0, state.rate_per_min) * max(0.0, state.lead_time_min) * SAFETY_FACTOR
    # round first: 0.1 × 20 × 1.5 is 3.0000000000000004 in floating point, and means 3
    return max(state.minimum, min(max_backlog, math.ceil(round(demand, 9))))


# The forecast policy's constants, tuned with the demand simulator (bench/planner.py).
THROUGHPUT_MARGIN = 0.9   # plan on this share of the cap's throughput: a shortfall snowballs
HORIZON_MIN = _forecast.HORIZON_MIN   # look this far ahead for peaks the cap cannot keep up with


def poisson_quantile(mean: float, level: float) -> int:
    """The smallest ``k`` with ``P(Poisson(mean) <= k) >= level``."""
    if mean <= 0:
        return 0
    if mean > 200:   # the normal approximation, with a continuity correction
        z = NormalDist().inv_cdf(level)
        return max(0, math.ceil(mean + z * math.sqrt(mean) - 0.5))
    k, p = 0, math.exp(-mean)
    cdf = p
    while cdf < level:
        k += 1
        p *= mean / k
        cdf += p
    return k


def _bounded(minimum: int, max_backlog: int, items: int) -> int:
    return max(minimum, min(max_backlog, items))


def forecast(states: Sequence[RecipeState], ctx: PassContext) -> list[Order]:
    """Targets from forecast demand, all recipes of a pass at once.

    - **Cover**: the :attr:`~PassContext.service_level` quantile of the attempts expected while a
      refill is on its way (the maintenance interval plus the lead time), at the forecast rate
      of the coming bucket or the last hour's, whichever is higher.
    - **Pre-build**: over the next :data:`HORIZON_MIN`, the stock that must exist now so that
      forecast demand beyond :data:`THROUGHPUT_MARGIN` of the cap's throughput
      (``concurrency ÷ run time``) can still be served — a backward pass over the buckets,
      ``need[b] = max(0, need[b+1] + demand[b] − capacity[b])`` — shared among the recipes by
      their demand up to the end of that peak, each bounded by ``max_backlog`` (what one
      recipe cannot hold goes to the others: their stock frees the cap for it at the peak).
    - **Release**: jobs up to the cover are ordered at once; pre-build jobs only while the
      backlog jobs on their way are fewer than the cap plus one interval's throughput, the
      recipe with the fewest minutes of stock first — so an urgent refill never queues behind
      a day's pre-build.

    Never below the recipe's minimum; a recipe with no forecast and no recent attempt gets its
    minimum and learns.
    """
    n = len(states)
    if n == 0:
        return []
    bucket = ctx.bucket_min
    n_buckets = max(1, int(HORIZON_MIN // bucket))
    throughput = THROUGHPUT_MARGIN * ctx.concurrency / max(ctx.run_time_min, 1e-6)   # items/min
    recent = np.array([st.rate_per_min for st in states], dtype=float)
    lam = _rates(states, n_buckets)
    now_rate = np.maximum(lam[:, 0], recent)
    lam[:, 0] = now_rate
    cover = [poisson_quantile(now_rate[i] * (ctx.interval_min + st.lead_time_min), ctx.service_level)
             for i, st in enumerate(states)]
    excess = lam.sum(axis=0) * bucket - throughput * bucket
    need = np.zeros(n_buckets + 1)
    for b in range(n_buckets - 1, -1, -1):
        need[b] = max(0.0, need[b + 1] + excess[b])
    extra = [0.0] * n
    if need[0] > 0:
        end = int(np.argmax(need[1:] == 0.0)) if (need[1:] == 0.0).any() else n_buckets - 1
        weight = lam[:, : end + 1].sum(axis=1).tolist()
        room = [max(0, ctx.max_backlog - max(cover[i], st.minimum)) for i, st in enumerate(states)]
        extra = _share(float(need[0]), weight, room)
    targets, jobs = [], []
    for i, st in enumerate(states):
        cov = _bounded(st.minimum, ctx.max_backlog, cover[i])
        targets.append(_bounded(st.minimum, ctx.max_backlog, cov + math.ceil(round(extra[i], 6))))
        jobs.append(max(0, cov - st.completed - st.in_flight))
    # pre-build, the fewest minutes of stock first, while the release allows
    flying = sum(st.in_flight for st in states) + sum(jobs)
    release = math.ceil(ctx.concurrency + throughput * ctx.interval_min)
    minutes_of_stock = sorted(range(n), key=lambda i: (states[i].completed + states[i].in_flight + jobs[i])
                              / max(now_rate[i], 1e-9))
    for i in minutes_of_stock:
        if flying >= release:
            break
        want = targets[i] - states[i].completed - states[i].in_flight - jobs[i]
        if want > 0:
            take = min(want, release - flying)
            jobs[i] += take
            flying += take
    return [Order(t, j, "forecast") for t, j in zip(targets, jobs)]


def _rates(states: Sequence[RecipeState], n_buckets: int) -> np.ndarray:
    """``(len(states), n_buckets)`` forecast rates: each state's forecast, its last bucket
    repeated when it is shorter, zeros without one. Rows of one ``forecast.ahead`` matrix, in
    order and long enough, are sliced from it at once (the same numbers)."""
    n = len(states)
    first = states[0].forecast
    if (isinstance(first, _forecast.Ahead) and first.matrix.shape[1] >= n_buckets
            and all(type(st.forecast) is _forecast.Ahead and st.forecast.matrix is first.matrix
                    for st in states)):
        rows = [st.forecast.row for st in states]
        if rows == list(range(first.matrix.shape[0])):
            return np.array(first.matrix[:, :n_buckets], dtype=float)
        return np.array(first.matrix[rows, :n_buckets], dtype=float)
    lam = np.zeros((n, n_buckets))
    for i, st in enumerate(states):
        f = np.asarray(st.forecast[:n_buckets], dtype=float)
        lam[i, :len(f)] = f
        if 0 < len(f) < n_buckets:
            lam[i, len(f):] = f[-1]
    return lam


def _share(amount: float, weight: Sequence[float], room: Sequence[float]) -> list[float]:
    """``amount`` split in proportion to ``weight``, each share at most its ``room``; what a
    full share cannot take goes to the others (water-filling)."""
    n = len(weight)
    out = [0.0] * n
    open_ = [i for i in range(n) if room[i] > 0 and weight[i] > 0]
    left = amount
    while left > 1e-9 and open_:
        w = sum(weight[i] for i in open_)
        full = [i for i in open_ if out[i] + left * weight[i] / w >= room[i]]
        if not full:
            for i in open_:
                out[i] += left * weight[i] / w
            break
        for i in full:
            left -= room[i] - out[i]
            out[i] = float(room[i])
        filled = set(full)
        open_ = [i for i in open_ if i not in filled]
    return out


PER_RECIPE: dict[str, Callable[[RecipeState, int], int]] = {"static": static, "reactive": reactive}
POLICIES: tuple[str, ...] = ("static", "reactive", "forecast")


def target(policy: str, state: RecipeState, max_backlog: int) -> int:
    """The target of one recipe on its own under ``policy`` (``forecast`` plans it alone);
    ``ValueError`` for an unknown name."""
    return plan(policy, [state], PassContext(max_backlog=max_backlog))[0].target


def plan(policy: str, states: Sequence[RecipeState], ctx: PassContext) -> list[Order]:
    """What one pass does: each recipe's target and the jobs to create now, under ``policy``
    or the recipe's own (:attr:`RecipeState.policy`). ``ValueError`` for an unknown name."""
    for name in {policy, *(st.policy for st in states if st.policy)}:
        if name not in POLICIES:
            raise ValueError(f"unknown backlog policy {name!r}; one of {', '.join(POLICIES)}")
    orders: list[Order | None] = [None] * len(states)
    planned = [i for i, st in enumerate(states) if (st.policy or policy) == "forecast"]
    if planned:
        for i, o in zip(planned, forecast([states[i] for i in planned], ctx)):
            orders[i] = o
    for i, st in enumerate(states):
        if orders[i] is None:
            name = st.policy or policy
            t = PER_RECIPE[name](st, ctx.max_backlog)
            orders[i] = Order(t, deficit(st, t), name)
    return orders  # type: ignore[return-value]


def deficit(state: RecipeState, target_items: int) -> int:
    """New jobs to create: the target less the claimable items and those on their way."""
    return max(0, target_items - state.completed - state.in_flight)
