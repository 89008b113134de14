"""Operator actions on queue jobs: retry a failed or cancelled job, cancel a pending or processing one.

Which statuses allow which action is :attr:`JobStatus.RETRYABLE` and :attr:`JobStatus.CANCELLABLE`,
stated once in storage: the conditional statements (``storage.jobs.reset_for_retry`` /
``cancel_job``) apply them, so an action racing a poller or another operator changes a job once
and the loser is refused with a readable :class:`QueueError`; :func:`allowed` gives the pages the
same answer for a job's buttons.

Apart from the tick engine (``queue``) because these are a person's requests, not steps of the
service: they are checked and refused with a message, where the engine just moves on. Cancelling
settles the job as the engine would (:func:`queue.refund`, :func:`queue.cancel_at_provider`).
"""
from __future__ import annotations

import logging

from . import audit, queue
from .generations import generation_json
from .storage import JobStatus, jobs

log = logging.getLogger(__name__)

RETRY, CANCEL = "retry", "cancel"


class QueueError(ValueError):
    """An operator's request about queue jobs was refused; the message says why."""


class JobNotFound(QueueError):
    """No generation has that id."""


def allowed(status: str) -> list[str]:
    """The actions an operator may take on a job in this status: ``["retry"]``, ``["cancel"]`` or none."""
    if status in JobStatus.RETRYABLE:
        return [RETRY]
    if status in JobStatus.CANCELLABLE:
        return [CANCEL]
    return []


def _audit(s, now, actor_id: str | None, action: str, row) -> None:
    audit.record(s, now=now, actor_id=actor_id, action=action, target_user_id=row.user_id, target_job_id=row.id,
                 target_recipe_id=row.recipe_id)


def _only(statuses: tuple[JobStatus, ...]) -> str:
    return " or ".join(statuses)


def _changed_or_refuse(row, current, generation_id: int, rule: str) -> None:
    """After an ops action's conditional update: raise unless it changed the job (``row``)."""
    if current is None:
        raise JobNotFound(f"generation {generation_id} does not exist")
    if row is None:
        raise QueueError(f"generation {generation_id} is {current.status}; {rule}")


def retry(rt, generation_id: int, *, actor_id: str | None = None) -> dict:
    """Ops: put a failed or cancelled job back to ``pending`` with fresh attempts and no error.

    A user generation refunded before is not charged again, and cannot be refunded twice.
    Raises :class:`QueueError` for any other status, :class:`JobNotFound` for an unknown id.
    A ``retry`` audit row names ``actor_id``, in the same transaction.
    """
    now = rt.now()
    with rt.store.begin() as s:
        row = jobs.reset_for_retry(s, generation_id, now)
        if row is not None:
            _audit(s, now, actor_id, RETRY, row)
        current = row or jobs.get_generation(s, generation_id)
    _changed_or_refuse(row, current, generation_id, f"only {_only(JobStatus.RETRYABLE)} jobs can be retried")
    log.info("queue: generation %s put back to pending by an operator", generation_id)
    rt.invalidate()
    return generation_json(row)


def cancel(rt, generation_id: int, *, actor_id: str | None = None) -> dict:
    """Ops: a pending or processing job becomes ``cancelled`` (also at the provider when it was
    submitted); a charged user generation is refunded, once. Raises :class:`QueueError` for any
    other status, :class:`JobNotFound` for an unknown id. A ``cancel`` audit row names
    ``actor_id``, in the same transaction."""
    now = rt.now()
    with rt.store.begin() as s:
        row = jobs.cancel_job(s, generation_id, error="cancelled by an operator", now=now)
        if row is not None:
            queue.refund(s, row, now)
            queue.count_finished(s, [row], JobStatus.CANCELLED)
            _audit(s, now, actor_id, CANCEL, row)
        current = row or jobs.get_generation(s, generation_id)
    _changed_or_refuse(row, current, generation_id, f"only {_only(JobStatus.CANCELLABLE)} jobs can be cancelled")
    sub = queue.submission(row)
    if sub is not None:
        queue.cancel_at_provider(rt, sub, generation_id)
    log.info("queue: generation %s cancelled by an operator", generation_id)
    rt.invalidate()
    return generation_json(row)
