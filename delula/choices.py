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


def usable(variables: list[dict], observations: Iterable[Observation]) -> list[tuple[dict, float]]:
    """``[(choices, weight)]``: each observation with its text fields and the fields the schema no
    longer has left out (``forms.countable``), identical combinations merged (their weights
    added, in the order first seen). Dropped: an observation left empty, one with a value the
    schema does not allow (``forms.validate_choices``), one whose weight is not positive."""
    counted = set(forms.countable(variables, dict.fromkeys(f["id"] for f in variables)))
    allowed: dict[tuple, bool] = {}     # (field, type, value) -> whether the schema allows it
    merged: dict[tuple, list] = {}
    refused: set[tuple] = set()
    for choices, weight in observations:
        if not isinstance(choices, Mapping) or not isinstance(weight, (int, float)) or not weight > 0:
            continue
        # the type keeps true apart from 1; the ids are distinct, so values are never compared
        key = tuple(sorted([(k, type(v), v) for k, v in choices.items() if k in counted]))
        try:
            entry = merged.get(key)
            if entry is None and key and key not in refused:
                for fid, kind, value in key:
                    if (fid, kind, value) not in allowed:
                        allowed[fid, kind, value] = _allowed(variables, fid, value)
                if all(allowed[part] for part in key):
                    merged[key] = [{fid: value for fid, _, value in key}, 0]
                else:
                    refused.add(key)
                entry = merged.get(key)
        except TypeError:   # an unhashable value (a list, an object): no counted field allows it
            continue
        if entry is not None:
            entry[1] += weight
    return [(choices, float(weight)) for choices, weight in merged.values()]


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
               exploration: float, rng: random.Random, usage: Mapping[str, Mapping] | None = None) -> list[dict]:
    """``count`` valid forms for backlog jobs of a recipe with schema ``variables``, drawn from
    the recent ``observations`` (see the module doc): with probability ``exploration`` (0 to 1)
    from the schema alone, else one observed combination by weight with the fields it leaves
    open from the observations' per-field counts, else ``usage`` (``{field: {value: count}}``,
    the long-run statistics), else a random valid value. Text fields always take the author's
    value. Raises :class:`forms.FormError` or :class:`forms.SchemaError` when no valid form fits."""
    seen = usable(variables, observations)
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
                   rng: random.Random) -> list[dict]:
    """The baseline: ``count`` forms of ``forms.weighted_form`` (each field on its own, weighted
    by how often it was chosen) fed with the per-field counts of the same observations."""
    stats = marginals(usable(variables, observations))
    return [forms.weighted_form(variables, stats, rng) for _ in range(count)]
