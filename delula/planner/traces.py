"""Demand traces for the backlog simulator: instant attempts as (time, recipe) pairs.

Built-in traces have 20 recipes ``recipe-01`` .. ``recipe-20`` with Zipf(1) popularity (a
recipe's share is proportional to 1/rank). Attempts per minute are Poisson with the trace's
rate; each attempt's time is spread uniformly within its minute. Day 0 is a Monday.

- ``steady``: 4 attempts/min in total, all day, every day;
- ``diurnal``: a smooth daily curve from 1.5/min (03–04 h) to 9/min (20 h), mean ≈ 4.6/min,
  weekends (days 5 and 6 of each week) × 0.7;
- ``burst``: ``steady`` plus, on days 0, 2 and 4 of each week at a seeded random hour, one
  random recipe at 10× its rate for 30 minutes;
- ``launch``: ``diurnal`` plus ``recipe-21`` from day 9, whose share ramps linearly over 24 h
  to a third of all demand (the others shrink proportionally).

:func:`read_csv` reads a recorded trace (header ``minute,recipe,attempts``); :func:`make`
builds a trace by name or from a CSV path.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field

import numpy as np

N_RECIPES = 20
STEADY_RATE = 4.0
DIURNAL_LOW, DIURNAL_HIGH = 1.5, 9.0
LOW_HOUR, PEAK_HOUR = 3.5, 20.0
WEEKEND_FACTOR = 0.7
BURST_FACTOR = 10.0
BURST_MINUTES = 30
BURST_DAYS = (0, 2, 4)
LAUNCH_DAY = 9
LAUNCH_RAMP_H = 24.0
LAUNCH_SHARE = 1.0 / 3.0
NAMES = ("steady", "diurnal", "burst", "launch")


@dataclass
class Trace:
    """Attempts sorted by time: ``times`` in seconds since the start, ``recipe`` indexes ``recipes``."""
    name: str
    recipes: list[str]
    times: np.ndarray = field(repr=False)
    recipe: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.times)


def recipe_names(n: int = N_RECIPES) -> list[str]:
    return [f"recipe-{i:02d}" for i in range(1, n + 1)]


def zipf_shares(n: int = N_RECIPES) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1)
    return w / w.sum()


def diurnal_rate(hour: np.ndarray) -> np.ndarray:
    """Total attempts/min at hour-of-day ``hour``: a raised-cosine rise from 03:30 to 20:00 and fall
    back, shaped by a 1.5 power (so the mean is ≈ 4.68/min rather than 5.25)."""
    h = (np.asarray(hour, dtype=float) - LOW_HOUR) % 24.0
    rise = PEAK_HOUR - LOW_HOUR
    phase = np.where(h <= rise, h / rise, 1.0 - (h - rise) / (24.0 - rise))
    s = (1.0 - np.cos(math.pi * phase)) / 2.0
    return DIURNAL_LOW + (DIURNAL_HIGH - DIURNAL_LOW) * s ** 1.5


def _minutes(days: float) -> np.ndarray:
    return np.arange(int(round(days * 1440)))


def _diurnal_total(minutes: np.ndarray) -> np.ndarray:
    total = diurnal_rate((minutes % 1440) / 60.0)
    weekend = (minutes // 1440) % 7 >= 5
    return np.where(weekend, total * WEEKEND_FACTOR, total)


def _expand(name: str, recipes: list[str], rates: np.ndarray, rng: np.random.Generator) -> Trace:
    """Poisson counts from a (minutes × recipes) rate matrix, spread uniformly within each minute."""
    counts = rng.poisson(rates)
    return _from_counts(name, recipes, counts, rng)


def _from_counts(name: str, recipes: list[str], counts: np.ndarray, rng: np.random.Generator) -> Trace:
    minute_idx, recipe_idx = np.nonzero(counts)
    reps = counts[minute_idx, recipe_idx]
    minute = np.repeat(minute_idx, reps)
    recipe = np.repeat(recipe_idx, reps)
    times = (minute + rng.random(len(minute))) * 60.0
    order = np.argsort(times, kind="stable")
    return Trace(name, list(recipes), times[order], recipe[order].astype(np.int64))


def steady(days: float, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    m = _minutes(days)
    rates = np.outer(np.full(len(m), STEADY_RATE), zipf_shares())
    return _expand("steady", recipe_names(), rates, rng)


def diurnal(days: float, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    m = _minutes(days)
    rates = np.outer(_diurnal_total(m), zipf_shares())
    return _expand("diurnal", recipe_names(), rates, rng)


def burst(days: float, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    m = _minutes(days)
    rates = np.outer(np.full(len(m), STEADY_RATE), zipf_shares())
    n_days = int(math.ceil(days))
    for day in range(n_days):
        if day % 7 not in BURST_DAYS:
            continue
        hour = int(rng.integers(0, 24))
        r = int(rng.integers(0, N_RECIPES))
        start = day * 1440 + hour * 60
        stop = min(start + BURST_MINUTES, len(m))
        rates[start:stop, r] *= BURST_FACTOR
    return _expand("burst", recipe_names(), rates, rng)


def launch(days: float, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    m = _minutes(days)
    total = _diurnal_total(m)
    hours_since = (m - LAUNCH_DAY * 1440) / 60.0
    share = np.clip(hours_since / LAUNCH_RAMP_H, 0.0, 1.0) * LAUNCH_SHARE
    rates = np.empty((len(m), N_RECIPES + 1))
    rates[:, :N_RECIPES] = np.outer(total * (1.0 - share), zipf_shares())
    rates[:, N_RECIPES] = total * share
    return _expand("launch", recipe_names(N_RECIPES + 1), rates, rng)


BUILTIN = {"steady": steady, "diurnal": diurnal, "burst": burst, "launch": launch}


def read_csv(path: str, days: float | None = None, seed: int = 1) -> Trace:
    """A recorded trace: header exactly ``minute,recipe,attempts``; ``minute`` a non-negative
    integer since the trace start, ``recipe`` a name, ``attempts`` a non-negative integer. Rows
    at or past ``days`` (if given) are dropped. ``ValueError`` for a bad header or value."""
    rng = np.random.default_rng(seed)
    recipes: list[str] = []
    index: dict[str, int] = {}
    rows: list[tuple[int, int, int]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["minute", "recipe", "attempts"]:
            raise ValueError(f"{path}: the header must be exactly 'minute,recipe,attempts', got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 fields (minute,recipe,attempts), got {len(row)}")
            m_s, name, a_s = (c.strip() for c in row)
            try:
                minute = int(m_s)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: minute must be an integer, got {m_s!r}") from None
            try:
                attempts = int(a_s)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: attempts must be an integer, got {a_s!r}") from None
            if minute < 0:
                raise ValueError(f"{path}:{lineno}: minute must be >= 0, got {minute}")
            if attempts < 0:
                raise ValueError(f"{path}:{lineno}: attempts must be >= 0, got {attempts}")
            if not name:
                raise ValueError(f"{path}:{lineno}: recipe name is empty")
            if days is not None and minute >= days * 1440:
                continue
            if name not in index:
                index[name] = len(recipes)
                recipes.append(name)
            if attempts:
                rows.append((minute, index[name], attempts))
    if rows:
        arr = np.array(rows, dtype=np.int64)
        minute = np.repeat(arr[:, 0], arr[:, 2])
        recipe = np.repeat(arr[:, 1], arr[:, 2])
    else:
        minute = recipe = np.zeros(0, dtype=np.int64)
    times = (minute + rng.random(len(minute))) * 60.0
    order = np.argsort(times, kind="stable")
    name = os.path.splitext(os.path.basename(path))[0]
    return Trace(name, recipes, times[order], recipe[order].astype(np.int64))


def make(name_or_path: str, days: float, seed: int = 1) -> Trace:
    """A built-in trace by name, else a CSV trace read from that path."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path](days, seed)
    if os.path.isfile(name_or_path):
        return read_csv(name_or_path, days=days, seed=seed)
    raise ValueError(f"unknown trace {name_or_path!r}: one of {', '.join(NAMES)} or a CSV file path")
