"""What the content is doing, for product staff: which form values users are handed, which they
ask for and miss, how long claimed items waited in the pool, and what the pool threw away.

:func:`snapshot` reads all of it for one time range (:data:`RANGES`) and, optionally, one recipe,
from ``storage.content`` (grouped in SQL, the top :data:`TOP` of each list), and names what it
counted after the recipe's current schema: the field's label, the option's label. Only fields
that are not free text are counted (``forms.counted_fields``), and a value the field's schema
does not accept (a schema changed since) is left out, so no user's text is ever shown. Results
are cached for :data:`CACHE_TTL_S` seconds per (range, recipe).

- *Claimed most*: the form values of the items instant claims handed out, with the share of
  that recipe's claims that got each value.
- *Asked for and missed*: the choices of attempts that reached the pool and were not handed an
  item with all of them (``claim_events.matched`` false): no item at all, or another one.
- *Time in pool*: from an item's completion to its claim, median and p95, per recipe.
- *Waste*: pool items that expired and backlog jobs the quality gate rejected, by recipe and
  reason (the gate's words; an expired item's reason is its age).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from . import forms
from .clock import isoformat
from .storage import catalog
from .storage import content as store

CACHE_TTL_S = 30.0
TOP = store.TOP
FRACTIONS = (0.5, 0.95)
EXPIRED_REASON = "not claimed in time"
REJECTED_REASON = "rejected by the quality gate"


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta


RANGES: dict[str, Range] = {
    "1h": Range("1h", "last hour", timedelta(hours=1)),
    "24h": Range("24h", "last 24 hours", timedelta(hours=24)),
    "7d": Range("7d", "last 7 days", timedelta(days=7)),
    "30d": Range("30d", "last 30 days", timedelta(days=30)),
}
DEFAULT_RANGE = "24h"


class ContentError(ValueError):
    """An unknown time range or recipe filter."""


def get_range(key: str | None) -> Range:
    try:
        return RANGES[key or DEFAULT_RANGE]
    except (KeyError, TypeError):
        raise ContentError(f"unknown time range {key!r}; one of {', '.join(RANGES)}") from None


def snapshot(rt, range_key: str | None = None, recipe_id: int | None = None) -> dict:
    """Everything the Content page shows for the range ``range_key`` ("1h", "24h", "7d", "30d")
    and, optionally, one recipe."""
    rng = get_range(range_key)
    if recipe_id is not None and (not isinstance(recipe_id, int) or isinstance(recipe_id, bool)):
        raise ContentError("recipe filter must be a recipe id")
    return rt.cache("content", ttl=CACHE_TTL_S).get_or_compute(
        (rng.key, recipe_id), lambda: _compute(rt, rng, recipe_id))


def _compute(rt, rng: Range, recipe_id: int | None) -> dict:
    until = rt.now()
    since = until - rng.span
    with rt.store.begin() as s:
        schemas = {r.id: (r.name, list(r.variables or [])) for r in catalog.list_recipes(s, active_only=False)}
        allowed = [(rid, fid) for rid, (_, variables) in schemas.items() if recipe_id in (None, rid)
                   for fid in forms.counted_fields(variables)]
        demand = store.demand_counts(s, since, until, recipe_id)
        claimed = store.claimed_values(s, since, until, allowed, recipe_id)
        missed = store.missed_values(s, since, until, allowed, recipe_id)
        times = store.pool_times(s, since, until, FRACTIONS, recipe_id)
        waste = store.waste_totals(s, since, until, recipe_id)
        waste_recipes = store.waste_by_recipe(s, since, until, recipe_id)
        reasons = store.waste_reasons(s, since, until, recipe_id)

    def name(rid: int) -> str:
        return schemas[rid][0] if rid in schemas else f"recipe {rid}"

    def value_row(rid: int, field: str, raw: str) -> dict | None:
        variables = schemas.get(rid, (None, []))[1]
        value = json.loads(raw)
        labels = describe(variables, field, value)
        if labels is None:
            return None
        return {"recipeId": rid, "recipe": name(rid), "field": field, "fieldLabel": labels[0], "value": value,
                "valueLabel": labels[1]}

    claimed_rows = []
    for rid, field, raw, n in claimed:
        row = value_row(rid, field, raw)
        if row is not None:
            recipe_claims = demand.get(rid, (0, 0, 0, 0))[1]
            claimed_rows.append({**row, "claims": n, "share": n / recipe_claims if recipe_claims else None})
    missed_rows = []
    for rid, field, raw, asked, n_missed, fell_back in missed:
        row = value_row(rid, field, raw)
        if row is not None:
            missed_rows.append({**row, "asked": asked, "missed": n_missed, "fellBack": fell_back,
                                "noItem": n_missed - fell_back, "missRate": n_missed / asked})

    overall = times[0] if times else (None, 0, [None, None])
    attempts = sum(d[0] for d in demand.values())
    claims = sum(d[1] for d in demand.values())
    asked = sum(d[2] for d in demand.values())
    n_missed = sum(d[3] for d in demand.values())
    expired, rejected = waste.get("expired", 0), waste.get("rejected", 0)
    return {
        "generatedAt": isoformat(until),
        "range": {"key": rng.key, "label": rng.label, "since": isoformat(since), "until": isoformat(until)},
        "recipeId": recipe_id,
        "kpis": {
            "attempts": attempts, "claimed": claims, "asked": asked, "missed": n_missed,
            "missRate": n_missed / asked if asked else None,
            "pooled": overall[1], "poolP50": _round(overall[2][0]), "poolP95": _round(overall[2][1]),
            "expired": expired, "rejected": rejected, "wasted": expired + rejected,
        },
        "claimed": claimed_rows,
        "missed": missed_rows,
        "poolTimes": [{"recipeId": rid, "recipe": name(rid), "items": n, "p50": _round(p50), "p95": _round(p95)}
                      for rid, n, (p50, p95) in times[1:]],
        "waste": {
            "recipes": [{"recipeId": rid, "recipe": name(rid), "expired": e, "rejected": j}
                        for rid, e, j in waste_recipes],
            "reasons": [{"recipeId": rid, "recipe": name(rid), "status": status, "reason": reason_text(status, why),
                         "items": n} for rid, status, why, n in reasons],
        },
    }


def _round(seconds: float | None) -> float | None:
    return round(seconds, 3) if seconds is not None else None


def describe(variables: list[dict], field_id: str, value) -> tuple[str, str] | None:
    """``(field label, value label)`` of one counted value as the recipe's schema names it, or
    ``None`` when it may not be shown: a text field, a field the schema no longer has, or a value
    it does not accept."""
    field = next((f for f in variables if f.get("id") == field_id), None)
    if field is None or field_id not in forms.counted_fields([field]):
        return None
    try:
        forms.validate_choices([field], {field_id: value})
    except forms.FormError:
        return None
    label = str(field.get("label") or field_id)
    if field["type"] in forms.CHOICE_TYPES:
        option = next(o for o in field["options"] if o["value"] == value and type(o["value"]) is type(value))
        text = str(option.get("label") or value)
        return label, f"{option['emoji']} {text}" if option.get("emoji") else text
    if field["type"] == "toggle":
        return label, "on" if value else "off"
    return label, f"{value:g}"


def reason_text(status: str, error: str) -> str:
    """Why an item was wasted, in words: the quality gate's own, or what its status says."""
    if error:
        return error
    return EXPIRED_REASON if status == "expired" else REJECTED_REASON
