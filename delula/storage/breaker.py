"""The provider circuit breaker's row: read it, lock it, write what the domain decided.

The state machine is the domain's (``delula.breaker``, pure functions); here are the statements.
A change is read-lock-write in one transaction (:func:`locked` then :func:`write`), so two
processes recording provider calls at once apply their changes one after the other. Taking the
half-open probe is one conditional statement (:func:`take_probe`): exactly one caller wins it.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import is_postgres
from .models import ProviderBreaker

FIELDS = ("state", "failures", "trips", "opened_at", "next_probe_at", "probe_until", "last_error")


def get(s: Session, name: str) -> ProviderBreaker | None:
    return s.scalar(select(ProviderBreaker).where(ProviderBreaker.name == name)
                    .execution_options(populate_existing=True))


def locked(s: Session, name: str, *, now: datetime) -> ProviderBreaker:
    """The row, locked until the transaction ends (created closed the first time)."""
    insert = (postgresql.insert if is_postgres(s) else sqlite.insert)(ProviderBreaker)
    s.execute(insert.values(name=name, state="closed", failures=0, trips=0, updated_at=now)
              .on_conflict_do_nothing(index_elements=["name"]))
    return s.scalar(select(ProviderBreaker).where(ProviderBreaker.name == name).with_for_update()
                    .execution_options(populate_existing=True))


def write(s: Session, row: ProviderBreaker, values: dict, *, now: datetime) -> None:
    """Store ``values`` (of :data:`FIELDS`) into the locked ``row``."""
    s.execute(update(ProviderBreaker).where(ProviderBreaker.name == row.name)
              .values(**{k: values[k] for k in FIELDS if k in values}, updated_at=now)
              .execution_options(synchronize_session=False))


def take_probe(s: Session, name: str, *, now: datetime, lease_until: datetime) -> bool:
    """An open breaker whose backoff has passed (or a half-open one whose probe lease ran out)
    becomes half-open with this caller's probe leased until ``lease_until``; ``True`` for exactly
    one caller."""
    stmt = (update(ProviderBreaker)
            .where(ProviderBreaker.name == name,
                   or_((ProviderBreaker.state == "open") & (ProviderBreaker.next_probe_at <= now),
                       (ProviderBreaker.state == "half_open") & (ProviderBreaker.probe_until <= now)))
            .values(state="half_open", probe_until=lease_until, updated_at=now)
            .execution_options(synchronize_session=False))
    return bool(s.execute(stmt).rowcount)
