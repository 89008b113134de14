"""Demand forecasts for the ``forecast`` backlog policy: pure functions over hourly counts.

The input is a matrix of instant attempts per recipe and hour (``counts[r, h]``, oldest hour
first, hour ``0`` starting at hour-of-week ``first_how``; Monday 00:00 is hour-of-week 0). The
live pass builds it from ``demand_minutes`` (:func:`delula.demand.hourly`), the simulator from
its own attempts; both call :func:`profile` and :func:`rates`, so the forecast production runs
is the one the simulator scores.

The model, stated once:

- **Shape** — the total demand's hour-of-week profile: half the mean attempts/min of that hour
  of the week over the history, half the mean of that hour over every day of its kind (weekday
  or weekend), which has five times the observations (an hour never seen takes the overall
  mean). The total is used because it is far less noisy than a recipe's own.
- **Level** — the last :data:`LEVEL_HOURS` hours' total against what the shape expected for
  them, clipped to ``[LEVEL_MIN, LEVEL_MAX]``, so a week that runs hotter or colder than the
  last is followed within hours.
- **Share** — each recipe's part of the total over the last :data:`SHARE_HOURS` hours.
- A recipe's forecast rate for a future hour is ``share × level × shape(hour)``, but never less
  than its own last hour scaled by the shape (``last_hour × shape(hour) / shape(now)``): a
  launch or a burst is believed at once, not after a week.

A recipe with no history forecasts nothing and the policy falls back to its minimum; it learns
as its attempts are recorded.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

HOURS_PER_WEEK = 168
LEVEL_HOURS = 24
LEVEL_MIN, LEVEL_MAX = 0.5, 2.0
SHARE_HOURS = 24
HISTORY_HOURS = 28 * 24     # the live pass reads this much history
HORIZON_MIN = 24 * 60       # a forecast looks this far ahead ...
BUCKET_MIN = 15.0           # ... in buckets of this many minutes
KIND_WEIGHT = 0.5           # the shape: this much the hour's kind of day, the rest its hour of week


@dataclass(frozen=True)
class Profile:
    """What the forecast learnt from the history, as of the end of its last (complete) hour."""
    shape: np.ndarray           # (168,) total attempts/min per hour of week
    share: np.ndarray           # (R,) each recipe's share of the total, recent
    level: float                # recent total ÷ what the shape expected
    now_how: int                # hour of week of the hour that follows the history

    @property
    def known(self) -> bool:
        return bool(self.shape.any())


def profile(counts: np.ndarray, first_how: int) -> Profile:
    """Learn a :class:`Profile` from ``counts[r, h]`` (attempts of recipe ``r`` in hour ``h``);
    the hours before the first attempt are left out (nothing was recorded yet)."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise ValueError("counts must be a (recipes × hours) matrix")
    n_rec, n_hours = counts.shape
    now_how = int((first_how + n_hours) % HOURS_PER_WEEK)
    busy = np.flatnonzero(counts.sum(axis=0)) if n_rec else np.zeros(0, dtype=int)
    if len(busy):   # the hours before the first recorded attempt are not history
        first_how = int((first_how + busy[0]) % HOURS_PER_WEEK)
        counts = counts[:, busy[0]:]
        n_hours = counts.shape[1]
    if n_hours == 0 or n_rec == 0 or not len(busy):
        return Profile(np.zeros(HOURS_PER_WEEK), np.zeros(n_rec), 1.0, now_how)
    total = counts.sum(axis=0) / 60.0                       # attempts/min per hour
    how = (first_how + np.arange(n_hours)) % HOURS_PER_WEEK
    seen = np.bincount(how, minlength=HOURS_PER_WEEK)
    sums = np.bincount(how, weights=total, minlength=HOURS_PER_WEEK)
    # the same hour of the same kind of day (weekday or weekend), averaged over all such days
    kind = np.where(how // 24 >= 5, 24, 0) + how % 24
    kind_seen = np.bincount(kind, minlength=48)
    kind_mean = np.divide(np.bincount(kind, weights=total, minlength=48), kind_seen,
                          out=np.full(48, total.mean()), where=kind_seen > 0)
    week = np.arange(HOURS_PER_WEEK)
    by_kind = kind_mean[np.where(week // 24 >= 5, 24, 0) + week % 24]
    by_how = np.divide(sums, seen, out=by_kind.copy(), where=seen > 0)
    shape = KIND_WEIGHT * by_kind + (1.0 - KIND_WEIGHT) * by_how

    k = min(LEVEL_HOURS, n_hours)
    expected = shape[how[-k:]].sum()
    level = float(np.clip(total[-k:].sum() / expected, LEVEL_MIN, LEVEL_MAX)) if expected > 0 else 1.0

    recent = counts[:, -SHARE_HOURS:].sum(axis=1)
    share = recent / recent.sum() if recent.sum() > 0 else np.zeros(n_rec)
    return Profile(shape, share, level, now_how)


def hourly_matrix(rows, recipe_ids, start: datetime, hours: int) -> np.ndarray:
    """``counts[r, h]``: the attempts of ``recipe_ids[r]`` in hour ``h`` since ``start``, from
    ``(hour, recipe_id, attempts)`` rows (``storage.demand.hourly``): the live pass's input to
    :func:`profile`. Rows of several parts of one hour and recipe are added; a row outside the
    hours, off the hour or of another recipe is left out."""
    n = len(recipe_ids)
    index = {rid: i for i, rid in enumerate(recipe_ids)}
    cells, values = [], []
    for at, rid, attempts in rows:
        i = index.get(rid)
        if i is None:
            continue
        offset = (at - start).total_seconds()
        h = int(offset // 3600)
        if offset != h * 3600 or not 0 <= h < hours:
            continue
        cells.append(i * hours + h)
        values.append(attempts)
    if not values:
        return np.zeros((n, hours))
    return np.bincount(cells, weights=np.asarray(values, dtype=float), minlength=n * hours).reshape(n, hours)


def rates(p: Profile, last_hour_per_min: np.ndarray, minute_of_hour: float, buckets: int,
          bucket_min: float) -> np.ndarray:
    """``(R, buckets)`` forecast attempts/min of each recipe for the next ``buckets`` buckets of
    ``bucket_min`` minutes, from ``minute_of_hour`` into the hour of week ``p.now_how``;
    ``last_hour_per_min[r]`` is each recipe's attempts/min over the last 60 minutes."""
    last = np.asarray(last_hour_per_min, dtype=float)
    offsets = minute_of_hour + bucket_min * (np.arange(buckets) + 0.5)
    how = (p.now_how + (offsets // 60).astype(int)) % HOURS_PER_WEEK
    shape = p.shape[how]                                    # (buckets,)
    now_shape = p.shape[p.now_how]
    planned = np.outer(p.share * p.level, shape)
    if now_shape > 0:
        floor = np.outer(last, shape / now_shape)
    else:
        floor = np.repeat(last[:, None], buckets, axis=1)
    return np.maximum(planned, floor)


class Ahead(Sequence):
    """One recipe's forecast, row ``row`` of the matrix :func:`ahead` computed for all recipes at
    once: a read-only sequence of floats equal to the tuple of that row (``==``, ``hash``), read
    lazily, so a pass over thousands of recipes never makes a Python float per bucket; the policy
    (``policies.forecast``) takes the rows of one matrix as the matrix itself."""

    __slots__ = ("matrix", "row")

    def __init__(self, matrix: np.ndarray, row: int):
        self.matrix = matrix
        self.row = row

    def __len__(self) -> int:
        return self.matrix.shape[1]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self.matrix[self.row, i].tolist())
        return float(self.matrix[self.row, i])

    def __iter__(self):
        return iter(self.matrix[self.row].tolist())

    def __array__(self, dtype=None, copy=None):
        return np.array(self.matrix[self.row], dtype=dtype)

    def __eq__(self, other):
        if isinstance(other, (tuple, Ahead)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Ahead({tuple(self)!r})"


def ahead(p: Profile, last_hour_per_min, minute_of_hour: float) -> list[Ahead]:
    """Each recipe's forecast attempts/min per :data:`BUCKET_MIN` bucket over the next
    :data:`HORIZON_MIN` (:func:`rates`), as ``RecipeState.forecast`` takes it (an :class:`Ahead`
    per recipe, equal to the tuple of its row)."""
    f = rates(p, last_hour_per_min, minute_of_hour, int(HORIZON_MIN // BUCKET_MIN), BUCKET_MIN)
    f.setflags(write=False)
    return [Ahead(f, i) for i in range(f.shape[0])]
