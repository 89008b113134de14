"""The monotonic counters ``/metrics`` exports, kept in the database (``storage.counters``).

Jobs finished (``queue.count_finished``), provider calls and breaker openings
(``breaker.Gate.record``) are added in the transactions that make them happen. Instant claims
are read off ``claim_events``, which every attempt writes anyway: :func:`roll_up` (the
schedule's ``counters-rollup`` job, every minute) adds the events older than :data:`SETTLE` to
the stored totals and moves the mark; a read adds the events past the mark. So a claim pays no
extra write, a restart loses nothing, and every process reads the same totals.

An attempt is counted once it is past the mark or in the stored total; an event committed more
than :data:`SETTLE` after its timestamp would be missed (a claim is one short transaction).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .storage import counters as store

SETTLE = timedelta(minutes=2)    # events older than this are added to the stored claims total
CHUNK = timedelta(days=1)        # one run adds at most this much (a first run is many short ones)


def roll_up(rt) -> dict:
    """Add the settled claim events since the mark to the claims counter."""
    now = rt.now()
    with rt.store.begin() as s:
        mark = store.claims_mark(s, lock=True)
        end = now - SETTLE
        if mark is not None:
            end = min(end, mark + CHUNK)
            if end <= mark:
                return {"events": 0}
        added = store.add_claims(s, mark, end)
    return {"events": added, "until": end.isoformat()}


def prunable_before(rt, before: datetime) -> datetime:
    """The latest cut-off at or before ``before`` that deleting claim events may use: never past
    the claims counter's mark (those events are still counted from the table)."""
    with rt.store.begin() as s:
        mark = store.claims_mark(s)
    return before if mark is not None and mark >= before else (mark or datetime(1970, 1, 1, tzinfo=before.tzinfo))


def totals(rt) -> dict[str, list[tuple[dict[str, str], int]]]:
    """``{counter name: [(labels, n)]}`` of every counter (:data:`storage.counters.CLAIMS`,
    ``JOBS_FINISHED``, ``PROVIDER_CALLS``, ``BREAKER_OPENED``)."""
    with rt.store.begin() as s:
        raw = store.read(s)
    return {name: [(store.parse_labels(labels), n) for labels, n in sorted(series.items())]
            for name, series in raw.items()}
