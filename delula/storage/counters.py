"""Monotonic counters in the database: ``counters`` rows that every process adds to.

:func:`add` is one upsert whatever the number of series, its rows taken in key order (two
transactions adding to the same series never wait for each other in a cycle); it runs in the
transaction of what it counts, so a count and its cause commit together or not at all.

The instant claims counter is derived instead: the claim writes a ``claim_events`` row anyway,
so :func:`add_claims` adds up the events before a mark (``counter_marks``) and :func:`read`
adds the events past the mark, in the same statement: a claim pays no extra write, and a
scrape sees every claim exactly once.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import String, cast, func, literal, or_, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import is_postgres
from .models import ClaimEvent, Counter, CounterMark

CLAIMS = "instant_claims"            # labels outcome, recipe_id (derived from claim_events)
JOBS_FINISHED = "jobs_finished"      # labels result (completed, failed, cancelled, rejected), source
PROVIDER_CALLS = "provider_calls"    # labels kind (submit, status, result, cancel), result (ok, error, refused)
BREAKER_OPENED = "breaker_opened"    # labels provider


def labels_text(labels: Mapping[str, object]) -> str:
    """The canonical text of a label set: ``k=v`` pairs, keys sorted, comma separated."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def parse_labels(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",")) if text else {}


def add(s: Session, increments: Mapping[tuple[str, str], int]) -> None:
    """Add ``{(name, labels text): n}`` to the counters (rows created at need)."""
    rows = [{"name": name, "labels": labels, "n": n} for (name, labels), n in sorted(increments.items()) if n]
    if not rows:
        return
    insert = (postgresql.insert if is_postgres(s) else sqlite.insert)(Counter)
    stmt = insert.values(rows)
    s.execute(stmt.on_conflict_do_update(index_elements=["name", "labels"], set_={"n": Counter.n + stmt.excluded.n}))


def _claim_series():
    """The labels text of a claim event's series, in SQL (``||`` on both databases)."""
    return (literal("outcome=", String) + ClaimEvent.outcome + literal(",recipe_id=", String)
            + func.coalesce(cast(ClaimEvent.recipe_id, String), literal("", String)))


def claims_mark(s: Session, *, lock: bool = False) -> datetime | None:
    q = select(CounterMark.until).where(CounterMark.name == CLAIMS)
    return s.scalar(q.with_for_update() if lock else q)


def add_claims(s: Session, start: datetime | None, end: datetime) -> int:
    """Add the claim events of ``[start, end)`` (from the first when ``start`` is None) to the
    claims counter and move its mark to ``end``; the caller holds the mark (:func:`claims_mark`
    with ``lock``). Returns the events added."""
    series = _claim_series().label("labels")
    q = select(series, func.count()).where(ClaimEvent.created_at < end)
    if start is not None:
        q = q.where(ClaimEvent.created_at >= start)
    counted = {(CLAIMS, labels): n for labels, n in s.execute(q.group_by(series))}
    add(s, counted)
    insert = (postgresql.insert if is_postgres(s) else sqlite.insert)(CounterMark)
    stmt = insert.values(name=CLAIMS, until=end)
    s.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"until": stmt.excluded.until}))
    return sum(counted.values())


def read(s: Session) -> dict[str, dict[str, int]]:
    """``{name: {labels text: n}}`` of every counter, the claims counter with the events past its
    mark added (one statement, one snapshot)."""
    mark = select(CounterMark.until).where(CounterMark.name == CLAIMS).scalar_subquery()
    series = _claim_series()
    tail = (select(literal(CLAIMS, String).label("name"), series.label("labels"), func.count().label("n"))
            .where(or_(mark.is_(None), ClaimEvent.created_at >= mark)).group_by(series))
    stored = select(Counter.name, Counter.labels, Counter.n)
    out: dict[str, dict[str, int]] = {}
    for name, labels, n in s.execute(union_all(stored, tail)):
        per = out.setdefault(name, {})
        per[labels] = per.get(labels, 0) + int(n)
    return out
