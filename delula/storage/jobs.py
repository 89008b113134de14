"""Generation rows: creating them and reading them back.

The queue service's state transitions (start, poll, complete, fail, retry, refund, recover) are
statements in this module too. A generation's source in SQL is :func:`source` and the two
predicates on it, :func:`from_backlog` and :func:`users_own`; the domain's counterpart for a row
is ``generations.source``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import String, and_, func, insert, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from .db import is_postgres
from .models import IN_POOL, SYSTEM_BACKLOG_USER_ID, Generation, JobSource, JobStatus, Recipe, fresh_after, stale


def source():
    """A generation's source as stored, ``metadata.source`` (a :class:`JobSource` value)."""
    return Generation.meta["source"].as_string()


def from_backlog():
    """A backlog job, also once a user has claimed it."""
    return source() == JobSource.BACKLOG


def users_own():
    """A user's own job, not a claimed backlog item. Exactly the predicate of the partial index
    ``ix_generations_user_jobs``, so a query filtering on it can use that index."""
    return and_(Generation.user_id != SYSTEM_BACKLOG_USER_ID, source() == JobSource.USER)


def add_generation(s: Session, *, user_id: str, recipe_id: int, form_data: dict, meta: dict, priority: int,
                   credits_charged: int, now: datetime, status: str = JobStatus.PENDING) -> Generation:
    gen = Generation(user_id=user_id, recipe_id=recipe_id, status=status, form_data=form_data, meta=meta,
                     priority=priority, credits_charged=credits_charged, attempts=0, poll_count=0,
                     refunded=False, created_at=now, updated_at=now)
    s.add(gen)
    s.flush()
    return gen


def add_generations(s: Session, rows: list[dict], now: datetime) -> int:
    """Bulk insert of many pending generations in one statement; returns how many.

    On PostgreSQL, rows that all name the same columns go as one ``INSERT … SELECT`` from one
    JSON document (:func:`_insert_from_json`), in their order: one statement whatever their
    number, so the statement-level pool trigger runs once (an ``executemany`` ran it per row)."""
    if not rows:
        return 0
    defaults = {**_model_defaults(), "created_at": now, "updated_at": now}
    full = [{**defaults, **row} for row in rows]
    if not (is_postgres(s) and _insert_from_json(s, full)):
        s.execute(insert(Generation), full)
    return len(rows)


def _model_defaults() -> dict:
    """The Python-side column defaults of :class:`Generation` (``priority`` 0, ``form_data``
    ``{}``, …), which the ORM's insert applies and the one-statement insert must apply itself."""
    out = {}
    for attr in Generation.__mapper__.column_attrs:
        default = attr.columns[0].default
        if default is not None and (default.is_scalar or default.is_callable):
            out[attr.key] = default.arg if default.is_scalar else default.arg(None)
    return out


def _json_default(value):
    """An aware datetime as ISO 8601 (PostgreSQL casts it back) for :func:`_insert_from_json`;
    ``TypeError`` for anything else JSON does not carry (a naive datetime too: the ORM's
    statement then refuses it as it always has)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _insert_from_json(s: Session, rows: list[dict]) -> bool:
    """Insert ``rows`` (ORM attribute names, every row the same ones) as one statement over
    ``jsonb_array_elements`` of one parameter, in their order; a column whose value is the same
    in every row is bound once beside it. ``False`` (nothing done) when the rows differ in their
    keys or hold a value JSON does not carry (the caller then uses the ORM's ``executemany``)."""
    keys = rows[0].keys()
    attrs = Generation.__mapper__.column_attrs
    if any(row.keys() != keys for row in rows) or any(k not in attrs for k in keys):
        return False
    first = rows[0]
    same = [k for k in keys if all(row[k] == first[k] and type(row[k]) is type(first[k]) for row in rows)]
    varying = [k for k in keys if k not in same]
    try:
        doc = json.dumps([[row[k] for k in varying] for row in rows], default=_json_default, allow_nan=False)
        params = {f"c{j}": json.dumps(first[k], default=_json_default, allow_nan=False) for j, k in enumerate(same)}
    except (TypeError, ValueError):
        return False
    dialect = s.get_bind().dialect
    names, picks = [], []
    for j, k in enumerate(same):
        names.append(attrs[k].columns[0])
        picks.append(_pick(f"CAST(:c{j} AS jsonb)", attrs[k].columns[0], dialect))
    for i, k in enumerate(varying):
        names.append(attrs[k].columns[0])
        picks.append(_pick(f"r.v -> {i}", attrs[k].columns[0], dialect))
    quoted = ", ".join(dialect.identifier_preparer.quote(c.name) for c in names)
    s.execute(text(f"INSERT INTO generations ({quoted}) SELECT {', '.join(picks)} "
                   "FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS r(v, n) ORDER BY r.n"),
              {"rows": doc, **params})
    return True


def _pick(element: str, column, dialect) -> str:
    """A JSON ``element`` (an SQL expression of type jsonb) as ``column``'s value: a JSON column
    takes it as it is (JSON null for None, as the ORM stores it); a string its text, which the
    insert's own assignment checks against the column's length as a bound value would be (an
    explicit cast to ``varchar(n)`` would cut it short); any other its text cast to the
    column's type (SQL NULL for None)."""
    impl = column.type.dialect_impl(dialect)
    if isinstance(impl, JSONB):
        return element
    if isinstance(impl, String):
        return f"({element}) #>> '{{}}'"
    return f"CAST(({element}) #>> '{{}}' AS {column.type.compile(dialect)})"


def get_generation(s: Session, generation_id: int) -> Generation | None:
    return s.get(Generation, generation_id)


def _matching(q, *, statuses: tuple[str, ...] | None, recipe_id: int | None, source: str | None):
    """``q`` narrowed to the queue's filters: any of ``statuses`` (all when empty), one recipe,
    one :class:`JobSource` (:func:`from_backlog` / :func:`users_own`). The queue page's grid,
    the bulk actions' walk and their count all filter through here."""
    if statuses:
        q = q.where(Generation.status.in_(statuses))
    if recipe_id is not None:
        q = q.where(Generation.recipe_id == recipe_id)
    if source == JobSource.BACKLOG:
        q = q.where(from_backlog())
    elif source == JobSource.USER:
        q = q.where(users_own())
    return q


def list_jobs(s: Session, *, statuses: tuple[str, ...] | None = None, recipe_id: int | None = None,
              source: str | None = None, limit: int = 500) -> list[Generation]:
    """Newest generations first, filtered; bounded by ``limit`` (the queue page's grid)."""
    q = select(Generation).order_by(Generation.id.desc()).limit(limit)
    return list(s.scalars(_matching(q, statuses=statuses, recipe_id=recipe_id, source=source)))


def job_ids_after(s: Session, after_id: int, *, statuses: tuple[str, ...], recipe_id: int | None = None,
                  source: str | None = None, limit: int) -> list[int]:
    """One keyset page of the jobs matching the filters: the ids above ``after_id``, ascending,
    at most ``limit`` (never an ``OFFSET``: each page starts where the last one ended)."""
    q = select(Generation.id).where(Generation.id > after_id).order_by(Generation.id).limit(limit)
    return list(s.scalars(_matching(q, statuses=statuses, recipe_id=recipe_id, source=source)))


def count_jobs(s: Session, *, statuses: tuple[str, ...], recipe_id: int | None = None, source: str | None = None,
               limit: int) -> int:
    """How many jobs match the filters, counting no further than ``limit``: a bounded count
    (``SELECT count(*) FROM (… LIMIT n)``), never one over the whole table."""
    picked = _matching(select(Generation.id), statuses=statuses, recipe_id=recipe_id, source=source).limit(limit)
    return s.scalar(select(func.count()).select_from(picked.subquery())) or 0


def list_for_user(s: Session, user_id: str, limit: int = 100) -> list[Generation]:
    return list(s.scalars(select(Generation).where(Generation.user_id == user_id)
                          .order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit)))


# Key of the transaction-level advisory lock that serialises backlog maintenance passes.
BACKLOG_PASS_LOCK_KEY = 0x64656C756C62


def lock_backlog_pass(s: Session) -> None:
    """Serialise backlog maintenance passes: the caller counts and inserts after this.

    PostgreSQL: ``pg_advisory_xact_lock`` held until the transaction ends. SQLite: nothing to do,
    the transaction already holds the database write lock (``BEGIN IMMEDIATE``).
    """
    if is_postgres(s):
        from sqlalchemy import text

        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BACKLOG_PASS_LOCK_KEY})


#: backlog jobs that ended without an item: pruned by :func:`delete_failed_backlog`
UNUSED_BACKLOG = (JobStatus.FAILED, JobStatus.REJECTED)


def delete_failed_backlog(s: Session, *, older_than: datetime, keep: int) -> int:
    """Delete failed and rejected backlog generations (:data:`UNUSED_BACKLOG`) created before
    ``older_than``, except the newest ``keep`` of each recipe and status (kept for diagnosis);
    returns how many went."""
    from sqlalchemy import delete, func

    ranked = (select(Generation.id, Generation.created_at,
                     func.row_number().over(partition_by=(Generation.recipe_id, Generation.status),
                                            order_by=(Generation.created_at.desc(), Generation.id.desc()))
                     .label("rn"))
              .where(Generation.user_id == SYSTEM_BACKLOG_USER_ID, Generation.status.in_(UNUSED_BACKLOG))
              .subquery())
    doomed = select(ranked.c.id).where(ranked.c.rn > keep, ranked.c.created_at < older_than)
    return s.execute(delete(Generation).where(Generation.id.in_(doomed))
                     .execution_options(synchronize_session=False)).rowcount or 0


def expire_stale(s: Session, *, now: datetime, max_age_h: float) -> int:
    """Mark every pool item completed before the age bound (:func:`models.stale`) ``expired``:
    kept, out of the pool for good, never deleted. One statement; returns how many. An item a
    claim holds meanwhile (fresh at that claim's own time) is waited for and, once claimed, no
    longer matches: it is left to its new owner."""
    bound = fresh_after(now, max_age_h)
    stmt = (update(Generation).where(IN_POOL, stale(bound))
            .values(status=JobStatus.EXPIRED, updated_at=now)
            .execution_options(synchronize_session=False))
    return s.execute(stmt).rowcount or 0


# --- the queue service (``delula.queue``, ``queue_actions``, ``queue_status``) ---------------
#
# Every transition of a job is one conditional statement on ``(id, status, attempts)``: the
# attempt number names the submission a caller saw, so a poller, a timeout and an ops action
# racing on the same job change it once and the others find nothing to update.

# Key of the transaction-level advisory lock around "count processing, claim pending".
QUEUE_START_LOCK_KEY = 0x64656C75_7173

_NO_SYNC = {"synchronize_session": False}


def _meta_with(s: Session, patch: dict):
    """``metadata`` merged with ``patch`` in SQL (no read-modify-write of the JSON document)."""
    if is_postgres(s):
        return Generation.meta.op("||")(literal(patch, JSONB))
    return func.json_patch(Generation.meta, json.dumps(patch))


def _once(picked):
    """``SELECT id FROM (picked)`` evaluated exactly once: a materialised CTE. As a plain
    ``IN (subquery)`` PostgreSQL may re-run a ``LIMIT … FOR UPDATE SKIP LOCKED`` subquery per
    row and, skipping the rows this very statement just updated, take more than the limit."""
    cte = picked.cte("picked").prefix_with("MATERIALIZED")
    return select(cte.c.id)


def _on_attempt(generation_id: int, attempt: int):
    return (Generation.id == generation_id, Generation.status == JobStatus.PROCESSING, Generation.attempts == attempt)


def lock_queue_start(s: Session) -> None:
    """Serialise "count processing jobs, claim pending ones" across processes, so the
    concurrency cap holds with any number of pollers. PostgreSQL: ``pg_advisory_xact_lock``
    until the transaction ends; SQLite: the transaction already holds the write lock."""
    if is_postgres(s):
        from sqlalchemy import text

        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": QUEUE_START_LOCK_KEY})


def count_processing(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(Generation).where(Generation.status == JobStatus.PROCESSING)) or 0


def claim_pending(s: Session, *, limit: int, now: datetime, skip_backlog: bool = False,
                  skip_backlog_of: Iterable[int] = ()) -> list[Generation]:
    """Mark up to ``limit`` due pending jobs ``processing`` (attempts + 1, ``started_at``), by
    priority then age; rows locked by another claimer are skipped (``FOR UPDATE SKIP LOCKED``).
    ``skip_backlog`` leaves every backlog job pending, ``skip_backlog_of`` those of these recipes
    (their backlog is paused). Returned in start order."""
    if limit <= 0:
        return []
    due = (select(Generation.id)
           .where(Generation.status == JobStatus.PENDING,
                  or_(Generation.next_attempt_at.is_(None), Generation.next_attempt_at <= now))
           .order_by(Generation.priority, Generation.created_at, Generation.id)
           .limit(limit).with_for_update(skip_locked=True))
    skipped = list(skip_backlog_of)
    if skip_backlog:
        due = due.where(Generation.user_id != SYSTEM_BACKLOG_USER_ID)
    elif skipped:
        due = due.where(or_(Generation.user_id != SYSTEM_BACKLOG_USER_ID, Generation.recipe_id.not_in(skipped)))
    stmt = (update(Generation).where(Generation.id.in_(_once(due)), Generation.status == JobStatus.PENDING)
            .values(status=JobStatus.PROCESSING, attempts=Generation.attempts + 1, started_at=now, poll_count=0,
                    next_poll_at=None, next_attempt_at=None, provider_request_id=None, updated_at=now)
            .returning(Generation).execution_options(**_NO_SYNC))
    rows = list(s.scalars(stmt))
    return sorted(rows, key=lambda g: (g.priority, g.created_at, g.id))


def release_unsubmitted(s: Session, generation_id: int, attempt: int, *, now: datetime) -> bool:
    """A job marked processing for ``attempt`` that was never submitted goes back to pending with
    that attempt given back (the provider never heard of it: the breaker opened first)."""
    stmt = (update(Generation).where(*_on_attempt(generation_id, attempt), Generation.provider_request_id.is_(None))
            .values(status=JobStatus.PENDING, attempts=Generation.attempts - 1, started_at=None, poll_count=0,
                    next_poll_at=None, updated_at=now)
            .execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def store_submission(s: Session, generation_id: int, attempt: int, *, request_id: str, provider: dict,
                     next_poll_at: datetime, now: datetime) -> bool:
    """Record the provider's request id and URLs of a job's current attempt; ``False`` when the
    job moved on meanwhile (cancelled, timed out, or submitted by someone else)."""
    stmt = (update(Generation).where(*_on_attempt(generation_id, attempt), Generation.provider_request_id.is_(None))
            .values(provider_request_id=request_id, meta=_meta_with(s, {"provider": provider}), poll_count=0,
                    next_poll_at=next_poll_at, updated_at=now)
            .execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def lease_due_polls(s: Session, *, now: datetime, lease_until: datetime, limit: int) -> list[Generation]:
    """Submitted jobs whose poll is due, soonest first; their ``next_poll_at`` moves to
    ``lease_until`` so no other poller takes them meanwhile (nor after a crash mid-poll)."""
    due = (select(Generation.id)
           .where(Generation.status == JobStatus.PROCESSING, Generation.next_poll_at <= now,
                  Generation.provider_request_id.is_not(None))
           .order_by(Generation.next_poll_at, Generation.id)
           .limit(limit).with_for_update(skip_locked=True))
    stmt = (update(Generation).where(Generation.id.in_(_once(due)), Generation.status == JobStatus.PROCESSING)
            .values(next_poll_at=lease_until)
            .returning(Generation).execution_options(**_NO_SYNC))
    return sorted(s.scalars(stmt), key=lambda g: g.id)


def record_poll(s: Session, generation_id: int, attempt: int, poll_count: int, *, next_poll_at: datetime,
                meta_patch: dict, now: datetime) -> bool:
    """One more poll of the current attempt done; the next one is due at ``next_poll_at``."""
    stmt = (update(Generation).where(*_on_attempt(generation_id, attempt), Generation.poll_count == poll_count)
            .values(poll_count=poll_count + 1, next_poll_at=next_poll_at, meta=_meta_with(s, meta_patch),
                    updated_at=now)
            .execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def complete(s: Session, generation_id: int, attempt: int, *, asset_url: str, thumbnail_url: str | None,
             meta_patch: dict, now: datetime) -> bool:
    stmt = (update(Generation).where(*_on_attempt(generation_id, attempt))
            .values(status=JobStatus.COMPLETED, asset_url=asset_url, thumbnail_url=thumbnail_url, completed_at=now,
                    poll_count=Generation.poll_count + 1, next_poll_at=None, error=None,
                    meta=_meta_with(s, meta_patch), updated_at=now)
            .execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def reject(s: Session, generation_id: int, attempt: int, *, reason: str, meta_patch: dict, now: datetime) -> bool:
    """The quality gate refused the current attempt's result: the job is ``rejected`` with
    ``reason`` as its error, no asset stored (``meta_patch`` keeps what the provider said), and
    it never enters the pool. ``False`` when the job moved on meanwhile."""
    stmt = (update(Generation).where(*_on_attempt(generation_id, attempt))
            .values(status=JobStatus.REJECTED, error=reason, poll_count=Generation.poll_count + 1, next_poll_at=None,
                    meta=_meta_with(s, meta_patch), updated_at=now)
            .execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def fail_attempt(s: Session, generation_id: int, attempt: int, *, error: str, retry_at: datetime | None,
                 now: datetime) -> Generation | None:
    """End the current attempt: back to ``pending`` until ``retry_at``, or ``failed`` for good
    when ``retry_at`` is None. Returns the updated row, ``None`` if the job moved on meanwhile."""
    values = dict(error=error, next_poll_at=None, meta=_meta_with(s, {"lastError": error}), updated_at=now)
    if retry_at is None:
        values.update(status=JobStatus.FAILED, next_attempt_at=None)
    else:
        values.update(status=JobStatus.PENDING, next_attempt_at=retry_at, provider_request_id=None, poll_count=0)
    stmt = (update(Generation).where(*_on_attempt(generation_id, attempt)).values(**values)
            .returning(Generation).execution_options(**_NO_SYNC))
    return s.scalars(stmt).first()


def mark_refunded(s: Session, generation_id: int) -> bool:
    """Set ``refunded`` unless it is set already: ``True`` for exactly one caller, however many race."""
    stmt = (update(Generation).where(Generation.id == generation_id, Generation.refunded.is_(False))
            .values(refunded=True).returning(Generation.id).execution_options(**_NO_SYNC))
    return s.scalar(stmt) is not None


def timed_out(s: Session, *, started_before: datetime, limit: int) -> list[Generation]:
    """Processing jobs started before ``started_before`` (read only; the transition is conditional)."""
    return list(s.scalars(select(Generation)
                          .where(Generation.status == JobStatus.PROCESSING, Generation.started_at < started_before)
                          .order_by(Generation.started_at, Generation.id).limit(limit)))


def repoll_submitted(s: Session, now: datetime) -> int:
    """Recovery: every submitted processing job is due for a poll now."""
    stmt = (update(Generation)
            .where(Generation.status == JobStatus.PROCESSING, Generation.provider_request_id.is_not(None))
            .values(next_poll_at=now, updated_at=now).execution_options(**_NO_SYNC))
    return s.execute(stmt).rowcount or 0


def restart_unsubmitted(s: Session, now: datetime) -> list[Generation]:
    """Recovery: processing jobs that never got a request id (the process died between marking
    them and storing the submission); their attempt restarts now, to be submitted again."""
    stmt = (update(Generation)
            .where(Generation.status == JobStatus.PROCESSING, Generation.provider_request_id.is_(None))
            .values(started_at=now, poll_count=0, next_poll_at=None, updated_at=now)
            .returning(Generation).execution_options(**_NO_SYNC))
    return sorted(s.scalars(stmt), key=lambda g: (g.priority, g.created_at, g.id))


def _transition(s: Session, ids, allowed: tuple[JobStatus, ...], values: dict) -> list[Generation]:
    """The ops transition of every job of ``ids`` still in one of the ``allowed`` statuses: one
    conditional ``UPDATE … WHERE id IN (…) AND status IN (…) RETURNING``; the rows changed,
    by id. The jobs are locked in id order first (a materialised ``SELECT … ORDER BY id FOR
    UPDATE``), so two operators' batches over the same jobs wait for each other instead of
    deadlocking; a job another transaction moved meanwhile is re-checked and left out."""
    if not ids:
        return []
    locked = (select(Generation.id).where(Generation.id.in_(ids), Generation.status.in_(allowed))
              .order_by(Generation.id).with_for_update())
    stmt = (update(Generation).where(Generation.id.in_(_once(locked)), Generation.status.in_(allowed))
            .values(**values).returning(Generation).execution_options(**_NO_SYNC))
    return sorted(s.scalars(stmt), key=lambda g: g.id)


def retry_jobs(s: Session, ids, now: datetime) -> list[Generation]:
    """Ops retry: the retryable jobs (:attr:`JobStatus.RETRYABLE`) of ``ids`` back to ``pending``
    with a fresh set of attempts; the rows changed (:func:`_transition`)."""
    return _transition(s, ids, JobStatus.RETRYABLE, dict(
        status=JobStatus.PENDING, attempts=0, poll_count=0, error=None, provider_request_id=None, next_poll_at=None,
        next_attempt_at=None, started_at=None, completed_at=None, meta=_meta_with(s, {"retriedAt": now.isoformat()}),
        updated_at=now))


def cancel_jobs(s: Session, ids, *, error: str, now: datetime) -> list[Generation]:
    """Ops cancel: the cancellable jobs (:attr:`JobStatus.CANCELLABLE`) of ``ids`` become
    ``cancelled``; the rows changed (:func:`_transition`). Their request ids are kept, so the
    caller can cancel them at the provider too."""
    return _transition(s, ids, JobStatus.CANCELLABLE, dict(
        status=JobStatus.CANCELLED, error=error, next_poll_at=None, next_attempt_at=None, updated_at=now))


def reset_for_retry(s: Session, generation_id: int, now: datetime) -> Generation | None:
    """:func:`retry_jobs` of one job: the row, ``None`` when it was not retryable (or unknown)."""
    return next(iter(retry_jobs(s, [generation_id], now)), None)


def cancel_job(s: Session, generation_id: int, *, error: str, now: datetime) -> Generation | None:
    """:func:`cancel_jobs` of one job: the row, ``None`` when it was not cancellable (or unknown)."""
    return next(iter(cancel_jobs(s, [generation_id], error=error, now=now)), None)


def statuses_of(s: Session, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {gid: st for gid, st in s.execute(select(Generation.id, Generation.status).where(Generation.id.in_(ids)))}


def next_wakeup(s: Session, now: datetime) -> datetime | None:
    """The soonest moment a tick has new work: a poll falling due or a retry backoff ending."""
    poll = s.scalar(select(func.min(Generation.next_poll_at)).where(Generation.status == JobStatus.PROCESSING))
    retry = s.scalar(select(func.min(Generation.next_attempt_at))
                     .where(Generation.status == JobStatus.PENDING, Generation.next_attempt_at > now))
    times = [t for t in (poll, retry) if t is not None]
    if not times:
        return None
    # MIN() bypasses the column type on SQLite: normalise to an aware UTC datetime
    return min(_as_utc(t) for t in times)


def _as_utc(value) -> datetime:
    from datetime import timezone

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def count_by_status(s: Session, finished_since: datetime, cap: int | None = None) -> dict[str, int]:
    """Jobs per status: pending and processing all (their partial indexes are small), the
    finished statuses only those that ended since ``finished_since`` (a bounded range of the
    ``(status, updated_at)`` index) — never a count over the whole table. With ``cap``, a
    finished status is counted up to ``cap + 1`` index entries only (a day of completions
    was 285,000 at 2 M jobs a week): a count above ``cap`` means "more than ``cap``"."""
    out = {st: 0 for st in JobStatus}
    for st in JobStatus:
        if st in JobStatus.LIVE:
            q = select(func.count()).select_from(Generation).where(Generation.status == st)
        else:
            ended = select(Generation.id).where(Generation.status == st, Generation.updated_at >= finished_since)
            if cap is not None:
                ended = ended.limit(cap + 1)
            q = select(func.count()).select_from(ended.subquery())
        out[st] = s.scalar(q) or 0
    return out


def oldest_pending(s: Session) -> Generation | None:
    return s.scalar(select(Generation).where(Generation.status == JobStatus.PENDING)
                    .order_by(Generation.created_at, Generation.id).limit(1))


def next_polls(s: Session, limit: int = 5) -> list[tuple[Generation, str]]:
    """The soonest polls: ``(generation, recipe name)``."""
    q = (select(Generation, Recipe.name).join(Recipe, Recipe.id == Generation.recipe_id)
         .where(Generation.status == JobStatus.PROCESSING, Generation.next_poll_at.is_not(None))
         .order_by(Generation.next_poll_at, Generation.id).limit(limit))
    return [(g, name) for g, name in s.execute(q)]


def processing_seconds(s: Session, since: datetime, limit: int = 50_000) -> tuple[float | None, float | None]:
    """Mean and 95th percentile (linear interpolation, as ``percentile_cont``) of
    ``completed_at - started_at`` over jobs completed since ``since`` (``completed_at`` index)."""
    window = (Generation.status == JobStatus.COMPLETED, Generation.completed_at >= since,
              Generation.started_at.is_not(None))
    if is_postgres(s):
        secs = func.extract("epoch", Generation.completed_at - Generation.started_at)
        avg, p95 = s.execute(select(func.avg(secs), func.percentile_cont(0.95).within_group(secs))
                             .where(*window)).one()
        return (None if avg is None else float(avg)), (None if p95 is None else float(p95))
    rows = s.execute(select(Generation.started_at, Generation.completed_at).where(*window)
                     .order_by(Generation.completed_at.desc()).limit(limit))
    values = sorted(max(0.0, (done - started).total_seconds()) for started, done in rows)
    if not values:
        return None, None
    pos = 0.95 * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return sum(values) / len(values), values[lo] + (values[hi] - values[lo]) * (pos - lo)
