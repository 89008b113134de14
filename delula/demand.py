"""Demand as the pool sees it: instant attempts per minute and recipe, hits and misses.

Every instant attempt is a ``claim_events`` row; :func:`roll_up` (the schedule's
``demand-rollup`` job, every minute) folds the closed minutes into ``demand_minutes``, so a
forecast or a replay over weeks reads one row per busy minute and recipe. Each run re-counts the
last :data:`RECOUNT` before its mark too, so an attempt whose transaction committed after its
minute closed is counted all the same. :func:`per_minute` reads rolled-up minutes and, past the
mark, the raw events, so it is exact whether or not a scheduler runs.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

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


# --- the instant hit rate ---------------------------------------------------------------------------

def _rate(attempts: int, hits: int) -> dict:
    return {"attempts": attempts, "hits": hits, "hitRate": hits / attempts if attempts else None}


def hit_rates(rt, since: datetime, until: datetime | None = None) -> dict:
    """The share of instant attempts served from the pool since ``since`` (whole minutes; until
    now): ``{"attempts", "hits", "hitRate", "recipes": {recipe id: {"attempts", "hits",
    "hitRate"}}}``; ``hitRate`` is ``None`` without attempts. Read from ``demand_minutes`` and
    the raw tail past the roll-up (:func:`storage.demand.hit_counts`)."""
    end = until or rt.now()
    with rt.store.begin() as s:
        rows = store_demand.hit_counts(s, _floor_minute(since), end)
    per: dict[int, list[int]] = {}
    for _, rid, n, hits in rows:
        counts = per.setdefault(rid, [0, 0])
        counts[0] += n
        counts[1] += hits
    total = [sum(c[0] for c in per.values()), sum(c[1] for c in per.values())]
    return {**_rate(*total), "recipes": {rid: _rate(*c) for rid, c in sorted(per.items())}}


def hit_rate_series(rt, since: datetime, bucket_s: int = 3600, until: datetime | None = None) -> dict:
    """The hit rate per bucket of ``bucket_s`` seconds, from the bucket holding ``since`` to the
    one holding now: ``{"buckets": [ISO starts], "total": {"attempts", "hits", "hitRate": [per
    bucket]}, "recipes": {recipe id: the same}}``; a bucket without attempts has hit rate ``None``."""
    if not isinstance(bucket_s, int) or isinstance(bucket_s, bool) or bucket_s < 60 or bucket_s % 60:
        raise ValueError("bucket_s must be a whole number of minutes, in seconds")
    end = until or rt.now()
    first = int(since.timestamp()) // bucket_s * bucket_s
    starts = list(range(first, int(end.timestamp()) // bucket_s * bucket_s + 1, bucket_s))
    index = {b: i for i, b in enumerate(starts)}
    with rt.store.begin() as s:
        rows = store_demand.hit_counts(s, datetime.fromtimestamp(first, tz=timezone.utc), end, bucket_s)
    total = [[0] * len(starts), [0] * len(starts)]
    per: dict[int, list[list[int]]] = {}
    for bucket, rid, n, hits in rows:
        i = index.get(bucket)
        if i is None:
            continue
        counts = per.setdefault(rid, [[0] * len(starts), [0] * len(starts)])
        for series in (counts, total):
            series[0][i] += n
            series[1][i] += hits

    def shaped(counts):
        return {"attempts": counts[0], "hits": counts[1],
                "hitRate": [h / n if n else None for n, h in zip(*counts)]}

    return {"buckets": [isoformat(datetime.fromtimestamp(b, tz=timezone.utc)) for b in starts],
            "total": shaped(total), "recipes": {rid: shaped(c) for rid, c in sorted(per.items())}}
