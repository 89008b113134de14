"""The alerts' statements: their rows, their transitions, and the notifications outbox.

What an alert's next state is, is the domain's (``delula.alerts``, a pure function of what the
row said and what holds now); here each transition is ONE conditional statement on the alert's
row, so when several processes evaluate at once only one of them moves it: the others' statement
matches no row (PostgreSQL re-checks the condition on the row a concurrent transaction just
committed; SQLite runs one writer at a time). A firing or a resolution returns the row it
changed, and the caller inserts its notification in the same transaction
(:func:`add_notification`), so a notification exists exactly when the transition happened.

The outbox is leased one row at a time (:func:`lease_due`): the row's ``next_attempt_at`` moves
to the end of the lease and its ``attempts`` up by one in the statement that takes it (on
PostgreSQL past rows other deliveries hold, ``FOR UPDATE SKIP LOCKED``), so two deliveries never
send the same row, and a delivery that died mid-send leaves it due again when the lease ends.
The outcome is written only while the row is still that lease's (same ``attempts``).
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import is_postgres
from .models import ALERT_STATES, Alert, AlertNotification

PENDING, FIRING, RESOLVED = ALERT_STATES
_NO_SYNC = {"synchronize_session": False}
_FRESH = {"populate_existing": True}


def rows(s: Session, rules: Iterable[str] | None = None) -> dict[str, Alert]:
    """``{key: row}`` of every alert (of ``rules``)."""
    q = select(Alert).execution_options(**_FRESH)
    if rules is not None:
        q = q.where(Alert.rule.in_(list(rules)))
    return {a.key: a for a in s.scalars(q)}


def get(s: Session, key: str) -> Alert | None:
    return s.scalar(select(Alert).where(Alert.key == key).execution_options(**_FRESH))


def _insert(s: Session):
    return (postgresql.insert if is_postgres(s) else sqlite.insert)(Alert)


def _described(c: dict) -> dict:
    """The columns a condition writes: ``rule``, ``recipe_id``, ``summary``, ``value``, ``threshold``."""
    return {k: c[k] for k in ("rule", "recipe_id", "summary", "value", "threshold")}


def start_pending(s: Session, key: str, condition: dict, *, now: datetime) -> bool:
    """A condition began to hold: the alert (created at need) becomes ``pending`` since ``now``,
    unless it is pending or firing already. The last episode's ``fired_at``/``resolved_at`` stay
    until it fires again. ``True`` when this call moved it."""
    stmt = _insert(s).values(key=key, state=PENDING, pending_since=now, updated_at=now, **_described(condition))
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={"state": PENDING, "pending_since": now, "updated_at": now, **_described(condition)},
        where=Alert.state == RESOLVED)
    return bool(s.execute(stmt.returning(Alert.key)).first())


def fire_at_once(s: Session, key: str, condition: dict, *, now: datetime) -> Alert | None:
    """A condition without a for-duration holds: the alert (created at need) fires now, unless it
    fires already. Returns the row when this call fired it."""
    stmt = _insert(s).values(key=key, state=FIRING, pending_since=now, fired_at=now, resolved_at=None,
                             updated_at=now, **_described(condition))
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={"state": FIRING, "pending_since": now, "fired_at": now, "resolved_at": None, "updated_at": now,
              **_described(condition)},
        where=Alert.state != FIRING)
    return s.scalars(stmt.returning(Alert), execution_options=_FRESH).first()


def fire_pending(s: Session, key: str, condition: dict, *, now: datetime, pending_since_by: datetime) -> Alert | None:
    """A pending alert whose condition has held since ``pending_since_by`` or earlier fires now.
    Returns the row when this call fired it."""
    stmt = (update(Alert)
            .where(Alert.key == key, Alert.state == PENDING, Alert.pending_since <= pending_since_by)
            .values(state=FIRING, fired_at=now, resolved_at=None, updated_at=now, **_described(condition))
            .returning(Alert).execution_options(**_NO_SYNC))
    return s.scalars(stmt, execution_options=_FRESH).first()


def refresh(s: Session, key: str, condition: dict, *, now: datetime) -> bool:
    """A pending or firing alert's condition still holds: its latest summary, value and threshold."""
    stmt = (update(Alert).where(Alert.key == key, Alert.state.in_((PENDING, FIRING)))
            .values(updated_at=now, **_described(condition)).execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def resolve(s: Session, key: str, *, now: datetime) -> Alert | None:
    """A firing alert's condition no longer holds: resolved now. Returns the row when this call
    resolved it."""
    stmt = (update(Alert).where(Alert.key == key, Alert.state == FIRING)
            .values(state=RESOLVED, resolved_at=now, pending_since=None, updated_at=now)
            .returning(Alert).execution_options(**_NO_SYNC))
    return s.scalars(stmt, execution_options=_FRESH).first()


def clear(s: Session, key: str, *, now: datetime) -> bool:
    """A pending alert's condition stopped holding before its for-duration: back to resolved,
    silently (``fired_at``/``resolved_at`` still say the last episode that fired)."""
    stmt = (update(Alert).where(Alert.key == key, Alert.state == PENDING)
            .values(state=RESOLVED, pending_since=None, updated_at=now).execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def panel(s: Session, resolved_since: datetime) -> list[Alert]:
    """The firing alerts and those whose last firing was resolved since ``resolved_since``,
    firing first, newest first (index ``ix_alerts_state_resolved_at``)."""
    q = (select(Alert)
         .where(or_(Alert.state == FIRING,
                    and_(Alert.state.in_((PENDING, RESOLVED)), Alert.resolved_at >= resolved_since)))
         .execution_options(**_FRESH))
    return sorted(s.scalars(q), key=lambda a: (a.state != FIRING, -(a.resolved_at or a.fired_at).timestamp(), a.key))


# --- the outbox ----------------------------------------------------------------------------------

def add_notification(s: Session, key: str, kind: str, payload: dict, *, now: datetime) -> int:
    """A notification of ``kind`` (firing, resolved) for alert ``key``, due now."""
    row = AlertNotification(alert_key=key, kind=kind, payload=payload, attempts=0, next_attempt_at=now,
                            created_at=now)
    s.add(row)
    s.flush()
    return row.id


def lease_due(s: Session, *, now: datetime, lease_until: datetime) -> AlertNotification | None:
    """The oldest due notification, leased until ``lease_until`` with one more attempt counted;
    ``None`` when nothing is due."""
    due = (select(AlertNotification.id).where(AlertNotification.next_attempt_at <= now)
           .order_by(AlertNotification.next_attempt_at, AlertNotification.id).limit(1))
    if is_postgres(s):
        due = due.with_for_update(skip_locked=True)
    stmt = (update(AlertNotification)
            .where(AlertNotification.id == due.scalar_subquery(), AlertNotification.next_attempt_at <= now)
            .values(next_attempt_at=lease_until, attempts=AlertNotification.attempts + 1)
            .returning(AlertNotification).execution_options(**_NO_SYNC))
    return s.scalars(stmt, execution_options=_FRESH).first()


def _leased(notification_id: int, attempts: int):
    return (AlertNotification.id == notification_id, AlertNotification.attempts == attempts,
            AlertNotification.sent_at.is_(None), AlertNotification.next_attempt_at.is_not(None))


def mark_sent(s: Session, notification_id: int, attempts: int, *, now: datetime) -> bool:
    stmt = (update(AlertNotification).where(*_leased(notification_id, attempts))
            .values(sent_at=now, next_attempt_at=None).execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def retry_at(s: Session, notification_id: int, attempts: int, *, when: datetime, error: str) -> bool:
    stmt = (update(AlertNotification).where(*_leased(notification_id, attempts))
            .values(next_attempt_at=when, last_error=error).execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def give_up(s: Session, notification_id: int, attempts: int, *, error: str) -> bool:
    """Settle a notification unsent: nothing will try it again; ``error`` says why."""
    stmt = (update(AlertNotification).where(*_leased(notification_id, attempts))
            .values(next_attempt_at=None, last_error=error).execution_options(**_NO_SYNC))
    return bool(s.execute(stmt).rowcount)


def notifications(s: Session, key: str | None = None, limit: int = 100) -> list[AlertNotification]:
    """The newest notifications (of alert ``key``), newest first."""
    q = (select(AlertNotification).order_by(AlertNotification.id.desc()).limit(limit)
         .execution_options(**_FRESH))
    if key is not None:
        q = q.where(AlertNotification.alert_key == key)
    return list(s.scalars(q))


def prune_notifications(s: Session, before: datetime) -> int:
    """Delete the notifications created before ``before`` (sent, given up, or never sent: no
    process had a webhook URL)."""
    stmt = delete(AlertNotification).where(AlertNotification.created_at < before)
    return s.execute(stmt.execution_options(**_NO_SYNC)).rowcount or 0
