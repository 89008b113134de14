"""The queue's status read model: what ``queue status``, the queue page and ``GET /api/queue/stats`` show.

Read only, and bounded like every read of the queue: live statuses through their partial
indexes, finished ones over a recent window of an indexed timestamp. Apart from the engine
(``queue``), which never reads these, and from the operator actions (``queue_actions``): a
face that only shows the queue imports this module alone. Shaping it as text is the CLI's
business (``cli.format_status``).
"""
from __future__ import annotations

from datetime import timedelta

from . import breaker, pauses
from .clock import isoformat
from .storage import JobStatus, jobs
from .storage import stats as store_stats

STATS_TTL_S = 10.0         # GET /api/queue/stats is cached at most this long (SPEC: <= 30 s)
NEXT_POLLS_SHOWN = 5
FINISHED_COUNT_WINDOW = timedelta(hours=24)   # status counts: finished jobs of the last day only
FINISHED_COUNT_CAP = 10_000                   # ... and up to this many (``countsAbove``: statuses past it)


def status(rt) -> dict:
    """The queue at a glance (``queue status --json``)::

        {"counts": {status: n}, "countsAbove": {status: cap}, "countsSince", "oldestPending": {"id", "recipeId", "ageSeconds", "createdAt"} | None,
         "slots": {"inUse", "max"}, "nextPolls": [{"id", "recipeId", "recipe", "at", "inSeconds", "pollCount",
         "attempts"}], "claimable": {"total", "byRecipe": {recipe_id: n}}, "at"}
    """
    now = rt.now()
    since = now - FINISHED_COUNT_WINDOW
    with rt.store.begin() as s:
        counts = jobs.count_by_status(s, finished_since=since, cap=FINISHED_COUNT_CAP)
        oldest = jobs.oldest_pending(s)
        polls = jobs.next_polls(s, NEXT_POLLS_SHOWN)
        backlog = store_stats.backlog_counts(s)
        paused = pauses.read(s)
    claimable = {str(rid): c["completed"] for rid, c in sorted(backlog.items()) if c["completed"]}
    above = sorted(st for st, n in counts.items() if st not in JobStatus.LIVE and n > FINISHED_COUNT_CAP)
    return {
        "counts": {st: min(n, FINISHED_COUNT_CAP) if st in above else n for st, n in counts.items()},
        "countsAbove": {st: FINISHED_COUNT_CAP for st in above},
        "countsSince": isoformat(since),
        "oldestPending": None if oldest is None else {
            "id": oldest.id, "recipeId": oldest.recipe_id, "createdAt": isoformat(oldest.created_at),
            "ageSeconds": round((now - oldest.created_at).total_seconds(), 1)},
        "slots": {"inUse": counts[JobStatus.PROCESSING], "max": rt.settings.max_concurrent_jobs},
        "nextPolls": [{"id": g.id, "recipeId": g.recipe_id, "recipe": name, "at": isoformat(g.next_poll_at),
                       "inSeconds": round((g.next_poll_at - now).total_seconds(), 1),
                       "pollCount": g.poll_count, "attempts": g.attempts} for g, name in polls],
        "claimable": {"total": sum(claimable.values()), "byRecipe": claimable},
        "paused": paused.summary(),
        "breaker": breaker.current(rt),
        "at": isoformat(now),
    }


def stats(rt) -> dict:
    """The body of ``GET /api/queue/stats``, cached for up to STATS_TTL_S seconds per process.

    Bounded queries only: live counts through the partial indexes, the last hour through the
    ``completed_at`` / ``(status, updated_at)`` indexes. PostgreSQL computes the percentile in
    SQL (``percentile_cont``); SQLite in Python over the same window.
    """
    def load() -> dict:
        now = rt.now()
        since = now - timedelta(hours=1)
        with rt.store.begin() as s:
            live = store_stats.status_counts(s)
            finished = store_stats.finished_since(s, since)
            avg, p95 = jobs.processing_seconds(s, since)
        return {
            "pending": live[JobStatus.PENDING],
            "processing": live[JobStatus.PROCESSING],
            "completedLastHour": finished.get(JobStatus.COMPLETED, 0),
            "failedLastHour": finished.get(JobStatus.FAILED, 0),
            "avgProcessingSeconds": None if avg is None else round(avg, 2),
            "p95ProcessingSeconds": None if p95 is None else round(p95, 2),
            "cachedAt": isoformat(now),
        }

    return dict(rt.cache("queue_stats", ttl=STATS_TTL_S).get_or_compute("stats", load))
