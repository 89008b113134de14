"""Operator actions on queue jobs: retry a failed job, cancel a pending or processing
one — one job at a time, or many at once (:func:`bulk`).

Which statuses allow which action is :attr:`JobStatus.RETRYABLE` and :attr:`JobStatus.CANCELLABLE`,
stated once in storage (:data:`APPLIES_TO` names them per action): the conditional statements
(``storage.jobs.retry_jobs`` / ``cancel_jobs``) apply them, so an action racing a poller or
another operator changes a job once and the loser is refused with a readable :class:`QueueError`
(or, in bulk, counted as skipped); :func:`allowed` gives the pages the same answer for a job's
buttons.

One job and many share one path: a batch of ids goes through :func:`_apply` in one transaction
(the conditional update; for a cancel the refunds, :func:`queue.refund`, in the same transaction)
and, once committed, :func:`_settle` (a cancel reaches the provider, best effort,
:func:`queue.cancel_submitted`).

**Bulk.** :func:`bulk` takes ``ids`` or a :class:`JobFilter` — exactly one — and works in batches
of :data:`BATCH_SIZE` jobs, each its own short transaction, so locks are held for one batch at
a time whatever the size of the request. Ids are sorted and deduplicated; a filter is walked by
keyset on id (each page starts after the last id of the one before, never an ``OFFSET``, never a
count over the table). ``done`` counts the jobs changed; ``skipped`` the jobs asked for but not
changed — an unknown id, a job in a status the action does not apply to, or one another actor
moved first. One audit event (``bulk_retry`` / ``bulk_cancel``) records the action, its counts
and the ids' number or the filter, in the last batch's transaction; should a batch fail after
others committed, the event records what was done, marked ``interrupted``, in its own.
Bad input raises :class:`BulkRefused` (``{field: reason}``) before anything changes.

Apart from the tick engine (``queue``) because these are a person's requests, not steps of the
service: they are checked and refused with a message, where the engine just moves on. Cancelling
settles the job as the engine would (:func:`queue.refund`, :func:`queue.cancel_at_provider`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from . import audit, queue
from .generations import generation_json
from .storage import JobSource, JobStatus, jobs

log = logging.getLogger(__name__)

RETRY, CANCEL = "retry", "cancel"
APPLIES_TO: dict[str, tuple[JobStatus, ...]] = {RETRY: JobStatus.RETRYABLE, CANCEL: JobStatus.CANCELLABLE}
_DONE = {RETRY: "retried", CANCEL: "cancelled"}
BULK_AUDIT = {RETRY: "bulk_retry", CANCEL: "bulk_cancel"}
CANCEL_ERROR = "cancelled by an operator"

BATCH_SIZE = 250        # jobs per transaction of a bulk action
MAX_IDS = 10_000        # ids one bulk request may list
COUNT_LIMIT = 10_000    # how far :func:`matching` counts
INT64_MAX = 2**63 - 1
IDS_RULE = f"must list 1 to {MAX_IDS:,} job ids (whole numbers from 0)"
RECIPE_RULE = "must be a recipe id (a whole number)"
SOURCE_RULE = f"must be {' or '.join(JobSource)}"
FILTER_RULE = "must be an object with status, recipeId and source, each optional"


class QueueError(ValueError):
    """An operator's request about queue jobs was refused; the message says why."""


class JobNotFound(QueueError):
    """No generation has that id."""


class BulkRefused(QueueError):
    """A bulk request that cannot be run as asked; ``errors`` maps a field to why. Nothing changed."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a bulk action walks: any of ``statuses`` (none given: every status the action
    applies to), one recipe, one :class:`JobSource` — the queue page's filters."""

    statuses: tuple[str, ...] = ()
    recipe_id: int | None = None
    source: str | None = None

    def as_json(self) -> dict:
        """The filter as the API reads it (``status`` a string when there is one, a list when more)."""
        out: dict = {}
        if self.statuses:
            out["status"] = self.statuses[0] if len(self.statuses) == 1 else list(self.statuses)
        if self.recipe_id is not None:
            out["recipeId"] = self.recipe_id
        if self.source is not None:
            out["source"] = self.source
        return out


def allowed(status: str) -> list[str]:
    """The actions an operator may take on a job in this status: ``["retry"]``, ``["cancel"]`` or none."""
    return [action for action, statuses in APPLIES_TO.items() if status in statuses]


def _only(statuses: tuple[JobStatus, ...]) -> str:
    return " or ".join(statuses)


def rule(action: str) -> str:
    """The sentence of the rule: which jobs ``action`` applies to."""
    return f"only {_only(APPLIES_TO[action])} jobs can be {_DONE[action]}"


def status_refusal(action: str, status) -> str | None:
    """Why ``status`` cannot be a filter's status for ``action`` (not a status at all, or one the
    action never applies to), or ``None`` when it can."""
    if not isinstance(status, str) or status not in tuple(JobStatus):
        return f"is not a job status ({', '.join(JobStatus)})"
    if status not in APPLIES_TO[action]:
        return f"{status} jobs are never {_DONE[action]}; {rule(action)}"
    return None


def narrow(action: str, statuses=(), recipe_id: int | None = None, source: str | None = None) -> JobFilter | None:
    """The page's filters as ``action``'s :class:`JobFilter`: the chosen statuses the action
    applies to, or ``None`` when statuses were chosen and the action applies to none of them."""
    chosen = tuple(s for s in APPLIES_TO[action] if s in (statuses or ()))
    if statuses and not chosen:
        return None
    return JobFilter(statuses=chosen, recipe_id=recipe_id, source=source)


# --- one job ---------------------------------------------------------------------------------

def _audit(s, now, actor_id: str | None, action: str, row) -> None:
    audit.record(s, now=now, actor_id=actor_id, action=action, target_user_id=row.user_id, target_job_id=row.id,
                 target_recipe_id=row.recipe_id)


def _changed_or_refuse(row, current, generation_id: int, rule_text: str) -> None:
    """After an ops action's conditional update: raise unless it changed the job (``row``)."""
    if current is None:
        raise JobNotFound(f"generation {generation_id} does not exist")
    if row is None:
        raise QueueError(f"generation {generation_id} is {current.status}; {rule_text}")


def _apply(s, now, action: str, ids) -> list:
    """``action`` on the jobs of ``ids`` the rule allows, in session ``s``: the rows changed.
    A cancel refunds the charged user jobs among them in the same transaction, user by user in
    one order (so batches refunding the same users never wait for each other in a circle), and
    counts them into ``jobs_finished``."""
    if action == RETRY:
        return jobs.retry_jobs(s, ids, now)
    rows = jobs.cancel_jobs(s, ids, error=CANCEL_ERROR, now=now)
    for row in sorted(rows, key=lambda r: (r.user_id, r.id)):
        queue.refund(s, row, now)
    queue.count_finished(s, rows, JobStatus.CANCELLED)
    return rows


def _settle(rt, action: str, rows) -> None:
    """After the commit: cancelled jobs that were submitted are cancelled at the provider too."""
    if action == CANCEL and rows:
        queue.cancel_submitted(rt, rows)


def _one(rt, action: str, generation_id: int, actor_id: str | None) -> dict:
    now = rt.now()
    with rt.store.begin() as s:
        rows = _apply(s, now, action, [generation_id])
        row = rows[0] if rows else None
        if row is not None:
            _audit(s, now, actor_id, action, row)
        current = row or jobs.get_generation(s, generation_id)
    _changed_or_refuse(row, current, generation_id, rule(action))
    _settle(rt, action, rows)
    log.info("queue: generation %s %s by an operator", generation_id, _DONE[action])
    rt.invalidate()
    return generation_json(row)


def retry(rt, generation_id: int, *, actor_id: str | None = None) -> dict:
    """Ops: put a failed job back to ``pending`` with fresh attempts and no error.

    A user generation refunded before is not charged again, and cannot be refunded twice.
    Raises :class:`QueueError` for any other status, :class:`JobNotFound` for an unknown id.
    A ``retry`` audit row names ``actor_id``, in the same transaction.
    """
    return _one(rt, RETRY, generation_id, actor_id)


def cancel(rt, generation_id: int, *, actor_id: str | None = None) -> dict:
    """Ops: a pending or processing job becomes ``cancelled`` (also at the provider when it was
    submitted); a charged user generation is refunded, once. Raises :class:`QueueError` for any
    other status, :class:`JobNotFound` for an unknown id. A ``cancel`` audit row names
    ``actor_id``, in the same transaction."""
    return _one(rt, CANCEL, generation_id, actor_id)


# --- many jobs -------------------------------------------------------------------------------

def _is_id(value) -> bool:
    return type(value) is int and 0 <= value <= INT64_MAX


def _checked(action, ids, filter) -> tuple[list[int] | None, JobFilter | None]:
    """The request made usable — ids sorted and deduplicated, a filter's statuses defaulted to
    the action's — or :class:`BulkRefused` with every reason."""
    if action not in APPLIES_TO:
        raise BulkRefused({"action": f"must be {' or '.join(APPLIES_TO)}"})
    if (ids is None) == (filter is None):
        raise BulkRefused({"body": "send either ids or filter" + (", not both" if ids is not None else "")})
    if ids is not None:
        if not isinstance(ids, (list, tuple)) or not 1 <= len(ids) <= MAX_IDS or not all(map(_is_id, ids)):
            raise BulkRefused({"ids": IDS_RULE})
        return sorted(set(ids)), None
    if not isinstance(filter, JobFilter):
        raise BulkRefused({"filter": FILTER_RULE})
    errors = {}
    statuses = filter.statuses
    if isinstance(statuses, str) or not isinstance(statuses, (list, tuple)):
        errors["filter.status"] = f"is not a job status ({', '.join(JobStatus)})"
    else:
        reasons = [r for r in (status_refusal(action, st) for st in statuses) if r]
        if reasons:
            errors["filter.status"] = reasons[0]
    if filter.recipe_id is not None and not (type(filter.recipe_id) is int and -2**31 <= filter.recipe_id < 2**31):
        errors["filter.recipeId"] = RECIPE_RULE
    if filter.source is not None and filter.source not in tuple(JobSource):
        errors["filter.source"] = SOURCE_RULE
    if errors:
        raise BulkRefused(errors)
    return None, JobFilter(statuses=tuple(dict.fromkeys(statuses)) or APPLIES_TO[action],
                           recipe_id=filter.recipe_id, source=filter.source)


class _Bulk:
    """One bulk action under way: its batches' totals, and its single audit event."""

    def __init__(self, rt, action: str, actor_id: str | None, details: dict, recipe_id: int | None):
        self.rt, self.action, self.actor_id = rt, action, actor_id
        self.details, self.recipe_id = details, recipe_id
        self.done = self.skipped = self.batches = 0
        self.audited = False

    def batch(self, pick) -> bool:
        """One transaction: ``pick(s)`` gives the batch's ids and whether it is the last batch
        (whose transaction writes the audit event); after the commit, :func:`_settle`."""
        now = self.rt.now()
        with self.rt.store.begin() as s:
            ids, last = pick(s)
            rows = _apply(s, now, self.action, ids)
            if last:
                self.record(s, now, self.done + len(rows), self.skipped + len(ids) - len(rows))
        # committed: only now does the batch count
        self.done += len(rows)
        self.skipped += len(ids) - len(rows)
        self.batches += 1
        self.audited = last
        _settle(self.rt, self.action, rows)
        return last

    def record(self, s, now, done: int, skipped: int, **extra) -> None:
        audit.record(s, now=now, actor_id=self.actor_id, action=BULK_AUDIT[self.action],
                     target_recipe_id=self.recipe_id, done=done, skipped=skipped, **self.details, **extra)

    def record_interrupted(self) -> None:
        """A batch failed after others committed: the event says what was done, in its own transaction."""
        try:
            with self.rt.store.begin() as s:
                self.record(s, self.rt.now(), self.done, self.skipped, interrupted=True)
        except Exception:
            log.exception("queue: the audit event of an interrupted bulk %s could not be written", self.action)


def bulk(rt, action: str, *, ids=None, filter: JobFilter | None = None, actor_id: str | None = None) -> dict:
    """Ops: ``action`` (``retry`` or ``cancel``) on every job of ``ids``, or every job matching
    ``filter`` — in batches of :data:`BATCH_SIZE`, each one transaction, under each job's own
    rule (see the module's docstring). Returns ``{"done": n, "skipped": m}``; ``done + skipped``
    is the number of distinct ids asked for, or of jobs the filter's walk met. Raises
    :class:`BulkRefused` for bad input, before any change."""
    id_list, where = _checked(action, ids, filter)
    size = BATCH_SIZE
    if id_list is not None:
        run = _Bulk(rt, action, actor_id, {"ids": len(id_list)}, None)
    else:
        run = _Bulk(rt, action, actor_id, {"filter": filter.as_json()}, where.recipe_id)  # as asked
    try:
        if id_list is not None:
            for start in range(0, len(id_list), size):
                run.batch(lambda s, start=start: (id_list[start:start + size], start + size >= len(id_list)))
        else:
            after = [-1]   # the keyset: the last id of the page before

            def page(s):
                # one id more than the batch: whether another page follows, without an empty last one
                found = jobs.job_ids_after(s, after[0], statuses=where.statuses, recipe_id=where.recipe_id,
                                           source=where.source, limit=size + 1)
                batch = found[:size]
                if batch:
                    after[0] = batch[-1]
                return batch, len(found) <= size
            while not run.batch(page):
                pass
    except Exception:
        if run.batches and not run.audited:
            run.record_interrupted()
        raise
    finally:
        if run.batches:
            rt.invalidate()
    log.info("queue: bulk %s by an operator: %d %s, %d skipped, in %d batch(es)", action, run.done, _DONE[action],
             run.skipped, run.batches)
    return {"done": run.done, "skipped": run.skipped}


def matching(rt, action: str, filter: JobFilter) -> tuple[int, bool]:
    """How many jobs ``filter`` matches among those ``action`` applies to, counted no further
    than :data:`COUNT_LIMIT` (a bounded query): ``(count, more)``, ``more`` when there are more
    than the count says. Raises :class:`BulkRefused` for a filter :func:`bulk` would refuse."""
    _, where = _checked(action, None, filter)
    with rt.store.begin() as s:
        n = jobs.count_jobs(s, statuses=where.statuses, recipe_id=where.recipe_id, source=where.source,
                            limit=COUNT_LIMIT + 1)
    return min(n, COUNT_LIMIT), n > COUNT_LIMIT
