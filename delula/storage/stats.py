"""Counts and aggregates: backlog levels, queue sizes, claim rates.

Every query here is bounded: by a partial index (the pool, pending, processing) or by a time
window on an indexed timestamp, never an exact ``COUNT(*)`` over the whole history.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import and_, func, literal, select, union_all
from sqlalchemy.orm import Session

from .db import is_postgres
from .jobs import from_backlog
from .models import DEMAND_OUTCOMES, IN_POOL, SYSTEM_BACKLOG_USER_ID, ClaimEvent, Generation, JobSource, JobStatus


def backlog_counts(s: Session) -> dict[int, dict[str, int]]:
    """``{recipe_id: {"completed": n, "inFlight": m}}`` for every recipe with backlog rows, one query.

    The pool's part is its own ``SELECT``, with the pool index's predicate, so it is an
    index-only scan of that small index; asked with the live statuses in one ``IN``, PostgreSQL
    read every backlog row through ``user_id``'s index, the failed ones too (200,000 heap rows at
    20 M generations: the recipes page's refresh 19 → 208 ms)."""
    pool = (select(Generation.recipe_id, literal(JobStatus.COMPLETED.value), func.count()).where(IN_POOL)
            .group_by(Generation.recipe_id))   # the status as a constant: no column outside the index
    live = (select(Generation.recipe_id, Generation.status, func.count())
            .where(Generation.user_id == SYSTEM_BACKLOG_USER_ID, Generation.status.in_(JobStatus.LIVE))
            .group_by(Generation.recipe_id, Generation.status))
    q = union_all(pool, live)
    out: dict[int, dict[str, int]] = defaultdict(lambda: {"completed": 0, "inFlight": 0})
    for recipe_id, status, n in s.execute(q):
        out[recipe_id]["completed" if status == JobStatus.COMPLETED else "inFlight"] += n
    return dict(out)


def status_counts(s: Session, statuses: tuple[str, ...] = JobStatus.LIVE) -> dict[str, int]:
    """Counts of the live statuses (each served by its partial index)."""
    out = {st: 0 for st in statuses}
    for st in statuses:
        out[st] = s.scalar(select(func.count()).select_from(Generation).where(Generation.status == st)) or 0
    return out


def attempts_since(s: Session, since: datetime) -> dict[int, int]:
    """Instant attempts per recipe since ``since``, hits and misses alike (``models.DEMAND_OUTCOMES``):
    the demand side of the backlog target. Refusals that never reached the pool (no credits, cooling
    down, forbidden, invalid) say nothing of what the pool should hold and are left out."""
    q = (select(ClaimEvent.recipe_id, func.count())
         .where(ClaimEvent.created_at >= since, ClaimEvent.outcome.in_(DEMAND_OUTCOMES))
         .group_by(ClaimEvent.recipe_id))
    return {rid: n for rid, n in s.execute(q) if rid is not None}


def backlog_lead_times(s: Session, since: datetime, sample: int = 2000) -> tuple[dict[int, float], float | None]:
    """Median minutes from creation to completion of backlog jobs completed since ``since``:
    ``({recipe_id: median}, overall median or None)``, one query.

    A claimed item's ``created_at`` is its claim time (migration 0010: it is its new owner's from
    then on), after its completion, so rows created after they completed are left out. The test is
    the order of the two times rather than the owner: items claimed before 0010 kept their creation
    time and still count, and a busy recipe, whose items are claimed soon after they finish, keeps
    its sample instead of losing most of it to the claims.

    Bounded: only the backlog jobs among the newest ``sample`` completions of the window are
    looked at (a backward scan of the partial index ``ix_generations_finished`` — ``completed_at``
    of completed generations — that stops after ``sample`` rows; the source filter sits outside
    the limit, so neither planner trades that scan for a sort of the whole window), so the cost
    stays flat however large the pool. PostgreSQL
    computes the medians (``percentile_cont`` over grouping sets); SQLite has no percentile
    function, so it returns the sample's durations and Python takes the medians.
    """
    import statistics

    from sqlalchemy import tuple_

    if is_postgres(s):
        minutes = func.extract("epoch", Generation.completed_at - Generation.created_at) / 60.0
    else:
        minutes = (func.julianday(Generation.completed_at) - func.julianday(Generation.created_at)) * 1440.0
    newest = (select(Generation.recipe_id, Generation.status, minutes.label("minutes"),
                     and_(from_backlog(), Generation.created_at <= Generation.completed_at).label("counted"))
              .where(Generation.status == JobStatus.COMPLETED, Generation.completed_at >= since)
              .order_by(Generation.completed_at.desc()).limit(sample).subquery())
    recent = (select(newest.c.recipe_id, newest.c.minutes)
              .where(newest.c.counted).subquery())
    if is_postgres(s):
        q = (select(recent.c.recipe_id, func.percentile_cont(0.5).within_group(recent.c.minutes))
             .group_by(func.grouping_sets(tuple_(recent.c.recipe_id), tuple_())))
        per_recipe, overall = {}, None
        for rid, median in s.execute(q):
            if rid is None:
                overall = float(median) if median is not None else None
            elif median is not None:
                per_recipe[rid] = float(median)
        return per_recipe, overall
    durations: dict[int, list[float]] = defaultdict(list)
    for rid, m in s.execute(select(recent.c.recipe_id, recent.c.minutes)):
        if m is not None:
            durations[rid].append(max(0.0, round(float(m), 6)))  # julianday arithmetic is inexact
    everything = [m for ms in durations.values() for m in ms]
    return ({rid: statistics.median(ms) for rid, ms in durations.items()},
            statistics.median(everything) if everything else None)


def mean_run_minutes(s: Session, since: datetime, sample: int = 2000) -> float | None:
    """Mean minutes a job ran (start to completion) over the newest ``sample`` completions since
    ``since``, user and backlog jobs alike (they share the slots); ``None`` if none. The same
    bounded backward scan of ``ix_generations_finished`` as :func:`backlog_lead_times`."""
    if is_postgres(s):
        minutes = func.extract("epoch", Generation.completed_at - Generation.started_at) / 60.0
    else:
        minutes = (func.julianday(Generation.completed_at) - func.julianday(Generation.started_at)) * 1440.0
    newest = (select(minutes.label("minutes"))
              .where(Generation.status == JobStatus.COMPLETED, Generation.completed_at >= since,
                     Generation.started_at.is_not(None))
              .order_by(Generation.completed_at.desc()).limit(sample).subquery())
    mean = s.scalar(select(func.avg(newest.c.minutes)))
    return max(0.0, float(mean)) if mean is not None else None


def add_queue_sample(s: Session, *, now: datetime, pending: int, processing: int, backlog: int,
                     backlog_in_flight: int, recipes_below_minimum: int) -> None:
    """One ``queue_samples`` row (the scheduler writes one every 30 s)."""
    from .models import QueueSample

    s.add(QueueSample(created_at=now, pending=pending, processing=processing, backlog=backlog,
                      backlog_in_flight=backlog_in_flight, recipes_below_minimum=recipes_below_minimum))
    s.flush()


def prune_queue_samples(s: Session, before: datetime) -> int:
    """Delete samples older than ``before`` (keeps the table bounded); returns how many went."""
    from sqlalchemy import delete

    from .models import QueueSample

    return s.execute(delete(QueueSample).where(QueueSample.created_at < before)).rowcount or 0


def prune_refused_claim_events(s: Session, before: datetime, limit: int) -> int:
    """Delete at most ``limit`` claim events older than ``before`` whose outcome is not
    ``claimed`` (index ``ix_claim_events_created_at_outcome``); returns how many went."""
    from sqlalchemy import delete

    batch = (select(ClaimEvent.id).where(ClaimEvent.created_at < before, ClaimEvent.outcome != "claimed")
             .limit(limit).scalar_subquery())
    return s.execute(delete(ClaimEvent).where(ClaimEvent.id.in_(batch))).rowcount or 0


# --- metrics (``delula.metrics``) ------------------------------------------------------------

def claim_outcomes_since(s: Session, since: datetime) -> dict[str, int]:
    """Instant claim attempts since ``since`` by outcome (``claim_events.created_at`` index)."""
    q = (select(ClaimEvent.outcome, func.count()).where(ClaimEvent.created_at >= since)
         .group_by(ClaimEvent.outcome))
    return {outcome: n for outcome, n in s.execute(q)}


def finished_since(s: Session, since: datetime) -> dict[str, int]:
    """Generations that completed (by ``completed_at``) or ended otherwise -- failed, cancelled,
    expired, rejected (by ``updated_at``) -- since ``since``, by status. A later claim of a
    completed item moves its ``created_at`` and ``updated_at``, not its ``completed_at``, so
    claims are not counted as completions; an expired item is counted when it expired, not as a
    completion."""
    from sqlalchemy import or_

    ended = tuple(st for st in JobStatus.FINISHED if st != JobStatus.COMPLETED)
    q = (select(Generation.status, func.count())
         .where(or_(and_(Generation.status == JobStatus.COMPLETED, Generation.completed_at >= since),
                    and_(Generation.status.in_(ended), Generation.updated_at >= since)))
         .group_by(Generation.status))
    return {status: n for status, n in s.execute(q)}


def processing_durations_since(s: Session, since: datetime, limit: int = 20_000) -> list[tuple[str, float]]:
    """``(source, seconds from started_at to completed_at)`` of generations completed since
    ``since``, newest first, at most ``limit``; ``source`` is a :class:`JobSource` (a claimed
    backlog item stays ``backlog``)."""
    q = (select(from_backlog(), Generation.started_at, Generation.completed_at)
         .where(Generation.status == JobStatus.COMPLETED, Generation.completed_at >= since,
                Generation.started_at.is_not(None))
         .order_by(Generation.completed_at.desc()).limit(limit))
    return [(JobSource.BACKLOG if backlog else JobSource.USER, max(0.0, (done - started).total_seconds()))
            for backlog, started, done in s.execute(q)]
