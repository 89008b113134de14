"""Recorded demand: instant attempts per minute and recipe, hits and misses (``demand_minutes``).

``claim_events`` holds one row per attempt; a forecast over weeks wants few rows, so the closed
minutes are rolled up here (:func:`roll`), one row per minute and recipe that had any attempt.
An attempt is demand when it reached the pool (``models.DEMAND_OUTCOMES``): a hit, or a miss
because the pool was empty or every item was taken by other claims. A roll-up recomputes its
whole range (delete, then insert), so re-rolling a minute that a late commit touched is exact.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import case, delete, func, select
from sqlalchemy.orm import Session

from .dashboard import _bucket, move_mark, rolled_until
from .models import DEMAND_OUTCOMES, ClaimEvent, DemandMinute

ROLLED_UNTIL = "demand_minutes_until"   # app setting: every minute before it is in demand_minutes


def rolled(s: Session, *, lock: bool = False) -> datetime | None:
    """The end of the rolled-up minutes (``None`` before the first roll-up)."""
    return rolled_until(s, lock=lock, mark=ROLLED_UNTIL)


def raw(s: Session, start: datetime, end: datetime | None = None) -> list[tuple[datetime, int, int, int]]:
    """``(minute, recipe_id, attempts, hits)`` counted from ``claim_events`` over ``[start, end)``."""
    b, g = _bucket(s, ClaimEvent.created_at, 60)
    q = (select(b, ClaimEvent.recipe_id, func.count(),
                func.sum(case((ClaimEvent.outcome == "claimed", 1), else_=0)))
         .where(ClaimEvent.created_at >= start, ClaimEvent.outcome.in_(DEMAND_OUTCOMES),
                ClaimEvent.recipe_id.is_not(None),
                *([ClaimEvent.created_at < end] if end is not None else []))
         .group_by(g, ClaimEvent.recipe_id))
    return [(datetime.fromtimestamp(int(at), tz=timezone.utc), rid, int(n), int(hits)) for at, rid, n, hits in s.execute(q)]


def first_attempt(s: Session) -> datetime | None:
    """When the oldest claim event still kept happened (``None``: none is)."""
    return s.scalar(select(func.min(ClaimEvent.created_at)))


def roll(s: Session, start: datetime, end: datetime) -> int:
    """Recompute ``[start, end)`` (whole minutes) from ``claim_events`` and move the mark to
    ``end``; returns how many rows were written."""
    rows = raw(s, start, end)
    s.execute(delete(DemandMinute).where(DemandMinute.minute >= start, DemandMinute.minute < end))
    if rows:
        s.execute(DemandMinute.__table__.insert(),
                  [{"minute": m, "recipe_id": rid, "attempts": n, "hits": h} for m, rid, n, h in rows])
    move_mark(s, ROLLED_UNTIL, end)
    return len(rows)


def minutes(s: Session, start: datetime, end: datetime,
            recipe_id: int | None = None) -> list[tuple[datetime, int, int, int]]:
    """``(minute, recipe_id, attempts, hits)`` over ``[start, end)``: the rolled-up minutes, and
    ``claim_events`` for the rest (the open minute, or all of it before any roll-up)."""
    cut = max(min(rolled(s) or start, end), start)
    q = select(DemandMinute.minute, DemandMinute.recipe_id, DemandMinute.attempts, DemandMinute.hits).where(
        DemandMinute.minute >= start, DemandMinute.minute < cut)
    if recipe_id is not None:
        q = q.where(DemandMinute.recipe_id == recipe_id)
    stored = [tuple(r) for r in s.execute(q.order_by(DemandMinute.minute, DemandMinute.recipe_id))]
    tail = [r for r in raw(s, cut, end) if recipe_id is None or r[1] == recipe_id] if cut < end else []
    return stored + sorted(tail)


def hourly(s: Session, start: datetime, end: datetime) -> list[tuple[datetime, int, int]]:
    """``(hour, recipe_id, attempts)`` over ``[start, end)`` (whole hours), for a forecast
    (:func:`hit_counts` per hour, its two parts added)."""
    counts: dict[tuple[datetime, int], int] = {}
    for at, rid, n, _ in hit_counts(s, start, end, 3600):
        key = (datetime.fromtimestamp(at, tz=timezone.utc), rid)
        counts[key] = counts.get(key, 0) + n
    return [(h, rid, n) for (h, rid), n in sorted(counts.items())]


def prune(s: Session, before: datetime) -> int:
    """Forget the minutes before ``before``; returns how many rows went."""
    return s.execute(delete(DemandMinute).where(DemandMinute.minute < before)).rowcount or 0


def hit_counts(s: Session, start: datetime, end: datetime,
               width_s: int | None = None) -> list[tuple[int | None, int, int, int]]:
    """``(bucket, recipe_id, attempts, hits)`` over ``[start, end)``, summed in SQL per recipe and,
    with ``width_s``, per bucket of that many seconds (epoch seconds; ``None`` without): the
    rolled-up minutes, then ``claim_events`` past the roll-up's mark. Per recipe and bucket, the
    two parts may each give a row; the caller adds them."""
    cut = max(min(rolled(s) or start, end), start)
    out: list[tuple[int | None, int, int, int]] = []
    if cut > start:
        keys, groups = [DemandMinute.recipe_id], [DemandMinute.recipe_id]
        if width_s:
            b, g = _bucket(s, DemandMinute.minute, width_s)
            keys, groups = [b, DemandMinute.recipe_id], [g, DemandMinute.recipe_id]
        q = (select(*keys, func.sum(DemandMinute.attempts), func.sum(DemandMinute.hits))
             .where(DemandMinute.minute >= start, DemandMinute.minute < cut).group_by(*groups))
        for row in s.execute(q):
            *bucket, rid, n, hits = row
            out.append((int(bucket[0]) if bucket else None, rid, int(n), int(hits)))
    if cut < end:
        keys, groups = [ClaimEvent.recipe_id], [ClaimEvent.recipe_id]
        if width_s:
            b, g = _bucket(s, ClaimEvent.created_at, width_s)
            keys, groups = [b, ClaimEvent.recipe_id], [g, ClaimEvent.recipe_id]
        q = (select(*keys, func.count(), func.sum(case((ClaimEvent.outcome == "claimed", 1), else_=0)))
             .where(ClaimEvent.created_at >= cut, ClaimEvent.created_at < end,
                    ClaimEvent.outcome.in_(DEMAND_OUTCOMES), ClaimEvent.recipe_id.is_not(None))
             .group_by(*groups))
        for row in s.execute(q):
            *bucket, rid, n, hits = row
            out.append((int(bucket[0]) if bucket else None, rid, int(n), int(hits)))
    return out
