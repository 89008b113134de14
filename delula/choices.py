"""Backlog form data that follows demand: the joint distribution of recently requested choices.

An **observation** is ``(choices, weight)``: what someone recently asked a recipe for, a dict of
field → value over any subset of its fields, and how much it counts (one per row read; the
demand simulator passes counts). The maintenance pass reads them (``storage.catalog.recent_choices``):
users' own generations (their form data) and the choices of instant attempts, hits and misses
alike, since a miss is demand the pool did not meet.

- :func:`usable` — the observations as the recipe's schema sees them now;
- :func:`draw_forms` — backlog form data drawn from them (the maintenance pass and the simulator
  call it alike);
- :func:`marginals` and :func:`marginal_forms` — the same observations counted per field, and the
  per-field draw of ``forms.weighted_form`` fed with them: the baseline the simulator compares.

A draw is, with probability ``exploration``, a form drawn from the schema alone
(``forms.random_value`` per field), so values nobody asked for yet get a chance; otherwise one
observed combination, chosen in proportion to its weight, whose values stay together (who asks
for a Bengal cat asks for it pole-vaulting, and independent per-field draws would rarely pair
them), the fields it leaves open drawn from the observations' per-field counts, else the recipe's
long-run usage statistics (``recipe_usage_options``), else a random valid value.

Free text is never taken from an observation: ``forms.countable`` drops text fields (and fields
the schema no longer has) before anything is counted, and a backlog job's text field takes the
recipe author's value (``forms.random_value``'s text rule), as it always has: one user's words
never reach a stranger. An observation with a value the schema no longer allows is dropped
whole, its combination no longer being one anyone can ask for; every drawn form is validated.
"""
from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from itertools import accumulate

from . import forms

Observation = tuple[Mapping, float]


def usable(variables: list[dict], observations: Iterable[Observation], *,
           memo: dict | None = None) -> list[tuple[dict, float]]:
    """``[(choices, weight)]``: each observation with its text fields and the fields the schema no
    longer has left out (``forms.countable``), identical combinations merged (their weights
    added, in the order first seen). Dropped: an observation left empty, one with a value the
    schema does not allow (``forms.validate_choices``), one whose weight is not positive.

    ``memo``: a dict the caller keeps between calls for the same ``variables`` (the simulator,
    one per recipe), in which what the schema makes of each choices dict seen — held, so never
    mistaken for another — and of each value is kept; the observations' dicts must not change
    between calls. The result is the same with or without it."""
    if memo is None:
        memo = {}
    counted = memo.get("counted")
    if counted is None:
        counted = memo["counted"] = set(forms.countable(variables, dict.fromkeys(f["id"] for f in variables)))
    allowed: dict[tuple, bool] = memo.setdefault("allowed", {})   # (field, type, value) -> allowed
    parsed: dict[int, tuple] = memo.setdefault("parsed", {})      # id(choices) -> (choices, key, combination)
    merged: dict[tuple, list] = {}
    for choices, weight in observations:
        if not isinstance(weight, (int, float)) or not weight > 0:
            continue
        seen = parsed.get(id(choices))
        if seen is not None and seen[0] is choices:
            key, combination = seen[1], seen[2]
        else:
            if not isinstance(choices, Mapping):
                continue
            # the type keeps true apart from 1; the ids are distinct, so values are never compared
            key = tuple(sorted([(k, type(v), v) for k, v in choices.items() if k in counted]))
            try:
                combination = _combination(variables, key, allowed)
            except TypeError:   # an unhashable value (a list, an object): no counted field allows it
                continue
            parsed[id(choices)] = (choices, key, combination)
        if combination is None:
            continue
        entry = merged.get(key)
        if entry is None:
            entry = merged[key] = [combination, 0]
        entry[1] += weight
    return [(choices, float(weight)) for choices, weight in merged.values()]


def _combination(variables: list[dict], key: tuple, allowed: dict) -> dict | None:
    """The choices of ``key`` (``(field, type, value)`` parts, sorted) as a dict, or ``None``
    when it is empty or the schema refuses one of its values; ``TypeError`` for an unhashable
    value. ``allowed`` keeps each part's verdict."""
    hash(key)
    if not key:
        return None
    for part in key:
        if part not in allowed:
            allowed[part] = _allowed(variables, part[0], part[2])
    if all(allowed[part] for part in key):
        return {fid: value for fid, _, value in key}
    return None


def marginals(observations: Iterable[tuple[Mapping, float]]) -> dict[str, dict]:
    """``{field: {value: summed weight}}`` of (usable) observations: each field counted alone."""
    out: dict[str, dict] = {}
    for choices, weight in observations:
        for fid, value in choices.items():
            counts = out.setdefault(fid, {})
            counts[value] = counts.get(value, 0.0) + weight
    return out


class _Draw:
    """Cumulative weights for drawing one item of ``items`` in proportion to ``weights``."""

    __slots__ = ("items", "cumulative", "total")

    def __init__(self, items: list, weights: list[float]):
        self.items = items
        self.cumulative = list(accumulate(weights))
        self.total = self.cumulative[-1] if self.cumulative else 0.0

    def __call__(self, rng: random.Random):
        i = bisect_right(self.cumulative, rng.random() * self.total)
        return self.items[min(i, len(self.items) - 1)]


def _field_draws(variables: list[dict], observed: dict[str, dict], usage: Mapping[str, Mapping]) -> dict[str, _Draw]:
    """Per counted field, how a value left open is drawn: the observations' counts, else the
    usage statistics' (only values still valid), none for a field with neither."""
    out = {}
    for field in variables:
        fid = field["id"]
        if field["type"] not in forms.COUNTED_TYPES:
            continue
        counts = observed.get(fid)
        if not counts:
            counts = {v: c for v, c in (usage.get(fid) or {}).items()
                      if isinstance(c, (int, float)) and c > 0 and _allowed(variables, fid, v)}
        if counts:
            out[fid] = _Draw(list(counts), list(counts.values()))
    return out


def _allowed(variables: list[dict], fid: str, value) -> bool:
    try:
        forms.validate_choices(variables, {fid: value})
    except forms.FormError:
        return False
    return True


def draw_forms(variables: list[dict], observations: Iterable[Observation], count: int, *,
               exploration: float, rng: random.Random, usage: Mapping[str, Mapping] | None = None,
               memo: dict | None = None) -> list[dict]:
    """``count`` valid forms for backlog jobs of a recipe with schema ``variables``, drawn from
    the recent ``observations`` (see the module doc): with probability ``exploration`` (0 to 1)
    from the schema alone, else one observed combination by weight with the fields it leaves
    open from the observations' per-field counts, else ``usage`` (``{field: {value: count}}``,
    the long-run statistics), else a random valid value. Text fields always take the author's
    value. Raises :class:`forms.FormError` or :class:`forms.SchemaError` when no valid form fits.
    ``memo``: as :func:`usable` takes it (the same forms with or without)."""
    seen = usable(variables, observations, memo=memo)
    combos = _Draw([c for c, _ in seen], [w for _, w in seen])
    open_fields = _field_draws(variables, marginals(seen), usage or {})
    out = []
    for _ in range(count):
        if rng.random() < exploration:
            form = {f["id"]: forms.random_value(f, rng) for f in variables}
        else:
            fixed = combos(rng) if combos.items else {}
            form = {}
            for field in variables:
                fid = field["id"]
                if fid in fixed:
                    form[fid] = fixed[fid]
                elif fid in open_fields:
                    form[fid] = open_fields[fid](rng)
                else:
                    form[fid] = forms.random_value(field, rng)
        out.append(forms.validate(variables, form))
    return out


def marginal_forms(variables: list[dict], observations: Iterable[Observation], count: int,
                   rng: random.Random, *, memo: dict | None = None) -> list[dict]:
    """The baseline: ``count`` forms of ``forms.weighted_form`` (each field on its own, weighted
    by how often it was chosen) fed with the per-field counts of the same observations
    (``memo`` as :func:`usable` takes it)."""
    stats = marginals(usable(variables, observations, memo=memo))
    return [forms.weighted_form(variables, stats, rng) for _ in range(count)]
