"""The scheduler's statements: its run history, the leader row and the leader lock.

Only one scheduler process runs the jobs. On PostgreSQL it is the holder of a session-level
advisory lock taken on a connection of its own (:class:`LeaderLock`), outside the pool the
transactions use: the lock lives exactly as long as that connection, so when the leader process
dies — or its connection drops — the lock is free for a standby within seconds.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import create_engine, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from .db import is_postgres
from .models import SchedulerLeader, SchedulerRun

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the scheduler leader (an arbitrary constant, "delula" in ASCII).
LEADER_LOCK_KEY = 0x64656C756C61


def record_run(s: Session, *, job: str, started_at: datetime, finished_at: datetime, outcome: str,
               error: str | None, detail: dict | None, host: str, pid: int) -> None:
    s.execute(insert(SchedulerRun).values(job=job, started_at=started_at, finished_at=finished_at,
                                          outcome=outcome, error=error, detail=detail, host=host, pid=pid))


def recent_runs(s: Session, limit: int = 50, job: str | None = None) -> list[SchedulerRun]:
    """Newest runs first."""
    q = select(SchedulerRun).order_by(SchedulerRun.started_at.desc(), SchedulerRun.id.desc()).limit(limit)
    if job is not None:
        q = q.where(SchedulerRun.job == job)
    return list(s.scalars(q))


def last_runs(s: Session) -> dict[str, SchedulerRun]:
    """The newest run of every job, one query."""
    newest = select(func.max(SchedulerRun.id)).group_by(SchedulerRun.job).scalar_subquery()
    return {r.job: r for r in s.scalars(select(SchedulerRun).where(SchedulerRun.id.in_(newest)))}


def prune_runs(s: Session, keep_per_job: int) -> int:
    """Delete all but the newest ``keep_per_job`` runs of each job; returns how many went."""
    ranked = select(SchedulerRun.id, func.row_number().over(
        partition_by=SchedulerRun.job, order_by=(SchedulerRun.started_at.desc(), SchedulerRun.id.desc()))
        .label("rn")).subquery()
    doomed = select(ranked.c.id).where(ranked.c.rn > keep_per_job)
    return s.execute(delete(SchedulerRun).where(SchedulerRun.id.in_(doomed))
                     .execution_options(synchronize_session=False)).rowcount or 0


def claim_leadership(s: Session, name: str, *, host: str, pid: int, now: datetime) -> None:
    """Write this process into the leader row (insert or overwrite)."""
    insert_ = pg_insert if is_postgres(s) else sqlite_insert
    stmt = insert_(SchedulerLeader).values(name=name, host=host, pid=pid, since=now, heartbeat_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={
        "host": stmt.excluded.host, "pid": stmt.excluded.pid, "since": stmt.excluded.since,
        "heartbeat_at": stmt.excluded.heartbeat_at})
    s.execute(stmt)


def heartbeat(s: Session, name: str, *, host: str, pid: int, now: datetime) -> bool:
    """Refresh the leader row if it is still ours; ``False`` when it names someone else."""
    return bool(s.execute(update(SchedulerLeader)
                          .where(SchedulerLeader.name == name, SchedulerLeader.host == host,
                                 SchedulerLeader.pid == pid)
                          .values(heartbeat_at=now)).rowcount)


def resign(s: Session, name: str, *, host: str, pid: int) -> None:
    """Remove the leader row if it is ours (a clean shutdown)."""
    s.execute(delete(SchedulerLeader).where(SchedulerLeader.name == name, SchedulerLeader.host == host,
                                            SchedulerLeader.pid == pid))


def get_leader(s: Session, name: str) -> SchedulerLeader | None:
    return s.get(SchedulerLeader, name, populate_existing=True)


class LeaderLock:
    """A session-level ``pg_try_advisory_lock`` held on a dedicated connection.

    The connection comes from an engine of its own (no pool, TCP keepalives on), never from the
    pool of the transactions, so nothing else can return it, reuse it or recycle it: the lock is
    held while the connection lives. :meth:`alive` notices a dropped connection (database
    restart, network), after which the holder must step down and campaign again.
    """

    def __init__(self, url: str, key: int = LEADER_LOCK_KEY):
        self.key = key
        self._engine = create_engine(url, poolclass=NullPool, connect_args={
            "connect_timeout": 5, "application_name": "delula-scheduler-lock",
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3})
        self._conn = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; ``False`` when another session does or the
        database cannot be reached."""
        if self._conn is not None:
            return self.alive()
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as e:
            log.warning("scheduler lock: cannot connect: %s", _short(e))
            return False
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
        except SQLAlchemyError as e:
            log.warning("scheduler lock: cannot ask for the lock: %s", _short(e))
            got = False
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def alive(self) -> bool:
        """Whether the lock's connection still answers (and so the lock is still ours)."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError as e:
            log.warning("scheduler lock: connection lost: %s", _short(e))
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        except SQLAlchemyError:
            pass  # the connection is gone, and the lock with it
        self._drop()

    def close(self) -> None:
        self.release()
        self._engine.dispose()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        try:
            conn.invalidate()
            conn.close()
        except SQLAlchemyError:
            pass


def _short(e: Exception) -> str:
    lines = str(getattr(e, "orig", None) or e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
