"""The sign-in throttle's counts: attempts per username and per client address in a fixed window.

:func:`count_attempt` is ONE statement, an upsert that adds the attempt and returns the counts:
PostgreSQL locks each row it updates until the transaction ends, so parallel attempts are
counted one after the other and each sees the count its own attempt made (there is no read
before the write for a burst to slip through). The rows of an attempt are always taken in the
same order (username before address), so two attempts never wait for each other in a cycle.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import is_postgres
from .models import SignInFailure


def count_attempt(s: Session, keys: list[tuple[str, str]], *, now: datetime,
                  expired_before: datetime) -> dict[str, tuple[int, datetime]]:
    """Count one attempt under each ``(scope, key)``: ``{scope: (attempts in the window, window
    start)}``. A window that started before ``expired_before`` starts again at ``now``."""
    insert = (postgresql.insert if is_postgres(s) else sqlite.insert)(SignInFailure)
    table = SignInFailure.__table__
    expired = table.c.window_start < expired_before
    q = insert.values([{"scope": scope, "key": key, "failures": 1, "window_start": now} for scope, key in keys])
    q = q.on_conflict_do_update(
        index_elements=[table.c.scope, table.c.key],
        set_={"failures": case((expired, 1), else_=table.c.failures + 1),
              "window_start": case((expired, insert.excluded.window_start), else_=table.c.window_start)},
    ).returning(table.c.scope, table.c.failures, table.c.window_start)
    return {scope: (failures, start) for scope, failures, start in s.execute(q)}


def forgive(s: Session, *, reset: tuple[str, str], uncount: tuple[str, str]) -> None:
    """After a successful sign-in: forget the ``reset`` row, and take the attempt back from the
    ``uncount`` row (a success is not a failure of its address)."""
    scope, key = reset
    s.execute(delete(SignInFailure).where(SignInFailure.scope == scope, SignInFailure.key == key))
    scope, key = uncount
    s.execute(update(SignInFailure).where(SignInFailure.scope == scope, SignInFailure.key == key,
                                          SignInFailure.failures > 0)
              .values(failures=SignInFailure.failures - 1))


def prune(s: Session, expired_before: datetime) -> int:
    """Delete the counts whose window started before ``expired_before``; how many went."""
    return s.execute(delete(SignInFailure).where(SignInFailure.window_start < expired_before)).rowcount or 0
