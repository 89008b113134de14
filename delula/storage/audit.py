"""The audit trail: who did what to whom, one append-only row per action.

Rows are added in the session of the action itself, so the action and its record commit together
or not at all (the claim function writes its own in SQL). Nothing here updates or deletes.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import AuditEvent, User


def add(s: Session, *, at: datetime, actor_id: str | None, action: str, target_user_id: str | None = None,
        target_job_id: int | None = None, target_recipe_id: int | None = None, details: dict | None = None,
        request_id: str | None = None) -> None:
    s.add(AuditEvent(at=at, actor_id=actor_id, action=action, target_user_id=target_user_id,
                     target_job_id=target_job_id, target_recipe_id=target_recipe_id, details=details or {},
                     request_id=request_id))
    s.flush()


def events(s: Session, *, since: datetime | None = None, until: datetime | None = None,
           actor_id: str | None = None, action: str | None = None, target_user_id: str | None = None,
           limit: int | None = 500) -> Iterator[tuple[AuditEvent, str | None, str | None]]:
    """Events newest first, each with its actor's and its target user's username (``None`` for
    the system, or an account since deleted)."""
    actor = User.__table__.alias("actor")
    target = User.__table__.alias("target")
    q = (select(AuditEvent, actor.c.username, target.c.username)
         .outerjoin(actor, actor.c.id == AuditEvent.actor_id)
         .outerjoin(target, target.c.id == AuditEvent.target_user_id)
         .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()))
    if since is not None:
        q = q.where(AuditEvent.at >= since)
    if until is not None:
        q = q.where(AuditEvent.at < until)
    if actor_id is not None:
        q = q.where(AuditEvent.actor_id == actor_id)
    if action is not None:
        q = q.where(AuditEvent.action == action)
    if target_user_id is not None:
        q = q.where(AuditEvent.target_user_id == target_user_id)
    if limit is not None:
        q = q.limit(limit)
    for row in s.execute(q):
        yield tuple(row)
