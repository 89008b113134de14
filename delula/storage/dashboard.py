"""Aggregates for the dashboard's overview: time series and distributions, computed in SQL.

Every query reads a bounded time window through an index on its timestamp (``claim_events``,
``queue_samples``, ``generations`` by ``created_at`` / ``completed_at`` / ``(status,
updated_at)``) and returns one row per time bucket (and series), never the rows themselves.
Buckets are whole multiples of ``width_s`` seconds since the Unix epoch, returned as integers, so
both databases agree on the edges: ``date_bin(w, …, epoch)`` on PostgreSQL (grouped as a
timestamp, turned into epoch seconds once per bucket: numeric arithmetic on every row cost
three times the scan), ``strftime('%s', …) / w * w`` on SQLite (which stores these timestamps as
UTC text).

On PostgreSQL each aggregate is an index-only scan of a covering index (migration 0003):
claim events by ``(created_at, outcome)``, completions by ``(completed_at, started_at) WHERE
status = 'completed'``, users' own jobs by a partial ``created_at`` index. ``bench/dashboard.py``
times them on millions of rows and checks their plans.
"""
from __future__ import annotations

import bisect
from collections import Counter
from datetime import datetime, timezone

from sqlalchemy import BigInteger, Float, Integer, and_, case, cast, delete, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL
from sqlalchemy.orm import Session

from .accounts import put_setting_once
from .db import is_postgres
from .jobs import users_own
from .models import (SYSTEM_BACKLOG_USER_ID, AppSetting, ClaimEvent, Generation, JobSource, JobStatus, QueueSample,
                     StatCount)


def _bucket(s: Session, column, width_s: int):
    """``(select, group)``: the start of ``column``'s time bucket in whole seconds since the epoch
    (labelled ``b``), and the expression to group by (on PostgreSQL the bucket as a timestamp,
    cheaper per row). Order by ``b``, the output column: ordering by the grouped expression
    turns the hash aggregate into a sort of every row of the window."""
    if is_postgres(s):
        binned = func.date_bin(func.make_interval(0, 0, 0, 0, 0, 0, width_s), column,
                               literal_column("TIMESTAMPTZ 'epoch'"))
        return cast(func.extract("epoch", binned), BigInteger).label("b"), binned
    b = (cast(func.strftime("%s", column), Integer) // width_s * width_s).label("b")  # integer division
    return b, b


def _seconds_between(s: Session, start, end):
    if is_postgres(s):
        return func.extract("epoch", end - start)
    # julianday() is a double in days: its difference is ~40 µs off, so round to milliseconds
    # (a 15 s job must not land in the 10-15 s bin as 14.99996 s).
    return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)


#: jobs that ended without a usable result: the failures chart's generations
UNSUCCESSFUL = (JobStatus.FAILED, JobStatus.REJECTED)
REJECTED_KEY = "rejected"


def _failed_source():
    """``backlog`` or ``user``: whose job failed (a failed job was never claimed, so its owner
    tells its source without reading the JSON document); :data:`REJECTED_KEY` for a backlog job
    the quality gate rejected."""
    return case((Generation.status == JobStatus.REJECTED, REJECTED_KEY),
                (Generation.user_id == SYSTEM_BACKLOG_USER_ID, JobSource.BACKLOG), else_=JobSource.USER)


def queue_series(s: Session, since: datetime, width_s: int) -> list[tuple[int, float, float, float, float]]:
    """``(bucket, pending, processing, backlog, backlog_in_flight)`` averaged per bucket."""
    b, g = _bucket(s, QueueSample.created_at, width_s)
    q = (select(b, func.avg(QueueSample.pending), func.avg(QueueSample.processing),
                func.avg(QueueSample.backlog), func.avg(QueueSample.backlog_in_flight))
         .where(QueueSample.created_at >= since).group_by(g).order_by(b))
    return [(int(r[0]), *(float(v or 0) for v in r[1:])) for r in s.execute(q)]


def claim_series(s: Session, since: datetime, width_s: int,
                 recipe_id: int | None = None) -> list[tuple[int, str, int]]:
    """``(bucket, outcome, count)`` of instant-claim attempts."""
    b, g = _bucket(s, ClaimEvent.created_at, width_s)
    q = (select(b, ClaimEvent.outcome, func.count()).where(ClaimEvent.created_at >= since)
         .group_by(g, ClaimEvent.outcome).order_by(b))
    if recipe_id is not None:
        q = q.where(ClaimEvent.recipe_id == recipe_id)
    return [(int(bucket), outcome, int(n)) for bucket, outcome, n in s.execute(q)]


def claim_outcomes(s: Session, since: datetime, recipe_id: int | None = None) -> dict[str, int]:
    """Claim attempts per outcome since ``since``."""
    q = select(ClaimEvent.outcome, func.count()).where(ClaimEvent.created_at >= since).group_by(ClaimEvent.outcome)
    if recipe_id is not None:
        q = q.where(ClaimEvent.recipe_id == recipe_id)
    return {outcome: int(n) for outcome, n in s.execute(q)}


def user_generation_series(s: Session, since: datetime, width_s: int,
                           recipe_id: int | None = None) -> list[tuple[int, int]]:
    """``(bucket, count)`` of normal generations (a user's own job, not a claim) created."""
    b, g = _bucket(s, Generation.created_at, width_s)
    q = (select(b, func.count()).where(Generation.created_at >= since, users_own())
         .group_by(g).order_by(b))
    if recipe_id is not None:
        q = q.where(Generation.recipe_id == recipe_id)
    return [(int(bucket), int(n)) for bucket, n in s.execute(q)]


def failure_series(s: Session, since: datetime, width_s: int,
                   recipe_id: int | None = None) -> list[tuple[int, str, int]]:
    """``(bucket, source, count)`` of generations that ended ``failed`` or ``rejected`` (by when
    they ended); ``source`` is ``backlog`` or ``user`` for failures, ``rejected`` for rejections."""
    b, g = _bucket(s, Generation.updated_at, width_s)
    source = _failed_source().label("src")
    q = (select(b, source, func.count())
         .where(Generation.status.in_(UNSUCCESSFUL), Generation.updated_at >= since)
         .group_by(g, source).order_by(b))
    if recipe_id is not None:
        q = q.where(Generation.recipe_id == recipe_id)
    return [(int(bucket), src, int(n)) for bucket, src, n in s.execute(q)]


def live_counts(s: Session, recipe_id: int | None = None) -> dict[str, int]:
    """``{"pending": n, "processing": m}`` now (each served by its partial index)."""
    out = {}
    for status in JobStatus.LIVE:
        q = select(func.count()).select_from(Generation).where(Generation.status == status)
        if recipe_id is not None:
            q = q.where(Generation.recipe_id == recipe_id)
        out[status] = int(s.scalar(q) or 0)
    return out


def finished_counts(s: Session, since: datetime, recipe_id: int | None = None) -> dict[str, int]:
    """``{"completed": n, "failed": m, "rejected": r}``: generations that finished since ``since``."""
    completed = select(func.count()).select_from(Generation).where(
        Generation.completed_at >= since, Generation.status == JobStatus.COMPLETED)
    ended = (select(Generation.status, func.count())
             .where(Generation.status.in_(UNSUCCESSFUL), Generation.updated_at >= since).group_by(Generation.status))
    if recipe_id is not None:
        completed = completed.where(Generation.recipe_id == recipe_id)
        ended = ended.where(Generation.recipe_id == recipe_id)
    out = {JobStatus.COMPLETED: int(s.scalar(completed) or 0), **{st: 0 for st in UNSUCCESSFUL}}
    out.update({st: int(n) for st, n in s.execute(ended)})
    return out


def _processing_window(s: Session, since: datetime, recipe_id: int | None):
    seconds = _seconds_between(s, Generation.started_at, Generation.completed_at)
    where = [Generation.status == JobStatus.COMPLETED, Generation.completed_at >= since,
             Generation.started_at.is_not(None)]
    if recipe_id is not None:
        where.append(Generation.recipe_id == recipe_id)
    return seconds, and_(*where)


def processing_histogram(s: Session, since: datetime, edges: list[float],
                         recipe_id: int | None = None) -> dict[int, int]:
    """``{bin: count}`` of processing times (start to completion) of jobs completed since
    ``since``: bin ``i`` holds ``edges[i] <= seconds < edges[i+1]``, the last bin everything
    from ``edges[-1]`` up."""
    seconds, where = _processing_window(s, since, recipe_id)
    if is_postgres(s):  # one binary search per row over interval edges (no numeric epoch, no CASE chain)
        thresholds = cast([f"{e} seconds" for e in edges], ARRAY(INTERVAL))
        binned = (func.width_bucket(Generation.completed_at - Generation.started_at, thresholds) - 1).label("bin")
    else:
        whens = [(seconds < edges[i], i - 1) for i in range(1, len(edges))]
        binned = case(*whens, else_=len(edges) - 1).label("bin")
    q = select(binned, func.count()).where(where).group_by(binned)
    return {int(b): int(n) for b, n in s.execute(q) if b is not None and b >= 0}


def processing_percentiles(s: Session, since: datetime, fractions: tuple[float, ...],
                           recipe_id: int | None = None) -> tuple[int, list[float | None]]:
    """``(count, [seconds at each fraction])`` of processing times of jobs completed since
    ``since``, interpolated like ``percentile_cont``. PostgreSQL computes them in one query;
    SQLite, without percentile functions, reads the two neighbouring values of each rank."""
    seconds, where = _processing_window(s, since, recipe_id)
    if is_postgres(s):  # every fraction from one sort of the durations (intervals sort faster than numerics)
        duration = Generation.completed_at - Generation.started_at
        wanted = cast([float(f) for f in fractions], ARRAY(Float))
        n, values = s.execute(select(func.count(), func.percentile_cont(wanted).within_group(duration))
                              .where(where)).one()
        if not n or values is None:
            return int(n or 0), [None for _ in fractions]
        return int(n), [v.total_seconds() if v is not None else None for v in values]
    n = int(s.scalar(select(func.count()).where(where)) or 0)
    if n == 0:
        return 0, [None for _ in fractions]
    out = []
    ordered = select(cast(seconds, Float)).where(where).order_by(seconds)
    for f in fractions:
        rank = f * (n - 1)
        low = int(rank)
        pair = [float(v) for v in s.scalars(ordered.limit(2).offset(low))]
        value = pair[0] if len(pair) == 1 else pair[0] + (pair[1] - pair[0]) * (rank - low)
        out.append(value)
    return n, out


# --- roll-up (``stat_counts``) for long ranges -----------------------------------------------------

SLOT, HOUR = 900, 3600              # series metrics per quarter hour, completions per hour
ROLLED_UNTIL = "stat_counts_until"  # app setting: every hour before it is in ``stat_counts``
ALL_RECIPES, NO_RECIPE = 0, -1

CountRow = tuple[int, int, str, str, int]   # (slot or hour start, recipe id, metric, key, count)


def _duration_edges() -> tuple[int, ...]:
    """Whole seconds up to 16 s, then a 2^(1/8) grid rounded to whole seconds up to a day, with
    the overview's histogram edges (``overview.PROCESSING_EDGES``) among them and grid points
    within 4 % of one of those left out. Migration 0019 states the same list; changing it is a
    migration (old rows keep their lower edges, so they stay readable, only less precise)."""
    histogram = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 480)
    grid = [round(16 * 2 ** (j / 8)) for j in range(100) if 16 * 2 ** (j / 8) <= 86_400]
    grid = [x for x in grid if not any(e and x != e and abs(x - e) / e < 0.04 for e in histogram)]
    return tuple(sorted(set(range(16)) | set(grid) | set(histogram)))


#: Lower edges (whole seconds) of the processing-time buckets of ``stat_counts``' completions:
#: 117 buckets, the last open-ended from 84,990 s. Above 16 s an upper edge is at most 1.118×
#: its lower one (1.114× from a minute up), so a percentile placed within its bucket is within
#: 12 % of the exact one; below 16 s it is within its second, as before migration 0019.
DURATION_EDGES = _duration_edges()
NO_DURATION = "-"       # a completion without a start time (or with a negative duration)


def duration_key(index: int) -> str:
    """The ``stat_counts`` key of bucket ``index`` of :data:`DURATION_EDGES`: its lower edge
    in whole seconds; :data:`NO_DURATION` for a negative index."""
    return str(DURATION_EDGES[index]) if index >= 0 else NO_DURATION


def duration_bounds(key: str) -> tuple[int, int | None] | None:
    """``(lower, upper)`` seconds of the bucket keyed ``key`` (upper ``None``: the open last
    bucket), ``None`` for :data:`NO_DURATION`. Any whole second is a valid key (rows from
    before migration 0019 converted, or from a later list): its bucket is the edge at or below it."""
    if key == NO_DURATION:
        return None
    low = int(key)
    i = bisect.bisect_right(DURATION_EDGES, low)
    return low, (DURATION_EDGES[i] if i < len(DURATION_EDGES) else None)


def raw_counts(s: Session, start: datetime, end: datetime | None = None,
               recipe_id: int | None = None) -> list[CountRow]:
    """What ``stat_counts`` holds, from the raw tables for ``[start, end)`` (no end: up to now):
    per quarter hour and recipe, claim attempts by outcome, failures by source and users' own
    jobs created (a rejected backlog job is a failure keyed ``rejected``); per hour and recipe,
    completions by processing-time bucket (:data:`DURATION_EDGES`, keyed by the bucket's lower
    edge: at most 117 rows per recipe and hour however spread the times). The same
    definitions as the series above, so rolled-up and raw periods add up alike."""
    def window(column):
        return [column >= start] + ([column < end] if end is not None else [])

    def recipe(column):
        return [column == recipe_id] if recipe_id is not None else []

    rows: list[CountRow] = []
    b, g = _bucket(s, ClaimEvent.created_at, SLOT)
    rid = func.coalesce(ClaimEvent.recipe_id, NO_RECIPE)
    q = (select(b, rid, ClaimEvent.outcome, func.count())
         .where(*window(ClaimEvent.created_at), *recipe(ClaimEvent.recipe_id)).group_by(g, rid, ClaimEvent.outcome))
    rows += [(int(t), int(r), "claim", outcome, int(n)) for t, r, outcome, n in s.execute(q)]

    b, g = _bucket(s, Generation.updated_at, SLOT)
    source = _failed_source()
    q = (select(b, Generation.recipe_id, source, func.count())
         .where(Generation.status.in_(UNSUCCESSFUL), *window(Generation.updated_at), *recipe(Generation.recipe_id))
         .group_by(g, Generation.recipe_id, source))
    rows += [(int(t), r, "failed", src, int(n)) for t, r, src, n in s.execute(q)]

    b, g = _bucket(s, Generation.created_at, SLOT)
    q = (select(b, Generation.recipe_id, func.count())
         .where(*window(Generation.created_at), users_own(), *recipe(Generation.recipe_id))
         .group_by(g, Generation.recipe_id))
    rows += [(int(t), r, "normal", "", int(n)) for t, r, n in s.execute(q)]

    b, g = _bucket(s, Generation.completed_at, HOUR)
    where = [Generation.status == JobStatus.COMPLETED, *window(Generation.completed_at), *recipe(Generation.recipe_id)]
    if is_postgres(s):   # the duration bucket's index, one binary search per row over interval edges
        thresholds = cast([f"{e} seconds" for e in DURATION_EDGES], ARRAY(INTERVAL))
        index = func.coalesce(func.width_bucket(Generation.completed_at - Generation.started_at, thresholds) - 1, -1)
        q = select(b, Generation.recipe_id, index, func.count()).where(*where).group_by(g, Generation.recipe_id, index)
        rows += [(int(t), r, "completed", duration_key(i), int(n)) for t, r, i, n in s.execute(q)]
    else:                # whole seconds in SQL, their buckets here
        seconds = _seconds_between(s, Generation.started_at, Generation.completed_at)
        whole = func.coalesce(cast(seconds, Integer), -1)
        q = select(b, Generation.recipe_id, whole, func.count()).where(*where).group_by(g, Generation.recipe_id, whole)
        merged: Counter = Counter()
        for t, r, w, n in s.execute(q):
            merged[(int(t), r, duration_key(bisect.bisect_right(DURATION_EDGES, w) - 1 if w >= 0 else -1))] += int(n)
        rows += [(t, r, "completed", key, n) for (t, r, key), n in merged.items()]
    return rows


def rolled_until(s: Session, *, lock: bool = False, mark: str = ROLLED_UNTIL) -> datetime | None:
    """The end of the rolled-up hours (``None`` before the first roll-up); ``lock`` holds the
    mark until the transaction ends, so two roll-ups never add the same hours. ``mark``: the app
    setting that keeps it (another roll-up, e.g. ``demand.ROLLED_UNTIL``, keeps its own)."""
    q = select(AppSetting.value).where(AppSetting.key == mark)
    if lock:
        put_setting_once(s, mark, "")
        q = q.with_for_update()
    value = s.scalar(q)
    return datetime.fromisoformat(value) if value else None


def add_rolled(s: Session, rows: list[CountRow], until: datetime) -> int:
    """Store per-recipe rows and their sums over every recipe, and move the mark to ``until``;
    returns how many rows were stored."""
    totals: Counter = Counter()
    for at, _, metric, key, n in rows:
        totals[(at, metric, key)] += n
    everything = rows + [(at, ALL_RECIPES, metric, key, n) for (at, metric, key), n in totals.items()]
    if everything:
        s.execute(StatCount.__table__.insert(),
                  [{"at": datetime.fromtimestamp(at, tz=timezone.utc), "recipe_id": rid, "metric": metric,
                    "key": key, "n": n} for at, rid, metric, key, n in everything])
    move_mark(s, ROLLED_UNTIL, until)
    return len(everything)


def move_mark(s: Session, mark: str, until: datetime) -> None:
    """Set a roll-up's mark (held by :func:`rolled_until` with ``lock``) to ``until``."""
    s.execute(update(AppSetting).where(AppSetting.key == mark).values(value=until.isoformat()))


SERIES_METRICS, TOTAL_METRICS = ("claim", "failed", "normal"), ("completed", "failed")


def _rolled(start: datetime, end: datetime, recipe_id: int | None, metrics: tuple[str, ...]):
    return (StatCount.recipe_id == (ALL_RECIPES if recipe_id is None else recipe_id),
            StatCount.metric.in_(metrics), StatCount.at >= start, StatCount.at < end)


def rolled_series(s: Session, start: datetime, end: datetime, width_s: int,
                  recipe_id: int | None = None) -> list[tuple[int, str, str, int]]:
    """``(bucket, metric, key, count)`` of the series metrics in ``stat_counts`` over ``[start,
    end)``, summed per bucket of ``width_s`` in SQL, for one recipe (``None``: every recipe)."""
    b, g = _bucket(s, StatCount.at, width_s)
    q = (select(b, StatCount.metric, StatCount.key, func.sum(StatCount.n))
         .where(*_rolled(start, end, recipe_id, SERIES_METRICS)).group_by(g, StatCount.metric, StatCount.key))
    return [(int(bucket), metric, key, int(n)) for bucket, metric, key, n in s.execute(q)]


def rolled_totals(s: Session, start: datetime, end: datetime,
                  recipe_id: int | None = None) -> list[tuple[str, str, int]]:
    """``(metric, key, count)``: completions by duration bucket and failures over ``[start, end)``."""
    q = (select(StatCount.metric, StatCount.key, func.sum(StatCount.n))
         .where(*_rolled(start, end, recipe_id, TOTAL_METRICS)).group_by(StatCount.metric, StatCount.key))
    return [(metric, key, int(n)) for metric, key, n in s.execute(q)]


def prune_rolled(s: Session, before: datetime) -> int:
    return s.execute(delete(StatCount).where(StatCount.at < before)).rowcount or 0
