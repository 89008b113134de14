"""The schedule: which jobs run how often, one run executed and recorded, a run on demand.

:data:`JOBS`, each a domain function of the runtime:

- ``queue-recovery``      once when a process becomes leader (``queue.recover``);
- ``queue-tick``          about every second (``queue.tick``), never overlapping itself;
- ``backlog-maintenance`` every ``DELULA_MAINTENANCE_INTERVAL_S`` (``backlog.maintain``);
- ``metrics-sample``      every 30 s, one ``queue_samples`` row (``backlog.record_sample``);
- ``stats-rollup``        every minute, closed hours into ``stat_counts`` (``overview.roll_up``);
- ``demand-rollup``       every minute, closed minutes' attempts into ``demand_minutes`` (``demand.roll_up``);
- ``counters-rollup``     every minute, settled attempts into the claims counter (``counters.roll_up``);
- ``alerts``              every ``DELULA_ALERT_INTERVAL_S`` (a minute), the alert rules
                            evaluated, alerts fired and resolved (``alerts.check``);
- ``alert-delivery``      every 5 s, due notifications sent to the webhook (``alerts.deliver``);
- ``housekeeping``        every 10 min, keeps ``scheduler_runs``, ``queue_samples``,
                            idempotency keys and sent notifications bounded (``housekeeping.prune``).

Who runs them and when is the scheduler's business (``delula.scheduler``: APScheduler and the
leader election); it runs each through :func:`execute`, as does :func:`run_now` for an operator.
Each run is recorded in ``scheduler_runs`` (job, start, end, outcome, error, host, pid) — a quiet
job (the queue tick) only when it did something or failed, so the table is not one row per
second. A failing run is caught, logged and recorded; it never stops the scheduler.

:func:`jobs_overview` shows each job's next run when this process runs the scheduler: the
scheduler registers itself here (:func:`register_in_process`), as the schedule cannot import it.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from . import alerts, audit, backlog, counters, demand, housekeeping, jobruns, overview, queue
from .clock import isoformat
from .storage import DatabaseUnavailable
from .storage import schedule as store_schedule

log = logging.getLogger(__name__)

ERROR_LOG_EVERY_S = 60.0         # the same failure of a job is logged at most once a minute


@dataclass(frozen=True)
class JobSpec:
    id: str
    run: Callable
    interval: Callable[[object], float | None]   # seconds from the settings; None = once at leadership
    first_delay_s: float = 0.0                   # after becoming leader
    quiet: bool = False                          # record only runs that did something or failed
    description: str = ""


JOBS: tuple[JobSpec, ...] = (
    JobSpec("queue-recovery", queue.recover, lambda st: None,
            description="re-poll or resubmit jobs left processing by a previous leader"),
    JobSpec("queue-tick", queue.tick, lambda st: 1.0, first_delay_s=0.5, quiet=True,
            description="time out, poll and start generation jobs"),
    JobSpec("backlog-maintenance", backlog.maintain, lambda st: st.maintenance_interval_s, first_delay_s=1.0,
            description="create the missing backlog jobs, clean up old failures"),
    JobSpec("metrics-sample", backlog.record_sample, lambda st: 30.0,
            description="snapshot queue and backlog totals into queue_samples"),
    JobSpec("stats-rollup", overview.roll_up, lambda st: 60.0, first_delay_s=5.0, quiet=True,
            description="add the closed hours to stat_counts, which the overview's day and week read"),
    JobSpec("demand-rollup", demand.roll_up, lambda st: 60.0, first_delay_s=7.0, quiet=True,
            description="add the closed minutes' instant attempts, hits and misses, to demand_minutes"),
    JobSpec("counters-rollup", counters.roll_up, lambda st: 60.0, first_delay_s=9.0, quiet=True,
            description="add the settled instant attempts to the claims counter /metrics exports"),
    JobSpec("alerts", alerts.check, lambda st: st.alert_interval_s, first_delay_s=2.0, quiet=True,
            description="evaluate the alert rules: fire and resolve alerts, queue their notifications"),
    JobSpec("alert-delivery", alerts.deliver, lambda st: alerts.DELIVERY_INTERVAL_S, first_delay_s=3.0, quiet=True,
            description="send the due alert notifications to DELULA_ALERT_WEBHOOK_URL, with retries"),
    JobSpec("housekeeping", housekeeping.prune, lambda st: 600.0, first_delay_s=60.0,
            description=f"keep the last {housekeeping.KEEP_RUNS_PER_JOB} runs per job and "
                        f"{housekeeping.KEEP_SAMPLES.days} days of samples"),
)
_SPECS = {spec.id: spec for spec in JOBS}


def _noteworthy(result) -> bool:
    """Whether a quiet job's result says it did something (any positive count, any non-empty list)."""
    if isinstance(result, dict):
        return any(_noteworthy(v) for v in result.values())
    if isinstance(result, bool):
        return result
    if isinstance(result, (int, float)):
        return result > 0
    if isinstance(result, (list, tuple, set)):
        return len(result) > 0
    return False


def _detail(result) -> dict | None:
    """A compact, JSON-safe summary of a job's result for ``scheduler_runs.detail``."""
    if not isinstance(result, dict):
        return None if result is None else {"result": str(result)[:500]}
    compact = {k: v for k, v in result.items() if not isinstance(v, (list, tuple))}
    return json.loads(json.dumps(compact, default=str))


_last_logged: dict[tuple[str, str], float] = {}


def log_failure(job: str, e: Exception) -> None:
    """Log a failure of ``job`` (a job, or a step of the scheduler's own), the same one at most
    once every :data:`ERROR_LOG_EVERY_S`; an unavailable database is a warning, not a traceback."""
    key, now = (job, str(e)[:200]), time.monotonic()
    if now - _last_logged.get(key, -ERROR_LOG_EVERY_S) < ERROR_LOG_EVERY_S:
        return
    _last_logged[key] = now
    if isinstance(e, DatabaseUnavailable):
        log.warning("scheduler: %s failed, database unavailable: %s", job, e)
    else:
        log.error("scheduler: %s failed", job, exc_info=e)


def execute(rt, spec: JobSpec, *, record: bool | None = None, asked_by: str | None = None) -> dict:
    """Run one job, catch any failure, record the run; returns what happened.

    ``record=None`` follows the job (quiet jobs record only noteworthy or failed runs).
    ``asked_by``: the user who ran it by hand; a ``run_now`` audit row is written with the run's
    record, in its transaction.
    """
    host, pid = jobruns.identity()
    started, t0 = rt.now(), time.perf_counter()
    result, error = None, None
    try:
        result = spec.run(rt)
    except Exception as e:  # a failing run must never stop the scheduler
        error = f"{type(e).__name__}: {e}"[:4000]
        log_failure(spec.id, e)
    duration_ms = round((time.perf_counter() - t0) * 1000, 1)
    finished = rt.now()
    if finished <= started:  # a manual clock: keep the measured duration visible
        finished = started + timedelta(milliseconds=duration_ms)
    outcome = "ok" if error is None else "error"
    if record is None:
        record = not spec.quiet or error is not None or _noteworthy(result)
    if record:
        try:
            with rt.store.begin() as s:
                store_schedule.record_run(s, job=spec.id, started_at=started, finished_at=finished,
                                          outcome=outcome, error=error, detail=_detail(result), host=host, pid=pid)
                if asked_by is not None:
                    audit.record(s, now=finished, actor_id=asked_by, action="run_now", job=spec.id,
                                 outcome=outcome)
        except Exception as e:
            log_failure(f"{spec.id} (recording the run)", e)
    return {"job": spec.id, "outcome": outcome, "error": error, "startedAt": isoformat(started),
            "finishedAt": isoformat(finished), "durationMs": duration_ms, "result": result}


def run_now(rt, job: str = "backlog-maintenance", *, actor_id: str | None = None) -> dict:
    """Run one job now in this process ("run maintenance now"), recorded like a scheduled run,
    with a ``run_now`` audit row naming ``actor_id`` (who clicked).

    Safe next to the scheduler: maintenance passes are serialised, queue ticks take their jobs
    with row locks. Raises ``ValueError`` for an unknown job.
    """
    spec = _SPECS.get(job)
    if spec is None:
        raise ValueError(f"unknown scheduler job {job!r}; one of {', '.join(_SPECS)}")
    return execute(rt, spec, record=True, asked_by=actor_id)


# --- the scheduler running in this process ---------------------------------------------------------

class RunningScheduler(Protocol):
    @property
    def running(self) -> bool: ...

    def next_runs(self) -> dict[str, datetime | None]: ...


_in_process: dict[tuple[int, str], RunningScheduler] = {}


def register_in_process(rt, sched: RunningScheduler) -> None:
    """Name ``sched`` as this process's scheduler for ``rt``'s database."""
    _in_process[(os.getpid(), rt.store.url)] = sched


def in_process(rt) -> RunningScheduler | None:
    """This process's running scheduler for ``rt``'s database, or None.

    Keyed by process id too: a process forked after start (``gunicorn --preload``) inherits the
    entry but no scheduler thread, so it has none.
    """
    sched = _in_process.get((os.getpid(), rt.store.url))
    return sched if sched is not None and sched.running else None


def jobs_overview(rt) -> list[dict]:
    """Per scheduled job: id, interval (s, None = once per leadership), description, the last
    recorded run and — when this process leads — the next run."""
    with rt.store.begin() as s:
        last = store_schedule.last_runs(s)
    sched = in_process(rt)
    upcoming = sched.next_runs() if sched is not None else {}
    return [{"id": spec.id, "interval": spec.interval(rt.settings), "description": spec.description,
             "lastRun": jobruns.run_json(last[spec.id]) if spec.id in last else None,
             "nextRun": isoformat(upcoming.get(spec.id))}
            for spec in JOBS]
