"""The embedded scheduler: backlog maintenance, the queue poller and metrics, run by one leader.

An APScheduler 3 ``BackgroundScheduler`` runs these jobs (:data:`JOBS`):

- ``queue-recovery``      once when this process becomes leader (``queue.recover``);
- ``queue-tick``          about every second (``queue.tick``), never overlapping itself;
- ``backlog-maintenance`` every ``DELULA_MAINTENANCE_INTERVAL_S`` (``backlog.maintain``);
- ``metrics-sample``      every 30 s, one ``queue_samples`` row;
- ``stats-rollup``        every minute, closed hours into ``stat_counts`` (``overview.roll_up``);
- ``housekeeping``        every 10 min, keeps ``scheduler_runs``, ``queue_samples`` and
                            idempotency keys (24 h) bounded.

Leadership: on PostgreSQL any number of schedulers may run (web processes, ``python -m delula
worker``); only the holder of a session-level advisory lock on a dedicated connection runs jobs.
A campaign thread retries every :data:`CAMPAIGN_INTERVAL_S` on standbys and, on the leader,
checks the lock's connection and heartbeats the ``scheduler_leader`` row; when the connection
drops the leader steps down and campaigns again, and when the leader's process dies its lock goes
with its connection, so a standby takes over within seconds. SQLite is single-process: this
process is the leader.

Each run is recorded in ``scheduler_runs`` (job, start, end, outcome, error, host, pid) — the
queue tick only when it did something or failed, so the table is not one row per second. A
failing run is caught, logged and recorded; it never stops the scheduler.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from .generations import isoformat
from .storage import DatabaseUnavailable
from .storage import schedule as store_schedule

log = logging.getLogger(__name__)

LEADER_NAME = "scheduler"
CAMPAIGN_INTERVAL_S = 2.0        # standbys retry, the leader checks its lock and heartbeats
LEADER_STALE_S = 30.0            # a leader row not refreshed for this long names nobody
KEEP_RUNS_PER_JOB = 500
KEEP_SAMPLES = timedelta(days=30)
KEEP_IDEMPOTENCY_KEYS = timedelta(hours=24)   # a retried request is answered alike for a day
ERROR_LOG_EVERY_S = 60.0         # the same failure of a job is logged at most once a minute


def _queue_tick(rt):
    from . import queue

    return queue.tick(rt)


def _queue_recover(rt):
    from . import queue

    return queue.recover(rt)


def _maintain(rt):
    from . import backlog

    return backlog.maintain(rt)


def _sample(rt):
    from . import backlog

    return backlog.record_sample(rt)


def _roll_up(rt):
    from . import overview

    return overview.roll_up(rt)


def _housekeeping(rt):
    with rt.store.begin() as s:
        runs = store_schedule.prune_runs(s, KEEP_RUNS_PER_JOB)
    from .storage import pool, stats

    with rt.store.begin() as s:
        samples = stats.prune_queue_samples(s, rt.now() - KEEP_SAMPLES)
    with rt.store.begin() as s:
        keys = pool.prune_keys(s, rt.now() - KEEP_IDEMPOTENCY_KEYS)
    return {"runsDeleted": runs, "samplesDeleted": samples, "idempotencyKeysDeleted": keys}


@dataclass(frozen=True)
class JobSpec:
    id: str
    run: Callable
    interval: Callable[[object], float | None]   # seconds from the settings; None = once at leadership
    first_delay_s: float = 0.0                   # after becoming leader
    quiet: bool = False                          # record only runs that did something or failed
    description: str = ""


JOBS: tuple[JobSpec, ...] = (
    JobSpec("queue-recovery", _queue_recover, lambda st: None,
            description="re-poll or resubmit jobs left processing by a previous leader"),
    JobSpec("queue-tick", _queue_tick, lambda st: 1.0, first_delay_s=0.5, quiet=True,
            description="time out, poll and start generation jobs"),
    JobSpec("backlog-maintenance", _maintain, lambda st: st.maintenance_interval_s, first_delay_s=1.0,
            description="create the missing backlog jobs, clean up old failures"),
    JobSpec("metrics-sample", _sample, lambda st: 30.0,
            description="snapshot queue and backlog totals into queue_samples"),
    JobSpec("stats-rollup", _roll_up, lambda st: 60.0, first_delay_s=5.0, quiet=True,
            description="add the closed hours to stat_counts, which the overview's day and week read"),
    JobSpec("housekeeping", _housekeeping, lambda st: 600.0, first_delay_s=60.0,
            description=f"keep the last {KEEP_RUNS_PER_JOB} runs per job and {KEEP_SAMPLES.days} days of samples"),
)
_SPECS = {spec.id: spec for spec in JOBS}


def _identity() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


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


def _log_failure(job: str, e: Exception) -> None:
    key, now = (job, str(e)[:200]), time.monotonic()
    if now - _last_logged.get(key, -ERROR_LOG_EVERY_S) < ERROR_LOG_EVERY_S:
        return
    _last_logged[key] = now
    if isinstance(e, DatabaseUnavailable):
        log.warning("scheduler: %s failed, database unavailable: %s", job, e)
    else:
        log.error("scheduler: %s failed", job, exc_info=e)


def execute(rt, spec: JobSpec, *, record: bool | None = None) -> dict:
    """Run one job, catch any failure, record the run; returns what happened.

    ``record=None`` follows the job (quiet jobs record only noteworthy or failed runs).
    """
    host, pid = _identity()
    started, t0 = rt.now(), time.perf_counter()
    result, error = None, None
    try:
        result = spec.run(rt)
    except Exception as e:  # a failing run must never stop the scheduler
        error = f"{type(e).__name__}: {e}"[:4000]
        _log_failure(spec.id, e)
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
        except Exception as e:
            _log_failure(f"{spec.id} (recording the run)", e)
    return {"job": spec.id, "outcome": outcome, "error": error, "startedAt": isoformat(started),
            "finishedAt": isoformat(finished), "durationMs": duration_ms, "result": result}


class Scheduler:
    """APScheduler plus leader election; jobs are scheduled only while this process leads."""

    def __init__(self, rt, *, campaign_interval_s: float = CAMPAIGN_INTERVAL_S, jobs: tuple[JobSpec, ...] = JOBS):
        self.rt = rt
        self.jobs = jobs
        self.campaign_interval_s = campaign_interval_s
        self.host, self.pid = _identity()
        self.is_leader = False
        self.leader_since: datetime | None = None
        self._lock = store_schedule.LeaderLock(rt.store.url) if rt.store.is_postgres else None
        self._aps = BackgroundScheduler(timezone=timezone.utc, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self._stop = threading.Event()
        self._recovered = threading.Event()
        self._state = threading.RLock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> "Scheduler":
        _quiet_apscheduler()
        self._aps.start()
        self._thread = threading.Thread(target=self._campaign, name="delula-scheduler-campaign", daemon=True)
        self._thread.start()
        log.info("scheduler started on %s pid %s (%s)", self.host, self.pid,
                 "campaigning for the PostgreSQL leader lock" if self._lock else "SQLite: leader")
        return self

    def shutdown(self, wait: bool = True) -> None:
        """Stop campaigning, stop the jobs (waiting for running ones if ``wait``), resign."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        with self._state:
            self._step_down("shutting down")
        try:
            self._aps.shutdown(wait=wait)
        except Exception:  # not running
            pass
        if self._lock is not None:
            self._lock.close()
        log.info("scheduler stopped on %s pid %s", self.host, self.pid)

    def next_runs(self) -> dict[str, datetime | None]:
        """Next run time of each scheduled job (empty unless this process leads)."""
        if not self.is_leader:
            return {}
        return {job.id: job.next_run_time for job in self._aps.get_jobs()}

    # --- leadership ---------------------------------------------------------------------------

    def _campaign(self) -> None:
        while not self._stop.is_set():
            try:
                with self._state:
                    if self._stop.is_set():
                        break
                    if not self.is_leader:
                        if self._lock is None or self._lock.try_acquire():
                            self._become_leader()
                    elif self._lock is not None and not self._lock.alive():
                        self._step_down("lost the lock's database connection")
                    else:
                        self._heartbeat()
            except Exception:
                log.exception("scheduler: campaign step failed")
            self._stop.wait(self.campaign_interval_s)

    def _become_leader(self) -> None:
        now = self.rt.now()
        self._recovered.clear()
        try:
            from . import auth

            auth.ensure_system_user(self.rt)  # backlog jobs belong to it
            with self.rt.store.begin() as s:
                store_schedule.claim_leadership(s, LEADER_NAME, host=self.host, pid=self.pid, now=now)
        except Exception as e:
            _log_failure("leadership", e)
        # announced once the leader row says so too: whoever sees is_leader finds the row
        self.is_leader, self.leader_since = True, now
        wall = datetime.now(timezone.utc)
        for spec in self.jobs:
            interval = spec.interval(self.rt.settings)
            first = wall + timedelta(seconds=spec.first_delay_s)
            if interval is None:
                self._aps.add_job(self._run, "date", run_date=first, args=(spec,), id=spec.id,
                                  name=spec.id, replace_existing=True)
            else:
                self._aps.add_job(self._run, "interval", seconds=interval, next_run_time=first, args=(spec,),
                                  id=spec.id, name=spec.id, replace_existing=True)
        if not any(spec.id == "queue-recovery" for spec in self.jobs):
            self._recovered.set()
        log.info("scheduler: %s pid %s is the leader now", self.host, self.pid)

    def _step_down(self, why: str) -> None:
        if not self.is_leader:
            return
        self.is_leader, self.leader_since = False, None
        try:
            self._aps.remove_all_jobs()
        except Exception:
            pass
        try:
            with self.rt.store.begin() as s:
                store_schedule.resign(s, LEADER_NAME, host=self.host, pid=self.pid)
        except Exception as e:
            _log_failure("resigning", e)
        if self._lock is not None:
            self._lock.release()
        log.warning("scheduler: %s pid %s stepped down: %s", self.host, self.pid, why)

    def _heartbeat(self) -> None:
        try:
            with self.rt.store.begin() as s:
                now = self.rt.now()
                if not store_schedule.heartbeat(s, LEADER_NAME, host=self.host, pid=self.pid, now=now):
                    store_schedule.claim_leadership(s, LEADER_NAME, host=self.host, pid=self.pid,
                                                    now=self.leader_since or now)
        except Exception as e:
            _log_failure("heartbeat", e)

    # --- running jobs -------------------------------------------------------------------------

    def _run(self, spec: JobSpec) -> None:
        if not self.is_leader or self._stop.is_set():
            return
        if spec.id == "queue-tick" and not self._recovered.is_set():
            return  # recovery first: it decides what processing jobs left behind become
        try:
            execute(self.rt, spec)
        finally:
            if spec.id == "queue-recovery":
                self._recovered.set()


class _SkipNotice(logging.Filter):
    """A queue tick still running when the next is due is skipped by design: no warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in str(record.msg)


def _quiet_apscheduler() -> None:
    sched_log = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _SkipNotice) for f in sched_log.filters):
        sched_log.addFilter(_SkipNotice())
    executor_log = logging.getLogger("apscheduler.executors.default")
    if executor_log.level == logging.NOTSET:  # "Running job"/"executed successfully" every second
        executor_log.setLevel(logging.WARNING)


# --- the process's scheduler ----------------------------------------------------------------------

_running: dict[tuple[int, str], Scheduler] = {}
_running_lock = threading.Lock()


def start_in_process(rt) -> Scheduler:
    """Start this process's scheduler for ``rt``'s database, or return the one already running.

    Keyed by process id too: a process forked after start (``gunicorn --preload``) has no
    scheduler thread and starts its own.
    """
    key = (os.getpid(), rt.store.url)
    with _running_lock:
        sched = _running.get(key)
        if sched is not None and sched.running:
            return sched
        sched = Scheduler(rt).start()
        _running[key] = sched
    atexit.register(sched.shutdown, wait=False)
    return sched


def _this_process(rt) -> Scheduler | None:
    sched = _running.get((os.getpid(), rt.store.url))
    return sched if sched is not None and sched.running else None


def run_worker(rt) -> None:
    """``python -m delula worker``: run the scheduler until SIGTERM or SIGINT, then stop cleanly."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("worker: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    sched = start_in_process(rt)
    log.info("worker: running (pid %s); SIGTERM or Ctrl-C stops it", os.getpid())
    while not stop.wait(1.0):
        pass
    sched.shutdown(wait=True)


# --- read side, for the dashboard -----------------------------------------------------------------

def leader(rt) -> dict | None:
    """The current leader ``{"host", "pid", "since", "heartbeatAt", "isThisProcess"}``, or None
    when no scheduler has refreshed the leader row in the last :data:`LEADER_STALE_S` seconds."""
    with rt.store.begin() as s:
        row = store_schedule.get_leader(s, LEADER_NAME)
    if row is None or (rt.now() - row.heartbeat_at).total_seconds() > LEADER_STALE_S:
        return None
    host, pid = _identity()
    return {"host": row.host, "pid": row.pid, "since": isoformat(row.since),
            "heartbeatAt": isoformat(row.heartbeat_at), "isThisProcess": row.host == host and row.pid == pid}


def _run_json(r) -> dict:
    duration = (r.finished_at - r.started_at).total_seconds() * 1000 if r.finished_at else None
    return {"id": r.id, "job": r.job, "startedAt": isoformat(r.started_at), "finishedAt": isoformat(r.finished_at),
            "durationMs": round(duration, 1) if duration is not None else None, "outcome": r.outcome,
            "error": r.error, "detail": r.detail, "host": r.host, "pid": r.pid}


def recent_runs(rt, limit: int = 50, job: str | None = None) -> list[dict]:
    """The newest recorded runs (all jobs, or one), newest first."""
    with rt.store.begin() as s:
        return [_run_json(r) for r in store_schedule.recent_runs(s, limit, job)]


def jobs_overview(rt) -> list[dict]:
    """Per scheduled job: id, interval (s, None = once per leadership), description, the last
    recorded run and — when this process leads — the next run."""
    with rt.store.begin() as s:
        last = store_schedule.last_runs(s)
    sched = _this_process(rt)
    upcoming = sched.next_runs() if sched is not None else {}
    return [{"id": spec.id, "interval": spec.interval(rt.settings), "description": spec.description,
             "lastRun": _run_json(last[spec.id]) if spec.id in last else None,
             "nextRun": isoformat(upcoming.get(spec.id))}
            for spec in JOBS]


def run_now(rt, job: str = "backlog-maintenance") -> dict:
    """Run one job now in this process ("run maintenance now"), recorded like a scheduled run.

    Safe next to the scheduler: maintenance passes are serialised, queue ticks take their jobs
    with row locks. Raises ``ValueError`` for an unknown job.
    """
    spec = _SPECS.get(job)
    if spec is None:
        raise ValueError(f"unknown scheduler job {job!r}; one of {', '.join(_SPECS)}")
    return execute(rt, spec, record=True)
