"""Demand as the pool sees it: instant attempts per minute and recipe, hits and misses.

Every instant attempt is a ``claim_events`` row; :func:`roll_up` (the schedule's
``demand-rollup`` job, every minute) folds the closed minutes into ``demand_minutes``, so a
forecast or a replay over weeks reads one row per busy minute and recipe. Each run re-counts the
last :data:`RECOUNT` before its mark too, so an attempt whose transaction committed after its
minute closed is counted all the same. :func:`per_minute` reads rolled-up minutes and, past the
mark, the raw events, so it is exact whether or not a scheduler runs.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .clock import isoformat
from .storage import demand as store_demand

BACKFILL = timedelta(days=28)   # the first roll-up starts this far back (what claim_events still hold)
CHUNK = timedelta(days=1)       # one run rolls at most this much, so a backfill is many short transactions
RECOUNT = timedelta(minutes=5)  # re-counted behind the mark at every run (late commits)
KEEP = timedelta(days=91)       # rolled-up minutes older than this are forgotten


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def roll_up(rt) -> dict:
    """Fold the closed minutes since the last run into ``demand_minutes``."""
    now = rt.now()
    with rt.store.begin() as s:
        mark = store_demand.rolled(s, lock=True)
        if mark is not None:
            start = mark - RECOUNT
        else:   # from the oldest event kept, at most BACKFILL back
            oldest = store_demand.first_attempt(s)
            start = _floor_minute(max(now - BACKFILL, oldest if oldest is not None else now))
        end = min(_floor_minute(now), start + CHUNK)
        if end <= start:
            return {"rows": 0}
        rows = store_demand.roll(s, start, end)
        pruned = store_demand.prune(s, now - KEEP)
    return {"rows": rows, "until": isoformat(end), "rowsPruned": pruned}


def per_minute(rt, start: datetime, end: datetime, recipe_id: int | None = None) -> list[dict]:
    """``{"minute", "recipeId", "attempts", "hits"}`` per minute and recipe with any attempt
    over ``[start, end)``, oldest first."""
    with rt.store.begin() as s:
        rows = store_demand.minutes(s, start, end, recipe_id)
    return [{"minute": isoformat(m), "recipeId": rid, "attempts": n, "hits": h} for m, rid, n, h in rows]
