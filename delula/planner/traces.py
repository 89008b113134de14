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
  to a third of all demand (the others shrink proportionally);
- ``choices``: attempts that ask for choices, on four recipes of :data:`CHOICE_RECIPES` (2 – 3
  choice fields each, shares 40/30/20/10 %) at half the ``diurnal`` rate: 65 % of attempts ask for
  a whole combination, 20 % for its first field only, 15 % for nothing; a combination is one of
  the recipe's popular, correlated ones (a Bengal cat pole-vaults, a golden retriever catches a
  frisbee) by weight 4 times in 5, else any combination of the options.

A trace with choices carries, per attempt, the choices asked for (``None``: none) and, per
recipe, the schema its backlog jobs are drawn from (``schemas``).

:func:`read_csv` reads a recorded trace (header ``minute,recipe,attempts``, optionally
``,choices``); :func:`make` builds a trace by name or from a CSV path.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import timedelta

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
NAMES = ("steady", "diurnal", "burst", "launch", "choices")
WITH_CHOICES = ("choices",)           # the built-in traces whose attempts ask for choices
CHOICE_RATE_FACTOR = 0.5
CHOICE_KINDS = (0.65, 0.20, 0.15)     # a whole combination, its first field only, nothing
CHOICE_POPULAR = 0.8                  # a combination is a popular one, else any
CSV_HEADER = ["minute", "recipe", "attempts"]
CSV_CHOICES = "choices"


@dataclass
class Trace:
    """Attempts sorted by time: ``times`` in seconds since the start, ``recipe`` indexes ``recipes``.
    With choices, ``choices[i]`` is what attempt ``i`` asks for (a dict, or ``None``) and
    ``schemas`` maps each recipe name to its variables."""
    name: str
    recipes: list[str]
    times: np.ndarray = field(repr=False)
    recipe: np.ndarray = field(repr=False)
    first_how: int = 0          # hour of week at time 0 (0: Monday 00:00, as the built-in traces)
    choices: list | None = field(default=None, repr=False)
    schemas: dict[str, list] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def has_choices(self) -> bool:
        return self.choices is not None


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
    return _spread(name, recipes, minute_idx, recipe_idx, counts[minute_idx, recipe_idx], rng)


def _spread(name: str, recipes: list[str], minute_idx, recipe_idx, reps, rng: np.random.Generator,
            choices: list | None = None) -> Trace:
    """``reps[k]`` attempts of recipe ``recipe_idx[k]`` in minute ``minute_idx[k]``, each at a
    uniform time within its minute, sorted by time; with ``choices``, each asks for ``choices[k]``."""
    minute = np.repeat(np.asarray(minute_idx, dtype=np.int64), reps)
    recipe = np.repeat(np.asarray(recipe_idx, dtype=np.int64), reps)
    times = (minute + rng.random(len(minute))) * 60.0
    order = np.argsort(times, kind="stable")
    asked = None
    if choices is not None:
        rows = np.repeat(np.arange(len(choices)), reps)[order]
        asked = [choices[k] for k in rows.tolist()]
    return Trace(name, list(recipes), times[order], recipe[order], choices=asked)


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


def launch(days: float, seed: int = 1, added: float = 0.0) -> Trace:
    """``diurnal`` and a new recipe from day :data:`LAUNCH_DAY`. With ``added = 0`` it takes a
    third of all demand from the others; with ``added = x`` it brings ``x`` times the total on
    top instead (the tight-capacity case of ``bench/planner.py``: ``added=0.5``)."""
    rng = np.random.default_rng(seed)
    m = _minutes(days)
    total = _diurnal_total(m)
    hours_since = (m - LAUNCH_DAY * 1440) / 60.0
    ramp = np.clip(hours_since / LAUNCH_RAMP_H, 0.0, 1.0)
    rates = np.empty((len(m), N_RECIPES + 1))
    if added:
        rates[:, :N_RECIPES] = np.outer(total, zipf_shares())
        rates[:, N_RECIPES] = total * ramp * added
    else:
        share = ramp * LAUNCH_SHARE
        rates[:, :N_RECIPES] = np.outer(total * (1.0 - share), zipf_shares())
        rates[:, N_RECIPES] = total * share
    name = "launch" if not added else f"launch+{added:.0%}"
    return _expand(name, recipe_names(N_RECIPES + 1), rates, rng)


def _choice_field(fid: str, label: str, kind: str, values: list[str], emoji: list[str] | None = None) -> dict:
    options = [{"label": v.title(), "value": v, **({"emoji": emoji[i]} if emoji else {})} for i, v in enumerate(values)]
    return {"id": fid, "label": label, "type": kind, "required": True, "options": options}


# The built-in ``choices`` trace's recipes: their schemas, their share of the attempts, and the
# combinations users ask for most (over the first fields; weights), the correlation a per-field
# draw loses.
CHOICE_RECIPES = {
    "Animal Olympics": {
        "share": 0.4,
        "variables": [
            _choice_field("animal", "Animal", "dropdown",
                          ["bengal cat", "golden retriever", "corgi", "red panda", "parrot", "hedgehog"]),
            _choice_field("sport", "Sport", "dropdown",
                          ["pole vault", "frisbee", "surfing", "sumo", "ballet", "skateboarding"]),
            {"id": "caption", "label": "Caption", "type": "text", "required": False, "maxLength": 80,
             "examples": ["Going for gold", "A personal best"]},
        ],
        "popular": [(("bengal cat", "pole vault"), 30), (("golden retriever", "frisbee"), 20),
                    (("corgi", "surfing"), 12), (("red panda", "sumo"), 8), (("parrot", "ballet"), 5),
                    (("bengal cat", "surfing"), 4), (("golden retriever", "surfing"), 4),
                    (("hedgehog", "skateboarding"), 3)],
    },
    "Dream Car": {
        "share": 0.3,
        "variables": [
            _choice_field("car", "Car", "dropdown",
                          ["muscle car", "electric roadster", "vintage beetle", "monster truck", "limousine"]),
            _choice_field("colour", "Colour", "radio",
                          ["cherry red", "pearl white", "mint green", "sunset orange", "midnight black"]),
            _choice_field("weather", "Weather", "emoji_button", ["sunshine", "neon night", "rain", "snow"],
                          emoji=["☀️", "🌃", "🌧️", "❄️"]),
        ],
        "popular": [(("muscle car", "cherry red", "sunshine"), 25),
                    (("electric roadster", "pearl white", "neon night"), 18),
                    (("vintage beetle", "mint green", "sunshine"), 12),
                    (("monster truck", "sunset orange", "snow"), 8),
                    (("limousine", "midnight black", "rain"), 6),
                    (("muscle car", "midnight black", "neon night"), 6)],
    },
    "Pet Portrait": {
        "share": 0.2,
        "variables": [
            _choice_field("style", "Style", "dropdown",
                          ["renaissance", "pixel art", "watercolour", "comic book", "oil painting"]),
            _choice_field("background", "Background", "dropdown", ["royal palace", "outer space", "garden", "cafe"]),
            {"id": "frame", "label": "Gold frame", "type": "toggle", "required": False, "defaultValue": False},
        ],
        "popular": [(("renaissance", "royal palace", True), 30), (("pixel art", "outer space", False), 20),
                    (("watercolour", "garden", False), 15), (("comic book", "cafe", False), 8),
                    (("oil painting", "royal palace", True), 8)],
    },
    "Space Postcard": {
        "share": 0.1,
        "variables": [
            _choice_field("planet", "Planet", "dropdown", ["mars", "saturn", "the moon", "jupiter", "neptune"]),
            _choice_field("vehicle", "Vehicle", "radio", ["rocket", "flying saucer", "hot-air balloon"]),
            {"id": "speed", "label": "Speed", "type": "slider", "required": True, "min": 1, "max": 3, "step": 1},
        ],
        "popular": [(("mars", "rocket"), 30), (("saturn", "flying saucer"), 20), (("the moon", "hot-air balloon"), 15),
                    (("jupiter", "rocket"), 5)],
    },
}


def _field_values(field: dict) -> list:
    return [True, False] if field["type"] == "toggle" else [o["value"] for o in field["options"]]


def _asked(spec: dict, n: int, rng: np.random.Generator) -> list[dict | None]:
    """``n`` attempts' choices for one recipe of :data:`CHOICE_RECIPES` (see the module doc)."""
    popular = spec["popular"]
    fields = spec["variables"][:len(popular[0][0])]
    ids = [f["id"] for f in fields]
    weights = np.array([w for _, w in popular], dtype=float)
    combos = [dict(zip(ids, values)) for values, _ in popular]
    firsts = [{ids[0]: c[ids[0]]} for c in combos]
    kinds = rng.choice(3, size=n, p=CHOICE_KINDS)
    from_popular = rng.random(n) < CHOICE_POPULAR
    which = rng.choice(len(combos), size=n, p=weights / weights.sum())
    anything = [rng.integers(0, len(_field_values(f)), size=n) for f in fields]
    out: list[dict | None] = []
    for i in range(n):
        kind = int(kinds[i])
        if kind == 2:
            out.append(None)
        elif from_popular[i]:
            out.append(combos[which[i]] if kind == 0 else firsts[which[i]])
        else:
            combo = {f["id"]: _field_values(f)[int(a[i])] for f, a in zip(fields, anything)}
            out.append(combo if kind == 0 else {ids[0]: combo[ids[0]]})
    return out


def choices(days: float, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    m = _minutes(days)
    names = list(CHOICE_RECIPES)
    shares = np.array([CHOICE_RECIPES[r]["share"] for r in names])
    rates = np.outer(_diurnal_total(m) * CHOICE_RATE_FACTOR, shares / shares.sum())
    trace = _expand("choices", names, rates, rng)
    asked: list[dict | None] = [None] * len(trace)
    for r, name in enumerate(names):
        at = np.nonzero(trace.recipe == r)[0]
        for i, c in zip(at.tolist(), _asked(CHOICE_RECIPES[name], len(at), rng)):
            asked[i] = c
    trace.choices = asked
    trace.schemas = {name: CHOICE_RECIPES[name]["variables"] for name in names}
    return trace


BUILTIN = {"steady": steady, "diurnal": diurnal, "burst": burst, "launch": launch, "choices": choices}


def from_counts(name: str, frame, seed: int = 1, recipes: list[str] | None = None) -> Trace:
    """A trace from per-minute counts: a pandas frame with columns ``minute`` (since the trace's
    start), ``recipe`` (a name) and ``attempts``, optionally ``choices`` (a dict or ``None`` per
    row: what each of its attempts asks for); each attempt lands at a seeded uniform time
    within its minute. ``recipes`` fixes the recipe order (names only in the frame follow).
    With choices, each recipe's schema is :func:`inferred_schema` of what was asked of it."""
    rng = np.random.default_rng(seed)
    names = list(recipes or [])
    for r in frame["recipe"].drop_duplicates():
        if r not in names:
            names.append(r)
    index = {r: i for i, r in enumerate(names)}
    busy = frame[frame["attempts"] > 0]
    asked = None
    if "choices" in busy.columns and any(c for c in busy["choices"]):
        asked = [c or None for c in busy["choices"]]
    trace = _spread(name, names, busy["minute"].to_numpy(dtype=np.int64),
                    busy["recipe"].map(index).to_numpy(dtype=np.int64),
                    busy["attempts"].to_numpy(dtype=np.int64), rng, choices=asked)
    if asked is not None:
        trace.schemas = {r: inferred_schema([c for rr, c in zip(busy["recipe"], asked) if rr == r and c])
                         for r in names}
    return trace


def inferred_schema(asked: list[dict]) -> list[dict]:
    """A schema for a recipe known only by the choices asked of it: per field, in the order first
    seen, a toggle when every value is a boolean, else a dropdown of the values seen."""
    values: dict[str, list] = {}
    for c in asked:
        for fid, v in c.items():
            seen = values.setdefault(fid, [])
            if not any(v == s and type(v) is type(s) for s in seen):
                seen.append(v)
    out = []
    for fid, seen in values.items():
        if all(isinstance(v, bool) for v in seen):
            out.append({"id": fid, "label": fid, "type": "toggle", "required": False})
        else:
            out.append({"id": fid, "label": fid, "type": "dropdown", "required": True,
                        "options": [{"label": str(v), "value": v} for v in seen]})
    return out


def _parse_choices(path: str, line: int, raw: str) -> dict | None:
    """One CSV row's ``choices``: empty, or a JSON object of field names to strings, numbers or
    booleans (``{}`` is no choices). ``ValueError`` naming the line otherwise."""
    if raw == "":
        return None
    example = 'e.g. {"animal": "bengal cat"}, quoted as a CSV field'
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{path}:{line}: choices must be a JSON object ({example}): {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}:{line}: choices must be a JSON object ({example}), got {raw!r}")
    for fid, v in value.items():
        finite = not isinstance(v, float) or math.isfinite(v)
        if not fid or not isinstance(v, (str, int, float, bool)) or not finite:
            raise ValueError(f"{path}:{line}: choices must map field names to strings, numbers or booleans, "
                             f"got {fid!r}: {v!r}")
    return value or None


def read_csv(path: str, days: float | None = None, seed: int = 1) -> Trace:
    """A recorded trace: header exactly ``minute,recipe,attempts`` or
    ``minute,recipe,attempts,choices``; ``minute`` a non-negative integer since the trace start,
    ``recipe`` a name, ``attempts`` a non-negative integer, ``choices`` (optional, may be empty)
    a JSON object of what those attempts ask for (:func:`_parse_choices`). Rows at or past
    ``days`` (if given) are dropped. ``ValueError`` for a bad header or value, naming the line."""
    import pandas as pd

    expected = "'minute,recipe,attempts' (optionally ',choices')"
    try:   # no header row for pandas: a line with more fields than the header is then an error
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the header must be exactly {expected}, got nothing") from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: not a CSV of minute,recipe,attempts[,choices]: {e}") from None
    header = [str(h).strip() for h in frame.iloc[0]]
    if header not in (CSV_HEADER, [*CSV_HEADER, CSV_CHOICES]):
        raise ValueError(f"{path}: the header must be exactly {expected}, got {header!r}")
    frame = frame.iloc[1:].reset_index(drop=True)
    frame.columns = header
    frame = frame.apply(lambda col: col.fillna("").str.strip())
    if CSV_CHOICES in header:
        frame[CSV_CHOICES] = [_parse_choices(path, i + 2, raw) for i, raw in enumerate(frame[CSV_CHOICES])]
    for col in ("minute", "attempts"):
        number = pd.to_numeric(frame[col], errors="coerce")
        bad = number.isna() | (number < 0) | (number != number.round())
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(f"{path}:{row + 2}: {col} must be a whole number >= 0, got {frame[col].iloc[row]!r}")
        frame[col] = number.astype(np.int64)
    empty = frame["recipe"] == ""
    if empty.any():
        raise ValueError(f"{path}:{int(empty.to_numpy().nonzero()[0][0]) + 2}: recipe name is empty")
    if days is not None:
        frame = frame[frame["minute"] < days * 1440]
    return from_counts(os.path.splitext(os.path.basename(path))[0], frame, seed)


def recorded(rt, days: float, recipe_ids=None, seed: int = 1) -> Trace:
    """The last ``days`` of recorded instant attempts (hits and misses, from ``demand_minutes``
    and the raw tail) as a trace whose minute 0 is the hour ``days`` ago, optionally only ``recipe_ids``.
    Recipes keep their names; an unnamed (deleted) recipe is ``recipe-<id>``."""
    import pandas as pd

    from delula import demand, recipes as recipe_service

    end = rt.now().replace(second=0, microsecond=0)
    start = (end - timedelta(days=float(days))).replace(minute=0)   # minute 0 starts an hour
    names = {r.id: r.name for r in recipe_service.list_recipes(rt, active_only=False)}
    wanted = None if recipe_ids is None else {int(i) for i in recipe_ids}
    rows = [row for row in demand.per_minute(rt, start, end)
            if wanted is None or row["recipeId"] in wanted]
    frame = pd.DataFrame(rows, columns=["minute", "recipeId", "attempts", "hits"])
    ids = sorted(wanted if wanted is not None else names)
    order = [names.get(i, f"recipe-{i}") for i in ids]
    if frame.empty:
        frame = pd.DataFrame({"minute": [], "recipe": [], "attempts": []})
    else:
        at = pd.to_datetime(frame["minute"], utc=True)
        frame = pd.DataFrame({
            "minute": ((at - pd.Timestamp(start)).dt.total_seconds() // 60).astype(np.int64),
            "recipe": frame["recipeId"].map(lambda i: names.get(i, f"recipe-{i}")),
            "attempts": frame["attempts"]})
    trace = from_counts("recorded", frame, seed, recipes=order)
    trace.first_how = start.weekday() * 24 + start.hour
    return trace


def make(name_or_path: str, days: float, seed: int = 1) -> Trace:
    """A built-in trace by name, else a CSV trace read from that path."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path](days, seed)
    if os.path.isfile(name_or_path):
        return read_csv(name_or_path, days=days, seed=seed)
    raise ValueError(f"unknown trace {name_or_path!r}: one of {', '.join(NAMES)} or a CSV file path")
