"""The embedded scheduler: the schedule's jobs run on time, by one leader among the processes.

What runs, how often, and how one run is executed and recorded is the domain's
(``delula.schedule``); this module runs it. An APScheduler 3 ``BackgroundScheduler`` calls
:func:`delula.schedule.execute` for each job of :data:`delula.schedule.JOBS` at its interval,
``queue-recovery`` first: the queue tick waits until recovery has decided what the jobs left
processing by a previous leader become.

Leadership: on PostgreSQL any number of schedulers may run (web processes, ``python -m delula
worker``); only the holder of a session-level advisory lock on a dedicated connection runs jobs.
A campaign thread retries every :data:`CAMPAIGN_INTERVAL_S` on standbys and, on the leader,
checks the lock's connection and heartbeats the ``scheduler_leader`` row; when the connection
drops the leader steps down and campaigns again, and when the leader's process dies its lock goes
with its connection, so a standby takes over within seconds. SQLite is single-process: this
process is the leader. The dashboard reads the leader row and the recorded runs through
``delula.jobruns``.

The watchdog (:class:`Watchdog`) is the one thing that must run where no scheduler leads: every
web process starts one (``app.create_app``, whatever ``DELULA_SCHEDULER`` says) that every
:data:`WATCHDOG_INTERVAL_S` raises or resolves the ``no_leader`` alert and delivers the due
notifications (``delula.alerts.watch``). Like the scheduler it is kept per process id
(:func:`watch_in_process`): a process forked after start has none and starts its own when asked.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from . import alerts, auth, schedule
from .jobruns import LEADER_NAME, identity
from .storage import schedule as store_schedule

log = logging.getLogger(__name__)

CAMPAIGN_INTERVAL_S = 2.0        # standbys retry, the leader checks its lock and heartbeats
WATCHDOG_INTERVAL_S = 20.0       # how often a process's watchdog looks for a leader


class Scheduler:
    """APScheduler plus leader election; jobs are scheduled only while this process leads."""

    def __init__(self, rt, *, campaign_interval_s: float = CAMPAIGN_INTERVAL_S,
                 jobs: tuple[schedule.JobSpec, ...] = schedule.JOBS):
        self.rt = rt
        self.jobs = jobs
        self.campaign_interval_s = campaign_interval_s
        self.host, self.pid = identity()
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
            auth.ensure_system_user(self.rt)  # backlog jobs belong to it
            with self.rt.store.begin() as s:
                store_schedule.claim_leadership(s, LEADER_NAME, host=self.host, pid=self.pid, now=now)
        except Exception as e:
            schedule.log_failure("leadership", e)
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
            schedule.log_failure("resigning", e)
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
            schedule.log_failure("heartbeat", e)

    # --- running jobs -------------------------------------------------------------------------

    def _run(self, spec: schedule.JobSpec) -> None:
        if not self.is_leader or self._stop.is_set():
            return
        if spec.id == "queue-tick" and not self._recovered.is_set():
            return  # recovery first: it decides what processing jobs left behind become
        try:
            schedule.execute(self.rt, spec)
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

_starting = threading.Lock()


def start_in_process(rt) -> Scheduler:
    """Start this process's scheduler for ``rt``'s database, or return the one already running
    (a process forked after start, ``gunicorn --preload``, has none and starts its own)."""
    with _starting:
        sched = schedule.in_process(rt)
        if sched is not None:
            return sched
        sched = Scheduler(rt).start()
        schedule.register_in_process(rt, sched)
    atexit.register(sched.shutdown, wait=False)
    return sched


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


# --- the process's watchdog -----------------------------------------------------------------------

class Watchdog:
    """A daemon thread: every ``interval_s`` one :func:`delula.alerts.watch` (the ``no_leader``
    alert, then delivery), a failure logged and the next look taken all the same. The first look
    is one interval after start (a scheduler starting beside it leads by then). Stops with
    :meth:`stop` or when its runtime is closed."""

    def __init__(self, rt, *, interval_s: float = WATCHDOG_INTERVAL_S):
        self.rt = rt
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return (self._thread is not None and self._thread.is_alive() and not self._stop.is_set()
                and not self.rt.closed)

    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._loop, name="delula-alerts-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.rt.closed:
                break
            try:
                alerts.watch(self.rt)
            except Exception as e:  # the database may be down: look again next time
                schedule.log_failure("alerts watchdog", e)


_watchdogs: dict[tuple[int, str], Watchdog] = {}
_watching = threading.Lock()


def watchdog_in_process(rt) -> Watchdog | None:
    """This process's running watchdog for ``rt``'s database, or None (a process forked after
    its parent started one has none of its own yet)."""
    dog = _watchdogs.get((os.getpid(), rt.store.url))
    return dog if dog is not None and dog.running else None


def watch_in_process(rt, *, interval_s: float | None = None) -> Watchdog:
    """This process's watchdog for ``rt``'s database, started on the first call in each process
    (cheap after that: a look-up; a forked process's first call starts its own)."""
    key = (os.getpid(), rt.store.url)
    dog = watchdog_in_process(rt)
    if dog is not None and dog.rt is rt:
        return dog
    with _watching:
        dog = _watchdogs.get(key)
        if dog is None or not dog.running or dog.rt is not rt:
            if dog is not None:
                dog.stop(timeout=0)
            dog = _watchdogs[key] = Watchdog(rt, interval_s=interval_s or WATCHDOG_INTERVAL_S).start()
    return dog
