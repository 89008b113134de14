"""Aggregates for the Content page: which form values users are handed and which they ask for in
vain, how long claimed items waited in the pool, and what the pool threw away.

Every query reads one time window ``[since, until)`` through an index on its timestamp and
groups in SQL, returning at most ``limit`` rows (or one row per recipe): instant attempts from
``claim_events`` by ``(created_at, outcome)`` — ``(recipe_id, created_at, outcome)`` for one
recipe —, a claimed item joined by its primary key, waste from ``generations`` by ``(status,
updated_at)``. Nothing counts the whole of ``generations``.

Form values are taken apart in SQL: ``jsonb_each`` on PostgreSQL, ``json_each`` on SQLite, each
value turned into its JSON text so both databases group and answer alike (``"calm"``, ``2``,
``0.5``, ``true``). Only the ``(recipe, field)`` pairs the caller passes as ``allowed`` are
counted: the domain passes the fields that are not free text (``forms.counted_fields``), so no
user's text is read out of the database, let alone shown.

A claim's choices (``claim_events.choices``, migration 0017) are the fields an attempt asked for;
``matched`` is NULL without choices and false when the attempt was not handed an item with all of
them: a miss (``no_backlog``, ``race``) or a claim that fell back to another item.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Float, Integer, String, Text, case, cast, func, literal, or_, select, text, true, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from .dashboard import _seconds_between
from .db import is_postgres
from .models import DEMAND_OUTCOMES, ClaimEvent, Generation, JobStatus

TOP = 20
REASON_CHARS = 200     # a waste reason is grouped by its first characters
WASTE = (JobStatus.EXPIRED, JobStatus.REJECTED)

Pair = tuple[int, str]   # (recipe id, field id)


def _members(s: Session, document):
    """``(from, key, value)``: the top-level members of a JSON object column as a table to join
    (``ON true``; each database lets a function in FROM read the tables left of it), their keys,
    and their values as JSON text. A row whose document is not an object has no members."""
    if is_postgres(s):
        obj = case((func.jsonb_typeof(document) == "object", document), else_=cast(literal("{}"), JSONB))
        each = func.jsonb_each(obj).table_valued("key", "value")
        return each, each.c.key, cast(each.c.value, Text)
    each = func.json_each(document).table_valued("key", "value", "type")
    value = case((each.c.type.in_(("object", "array")), each.c.value), (each.c.type == "true", "true"),
                 (each.c.type == "false", "false"), else_=func.json_quote(each.c.value))
    return each, each.c.key, value


def _without_jit(s: Session) -> None:
    """No JIT compilation for the rest of this transaction (PostgreSQL). The planner guesses a
    hundred members per document taken apart, so a day's form values look costly enough to
    compile, inline and optimise: that took longer than the query itself (1.9 of 5.6 s for 30
    days of a million claims, ``bench/content.py``)."""
    if is_postgres(s):
        s.execute(text("SET LOCAL jit = off"))


def _allowed(recipe_id, key, allowed: Sequence[Pair]):
    """Whether ``(recipe_id, key)`` is one of the ``allowed`` pairs, as one hashed lookup per
    row: ``'<recipe id>:<field>'`` in a list (a row-value ``IN`` list is expanded into an OR per
    pair on PostgreSQL, which the JIT then spends seconds compiling)."""
    return (cast(recipe_id, String) + ":" + key).in_(sorted({f"{r}:{f}" for r, f in allowed}))


def _claims(since: datetime, until: datetime, recipe_id: int | None, outcomes: Sequence[str]) -> list:
    where = [ClaimEvent.created_at >= since, ClaimEvent.created_at < until, ClaimEvent.outcome.in_(outcomes)]
    if recipe_id is not None:
        where.append(ClaimEvent.recipe_id == recipe_id)
    return where


def claimed_values(s: Session, since: datetime, until: datetime, allowed: Sequence[Pair],
                   recipe_id: int | None = None, limit: int = TOP) -> list[tuple[int, str, str, int]]:
    """``(recipe_id, field, value as JSON text, claims)``: the form values of the items handed
    out by instant claims in the window, most claimed first, only the ``allowed`` fields."""
    if not allowed:
        return []
    _without_jit(s)
    each, key, value = _members(s, Generation.form_data)
    n = func.count().label("n")
    q = (select(Generation.recipe_id, key.label("field"), value.label("value"), n)
         .select_from(ClaimEvent).join(Generation, Generation.id == ClaimEvent.generation_id).join(each, true())
         .where(*_claims(since, until, recipe_id, ("claimed",)), _allowed(Generation.recipe_id, key, allowed))
         .group_by(Generation.recipe_id, key, value)
         .order_by(n.desc(), Generation.recipe_id, key, value).limit(limit))
    return [(int(r), f, v, int(c)) for r, f, v, c in s.execute(q)]


def missed_values(s: Session, since: datetime, until: datetime, allowed: Sequence[Pair],
                  recipe_id: int | None = None, limit: int = TOP) -> list[tuple[int, str, str, int, int, int]]:
    """``(recipe_id, field, value as JSON text, asked, missed, fell_back)``: the choices asked
    for by instant attempts that reached the pool in the window, the values missed most first
    (only values missed at least once, only the ``allowed`` fields). ``asked`` counts the
    attempts asking for the value, ``missed`` those not handed an item with all their choices,
    ``fell_back`` the misses that were handed another item."""
    if not allowed:
        return []
    _without_jit(s)
    each, key, value = _members(s, ClaimEvent.choices)
    miss = ClaimEvent.matched.is_(False)
    missed = func.sum(case((miss, 1), else_=0)).label("missed")
    fell_back = func.sum(case((miss & (ClaimEvent.outcome == "claimed"), 1), else_=0))
    asked = func.count().label("asked")
    q = (select(ClaimEvent.recipe_id, key.label("field"), value.label("value"), asked, missed, fell_back)
         .select_from(ClaimEvent).join(each, true())
         .where(*_claims(since, until, recipe_id, DEMAND_OUTCOMES), ClaimEvent.matched.is_not(None),
                _allowed(ClaimEvent.recipe_id, key, allowed))
         .group_by(ClaimEvent.recipe_id, key, value)
         .having(func.sum(case((miss, 1), else_=0)) > 0)
         .order_by(missed.desc(), asked.desc(), ClaimEvent.recipe_id, key, value).limit(limit))
    return [(int(r), f, v, int(a), int(m), int(b)) for r, f, v, a, m, b in s.execute(q)]


def demand_counts(s: Session, since: datetime, until: datetime,
                  recipe_id: int | None = None) -> dict[int, tuple[int, int, int, int]]:
    """Per recipe with any attempt that reached the pool in the window: ``(attempts, claimed,
    asked, missed)`` — every attempt, the claims, the attempts with choices, and those of them
    not handed an item with all their choices."""
    q = (select(ClaimEvent.recipe_id, func.count(),
                func.sum(case((ClaimEvent.outcome == "claimed", 1), else_=0)),
                func.sum(case((ClaimEvent.matched.is_not(None), 1), else_=0)),
                func.sum(case((ClaimEvent.matched.is_(False), 1), else_=0)))
         .where(*_claims(since, until, recipe_id, DEMAND_OUTCOMES), ClaimEvent.recipe_id.is_not(None))
         .group_by(ClaimEvent.recipe_id))
    return {int(r): (int(n), int(c or 0), int(a or 0), int(m or 0)) for r, n, c, a, m in s.execute(q)}


def pool_times(s: Session, since: datetime, until: datetime, fractions: Sequence[float],
               recipe_id: int | None = None, limit: int = TOP) -> list[tuple[int | None, int, list[float | None]]]:
    """``(recipe_id, items, [seconds at each fraction])`` of the time claimed items waited in the
    pool — from completion to the claim (``claim_events.created_at`` less the item's
    ``completed_at``) — for the claims in the window, interpolated like ``percentile_cont``: the
    first row (recipe ``None``) over every recipe, then the ``limit`` recipes with most claims.
    PostgreSQL computes them in one query with grouping sets; SQLite, without percentile
    functions, reads the neighbouring values of each rank with window functions."""
    where = [*_claims(since, until, recipe_id, ("claimed",)), Generation.completed_at.is_not(None)]
    joined = (ClaimEvent.__table__.join(Generation.__table__, Generation.id == ClaimEvent.generation_id))
    if is_postgres(s):
        _without_jit(s)
        wanted = cast([float(f) for f in fractions], ARRAY(Float))
        total = func.grouping(Generation.recipe_id).label("total")
        n = func.count().label("n")
        q = (select(Generation.recipe_id, n,
                    func.percentile_cont(wanted).within_group(ClaimEvent.created_at - Generation.completed_at), total)
             .select_from(joined).where(*where)
             .group_by(func.grouping_sets(Generation.recipe_id, tuple_()))
             .order_by(total.desc(), n.desc(), Generation.recipe_id).limit(limit + 1))
        rows = [(None if t else int(r), int(c), [v.total_seconds() if v is not None else None for v in values or ()])
                for r, c, values, t in s.execute(q)]
        return rows if rows and rows[0][1] else []   # the empty grouping set answers even without rows
    seconds = _seconds_between(s, Generation.completed_at, ClaimEvent.created_at)
    overall = _ranked_percentiles(s, select(literal(0).label("r"), cast(seconds, Float).label("sec"))
                                  .select_from(joined).where(*where), fractions)
    if not overall:
        return []
    per = _ranked_percentiles(s, select(Generation.recipe_id.label("r"), cast(seconds, Float).label("sec"))
                              .select_from(joined).where(*where), fractions)
    ranked = sorted(per.items(), key=lambda kv: (-kv[1][0], kv[0]))[:limit]
    return [(None, *overall[0])] + [(rid, n, values) for rid, (n, values) in ranked]


def _ranked_percentiles(s: Session, durations, fractions: Sequence[float]) -> dict[int, tuple[int, list[float]]]:
    """``{r: (n, [value at each fraction])}`` of ``durations`` (columns ``r``, ``sec``): each
    group's values ranked by a window, only the two around each fraction's rank read back."""
    d = durations.subquery()
    ranked = select(d.c.r, d.c.sec,
                    (func.row_number().over(partition_by=d.c.r, order_by=d.c.sec) - 1).label("i"),
                    func.count().over(partition_by=d.c.r).label("n")).subquery()
    ranks = [cast(f * (ranked.c.n - 1), Integer) for f in fractions]   # floor: the rank is never negative
    q = select(ranked.c.r, ranked.c.n, ranked.c.i, ranked.c.sec).where(
        or_(*[ranked.c.i.between(low, low + 1) for low in ranks]))
    found: dict[int, tuple[int, dict[int, float]]] = {}
    for r, n, i, sec in s.execute(q):
        found.setdefault(int(r), (int(n), {}))[1][int(i)] = float(sec)
    out = {}
    for r, (n, values) in found.items():
        row = []
        for f in fractions:
            rank = f * (n - 1)
            low = int(rank)
            high = values.get(low + 1, values[low])
            row.append(values[low] + (high - values[low]) * (rank - low))
        out[r] = (n, row)
    return out


def _waste(since: datetime, until: datetime, recipe_id: int | None) -> list:
    where = [Generation.status.in_(WASTE), Generation.updated_at >= since, Generation.updated_at < until]
    if recipe_id is not None:
        where.append(Generation.recipe_id == recipe_id)
    return where


def waste_totals(s: Session, since: datetime, until: datetime, recipe_id: int | None = None) -> dict[str, int]:
    """``{status: items}``: pool items that expired and backlog jobs the quality gate rejected in
    the window (by when their status was set)."""
    q = select(Generation.status, func.count()).where(*_waste(since, until, recipe_id)).group_by(Generation.status)
    return {status: int(n) for status, n in s.execute(q)}


def waste_by_recipe(s: Session, since: datetime, until: datetime, recipe_id: int | None = None,
                    limit: int = TOP) -> list[tuple[int, int, int]]:
    """``(recipe_id, expired, rejected)`` of the ``limit`` recipes that wasted most in the window."""
    n = func.count().label("n")
    q = (select(Generation.recipe_id,
                func.sum(case((Generation.status == JobStatus.EXPIRED, 1), else_=0)),
                func.sum(case((Generation.status == JobStatus.REJECTED, 1), else_=0)), n)
         .where(*_waste(since, until, recipe_id)).group_by(Generation.recipe_id)
         .order_by(n.desc(), Generation.recipe_id).limit(limit))
    return [(int(r), int(e), int(j)) for r, e, j, _ in s.execute(q)]


def waste_reasons(s: Session, since: datetime, until: datetime, recipe_id: int | None = None,
                  limit: int = TOP) -> list[tuple[int, str, str, int]]:
    """``(recipe_id, status, reason, items)``, most first: why items were wasted in the window.
    The reason is the item's ``error`` (the quality gate's words), cut to :data:`REASON_CHARS`;
    ``""`` when it has none (an expired item: it was simply too old)."""
    reason = func.coalesce(func.substr(Generation.error, 1, REASON_CHARS), "").label("reason")
    n = func.count().label("n")
    q = (select(Generation.recipe_id, Generation.status, reason, n)
         .where(*_waste(since, until, recipe_id)).group_by(Generation.recipe_id, Generation.status, reason)
         .order_by(n.desc(), Generation.recipe_id, Generation.status, reason).limit(limit))
    return [(int(r), st, why, int(c)) for r, st, why, c in s.execute(q)]
