"""What the scheduler's records say: who leads it and what its jobs did.

The scheduler (``delula.scheduler``) writes two tables: the ``scheduler_leader`` row, claimed and
heartbeated by the process holding the leader lock, and ``scheduler_runs``, one row per recorded
run (:func:`delula.schedule.execute`). This module reads them back for the overview and the
maintenance page. It imports no job, so the overview (whose roll-up is one) can read the leader.
"""
from __future__ import annotations

import os
import socket

from .clock import isoformat
from .storage import schedule as store_schedule

LEADER_NAME = "scheduler"
LEADER_STALE_S = 30.0            # a leader row not refreshed for this long names nobody


def identity() -> tuple[str, int]:
    """``(host, pid)`` of this process, as the leader row and the runs name it."""
    return socket.gethostname(), os.getpid()


def leader(rt) -> dict | None:
    """The current leader ``{"host", "pid", "since", "heartbeatAt", "isThisProcess"}``, or None
    when no scheduler has refreshed the leader row in the last :data:`LEADER_STALE_S` seconds."""
    with rt.store.begin() as s:
        row = store_schedule.get_leader(s, LEADER_NAME)
    if row is None or (rt.now() - row.heartbeat_at).total_seconds() > LEADER_STALE_S:
        return None
    host, pid = identity()
    return {"host": row.host, "pid": row.pid, "since": isoformat(row.since),
            "heartbeatAt": isoformat(row.heartbeat_at), "isThisProcess": row.host == host and row.pid == pid}


def heartbeat_age_s(rt) -> float | None:
    """Seconds since a scheduler leader last refreshed the leader row (``None``: never)."""
    with rt.store.begin() as s:
        row = store_schedule.get_leader(s, LEADER_NAME)
    return None if row is None else max(0.0, (rt.now() - row.heartbeat_at).total_seconds())


def run_json(r) -> dict:
    """One ``scheduler_runs`` row as the dashboard shows it."""
    duration = (r.finished_at - r.started_at).total_seconds() * 1000 if r.finished_at else None
    return {"id": r.id, "job": r.job, "startedAt": isoformat(r.started_at), "finishedAt": isoformat(r.finished_at),
            "durationMs": round(duration, 1) if duration is not None else None, "outcome": r.outcome,
            "error": r.error, "detail": r.detail, "host": r.host, "pid": r.pid}


def recent_runs(rt, limit: int = 50, job: str | None = None) -> list[dict]:
    """The newest recorded runs (all jobs, or one), newest first."""
    with rt.store.begin() as s:
        return [run_json(r) for r in store_schedule.recent_runs(s, limit, job)]
