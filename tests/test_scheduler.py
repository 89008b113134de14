"""The embedded scheduler: runs recorded, failures contained, one leader on PostgreSQL (threads and
real worker processes), takeover when the leader's connection or process dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from delula import auth, demo, housekeeping, jobruns, schedule, scheduler
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


def _job(job_id, fn, interval=0.05, **kw) -> schedule.JobSpec:
    return schedule.JobSpec(job_id, fn, lambda settings: interval, **kw)


def _runs(rt, job=None) -> list[dict]:
    return jobruns.recent_runs(rt, limit=1000, job=job)


def test_runs_are_recorded_and_a_failing_job_never_stops_the_others(rt):
    calls = Counter()

    def bad(_rt):
        calls["bad"] += 1
        raise RuntimeError("kaput")

    def good(_rt):
        calls["good"] += 1
        return {"done": 1, "names": ["a", "b"]}

    sched = scheduler.Scheduler(rt, campaign_interval_s=0.05, jobs=(_job("bad", bad), _job("good", good))).start()
    try:
        wait_for(lambda: len(_runs(rt, "bad")) >= 3 and len(_runs(rt, "good")) >= 3, what="runs of both jobs")
        assert sched.running and sched.is_leader
    finally:
        sched.shutdown()

    bad_runs, good_runs = _runs(rt, "bad"), _runs(rt, "good")
    assert all(r["outcome"] == "error" and r["error"] == "RuntimeError: kaput" for r in bad_runs)
    assert all(r["outcome"] == "ok" and r["error"] is None for r in good_runs)
    for r in bad_runs + good_runs:
        assert r["pid"] == os.getpid() and r["host"] and r["startedAt"] <= r["finishedAt"]
        assert r["durationMs"] is not None and r["durationMs"] >= 0
    assert good_runs[0]["detail"] == {"done": 1}  # lists are left out of the stored summary
    assert jobruns.leader(rt) is None           # resigned on shutdown


def test_quiet_jobs_record_only_runs_that_did_something(rt):
    results = iter([{"started": 0, "polled": 0}, {"started": 1, "polled": 0}, None])

    def tick(_rt):
        value = next(results)
        if value is None:
            raise ConnectionError("provider down")
        return value

    spec = _job("tick", tick, quiet=True)
    outcomes = [schedule.execute(rt, spec)["outcome"] for _ in range(3)]

    assert outcomes == ["ok", "ok", "error"]
    runs = _runs(rt, "tick")
    assert [(r["outcome"], r["detail"], r["error"]) for r in reversed(runs)] == [
        ("ok", {"started": 1, "polled": 0}, None), ("error", None, "ConnectionError: provider down")]


def test_run_now_runs_maintenance_and_records_it(rt):
    demo.seed(rt)

    result = schedule.run_now(rt, "backlog-maintenance")

    assert result["outcome"] == "ok" and result["result"]["createdTotal"] == 20
    last = _runs(rt)[0]
    assert last["job"] == "backlog-maintenance" and last["outcome"] == "ok"
    assert last["detail"]["createdTotal"] == 20 and "recipes" not in last["detail"]
    overview = {j["id"]: j for j in schedule.jobs_overview(rt)}
    assert set(overview) == {"queue-recovery", "queue-tick", "backlog-maintenance", "metrics-sample",
                             "stats-rollup", "demand-rollup", "counters-rollup", "alerts", "alert-delivery",
                             "housekeeping"}
    assert overview["alerts"]["interval"] == rt.settings.alert_interval_s
    assert overview["backlog-maintenance"]["interval"] == rt.settings.maintenance_interval_s
    assert overview["backlog-maintenance"]["lastRun"]["id"] == last["id"]
    assert overview["backlog-maintenance"]["nextRun"] is None       # no scheduler in this process
    assert overview["metrics-sample"]["lastRun"] is None
    with pytest.raises(ValueError, match="unknown scheduler job"):
        schedule.run_now(rt, "format-disk")


def test_housekeeping_keeps_the_run_history_bounded(rt, monkeypatch):
    monkeypatch.setattr(housekeeping, "KEEP_RUNS_PER_JOB", 5)
    spec = _job("noisy", lambda _rt: {"n": 1})
    for _ in range(12):
        schedule.execute(rt, spec)
    schedule.execute(rt, _job("other", lambda _rt: None))

    result = schedule.run_now(rt, "housekeeping")

    assert result["result"]["runsDeleted"] == 7
    assert len(_runs(rt, "noisy")) == 5 and len(_runs(rt, "other")) == 1


def test_housekeeping_forgets_idempotency_keys_after_a_day(rt):
    from datetime import timedelta

    from delula.storage import pool

    alice, _ = auth.create_user(rt, "alice", role="user", with_token=False)
    now = rt.now()
    with rt.store.begin() as s:
        for key, age in (("old", timedelta(hours=25)), ("recent", timedelta(hours=23))):
            assert pool.reserve_key(s, alice.id, key, now - age)
            pool.store_response(s, alice.id, key, "claimed", 200, {"key": key})

    result = schedule.run_now(rt, "housekeeping")

    assert result["result"]["idempotencyKeysDeleted"] == 1
    with rt.store.begin() as s:
        assert pool.stored_response(s, alice.id, "old") is None
        assert pool.stored_response(s, alice.id, "recent") == ("claimed", {"key": "recent"}, None)


def test_start_in_process_is_idempotent_and_leads_on_sqlite(sqlite_url, make_runtime):
    rt = make_runtime(sqlite_url, maintenance_interval_s=3600)
    auth.ensure_system_user(rt)
    first = scheduler.start_in_process(rt)
    try:
        assert scheduler.start_in_process(rt) is first
        who = wait_for(lambda: jobruns.leader(rt), what="a leader row")
        assert who["isThisProcess"] and who["pid"] == os.getpid()
        wait_for(lambda: _runs(rt, "backlog-maintenance"), what="the first maintenance pass")
        overview = {j["id"]: j for j in schedule.jobs_overview(rt)}
        assert overview["backlog-maintenance"]["nextRun"] is not None
        assert overview["backlog-maintenance"]["lastRun"]["outcome"] == "ok"
    finally:
        first.shutdown()
    assert jobruns.leader(rt) is None
    second = scheduler.start_in_process(rt)  # a stopped scheduler is replaced
    try:
        assert second is not first and second.running
    finally:
        second.shutdown()


@pytest.mark.postgres
def test_only_the_lock_holder_runs_jobs_and_a_standby_takes_over(pg_url, make_runtime):
    calls = Counter()

    def make(name):
        rt = make_runtime(pg_url, pool_size=2)
        auth.ensure_system_user(rt)
        job = _job("work", lambda _rt: calls.update([name]))
        return rt, scheduler.Scheduler(rt, campaign_interval_s=0.05, jobs=(job,))

    (rt_a, a), (_, b) = make("a"), make("b")
    a.start()
    wait_for(lambda: a.is_leader, what="a to lead")
    b.start()
    try:
        wait_for(lambda: calls["a"] >= 10, what="runs of the leader")
        assert not b.is_leader and calls["b"] == 0      # the standby never runs a job
        a.shutdown()                                    # releases the lock
        wait_for(lambda: b.is_leader, what="the standby to take over")
        wait_for(lambda: calls["b"] >= 3, what="runs of the new leader")
        assert jobruns.leader(rt_a) is not None
    finally:
        a.shutdown()
        b.shutdown()


@pytest.mark.postgres
def test_the_leader_steps_down_when_its_lock_connection_dies(pg_url, make_runtime):
    rt = make_runtime(pg_url, pool_size=2)
    auth.ensure_system_user(rt)
    sched = scheduler.Scheduler(rt, campaign_interval_s=0.05, jobs=(_job("work", lambda _rt: None),)).start()
    try:
        first_term = wait_for(lambda: sched.is_leader and sched.leader_since, what="leadership")
        dbname = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'delula-scheduler-lock' AND datname = %s", (dbname,)).fetchone()[0]
        assert killed == 1
        # it notices, steps down and campaigns again on a new connection
        wait_for(lambda: sched.is_leader and sched.leader_since != first_term, what="a new term")
        assert jobruns.leader(rt) is not None
    finally:
        sched.shutdown()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_worker_processes_one_leader_and_takeover_after_sigkill(pg_url, make_runtime, tmp_path):
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    demo.seed(rt)
    env = {**os.environ, "DELULA_DATABASE_URL": pg_url, "DELULA_MAINTENANCE_INTERVAL_S": "0.5",
           "DELULA_SIMULATOR_DURATION": "0", "PYTHONPATH": str(ROOT)}
    env.pop("DELULA_SCHEDULER", None)
    procs = []
    for i in range(2):
        log = open(tmp_path / f"worker{i}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "delula", "worker"], cwd=tmp_path, env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
    by_pid = {p.pid: p for p in procs}

    def maintenance_pids():
        return Counter(r["pid"] for r in _runs(rt, "backlog-maintenance"))

    try:
        who = wait_for(lambda: jobruns.leader(rt), what="a leader")
        first = who["pid"]
        assert first in by_pid and not who["isThisProcess"]
        wait_for(lambda: maintenance_pids()[first] >= 3, what="maintenance runs of the leader")
        assert all(p.poll() is None for p in procs)                 # both workers are up ...
        assert set(maintenance_pids()) == {first}                   # ... and only the leader ran jobs
        assert {r["pid"] for r in _runs(rt)} == {first}

        by_pid[first].send_signal(signal.SIGKILL)
        by_pid[first].wait(timeout=30)
        (second,) = set(by_pid) - {first}
        wait_for(lambda: (jobruns.leader(rt) or {}).get("pid") == second, what="the standby to lead")
        wait_for(lambda: maintenance_pids()[second] >= 2, what="maintenance runs of the new leader")

        by_pid[second].send_signal(signal.SIGTERM)                  # a clean stop resigns
        assert by_pid[second].wait(timeout=60) == 0
        assert jobruns.leader(rt) is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
